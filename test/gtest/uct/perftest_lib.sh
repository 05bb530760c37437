# ucx_perftest over orc, shared by test_orc_perftest.sh and test_orc_netns.sh
# (sourced, bash); orc_ucx_env.sh sets perftest (the UCX built against's)
# and orc_env. The caller sets:
#   lib           the built module (libuct_orc.so)
#   tmp           a private directory for logs
#   server_pre, client_pre   arrays: command prefixes of the two sides
#                 (e.g. ip netns exec NS), may be empty
#   server_addr   the address the client connects to
#   perftest_wrap optional: a command ucx_perftest runs under, inside the
#                 prefixes (e.g. contrib/softnic-run in another namespace)
# and gets pass/fail counters (added to the caller's, if any).

pass=${pass:-0}
fail=${fail:-0}

# perftest, and orc_env: how orc gets into it (and only into it)
. "$(dirname "${BASH_SOURCE[0]}")/orc_ucx_env.sh"

# perftest's own side channel: port_next (port_seq)
. "$(dirname "${BASH_SOURCE[0]}")/../../../contrib/port-lib.sh"

# run_once ARGS...: one server/client pair; 0 if the client reported its
# final line. A port found taken (the server cannot bind) is skipped, at
# most 3 tries; the client retries while the server is not listening yet
# (bounded): no sleep stands in for the server's start-up.
run_once() {
    local attempt i spid
    for attempt in 1 2 3; do
        port_next "${server_pre[@]}" || return 1
        "${server_pre[@]}" timeout 60 env "${orc_env[@]}" ${perftest_wrap:-} "$perftest" \
            -p "$port_seq" "$@" >"$tmp/server.log" 2>&1 &
        spid=$!
        for i in $(seq 1 100); do
            "${client_pre[@]}" timeout 60 env "${orc_env[@]}" ${perftest_wrap:-} \
                "$perftest" "$server_addr" -p "$port_seq" "$@" >"$tmp/client.log" 2>&1
            echo "client exit status $?" >>"$tmp/client.log"
            grep -q '^Final:' "$tmp/client.log" && break
            # perftest reports a refused connection on stdout
            grep -q 'Connection refused' "$tmp/client.log" || break
            kill -0 "$spid" 2>/dev/null || break
            sleep 0.1
        done
        wait "$spid"
        echo "server exit status $?" >>"$tmp/server.log"
        grep -q 'Address already in use' "$tmp/server.log" || break
    done
    grep -q '^Final:' "$tmp/client.log" &&
        grep -q '^server exit status 0$' "$tmp/server.log" &&
        grep -q '^client exit status 0$' "$tmp/client.log"
}

# run NAME ARGS...: one pair, reported as PASS or FAIL (with both logs)
run() {
    local name=$1
    shift
    if run_once "$@"; then
        pass=$((pass + 1))
        printf 'PASS %-28s %s\n' "$name" \
            "$(grep '^Final:' "$tmp/client.log" | tr -s ' ')"
    else
        fail=$((fail + 1))
        echo "FAIL $name: ucx_perftest $*"
        tail -n 20 "$tmp/client.log" | sed 's/^/  client: /'
        tail -n 15 "$tmp/server.log" | sed 's/^/  server: /'
    fi
}
