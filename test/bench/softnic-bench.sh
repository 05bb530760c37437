#!/bin/sh
# Run the softnic benchmark (issues 2 and 12): same host against raw CMA,
# and, as root, across two network namespaces against a plain TCP stream, a
# busy-polled TCP ping-pong and that ping-pong's floors for softnic (an ACK
# written before each answer, on one connection or two; each message read
# by a woken thread).
# The namespaces (orc-b-<pid>-a/-b, veth "orc0" on both sides,
# 198.18.0.1/24 and 198.18.0.2/24) are created here and always removed.
#
# Usage: softnic-bench.sh [-d seconds]     (default 0.7 s per bandwidth figure, 3 rounds)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bench=${SOFTNIC_BENCH:-}
if [ -z "$bench" ]; then
    for b in "$here/softnic_bench" "${ORC_TOP_BUILDDIR:-.}/test/bench/softnic_bench"; do
        [ -x "$b" ] && bench=$b && break
    done
fi
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
    echo "softnic-bench.sh: softnic_bench not found (build it: make test/bench/softnic_bench," >&2
    echo "then run this script from the build tree or set SOFTNIC_BENCH)" >&2
    exit 1
fi

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
    echo "softnic-bench.sh: not root (or no ip tool): same-host part only" >&2
    exec "$bench" "$@"
fi

a=orc-b-$$-a
b=orc-b-$$-b
cleanup() {
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ip netns add "$a"
ip netns add "$b"
ip link add "ob$$a" type veth peer name "ob$$b"
ip link set "ob$$a" netns "$a"
ip link set "ob$$b" netns "$b"
ip -n "$a" link set "ob$$a" name orc0
ip -n "$b" link set "ob$$b" name orc0
ip -n "$a" addr add 198.18.0.1/24 dev orc0
ip -n "$b" addr add 198.18.0.2/24 dev orc0
for n in "$a" "$b"; do
    ip -n "$n" link set orc0 up
    ip -n "$n" link set lo up
done

"$bench" -a "$a" -b "$b" -i 198.18.0.2 "$@"
