# dsv2.c — one entry point for building, running and testing.
#
#   make            build the command-line program build/dsv2 (both backends; fast on sim/)
#   make dsv2-gpu   the same program for a real GPU: build/gpu/dsv2
#   make run        generate text with the bundled model (PROMPT="...", TEMP=0 for greedy, SEED=...)
#   make test       build and run every CMocka suite; ends with "N passed, N failed, N skipped"
#   make test-asan  the same under AddressSanitizer + UBSan + LeakSanitizer
#   make fuzz       libFuzzer on every reader of untrusted input (FUZZ_SECONDS=60 each)
#   make bench      benchmarks (numbers go to build/bench/, never into tests)
#   make docs       Doxygen HTML into build/docs/
#   make deps       install the Debian packages this project needs (needs root)
#
# Sources are discovered by directory: every ref/*.c goes into build/libref.a,
# every sim/*.c into build/libsim.a, and every tests/test_*.c becomes one suite
# build/tests/test_* linked against both libraries.

CC      ?= gcc
CFLAGS  ?= -O3 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iref -Isim/include
LDLIBS  += -ljansson -lpcre2-8 -lm
TEST_LDLIBS = -lcmocka -lopenblas -lpthread
BUILD   := build

REF_SRC   := $(wildcard ref/*.c)
REF_OBJ   := $(REF_SRC:%.c=$(BUILD)/%.o)
SIM_SRC   := $(wildcard sim/*.c)
SIM_OBJ   := $(SIM_SRC:%.c=$(BUILD)/%.o)
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_LIB_SRC := $(filter-out tests/test_%.c,$(wildcard tests/*.c))
TEST_LIB_OBJ := $(TEST_LIB_SRC:%.c=$(BUILD)/%.o)

MODEL   ?= models/tiny-kjv
PROMPT  ?= In the beginning
NTOK    ?= 100
TEMP    ?= 0.8
SEED    ?= 1611

.PHONY: all run test test-asan bench bench-ref docs deps clean
all: $(BUILD)/dsv2

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Only the suites and their helpers include tests/'s headers (check.h, golden.h, ...); the libraries never do.
$(BUILD)/tests/%.o: override CFLAGS += -Itests

$(BUILD)/libref.a: $(REF_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libsim.a: $(SIM_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The CLI carries both backends; without a GPU the fast one runs on the simulated device.
DSV2_SRC := $(wildcard dsv2*.c)
$(DSV2_SRC:%.c=$(BUILD)/%.o): override CFLAGS += -Ikernels -Ifast -DDSV2_SIM_DEVICE
$(BUILD)/dsv2: $(DSV2_SRC:%.c=$(BUILD)/%.o) $(BUILD)/libfast_sim.a $(BUILD)/libref.a $(BUILD)/libsim.a
	$(CC) $(CFLAGS) -o $@ $^ -lopenblas -lpthread -lstdc++ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_LIB_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TEST_LIB_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a $(TEST_LDLIBS) $(LDLIBS)

run: $(BUILD)/dsv2
	./$(BUILD)/dsv2 generate -m $(MODEL) -p "$(PROMPT)" -n $(NTOK) -t $(TEMP) --seed $(SEED)

test: $(TEST_BIN) $(BUILD)/dsv2
	@sh tests/run_suites.sh $(TEST_BIN)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer,
# built into its own directory.
test-asan:
	$(MAKE) BUILD=$(BUILD)/asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

bench: bench-ref

bench-ref: $(BUILD)/bench_ref
	./$(BUILD)/bench_ref

# bench_ref times OpenBLAS's single-threaded sgemm beside the batched linear (cblas.h)
$(BUILD)/bench_ref: $(BUILD)/tests/bench/bench_ref.o $(BUILD)/libref.a
	$(CC) $(CFLAGS) -o $@ $^ -lopenblas $(LDLIBS)

# the chapters' plots come from make notebooks (gnuplot), which Doxygen copies into the HTML
docs: notebooks
	@command -v $(GNUPLOT) > /dev/null || { echo "make docs: the chapters' plots need gnuplot (make deps)"; exit 1; }
	@mkdir -p $(BUILD)/docs
	doxygen docs/Doxyfile

deps:
	apt-get update
	apt-get install -y --no-install-recommends build-essential libcmocka-dev \
	    libjansson-dev libpcre2-dev libopenblas-dev doxygen clang-14 libclang-rt-14-dev gnuplot-nox \
	    clang-format-14 libjs-mathjax graphviz fonts-dejavu-core chromium bible-kjv

clean:
	rm -rf $(BUILD)

.SECONDARY:

# Parts owned by other directories (rules for sim/ and kernels/ live next to them).
include sim/sim.mk
include kernels/kernels.mk
include kernels/lab/lab.mk
include ref/tokenizer.mk
include tests/fuzz/fuzz.mk
include chapters/book.mk
include exercises/exercises.mk
include tools/format.mk
include tools/train.mk
include tools/profile.mk

# The CLI for a real GPU: the same dsv2.c against the CUDA toolkit, cuBLAS and the nvcc-built kernels.
.PHONY: dsv2-gpu
dsv2-gpu: $(BUILD)/gpu/dsv2
$(DSV2_SRC:%.c=$(BUILD)/gpu/%.o): override CFLAGS := $(GPU_CFLAGS)
$(BUILD)/gpu/dsv2: $(DSV2_SRC:%.c=$(BUILD)/gpu/%.o) $(BUILD)/libfast_gpu.a $(BUILD)/libref.a
	$(CC) -o $@ $^ $(GPU_LDLIBS) $(LDLIBS)

# The suites built for a real GPU take their flags from GPU_CFLAGS (kernels/kernels.mk), then tests/'s headers.
$(BUILD)/gpu/tests/%.o: override CFLAGS += -Itests

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
