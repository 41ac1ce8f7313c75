# chapters/book.mk: the book's targets (included from the top Makefile).
#
#   make excerpts          refill every code block in book.md and chapters/ from its source anchor
#   make check-excerpts    fail on drift, missing files or anchors, duplicate or unclosed anchors,
#                          chapters missing from book.md (also run inside make test: tests/test_book.c)
#   make notebooks         build and run every notebooks-c/*.c; output in build/notebooks/<name>.txt,
#                          plot data in <name>.dat, and, where notebooks-c/plots/<name>.gp exists
#                          and gnuplot is installed, the plot <name>.png drawn from that data
#                          (GNUPLOT=... names another gnuplot; without one the plots are skipped)
#   make notebook-NAME     build and run one notebook, e.g. make notebook-kv_cache_budget
#   make figures           redraw figures/*.svg from figures/*.dot and notebooks-c/plots/*.gp
#                          (figures/render.sh); the SVGs are committed, make test checks them
#   make docs-check        open chapter 2's HTML page in headless Chromium and check that
#                          MathJax typeset its formulas (docs/check_math.sh; after make docs)

.PHONY: excerpts check-excerpts notebooks figures docs-check

excerpts:
	sh tools/excerpts.sh --write

check-excerpts:
	sh tools/excerpts.sh --check

NB_SRC := $(wildcard notebooks-c/*.c)
NB_BIN := $(NB_SRC:notebooks-c/%.c=$(BUILD)/notebooks/%)

$(BUILD)/notebooks/%: notebooks-c/%.c $(BUILD)/libref.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libref.a $(LDLIBS)

NB_PLOTS := $(wildcard notebooks-c/plots/*.gp)
GNUPLOT  ?= gnuplot

notebooks: $(NB_BIN)
	@for nb in $(NB_BIN); do \
	    echo "== $$nb > $$nb.txt"; NOTEBOOK_DATA=$$nb.dat ./$$nb > $$nb.txt || exit 1; \
	done
	@if command -v $(GNUPLOT) > /dev/null; then \
	    for gp in $(NB_PLOTS); do \
	        name=$$(basename $$gp .gp); \
	        echo "== $$gp > $(BUILD)/notebooks/$$name.png"; \
	        $(GNUPLOT) -e "data='$(BUILD)/notebooks/$$name.dat'; out='$(BUILD)/notebooks/$$name.png'" \
	            $$gp || exit 1; \
	    done; \
	else \
	    echo "plots skipped: $(GNUPLOT) is not installed (make deps installs gnuplot-nox)"; \
	fi

notebook-%: $(BUILD)/notebooks/%
	./$<

# tests/test_book.c runs the notebooks and compares their printed numbers, so make test builds them.
test: $(NB_BIN)

# The book's figures: drawn from committed sources into figures/, next to them.
figures: $(NB_BIN)
	sh figures/render.sh $(BUILD)/notebooks

# make docs also draws the figures (Doxygen copies them from IMAGE_PATH) and copies MathJax 2.7
# from Debian's libjs-mathjax into the HTML, so that formulas typeset with no network.
MATHJAX_DIR ?= /usr/share/javascript/mathjax
MATHJAX_OUT := $(BUILD)/docs/html/mathjax
docs: figures $(MATHJAX_OUT)/MathJax.js

$(MATHJAX_OUT)/MathJax.js:
	@test -f $(MATHJAX_DIR)/MathJax.js || \
	    { echo "make docs: MathJax is not at $(MATHJAX_DIR) (make deps installs libjs-mathjax)"; exit 1; }
	@rm -rf $(MATHJAX_OUT) && mkdir -p $(MATHJAX_OUT)
	cp -RL $(addprefix $(MATHJAX_DIR)/,MathJax.js config extensions fonts jax localization) $(MATHJAX_OUT)/

docs-check:
	sh docs/check_math.sh $(BUILD)/docs/html
