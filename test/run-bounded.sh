#!/bin/sh
# make check's LOG_COMPILER: runs one test program under timeout(1), so a
# program that hangs becomes a failed test that names itself (its .log ends
# with the case that hung and the line below) instead of a CI run that times
# out with nothing named. ORC_TEST_TIMEOUT: seconds per program (default
# 1200; 0 = no limit). The longest program takes a few minutes, the whole
# suite under the sanitizers about 14 (CI logs: the "ran N s" lines below).
# timeout(1) gives the program its own process group and signals the whole
# group (SIGTERM, SIGKILL 30 s later), so its children go with it.
#
#   run-bounded.sh PROGRAM [ARGS...]
limit=${ORC_TEST_TIMEOUT:-1200}
start=$(date +%s)
timeout -k 30 "$limit" "$@"
rc=$?
elapsed=$(($(date +%s) - start))
# 124: timeout sent SIGTERM, 137: it had to send SIGKILL (a program's own
# exit status 124 or 137 before the limit passes through)
if [ "$limit" -gt 0 ] && [ "$elapsed" -ge "$limit" ] &&
        { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; }; then
    echo "run-bounded: FAIL: $1 ran longer than $limit s (ORC_TEST_TIMEOUT) and was killed" >&2
    exit 1
fi
echo "run-bounded: $1 ran $elapsed s, exit $rc" >&2
exit "$rc"
