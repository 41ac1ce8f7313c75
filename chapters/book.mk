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

.PHONY: excerpts check-excerpts notebooks

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
