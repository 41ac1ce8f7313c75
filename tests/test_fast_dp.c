/**
 * \file test_fast_dp.c
 * \brief Attention data-parallel over N devices with the MoE layers expert-parallel (fast/dp_model.c)
 *        against independent reference runs, one per device's sequence.
 *
 * Fixtures tests/golden/v2 (n_group 4, topk_group 2, K 3) and tests/golden/longctx (n_group 2,
 * topk_group 1, K 2; an 80-token prompt), both with 8 routed experts, over N = 2, 4 and 8 simulated
 * devices. Device d's sequence is the fixture's prompt cut to T_p − d·step tokens (step 1 for v2,
 * 9 for longctx), every id shifted by 31·d modulo the vocabulary, so every device holds a different
 * sequence of a different length. One call feeds every device its whole prompt (chunks of 7 tokens:
 * the shorter prompts finish first and their devices idle in the later rounds), then 8 decode steps
 * feed each device the reference's greedy token; in step 3 the last device and in step 5 device 0
 * are idle (T_d = 0). Every output is poisoned (NaN) before each call. Checks, float32 mode:
 *   - each device's logits (every prompt position, then each decode step) within 1e-4 max-abs of
 *     ref/model.h's model_forward on that device's sequence alone (the fixtures' tolerance: the fast
 *     model's GEMMs and the per-device grouping of the expert sums round differently), and its greedy
 *     token equal to the reference's;
 *   - after every call no token reached more than M devices (fast_ep_device_limit());
 *   - a decode step waits for the host only at its end (the logits): no host synchronisation between
 *     its first queued operation and its last (sim_counters.h).
 * Error cases, one ds_error line each and nothing returned: 3 devices for 8 experts; 4 devices when the
 * simulator offers 2 (a child process of this suite with SIM_DEVICE_COUNT=2, since the simulator reads
 * the count once); a token outside the vocabulary on device 1 (the line names the device). Every simulated launch runs under the race check (SIM_RACECHECK=1).
 */
#include "check.h"
#include "error.h"
#include "fast_dp.h"
#include "fast_test.h"
#include "golden.h"
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

#define CHUNK 7
#define STEPS 8
#define SHIFT 31

static const char *self_path;

/* The fixture's prompt ids into ids (at most cap); returns their count. */
static int prompt_ids(const char *name, int *ids, int cap)
{
    Golden g;
    golden_load(&g, name);
    assert_true(g.T <= cap);
    memcpy(ids, g.ids, sizeof(int) * (size_t)g.T);
    golden_close(&g);
    return g.T;
}

static bool idle(int step, int d, int N)
{
    return (step == 3 && d == N - 1) || (step == 5 && d == 0);
}

/* One device's sequence and the reference's logits for it. */
typedef struct {
    int ids[256];          /* prompt, then the greedy tokens fed in the decode steps */
    int T;                 /* prompt length */
    float *prompt_logits;  /* [T, V] */
    float *step_logits;    /* [STEPS, V]: after the token fed in each active step */
    int step_token[STEPS]; /* the token fed in each step (−1: idle) */
} Sequence;

/* The reference on device d's sequence alone: the prompt, then the greedy token of each active step. */
static void reference(Model *ref, Sequence *s, int d, int N)
{
    const int V = ref->cfg->vocab_size;
    model_reset(ref);
    s->prompt_logits = malloc(sizeof(float) * (size_t)s->T * V);
    s->step_logits = malloc(sizeof(float) * (size_t)STEPS * V);
    assert_int_equal(model_forward(ref, s->ids, s->T, s->prompt_logits, true), 0);
    const float *last = s->prompt_logits + (size_t)(s->T - 1) * V;
    for (int k = 0; k < STEPS; k++) {
        s->step_token[k] = -1;
        if (idle(k, d, N)) continue;
        s->step_token[k] = golden_argmax(last, V);
        assert_int_equal(model_forward(ref, &s->step_token[k], 1, s->step_logits + (size_t)k * V, false), 0);
        last = s->step_logits + (size_t)k * V;
    }
}

/* Fixture name over N devices, each with its own sequence (cut by cut tokens per device). */
static void dp_fixture(const char *name, int N, int cut)
{
    need_devices(N);
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    int prompt[256];
    const int Tp = prompt_ids(name, prompt, 256);
    Model ref;
    if (model_open(&ref, dir, NULL)) fail_msg("%s", ds_last_error());
    const int V = ref.cfg->vocab_size;
    Sequence *seq = calloc((size_t)N, sizeof *seq);
    for (int d = 0; d < N; d++) {
        seq[d].T = Tp - d * cut;
        assert_true(seq[d].T >= 1);
        for (int t = 0; t < seq[d].T; t++) seq[d].ids[t] = (prompt[t] + SHIFT * d) % V;
        reference(&ref, &seq[d], d, N);
    }

    FastDpModel *dp;
    const FastOptions opt = { .bf16 = false, .chunk = CHUNK };
    if (fast_dp_model_open(&dp, dir, N, &opt)) fail_msg("%s", ds_last_error());
    const int M = fast_ep_device_limit(ref.cfg, N);
    const int *tokens[FAST_EP_MAX_DEVICES];
    float *got[FAST_EP_MAX_DEVICES];
    int T[FAST_EP_MAX_DEVICES];
    double worst = 0;

    /* every prompt at once, logits at every position */
    for (int d = 0; d < N; d++) {
        tokens[d] = seq[d].ids;
        T[d] = seq[d].T;
        got[d] = malloc(sizeof(float) * (size_t)seq[d].T * V);
        poison(got[d], (size_t)seq[d].T * V);
    }
    if (fast_dp_model_forward(dp, tokens, T, got, true)) fail_msg("%s", ds_last_error());
    if (dp->ep.last_host_free && fast_ep_host_plan(&dp->ep)) fail_msg("%s", ds_last_error()); /* its statistics */
    assert_true(dp->ep.stats.max_devices <= M);
    for (int d = 0; d < N; d++) {
        const size_t n = (size_t)seq[d].T * V;
        const CheckStats cs = check_stats(got[d], seq[d].prompt_logits, n);
        worst = cs.max_abs > worst ? cs.max_abs : worst;
        check_close(name, got[d], seq[d].prompt_logits, n, 1e-4, -1);
        assert_int_equal(golden_argmax(got[d] + n - V, V), golden_argmax(seq[d].prompt_logits + n - V, V));
        free(got[d]);
    }

    /* decode steps: one token per active device, the reference's greedy one */
    for (int d = 0; d < N; d++) got[d] = malloc(sizeof(float) * (size_t)V);
    for (int k = 0; k < STEPS; k++) {
        for (int d = 0; d < N; d++) {
            tokens[d] = &seq[d].step_token[k];
            T[d] = idle(k, d, N) ? 0 : 1;
            poison(got[d], (size_t)V);
        }
#if HAVE_SIM_COUNTERS
        SimStepCounters sc;
        sim_counters_start();
#endif
        if (fast_dp_model_forward(dp, tokens, T, got, false)) fail_msg("%s", ds_last_error());
#if HAVE_SIM_COUNTERS
        sim_counters_stop(&sc);
        if (k == 0)
            printf("%s N=%d: decode step host syncs %llu (%llu inside)\n", name, N, sc.host_syncs,
                   sc.host_syncs_inside);
        assert_int_equal(sc.host_syncs_inside, 0); /* no MoE layer waits for the host */
#endif
        if (dp->ep.last_host_free && fast_ep_host_plan(&dp->ep)) fail_msg("%s", ds_last_error()); /* its statistics */
        assert_true(dp->ep.stats.max_devices <= M);
        for (int d = 0; d < N; d++) {
            if (T[d] == 0) { /* an idle device's output is left alone */
                assert_true(got[d][0] != got[d][0]);
                continue;
            }
            const float *want = seq[d].step_logits + (size_t)k * V;
            const CheckStats cs = check_stats(got[d], want, (size_t)V);
            worst = cs.max_abs > worst ? cs.max_abs : worst;
            check_close(name, got[d], want, (size_t)V, 1e-4, -1);
            assert_int_equal(golden_argmax(got[d], V), golden_argmax(want, V));
        }
    }
    printf("%s N=%d M=%d: prompts of %d..%d tokens and %d decode steps, logits max-abs %.3g vs the reference "
           "per device; greedy tokens equal\n",
           name, N, M, seq[N - 1].T, seq[0].T, STEPS, worst);
    for (int d = 0; d < N; d++) {
        free(got[d]);
        free(seq[d].prompt_logits);
        free(seq[d].step_logits);
    }
    free(seq);
    fast_dp_model_close(dp);
    model_close(&ref);
}

static void v2_two(void **state)
{
    (void)state;
    dp_fixture("v2", 2, 1);
}
static void v2_four(void **state)
{
    (void)state;
    dp_fixture("v2", 4, 1);
}
static void v2_eight(void **state)
{
    (void)state;
    dp_fixture("v2", 8, 1);
}
static void longctx_two(void **state)
{
    (void)state;
    dp_fixture("longctx", 2, 9);
}
static void longctx_four(void **state)
{
    (void)state;
    dp_fixture("longctx", 4, 9);
}
static void longctx_eight(void **state)
{
    (void)state;
    dp_fixture("longctx", 8, 9);
}

/* 3 devices cannot share 8 experts: −1, one line naming the function and the counts, nothing returned. */
static void devices_not_dividing_experts(void **state)
{
    (void)state;
    need_devices(3);
    FastDpModel *dp = (FastDpModel *)&dp;
    assert_int_equal(fast_dp_model_open(&dp, GOLDEN_DIR "v2", 3, NULL), -1);
    printf("error line: %s\n", ds_last_error());
    assert_null(dp);
    assert_non_null(strstr(ds_last_error(), "fast_dp_model_open: 3 devices cannot share the 8 routed experts"));
    assert_null(strchr(ds_last_error(), '\n'));
}

/* A token outside the vocabulary on device 1: −1, one line naming the device and the token. */
static void bad_token_names_device(void **state)
{
    (void)state;
    need_devices(2);
    FastDpModel *dp;
    const FastOptions opt = { .bf16 = false, .chunk = CHUNK };
    if (fast_dp_model_open(&dp, GOLDEN_DIR "v2", 2, &opt)) fail_msg("%s", ds_last_error());
    static const int good[] = { 1, 2, 3 }, bad[] = { 4, 512 };
    const int *tokens[] = { good, bad };
    const int T[] = { 3, 2 };
    float *const logits[] = { NULL, NULL };
    assert_int_equal(fast_dp_model_forward(dp, tokens, T, logits, false), -1);
    printf("error line: %s\n", ds_last_error());
    assert_non_null(strstr(ds_last_error(), "fast_dp_model_forward: device 1: token id 512"));
    assert_null(strchr(ds_last_error(), '\n'));
    fast_dp_model_close(dp);
}

/* In a child with SIM_DEVICE_COUNT=2: 4 devices asked for. Exits 0 when refused with one line, printed. */
static int open_four_of_two(void)
{
    FastDpModel *dp = (FastDpModel *)&dp;
    const int rc = fast_dp_model_open(&dp, GOLDEN_DIR "v2", 4, NULL);
    printf("%s\n", ds_last_error());
    return rc == -1 && dp == NULL ? 0 : 1;
}

static void more_devices_than_present(void **state)
{
    (void)state;
    char cmd[512], line[512] = "";
    snprintf(cmd, sizeof cmd, "SIM_DEVICE_COUNT=2 %s --open-four-of-two", self_path);
    FILE *child = popen(cmd, "r");
    assert_non_null(child);
    assert_non_null(fgets(line, sizeof line, child));
    assert_int_equal(pclose(child), 0);
    printf("error line: %s", line);
    assert_non_null(strstr(line, "fast_dp_model_open: 4 devices asked for, 2 present"));
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    if (argc > 1 && strcmp(argv[1], "--open-four-of-two") == 0) return open_four_of_two();
    setenv("SIM_DEVICE_COUNT", "8", 1); /* before the first CUDA call */
    setenv("SIM_RACECHECK", "1", 0);    /* every simulated launch under three thread orders */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v2_two),
        cmocka_unit_test(v2_four),
        cmocka_unit_test(v2_eight),
        cmocka_unit_test(longctx_two),
        cmocka_unit_test(longctx_four),
        cmocka_unit_test(longctx_eight),
        cmocka_unit_test(devices_not_dividing_experts),
        cmocka_unit_test(more_devices_than_present),
        cmocka_unit_test(bad_token_names_device),
    };
    return cmocka_run_group_tests_name("fast dp", tests, NULL, NULL);
}
