#!/bin/sh
# docs/check_math.sh HTML_DIR [SCREENSHOT.png]: does the book's math really typeset?
#
# Opens chapter 2's page (Multi-head Latent Attention, the chapter with the most formulas) from
# the Doxygen HTML in headless Chromium, lets MathJax run (no network: make docs copies it into
# HTML_DIR/mathjax), and reads back the page as the browser built it. It passes when
#   - the page holds formulas at all (MathJax's <script type="math/tex"> elements),
#   - every one of them has MathJax's typeset output beside it (id MathJax-Element-N-Frame),
#   - MathJax reported no error (class merror, MathJax_Error),
#   - no LaTeX source (\mathbf, \frac, \( or \[) is left in the text outside <script> elements.
# Otherwise it prints one line saying which and exits 1. With SCREENSHOT it also saves a picture
# of the page's top. Run by make docs-check, after make docs.
set -eu
html=${1:?usage: check_math.sh HTML_DIR [SCREENSHOT.png]}
shot=${2:-}
page=$(cd "$html" 2>/dev/null && pwd)/md_chapters_02_mla.html
fail() { printf 'docs-check: %s: %s\n' "$page" "$*"; exit 1; }
[ -f "$page" ] || fail "missing (run make docs)"
[ -f "$html/mathjax/MathJax.js" ] || fail "no MathJax beside it in $html/mathjax (run make docs)"
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || fail "chromium is not installed (make deps)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# virtual time: MathJax's typesetting finishes in well under this much page time, and the
# browser skips ahead instead of waiting in real time
flags="--headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=60000"
# shellcheck disable=SC2086 # the flags are separate words
timeout 180 "$browser" $flags --dump-dom "file://$page" > "$tmp/dom.html" 2> "$tmp/browser.log" ||
    fail "chromium failed: $(tail -1 "$tmp/browser.log")"
if [ -n "$shot" ]; then
    # shellcheck disable=SC2086
    timeout 180 "$browser" $flags --window-size=1100,1400 --screenshot="$shot" "file://$page" \
        > /dev/null 2>&1 || fail "chromium could not take the screenshot $shot"
fi

formulas=$(grep -o '<script type="math/tex[^>]*>' "$tmp/dom.html" | wc -l)
typeset=$(grep -o 'id="MathJax-Element-[0-9]*-Frame"' "$tmp/dom.html" | wc -l)
errors=$(grep -o 'class="merror"\|class="MathJax_Error"' "$tmp/dom.html" | wc -l)
[ "$formulas" -gt 0 ] || fail "no formulas found: MathJax did not load, or the filter left math as text"
[ "$typeset" -eq "$formulas" ] || fail "MathJax typeset $typeset of $formulas formulas"
[ "$errors" -eq 0 ] || fail "MathJax reported $errors errors in formulas"

# the text outside <script> elements (the DOM dump puts each script's content inline)
awk 'BEGIN { RS = "</script>" } { sub(/<script[^>]*>.*$/, ""); print }' "$tmp/dom.html" > "$tmp/text.html"
raw=$(grep -o '\\mathbf\|\\frac\|\\(\|\\\[' "$tmp/text.html" | head -1 || true)
[ -z "$raw" ] || fail "LaTeX source left as text: $raw (outside the formulas MathJax read)"
echo "docs-check: $formulas formulas typeset by MathJax on $(basename "$page"), no LaTeX left as text"
