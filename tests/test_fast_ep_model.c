/**
 * \file test_fast_ep_model.c
 * \brief The whole fast model with its MoE layers expert-parallel (FastOptions.ep_devices, fast/ep_model.c)
 *        against the reference model and the single-device fast model on the golden fixtures.
 *
 * Every golden model fixture, over N = 1, 2, 4 and 8 simulated devices wherever N divides its
 * n_routed_experts (all four have 8 experts):
 *   - tests/golden/v2: n_group 4, topk_group 2, K 3 — M = 2 on 2 and 4 devices (two groups, one
 *     group per device), 3 on 8 (each group on two devices, M = min(2·2, K));
 *   - tests/golden/longctx: n_group 2, topk_group 1, K 2, an 80-token prompt — M = 1, 2, 2;
 *   - tests/golden/lite and norope: greedy routing, K 2 — M = min(K, N) = 2.
 * N = 1 is the single-device model itself (ep_devices 1), run for the table. For each N, float32 mode:
 *   - logits at every prompt position within 1e-4 max-abs of ref/model.h's model_forward (the fixtures'
 *     tolerance), and within 1e-5 of the single-device fast model (both differences printed): the expert
 *     terms are the same products, only grouped by device before they are summed, and the GEMMs see
 *     other row counts — a few float32 roundings of values of order 1;
 *   - the reference's 16-token greedy continuation (tests/golden/<name>/expected.safetensors),
 *     decoded one token at a time — each step's single token lands on device 0, the others idle;
 *   - over 8 devices a second run plans every MoE call on the host (exact sizes, as prompts over
 *     FAST_EP_HOST_FREE_MAX assignments do): the same bounds;
 *   - every decode step over N > 1 devices planned on the devices waits for the host only at its end (the logits): no host
 *     synchronisation between its first queued operation and its last (sim_counters.h);
 *   - after each MoE call, no token's kept assignments reached more than M devices
 *     (FastEpStats.max_devices), and no token's hidden state was dispatched with more than
 *     M × hidden × 4 bytes, nor its partials combined with more (dispatch once per device).
 * The chunk is 7 tokens, so prompts span chunks and the shares are uneven (7 = 4 + 3 = 2 + 2 + 2 + 1 =
 * 1 + … + 1 + 0: on 8 devices one is always idle).
 */
#include "check.h"
#include "fast_test.h"
#include "golden.h"
#include "error.h"
#include "fast.h"
#include "fast_ep.h"
#include "model.h"
#include "safetensors.h"

#if __has_include("sim_counters.h")
#include "sim_counters.h"
#define HAVE_SIM_COUNTERS 1
#else
#define HAVE_SIM_COUNTERS 0
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_GREEDY 16
#define CHUNK    7

static bool host_plan_only; /* the run plans every MoE call on the host (FastEp.host_free_max = 0) */

/* The prompt ids and the reference's greedy continuation of fixture name; returns the prompt length. */
static int golden_ids(const char *name, int *ids, int cap)
{
    Golden g;
    golden_load(&g, name);
    assert_true(g.T + N_GREEDY <= cap && g.n_greedy >= N_GREEDY);
    memcpy(ids, g.ids, sizeof(int) * (size_t)(g.T + N_GREEDY));
    golden_close(&g);
    return g.T;
}

/* The last MoE call's per-token bounds: at most M devices, M rows of D float32 out and back. */
static void check_bounds(FastEp *ep, int M, int D)
{
    if (ep->last_host_free && fast_ep_host_plan(ep)) fail_msg("%s", ds_last_error()); /* its statistics */
    assert_true(ep->stats.max_devices <= M);
    assert_true(ep->stats.max_token_dispatch_bytes <= (long long)M * D * 4);
    assert_true(ep->stats.max_token_combine_bytes <= (long long)M * D * 4);
}

/* Fast model logits at every position of ids[0..T) with ep_devices = N; checks the greedy continuation. */
static float *fast_logits(const char *name, int N, const int *ids, int T, int V)
{
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    const FastOptions opt = { .bf16 = false, .chunk = CHUNK, .ep_devices = N };
    FastModel m;
    if (fast_model_open(&m, dir, &opt)) fail_msg("%s", ds_last_error());
    assert_true((m.ep != NULL) == (N > 1));
    if (m.ep && host_plan_only) m.ep->ep.host_free_max = 0;
    const int M = fast_ep_device_limit(m.cfg, N);
    float *got = malloc(sizeof(float) * (size_t)T * V);
    poison(got, (size_t)T * V);
    if (fast_model_forward(&m, ids, T, got, true)) fail_msg("%s", ds_last_error());
    if (m.ep) check_bounds(&m.ep->ep, M, m.cfg->hidden_size);
    int next;
    if (fast_model_argmax(&m, &next)) fail_msg("%s", ds_last_error());
    float *step = malloc(sizeof(float) * (size_t)V);
    for (int i = 0; i < N_GREEDY; i++) {
        if (next != ids[T + i])
            fail_msg("%s N=%d: greedy token %d is %d, the reference's %d", name, N, i, next, ids[T + i]);
#if HAVE_SIM_COUNTERS
        SimStepCounters sc;
        sim_counters_start();
#endif
        if (fast_model_forward(&m, &next, 1, step, false)) fail_msg("%s", ds_last_error());
#if HAVE_SIM_COUNTERS
        sim_counters_stop(&sc);
        if (i == 0)
            printf("%s N=%d%s: decode step host syncs %llu (%llu inside)\n", name, N,
                   host_plan_only ? " with the host's plan" : "", sc.host_syncs, sc.host_syncs_inside);
        if (N > 1 && !host_plan_only) assert_int_equal(sc.host_syncs_inside, 0); /* MoE layers: no host wait */
#endif
        if (fast_model_argmax(&m, &next)) fail_msg("%s", ds_last_error());
        if (m.ep) check_bounds(&m.ep->ep, M, m.cfg->hidden_size);
    }
    free(step);
    fast_model_close(&m);
    return got;
}

/* Fixture name over 1, 2, 4 and 8 devices (those dividing its experts) against the reference and the
 * single-device fast model. */
static void fixture_over_devices(void **state)
{
    const char *name = *state;
    need_devices(8);
    int ids[256];
    const int T = golden_ids(name, ids, 256);
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    Model ref;
    if (model_open(&ref, dir, NULL)) fail_msg("%s", ds_last_error());
    const int V = ref.cfg->vocab_size;
    float *want = malloc(sizeof(float) * (size_t)T * V);
    assert_int_equal(model_forward(&ref, ids, T, want, true), 0);
    float *one = NULL;
    static const int devices[] = { 1, 2, 4, 8 };
    for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
        const int N = devices[i];
        if (ref.cfg->n_routed_experts % N != 0) {
            printf("%s N=%d: skipped, %d experts\n", name, N, ref.cfg->n_routed_experts);
            continue;
        }
        float *got = fast_logits(name, N, ids, T, V);
        const CheckStats vs_ref = check_stats(got, want, (size_t)T * V);
        const CheckStats vs_one = one ? check_stats(got, one, (size_t)T * V) : (CheckStats){ 0, 0, 0, 0 };
        printf("%s N=%d M=%d: logits max-abs %.3g vs reference, %.3g vs one device (relative L2 %.9g); 16 greedy "
               "tokens equal\n",
               name, N, fast_ep_device_limit(ref.cfg, N), vs_ref.max_abs, vs_one.max_abs, vs_one.rel_l2);
        check_close(name, got, want, (size_t)T * V, 1e-4, -1);
        if (one) /* GEMMs of other row counts: other sum orders */
            check_close("vs one device", got, one, (size_t)T * V, 1e-5, -1);
        if (N == 8) { /* the host's exact-size plan, as prompts over the threshold take it, on the same run */
            host_plan_only = true;
            float *host = fast_logits(name, N, ids, T, V);
            host_plan_only = false;
            const CheckStats h = check_stats(host, want, (size_t)T * V);
            printf("%s N=8 with the host's plan: logits max-abs %.3g vs reference\n", name, h.max_abs);
            check_close(name, host, want, (size_t)T * V, 1e-4, -1);
            check_close("host plan vs one device", host, one, (size_t)T * V, 1e-5, -1);
            free(host);
        }
        if (one)
            free(got);
        else
            one = got;
    }
    free(one);
    free(want);
    model_close(&ref);
}

int main(void)
{
    setenv("SIM_DEVICE_COUNT", "8", 1); /* before the first CUDA call */
    const struct CMUnitTest tests[] = {
        { "v2 over 1, 2, 4, 8 devices", fixture_over_devices, NULL, NULL, "v2" },
        { "longctx over 1, 2, 4, 8 devices", fixture_over_devices, NULL, NULL, "longctx" },
        { "lite over 1, 2, 4, 8 devices", fixture_over_devices, NULL, NULL, "lite" },
        { "norope over 1, 2, 4, 8 devices", fixture_over_devices, NULL, NULL, "norope" },
    };
    return cmocka_run_group_tests_name("fast ep model", tests, NULL, NULL);
}
