#!/bin/bash
# rdma-core's own examples (ibverbs-utils) on softnic, with their data
# checks (-c validates the received buffer): ibv_rc_pingpong,
# ibv_srq_pingpong (16 QPs on one SRQ) and ibv_ud_pingpong (UD, GRH in
# front of each receive; its -c checks the first byte of each page behind
# the GRH), busy-polling and sleeping on completion events (-e), on one
# host and across two namespace hosts.
#
# With several QPs each side of ibv_srq_pingpong may post up to q - 1 SENDs
# beyond -n, which its peer never takes, and each side ends as soon as its
# own counts are reached, destroying its QPs. A side whose peer ended first
# still has such a SEND outstanding; as on a NIC, softnic fails it only
# after the QP's retry budget (timeout 14, retry_cnt 7: about 0.5 s), by
# which time the side has ended too.
. "$(dirname "$0")/verbs_lib.sh"

snv_require ibv_rc_pingpong ibv_srq_pingpong ibv_ud_pingpong ip ss
snv_enter

# pingpong HOSTS PROGRAM ARGS...: server and client agree, and both report
# their transfer (the client's "iters in" line) without a data error
pingpong() {
    local hosts=$1 prog=$2
    shift 2
    snv_pair_same "$hosts" "$prog" -d @DEV@ -g 0 -p @PORT@ "$@" || return 1
    cat "$snv_tmp/server.log" "$snv_tmp/client.log"
    if grep -qi "invalid data\|failed\|error" "$snv_tmp/server.log" "$snv_tmp/client.log"; then
        echo "$prog $*: an error was reported" >&2
        return 1
    fi
    grep -q "iters in" "$snv_tmp/server.log" && grep -q "iters in" "$snv_tmp/client.log" ||
        { echo "$prog $*: no transfer report" >&2; return 1; }
}

for hosts in $snv_hosts; do
    [ $hosts = netns ] && snv_netns_up
    snv_case "$hosts/rc_pingpong" pingpong $hosts ibv_rc_pingpong -c -s 65536 -n 200
    snv_case "$hosts/rc_pingpong_events" pingpong $hosts ibv_rc_pingpong -c -e -s 4096 -n 100
    snv_case "$hosts/srq_pingpong" pingpong $hosts ibv_srq_pingpong -c -s 4096 -n 100
    snv_case "$hosts/srq_pingpong_events" pingpong $hosts ibv_srq_pingpong -c -e -s 4096 -n 50
    snv_case "$hosts/ud_pingpong" pingpong $hosts ibv_ud_pingpong -c -s 2048 -n 500
    snv_case "$hosts/ud_pingpong_events" pingpong $hosts ibv_ud_pingpong -c -e -s 1024 -n 200
done
snv_finish
