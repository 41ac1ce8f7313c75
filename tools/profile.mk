# tools/profile.mk — `make profile-fast`: the fast path's device counters and H100 estimates.
#
# kernels/*.cu are compiled a second time with the counting instrumentation (SIM_CU_COUNTED of
# sim/sim.mk) into build/counted/, linked with fast/*.c, libsim.a and fast/bench/profile_fast.c.
# The checkpoint is bench_ref's V2-Lite-shaped one (written once by `bench_ref --checkpoint-only`).
# PROFILE_PREFILL sets the prefill length (default 1024 tokens). Output: build/profile-fast.json.
# A benchmark, never a test: nothing here is timed or asserted.

PROFILE_PREFILL ?= 1024
COUNTED_FAST_OBJ := $(FAST_CU:%.cu=$(BUILD)/counted/%.o) $(FAST_C:%.c=$(BUILD)/%.o)

.PHONY: profile-fast
profile-fast: $(BUILD)/profile_fast build/bench/v2-lite-2layer/model.safetensors
	./$(BUILD)/profile_fast $(PROFILE_PREFILL)

build/bench/v2-lite-2layer/model.safetensors: | $(BUILD)/bench_ref
	./$(BUILD)/bench_ref --checkpoint-only

$(BUILD)/fast/bench/profile_fast.o: override CFLAGS += -Ifast/bench
$(BUILD)/profile_fast: $(BUILD)/fast/bench/profile_fast.o $(COUNTED_FAST_OBJ) $(BUILD)/libref.a $(BUILD)/libsim.a
	$(CC) $(CFLAGS) -o $@ $^ -lopenblas -lpthread -lstdc++ $(LDLIBS)
