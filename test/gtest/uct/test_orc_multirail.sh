#!/bin/bash
# Multi-rail over orc: two network-namespace "hosts" joined by two veth
# pairs (orc0 and orc1 on both sides, addresses from 198.18.0.0/15), a soft
# device on each; bytes per rail are read from host A's interface counters.
#  1. Both devices equally near (neither sits on a PCI device): with
#     UCX_MAX_RNDV_RAILS=2 UCP splits large messages over both rails, each
#     carries at least a quarter of the payload.
#  2. Shown through hwloc as NICs on two NUMA nodes (two-numa.xml, orc0 on
#     node 0, orc1 on node 1) with both processes bound to CPU 0: both rails
#     still carry data, the near one (orc0) the larger share.
#  3. The control, UCX_MAX_RNDV_RAILS=1: one interface carries it all.
# Needs root, iproute2 and ucx_perftest; skips (77) otherwise. Everything is
# removed at exit.
set -u
. "$(dirname "$0")/orc_test_lib.sh"

orc_need_root
[ -n "$perftest" ] || orc_skip "ucx_perftest not found (install ucx-utils)"
orc_need_preloadable "$lib" ucx_perftest

tag=$$
nsa=orc-rail-a-$tag
nsb=orc-rail-b-$tag
sub=$(( (tag % 120) * 2 + 2 ))   # two /30s: 198.19.sub.0 and sub+1.0
orc_add_netns "$nsa" "$nsb"
for i in 0 1; do
    ip link add rl${tag}a$i netns "$nsa" type veth peer name rl${tag}b$i \
        netns "$nsb" || orc_skip "cannot create a veth pair"
    ip -n "$nsa" link set rl${tag}a$i name orc$i
    ip -n "$nsb" link set rl${tag}b$i name orc$i
    ip -n "$nsa" addr add 198.19.$((sub + i)).1/30 dev orc$i
    ip -n "$nsb" addr add 198.19.$((sub + i)).2/30 dev orc$i
    ip -n "$nsa" link set orc$i up
    ip -n "$nsb" link set orc$i up
done
ip -n "$nsa" link set lo up
ip -n "$nsb" link set lo up
ipa=198.19.$sub.1

printf 'listen:\n  address: %s\n  port: 0\n  allow_remote: true\n' $ipa \
    > "$tmp/orcd.yaml"
orc_start_orcd "$nsa" --config "$tmp/orcd.yaml"

export UCX_ORC_COORDINATOR=http://$ipa:$orcd_port
export UCX_ORC_BACKEND=soft UCX_ORC_SOFT_IFACES=orc0,orc1 UCX_TLS=orc
export UCX_WARN_UNUSED_ENV_VARS=n UCX_LOG_LEVEL=info
unset HWLOC_XMLFILE HWLOC_SYNTHETIC

# bytes through host A's interface orc$1, both directions
bytes() {
    local d=/sys/class/net/orc$1/statistics
    echo $(( $(ip netns exec "$nsa" cat $d/rx_bytes) +
             $(ip netns exec "$nsa" cat $d/tx_bytes) ))
}

size=4194304 iters=24
payload=$((size * iters))
port=$(( 20000 + tag % 20000 ))
fail=0

# the two rails as NICs on NUMA nodes 0 and 1
sed 's/name="nic0"/name="orc0"/; s/name="nic1"/name="orc1"/' \
    "$srcdir/test/gtest/dev/topo/two-numa.xml" > "$tmp/two-numa.xml"

# transfer RAILS [ENV...]: tag_bw of $iters x 4 MiB from host B to host A,
# both bound to $cpus; sets moved0 / moved1 (bytes through orc0 / orc1) and
# lanes (UCP's tag lanes)
cpus=$(taskset -pc $$ | sed 's/.*: //')
transfer() {
    local rails=$1 before0 before1 spid ok=1
    shift
    port=$((port + 1))
    before0=$(bytes 0)
    before1=$(bytes 1)
    ip netns exec "$nsa" env UCX_ORC_JOB=rails$rails$port \
        UCX_MAX_RNDV_RAILS=$rails "$@" taskset -c "$cpus" timeout 60 \
        env "${orc_env[@]}" "$perftest" \
        -p $port -t tag_bw -s $size -n $iters -w 0 > "$tmp/server.log" 2>&1 &
    spid=$!
    for _ in $(seq 50); do
        ip netns exec "$nsa" ss -ltn | grep -q ":$port " && break
        sleep 0.1
    done
    ip netns exec "$nsb" env UCX_ORC_JOB=rails$rails$port \
        UCX_MAX_RNDV_RAILS=$rails "$@" taskset -c "$cpus" timeout 60 \
        env "${orc_env[@]}" "$perftest" \
        $ipa -p $port -t tag_bw -s $size -n $iters -w 0 \
        > "$tmp/client.log" 2>&1 || ok=0
    wait $spid || ok=0
    moved0=$(( $(bytes 0) - before0 ))
    moved1=$(( $(bytes 1) - before1 ))
    lanes=$(sed -n "$orc_ucp_tag_lanes" "$tmp/client.log" | head -1)
    if [ $ok = 0 ] || ! grep -q '^Final:' "$tmp/client.log"; then
        echo "FAIL rails=$rails: ucx_perftest failed"
        tail -20 "$tmp/client.log" | sed 's/^/  client: /'
        tail -10 "$tmp/server.log" | sed 's/^/  server: /'
        fail=$((fail + 1))
        return 1
    fi
    printf 'rails=%s, cpus %s%s: lanes [%s]; orc0 %d bytes, orc1 %d bytes, payload %d\n' \
        "$rails" "$cpus" "${*:+ $*}" "$lanes" "$moved0" "$moved1" "$payload"
}

if transfer 2; then
    orc_share "rails=2: orc0" $moved0 -ge 25
    orc_share "rails=2: orc1" $moved1 -ge 25
fi
full_cpus=$cpus
cpus=0
if transfer 2 HWLOC_XMLFILE="$tmp/two-numa.xml"; then
    orc_share "rails=2, orc1 remote: orc0 (near)" $moved0 -ge 55
    orc_share "rails=2, orc1 remote: orc1 (remote)" $moved1 -ge 10
fi
cpus=$full_cpus
if transfer 1; then
    # one rail: the whole payload on one interface, the other one idle
    # but for pairing and control traffic
    big=$(( moved0 > moved1 ? moved0 : moved1 ))
    small=$(( moved0 > moved1 ? moved1 : moved0 ))
    orc_share "rails=1: busy interface" $big -ge 95
    orc_share "rails=1: idle interface" $small -le 5
fi

echo "orc multi-rail: $fail failure(s)"
[ $fail = 0 ]
