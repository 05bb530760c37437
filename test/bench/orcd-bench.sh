#!/usr/bin/env bash
# orcd benchmark (issue 3 §7, issue 9 §5): runs orcd_bench (endpoint fetch,
# endpoint publish and a full pairing round trip at 1, 16 and 64 concurrent
# clients, ~5 s per cell, with /healthz as the reference row) against orcd
# on free loopback ports (etcd's from contrib/port-lib.sh, orcd's its own
# --listen 127.0.0.1:0), prints the table with PASS/MISS against the goals,
# and stops everything it started.
#
#   test/bench/orcd-bench.sh [BUILDDIR] [--stores LIST] [orcd_bench options...]
#
# BUILDDIR defaults to $ORC_TOP_BUILDDIR, else the current directory.
# --stores: the stores to measure one after the other in the same run,
# comma-separated (default: memory):
#   memory    one orcd with its in-memory store (embedded defaults)
#   etcdMxR   R orcd replicas over an etcd of M members (Debian's etcd-server
#             on free loopback ports, its data in the run's temp dir); the
#             clients spread over the replicas (orcd_bench --url a,b)
# e.g. --stores memory,etcd1x1,etcd1x2,etcd3x1,etcd3x2. With more than one
# store a summary follows: fetch and pairing at 64 clients per store, and
# their ratio to the memory store of the same run (when it was measured).
# Each etcd store also measures etcd's own write rate (64 puts at a time
# through its JSON gateway, with curl) right after its run: a pairing round
# trip is 2 etcd writes (each post carries its poster's acknowledgement of
# what it received), so half of that rate is the most pairings/s orcd on
# that etcd can reach ("x etcd max" in the summary).
# Options go to orcd_bench, e.g. --duration 2 --clients 1,64 --tests fetch.
# ORCD_BENCH_ORCD_ARGS adds orcd options (e.g. "--config my.yaml"; the
# etcd stores get a config of their own).
#
# If wrk is installed (and ORCD_BENCH_WRK is not 0), the memory store's
# endpoint fetch is also measured with wrk at 64 connections, a load
# generator much lighter than libcurl threads: on a 2-core machine the
# client's own CPU use bounds what orcd_bench can show, and the wrk row shows
# orcd's headroom.
set -eu

builddir=${ORC_TOP_BUILDDIR:-.}
if [ $# -gt 0 ] && [ -d "$1" ]; then
    builddir=$1
    shift
fi
stores=memory
if [ $# -gt 1 ] && [ "$1" = --stores ]; then
    stores=$2
    shift 2
fi
for store in $(echo "$stores" | tr , ' '); do
    case $store in
    memory | etcd[13]x[12]) ;;
    *)
        echo "orcd-bench: --stores: '$store' is not memory or etcdMxR" \
             "(M members 1 or 3, R replicas 1 or 2)" >&2
        exit 1
        ;;
    esac
done

orcd="$builddir/src/coordinator/orcd/orcd"
bench="$builddir/test/bench/orcd_bench"
for bin in "$orcd" "$bench"; do
    if [ ! -x "$bin" ]; then
        echo "orcd-bench: $bin not built (run: make -C $builddir" \
             "src/coordinator/orcd/orcd test/bench/orcd_bench)" >&2
        exit 1
    fi
done
etcd_bin=${ORCD_BENCH_ETCD:-/usr/bin/etcd}
case $stores in
*etcd*)
    if [ ! -x "$etcd_bin" ]; then
        echo "orcd-bench: $etcd_bin not found (apt-get install" \
             "etcd-server)" >&2
        exit 1
    fi
    ;;
esac

tmp=$(mktemp -d /tmp/orcd-bench.XXXXXX)
pids=
stop_all() {
    for p in $pids; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in $pids; do
        wait "$p" 2>/dev/null || true
    done
    pids=
}
cleanup() {
    stop_all
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# etcd's ports: port_next (port_seq), as in every script of the project
. "$(dirname "$0")/../../contrib/port-lib.sh"

# start_etcd M: M members in $tmp/etcd; their client URLs in $etcd_urls
start_etcd() {
    m=$1
    cluster= ports= i=0
    while [ $i -lt "$m" ]; do
        port_next && c=$port_seq && port_next && p=$port_seq || return 1
        ports="$ports $c:$p"
        cluster="$cluster${cluster:+,}m$i=http://127.0.0.1:$p"
        i=$((i + 1))
    done
    etcd_urls= i=0
    for cp in $ports; do
        c=${cp%:*} p=${cp#*:}
        "$etcd_bin" --name "m$i" --data-dir "$tmp/etcd/m$i" \
            --listen-client-urls "http://127.0.0.1:$c" \
            --advertise-client-urls "http://127.0.0.1:$c" \
            --listen-peer-urls "http://127.0.0.1:$p" \
            --initial-advertise-peer-urls "http://127.0.0.1:$p" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "orcd-bench-$$-$m" \
            >"$tmp/etcd-m$i.log" 2>&1 &
        pids="$pids $!"
        etcd_urls="$etcd_urls${etcd_urls:+, }http://127.0.0.1:$c"
        i=$((i + 1))
    done
}

# start_orcd NAME [orcd options]: one orcd on a free port, its URL in
# $orcd_url. orcd on etcd exits while etcd has no leader yet: started again
# until it serves (bounded, 30 s).
start_orcd() {
    name=$1
    shift
    i=0
    while :; do
        rm -f "$tmp/$name.port"
        # shellcheck disable=SC2086
        "$orcd" --listen 127.0.0.1:0 --port-file "$tmp/$name.port" \
            --log-level warn "$@" ${ORCD_BENCH_ORCD_ARGS:-} \
            2>>"$tmp/$name.log" &
        opid=$!
        while [ ! -s "$tmp/$name.port" ] && kill -0 "$opid" 2>/dev/null; do
            sleep 0.01
        done
        if [ -s "$tmp/$name.port" ]; then
            break
        fi
        wait "$opid" 2>/dev/null || true
        i=$((i + 1))
        if [ $i -gt 100 ]; then
            echo "orcd-bench: orcd did not start; its log:" >&2
            cat "$tmp/$name.log" >&2
            return 1
        fi
        sleep 0.3
    done
    pids="$pids $opid"
    orcd_url="http://127.0.0.1:$(cat "$tmp/$name.port")"
    echo "orcd-bench: $name: orcd pid $opid on $orcd_url" >&2
}

# wrk_check URL: the endpoint fetch with wrk (see above)
wrk_check() {
    url=$1
    orcctl="$builddir/orcctl"
    if [ "${ORCD_BENCH_WRK:-1}" = 0 ] || ! command -v wrk >/dev/null 2>&1 ||
       [ ! -x "$orcctl" ]; then
        return 0
    fi
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
}

# etcd_ceiling STORE: etcd's own write rate through its JSON gateway (the
# API orcd speaks), 64 puts at a time, as the reference for what orcd on
# etcd can do: every mailbox post is one etcd write that also deletes what
# its poster received, so a pairing round trip (2 posts) costs 2.
# Prints a line; the rate goes to $tmp/STORE.ceiling.
etcd_ceiling() {
    n=${ORCD_BENCH_ETCD_PUTS:-4000}
    url=${etcd_urls%%,*}
    i=0
    while [ $i -lt "$n" ]; do
        i=$((i + 1))
        [ $i -gt 1 ] && echo next
        printf 'url = "%s/v3/kv/put"\ndata = "{\\"key\\":\\"%s\\",\\"value\\":\\"eA==\\"}"\noutput = "/dev/null"\n' \
            "$url" "$(printf '/orcd-bench-ref/%08d' $i | base64)"
    done >"$tmp/puts.curl"
    t0=$(date +%s.%N)
    if ! curl -sSf --no-progress-meter --parallel --parallel-max 64 \
            -K "$tmp/puts.curl" 2>"$tmp/puts.err"; then
        echo "orcd-bench: $store: etcd reference: the puts failed:" \
             "$(head -n 3 "$tmp/puts.err")" >&2
        return 0
    fi
    t1=$(date +%s.%N)
    awk -v n="$n" -v t0="$t0" -v t1="$t1" -v f="$tmp/$store.ceiling" 'BEGIN {
        r = n / (t1 - t0); printf "%.0f\n", r > f
        printf "etcd reference: %d puts through its JSON gateway, 64 at a time: " \
               "%.0f/s; at 2 writes a pairing round trip: at most %.0f pairings/s\n",
               n, r, r / 2 }'
}

rc=0
nstores=0
for store in $(echo "$stores" | tr , ' '); do
    nstores=$((nstores + 1))
    urls=
    case $store in
    memory)
        start_orcd memory
        urls=$orcd_url
        desc="memory store, one orcd"
        ;;
    etcd*)
        members=${store#etcd} members=${members%x*} replicas=${store#*x}
        start_etcd "$members"
        printf 'store:\n  backend: etcd\n  etcd:\n    endpoints: [%s]\n' \
            "$etcd_urls" >"$tmp/$store.yaml"
        r=0
        while [ $r -lt "$replicas" ]; do
            start_orcd "$store-r$r" --config "$tmp/$store.yaml"
            urls="$urls${urls:+,}$orcd_url"
            r=$((r + 1))
        done
        desc="etcd store, $members member(s), $replicas replica(s)"
        ;;
    esac
    echo "== $store: $desc; $(nproc) cores"
    brc=0
    "$bench" --url "$urls" --job bench "$@" >"$tmp/$store.out" || brc=$?
    cat "$tmp/$store.out"
    [ $brc -eq 0 ] || rc=$brc
    if [ "$store" = memory ]; then
        wrk_check "$urls"
    else
        etcd_ceiling
    fi
    stop_all
    rm -rf "$tmp/etcd"
done

if [ $nstores -gt 1 ]; then
    echo "== summary at 64 clients (x memory: ratio to the memory store" \
         "measured in this run)"
    for store in $(echo "$stores" | tr , ' '); do
        echo "$store"
    done | awk -v dir="$tmp" '
        function cell(file, label, words,    line, f, n) {
            v[label] = ""; p[label] = ""
            while ((getline line < file) > 0) {
                n = split(line, f, " ")
                if ((index(line, label " ") == 1) && (f[words + 1] == 64) &&
                    (n > words + 4)) {
                    v[label] = f[words + 2]; p[label] = f[words + 4]
                }
            }
            close(file)
        }
        function ratio(x, m) { return (m > 0 && x != "") ? sprintf("%.2f", x / m) : "-" }
        BEGIN {
            printf "%-10s %12s %9s %10s %12s %9s %10s %12s\n", "store",
                   "fetch/s", "p99 ms", "x memory", "pairing/s", "p99 ms",
                   "x memory", "x etcd max"
        }
        {
            cell(dir "/" $1 ".out", "endpoint fetch", 2)
            cell(dir "/" $1 ".out", "pairing round trip", 3)
            name[NR] = $1
            ceil[NR] = ""
            if ((getline c < (dir "/" $1 ".ceiling")) > 0) ceil[NR] = c / 2
            fv[NR] = v["endpoint fetch"]; fp[NR] = p["endpoint fetch"]
            pv[NR] = v["pairing round trip"]; pp[NR] = p["pairing round trip"]
            if ($1 == "memory") {
                mf = fv[NR]; mp = pv[NR]
            }
        }
        END {
            for (i = 1; i <= NR; ++i) {
                printf "%-10s %12s %9s %10s %12s %9s %10s %12s\n", name[i],
                       fv[i], fp[i], ratio(fv[i], mf), pv[i], pp[i],
                       ratio(pv[i], mp), ratio(pv[i], ceil[i])
            }
        }'
fi
exit $rc
