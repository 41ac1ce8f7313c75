# chapters/book.mk: the book's targets (included from the top Makefile).
#
#   make excerpts          refill every code block in book.md and chapters/ from its source anchor
#   make check-excerpts    fail on drift, missing files or anchors, duplicate or unclosed anchors,
#                          chapters missing from book.md (also run inside make test: tests/test_book.c)
#   make notebooks         build and run every notebooks-c/*.c; output in build/notebooks/<name>.txt
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

notebooks: $(NB_BIN)
	@for nb in $(NB_BIN); do \
	    echo "== $$nb > $$nb.txt"; ./$$nb > $$nb.txt || exit 1; \
	done

notebook-%: $(BUILD)/notebooks/%
	./$<

# tests/test_book.c runs the notebooks and compares their printed numbers, so make test builds them.
test: $(NB_BIN)
