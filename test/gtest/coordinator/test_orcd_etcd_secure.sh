#!/bin/bash
# orcd on an etcd that asks for TLS with client certificates and for a user
# and password, as a production etcd does (Debian's etcd-server):
# - a CA, etcd's server certificate and orcd's client certificate are made
#   with openssl; etcd serves https only, requires a client certificate
#   signed by the CA (--client-cert-auth) and has auth enabled, with a user
#   "orcd" whose role may read and write only under orcd's key prefix; its
#   auth tokens expire after ORC_SECURE_TOKEN_TTL seconds unused;
# - orcd with store.etcd.tls and username/password_file passes
#   --check-config, starts, and serves: a node registered with orcctl is
#   read back, its endpoint published and fetched, and its keys are in etcd
#   under the prefix and nowhere else;
# - after the token expired (idle longer than its TTL), the next requests
#   still succeed: orcd authenticates again by itself;
# - each wrong setting makes orcd refuse to start (exit 1) with the reason:
#   a wrong password, a CA that did not sign etcd's certificate, no client
#   certificate, a user whose role does not cover the prefix.
#
# etcd listens on its default ports and orcd on 7411: the test runs in a
# network namespace of its own (root; skips otherwise) with lo up, gone when
# it ends, and its files in a temporary directory it removes.
# Needs etcd, etcdctl (etcd-server, etcd-client) and openssl.
set -u

builddir=$(cd "${ORC_TOP_BUILDDIR:-$(pwd)}" && pwd)
etcd=${ORC_ETCD:-/usr/bin/etcd}
token_ttl=${ORC_SECURE_TOKEN_TTL:-2}

if [ -z "${ORC_TEST_PRIVATE_NETNS:-}" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null ||
        ! unshare -n true 2>/dev/null; then
        echo "SKIP: needs root for a private network namespace"
        exit 77
    fi
    exec unshare -n env ORC_TEST_PRIVATE_NETNS=1 "$0" "$@"
fi
ip link set lo up || { echo "FAIL: cannot bring lo up"; exit 1; }
for tool in "$etcd" etcdctl openssl; do
    command -v "$tool" >/dev/null || {
        echo "FAIL: no $tool (contrib/install-deps.sh installs etcd-server, etcd-client and openssl)"
        exit 1
    }
done
orcd=$builddir/src/coordinator/orcd/orcd
orcctl=$builddir/orcctl
for bin in "$orcd" "$orcctl"; do
    [ -x "$bin" ] || { echo "FAIL: $bin not built"; exit 1; }
done

tmp=$(mktemp -d /tmp/orc-etcd-secure.XXXXXX)
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
passed() {
    echo "ok: $*"
}

# 1. Certificates: a CA, etcd's server certificate for 127.0.0.1, orcd's
# client certificate (CN orcd), and a second CA that signed nothing of etcd's
echo "== certificates"
pki() {
    openssl "$@" >>"$tmp/openssl.log" 2>&1 || {
        cat "$tmp/openssl.log"
        echo "FAIL: openssl $1"
        exit 1
    }
}
for ca in ca other-ca; do
    pki req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=orc test $ca" \
        -keyout "$tmp/$ca.key" -out "$tmp/$ca.pem"
done
# etcd's JSON gateway talks to etcd itself with the server certificate, so
# that one is also a client certificate. With auth on, the gateway refuses a
# client certificate that carries a CommonName (HTTP 400: it cannot pass the
# name on as the user): orcd's names no one, its user is store.etcd.username.
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$tmp/server.ext"
printf 'extendedKeyUsage=clientAuth\n' >"$tmp/client.ext"
printf 'extendedKeyUsage=clientAuth\n' >"$tmp/named.ext"
for who in server client named; do
    case $who in
    server) subject=/CN=127.0.0.1 ;;
    client) subject=/O=orc ;;
    named) subject=/CN=orcd ;;
    esac
    pki req -newkey rsa:2048 -nodes -subj "$subject" \
        -keyout "$tmp/$who.key" -out "$tmp/$who.csr"
    pki x509 -req -in "$tmp/$who.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
        -CAcreateserial -days 2 -extfile "$tmp/$who.ext" -out "$tmp/$who.pem"
done

# 2. etcd: https only, client certificates required, auth on
echo "== etcd with TLS, client certificates and auth"
url=https://127.0.0.1:2379
"$etcd" --name secure --data-dir "$tmp/etcd.data" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster secure=http://127.0.0.1:2380 \
    --cert-file "$tmp/server.pem" --key-file "$tmp/server.key" \
    --trusted-ca-file "$tmp/ca.pem" --client-cert-auth \
    --auth-token-ttl "$token_ttl" >"$tmp/etcd.log" 2>&1 &
pids+=($!)
ctl() {
    ETCDCTL_API=3 etcdctl --endpoints "$url" --cacert "$tmp/ca.pem" \
        --cert "$tmp/client.pem" --key "$tmp/client.key" \
        --dial-timeout 2s --command-timeout 5s "$@"
}
up=0
for _ in $(seq 100); do
    if ctl endpoint health >/dev/null 2>&1; then
        up=1
        break
    fi
    sleep 0.2
done
[ $up = 1 ] || { tail -20 "$tmp/etcd.log"; echo "FAIL: etcd did not come up"; exit 1; }
setup_auth() {
    ctl user add root --new-user-password=root-pw &&
        ctl user add orcd --new-user-password=orcd-pw &&
        ctl user add stranger --new-user-password=stranger-pw &&
        ctl role add orcd &&
        ctl role grant-permission orcd --prefix=true readwrite /orc-secure/ &&
        ctl role add stranger &&
        ctl role grant-permission stranger --prefix=true readwrite /elsewhere/ &&
        ctl user grant-role orcd orcd &&
        ctl user grant-role stranger stranger &&
        ctl auth enable
}
setup_auth >"$tmp/auth.log" 2>&1 || { cat "$tmp/auth.log"; echo "FAIL: cannot set up etcd auth"; exit 1; }
root_ctl() {
    ctl --user root:root-pw "$@"
}

# orcd's configuration; $1 user, $2 password, $3 CA, $4 the client
# certificate (client, named or none), $5 prefix
write_config() {
    printf '%s' "$2" >"$tmp/password"
    {
        echo "store:"
        echo "  backend: etcd"
        echo "  etcd:"
        echo "    endpoints: [$url]"
        echo "    prefix: $5"
        echo "    username: $1"
        echo "    password_file: $tmp/password"
        echo "    tls:"
        echo "      ca: $3"
        if [ "$4" != none ]; then
            echo "      cert: $tmp/$4.pem"
            echo "      key: $tmp/$4.key"
        fi
    } >"$tmp/orcd.yaml"
}

# orcd must refuse to start, naming the reason: $1 what, $2 a regex its
# error must match
refuses() {
    local rc
    timeout 60 "$orcd" --config "$tmp/orcd.yaml" --listen 127.0.0.1:7411 \
        >"$tmp/refused.log" 2>&1
    rc=$?
    if [ $rc != 1 ]; then
        failed "$1: orcd exited $rc, not 1"
        cat "$tmp/refused.log"
    elif ! grep -Eq "$2" "$tmp/refused.log"; then
        failed "$1: orcd's error does not say /$2/"
        cat "$tmp/refused.log"
    else
        passed "$1: refused"; cat "$tmp/refused.log"
    fi
}

# 3. The right settings: it serves
echo "== orcd with the right settings"
write_config orcd orcd-pw "$tmp/ca.pem" client /orc-secure
"$orcd" --check-config "$tmp/orcd.yaml" >"$tmp/check.log" 2>&1 ||
    { cat "$tmp/check.log"; failed "--check-config refuses a valid configuration"; }
"$orcd" --log-level debug --config "$tmp/orcd.yaml" --listen 127.0.0.1:7411 >"$tmp/orcd.log" 2>&1 &
orcd_pid=$!
pids+=($orcd_pid)
orc=(--url http://127.0.0.1:7411 --job secure)
up=0
for _ in $(seq 100); do
    if "$orcctl" "${orc[@]}" health >/dev/null 2>&1; then
        up=1
        break
    fi
    kill -0 $orcd_pid 2>/dev/null || break
    sleep 0.2
done
if [ $up != 1 ]; then
    cat "$tmp/orcd.log"
    echo "FAIL: orcd on the secure etcd did not come up"
    exit 1
fi
"$orcctl" "${orc[@]}" --json register secure-host --ttl 60 >"$tmp/reg.out" 2>"$tmp/reg.err" &
reg_pid=$!
pids+=($reg_pid)
id=
for _ in $(seq 100); do
    id=$(sed -n 's/^{"id":\([0-9]*\)}$/\1/p' "$tmp/reg.out")
    [ -n "$id" ] && break
    kill -0 $reg_pid 2>/dev/null || break
    sleep 0.2
done
if [ -z "$id" ]; then
    cat "$tmp/reg.err" "$tmp/orcd.log"
    echo "FAIL: cannot register a node"
    exit 1
fi
# $1 what; the rest: an orcctl command that must succeed and print $expect
expect_ctl() {
    local what=$1 out
    shift
    if out=$("$orcctl" "${orc[@]}" "$@" 2>&1) && grep -q -- "$expect" <<<"$out"; then
        passed "$what"
    else
        failed "$what: orcctl $* said: $out"
    fi
}
expect=secure-host expect_ctl "node $id registered and read back" node-get "$id"
expect=published expect_ctl "endpoint published" endpoint-put "$id" '{"qpn": 7}'
expect='"qpn": 7' expect_ctl "endpoint fetched" endpoint-get "$id"
keys=$(root_ctl get "" --prefix --keys-only 2>&1)
if grep -q "^/orc-secure/.*nodes/0*$id\$" <<<"$keys"; then
    passed "node $id is in etcd under /orc-secure/"
else
    failed "no node $id under /orc-secure/ in etcd: $keys"
fi
outside=$(grep -v '^$' <<<"$keys" | grep -v '^/orc-secure/')
[ -z "$outside" ] && passed "nothing written outside the prefix" ||
    failed "keys outside /orc-secure/: $outside"

# 4. The token expires when unused for its TTL: orcd authenticates again
echo "== after the auth token expired"
sleep $((token_ttl * 2 + 1))
expect=secure-host expect_ctl "a read after the token expired" node-get "$id"
expect='"status":"ok"' expect_ctl "a write after the token expired" endpoint-put "$id" '{"qpn": 8}' --json
sleep $((token_ttl * 2 + 1))
expect='"qpn": 8' expect_ctl "the write reached etcd" endpoint-get "$id"
kill -INT $reg_pid
wait $reg_pid
rc=$?
[ $rc = 0 ] && passed "the node's lease was kept alive and it deregistered" ||
    { cat "$tmp/reg.err"; failed "orcctl register exited $rc"; }
kill -TERM $orcd_pid
wait $orcd_pid
rc=$?
[ $rc = 0 ] && passed "orcd stopped" || failed "orcd exited $rc at SIGTERM"
if grep -Ei "error|crit" "$tmp/orcd.log" | grep -v "store.etcd.*authenticat"; then
    failed "orcd logged errors serving a secure etcd"
fi

# 5. Wrong settings: refused at start, with the reason
echo "== wrong settings"
write_config orcd wrong-pw "$tmp/ca.pem" client /orc-secure
refuses "a wrong password" "cannot authenticate user 'orcd' \\(wrong name or password"
write_config orcd orcd-pw "$tmp/other-ca.pem" client /orc-secure
refuses "a CA that did not sign etcd's certificate" "$url.*(certificate|issuer|verif)"
write_config orcd orcd-pw "$tmp/ca.pem" none /orc-secure
refuses "no client certificate" "$url.*(bad certificate|does etcd require a client certificate)"
write_config orcd orcd-pw "$tmp/ca.pem" named /orc-secure
refuses "a client certificate with a CommonName" "$url.*HTTP 400.*CommonName"
write_config stranger stranger-pw "$tmp/ca.pem" client /orc-secure
refuses "a user whose role does not cover the prefix" "permission denied"

if [ $fail != 0 ]; then
    echo "-- orcd's log (right settings):"
    tail -30 "$tmp/orcd.log"
fi
echo "$fail failed"
[ $fail = 0 ]
