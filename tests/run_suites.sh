#!/bin/sh
# Runs every CMocka suite given on the command line, shows its output, and
# ends with one aggregate line: "N passed, N failed, N skipped".
# A suite that crashes or exits non-zero without a counted failure counts as
# one failure, so a broken binary can never look green.
passed=0; failed=0; skipped=0
log=$(mktemp)
for suite in "$@"; do
    echo "== $suite"
    "$suite" >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(grep -c '^\[       OK \]' "$log")
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s), listed below:.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9][0-9]*\) test(s), listed below:.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!! $suite exited with status $rc"
        f=1
    fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
rm -f "$log"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
