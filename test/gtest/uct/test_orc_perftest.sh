#!/bin/bash
# ucx_perftest over orc on one host (softnic soft_lo): every UCT test with
# every data layout orc advertises, and UCP tests with UCX_TLS=orc alone.
# Each run must complete and report; data correctness is the job of
# test_orc_uct. Short iteration counts: this is a smoke test, not a benchmark.
#
# Needs: ucx_perftest (of the UCX built against: ORC_UCX_PERFTEST from the
# test harness), the built module and orcd. A private orcd is started on a free
# loopback port and stopped at exit.
set -u

builddir=${ORC_TOP_BUILDDIR:-$(pwd)}
srcdir=${ORC_TOP_SRCDIR:-$(dirname "$0")/../../..}
perftest=${ORC_UCX_PERFTEST:-$(command -v ucx_perftest || true)}
lib=$builddir/.libs/libuct_orc.so
orcd=$builddir/src/coordinator/orcd/orcd
iters=${ORC_PERFTEST_ITERS:-500}

if [ -z "$perftest" ] || [ ! -x "$perftest" ]; then
    echo "SKIP: ucx_perftest not found (install ucx-utils)"
    exit 77
fi
for f in "$lib" "$orcd"; do
    [ -e "$f" ] || { echo "FAIL: $f not built"; exit 1; }
done

# A sanitizer build of the module cannot be preloaded into Debian's
# uninstrumented ucx_perftest: ASan insists on being the first library, and
# with libasan preloaded first any UCX program that also loads libcurl
# (gnutls -> p11-kit) deadlocks at exit in p11-kit's destructor (freelocale
# waiting on glibc's setlocale lock). Reproduce without orc:
#   LD_PRELOAD=libasan.so.8:libcurl.so.4 ucx_info -v    # never exits
# The sanitized module is exercised by test_orc_uct instead.
if ldd "$lib" | grep -q libasan; then
    echo "SKIP: sanitizer build: ASan cannot be preloaded into ucx_perftest (see the comment in $0)"
    exit 77
fi

tmp=$(mktemp -d /tmp/orc-perftest.XXXXXX)
orcd_pid=
cleanup() {
    [ -n "$orcd_pid" ] && kill -TERM "$orcd_pid" 2>/dev/null && wait "$orcd_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT

"$orcd" --listen 127.0.0.1:0 --port-file "$tmp/port" --log-level error &
orcd_pid=$!
for _ in $(seq 100); do
    [ -s "$tmp/port" ] && break
    sleep 0.1
done
[ -s "$tmp/port" ] || { echo "FAIL: orcd did not start"; exit 1; }

export UCX_ORC_COORDINATOR=http://127.0.0.1:$(cat "$tmp/port")
# ORC_TEST_BACKEND: soft (default) or verbs (test/verbs/test_orc_verbs.sh
# runs this script under contrib/softnic-run for the softnic provider)
export UCX_ORC_BACKEND=${ORC_TEST_BACKEND:-soft} UCX_ORC_SOFT_IFACES=lo UCX_ORC_JOB=perftest
export UCX_WARN_UNUSED_ENV_VARS=n

server_pre=()
client_pre=()
server_addr=127.0.0.1
. "$srcdir/test/gtest/uct/perftest_lib.sh"

uct="-x orc -d soft_lo:1 -n $iters"
# UCT: data layouts orc advertises per operation
for layout in short bcopy zcopy; do
    run "am_lat/$layout"  $uct -t am_lat -D $layout
    run "put_lat/$layout" $uct -t put_lat -D $layout
    run "put_bw/$layout"  $uct -t put_bw -D $layout
    run "am_bw/$layout"   $uct -t am_bw -D $layout
done
for layout in bcopy zcopy; do
    run "get/$layout" $uct -t get -D $layout
done
for t in add_lat fadd swap cswap; do
    run "$t" $uct -t $t
done

# UCP with orc as the only transport
for t in tag_lat tag_bw ucp_put_bw ucp_get ucp_am_lat stream_bw; do
    UCX_TLS=orc run "ucp/$t" -t $t -n $iters
done

echo "perftest over orc: $pass passed, $fail failed"
[ $fail = 0 ]
