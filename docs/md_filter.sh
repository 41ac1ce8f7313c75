#!/bin/sh
# docs/md_filter.sh FILE: prints a Markdown chapter for Doxygen (FILTER_PATTERNS in docs/Doxyfile).
#
# The chapters are written for GitHub's Markdown; this filter makes Doxygen 1.9 read the same
# source the same way. Line by line, outside fenced and indented code blocks:
#
#   math       $...$ becomes Doxygen's inline formula \f$...\f$, and a line holding only $$
#              opens or closes a display formula \f[ ... \f]; MathJax (copied into the HTML
#              by make docs, no network) typesets both. $\S$ and a bare \S become the
#              section sign, which Doxygen would otherwise print as the text "\S".
#   headings   "# 3. Title" would be read as a numbered list and every chapter titled "1.";
#              the dot after a heading's number is escaped.
#   code spans Doxygen reads `text' as a quotation, so a one-backtick span holding a prime,
#              such as `f'_i`, lost its code and swallowed the spans after it; such spans are
#              written with two backticks, which Doxygen takes literally.
#   images     figures are linked as ../figures/NAME.svg and the notebooks' plots as
#              ../build/notebooks/NAME.png, where a Markdown viewer finds them beside the
#              chapters; Doxygen finds images by name in IMAGE_PATH and copies them into the
#              HTML, so the link becomes NAME.svg (NAME.png).
#
# `$` inside code spans and code blocks is left alone. The line count never changes, so
# Doxygen's warnings keep the chapter's line numbers.
LC_ALL=C awk '
# one line of prose: code spans copied (primes handled), math converted
function prose(line,    out, n, i, c, j, tick, rest, k, body) {
    out = ""; n = length(line); i = 1
    while (i <= n) {
        c = substr(line, i, 1)
        if (c == "`") {
            j = i
            while (j <= n && substr(line, j, 1) == "`") j++
            tick = substr(line, i, j - i); rest = substr(line, j)
            k = index(rest, tick)
            if (k == 0) { out = out tick; i = j; continue }
            body = substr(rest, 1, k - 1)
            if (length(tick) == 1 && index(body, "\047") > 0) tick = "``"
            out = out tick body tick
            i = j + k - 1 + (j - i)
            continue
        }
        if (c == "\\" && substr(line, i + 1, 1) == "$") { out = out "\\$"; i += 2; continue }
        if (c == "\\" && substr(line, i + 1, 1) == "S" && substr(line, i + 2, 1) !~ /[A-Za-z]/) {
            out = out "\302\247"; i += 2; continue
        }
        if (substr(line, i, 2) == "$$") {
            rest = substr(line, i + 2); k = index(rest, "$$")
            if (k > 0) { out = out "\\f[" substr(rest, 1, k - 1) "\\f]"; i += k + 3; continue }
        }
        if (c == "$") {
            rest = substr(line, i + 1); k = index(rest, "$")
            if (k > 1) {
                body = substr(rest, 1, k - 1)
                out = out (body == "\\S" ? "\302\247" : "\\f$" body "\\f$")
                i += k + 1
                continue
            }
        }
        out = out c; i++
    }
    return out
}
/^[ \t]*(```|~~~)/ && !in_math { in_code = !in_code; print; blank = 0; next }
in_code { print; next }
/^[ \t]*\$\$[ \t]*$/ { in_math = !in_math; sub(/\$\$/, in_math ? "\\f[" : "\\f]"); print; next }
in_math { print; next }
# an indented code block: four spaces or a tab after a blank line (or more of the block)
/^(    |\t)/ && (blank || indented) { indented = 1; print; blank = 0; next }
{
    indented = 0; blank = ($0 ~ /^[ \t]*$/)
    line = $0
    gsub(/\]\(\.\.\/build\/notebooks\//, "](", line)
    gsub(/\]\(\.\.\/figures\//, "](", line)
    if (line ~ /^#+[ \t]+[0-9]+\.[ \t]/) sub(/\./, "\\.", line)
    print prose(line)
}
' "$1"
