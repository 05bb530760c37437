#!/bin/sh
# orcd benchmark (issue 3 §7): starts orcd on a free loopback port with its
# embedded defaults, runs orcd_bench (endpoint fetch, endpoint publish and a
# full pairing round trip at 1, 16 and 64 concurrent clients, ~5 s per cell,
# with /healthz as the reference row), prints the table with PASS/MISS
# against the goals, and stops orcd.
#
#   test/bench/orcd-bench.sh [BUILDDIR] [orcd_bench options...]
#
# BUILDDIR defaults to $ORC_TOP_BUILDDIR, else the current directory.
# Options go to orcd_bench, e.g. --duration 2 --clients 1,64 --tests fetch.
# ORCD_BENCH_ORCD_ARGS adds orcd options (e.g. "--config my.yaml").
#
# If wrk is installed (and ORCD_BENCH_WRK is not 0), the endpoint fetch is
# also measured with wrk at 64 connections, a load generator much lighter
# than libcurl threads: on a 2-core machine the client's own CPU use bounds
# what orcd_bench can show, and the wrk row shows orcd's headroom.
set -eu

builddir=${ORC_TOP_BUILDDIR:-.}
if [ $# -gt 0 ] && [ -d "$1" ]; then
    builddir=$1
    shift
fi

orcd="$builddir/src/coordinator/orcd/orcd"
bench="$builddir/test/bench/orcd_bench"
for bin in "$orcd" "$bench"; do
    if [ ! -x "$bin" ]; then
        echo "orcd-bench: $bin not built (run: make -C $builddir" \
             "src/coordinator/orcd/orcd test/bench/orcd_bench)" >&2
        exit 1
    fi
done

tmp=$(mktemp -d /tmp/orcd-bench.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# shellcheck disable=SC2086
"$orcd" --listen 127.0.0.1:0 --port-file "$tmp/port" --log-level warn \
    ${ORCD_BENCH_ORCD_ARGS:-} &
pid=$!

# readiness: the port file, bounded (10 s)
i=0
while [ ! -s "$tmp/port" ]; do
    i=$((i + 1))
    if [ $i -gt 1000 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "orcd-bench: orcd did not start" >&2
        exit 1
    fi
    sleep 0.01
done
port=$(cat "$tmp/port")
echo "orcd-bench: orcd pid $pid on 127.0.0.1:$port; $(nproc) cores" >&2

rc=0
"$bench" --url "http://127.0.0.1:$port" --job bench "$@" || rc=$?

orcctl="$builddir/orcctl"
if [ "${ORCD_BENCH_WRK:-1}" != 0 ] && command -v wrk >/dev/null 2>&1 &&
   [ -x "$orcctl" ]; then
    url="http://127.0.0.1:$port"
    "$orcctl" --url "$url" --job bench-wrk --json register wrk-host \
        --ttl 60 >"$tmp/reg" &
    reg=$!
    i=0
    while [ ! -s "$tmp/reg" ] && [ $i -lt 500 ]; do
        i=$((i + 1))
        sleep 0.01
    done
    id=$(tr -cd 0-9 <"$tmp/reg")
    if [ -n "$id" ] && "$orcctl" --url "$url" --job bench-wrk endpoint-put \
           "$id" '{"backend":"soft","qpn":1,"mtu":4096}' >/dev/null; then
        wrk -t2 -c64 -d5s --latency \
            "$url/v1/jobs/bench-wrk/nodes/$id/rdma/endpoint" >"$tmp/wrk" 2>&1
        awk '/Requests\/sec/ {rps = $2}
             /^ +50%/ {p50 = $2} /^ +99%/ {p99 = $2}
             /Non-2xx/ {bad = $NF}
             END {printf "wrk cross-check: endpoint fetch, 64 connections, " \
                         "2 threads, 5 s: %.0f req/s, p50 %s, p99 %s%s\n",
                         rps, p50, p99, bad ? ", NON-2XX " bad : ""}' \
            "$tmp/wrk"
    else
        echo "orcd-bench: wrk cross-check skipped (setup failed)" >&2
    fi
    kill -INT "$reg" 2>/dev/null || true
    wait "$reg" 2>/dev/null || true
fi
exit $rc
