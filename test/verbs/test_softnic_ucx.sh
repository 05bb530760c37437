#!/bin/bash
# UCX 1.13.1's own RDMA transports on softnic: ucx_info -d lists rc_verbs
# and ud_verbs on the soft devices, ucx_perftest -x rc_verbs runs every UCT
# test rc_verbs advertises (put/get/am with each data layout it offers,
# 64-bit atomics) and -x ud_verbs every one ud_verbs advertises (am short,
# bcopy, zcopy: UD has no put/get/atomics), and UCP runs over
# UCX_TLS=rc_verbs,ud_verbs (UD is the auxiliary wire-up transport rc_verbs
# needs), on one host and across two namespace hosts. Short runs: a judge,
# not a benchmark.
. "$(dirname "$0")/verbs_lib.sh"

snv_require ucx_info ucx_perftest ip ss
snv_enter

iters=${SNV_UCX_ITERS:-100}
export UCX_WARN_UNUSED_ENV_VARS=n

# ucx_info -d on HOSTS: rc_verbs on every soft device of the host, with the
# capabilities UCX derives from the device's attributes, and ud_verbs
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
        echo "$out" | awk -v d="$dev:1" '
            /Transport:/ { tl = $NF }
            /Device:/ && tl == "ud_verbs" && $NF == d { found = 1 }
            END { exit found ? 0 : 1 }' ||
            { echo "ud_verbs not listed on $dev:1" >&2; return 1; }
    done
}

# perf HOSTS [UCX_VAR=VALUE...] ARGS...: ucx_perftest server and client in
# that environment, the client's Final line (UCT tests: -x TL -d DEV; UCP
# tests: UCX_TLS, UCX_NET_DEVICES)
perf() {
    local hosts=$1 envs=()
    shift
    while [[ $1 == UCX_*=* ]]; do envs+=("$1"); shift; done
    snv_pair_same "$hosts" env "${envs[@]}" ucx_perftest -p @PORT@ -n "$iters" "$@" || return 1
    grep '^Final:' "$snv_tmp/client.log" || { echo "no Final line" >&2; return 1; }
    if grep -q 'UCX  ERROR' "$snv_tmp/client.log" "$snv_tmp/server.log"; then
        grep 'UCX  ERROR' "$snv_tmp/client.log" "$snv_tmp/server.log"
        echo "UCX reported errors" >&2
        return 1
    fi
}

for hosts in $snv_hosts; do
    [ $hosts = netns ] && snv_netns_up
    snv_case "$hosts/ucx_info_rc_ud_verbs" info $hosts
    rc="-x rc_verbs -d @DEV@:1"
    ud="-x ud_verbs -d @DEV@:1"
    for layout in short bcopy zcopy; do
        snv_case "$hosts/put_lat/$layout" perf $hosts $rc -t put_lat -D $layout
        snv_case "$hosts/put_bw/$layout"  perf $hosts $rc -t put_bw -D $layout
        snv_case "$hosts/am_lat/$layout"  perf $hosts $rc -t am_lat -D $layout
        snv_case "$hosts/am_bw/$layout"   perf $hosts $rc -t am_bw -D $layout
        snv_case "$hosts/ud/am_lat/$layout" perf $hosts $ud -t am_lat -D $layout
        snv_case "$hosts/ud/am_bw/$layout"  perf $hosts $ud -t am_bw -D $layout
    done
    # rc_verbs: get_zcopy from 65 bytes on (smaller gets are bcopy)
    snv_case "$hosts/get/bcopy" perf $hosts $rc -t get -D bcopy
    snv_case "$hosts/get/zcopy" perf $hosts $rc -t get -D zcopy -s 4096
    # 64-bit atomics: add, fetch-add, compare-swap (rc_verbs has no swap)
    for t in add_lat add_mr fadd cswap; do
        snv_case "$hosts/$t" perf $hosts $rc -t $t
    done
    # UCP over rc_verbs, with ud_verbs for its wire-up
    for t in tag_lat tag_bw ucp_put_bw ucp_get stream_bw; do
        snv_case "$hosts/ucp/$t" perf $hosts UCX_TLS=rc_verbs,ud_verbs \
            UCX_NET_DEVICES=@DEV@:1 -t $t
    done
done
snv_finish
