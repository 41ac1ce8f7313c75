# kernels/lab/lab.mk — the kernel lab: check your own kernel against the reference in one command.
#
#   make check-kernel COMPONENT=<name> SRC=path/to/my_kernel.cu [BACKEND=sim|gpu] [RACECHECK=1] [SEEDS=...]
#
# SRC includes "dsv2_launch.h" and "contract.h" and defines the component's launcher
# lab_<name> (kernels/lab/contract.h; the contracts in full: kernels/contracts.md). It is
# linked into the component's harness (tests/lab/lab.c + tests/lab/lab_<name>.c), which runs
# it over the shape suite against ref/ once per seed and prints one line per shape and a
# verdict; the exit status is 0 on PASS, 1 on FAIL, 2 when the check could not run.
#
#   SEEDS: the inputs' seeds. Unset: the harness's fixed set (printed), so a kernel's verdict
#       is the same on every run; SEEDS="7 8" those seeds; SEEDS=random one drawn from the
#       clock and printed, to be repeated with SEEDS=<it>.
#   BACKEND=sim (default): SRC compiled as C++17 for the simulated device; the harness, sim/,
#       ref/ and the project's kernels built with AddressSanitizer into build/lab/sim/, so an
#       out-of-bounds access is reported against the contract's argument it ran past. SRC
#       itself is compiled at -O0 there: an optimiser may move a load behind the bounds check
#       that discards its value (or drop it), and then AddressSanitizer never sees the access
#       the source makes; at -O0 every access in the source is made and checked.
#   BACKEND=gpu: SRC compiled by nvcc for sm_80 + sm_90 into build/gpu/lab/; on a machine
#       with a GPU the harness also times your kernel beside the project's (GB/s, TFLOP/s);
#       without one it says so and exits 2.
#   RACECHECK=1: sim/'s race check (SIM_RACECHECK=1) on every launch.

LAB_COMPONENTS := rmsnorm mla_decode rope router moe_permute mla_softmax moe_ffn ep_stats
BACKEND        ?= sim
LAB_ID          = $(subst /,_,$(patsubst %.cu,%,$(SRC)))
LAB_SIM_CFLAGS := -O2 -g -fsanitize=address -fno-omit-frame-pointer
LAB_SIM_BIN     = $(BUILD)/lab/sim/lab-check/$(COMPONENT)/$(LAB_ID)
LAB_GPU_BIN     = $(BUILD)/gpu/lab-check/$(COMPONENT)/$(LAB_ID)
LAB_CFLAGS_EXTRA := -Ikernels -Ikernels/lab
# appended after CFLAGS when compiling SRC for sim/: the last -O wins
LAB_USER_OPT    := -O0
SEEDS          ?=

.PHONY: check-kernel
check-kernel:
	@case " $(LAB_COMPONENTS) " in *" $(COMPONENT) "*) ;; *) \
	    echo "check-kernel: COMPONENT='$(COMPONENT)' is not one of: $(LAB_COMPONENTS) (contracts: kernels/contracts.md)" >&2; \
	    exit 2;; esac
	@[ -f "$(SRC)" ] || { echo "check-kernel: SRC='$(SRC)' is not a file: name your .cu, which defines \
	lab_$(COMPONENT) (kernels/lab/contract.h)" >&2; exit 2; }
	@case "$(BACKEND)" in sim|gpu) ;; *) echo "check-kernel: BACKEND='$(BACKEND)': sim or gpu" >&2; exit 2;; esac
	@if [ "$(BACKEND)" = sim ]; then \
	    $(MAKE) --no-print-directory -s BUILD=$(BUILD)/lab/sim CFLAGS="$(LAB_SIM_CFLAGS)" \
	        $(BUILD)/lab/sim/lab-check/$(COMPONENT)/$(LAB_ID) || exit 2; \
	    SIM_RACECHECK=$(if $(RACECHECK),$(RACECHECK),0) SIM_QUIET=1 ASAN_OPTIONS=detect_leaks=0 \
	        ./$(LAB_SIM_BIN) --src $(SRC) --seeds "$(SEEDS)"; \
	else \
	    $(MAKE) --no-print-directory -s $(LAB_GPU_BIN) || exit 2; \
	    ./$(LAB_GPU_BIN) --src $(SRC) --seeds "$(SEEDS)"; \
	fi

# The user's kernel file: rules only while SRC names one.
ifneq ($(SRC),)
$(BUILD)/lab-user/$(LAB_ID).o: $(SRC) kernels/lab/contract.h kernels/kernels.h kernels/lab/lab.mk
	@mkdir -p $(dir $@)
	$(SIM_CU_COMPILE) $(LAB_USER_OPT) $(LAB_CFLAGS_EXTRA) $(SRC) -o $@

$(BUILD)/gpu/lab-user/$(LAB_ID).o: $(SRC) kernels/lab/contract.h kernels/kernels.h
	@mkdir -p $(dir $@)
	$(NVCC) $(GPU_NVFLAGS) -Ikernels/lab -c $(SRC) -o $@
endif

# --- simulated device (made by check-kernel with BUILD=build/lab/sim and ASan CFLAGS) ----------
$(BUILD)/lab-obj/%.o: tests/lab/%.c tests/lab/lab.h kernels/lab/contract.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LAB_CFLAGS_EXTRA) -Itests -Itests/lab -MMD -MP -c $< -o $@

$(BUILD)/lab-check/%: $(BUILD)/lab-obj/lab.o $(TEST_LIB_OBJ) $(FAST_SIM_LIB) $(BUILD)/libref.a $(BUILD)/libsim.a \
                          $(BUILD)/lab-obj/lab_$(COMPONENT).o $(BUILD)/lab-user/$(LAB_ID).o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(BUILD)/lab-obj/lab_$(COMPONENT).o $(BUILD)/lab-obj/lab.o $(BUILD)/lab-user/$(LAB_ID).o \
	    $(TEST_LIB_OBJ) $(FAST_SIM_LIB) $(BUILD)/libref.a $(BUILD)/libsim.a $(TEST_LDLIBS) $(LDLIBS)

# --- real GPU ---------------------------------------------------------------------------------
$(BUILD)/gpu/lab-obj/%.o: tests/lab/%.c tests/lab/lab.h kernels/lab/contract.h
	@mkdir -p $(dir $@)
	$(CC) $(GPU_CFLAGS) -Ikernels/lab -Itests -Itests/lab -DLAB_GPU -c $< -o $@

$(BUILD)/gpu/lab-check/%: $(BUILD)/gpu/lab-obj/lab.o $(TEST_LIB_OBJ) $(FAST_GPU_LIB) $(BUILD)/libref.a \
                          $(BUILD)/gpu/lab-obj/lab_$(COMPONENT).o $(BUILD)/gpu/lab-user/$(LAB_ID).o
	@mkdir -p $(dir $@)
	$(CC) -o $@ $(BUILD)/gpu/lab-obj/lab_$(COMPONENT).o $(BUILD)/gpu/lab-obj/lab.o $(BUILD)/gpu/lab-user/$(LAB_ID).o \
	    $(TEST_LIB_OBJ) $(FAST_GPU_LIB) $(BUILD)/libref.a $(GPU_LDLIBS) $(LDLIBS)
