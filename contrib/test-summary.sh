#!/usr/bin/env bash
# Count test cases after `make check` in one or more build directories and
# print "N passed, M failed[, K skipped]". GoogleTest binaries are counted
# per test case from their XML reports (test-results/<binary>.xml); any other
# test (scripts, corpus replays) counts as one case from its automake .trs
# file. A gtest binary that died before writing its XML counts as one failure.
# Usage: test-summary.sh BUILDDIR... ; exit status 1 if anything failed or
# nothing ran.
set -uo pipefail

passed=0 failed=0 skipped=0

count_xml() {
    # prints "passed failed skipped" for one gtest XML report
    awk '
        /<testcase / { if (open) tally(); open = 1; fail = 0; skip = 0
                       if ($0 ~ /result="skipped"/ || $0 ~ /status="notrun"/) skip = 1
                       if ($0 ~ /\/>[[:space:]]*$/) { tally(); open = 0 } ; next }
        /<failure/   { fail = 1 }
        /<skipped/   { skip = 1 }
        /<\/testcase>/ { if (open) tally(); open = 0 }
        function tally() { if (fail) f++; else if (skip) s++; else p++ }
        END { if (open) tally(); printf "%d %d %d\n", p, f, s }' "$1"
}

# prints "  SUITE.CASE: its first failure's message" for each failed case
# of one gtest XML report (one line each, at most 300 characters), so that
# a log that keeps only the summary still names what failed and why
failed_cases() {
    awk '
        function attr(a,   r) {
            r = $0
            if (!sub(".* " a "=\"", "", r)) return ""
            sub("\".*", "", r)
            return r
        }
        /<testcase / { name = attr("classname") "." attr("name"); told = 0 }
        /<failure / && !told {
            m = attr("message")
            gsub("&#x0A;", " | ", m); gsub("&lt;", "<", m); gsub("&gt;", ">", m)
            gsub("&quot;", "\"", m); gsub("&apos;", "\047", m); gsub("&amp;", "\\&", m)
            print "  " name ": " substr(m, 1, 300)
            told = 1
        }' "$1"
}

for build in "$@"; do
    while IFS= read -r trs; do
        base=${trs%.trs}
        name=$(basename "$base")
        xml="$build/test-results/$name.xml"
        result=$(sed -n 's/^:test-result: //p' "$trs" | head -n 1)
        if [ -f "$xml" ] && [ "$result" != "ERROR" ] && [ "$result" != "FAIL" -o -s "$xml" ]; then
            read -r p f s < <(count_xml "$xml")
            # a binary that failed without any failed case (e.g. crashed in
            # teardown, leak report) is one more failure
            if [ "$result" = "FAIL" ] && [ "$f" = 0 ]; then f=1; fi
            passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
            if [ "$f" -gt 0 ]; then
                echo "FAILED: $name ($f case(s))" >&2
                failed_cases "$xml" >&2
            fi
        else
            case "$result" in
                PASS|XFAIL) passed=$((passed + 1)) ;;
                SKIP) skipped=$((skipped + 1)) ;;
                *) failed=$((failed + 1)); echo "FAILED: $name ($result)" >&2 ;;
            esac
        fi
    done < <(find "$build" -name '*.trs' -not -path '*/.libs/*' | sort)
done

if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
