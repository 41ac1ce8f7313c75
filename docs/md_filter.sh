#!/bin/sh
# docs/md_filter.sh FILE: prints a Markdown chapter for Doxygen (FILTER_PATTERNS in docs/Doxyfile).
#
# The chapters write math as GitHub does, $...$ inline and $$ lines around display math.
# Doxygen 1.9 reads a backslash in Markdown as one of its own commands, and rendering LaTeX
# would need MathJax from the network or a LaTeX installation; neither is assumed. So math is
# shown as its LaTeX source: inline math becomes a code span, display math a fenced block.
# Images of the notebooks' plots are linked as ../build/notebooks/NAME.png, where a Markdown
# viewer finds them beside the chapters; Doxygen finds images by name in IMAGE_PATH
# (build/notebooks, drawn by make notebooks) and copies them into the HTML, so the link becomes
# NAME.png. Code blocks pass through untouched; the line count never changes, so warnings keep
# their line numbers.
awk '
/^(```|~~~)/ && !in_math { in_code = !in_code; print; next }
in_code { print; next }
/^[ \t]*\$\$[ \t]*$/ { in_math = !in_math; print (in_math ? "```tex" : "```"); next }
in_math { print; next }
{
    out = ""; line = $0
    gsub(/\]\(\.\.\/build\/notebooks\//, "](", line)
    while (match(line, /\$[^$]+\$/)) {
        out = out substr(line, 1, RSTART - 1) "`" substr(line, RSTART + 1, RLENGTH - 2) "`"
        line = substr(line, RSTART + RLENGTH)
    }
    print out line
}
' "$1"
