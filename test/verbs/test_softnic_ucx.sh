#!/bin/bash
# UCX 1.13.1's own RDMA transport on softnic: ucx_info -d lists rc_verbs on
# the soft devices, and ucx_perftest -x rc_verbs runs every UCT test
# rc_verbs advertises (put/get/am with each data layout it offers, 64-bit
# atomics), on one host and across two namespace hosts. Short runs: a
# judge, not a benchmark.
#
# UCP over rc_verbs needs an auxiliary transport for its wire-up (UD);
# those runs come with UD QPs (ud_verbs).
. "$(dirname "$0")/verbs_lib.sh"

snv_require ucx_info ucx_perftest ip ss python3
snv_require_plain_build
snv_enter

iters=${SNV_UCX_ITERS:-100}
export UCX_WARN_UNUSED_ENV_VARS=n

# ucx_info -d on HOSTS: rc_verbs on every soft device of the host, with the
# capabilities UCX derives from the device's attributes
info() {
    local hosts=$1 out dev
    if [ "$hosts" = netns ]; then
        out=$(ip netns exec "$snv_nsa" "$snv_run" ucx_info -d) || return 1
        set -- soft_lo soft_orc0
    else
        out=$(ucx_info -d) || return 1
        set -- $(ibv_devices | awk '/soft_/ { print $1 }')
    fi
    echo "$out"
    for dev in "$@"; do
        echo "$out" | awk -v d="$dev:1" '
            /# Memory domain:/ { md = $NF }
            /Transport:/ { tl = $NF }
            /Device:/ && tl == "rc_verbs" && $NF == d && md == substr(d, 1, length(d) - 2) { found = 1 }
            /atomic_fadd: 64 bit/ && tl == "rc_verbs" && found == 1 { found = 2 }
            END { exit found == 2 ? 0 : 1 }' ||
            { echo "rc_verbs with 64-bit atomics not listed on $dev:1" >&2; return 1; }
    done
}

# perf HOSTS ARGS...: ucx_perftest server and client, the client's Final line
perf() {
    local hosts=$1
    shift
    snv_pair_same "$hosts" ucx_perftest -p @PORT@ -x rc_verbs -d @DEV@:1 -n "$iters" "$@" || return 1
    grep '^Final:' "$snv_tmp/client.log" || { echo "no Final line" >&2; return 1; }
    if grep -q 'UCX  ERROR' "$snv_tmp/client.log" "$snv_tmp/server.log"; then
        grep 'UCX  ERROR' "$snv_tmp/client.log" "$snv_tmp/server.log"
        echo "UCX reported errors" >&2
        return 1
    fi
}

for hosts in local netns; do
    [ $hosts = netns ] && snv_netns_up
    snv_case "$hosts/ucx_info_rc_verbs" info $hosts
    for layout in short bcopy zcopy; do
        snv_case "$hosts/put_lat/$layout" perf $hosts -t put_lat -D $layout
        snv_case "$hosts/put_bw/$layout"  perf $hosts -t put_bw -D $layout
        snv_case "$hosts/am_lat/$layout"  perf $hosts -t am_lat -D $layout
        snv_case "$hosts/am_bw/$layout"   perf $hosts -t am_bw -D $layout
    done
    # rc_verbs: get_zcopy from 65 bytes on (smaller gets are bcopy)
    snv_case "$hosts/get/bcopy" perf $hosts -t get -D bcopy
    snv_case "$hosts/get/zcopy" perf $hosts -t get -D zcopy -s 4096
    # 64-bit atomics: add, fetch-add, compare-swap (rc_verbs has no swap)
    for t in add_lat add_mr fadd cswap; do
        snv_case "$hosts/$t" perf $hosts -t $t
    done
done
snv_finish
