#!/bin/bash
# The README's "Using orc with UCX" commands, run as written from the top of
# the source tree: every indented line of that section. Against UCX 1.22
# (the test harness sets UCX_PLUGIN_PATH for such a build) the section's
# UCX 1.22 lines (the export, ...) run first; against the system's UCX they
# are left out. A line ending in '&' or commented "server" runs in the
# background, as in a second shell; every command must exit 0.
#
# The commands use the default orcd URL (127.0.0.1:7411) and perftest port,
# which other processes on the machine may hold: the test runs in a network
# namespace of its own (root; skips otherwise), where they are free and
# where orc-run starts (and stops) the orcd exactly as for a user.
#
# Checked beyond exit status: ucx_info lists the orc transport on soft_lo;
# every UCX_ORC_* variable the README names exists, and every UCX_ORC_*
# variable has a description; ucx_perftest and orc_hello finish their run;
# no UCX program warns about an unused environment variable or logs an
# error; the orcd orc-run started is gone afterwards.
set -u

srcdir=$(cd "${ORC_TOP_SRCDIR:-$(dirname "$0")/../..}" && pwd)
builddir=$(cd "${ORC_TOP_BUILDDIR:-$(pwd)}" && pwd)
lib=$builddir/.libs/libuct_orc.so

. "$srcdir/test/contrib/private_netns.sh"


# The UCX built against decides which lines run and whose tools they use.
if [ -n "${UCX_PLUGIN_PATH:-}" ]; then
    ucx=1.22
else
    ucx=system
fi
# orc-run must work out itself how to load orc; its lock file goes here
unset UCX_PLUGIN_PATH LD_PRELOAD ORC_BUILDDIR UCX_ORC_COORDINATOR UCX_ORC_JOB
export TMPDIR=$tmp
if [ "$ucx" = 1.22 ] && [ "$builddir" != "$srcdir/build-ucx-1.22" ]; then
    echo "SKIP: the README's UCX 1.22 commands use build-ucx-1.22/, not $builddir"
    exit 77
elif [ "$ucx" = system ] && [ "$builddir" != "$srcdir/build" ]; then
    # the README's commands find build/; this is another tree of that UCX
    export ORC_BUILDDIR=$builddir
fi

# code_lines N: the indented lines of the section's N-th code block
code_lines() {
    awk -v want="$1" '
        /^## Using orc with UCX/ { on = 1; next }
        /^## /                   { on = 0 }
        !on                      { next }
        /^    / { if (!inblock) { inblock = 1; ++n }
                  if (n == want) print substr($0, 5); next }
        /^$/    { next }
                { inblock = 0 }' "$srcdir/README.md"
}

fail=0
failed() {
    echo "FAIL: $*"
    fail=$((fail + 1))
}

# check_output FILE COMMAND: what every command's output must not contain.
# A command run without orc-run has no orcd: orc's interfaces say so.
check_output() {
    local allowed='^$'
    case "$2" in
    *orc-run*) ;;
    *) allowed='UCX  ERROR orc: coordinator orcd at .* is unreachable' ;;
    esac
    if grep -i 'unused env variable\|UCX  ERROR' "$1" | grep -v -- "$allowed"; then
        failed "'$2' printed the lines above"
    fi
}

# a background command's output, checked when it has finished
bg_cmds=()
bg_logs=()

cd "$srcdir" || exit 1
lines=()
if [ "$ucx" = 1.22 ]; then
    mapfile -t -O ${#lines[@]} lines < <(code_lines 2)
    [ ${#lines[@]} -gt 0 ] || { echo "FAIL: no UCX 1.22 block in the README section"; exit 1; }
fi
mapfile -t -O ${#lines[@]} lines < <(code_lines 1)
[ ${#lines[@]} -ge 4 ] || { echo "FAIL: the README section has no commands"; exit 1; }

i=0
for cmd in "${lines[@]}"; do
    i=$((i + 1))
    log=$tmp/cmd.$i.log
    echo "\$ $cmd"
    case "$cmd" in
    export\ *)
        # changes this shell, as typed
        eval "$cmd" || failed "$cmd"
        continue ;;
    *'&'|*'&'\ \ *'#'*|*'# server'*)
        eval "${cmd%%&*}" >"$log" 2>&1 &
        pids+=($!)
        bg_cmds+=("$cmd")
        bg_logs+=("$log")
        continue ;;
    esac
    # a client may start before its server listens: retried while a
    # background command runs and the output says refused (bounded)
    for attempt in $(seq 1 100); do
        timeout 300 bash -c "$cmd" >"$log" 2>&1
        status=$?
        [ $status = 0 ] && break
        grep -q 'Connection refused' "$log" || break
        sleep 0.1
    done
    sed 's/^/    /' "$log" | head -n 40
    [ $status = 0 ] || failed "'$cmd' exited with $status"
    check_output "$log" "$cmd"
    case "$cmd" in
    *ucx_info\ -d*)
        grep -q 'Component: orc' "$log" || failed "'$cmd' lists no orc component"
        case "$cmd" in
        *grep*) ;;
        *)  grep -q 'Transport: orc' "$log" || failed "'$cmd' lists no orc transport"
            grep -q 'Device: soft_lo:1' "$log" || failed "'$cmd' lists no soft_lo:1" ;;
        esac ;;
    *ucx_info\ -c\ -f*grep\ ORC*)
        # every UCX_ORC_* variable the README names exists (for a prefix
        # written as UCX_ORC_SOFT_*: some variable of that prefix)
        for v in $(grep -oE 'UCX_ORC_[A-Z][A-Z_]*[A-Z](_\*)?' "$srcdir/README.md" | sort -u); do
            case "$v" in
            *_\*) grep -q "^${v%\*}[A-Z]" "$log" ||
                      failed "no $v variable (README) in '$cmd'" ;;
            *) grep -q "^$v=" "$log" || failed "$v (README) is not in '$cmd'" ;;
            esac
        done ;;
    *ucx_perftest*)
        grep -q 'Final:' "$log" || failed "'$cmd' reported no final result" ;;
    *orc_hello*)
        grep -q "received 'hello from" "$log" || failed "'$cmd' received no greeting" ;;
    esac
done

# the background commands (servers, the first orc_hello) finish by themselves
for j in "${!pids[@]}"; do
    waited=0
    while kill -0 "${pids[$j]}" 2>/dev/null && [ $waited -lt 600 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    wait "${pids[$j]}"
    status=$?
    echo "\$ ${bg_cmds[$j]}    (background)"
    sed 's/^/    /' "${bg_logs[$j]}" | head -n 40
    [ $status = 0 ] || failed "'${bg_cmds[$j]}' exited with $status"
    check_output "${bg_logs[$j]}" "${bg_cmds[$j]}"
    case "${bg_cmds[$j]}" in
    *orc_hello*)
        grep -q "received 'hello from" "${bg_logs[$j]}" ||
            failed "'${bg_cmds[$j]}' received no greeting" ;;
    esac
done
pids=()

# every UCX_ORC_* variable is documented: a description line in its block
contrib/orc-run ucx_info -c -f >"$tmp/config.txt" 2>&1 ||
    failed "contrib/orc-run ucx_info -c -f"
undocumented=$(awk '
    /^#$/ || /^$/ { if (!/^#/) { desc = 0 }; next }
    /^# syntax:/ || /^# inherits:/ { next }
    /^# /         { desc = 1; next }
    /^UCX_ORC_/   { if (!desc) print $0; desc = 0; n++ }
    /^UCX_/       { desc = 0 }
    END           { if (n == 0) print "no UCX_ORC_ variable at all" }' "$tmp/config.txt")
[ -z "$undocumented" ] || failed "undocumented: $undocumented"

# the orcd orc-run started stops once the last orc-run has finished, and
# takes orc-run's lock file with it (bounded wait)
for _ in $(seq 1 300); do
    if ! curl -fsS --max-time 1 http://127.0.0.1:7411/healthz >/dev/null 2>&1 &&
        ! ls "$tmp" | grep -q '^orc-run'; then
        break
    fi
    sleep 0.1
done
if curl -fsS --max-time 1 http://127.0.0.1:7411/healthz >/dev/null 2>&1; then
    failed "the orcd orc-run started still runs"
fi
leftover=$(ls "$tmp" | grep '^orc-run' || true)
[ -z "$leftover" ] || failed "orc-run left $leftover behind"

echo "README commands (UCX $ucx): $fail failure(s)"
[ $fail = 0 ]
