#!/usr/bin/env bash
# make check's time bound (test/run-bounded.sh): a program over the limit is
# killed with its children and fails with a line naming it; a program's own
# status (pass, fail, skip 77) passes through unchanged.
set -uo pipefail
run=$ORC_TOP_SRCDIR/test/run-bounded.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# over the limit: killed, fails, says so; its background child goes too
cat > "$tmp/hang.sh" <<'EOS'
#!/bin/sh
sleep 60 &
echo $! > "$1/child"
sleep 60
EOS
chmod +x "$tmp/hang.sh"
start=$SECONDS
ORC_TEST_TIMEOUT=2 "$run" "$tmp/hang.sh" "$tmp" 2> "$tmp/err"
rc=$?
[ "$rc" -ne 0 ] || fail "a hanging program passed"
[ $((SECONDS - start)) -lt 20 ] || fail "the hanging program was not killed at the limit"
grep -q "FAIL: $tmp/hang.sh ran longer than 2 s" "$tmp/err" || fail "no line names the hung program: $(cat "$tmp/err")"
child=$(cat "$tmp/child")
for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$child" 2>/dev/null || { kill "$child"; fail "the hung program's child outlived it"; }

# within the limit: the program's own status
for want in 0 1 77; do
    ORC_TEST_TIMEOUT=30 "$run" sh -c "exit $want" 2> "$tmp/err"
    rc=$?
    [ "$rc" -eq "$want" ] || fail "exit $want came back as $rc"
    ! grep -q "ran longer" "$tmp/err" || fail "exit $want reported as a timeout"
done
# a program's own 124 before the limit is its own failure, not a timeout
ORC_TEST_TIMEOUT=30 "$run" sh -c "exit 124" 2> "$tmp/err"
[ $? -eq 124 ] && ! grep -q "ran longer" "$tmp/err" || fail "a program's own 124 was taken for a timeout"
echo "run-bounded: all cases passed"
