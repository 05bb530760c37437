#!/bin/bash
# The orc transport keeps running while the orcd replica it registered with
# is SIGKILLed, and new endpoints still pair: a one-member etcd and two orcd
# replicas on it (free loopback ports, a scratch directory removed at exit),
# UCX_ORC_COORDINATOR listing both. A long ucx_perftest pair runs with
# 3-second leases; the first replica is killed while it runs; the pair must
# still be measuring after more than two TTLs and after a new pair started
# after the kill has finished and reported (lease keep-alives and pairing
# go to the second replica).
#
# Time limits: on a loaded machine (load 15 on two cores) an am_lat round
# trip takes 2-7 ms instead of microseconds, so the new pair runs 2,000
# iterations (about 15 s there), and the long pair's limit covers the
# whole test: it must not end by its own timeout before it is checked.
#
# Needs: etcd (etcd-server), ucx_perftest (ucx-utils), the built module and
# orcd.
set -u

builddir=${ORC_TOP_BUILDDIR:-$(pwd)}
perftest=${UCX_PERFTEST:-$(command -v ucx_perftest || true)}
etcd=${ORC_ETCD:-/usr/bin/etcd}
lib=$builddir/.libs/libuct_orc.so
orcd=$builddir/src/coordinator/orcd/orcd
tmp=$(mktemp -d /tmp/orc-replicas.XXXXXX)
pids=()

cleanup() {
    local pid
    # the pairs run under timeout(1), which passes SIGTERM on to them
    for pid in ${cpid_running:-} ${spid_running:-} ${cpid_after:-} \
        ${spid_after:-}; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    [ -n "${ORC_KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

[ -n "$perftest" ] && [ -x "$perftest" ] ||
    { echo "SKIP: ucx_perftest not found (install ucx-utils)"; exit 77; }
[ -x "$etcd" ] ||
    { echo "FAIL: $etcd not installed (contrib/install-deps.sh installs etcd-server)"; exit 1; }
for f in "$lib" "$orcd"; do
    [ -e "$f" ] || { echo "FAIL: $f not built"; exit 1; }
done
# see test_orc_perftest.sh: ASan cannot be preloaded into ucx_perftest
if ldd "$lib" | grep -q libasan; then
    echo "SKIP: sanitizer build: ASan cannot be preloaded into ucx_perftest"
    exit 77
fi

# ports for etcd and the perftest pairs: port_next (port_seq)
. "$(dirname "$0")/../../../contrib/port-lib.sh"

port_next && eport=$port_seq && port_next && pport=$port_seq || exit 99
"$etcd" --name m0 --data-dir "$tmp/etcd.data" \
    --listen-client-urls "http://127.0.0.1:$eport" \
    --advertise-client-urls "http://127.0.0.1:$eport" \
    --listen-peer-urls "http://127.0.0.1:$pport" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "m0=http://127.0.0.1:$pport" \
    --heartbeat-interval 50 --election-timeout 500 > "$tmp/etcd.log" 2>&1 &
pids+=($!)
printf 'store:\n  backend: etcd\n  etcd: {endpoints: [http://127.0.0.1:%s]}\nttl: {min: 1}\n' \
    "$eport" > "$tmp/orcd.yaml"

# start_orcd NAME: an orcd replica; sets port_NAME and pid_NAME
start_orcd() {
    local i
    for i in $(seq 200); do   # etcd may still be starting: orcd exits 1
        rm -f "$tmp/$1.port"
        "$orcd" --listen 127.0.0.1:0 --port-file "$tmp/$1.port" \
            --config "$tmp/orcd.yaml" --log-level warn 2> "$tmp/$1.log" &
        local pid=$!
        while kill -0 "$pid" 2>/dev/null && [ ! -s "$tmp/$1.port" ]; do
            sleep 0.05
        done
        if [ -s "$tmp/$1.port" ]; then
            pids+=($pid)
            eval "port_$1=$(cat "$tmp/$1.port") pid_$1=$pid"
            return 0
        fi
        wait "$pid"
        sleep 0.1
    done
    echo "FAIL: orcd $1 did not start"; cat "$tmp/$1.log" "$tmp/etcd.log" | tail -20
    exit 1
}
start_orcd a
start_orcd b

export UCX_ORC_COORDINATOR=http://127.0.0.1:$port_a,http://127.0.0.1:$port_b
export UCX_ORC_BACKEND=soft UCX_ORC_SOFT_IFACES=lo UCX_ORC_JOB=replicas
export UCX_ORC_LEASE_TTL=3 UCX_WARN_UNUSED_ENV_VARS=n
preload=$lib${LD_PRELOAD:+:$LD_PRELOAD}

# start_pair NAME ITERS LIMIT: a ucx_perftest server and client in the
# background, each ended after LIMIT seconds
start_pair() {
    local port
    port_next || return 1
    port=$port_seq
    timeout "$3" env LD_PRELOAD="$preload" "$perftest" -p "$port" \
        -x orc -d soft_lo:1 -t am_lat -n "$2" > "$tmp/$1.server" 2>&1 &
    eval "spid_$1=$!"
    for _ in $(seq 100); do
        ss -ltn 2>/dev/null | grep -q ":$port " && break
        sleep 0.1
    done
    timeout "$3" env LD_PRELOAD="$preload" "$perftest" 127.0.0.1 -p "$port" \
        -x orc -d soft_lo:1 -t am_lat -n "$2" > "$tmp/$1.client" 2>&1 &
    eval "cpid_$1=$!"
}

# finish_pair NAME: both exited 0 and the client reported
fail=0
finish_pair() {
    local s c ok=1
    eval "s=\$spid_$1 c=\$cpid_$1"
    wait "$c" || ok=0
    wait "$s" || ok=0
    if [ $ok = 1 ] && grep -q '^Final:' "$tmp/$1.client"; then
        echo "PASS $1: $(grep '^Final:' "$tmp/$1.client" | tr -s ' ')"
    else
        echo "FAIL $1"
        sed 's/^/  client: /' "$tmp/$1.client" | tail -15
        sed 's/^/  server: /' "$tmp/$1.server" | tail -15
        fail=$((fail + 1))
    fi
}

# a pair that runs until stopped (an iteration count it never reaches)
start_pair running 2000000000 300
# kill replica a once the pair is paired and measuring (progress lines)
progress() { grep -c '^\[thread' "$tmp/running.client" 2>/dev/null; }
for _ in $(seq 600); do
    [ "$(progress)" -ge 1 ] && break
    kill -0 "$cpid_running" 2>/dev/null || break
    sleep 0.1
done
if ! kill -0 "$cpid_running" 2>/dev/null; then
    echo "FAIL: the pair ended before the replica could be killed"
    tail -15 "$tmp/running.client"
    exit 1
fi
kill -KILL "$pid_a"
wait "$pid_a" 2>/dev/null
echo "killed orcd replica a (port $port_a) while the pair ran"
lines=$(progress)
# more than two lease TTLs with replica b alone: keep-alives moved, or the
# nodes expire; a new pair registers and pairs through b meanwhile
sleep 7
start_pair after 2000 120
finish_pair after
if kill -0 "$cpid_running" 2>/dev/null && kill -0 "$spid_running" 2>/dev/null &&
    [ "$(progress)" -gt "$lines" ]; then
    echo "PASS running: still measuring $(( $(progress) - lines )) s after the kill"
else
    echo "FAIL running: stopped after the kill"
    tail -15 "$tmp/running.client"
    tail -15 "$tmp/running.server"
    fail=$((fail + 1))
fi
grep -i 'lost\|error' "$tmp/b.log" | head -5
echo "orc over replicas: $fail failed"
[ $fail = 0 ]
