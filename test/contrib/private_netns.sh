# Sourced (bash) at the top of test_orc_run.sh and test_readme_ucx.sh, with
# $lib the built module: skip in a sanitizer build (the commands there get
# the module preloaded, which ASan forbids in uninstrumented programs; see
# test/gtest/uct/test_orc_perftest.sh), else re-run the sourcing script in a
# network namespace of its own with lo up, where the default coordinator
# and ucx_perftest ports are free whatever else runs on the machine (root;
# skip otherwise). The namespace goes away with the script. Then $tmp, a
# private directory, and $pids, background processes ended at exit.
[ -e "$lib" ] || { echo "FAIL: $lib not built"; exit 1; }
if ldd "$lib" | grep -q libasan; then
    echo "SKIP: sanitizer build: the module cannot be preloaded into other programs"
    exit 77
fi
if [ -z "${ORC_TEST_PRIVATE_NETNS:-}" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null ||
        ! unshare -n true 2>/dev/null; then
        echo "SKIP: needs root for a private network namespace"
        exit 77
    fi
    exec unshare -n env ORC_TEST_PRIVATE_NETNS=1 "$0" "$@"
fi
ip link set lo up || { echo "FAIL: cannot bring lo up"; exit 1; }

tmp=$(mktemp -d /tmp/orc-contrib-test.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null
    done
    wait
    rm -rf "$tmp"
}
trap cleanup EXIT
