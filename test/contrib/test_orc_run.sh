#!/bin/bash
# contrib/orc-run with no orcd running, in a network namespace of its own
# (so the default coordinator URL, 127.0.0.1:7411, is free; root, skips
# otherwise):
#  1. an orc-run that started the orcd and finishes first leaves it to one
#     still running (the orcd stops only after the last one);
#  2. several orc-run started together share one orcd, and all succeed;
#  3. once all have finished the orcd is gone, and so is orc-run's lock file;
#  4. the module is loaded the way the UCX built against wants: through
#     UCX_PLUGIN_PATH where that UCX reads it (the harness sets it for such
#     a build), else LD_PRELOAD, never both.
set -u

srcdir=$(cd "${ORC_TOP_SRCDIR:-$(dirname "$0")/../..}" && pwd)
builddir=$(cd "${ORC_TOP_BUILDDIR:-$(pwd)}" && pwd)
lib=$builddir/.libs/libuct_orc.so
run=$srcdir/contrib/orc-run
url=http://127.0.0.1:7411

. "$srcdir/test/contrib/private_netns.sh"


plugin_path=${UCX_PLUGIN_PATH:-}
unset UCX_PLUGIN_PATH LD_PRELOAD UCX_ORC_COORDINATOR
export TMPDIR=$tmp ORC_BUILDDIR=$builddir

fail=0
failed() {
    echo "FAIL: $*"
    fail=$((fail + 1))
}

alive() {
    curl -fsS --max-time 2 "$url/healthz" >/dev/null 2>&1
}

# wait_for DESCRIPTION COMMAND...: until COMMAND succeeds (bounded, 30 s)
wait_for() {
    local what=$1 i
    shift
    for i in $(seq 1 300); do
        "$@" && return 0
        sleep 0.1
    done
    failed "timed out waiting for $what"
    return 1
}

not_alive() { ! alive; }

no_lock_file() { [ -z "$(ls "$tmp" | grep '^orc-run\..*\.lock$')" ]; }

alive && { echo "FAIL: an orcd already answers in the new namespace"; exit 1; }

# 1. the starter finishes first; the other still needs the orcd later
echo "== 1. lifetime"
"$run" sh -c 'sleep 1' >"$tmp/x.log" 2>&1 &
x=$!
pids+=($x)
wait_for "orc-run to start orcd" alive
"$run" sh -c "sleep 3; curl -fsS $url/healthz" >"$tmp/y.log" 2>&1 &
y=$!
pids+=($y)
wait "$x" || failed "the short orc-run failed: $(cat "$tmp/x.log")"
wait "$y" || failed "the orc-run still running lost its orcd: $(cat "$tmp/y.log")"
pids=()
wait_for "the orcd to stop after the last orc-run" not_alive
wait_for "the lock file to go" no_lock_file

# 2. started together, no orcd running: one orcd for all (one socket
# listens on the port: a second orcd there would split the job). The orcd
# each orc-run starts takes a second to come up. Two copies of orc-run, two
# of each: a copy starts one orcd at a time, the two copies race for the
# port.
echo "== 2. started together"
printf '#!/bin/sh\nsleep 1\nexec %s "$@"\n' "$builddir/src/coordinator/orcd/orcd" \
    >"$tmp/slow-orcd"
chmod +x "$tmp/slow-orcd"
cp "$run" "$tmp/orc-run.a"
cp "$run" "$tmp/orc-run.b"
one_listener="[ \$(ss -ltnH 'sport = :7411' | wc -l) = 1 ]"
for n in 1 2 3 4; do
    copy=$tmp/orc-run.$( [ $n -le 2 ] && echo a || echo b )
    ORC_ORCD=$tmp/slow-orcd "$copy" sh -c "curl -fsS $url/healthz && sleep 1 &&
        $one_listener && curl -fsS $url/healthz" >"$tmp/t$n.log" 2>&1 &
    pids+=($!)
done
for n in 1 2 3 4; do
    wait "${pids[$((n - 1))]}" ||
        failed "orc-run $n of 4 started together failed: $(cat "$tmp/t$n.log")"
done
pids=()

# 3. gone afterwards
echo "== 3. cleanup"
wait_for "the orcd to stop after the last orc-run" not_alive
wait_for "the lock file to go" no_lock_file

# 4. how the module gets in (orc-run starts an orcd for this too)
echo "== 4. loading"
env_out=$("$run" env 2>&1) || failed "orc-run env: $env_out"
preload=$(echo "$env_out" | sed -n 's/^LD_PRELOAD=//p')
plugin=$(echo "$env_out" | sed -n 's/^UCX_PLUGIN_PATH=//p')
if [ -n "$plugin_path" ]; then
    [ "$plugin" = "$(dirname "$lib")" ] ||
        failed "UCX_PLUGIN_PATH='$plugin', expected $(dirname "$lib")"
    [ -z "$preload" ] || failed "LD_PRELOAD='$preload' set for a UCX that loads plugins"
else
    [ "$preload" = "$lib" ] || failed "LD_PRELOAD='$preload', expected $lib"
    [ -z "$plugin" ] || failed "UCX_PLUGIN_PATH='$plugin' set for a UCX that does not read it"
fi
wait_for "the orcd to stop after the last orc-run" not_alive

echo "orc-run: $fail failure(s)"
[ $fail = 0 ]
