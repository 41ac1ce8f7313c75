# kernels/kernels.mk — build rules of the fast path (kernels/ + fast/), included by the top Makefile.
#
#   - simulated device: kernels/*.cu compiled as C++17 against sim/include (SIM_CU_COMPILE of
#     sim/sim.mk) and fast/*.c compiled as C11 (the sim headers declare the CUDA runtime and
#     cuBLAS host API for C) go into build/libfast_sim.a; the suites tests/test_fast_*.c link it
#     with libsim.a and run in `make test` (the simulated device always exists there);
#   - make fast-gpu: the same sources for a real GPU — nvcc for sm_80 + sm_90 with warnings as
#     errors, fast/*.c against the toolkit's headers — into build/libfast_gpu.a, and the same
#     suites linked with -lcudart -lcublas into build/gpu/tests/ (they skip() without a GPU);
#   - make ptxas-report: registers, shared memory and spill bytes per kernel for sm_90;
#   - make bench-fast (fast/bench/bench_fast.c, real-GPU build only): ceilings, kernel times,
#     batch-1 decode; on a machine without a GPU, says so and exits 0.

CUDA_HOME     ?= /usr/local/cuda
FAST_CU       := $(wildcard kernels/*.cu)
FAST_C        := $(wildcard fast/*.c)
FAST_SIM_OBJ  := $(FAST_CU:%.cu=$(BUILD)/%.o) $(FAST_C:%.c=$(BUILD)/%.o)
FAST_SIM_LIB  := $(BUILD)/libfast_sim.a
FAST_TEST_SRC := $(wildcard tests/test_fast_*.c)

# fast/ and its suites see kernels.h and fast.h.
$(BUILD)/fast/%.o $(BUILD)/tests/test_fast_%.o: override CFLAGS += -Ikernels -Ifast

$(FAST_SIM_LIB): $(FAST_SIM_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The fast suites link the fast path (a more specific pattern than the generic suite rule).
$(BUILD)/tests/test_fast_%: $(BUILD)/tests/test_fast_%.o $(FAST_SIM_LIB) $(TEST_LIB_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(FAST_SIM_LIB) $(TEST_LIB_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a $(TEST_LDLIBS) $(LDLIBS)

# --- fast-gpu ---------------------------------------------------------------------------------
GPU_CFLAGS    = $(filter-out -Isim/include,$(CFLAGS)) -I$(CUDA_HOME)/include -Ikernels -Ifast
GPU_NVFLAGS   = $(NVCC_FLAGS) -O3 -Ikernels
FAST_GPU_OBJ  := $(FAST_CU:%.cu=$(BUILD)/gpu/%.o) $(FAST_C:%.c=$(BUILD)/gpu/%.o)
FAST_GPU_LIB  := $(BUILD)/libfast_gpu.a
FAST_GPU_TEST := $(FAST_TEST_SRC:tests/%.c=$(BUILD)/gpu/tests/%)
GPU_LDLIBS    = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lnccl -lcublas -lcudart -lstdc++ -lcmocka -lpthread

.PHONY: fast-gpu ptxas-report bench-fast
fast-gpu: $(FAST_GPU_LIB) $(FAST_GPU_TEST)

$(BUILD)/gpu/kernels/%.o: kernels/%.cu kernels/kernels.h kernels/common.cuh
	@mkdir -p $(dir $@)
	$(NVCC) $(GPU_NVFLAGS) -c $< -o $@

$(BUILD)/gpu/fast/%.o $(BUILD)/gpu/tests/%.o: override CFLAGS := $(GPU_CFLAGS)
$(BUILD)/gpu/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(FAST_GPU_LIB): $(FAST_GPU_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/gpu/tests/test_fast_%: $(BUILD)/gpu/tests/test_fast_%.o $(FAST_GPU_LIB) $(TEST_LIB_OBJ) $(BUILD)/libref.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $< $(FAST_GPU_LIB) $(TEST_LIB_OBJ) $(BUILD)/libref.a $(GPU_LDLIBS) $(LDLIBS)

# --- ptxas-report -----------------------------------------------------------------------------
ptxas-report:
	@for f in $(FAST_CU); do \
	    $(NVCC) -std=c++17 -gencode arch=compute_90,code=sm_90 -O3 -Isim/launch -Ikernels -Xptxas -v \
	        -c $$f -o /dev/null 2>&1 | awk -v file=$$f ' \
	        /Compiling entry function/ { match($$0, /_Z[0-9]+[a-z_0-9]+/); k = substr($$0, RSTART, RLENGTH); \
	            sub(/^_Z[0-9]+/, "", k) } \
	        /bytes stack frame/ { spill = $$0; sub(/.*stack frame, /, "", spill) } \
	        /Used [0-9]+ registers/ { regs = $$0; sub(/.*Used /, "", regs); \
	            printf "%-16s %-48s %s | %s\n", file, k, regs, spill }'; \
	done

# --- bench-fast -------------------------------------------------------------------------------
bench: bench-fast

bench-fast: $(BUILD)/gpu/bench_fast
	./$(BUILD)/gpu/bench_fast

$(BUILD)/gpu/bench_fast: $(BUILD)/gpu/fast/bench/bench_fast.o $(FAST_GPU_LIB) $(BUILD)/libref.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $< $(FAST_GPU_LIB) $(BUILD)/libref.a $(GPU_LDLIBS) $(LDLIBS)
