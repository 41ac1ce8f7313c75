# exercises/exercises.mk: the book's exercises as one suite of make test (included by the top Makefile).
#
#   make check-exercises [EXERCISE="02-mla-2 05-routing-4"]   check every exercise, or the named ones
#
# tests/exercises.sh copies the tree, builds at -O1 what each check needs, and for every
# exercises/NAME/ compares the check's output on the tree as it is and with solution.patch
# applied. make test runs it as one more suite (build/tests/exercises, a wrapper script);
# EXERCISES=0 leaves it out, and so does make test-asan, whose sanitizer CFLAGS would only
# repeat the same checks more slowly.

EXERCISES ?= $(if $(findstring -fsanitize,$(CFLAGS)),0,1)

.PHONY: check-exercises
check-exercises:
	sh tests/exercises.sh $(EXERCISE)

$(BUILD)/tests/exercises: tests/exercises.sh
	@mkdir -p $(dir $@)
	printf '#!/bin/sh\nexec sh "%s/tests/exercises.sh" "$$@"\n' "$(CURDIR)" > $@
	chmod +x $@

ifeq ($(EXERCISES),1)
TEST_BIN += $(BUILD)/tests/exercises
test: $(BUILD)/tests/exercises
endif
