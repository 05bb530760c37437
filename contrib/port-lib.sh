# TCP ports for a program's own rendezvous (ucx_perftest -p, the
# pingpongs' -p, etcd's URLs): sourced by bash scripts.
#
# They come from below the kernel's ephemeral range, so that no connection
# (softnic's, UCX's, libcurl's, the programs' own) can hold one, not even as
# a socket in TIME_WAIT that a later bind() trips over; from a per-process
# start, so that two runs at once take different ones; and one in use on
# this host now is stepped over. The program binds its port a moment later:
# a process taking it in between shows as a failed run, never a false pass.

port_eph_low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)
[[ "$port_eph_low" =~ ^[0-9]+$ ]] && [ "$port_eph_low" -gt 12000 ] || port_eph_low=32768
port_seq=$((10000 + $$ % (port_eph_low - 11000)))

# port_next [PREFIX...]: the next such port in port_seq; no socket of this
# host, nor of the namespace PREFIX runs ss in (e.g. ip netns exec NS),
# uses it. Bounded: fails after 100 ports in use.
port_next() {
    local i
    for i in $(seq 100); do
        port_seq=$((port_seq + 1))
        [ "$port_seq" -lt "$port_eph_low" ] || port_seq=10000
        ! ss -tanH "sport = :$port_seq" | grep -q . &&
            { [ $# = 0 ] || ! "$@" ss -tanH "sport = :$port_seq" | grep -q .; } &&
            return 0
    done
    echo "no free TCP port below $port_eph_low after 100 tries" >&2
    return 1
}
