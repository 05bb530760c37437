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

"$bench" --url "http://127.0.0.1:$port" --job bench "$@"
