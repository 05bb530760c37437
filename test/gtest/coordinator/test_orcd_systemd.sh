#!/bin/bash
# orcd's systemd units (contrib/systemd/) as make install ships them:
# - make install DESTDIR=... puts orcd, both units and the configurations
#   they read where the build's paths say, with those paths filled in, and
#   make uninstall takes every file away again;
# - systemd-analyze verify accepts both units without a word (it checks
#   offline: no systemd needs to run), and systemd-analyze security rates
#   their sandboxing no worse than ORC_SYSTEMD_MAX_EXPOSURE;
# - every installed configuration passes orcd --check-config;
# - the command line of each unit's ExecStart= (specifiers filled in as
#   systemd would, the installed paths under DESTDIR, %S a scratch state
#   directory) starts orcd on the configuration's own port and /healthz
#   answers: orcd.service (memory store, snapshot in its StateDirectory),
#   then orcd@1, orcd@2 and orcd@3 on one etcd, where a node registered
#   through replica 1 is read through replica 3; ExecReload= reloads; the
#   stop signal (SIGTERM) stops each with exit 0, and orcd.service leaves
#   its snapshot in the state directory;
# - the commands of the README's "Running orcd highly available" (build/
#   trees only), as written from the top of the source tree: every indented
#   line but the benchmark's; a line ending in '&' runs in the background,
#   the others must exit 0 (retried for a while: a server may still be
#   starting), and systemd-analyze must say nothing.
#
# The configurations use the default ports (7411, 7421..7423, etcd 2379),
# and the README installs into /usr/local and writes /tmp: the test runs in
# network and mount namespaces of its own (root; skips otherwise), with lo
# up and fresh /tmp and /usr/local, all gone when it ends.
# Needs systemd-analyze (Debian's systemd), etcd and etcdctl (etcd-server,
# etcd-client).
set -u

srcdir=$(cd "${ORC_TOP_SRCDIR:-$(dirname "$0")/../../..}" && pwd)
builddir=$(cd "${ORC_TOP_BUILDDIR:-$(pwd)}" && pwd)
etcd=${ORC_ETCD:-/usr/bin/etcd}
max_exposure=${ORC_SYSTEMD_MAX_EXPOSURE:-3.0}

if [ -z "${ORC_TEST_PRIVATE_NETNS:-}" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null ||
        ! unshare -n true 2>/dev/null; then
        echo "SKIP: needs root for a private network namespace"
        exit 77
    fi
    exec unshare -m -n env ORC_TEST_PRIVATE_NETNS=1 "$0" "$@"
fi
ip link set lo up || { echo "FAIL: cannot bring lo up"; exit 1; }
command -v systemd-analyze >/dev/null || {
    echo "FAIL: no systemd-analyze (contrib/install-deps.sh installs systemd)"
    exit 1
}
[ -x "$etcd" ] || {
    echo "FAIL: $etcd not installed (contrib/install-deps.sh installs etcd-server)"
    exit 1
}

# The install directories of this build, as make sees them
eval "$(printf '%s\n' 'orc-print-dirs:' \
    '	@echo "bindir=$(bindir) sysconfdir=$(sysconfdir) unitdir=$(systemdsystemunitdir) ucxmoddir=$(UCX_MODULE_DIR)"' |
    make -s --no-print-directory -C "$builddir" -f Makefile -f - orc-print-dirs)"
if [ -z "${unitdir:-}" ] || [ "$unitdir" = no ]; then
    echo "SKIP: configured --without-systemdsystemunitdir: no units to install"
    exit 77
fi
# fresh /tmp and /usr/local; the source and build trees stay where they
# are when they live there (a clone in /tmp): each is bound back from the
# directory the fresh one hides, reached through a descriptor opened before
# (fd 8 and 9; --no-canonicalize keeps mount from resolving it to the new
# path). make install also puts the UCX module into UCX's module directory:
# in this namespace, that is a copy.
exec 8</tmp 9</usr/local
for d in /tmp /usr/local; do
    mount -t tmpfs -o mode=1777 orc-test "$d" || { echo "FAIL: cannot mount a fresh $d"; exit 1; }
done
for tree in "$srcdir" "$builddir"; do
    for d in /tmp:8 /usr/local:9; do
        case "$tree" in "${d%:*}"/*) ;; *) continue ;; esac
        mkdir -p "$tree" &&
            mount --no-canonicalize --bind "/proc/$$/fd/${d#*:}/${tree#"${d%:*}"/}" "$tree" ||
            { echo "FAIL: cannot keep $tree visible"; exit 1; }
    done
done
exec 8<&- 9<&-
if [ -d "$ucxmoddir" ]; then
    cp -a "$ucxmoddir" /tmp/ucx-modules &&
        mount --bind /tmp/ucx-modules "$ucxmoddir" ||
        { echo "FAIL: cannot shadow $ucxmoddir"; exit 1; }
fi
tmp=$(mktemp -d /tmp/orc-systemd-test.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail=0
failed() {
    echo "FAIL: $*"
    fail=$((fail + 1))
}

dest=$tmp/dest
units=(orcd.service orcd@.service)
configs=(orcd.yaml orcd-1.yaml orcd-2.yaml orcd-3.yaml)

# 1. make install / uninstall
echo "== make install DESTDIR=$dest"
make -s --no-print-directory -C "$builddir" install DESTDIR="$dest" \
    >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; failed "make install"; }
orcd=$dest$bindir/orcd
[ -x "$orcd" ] || failed "no orcd at $orcd"
for u in "${units[@]}"; do
    f=$dest$unitdir/$u
    if [ ! -f "$f" ]; then
        failed "no $u in $dest$unitdir"
        continue
    fi
    ! grep -n '@[a-z]*@' "$f" || failed "$u keeps a placeholder"
    grep -q "^ExecStart=$bindir/orcd " "$f" || failed "$u does not run $bindir/orcd"
done
for c in "${configs[@]}"; do
    [ -f "$dest$sysconfdir/orc/$c" ] || failed "no $c in $dest$sysconfdir/orc"
done

# the units with their binary where DESTDIR put it (systemd-analyze checks
# that ExecStart= is executable)
mkdir -p "$tmp/verify"
for u in "${units[@]}"; do
    sed "s|$bindir/|$dest$bindir/|g" "$dest$unitdir/$u" >"$tmp/verify/$u"
done

# 2. systemd-analyze: any message (unknown key, bad value, missing
# binary) is a failure; so is weaker sandboxing than the limit
echo "== systemd-analyze verify"
for u in "${units[@]}"; do
    out=$(cd "$tmp/verify" && systemd-analyze verify --man=no "./$u" 2>&1)
    status=$?
    [ -z "$out" ] || echo "$out"
    [ $status = 0 ] && [ -z "$out" ] || failed "systemd-analyze verify $u"
    exposure=$(cd "$tmp/verify" &&
        systemd-analyze security --offline=yes "./$u" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "$u: exposure $exposure (at most $max_exposure)"
    awk -v e="${exposure:-99}" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }' ||
        failed "$u: sandboxing exposure ${exposure:-unknown} > $max_exposure"
done

# 3. the configurations
echo "== orcd --check-config"
for c in "${configs[@]}"; do
    "$orcd" --check-config "$dest$sysconfdir/orc/$c" || failed "--check-config $c"
done

# 4. each unit's ExecStart= and ExecReload= as systemd would run them.
# unit_cmd UNIT KEY INSTANCE: the command line, specifiers filled in
state=$tmp/state
unit_cmd() {
    sed -n "s/^$2=//p" "$dest$unitdir/$1" | sed \
        -e "s|%i|$3|g" -e "s|%S|$state|g" -e "s|%%|%|g" \
        -e "s|$bindir/|$dest$bindir/|g" -e "s|$sysconfdir/|$dest$sysconfdir/|g"
}

# config_port FILE: listen.port of a configuration (default 7411)
config_port() {
    awk '/^listen:/ { l = 1; next } /^[^ #]/ { l = 0 }
         l && $1 == "port:" { print $2; exit }' "$1" | grep . || echo 7411
}

# start_unit UNIT INSTANCE NAME: runs its ExecStart= in the background
# (sets pid_NAME); the service's state directory exists, as with
# StateDirectory=
start_unit() {
    local cmd
    cmd=$(unit_cmd "$1" ExecStart "$2")
    [ -n "$cmd" ] || { failed "$1 has no ExecStart="; return 1; }
    echo "\$ $cmd"
    mkdir -p "$state/orc"
    eval "exec $cmd" >"$tmp/$3.log" 2>&1 &
    pids+=($!)
    eval "pid_$3=$!"
}

# healthy PID PORT NAME: /healthz answers ok on PORT while PID runs (bounded)
healthy() {
    local i
    for i in $(seq 1 300); do
        kill -0 "$1" 2>/dev/null || break
        if curl -fsS --max-time 2 "http://127.0.0.1:$2/healthz" 2>/dev/null |
            grep -q '"ok"'; then
            return 0
        fi
        sleep 0.1
    done
    cat "$tmp/$3.log"
    failed "$3: no healthy orcd on port $2"
    return 1
}

# reload UNIT INSTANCE PID NAME: ExecReload= with $MAINPID; orcd reloads
reload() {
    local cmd i
    cmd=$(unit_cmd "$1" ExecReload "$2")
    MAINPID=$3 eval "$cmd" || { failed "$4: '$cmd'"; return; }
    for i in $(seq 1 100); do
        grep -q 'SIGHUP: reloaded' "$tmp/$4.log" && return
        sleep 0.1
    done
    failed "$4: ExecReload= ($cmd) did not reload"
}

# stop PID NAME: SIGTERM (systemd's KillSignal=); exit 0 within 20 s
stop() {
    local i status
    kill -TERM "$1"
    for i in $(seq 1 200); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    wait "$1"
    status=$?
    [ $status = 0 ] || { cat "$tmp/$2.log"; failed "$2: exit $status after SIGTERM"; }
}

echo "== orcd.service"
if start_unit orcd.service "" single; then
    port=$(config_port "$dest$sysconfdir/orc/orcd.yaml")
    if healthy "$pid_single" "$port" single; then
        curl -fsS -X POST -d '{"host":"h","pid":1}' \
            "http://127.0.0.1:$port/v1/jobs/sd/nodes" >/dev/null ||
            failed "orcd.service: registration"
        reload orcd.service "" "$pid_single" single
    fi
    stop "$pid_single" single
    [ -s "$state/orc/orcd.snapshot" ] ||
        failed "orcd.service left no snapshot in its state directory"
fi

echo "== orcd@1..3.service on one etcd"
"$etcd" --name m0 --data-dir "$tmp/etcd.data" \
    --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster m0=http://127.0.0.1:2380 >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
pids+=($etcd_pid)
for i in $(seq 1 300); do
    curl -fsS --max-time 2 http://127.0.0.1:2379/health 2>/dev/null |
        grep -q '"health":"true"' && break
    sleep 0.1
done
ports=()
for n in 1 2 3; do
    start_unit orcd@.service "$n" "replica$n" || continue
    port=$(config_port "$dest$sysconfdir/orc/orcd-$n.yaml")
    eval "pid=\$pid_replica$n"
    healthy "$pid" "$port" "replica$n" && ports+=("$port")
done
if [ ${#ports[@]} = 3 ]; then
    id=$(curl -fsS -X POST -d '{"host":"h","pid":1,"ttl":60}' \
        "http://127.0.0.1:${ports[0]}/v1/jobs/sd/nodes" | sed -n 's/.*"id": *\([0-9]*\).*/\1/p')
    curl -fsS "http://127.0.0.1:${ports[2]}/v1/jobs/sd/nodes/${id:-0}" |
        grep -q '"host": *"h"' ||
        failed "node ${id:-?} registered through replica 1 not seen through replica 3"
    reload orcd@.service 2 "$pid_replica2" replica2
fi
for n in 1 2 3; do
    eval "pid=\${pid_replica$n:-}"
    [ -z "$pid" ] || stop "$pid" "replica$n"
done
kill -TERM "$etcd_pid"
wait "$etcd_pid"

# 5. make uninstall leaves no file behind
echo "== make uninstall DESTDIR=$dest"
make -s --no-print-directory -C "$builddir" uninstall DESTDIR="$dest" \
    >"$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log"; failed "make uninstall"; }
left=$(find "$dest" -type f)
[ -z "$left" ] || failed "make uninstall left: $left"

# 6. the README's commands
# readme_lines: the indented lines of the section (its #### parts too)
readme_lines() {
    awk '/^### Running orcd highly available/ { on = 1; next }
         /^##? / || /^### /                    { on = 0 }
         on && /^    / { print substr($0, 5) }' "$srcdir/README.md"
}
if [ "$builddir" != "$srcdir/build" ]; then
    echo "== README: not run (its commands use build/, this is $builddir)"
else
    echo "== README \"Running orcd highly available\""
    mapfile -t lines < <(readme_lines)
    [ ${#lines[@]} -ge 8 ] || failed "the README section has ${#lines[@]} commands"
    cd "$srcdir" || exit 1
    i=0
    for cmd in "${lines[@]}"; do
        i=$((i + 1))
        log=$tmp/readme.$i.log
        case "$cmd" in
        *orcd-bench.sh*)
            echo "(not run: a benchmark) \$ $cmd"
            continue ;;
        *'&')
            echo "\$ $cmd"
            eval "exec ${cmd%&}" >"$log" 2>&1 &
            pids+=($!)
            continue ;;
        esac
        echo "\$ $cmd"
        for attempt in $(seq 1 100); do
            timeout 120 bash -c "$cmd" >"$log" 2>&1
            status=$?
            [ $status = 0 ] && break
            sleep 0.2
        done
        sed 's/^/    /' "$log" | head -n 20
        [ $status = 0 ] || failed "README: '$cmd' exited with $status"
        case "$cmd" in
        systemd-analyze*) [ ! -s "$log" ] || failed "README: '$cmd' complained" ;;
        esac
    done
fi

echo "orcd systemd units: $fail failure(s)"
[ $fail = 0 ]
