#!/bin/sh
# tests/exercises.sh [NAME...]: checks every exercise of the book (or the named ones) the way
# a reader would, on a scratch copy of the tree, and reports in CMocka's format so that
# tests/run_suites.sh counts one test per exercise.
#
# An exercise is a directory exercises/NAME/ (NAME = chapter file stem + number) holding
#   check.sh      shell lines run in the scratch tree with the helpers below; they print
#                 what the exercise's "Check:" promises (suite verdicts, a program's output);
#   before.txt    what check.sh prints on the tree as it is;
#   solution.patch (optional) the reader's change, as `diff -u` against the tree;
#   after.txt     (with a patch) what check.sh prints once the patch is applied.
# An exercise passes when both outputs match; the patch is reverted afterwards.
#
# Helpers for check.sh:
#   build T...    make the targets at -O1 (EXERCISE_CFLAGS), quietly; "build failed" on error
#   suite S       run build/tests/S with a fixed seed; prints "S: ok" or one line per failed case
#   program F.c   compile the exercise's own F.c against build/libref.a and run it
#   EX            the exercise's directory (to read a file shipped with it)
# Suites and programs run with DSV2_TEST_SEED=1, so every check is deterministic.
# EXERCISE_RECORD=1 writes before.txt/after.txt from this run instead of comparing (for a new
# exercise; read them against the chapter's "Check:" before committing).
root=$(cd "$(dirname "$0")/.." && pwd)
unset MAKEFLAGS MFLAGS MAKELEVEL   # a make test BUILD=... above us must not redirect these builds
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The scratch copy holds the tree's tracked files (a tarball's files when there is no git);
# EXERCISE_TREE=DIR checks in an existing copy instead, kept with its build between runs.
tree=${EXERCISE_TREE:-$scratch/tree}
mkdir -p "$tree"
if [ -z "$EXERCISE_TREE" ]; then
    if git -C "$root" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
        (cd "$root" && git ls-files -z | tar --null --ignore-failed-read -T - -cf - 2> /dev/null) |
            tar -xf - -C "$tree"
    else
        (cd "$root" && tar --exclude=./build -cf - .) | tar -xf - -C "$tree"
    fi
fi

# -O1 builds fastest; at -O1 gcc reports a maybe-uninitialized false positive in sim/nccl.c
EXERCISE_CFLAGS=${EXERCISE_CFLAGS:--O1 -Wno-maybe-uninitialized}
DSV2_TEST_SEED=1
export DSV2_TEST_SEED

build() {
    make -s -j2 -C "$tree" CFLAGS="$EXERCISE_CFLAGS" "$@" > "$scratch/build.log" 2>&1 ||
        { echo "build failed"; return 1; }
}

suite() {
    "$tree/build/tests/$1" > "$scratch/suite.log" 2>&1
    rc=$?
    failed=$(sed -n 's/^\[  FAILED  \] \([^0-9].*\)$/\1/p' "$scratch/suite.log" | sort -u)
    if [ -n "$failed" ]; then
        echo "$failed" | sed "s/^/$1 fails: /"
    elif [ "$rc" -ne 0 ]; then
        echo "$1: exit status $rc"
    else
        echo "$1: ok"
    fi
}

# compiles the exercise's C file $1 against the reference library and runs it
program() {
    build build/libref.a &&
        cc $EXERCISE_CFLAGS -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$tree/ref" \
            -o "$scratch/program" "$EX/$1" "$tree/build/libref.a" -ljansson -lpcre2-8 -lm \
            > "$scratch/build.log" 2>&1 || { echo "build failed"; return 1; }
    "$scratch/program"
}

# prints the diff of a mismatch, and the build's last lines when the build was what failed
report() {
    echo "$1: $2, the check printed (- expected, + got):"
    cat "$scratch/diff"
    if grep -q '^build failed' "$scratch/out"; then tail -n 20 "$scratch/build.log"; fi
}

# runs one exercise's check.sh in the tree; its output goes to $2
run_check() {
    (cd "$tree" && EX="$root/exercises/$1" && . "$root/exercises/$1/check.sh") > "$2" 2>&1
}

if [ $# -eq 0 ]; then
    set -- $(cd "$root/exercises" && for d in */; do [ -f "$d/check.sh" ] && echo "${d%/}"; done)
fi
echo "[==========] exercises: Running $# test(s)."
bad=""
for ex in "$@"; do
    echo "[ RUN      ] $ex"
    dir="$root/exercises/$ex"
    ok=1
    run_check "$ex" "$scratch/out"
    [ -n "$EXERCISE_RECORD" ] && cp "$scratch/out" "$dir/before.txt"
    if ! diff -u "$dir/before.txt" "$scratch/out" > "$scratch/diff"; then
        report "$ex" "on the tree as it is"
        ok=0
    fi
    if [ -f "$dir/solution.patch" ]; then
        if patch -s -p1 -d "$tree" --no-backup-if-mismatch < "$dir/solution.patch" > "$scratch/patch.log" 2>&1; then
            run_check "$ex" "$scratch/out"
            [ -n "$EXERCISE_RECORD" ] && cp "$scratch/out" "$dir/after.txt"
            if ! diff -u "$dir/after.txt" "$scratch/out" > "$scratch/diff"; then
                report "$ex" "with solution.patch"
                ok=0
            fi
            patch -s -R -p1 -d "$tree" --no-backup-if-mismatch < "$dir/solution.patch" > /dev/null 2>&1
        else
            echo "$ex: solution.patch does not apply:"
            cat "$scratch/patch.log"
            ok=0
        fi
    fi
    if [ "$ok" -eq 1 ]; then
        echo "[       OK ] $ex"
    else
        echo "[  FAILED  ] $ex"
        bad="$bad $ex"
    fi
done
n_bad=$(echo $bad | wc -w)
echo "[==========] exercises: $# test(s) run."
echo "[  PASSED  ] $(($# - n_bad)) test(s)."
if [ "$n_bad" -gt 0 ]; then
    echo "[  FAILED  ] $n_bad test(s), listed below:"
    for ex in $bad; do echo "[  FAILED  ] $ex"; done
    exit 1
fi
