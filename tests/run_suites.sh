#!/bin/sh
# Runs every CMocka suite given on the command line, shows its output, and
# ends with one aggregate line: "N passed, N failed, N skipped".
# A suite that crashes or exits non-zero without a counted failure counts as
# one failure, so a broken binary can never look green.
#
# Suites run SUITE_JOBS at a time (default: the number of CPUs), each into its
# own log; the logs are shown in command-line order once each suite is done,
# so the output reads the same as a one-at-a-time run. The suites share no
# files: scratch output goes to directories made with mkdtemp.
jobs=${SUITE_JOBS:-$(nproc 2>/dev/null || echo 1)}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# one line "INDEX SUITE" per suite; xargs keeps $jobs of them running, each writing
# its output to $dir/INDEX.log and its exit status to $dir/INDEX.rc
i=0
for suite in "$@"; do
    i=$((i + 1))
    echo "$i $suite"
done | xargs -P "$jobs" -L 1 sh -c '"$2" >"$0/$1.log" 2>&1; echo $? >"$0/$1.rc"' "$dir"

passed=0; failed=0; skipped=0; i=0
for suite in "$@"; do
    i=$((i + 1))
    log="$dir/$i.log"; rc=$(cat "$dir/$i.rc")
    echo "== $suite"
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
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
