/**
 * \file test_fast_faults.c
 * \brief Allocation failures in the fast path (issue 9, item 4; issue 7 for the expert-parallel model):
 *        every cudaMalloc of a run made to fail in turn, each failure clean (tests/fault_sweep.h).
 *
 * Three runs are swept:
 *   - fast_model_open() + one fast_model_forward() + fast_model_close() on tests/golden/lite, one device;
 *   - the same on tests/golden/v2 with FastOptions.ep_devices = 4: the group (fast_ep_init), the sharded
 *     MoE layers (fast_ep_upload_moe), the share buffers, a prompt through the expert-parallel layers,
 *     and the release of all of it on four devices;
 *   - fast_dp_model_open() + one fast_dp_model_forward() + fast_dp_model_close() on tests/golden/v2
 *     over four devices: four FastModels without MoE layers, the group and the sharded layers, a
 *     different prompt on three devices with the fourth idle, and the release.
 * For each N up to the run's cudaMalloc count, a child with SIM_FAIL_MALLOC=N must return −1 with one
 * error line naming cudaMalloc, a file and a line, exit normally and leave no device allocation live;
 * N = count + 1 must succeed.
 *
 * A real-GPU build has no fault injection: the suite skips there, saying so.
 */
#include "check.h"
#include "error.h"
#include "fast.h"
#include "fast_dp.h"
#include "fault_sweep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if __has_include("sim.h")
#include "sim.h"
#define HAVE_SIM 1
#else
#define HAVE_SIM 0
#endif

static const char *self; /* this binary, for the children */

/* Open dir with opt, feed a prompt spanning two chunks, close. Returns 0 or −1 (error line set). */
static int open_forward_close(const char *dir, const FastOptions *opt)
{
    static const int prompt[] = { 1, 5, 9, 2, 7, 3 };
    FastModel m;
    if (fast_model_open(&m, dir, opt)) return -1; /* open leaves nothing open on failure */
    float *logits = malloc(sizeof(float) * (size_t)m.cfg->vocab_size);
    const int rc = !logits ? ds_error("out of host memory")
                           : fast_model_forward(&m, prompt, (int)(sizeof prompt / sizeof prompt[0]), logits, false);
    free(logits);
    fast_model_close(&m);
    return rc;
}

static int run_lite(void)
{
    const FastOptions opt = { .bf16 = false, .chunk = 4 };
    return open_forward_close("tests/golden/lite", &opt);
}

static int run_ep(void)
{
    const FastOptions opt = { .bf16 = false, .chunk = 4, .ep_devices = 4 };
    return open_forward_close("tests/golden/v2", &opt);
}

/* The data-parallel model over 4 devices: open, one call with a different prompt per device (device 3
 * idle), close. Returns 0 or −1 (error line set). */
static int run_dp(void)
{
    static const int prompt[] = { 1, 5, 9, 2, 7, 3 };
    const FastOptions opt = { .bf16 = false, .chunk = 4 };
    FastDpModel *dp;
    if (fast_dp_model_open(&dp, "tests/golden/v2", 4, &opt)) return -1; /* open leaves nothing open on failure */
    const int *tokens[] = { prompt, prompt + 1, prompt + 2, prompt };
    const int T[] = { 6, 5, 1, 0 };
    float *const logits[] = { NULL, NULL, NULL, NULL };
    const int rc = fast_dp_model_forward(dp, tokens, T, logits, false);
    fast_dp_model_close(dp);
    return rc;
}

#if HAVE_SIM
static void sim_counts(FaultCounts *out)
{
    SimStats st;
    sim_stats(&st);
    *out = (FaultCounts){ st.malloc_calls, st.live_allocs, st.live_bytes };
}
#else
static void sim_counts(FaultCounts *out)
{
    memset(out, 0, sizeof *out);
}
#endif

static const FaultSweep sweeps[] = {
    { "lite", "tests/golden/lite: open + forward + close", run_lite, sim_counts },
    { "ep", "tests/golden/v2 over 4 devices (ep_devices): open + forward + close", run_ep, sim_counts },
    { "dp", "tests/golden/v2 data-parallel over 4 devices (FastDpModel): open + forward + close", run_dp, sim_counts },
};

static void sweep(void **state)
{
#if !HAVE_SIM
    (void)state;
    printf("needs the simulated device's fault injection (SIM_FAIL_MALLOC); a real-GPU build has none\n");
    skip();
#else
    fault_sweep_run(*state, self);
#endif
}

int main(int argc, char **argv)
{
    self = argv[0];
    setenv("SIM_DEVICE_COUNT", "4", 1); /* before the first CUDA call, inherited by the children */
    if (argc == 4 && strcmp(argv[1], "child") == 0)
        for (size_t i = 0; i < sizeof sweeps / sizeof sweeps[0]; i++)
            if (strcmp(argv[2], sweeps[i].id) == 0) return fault_sweep_child(&sweeps[i], argv[3]);
    const struct CMUnitTest tests[] = {
        { "lite: every cudaMalloc fails cleanly", sweep, NULL, NULL, (void *)&sweeps[0] },
        { "ep_devices 4: every cudaMalloc fails cleanly", sweep, NULL, NULL, (void *)&sweeps[1] },
        { "data-parallel over 4: every cudaMalloc fails cleanly", sweep, NULL, NULL, (void *)&sweeps[2] },
    };
    return cmocka_run_group_tests_name("fast faults", tests, NULL, NULL);
}
