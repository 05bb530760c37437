#!/bin/bash
# Topology end to end on machines this VM is not. A network namespace with
# two NICs (veth ends nic0 and nic1) is shown to orc through hwloc as
#   two-numa: test/gtest/dev/topo/two-numa.xml, two packages with a NUMA
#             node, a PU (CPU 0 / CPU 1) and a NIC each: nic0 at PCI
#             0000:03:00.0 on node 0, nic1 at 0000:81:00.0 on node 1;
#   no-pci:   hwloc's synthetic "pack:2 numa:1 pu:1", no PCI information.
# For a process bound to CPU 0, CPU 1 or both it checks what ucx_info -d
# reports for each soft device (system device, estimates, listing order),
# which device UCP picks for orc_hello when both NICs are allowed, and the
# topology summary `orcctl nodes` shows. Prints the choices as a table.
# Needs root, iproute2, taskset and CPUs 0 and 1; skips (77) otherwise.
# Everything is removed at exit.
set -u
. "$(dirname "$0")/orc_test_lib.sh"

orcctl=$builddir/orcctl
hello=$builddir/contrib/examples/orc_hello
xml=$srcdir/test/gtest/dev/topo/two-numa.xml

orc_need_root
command -v taskset >/dev/null || orc_skip "needs taskset"
taskset -c 0 true 2>/dev/null && taskset -c 1 true 2>/dev/null ||
    orc_skip "needs CPUs 0 and 1"
[ -n "$ucx_info" ] || orc_skip "ucx_info not found (install ucx-utils)"
orc_need_preloadable "$lib" ucx_info

tag=$$
ns=orc-topo-$tag
sub=$(( (tag % 250) + 2 ))
orc_add_netns "$ns"
ip -n "$ns" link set lo up
for i in 0 1; do
    ip -n "$ns" link add nic$i type veth peer name nic${i}p ||
        orc_skip "cannot create a veth pair"
    ip -n "$ns" addr add 198.19.$sub.$((4 * i + 1))/30 dev nic$i
    ip -n "$ns" link set nic$i up
    ip -n "$ns" link set nic${i}p up
done

orc_start_orcd "$ns" --listen 127.0.0.1:0
url=http://127.0.0.1:$orcd_port

export UCX_ORC_COORDINATOR=$url ORC_COORDINATOR_URL=$url
export UCX_ORC_BACKEND=soft UCX_WARN_UNUSED_ENV_VARS=n
unset UCX_ORC_SOFT_IFACES HWLOC_XMLFILE HWLOC_SYNTHETIC

fail=0
check() { # check WHAT EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then
        printf 'PASS %s: %s\n' "$1" "$3"
    else
        printf 'FAIL %s: expected "%s", got "%s"\n' "$1" "$2" "$3"
        fail=$((fail + 1))
    fi
}

# topo_env TOPOLOGY: hwloc's variable that shows the machine
topo_env() {
    case "$1" in
        two-numa) echo "HWLOC_XMLFILE=$xml" ;;
        no-pci)   echo "HWLOC_SYNTHETIC=pack:2 numa:1 pu:1" ;;
    esac
}

# in_ns TOPOLOGY CPUS CMD...: CMD in the namespace, bound, shown TOPOLOGY,
# at most 60 s, orc put into CMD only
in_ns() {
    local topo=$1 cpus=$2
    shift 2
    ip netns exec "$ns" env "$(topo_env "$topo")" taskset -c "$cpus" \
        timeout 60 env "${orc_env[@]}" "$@"
}

# ucx_info -d, one line per soft device in listing order:
# "name sysdev bandwidth latency"
devices() {
    UCX_ORC_JOB=info-$1-${2//,/-} in_ns "$1" "$2" "$ucx_info" -d 2>&1 | awk '
        /Transport:/     { orc = ($3 == "orc") }
        orc && /Device:/ { dev = $3; sub(":1$", "", dev) }
        orc && /System device:/ { sys = $4 }
        orc && /bandwidth:/     { bw = $3; sub("/ppn", "", bw) }
        orc && /latency:/       { print dev, sys, bw, $3 }'
}

# the device UCP picks for orc_hello's tag lane, both processes bound alike
chosen() {
    local topo=$1 cpus=$2 job=hello-$1-${2//,/-}
    export UCX_TLS=orc UCX_NET_DEVICES=soft_nic0:1,soft_nic1:1
    UCX_ORC_JOB=$job ORC_JOB=$job UCX_LOG_LEVEL=info in_ns "$topo" "$cpus" \
        "$hello" --name a --peer b > "$tmp/a.log" 2>&1 &
    local a=$!
    UCX_ORC_JOB=$job ORC_JOB=$job UCX_LOG_LEVEL=info in_ns "$topo" "$cpus" \
        "$hello" --name b --peer a > "$tmp/b.log" 2>&1
    local rb=$?
    wait $a
    local ra=$?
    unset UCX_TLS UCX_NET_DEVICES
    if [ $ra != 0 ] || [ $rb != 0 ]; then
        echo "orc_hello failed"
        sed 's/^/  a: /' "$tmp/a.log" | tail -5 >&2
        sed 's/^/  b: /' "$tmp/b.log" | tail -5 >&2
        return
    fi
    # the first tag lane, "orc/soft_nic1:1", in both processes' logs
    sed -n "$orc_ucp_tag_lanes" "$tmp/a.log" "$tmp/b.log" |
        sed -n 's/^orc\/\(soft_nic[01]\):1.*/\1/p' | sort -u | tr '\n' ' ' | sed 's/ $//'
}

field() { # field DEVICE N: column N of DEVICE in $devs
    echo "$devs" | awk -v d="$1" -v n="$2" '$1 == d { print $n }'
}

table=""
# run_case TOPOLOGY CPUS NEAR(listing order of nic0/nic1) BW0 BW1 SYS0 SYS1 PICK
run_case() {
    local topo=$1 cpus=$2 order=$3 bw0=$4 bw1=$5 sys0=$6 sys1=$7 pick=$8
    local what="$topo, cpus $cpus"
    devs=$(devices "$topo" "$cpus")
    check "$what: soft_nic0 system device" "$sys0" "$(field soft_nic0 2)"
    check "$what: soft_nic1 system device" "$sys1" "$(field soft_nic1 2)"
    check "$what: soft_lo system device" "<unknown>" "$(field soft_lo 2)"
    check "$what: soft_nic0 bandwidth" "$bw0" "$(field soft_nic0 3)"
    check "$what: soft_nic1 bandwidth" "$bw1" "$(field soft_nic1 3)"
    check "$what: listing order" "$order" \
        "$(echo "$devs" | awk '$1 ~ /nic/ { printf "%s%s", s, $1; s = " " }')"
    local got
    got=$(chosen "$topo" "$cpus")
    check "$what: UCP picks" "$pick" "$got"
    table+=$(printf '%-9s %-6s %-10s %-11s %s' "$topo" "$cpus" "$got" \
             "$(field "$got" 2)" "${numa[$got]:--}")$'\n'
}

# orcctl nodes shows the summary the transport published
declare -A numa
UCX_TLS=orc ORC_JOB=summary UCX_ORC_JOB=summary in_ns two-numa 0,1 \
    "$hello" --name idle --peer nobody --timeout 30 > "$tmp/idle.log" 2>&1 &
idle_pid=$!
orc_pids+=($idle_pid)
nodes=
for _ in $(seq 100); do
    nodes=$(ip netns exec "$ns" "$orcctl" --job summary nodes 2>&1)
    # one node per process, whatever its number of interfaces
    [ "$(echo "$nodes" | grep -c 'topology:')" -ge 1 ] && break
    sleep 0.1
done
echo "$nodes" | sed 's/^/  orcctl nodes: /'
summary=$(echo "$nodes" | grep -m1 -A3 'topology:' | sed 's/^ *//')
check "orcctl nodes: topology summary" \
    "topology: 2 NUMA nodes
soft_lo unknown
soft_nic0 pci 0000:03:00.0 numa 0 cpus 0
soft_nic1 pci 0000:81:00.0 numa 1 cpus 1" "$summary"
kill -TERM "$idle_pid" 2>/dev/null
wait "$idle_pid"
unset 'orc_pids[-1]'
numa[soft_nic0]=$(echo "$summary" | sed -n 's/^soft_nic0 .* numa \([0-9]*\) .*/\1/p')
numa[soft_nic1]=$(echo "$summary" | sed -n 's/^soft_nic1 .* numa \([0-9]*\) .*/\1/p')

#        topology cpus order                 bw nic0  bw nic1  sys nic0  sys nic1  UCP picks
run_case two-numa 0    "soft_nic0 soft_nic1" 6000.00  4200.00  03:00.0   81:00.0   soft_nic0
run_case two-numa 1    "soft_nic1 soft_nic0" 4200.00  6000.00  03:00.0   81:00.0   soft_nic1
# unbound: both nodes' CPUs, neither NIC remote: no preference, first listed
run_case two-numa 0,1  "soft_nic0 soft_nic1" 6000.00  6000.00  03:00.0   81:00.0   soft_nic0
numa=()
run_case no-pci   0    "soft_nic0 soft_nic1" 6000.00  6000.00  "<unknown>" "<unknown>" soft_nic0
run_case no-pci   1    "soft_nic0 soft_nic1" 6000.00  6000.00  "<unknown>" "<unknown>" soft_nic0

echo
echo "topology  cpus   UCP picks  sys device  NUMA"
printf '%s' "$table"
echo "orc topology: $fail failure(s)"
[ $fail = 0 ]
