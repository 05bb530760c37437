#!/bin/bash
# orc's verbs backend (src/uct/orc/dev/verbs), which real RDMA NICs use, run
# on the softnic provider: the same tests as on the soft backend, with
# UCX_ORC_BACKEND=verbs, under contrib/softnic-run:
#  - the whole test_orc_uct suite (every test case is counted here);
#  - ucx_perftest over orc (test/gtest/uct/test_orc_perftest.sh);
#  - the two namespace hosts (test/gtest/uct/test_orc_netns.sh), each orc
#    process under softnic-run in its own namespace.
. "$(dirname "$0")/verbs_lib.sh"

snv_require ucx_perftest ip ss

uct_bin=$snv_builddir/test/gtest/uct/test_orc_uct
lib=$snv_builddir/.libs/libuct_orc.so
[ -x "$uct_bin" ] && [ -f "$lib" ] || snv_skip_all "test_orc_uct or libuct_orc.so not built"

# test_orc_uct, backend verbs: one case here per gtest case
uct_suite() {
    local xml=$snv_tmp/test_orc_uct_verbs.xml st=0 line name
    GTEST_OUTPUT=xml:$xml ORC_UCT_TEST_BACKEND=verbs \
        "$snv_run" "$uct_bin" > "$snv_tmp/uct.log" 2>&1 || st=$?
    grep -E '^\[  (FAILED|  OK|PASSED) ' "$snv_tmp/uct.log" | tail -n 3
    if [ ! -s "$xml" ]; then
        tail -n 30 "$snv_tmp/uct.log"
        snv_sanitizer_report "$snv_tmp/uct.log"
        echo "FAIL uct/test_orc_uct: died before its report (status $st)"
        snv_record FAIL "uct/test_orc_uct" "died before its report (status $st)"
        return
    fi
    # <testcase name="N" ... classname="C"> then <failure...> if it failed
    awk '
        /<testcase / { if (n) print st "|" n
                       match($0, /name="[^"]*"/); t = substr($0, RSTART + 6, RLENGTH - 7)
                       match($0, /classname="[^"]*"/); c = substr($0, RSTART + 11, RLENGTH - 12)
                       n = "uct/" c "." t; st = ($0 ~ /result="skipped"/) ? "SKIP" : "PASS" }
        /<failure/   { st = "FAIL" }
        /<skipped/   { if (st != "FAIL") st = "SKIP" }
        END          { if (n) print st "|" n }' "$xml" |
    while IFS='|' read -r st name; do
        echo "$st $name"
        snv_record "$st" "$name" "$( [ "$st" = FAIL ] && echo "see test_orc_uct's output above")"
    done
    [ $st = 0 ] || grep -B2 -A20 'Failure' "$snv_tmp/uct.log" | head -n 60
    snv_sanitizer_report "$snv_tmp/uct.log"
}

perftest_verbs() {
    ORC_TEST_BACKEND=verbs "$snv_run" "$snv_srcdir/test/gtest/uct/test_orc_perftest.sh"
}

netns_verbs() {
    local st=0
    ORC_TEST_BACKEND=verbs ORC_TEST_WRAPPER=$snv_run \
        "$snv_srcdir/test/gtest/uct/test_orc_netns.sh" || st=$?
    [ $st = 77 ] && echo "test_orc_netns.sh skipped" >&2
    return $st
}

uct_suite
snv_case perftest_over_orc_verbs perftest_verbs
snv_case netns_over_orc_verbs netns_verbs
snv_finish
