#!/bin/sh
# tools/excerpts.sh: keeps the code shown in the book equal to the code that runs.
#
#   sh tools/excerpts.sh --check [--root DIR]   report every problem, exit 1 if there is one
#   sh tools/excerpts.sh --write [--root DIR]   refill the blocks from the sources, then check
#
# A source marks a region with two comment lines (mdBook's syntax; `#` in shell or Python):
#
#     // ANCHOR: rmsnorm_forward
#     ...
#     // ANCHOR_END: rmsnorm_forward
#
# A chapter (book.md, chapters/*.md) shows that region with an include line immediately
# followed by a fenced block; `path` alone, with no `:anchor`, means the whole file:
#
#     <!-- include: ref/rmsnorm.c:rmsnorm_forward -->
#     ```c
#     ...the region, marker lines left out...
#     ```
#
# A chapter shows how a kernel differs from the reference with a diff line naming two regions
# (paths with anchors, or whole files), immediately followed by a fenced block that holds
# `diff -u` of the two with the whole region as context, headed by the two specs as labels:
#
#     <!-- diff: ref/rmsnorm.c:rmsnorm_forward kernels/rmsnorm.cu:rmsnorm_v1 -->
#     ```diff
#     --- ref/rmsnorm.c:rmsnorm_forward
#     +++ kernels/rmsnorm.cu:rmsnorm_v1
#     @@ ... @@
#     ...
#     ```
#
# Problems, one line each as "chapter:line: what": a block that differs from its source, a
# missing file, a missing anchor, a diff block that is not the diff of its two regions, an anchor named twice in one file, an ANCHOR without its
# ANCHOR_END (or the reverse), an include with no fenced block after it, a chapter in
# chapters/ that book.md does not link to, and a link in book.md to a chapter that does not exist. Source files under ref/, kernels/, fast/, sim/
# and notebooks-c/ are checked for duplicate or unclosed anchors even when no chapter uses them.
# Nothing here needs more than POSIX sh and awk.

mode=check
root=.
while [ $# -gt 0 ]; do
    case "$1" in
    --check) mode=check ;;
    --write) mode=write ;;
    --root) root=$2; shift ;;
    *) echo "usage: sh tools/excerpts.sh [--check | --write] [--root DIR]" >&2; exit 2 ;;
    esac
    shift
done
cd "$root" || exit 2

# The awk program reads one chapter and prints it with every include and diff block filled from
# its sources; problems go to stderr and make it exit 1. DIFF_A and DIFF_B are scratch files for
# the two regions of a diff.
EXCERPTS_AWK='
function problem(at, msg) { print FILENAME ":" at ": " msg > "/dev/stderr"; bad = 1 }

# is_marker(line): "ANCHOR" or "ANCHOR_END" when line is an anchor comment, else "";
# the anchor name is left in MARK_NAME.
function is_marker(line,   s, kind) {
    s = line
    sub(/^[ \t]*/, "", s)
    if (s !~ /^(\/\/|#)[ \t]*ANCHOR(_END)?:[ \t]*[A-Za-z0-9_-]+[ \t]*$/) return ""
    sub(/^(\/\/|#)[ \t]*/, "", s)
    kind = (s ~ /^ANCHOR_END:/) ? "ANCHOR_END" : "ANCHOR"
    sub(/^ANCHOR(_END)?:[ \t]*/, "", s)
    sub(/[ \t]*$/, "", s)
    MARK_NAME = s
    return kind
}

# extract(path, name): fills REGION[1..REGION_N] with the lines of the region (or the whole
# file when name is ""), marker lines dropped. Returns "" or a description of the problem.
function extract(path, name,   line, n, kind, inside, starts, first, ended, err) {
    REGION_N = 0
    n = 0; inside = 0; starts = 0; ended = 0
    err = (getline line < path)
    if (err < 0) return "cannot read " path " (missing file)"
    while (err > 0) {
        n++
        kind = is_marker(line)
        if (kind == "ANCHOR" && MARK_NAME == name) {
            starts++
            if (starts == 1) { first = n; inside = 1 }
            else { close(path); return path ": anchor \"" name "\" appears twice (lines " first " and " n ")" }
        } else if (kind == "ANCHOR_END" && MARK_NAME == name) {
            if (!inside) { close(path); return path ":" n ": ANCHOR_END \"" name "\" without its ANCHOR" }
            inside = 0; ended = 1
        } else if (kind == "" && (name == "" || inside)) {
            REGION[++REGION_N] = line
        }
        err = (getline line < path)
    }
    close(path)
    if (name == "") return ""
    if (starts == 0) return path " has no anchor \"" name "\""
    if (!ended) return path ":" first ": ANCHOR \"" name "\" has no ANCHOR_END"
    return ""
}

# split_spec(spec): SPEC_PATH and SPEC_NAME of "path:anchor" (SPEC_NAME "" for a whole file).
function split_spec(spec) {
    SPEC_PATH = spec; SPEC_NAME = ""
    if (match(spec, /:[A-Za-z0-9_-]+$/)) {
        SPEC_PATH = substr(spec, 1, RSTART - 1)
        SPEC_NAME = substr(spec, RSTART + 1)
    }
}

# region_to(file): writes REGION[1..REGION_N] to file, one line each.
function region_to(file,   i) {
    printf "" > file
    for (i = 1; i <= REGION_N; i++) print REGION[i] > file
    close(file)
}

# diff_regions(a, b): REGION becomes `diff -u` of the regions a and b (specs), labelled with the
# specs, the whole region as context. Returns "" or a description of the problem.
function diff_regions(a, b,   err, cmd, line, n, out) {
    split_spec(a); err = extract(SPEC_PATH, SPEC_NAME); if (err != "") return err
    region_to(DIFF_A)
    split_spec(b); err = extract(SPEC_PATH, SPEC_NAME); if (err != "") return err
    region_to(DIFF_B)
    cmd = "diff -U 100000 " DIFF_A " " DIFF_B
    n = 0; REGION_N = 0
    while ((cmd | getline line) > 0) {
        if (++n <= 2) continue                       # the ---/+++ lines name scratch files and dates
        out[++REGION_N] = line
    }
    close(cmd)
    REGION[1] = "--- " a; REGION[2] = "+++ " b
    for (n = 1; n <= REGION_N; n++) REGION[n + 2] = out[n]
    REGION_N += 2
    return ""
}

# Outside include and diff blocks, lines are copied; a fenced block that is not one is
# skipped whole, so an include line shown as an example inside one is left alone.
{
    if (in_fence) { print; if ($0 ~ /^(```|~~~)[ \t]*$/) in_fence = 0; next }
    if ($0 ~ /^(```|~~~)/) { print; in_fence = 1; next }
    if ($0 ~ /^<!-- include: [^ ]+ -->[ \t]*$/) kind = "include"
    else if ($0 ~ /^<!-- diff: [^ ]+ [^ ]+ -->[ \t]*$/) kind = "diff"
    else { print; next }

    print
    spec = $0
    sub(/^<!-- (include|diff): /, "", spec)
    sub(/ -->[ \t]*$/, "", spec)
    inc_line = FNR
    if (kind == "include") {
        split_spec(spec)
        err = extract(SPEC_PATH, SPEC_NAME)
    } else {
        split(spec, pair, " ")
        err = diff_regions(pair[1], pair[2])
    }

    fence = ""
    if ((getline fence) <= 0 || fence !~ /^```/) {
        problem(inc_line, kind " of " spec " is not followed by a fenced code block")
        if (err == "" && MODE == "write") {
            print (kind == "diff" ? "```diff" : "```")
            for (i = 1; i <= REGION_N; i++) print REGION[i]
            print "```"
        }
        if (fence != "") print fence
        next
    }
    print fence
    nblock = 0; closed = 0
    while ((getline line) > 0) {
        if (line ~ /^```[ \t]*$/) { closed = 1; break }
        BLOCK[++nblock] = line
    }
    if (!closed) { problem(inc_line, "the block after the " kind " of " spec " is never closed"); exit 1 }

    if (err != "") {
        problem(inc_line, err)
        for (i = 1; i <= nblock; i++) print BLOCK[i]
    } else {
        same = (nblock == REGION_N)
        for (i = 1; same && i <= nblock; i++) if (BLOCK[i] != REGION[i]) same = 0
        if (!same && MODE == "check") {
            for (i = 1; i <= nblock && i <= REGION_N && BLOCK[i] == REGION[i]; i++) ;
            problem(inc_line, "block differs from " (kind == "diff" ? "the diff of " : "") spec \
                    " at block line " i " (run make excerpts)")
        }
        if (MODE == "write") for (i = 1; i <= REGION_N; i++) print REGION[i]
        else for (i = 1; i <= nblock; i++) print BLOCK[i]
    }
    print line
}
END { exit bad }
'

# Anchors in a source file: every name opened once and closed once, in that order.
ANCHORS_AWK='
{
    s = $0
    sub(/^[ \t]*/, "", s)
    if (s !~ /^(\/\/|#)[ \t]*ANCHOR(_END)?:[ \t]*[A-Za-z0-9_-]+[ \t]*$/) next
    sub(/^(\/\/|#)[ \t]*/, "", s)
    end = (s ~ /^ANCHOR_END:/)
    sub(/^ANCHOR(_END)?:[ \t]*/, "", s); sub(/[ \t]*$/, "", s)
    if (!end) {
        if (s in opened) { print FILENAME ":" FNR ": anchor \"" s "\" appears twice (first at line " opened[s] ")"; bad = 1 }
        else { opened[s] = FNR; open_now[s] = 1 }
    } else if (!(s in open_now) || !open_now[s]) {
        print FILENAME ":" FNR ": ANCHOR_END \"" s "\" without its ANCHOR"; bad = 1
    } else open_now[s] = 0
}
END {
    for (s in open_now) if (open_now[s]) { print FILENAME ":" opened[s] ": ANCHOR \"" s "\" has no ANCHOR_END"; bad = 1 }
    exit bad
}
'

status=0
tmp=$(mktemp) || exit 2
diff_a=$(mktemp) || exit 2
diff_b=$(mktemp) || exit 2
trap 'rm -f "$tmp" "$diff_a" "$diff_b"' EXIT

# 1. Every chapter file is linked from book.md.
for ch in chapters/*.md; do
    [ -e "$ch" ] || continue
    if [ ! -e book.md ] || ! grep -q "](${ch})" book.md; then
        echo "$ch:1: chapter is not listed in book.md (link it as ($ch))"
        status=1
    fi
done

# ...and every chapter book.md links to exists.
if [ -e book.md ]; then
    grep -n -o '](chapters/[^)]*)' book.md | while IFS=: read -r line link; do
        ch=${link#](}; ch=${ch%)}
        [ -e "$ch" ] || echo "book.md:$line: links to $ch, which does not exist"
    done | grep . && status=1
fi

# 2. Every include block in every chapter equals its source region.
for md in book.md chapters/*.md; do
    [ -e "$md" ] || continue
    awk -v MODE="$mode" -v DIFF_A="$diff_a" -v DIFF_B="$diff_b" "$EXCERPTS_AWK" "$md" >"$tmp" 2>"$tmp.err"
    rc=$?
    cat "$tmp.err"; rm -f "$tmp.err"
    if [ "$mode" = write ] && ! cmp -s "$tmp" "$md"; then
        cat "$tmp" >"$md" && echo "filled $md"
        awk -v MODE=check -v DIFF_A="$diff_a" -v DIFF_B="$diff_b" "$EXCERPTS_AWK" "$md" >/dev/null 2>&1 && rc=0
    fi
    [ "$rc" -eq 0 ] || status=1
done

# 3. Anchors in the sources are well formed, used by a chapter or not.
for dir in ref kernels fast sim notebooks-c; do
    [ -d "$dir" ] || continue
    for src in $(grep -rlE '^[[:space:]]*(//|#)[[:space:]]*ANCHOR(_END)?:' "$dir" 2>/dev/null | sort); do
        awk "$ANCHORS_AWK" "$src" || status=1
    done
done

exit $status
