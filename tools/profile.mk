# tools/profile.mk — `make profile-fast`, `make profile-fast-v2`: the fast path's device counters and H100
# estimates; `make gpu-report`: the same estimates beside measured times on a real GPU.
#
# kernels/*.cu are compiled a second time with the counting instrumentation (SIM_CU_COUNTED of
# sim/sim.mk) into build/counted/, linked with fast/*.c, libsim.a and fast/bench/profile_fast.c.
# The checkpoints are bench_ref's: V2-Lite-shaped (`bench_ref --checkpoint-only`, 2.2 GB) and
# V2-shaped (`bench_ref --checkpoint-v2`, 8.9 GB on disk; the run's peak RSS is 13.7 GB).
# PROFILE_PREFILL sets the prompt length (default 1024 tokens; PROFILE_V2_PREFILL, 512, for V2).
# Output: build/profile-fast.json, build/profile-fast-v2.json. Benchmarks, never tests: nothing here
# is timed or asserted. gpu-report's comparison (fast/bench/gpu_report.c) is tested on canned inputs
# by tests/test_gpu_report.c in `make test`.

PROFILE_PREFILL    ?= 1024
PROFILE_V2_PREFILL ?= 512
COUNTED_FAST_OBJ := $(FAST_CU:%.cu=$(BUILD)/counted/%.o) $(FAST_C:%.c=$(BUILD)/%.o)
PROFILE_OBJ      := $(addprefix $(BUILD)/fast/bench/,profile_fast.o profile_cases.o h100_model.o)

.PHONY: profile-fast profile-fast-v2 gpu-report
profile-fast: $(BUILD)/profile_fast build/bench/v2-lite-2layer/model.safetensors
	./$(BUILD)/profile_fast $(PROFILE_PREFILL)

profile-fast-v2: $(BUILD)/profile_fast build/bench/v2-2layer/model.safetensors
	./$(BUILD)/profile_fast --v2 $(PROFILE_V2_PREFILL)

build/bench/v2-lite-2layer/model.safetensors: | $(BUILD)/bench_ref
	./$(BUILD)/bench_ref --checkpoint-only

build/bench/v2-2layer/model.safetensors: | $(BUILD)/bench_ref
	./$(BUILD)/bench_ref --checkpoint-v2

$(PROFILE_OBJ): override CFLAGS += -Ifast/bench
$(BUILD)/profile_fast: $(PROFILE_OBJ) $(COUNTED_FAST_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a
	$(CC) $(CFLAGS) -o $@ $^ -lopenblas -lpthread -lstdc++ $(LDLIBS)

# --- gpu-report -------------------------------------------------------------------------------
# On a machine where nvidia-smi finds a GPU: the real-GPU suites and bench-fast, then the comparison
# of bench-fast's times with profile-fast's estimates into build/gpu-report.md and .json.
$(BUILD)/fast/bench/gpu_report.o $(BUILD)/fast/bench/gpu_report_main.o $(BUILD)/tests/test_gpu_report.o: override CFLAGS += -Ifast/bench
$(BUILD)/gpu_report: $(BUILD)/fast/bench/gpu_report_main.o $(BUILD)/fast/bench/gpu_report.o $(BUILD)/libref.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/test_gpu_report: $(BUILD)/tests/test_gpu_report.o $(BUILD)/fast/bench/gpu_report.o $(TEST_LIB_OBJ) \
                                $(BUILD)/libref.a $(BUILD)/libsim.a
	$(CC) $(CFLAGS) -o $@ $^ $(TEST_LDLIBS) $(LDLIBS)

# NVIDIA_SMI names the probe (the test of the no-device path sets it to `false`).
NVIDIA_SMI ?= nvidia-smi
gpu-report:
	$(if $(shell $(NVIDIA_SMI) -L 2>/dev/null | grep '^GPU'),,$(error gpu-report: no CUDA device found ($(NVIDIA_SMI) -L lists none); nothing written))
	$(MAKE) fast-gpu $(BUILD)/gpu/bench_fast $(BUILD)/gpu_report profile-fast
	@rm -f $(BUILD)/gpu-suites.txt
	@for t in $(FAST_GPU_TEST); do \
	    if ./$$t > $$t.log 2>&1; then r=pass; else r=FAIL; fi; \
	    echo "$$t $$r" | tee -a $(BUILD)/gpu-suites.txt; done
	./$(BUILD)/gpu/bench_fast | tee $(BUILD)/gpu-bench-fast.txt
	./$(BUILD)/gpu_report $(BUILD)/gpu-bench-fast.txt $(BUILD)/profile-fast.json $(BUILD)/gpu-suites.txt $(BUILD)/gpu-report
