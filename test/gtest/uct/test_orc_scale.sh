#!/bin/bash
# Scale tests of orc (test_orc_scale): 1,024 endpoints on one interface,
# 64 processes all-to-all, and 150 processes with two devices each keeping
# their leases for a minute against one orcd with default limits.
#
# As root, the whole binary runs in a network namespace of its own with a
# second interface (one end of a veth pair inside the namespace, with an
# address from 198.18.0.0/15: traffic to it stays local), so every process
# has two soft devices (soft_lo, soft_orcs0); orcd runs there too.
# Without root the many-process lease test skips. The namespace is removed
# at exit.
#
# In CI (make check) all three run at their issue sizes: about 100 s on a
# shared two-core machine (the lease hold is 60 s of it). Bigger runs are by
# hand, from the build tree, e.g. 256 processes:
#   ORC_SCALE_PROCS=256 GTEST_FILTER=OrcScale.ManyProcessesKeepLeases \
#       ../test/gtest/uct/test_orc_scale.sh
# (ORC_SCALE_ALLTOALL_PROCS, ORC_SCALE_HOLD, ORC_SCALE_BATCH: see
# test_orc_scale.cc). Each test prints its figures on an ORC-FIGURE line.
#
# The sanitizer build runs the 1,024-endpoint test only: the many-process
# tests start 64 and 150 processes, which under ASan (each process several
# times larger and slower) would take most of CI's time on two cores and add
# nothing the plain run and test_orc_uct's ASan pass do not check.
set -u

builddir=${ORC_TOP_BUILDDIR:-$(pwd)}
test_bin=$builddir/test/gtest/uct/test_orc_scale
lib=$builddir/.libs/libuct_orc.so
xml=${GTEST_OUTPUT:+${GTEST_OUTPUT%/}/test_orc_scale.sh.xml}

if ldd "$lib" | grep -q libasan; then
    export ORC_SCALE_SKIP_MANY="sanitizer build: the many-process tests run in the plain build (see $0)"
fi

run() {
    GTEST_OUTPUT=${xml:+xml:$xml} "$@" "$test_bin"
}

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
    echo "note: not root: the many-process lease test skips"
    run env
    exit $?
fi

tag=$$
ns=orc-scale-$tag
# an address in 198.18.0.0/15 picked from the pid, so parallel runs differ
addr=198.19.$(( tag % 250 + 1 )).$(( (tag / 250) % 250 + 1 ))
cleanup() {
    ip netns del "$ns" 2>/dev/null
}
trap cleanup EXIT

if ! ip netns add "$ns" ||
   ! ip -n "$ns" link add orcs0 type veth peer name orcs1 ||
   ! ip -n "$ns" addr add "$addr/32" dev orcs0 ||
   ! ip -n "$ns" link set lo up ||
   ! ip -n "$ns" link set orcs1 up ||
   ! ip -n "$ns" link set orcs0 up; then
    echo "note: cannot create a network namespace with a second interface: the many-process lease test skips"
    run env
    exit $?
fi

run ip netns exec "$ns" env ORC_SCALE_DEVICES=lo,orcs0
