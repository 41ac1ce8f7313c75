# sim/sim.mk — build rules of the simulated device, included by the top Makefile.
#
# The runtime itself (sim/*.c) is plain C11 and goes into build/libsim.a
# through the top Makefile. What lives here:
#
#   - compiling .cu files as C++17 against sim/include (the simulator's
#     CUDA headers) and sim/launch (dsv2_launch.h): SIM_CU_COMPILE;
#   - the sim suites: tests/test_sim_*.c linked with the test kernels of
#     tests/sim/*.cu (build/tests/sim/libsimkernels.a);
#   - make nvcc-check: the same .cu files through nvcc for sm_80 and sm_90,
#     warnings as errors, so the simulator never accepts CUDA nvcc rejects;
#   - make bench-sim: fiber switches/s and empty launches/s.

SIM_CXX      ?= g++
# Optimisation, debug and sanitizer flags follow CFLAGS; the language and warnings are ours.
SIM_CUFLAGS   = $(filter-out -std=%,$(CFLAGS)) -x c++ -std=c++17 -Wall -Wextra -Werror -Wno-unknown-pragmas \
                -Isim/include -Isim/launch
SIM_CU_COMPILE = $(SIM_CXX) $(SIM_CUFLAGS) -MMD -MP -c

# Objects compiled from .cu need the C++ runtime (operator new, for the launch argument packs).
TEST_LDLIBS  += -lstdc++

SIM_TEST_CU     := $(wildcard tests/sim/*.cu)
SIM_TEST_CU_OBJ := $(SIM_TEST_CU:%.cu=$(BUILD)/%.o)
SIM_KERNELS_LIB := $(BUILD)/tests/sim/libsimkernels.a

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(SIM_CU_COMPILE) $< -o $@

$(SIM_KERNELS_LIB): $(SIM_TEST_CU_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The sim suites also link the test kernels (a more specific pattern than the generic suite rule).
$(BUILD)/tests/test_sim_%: $(BUILD)/tests/test_sim_%.o $(SIM_KERNELS_LIB) $(TEST_LIB_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(SIM_KERNELS_LIB) $(TEST_LIB_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a $(TEST_LDLIBS) $(LDLIBS)

# --- nvcc-check -------------------------------------------------------------------------------
NVCC           ?= /usr/local/cuda/bin/nvcc
NVCC_FLAGS      = -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
                  -Werror all-warnings -Isim/launch -Ikernels
NVCC_CHECK_SRC := $(SIM_TEST_CU) $(wildcard tests/sim/counted/*.cu) $(wildcard kernels/*.cu)

.PHONY: nvcc-check bench-sim
nvcc-check: $(NVCC_CHECK_SRC:%.cu=$(BUILD)/nvcc/%.o)

$(BUILD)/nvcc/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

# --- bench-sim --------------------------------------------------------------------------------
bench: bench-sim

bench-sim: $(BUILD)/bench_sim
	@mkdir -p $(BUILD)/bench
	./$(BUILD)/bench_sim $(BUILD)/bench/sim.json

$(BUILD)/bench_sim: $(BUILD)/sim/bench/bench_sim.o $(BUILD)/libsim.a
	$(CC) $(CFLAGS) -o $@ $^ -lstdc++ -lopenblas -lpthread $(LDLIBS)

# --- counted kernels ----------------------------------------------------------------------------
# The device counters (sim/counters.c) see a kernel's global loads and stores by width when the
# kernel is compiled with GCC's ThreadSanitizer instrumentation: before every access of N bytes it
# calls __tsan_readN / __tsan_writeN, which sim/count_hooks.c implements (no ThreadSanitizer
# runtime is linked). SRA, vectorisation and store merging are off so that an access in the source
# stays one access of its own width (a float4 load one 16-byte read, a float store one 4-byte
# write). Other sanitizers are dropped from these objects (ThreadSanitizer excludes them).
# -Wno-tsan: GCC warns that it cannot instrument a fence (__threadfence); the fence is still
# emitted, and the simulator runs every device thread as a fiber of one host thread anyway.
SIM_COUNT_FLAGS = -fsanitize=thread --param tsan-instrument-func-entry-exit=0 -fno-tree-sra \
                  -fno-tree-vectorize -fno-tree-slp-vectorize -fno-store-merging -Wno-tsan
SIM_CU_COUNTED  = $(SIM_CXX) $(filter-out -fsanitize=% -fno-sanitize-recover=%,$(SIM_CUFLAGS)) $(SIM_COUNT_FLAGS) \
                  -Ikernels -MMD -MP -c

$(BUILD)/counted/%.o: %.cu
	@mkdir -p $(dir $@)
	$(SIM_CU_COUNTED) $< -o $@

COUNTED_TEST_OBJ := $(BUILD)/counted/tests/sim/counted/counted_kernels.o
$(BUILD)/tests/test_sim_counters.o: override CFLAGS += -Itests/sim/counted
$(BUILD)/tests/test_sim_counters: $(BUILD)/tests/test_sim_counters.o $(COUNTED_TEST_OBJ) $(TEST_LIB_OBJ) \
                                  $(BUILD)/libref.a $(BUILD)/libsim.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(COUNTED_TEST_OBJ) $(TEST_LIB_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a \
	    $(TEST_LDLIBS) $(LDLIBS)
