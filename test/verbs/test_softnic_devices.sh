#!/bin/bash
# softnic as libibverbs devices, judged by rdma-core's ibv_devices and
# ibv_devinfo, and contrib/softnic-run's own contract: devices for the
# interfaces it should cover, exit status of CMD, a clear refusal when it
# cannot work, --up/--down, nothing left behind.
. "$(dirname "$0")/verbs_lib.sh"

snv_require ibv_devices ibv_devinfo ip ss

# the GID and node GUID of an IPv4 address, as ibv_devinfo prints them
gid_of() { echo "::ffff:$1"; }
guid_of() {
    local a b c d
    IFS=. read -r a b c d <<< "$1"
    printf '0200:%02x%02x:fffe:%02x%02x' "$a" "$b" "$c" "$d"
}

# What softnic-run could leave on the host: its mount-point directories
# (under TMPDIR, private to this test) and /dev/infiniband
export TMPDIR=$snv_tmp/tmpdir
mkdir -p "$TMPDIR"
host_state() {
    ls -A "$TMPDIR"
    ls /dev/infiniband 2>/dev/null
    grep -F "$TMPDIR" /proc/self/mountinfo
}

# ibv_devices lists one soft_<ifname> per interface up with IPv4, node GUID
# from its address
devices_listed() {
    local out ifname ip n=0
    out=$("$snv_run" ibv_devices) || return 1
    echo "$out"
    while read -r _ ifname _ ip _; do
        ip=${ip%/*}
        n=$((n + 1))
        echo "$out" | grep -Eq "^\s*soft_$ifname\s+$(guid_of "$ip" | tr -d :)\s*$" || {
            echo "soft_$ifname with GUID $(guid_of "$ip") not listed" >&2; return 1; }
    done < <(ip -4 -o addr show up | awk '!seen[$2]++')
    [ "$(echo "$out" | grep -c 'soft_')" = "$n" ] || {
        echo "expected $n devices" >&2; return 1; }
}

# ibv_devinfo -v of one device: port ACTIVE, Ethernet, the interface's GID
# (RoCE v2) and node GUID. devinfo_ok NETNS|"" IFNAME IPV4
devinfo_ok() {
    local ns=$1 ifname=$2 ip=$3 out
    out=$(${ns:+ip netns exec "$ns"} "$snv_run" ibv_devinfo -v -d "soft_$ifname") || return 1
    echo "$out"
    echo "$out" | grep -Eq "^\s*hca_id:\s+soft_$ifname$" &&
    echo "$out" | grep -Eq "^\s*state:\s+PORT_ACTIVE \(4\)" &&
    echo "$out" | grep -Eq "^\s*link_layer:\s+Ethernet" &&
    echo "$out" | grep -Eq "^\s*node_guid:\s+$(guid_of "$ip")$" &&
    echo "$out" | grep -Eq "^\s*GID\[\s*0\]:\s+$(gid_of "$ip"), RoCE v2$" &&
    echo "$out" | grep -Eq "^\s*atomic_cap:\s+ATOMIC_HCA" ||
        { echo "ibv_devinfo -v -d soft_$ifname: wrong or missing attributes" >&2; return 1; }
}

every_device_info() {
    local ifname ip
    while read -r _ ifname _ ip _; do
        devinfo_ok "" "$ifname" "${ip%/*}" || return 1
    done < <(ip -4 -o addr show up | awk '!seen[$2]++')
}

ifaces_option() {
    local out
    out=$("$snv_run" --ifaces lo ibv_devices) || return 1
    echo "$out"
    [ "$(echo "$out" | grep -c 'soft_')" = 1 ] && echo "$out" | grep -q soft_lo ||
        { echo "--ifaces lo: expected soft_lo alone" >&2; return 1; }
    out=$(SOFTNIC_IFACES=lo "$snv_run" ibv_devices) || return 1
    [ "$(echo "$out" | grep -c 'soft_')" = 1 ] ||
        { echo "SOFTNIC_IFACES=lo: expected soft_lo alone" >&2; return 1; }
}

# CMD's exit status is softnic-run's; a missing command is 127
exit_status() {
    local st
    "$snv_run" true || { echo "true: $?" >&2; return 1; }
    st=0; "$snv_run" sh -c 'exit 3' || st=$?
    [ $st = 3 ] || { echo "exit 3 came back as $st" >&2; return 1; }
    st=0; "$snv_run" /nonexistent/cmd 2>/dev/null || st=$?
    [ $st = 127 ] || { echo "a missing command came back as $st" >&2; return 1; }
}

# Nothing of softnic-run stays on the host, however CMD ends
nothing_left() {
    local before after
    before=$(host_state)
    "$snv_run" ibv_devices > /dev/null || return 1
    "$snv_run" sh -c 'exit 5' || true
    "$snv_run" sh -c 'kill -TERM $$' || true
    after=$(host_state)
    [ "$before" = "$after" ] ||
        { diff <(echo "$before") <(echo "$after"); echo "softnic-run left something behind" >&2; return 1; }
    [ ! -e /dev/infiniband ] || { echo "/dev/infiniband on the host" >&2; return 1; }
}

# Refusals: exact reasons, non-zero status, nothing left behind
refuses() { # WHAT PATTERN CMD...: CMD fails with PATTERN on stderr
    local what=$1 pattern=$2 before st=0 err
    shift 2
    before=$(host_state)
    err=$("$@" 2>&1 >/dev/null) || st=$?
    echo "$what: status $st: $err"
    [ $st != 0 ] || { echo "$what: exit status 0" >&2; return 1; }
    echo "$err" | grep -q "$pattern" || { echo "$what: no '$pattern' in the message" >&2; return 1; }
    [ "$before" = "$(host_state)" ] || { echo "$what: left something behind" >&2; return 1; }
}

not_root() {
    command -v setpriv >/dev/null || { echo "setpriv (util-linux) not found" >&2; return 77; }
    refuses "as nobody" "needs root" \
        setpriv --reuid=nobody --regid=nogroup --clear-groups "$snv_run" ibv_devices
}

unknown_iface() {
    refuses "--ifaces nosuch0" "'nosuch0' is not up" "$snv_run" --ifaces nosuch0 ibv_devices
}

# The kernel-RDMA host: the netlink probe (perl) answers "present"
netlink_host() {
    mkdir -p "$snv_tmp/fakebin"
    printf '#!/bin/sh\nexit 0\n' > "$snv_tmp/fakebin/perl"
    chmod +x "$snv_tmp/fakebin/perl"
    refuses "RDMA netlink present" "RDMA netlink" \
        env PATH="$snv_tmp/fakebin:$PATH" "$snv_run" ibv_devices
}

# --up / --down, made inside a softnic-run namespace so that the host's
# /dev is not touched by the test: the devices --up makes are visible to a
# shell that sources its env file, and --down removes exactly them
up_down() {
    # shellcheck disable=SC2016
    "$snv_run" --ifaces lo bash -c '
        set -e
        state=$1/state; run=$2
        before=$(ls /dev/infiniband)
        SOFTNIC_RUN_DIR=$state "$run" --up --ifaces lo
        [ -f "$state/env" ]
        new=$(ls /dev/infiniband | grep -vxF "$before")
        [ -n "$new" ] || { echo "--up made no device node" >&2; exit 1; }
        ( . "$state/env"; [ "$SYSFS_PATH" = "$state/sys" ]; ibv_devinfo -d soft_lo | grep -q PORT_ACTIVE ) ||
            { echo "the --up devices are not usable from its env" >&2; exit 1; }
        ! SOFTNIC_RUN_DIR=$state "$run" --up 2>/dev/null || { echo "a second --up succeeded" >&2; exit 1; }
        SOFTNIC_RUN_DIR=$state "$run" --down
        [ ! -e "$state" ] || { echo "--down left $state" >&2; exit 1; }
        [ "$(ls /dev/infiniband)" = "$before" ] || { echo "--down left device nodes" >&2; exit 1; }
        ! SOFTNIC_RUN_DIR=$state "$run" --down 2>/dev/null || { echo "--down when not up succeeded" >&2; exit 1; }
    ' snv "$snv_tmp" "$snv_run"
}

# Two softnic-run commands on one host are one host to softnic: their
# mount namespaces differ but share /dev/shm, so the QPs take the same-host
# paths (CMA, rings), as under one softnic-run
two_runs_one_host() {
    local port
    command -v ibv_rc_pingpong >/dev/null || { echo "ibv_rc_pingpong not found" >&2; return 77; }
    port_next || return 1
    port=$port_seq
    # softnic's debug messages through libibverbs' provider log
    VERBS_LOG_LEVEL=4 VERBS_LOG_FILE=$snv_tmp/verbs.log \
        snv_pair runs "$port" ibv_rc_pingpong -d soft_lo -g 0 -p "$port" -n 20 -- \
        ibv_rc_pingpong -d soft_lo -g 0 -p "$port" -n 20 @SERVER@ || return 1
    grep 'connected to qp' "$snv_tmp/verbs.log"
    [ "$(grep -c 'connected to qp .*(same host, CMA' "$snv_tmp/verbs.log")" = 2 ] ||
        { echo "the two softnic-run commands did not use the same-host paths" >&2; return 1; }
}

netns_devinfo() {
    snv_netns_ok || return 1
    devinfo_ok "$snv_nsa" orc0 "$snv_ipa" && devinfo_ok "$snv_nsb" orc0 "$snv_ipb" &&
        devinfo_ok "$snv_nsa" lo 127.0.0.1
}

# A softnic-run inside another one (as the two-host cases of these scripts
# run theirs) shows the devices of its own host only: in namespace A,
# soft_lo and soft_orc0, nothing of the outer run's host
nested_run() {
    local out
    snv_netns_ok || return 1
    out=$("$snv_run" ip netns exec "$snv_nsa" "$snv_run" ibv_devices) || return 1
    echo "$out"
    [ "$(echo "$out" | grep -c 'soft_')" = 2 ] && echo "$out" | grep -q 'soft_lo' &&
        echo "$out" | grep -q 'soft_orc0' ||
        { echo "the nested softnic-run does not list exactly soft_lo and soft_orc0" >&2; return 1; }
}

snv_netns_up
snv_case local/ibv_devices devices_listed
snv_case local/ibv_devinfo_every_device every_device_info
snv_case netns/ibv_devinfo netns_devinfo
snv_case run/ifaces ifaces_option
snv_case run/exit_status exit_status
snv_case run/nothing_left_behind nothing_left
snv_case run/refuses_non_root not_root
snv_case run/refuses_unknown_iface unknown_iface
snv_case run/refuses_rdma_netlink_host netlink_host
snv_case run/up_down up_down
snv_case run/two_runs_one_host two_runs_one_host
snv_case run/nested_shows_own_devices nested_run
snv_finish
