# tools/format.mk: one formatting style (.clang-format) for every C and CUDA source, included by the
# top Makefile.
#
#   make format          rewrite the sources in place with clang-format-14; the diff excerpts in the
#                        book quote the sources, so refresh them after it: make format && make excerpts
#   make format-check    list every source that clang-format would change and fail if there is one
#                        (run by make test, before the suites)

CLANG_FORMAT ?= clang-format-14
FORMAT_SRC   := $(filter-out ref/unicode_tables.c,$(wildcard dsv2*.c dsv2*.h) $(shell find ref sim kernels fast tests notebooks-c -type f \
                    \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null | sort))

.PHONY: format format-check

format:
	@command -v $(CLANG_FORMAT) > /dev/null || { echo "make format: $(CLANG_FORMAT) is not installed"; exit 1; }
	$(CLANG_FORMAT) -i --style=file $(FORMAT_SRC)

format-check:
	@command -v $(CLANG_FORMAT) > /dev/null || { echo "make format-check: $(CLANG_FORMAT) is not installed"; exit 1; }
	@bad=0; for f in $(FORMAT_SRC); do \
	    $(CLANG_FORMAT) --style=file "$$f" | cmp -s - "$$f" || { echo "$$f: not formatted (make format)"; bad=1; }; \
	done; \
	if [ $$bad -ne 0 ]; then echo "make format-check: run make format, then make excerpts"; exit 1; fi

# The style is part of the tests: make test fails on an unformatted source.
test: format-check
