# tests/fuzz/fuzz.mk — libFuzzer targets for every reader of untrusted input.
#
#   make fuzz FUZZ_SECONDS=60     build each target with clang (libFuzzer + AddressSanitizer +
#                                 UndefinedBehaviorSanitizer) and run it for FUZZ_SECONDS,
#                                 seeded from the committed fixtures; any crash, leak or UB
#                                 stops the run with the reproducer in build/fuzz/
#
# Targets: safetensors (header and layout), index (the shard index), config (config.json),
# tokenizer (tokenizer.json), encode (prompt encoding), chat (the chat template).

FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_FLAGS    = -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iref -Itests/fuzz \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_TARGETS := safetensors index config tokenizer encode chat
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_REF_SRC := $(wildcard ref/*.c)

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(FUZZ_REF_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_REF_SRC) $(LDLIBS)

# Seeds: copies of the fixtures each reader normally sees.
fuzz-seeds:
	@rm -rf $(FUZZ_DIR)/seeds && mkdir -p $(FUZZ_DIR)/seeds
	@for t in $(FUZZ_TARGETS); do mkdir -p $(FUZZ_DIR)/seeds/$$t $(FUZZ_DIR)/corpus/$$t; done
	@i=0; for f in tests/golden/*/*.safetensors; do i=$$((i+1)); head -c 65536 $$f > $(FUZZ_DIR)/seeds/safetensors/$$i; done
	@i=0; for f in tests/golden/*/config.json; do i=$$((i+1)); cp $$f $(FUZZ_DIR)/seeds/config/$$i; done
	@cp tests/golden/v2/model.safetensors.index.json $(FUZZ_DIR)/seeds/index/1
	@cp tests/golden/tokenizer/tiny/tokenizer.json $(FUZZ_DIR)/seeds/tokenizer/1
	@i=0; for f in README.md tests/fuzz/fuzz.mk; do i=$$((i+1)); head -c 2000 $$f > $(FUZZ_DIR)/seeds/encode/$$i; done
	@printf '\001Hello\000\002Hi there\000\000System\000' > $(FUZZ_DIR)/seeds/chat/1

fuzz: fuzz-build fuzz-seeds
	@for t in $(FUZZ_TARGETS); do \
	    echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; \
	    $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=300000 -timeout=10 \
	        -rss_limit_mb=4096 -artifact_prefix=$(FUZZ_DIR)/crash-$$t- -print_final_stats=1 \
	        $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/seeds/$$t 2>&1 | grep -E "^#[0-9]+ *DONE|stat::number_of_executed_units|ERROR|SUMMARY|Test unit written" ; \
	    if ls $(FUZZ_DIR)/crash-$$t-* >/dev/null 2>&1; then echo "fuzz_$$t: FAILED (see $(FUZZ_DIR)/crash-$$t-*)"; exit 1; fi; \
	done
