# Shared by the softnic provider tests (test_softnic_*.sh): sourced, not run.
#
# A test script declares cases with `snv_case NAME FUNCTION [ARGS...]`; each
# runs with its output in a log, is reported as PASS/FAIL/SKIP on stdout
# (with the log's tail on failure) and counted per case: at exit the script
# writes a GoogleTest-style XML report next to the gtest binaries' ones, so
# contrib/test-summary.sh counts every case.
#
# Hosts: "local" runs the processes of a case side by side on this host
# (softnic's same-host paths, CMA and rings); "netns" runs the server in one
# network namespace and the client in another, joined by a veth pair (both
# ends named orc0, 198.18.0.0/15), each under its own softnic-run (two hosts:
# TCP). A script calls snv_enter once: it runs again, whole, under one
# softnic-run, so that the local processes see the soft devices without a
# softnic-run (and its setup time) per process. Everything is removed at
# exit.

set -u

snv_builddir=${ORC_TOP_BUILDDIR:-$(pwd)}
snv_srcdir=${ORC_TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
snv_run=$snv_srcdir/contrib/softnic-run
export ORC_BUILDDIR=$snv_builddir
snv_name=$(basename "$0")
# The topologies the pingpong, perftest and UCX scripts run: one host
# (rings, CMA) and two network-namespace hosts (TCP). The sanitizer tree
# runs the two hosts only (its Makefile sets SNV_HOSTS): instrumented
# runs are slow, and the one-host paths are under the sanitizers already
# in test_softnic, test_softnic_provider and test_orc_verbs.sh.
snv_hosts=${SNV_HOSTS:-local netns}
snv_bad_hosts() {
    echo "SNV_HOSTS='$snv_hosts': expected 'local', 'netns' or both" >&2
    exit 99
}
[ -n "${snv_hosts// /}" ] || snv_bad_hosts
for _h in $snv_hosts; do
    case "$_h" in local|netns) ;; *) snv_bad_hosts ;; esac
done
snv_tmp=$(mktemp -d /tmp/snv-test.XXXXXX)
snv_results=$snv_tmp/results
snv_nsa= snv_nsb= snv_ipa= snv_ipb= snv_netns_error=
: > "$snv_results"

snv_cleanup() {
    local ns
    # every namespace made, also by cases (subshells)
    if [ -f "$snv_tmp/netns" ]; then
        while read -r ns; do
            ip netns del "$ns" 2>/dev/null
        done < "$snv_tmp/netns"
    fi
    snv_write_xml
    rm -rf "$snv_tmp"
}
trap snv_cleanup EXIT

# ---- reporting --------------------------------------------------------------

snv_xml_escape() {
    sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g' |
        tr -d '\000-\010\013\014\016-\037'
}

# The XML report: one <testcase> per case, where GoogleTest binaries put
# theirs (GTEST_OUTPUT=xml:DIR/)
snv_write_xml() {
    local dir=${GTEST_OUTPUT:-} xml total fail skip name status msg
    case "$dir" in xml:*/) dir=${dir#xml:} ;; *) return 0 ;; esac
    [ -s "$snv_results" ] || return 0
    xml=$dir/$snv_name.xml
    total=$(grep -c . "$snv_results")
    fail=$(grep -c '^FAIL|' "$snv_results")
    skip=$(grep -c '^SKIP|' "$snv_results")
    {
        echo '<?xml version="1.0" encoding="UTF-8"?>'
        echo "<testsuites tests=\"$total\" failures=\"$fail\" name=\"$snv_name\">"
        echo "<testsuite name=\"$snv_name\" tests=\"$total\" failures=\"$fail\" skipped=\"$skip\">"
        while IFS='|' read -r status name msg; do
            name=$(printf '%s' "$name" | snv_xml_escape)
            msg=$(printf '%s' "$msg" | snv_xml_escape)
            case "$status" in
                PASS) echo "<testcase name=\"$name\" classname=\"$snv_name\" status=\"run\">" ;;
                FAIL) echo "<testcase name=\"$name\" classname=\"$snv_name\" status=\"run\">"
                      echo "<failure message=\"$msg\"/>" ;;
                SKIP) echo "<testcase name=\"$name\" classname=\"$snv_name\" status=\"run\" result=\"skipped\">"
                      echo "<skipped message=\"$msg\"/>" ;;
            esac
            echo "</testcase>"
        done < "$snv_results"
        echo "</testsuite>"
        echo "</testsuites>"
    } > "$xml"
}

snv_record() { # STATUS NAME MESSAGE
    printf '%s|%s|%s\n' "$1" "$2" "$3" >> "$snv_results"
}

# snv_case NAME FUNCTION [ARGS...]: run one case. FUNCTION fails (non-zero)
# with a reason on stderr; exit status 77 means skip (reason on stderr).
snv_case() {
    local name=$1 log status reason
    shift
    log=$snv_tmp/case.log
    local t0=$SECONDS
    ( "$@" ) > "$log" 2>&1
    status=$?
    reason=$(grep -v '^\s*$' "$log" | tail -n 1)
    case $status in
        0)  echo "PASS $name ($((SECONDS - t0)) s)"; snv_record PASS "$name" "" ;;
        77) echo "SKIP $name: $reason"; snv_record SKIP "$name" "$reason" ;;
        *)  echo "FAIL $name (status $status)"
            tail -n 40 "$log" | sed 's/^/    /'
            snv_sanitizer_report "$log" | sed 's/^/    /'
            snv_record FAIL "$name" "$reason" ;;
    esac
}

# The whole report of a sanitizer in LOG, if one fired (its stack is what
# tells where; a tail would cut it)
snv_sanitizer_report() { # LOG
    grep -q -E '^==[0-9]+==ERROR: |runtime error: ' "$1" 2>/dev/null || return 0
    echo "--- sanitizer report in $(basename "$1"):"
    sed -n -E '/^==[0-9]+==ERROR: |runtime error: /,/^==[0-9]+==ABORTING|^SUMMARY: /p' "$1"
}

# Exit status of the script: 0 if no case failed (and one ran)
snv_finish() {
    local fail pass
    fail=$(grep -c '^FAIL|' "$snv_results")
    pass=$(grep -c '^PASS|' "$snv_results")
    echo "$snv_name: $pass passed, $fail failed, $(grep -c '^SKIP|' "$snv_results") skipped"
    if [ "$fail" -gt 0 ]; then
        exit 1
    fi
    [ "$pass" -gt 0 ] || exit 77
    exit 0
}

# Skip the whole script (nothing can run): one skipped case with the reason
snv_skip_all() {
    echo "SKIP: $*"
    snv_record SKIP "all" "$*"
    exit 77
}

# ---- prerequisites -----------------------------------------------------------

# snv_require CMD... : the provider is built, we are root, the commands exist
snv_require() {
    local c
    [ -f "$snv_builddir/.libs/libsoftnic-rdmav34.so" ] ||
        snv_skip_all "the softnic provider is not built: configure found no rdma-core source (--with-rdma-core-src; contrib/get-rdma-core-src.sh says why)"
    [ "$(id -u)" = 0 ] ||
        snv_skip_all "needs root (softnic-run makes a mount namespace; the two-host cases make network namespaces)"
    for c in "$@"; do
        command -v "$c" >/dev/null ||
            snv_skip_all "'$c' not found (contrib/install-deps.sh installs it)"
    done
}

# Run the rest of the script under contrib/softnic-run (once)
snv_enter() {
    local st=0
    [ -n "${SNV_INSIDE:-}" ] && return 0
    SNV_INSIDE=1 "$snv_run" "$0" "$@" || st=$?
    exit $st
}

# Ports for the programs' own rendezvous: port_next (port_seq)
. "$snv_srcdir/contrib/port-lib.sh"

# ---- two hosts ----------------------------------------------------------------

# Two network namespaces joined by a veth pair, orc0 on both sides, a /30
# of 198.18.0.0/15 chosen from the pid. Sets snv_nsa/snv_nsb/snv_ipa/snv_ipb;
# when they cannot be made, every netns case fails saying why.
snv_netns_up() {
    snv_netns_make && return 0
    snv_netns_error="the two namespace hosts could not be made (ip netns/veth)"
    echo "$snv_netns_error" >&2
    return 1
}
# In a case: the namespace hosts (made by snv_netns_up before the cases)
# are there, or say why not
snv_netns_ok() {
    [ -n "$snv_nsa" ] && [ -z "$snv_netns_error" ] && return 0
    echo "${snv_netns_error:-snv_netns_up was not called}" >&2
    return 1
}
snv_netns_make() {
    local sub=$(( ($$ % 250) + 2 )) ns
    snv_nsa=snv-a-$$
    snv_nsb=snv-b-$$
    snv_ipa=198.18.$sub.1
    snv_ipb=198.18.$sub.2
    printf '%s\n%s\n' "$snv_nsa" "$snv_nsb" >> "$snv_tmp/netns"
    ip netns add "$snv_nsa" && ip netns add "$snv_nsb" &&
    ip link add orc0a netns "$snv_nsa" type veth peer name orc0b netns "$snv_nsb" &&
    ip -n "$snv_nsa" link set orc0a name orc0 &&
    ip -n "$snv_nsb" link set orc0b name orc0 &&
    ip -n "$snv_nsa" addr add "$snv_ipa/30" dev orc0 &&
    ip -n "$snv_nsb" addr add "$snv_ipb/30" dev orc0 || return 1
    for ns in "$snv_nsa" "$snv_nsb"; do
        ip -n "$ns" link set lo up && ip -n "$ns" link set orc0 up || return 1
    done
}

# ---- server/client runs ---------------------------------------------------------

# Wait (bounded) until a TCP port listens: snv_wait_listen PORT [NETNS]
snv_wait_listen() {
    local port=$1 ns=${2:-} i
    for i in $(seq 300); do
        if [ -n "$ns" ]; then
            ip netns exec "$ns" ss -ltnH "sport = :$port" | grep -q .
        else
            ss -ltnH "sport = :$port" | grep -q .
        fi && return 0
        sleep 0.1
    done
    echo "nothing listens on port $port after 30 s" >&2
    return 1
}

# snv_pair HOSTS PORT SERVER-CMD... -- CLIENT-CMD...
# Runs a server and its client (each at most $SNV_TIMEOUT s, default 120):
# HOSTS=local: both under one softnic-run, the client once PORT listens;
# HOSTS=netns: the server under softnic-run in namespace A, the client in B;
# HOSTS=runs: both on this host, each under a softnic-run of its own.
# The word @SERVER@ in the client command becomes the server's address.
# Both must exit 0; their output goes to $snv_tmp/server.log and client.log.
snv_pair() {
    local hosts=$1 port=$2 srv=() cli=() addr status=0 spid
    shift 2
    while [ "$1" != -- ]; do srv+=("$1"); shift; done
    shift
    cli=("$@")
    local t=${SNV_TIMEOUT:-120}
    if [ "$hosts" = netns ] && [ -n "${snv_netns_error:-}" ]; then
        echo "$snv_netns_error" >&2
        return 1
    fi
    case "$hosts" in
        local)
            [ -n "${SNV_INSIDE:-}" ] || { echo "snv_pair local: call snv_enter first" >&2; return 1; }
            addr=127.0.0.1
            cli=("${cli[@]//@SERVER@/$addr}")
            timeout "$t" "${srv[@]}" > "$snv_tmp/server.log" 2>&1 &
            spid=$!
            if snv_wait_listen "$port"; then
                timeout "$t" "${cli[@]}" > "$snv_tmp/client.log" 2>&1 || status=$?
                wait $spid || status=$((status ? status : 100 + $?))
            else
                kill $spid 2>/dev/null; wait $spid; status=1
            fi
            ;;
        netns|runs)
            local ina=() inb=()
            addr=127.0.0.1
            if [ "$hosts" = netns ]; then
                ina=(ip netns exec "$snv_nsa")
                inb=(ip netns exec "$snv_nsb")
                addr=$snv_ipa
            fi
            cli=("${cli[@]//@SERVER@/$addr}")
            "${ina[@]}" timeout "$t" "$snv_run" "${srv[@]}" \
                > "$snv_tmp/server.log" 2>&1 &
            spid=$!
            if snv_wait_listen "$port" "${ina[3]:-}"; then
                "${inb[@]}" timeout "$t" "$snv_run" "${cli[@]}" \
                    > "$snv_tmp/client.log" 2>&1 || status=$?
                wait $spid || status=$((status ? status : 100 + $?))
            else
                kill $spid 2>/dev/null; wait $spid; status=1
            fi
            ;;
    esac
    if [ $status != 0 ]; then
        snv_pair_report server
        snv_pair_report client
        echo "server/client failed (status $status)" >&2
    fi
    return $status
}

# The end of a side's log, and its error lines wherever they are: a
# program's stdout is block-buffered into the log, so what it printed to
# stderr (the failed completion) may sit above the lines of the tail
snv_pair_report() { # server|client
    local log=$snv_tmp/$1.log
    echo "--- $1 (last lines):"
    tail -n 15 "$log" 2>/dev/null
    snv_sanitizer_report "$log"
    echo "--- $1 (error lines):"
    grep -n -i -E "fail|error|invalid|couldn't|cannot|unable|timed? ?out" "$log" 2>/dev/null | head -n 20
}

# snv_pair_same HOSTS CMD...: snv_pair of one command on both sides, on the
# soft device of the hosts' link (local: soft_lo, netns: soft_orc0) and a
# free port: @DEV@ and @PORT@ in CMD become them, and the client gets the
# server's address as its last argument.
snv_pair_same() {
    local hosts=$1 dev=soft_lo cmd
    local -a in=()
    shift
    [ "$hosts" = netns ] && dev=soft_orc0 in=(ip netns exec "$snv_nsa")
    port_next "${in[@]}" || return 1
    cmd=("${@//@DEV@/$dev}")
    cmd=("${cmd[@]//@PORT@/$port_seq}")
    snv_pair "$hosts" "$port_seq" "${cmd[@]}" -- "${cmd[@]}" @SERVER@
}
