# Helpers for the test scripts that run UCX tools over orc in network
# namespaces (sourced, bash). Sourcing sets the paths below and a trap that
# removes, at exit, what the script registered: processes in orc_pids (orcd
# started by orc_start_orcd is one), namespaces in orc_netns, and the
# scratch directory $tmp.

builddir=${ORC_TOP_BUILDDIR:-$(pwd)}
srcdir=${ORC_TOP_SRCDIR:-$builddir/..}
lib=$builddir/.libs/libuct_orc.so
orcd=$builddir/src/coordinator/orcd/orcd
# ucx_info, perftest: the UCX built against's; orc_env: how orc gets into
# a UCX program (env "${orc_env[@]}" PROGRAM ...)
. "$(dirname "${BASH_SOURCE[0]}")/orc_ucx_env.sh"
tmp=$(mktemp -d /tmp/orc-test.XXXXXX)
orc_pids=()
orc_netns=()

orc_cleanup() {
    local pid ns
    for pid in "${orc_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid"
    done
    for ns in "${orc_netns[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap orc_cleanup EXIT

# orc_add_netns NS...: create network namespaces, removed at exit
orc_add_netns() {
    local ns
    for ns in "$@"; do
        ip netns add "$ns" || orc_skip "cannot create network namespace $ns"
        orc_netns+=("$ns")
    done
}

# orc_skip MESSAGE: the test cannot run here (automake's SKIP)
orc_skip() {
    echo "SKIP: $*"
    exit 77
}

# orc_need_root: root and iproute2, for network namespaces
orc_need_root() {
    if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
        orc_skip "needs root and iproute2"
    fi
}

# orc_need_preloadable LIB TOOL: a sanitizer build of the module cannot be
# preloaded into Debian's uninstrumented UCX tools: ASan insists on being the
# first library, and with libasan preloaded first any UCX program that also
# loads libcurl (gnutls -> p11-kit) deadlocks at exit (see
# test_orc_perftest.sh). test_orc_uct exercises the sanitized module.
orc_need_preloadable() {
    if ldd "$1" | grep -q libasan; then
        orc_skip "sanitizer build: ASan cannot be preloaded into $2"
    fi
}

# orc_start_orcd NS ORCD_ARGS...: an orcd in network namespace NS, stopped
# at exit; sets orcd_port, or fails the script when the daemon does not come
# up within 10 s
orc_start_orcd() {
    local ns=$1 port_file=$tmp/orcd.port
    shift
    ip netns exec "$ns" "$orcd" --port-file "$port_file" --log-level error \
        "$@" &
    orc_pids+=($!)
    for _ in $(seq 100); do
        [ -s "$port_file" ] && break
        sleep 0.1
    done
    if [ ! -s "$port_file" ]; then
        echo "FAIL: orcd did not start"
        exit 1
    fi
    orcd_port=$(cat "$port_file")
}

# orc_share NAME BYTES -ge|-le PERCENT: BYTES is at least / at most PERCENT %
# of $payload; counts a failure in $fail otherwise
orc_share() {
    if [ $(( $2 * 100 )) "$3" $(( payload * $4 )) ]; then
        printf 'PASS %s: %d bytes %s %d %% of %d\n' "$1" "$2" "$3" "$4" \
            "$payload"
    else
        printf 'FAIL %s: %d bytes, not %s %d %% of %d\n' "$1" "$2" "$3" "$4" \
            "$payload"
        fail=$((fail + 1))
    fi
}
