/**
 * \file test_fast_graph.c
 * \brief Decode steps replayed from CUDA graphs (FastOptions.graph) against eager decode and the reference,
 *        on every golden fixture in float32 mode.
 *
 * Two models on one checkpoint, one with graphs off (every launch issued by
 * the host) and one with graphs on (each decode step of B sequences captured
 * once, then replayed), are fed the same prompts and decoded greedily for
 * N_STEPS tokens: the graph's logits must be within 1e-4 max-abs of the
 * eager model's and of the reference's teacher-forced logits at the same
 * positions (1e-4: the tolerance the fast model meets against the reference
 * in tests/test_fast_model.c; graph and eager run the same kernels on the same
 * data, so on the simulated device they agree bit for bit, printed), and the
 * greedy tokens must be the reference's continuation. One sequence (B = 1),
 * then two sequences decoded together (B = 2: the golden prompt and a shorter
 * prefix of it, at different positions), and on v2 a batch whose MoE has
 * more rows than FAST_MOE_GROUPED_MAX_ROWS (86 sequences, 2 steps: the
 * capture and a replay). fast_model_decode_greedy (tokens and positions kept on the device, one
 * host wait per call) must give the reference's continuation too, graphs on and off.
 *
 * That the capture recorded no host synchronisation is checked by the capture
 * itself: on the simulated device, as on a GPU, a synchronisation, a
 * synchronous copy or an allocation during capture is refused and invalidates
 * it, so a decode step that captured and replayed (FastModel.graphs[B − 1] set)
 * did none; host_sync_invalidates_capture shows the control, a stream
 * synchronisation refused under capture, and both MoE paths (the decode's
 * grouped kernel and the prompts' grouped GEMM) recording cleanly. Outputs are poisoned (NaN) before every step. On the simulated
 * device every launch, replayed ones included, runs under race check.
 */
#include "check.h"
#include "fast_test.h"
#include "golden.h"
#include "error.h"
#include "fast.h"
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

#define N_STEPS 8

/* The cache holds 128 positions per slot (the fixtures' prompt + N_STEPS fit), so large batches stay small. */
static void open_fast(FastModel *m, const char *name, int graph, int max_batch)
{
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    const FastOptions opt = { .chunk = 7, .graph = graph, .max_batch = max_batch, .max_context = 128 };
    if (fast_model_open(m, dir, &opt)) fail_msg("%s", ds_last_error());
}

/*
 * Sequence i of B has prompt ids[0..len[i]) and continues with ids[len[i]..); after the prompts,
 * `steps` decode steps of all B together, in both models, checked against each other and want
 * (the reference's logits over ids, all positions).
 */
static void decode_together(const char *name, const Golden *g, const float *want, const int *len, int B, int steps)
{
    FastModel eager, graph;
    open_fast(&eager, name, -1, B);
    open_fast(&graph, name, 0, B);
    const int V = g->V;
    float *ge = malloc(sizeof(float) * (size_t)B * V), *gg = malloc(sizeof(float) * (size_t)B * V);
    int *slots = malloc(sizeof(int) * (size_t)B), *tokens = malloc(sizeof(int) * (size_t)B);
    int *pos = malloc(sizeof(int) * (size_t)B);
    for (int i = 0; i < B; i++) {
        slots[i] = B - 1 - i; /* rows and slots in opposite orders */
        if (fast_model_prefill(&eager, slots[i], g->ids, len[i], NULL, false) ||
            fast_model_prefill(&graph, slots[i], g->ids, len[i], NULL, false))
            fail_msg("%s", ds_last_error());
        pos[i] = len[i];
    }
    double worst_eager = 0, worst_ref = 0;
    for (int step = 0; step < steps; step++) {
        for (int i = 0; i < B; i++) tokens[i] = g->ids[pos[i]]; /* teacher-forced: the reference's tokens */
        poison(ge, (size_t)B * V);
        poison(gg, (size_t)B * V);
        if (fast_model_decode(&eager, slots, tokens, B, ge) || fast_model_decode(&graph, slots, tokens, B, gg))
            fail_msg("%s", ds_last_error());
        assert_non_null(graph.graphs[B - 1]); /* captured (no host sync inside) and replayed */
        assert_null(eager.graphs);            /* graphs off: every launch eager */
        check_close("graph vs eager", gg, ge, (size_t)B * V, 1e-4, -1);
        const CheckStats se = check_stats(gg, ge, (size_t)B * V);
        worst_eager = se.max_abs > worst_eager ? se.max_abs : worst_eager;
        for (int i = 0; i < B; i++) {
            const float *ref = want + (size_t)pos[i] * V;
            check_close("graph vs reference", gg + (size_t)i * V, ref, (size_t)V, 1e-4, -1);
            const CheckStats sr = check_stats(gg + (size_t)i * V, ref, (size_t)V);
            worst_ref = sr.max_abs > worst_ref ? sr.max_abs : worst_ref;
            if (pos[i] >= g->T - 1 && pos[i] + 1 < g->T + N_STEPS) /* past the prompt: the reference's greedy token */
                assert_int_equal(golden_argmax(gg + (size_t)i * V, V), g->ids[pos[i] + 1]);
            pos[i]++;
        }
    }
    printf("%s, %d sequence%s, %d steps: graph vs eager max-abs %.3g, vs reference %.3g\n", name, B, B == 1 ? "" : "s",
           steps, worst_eager, worst_ref);
    free(ge);
    free(gg);
    free(slots);
    free(tokens);
    free(pos);
    fast_model_close(&eager);
    fast_model_close(&graph);
}

static void graph_decode_matches(void **state)
{
    need_device();
    const char *name = *state;
    Golden g;
    golden_load(&g, name);
    const int n = g.T + N_STEPS;
    float *want = golden_ref_logits(name, g.ids, n, g.V);
    const int one[1] = { g.T };
    decode_together(name, &g, want, one, 1, N_STEPS);
    const int two[2] = { g.T, g.T / 2 }; /* a shorter prefix: another position */
    decode_together(name, &g, want, two, 2, N_STEPS);
    free(want);
    golden_close(&g);
}

/*
 * A batch whose MoE has more than FAST_MOE_GROUPED_MAX_ROWS (token, slot) rows, the size above which
 * a prompt chunk would take the per-expert GEMMs and their host round trip: a decode step still
 * runs the grouped kernel, so it is captured too. B sequences, prefixes of the golden prompt of
 * 1, 2 and 3 tokens in turn (short, because every one is a prefill under race check).
 */
static void large_batch_graph_decode_matches(void **state)
{
    need_device();
    const char *name = *state;
    Golden g;
    golden_load(&g, name);
    float *want = golden_ref_logits(name, g.ids, g.T + 2, g.V);
    char dir[256], path[300];
    golden_dir(dir, sizeof dir, name);
    snprintf(path, sizeof path, "%s/config.json", dir);
    ModelConfig cfg;
    if (config_load(path, &cfg)) fail_msg("%s", ds_last_error());
    const int B = FAST_MOE_GROUPED_MAX_ROWS / cfg.num_experts_per_tok + 1;
    int *len = malloc(sizeof(int) * (size_t)B);
    for (int i = 0; i < B; i++) len[i] = 1 + i % 3;
    decode_together(name, &g, want, len, B, 2); /* capture, then one replay */
    free(len);
    free(want);
    golden_close(&g);
}

/*
 * fast_model_decode_greedy: the golden prompt in two slots (rows in the opposite order), then N_STEPS
 * greedy steps whose tokens and positions stay on the device; both rows must give the reference's
 * continuation, with graphs off and on (the step captured once, replayed). On the simulated device its
 * counters show that a call waits for the device twice (before staging, after the last step) however
 * many steps it runs: none inside a step.
 */
static void greedy_on_device(void **state)
{
    need_device();
    const char *name = *state;
    Golden g;
    golden_load(&g, name);
    for (int graph = -1; graph <= 0; graph++) {
        FastModel m;
        open_fast(&m, name, graph, 2);
        const int slots[2] = { 1, 0 }, start[2] = { g.ids[g.T - 1], g.ids[g.T - 1] };
        int out[2 * N_STEPS];
        for (int i = 0; i < 2; i++)
            if (fast_model_prefill(&m, slots[i], g.ids, g.T - 1, NULL, false)) fail_msg("%s", ds_last_error());
        for (int i = 0; i < 2 * N_STEPS; i++) out[i] = -1;
        if (fast_model_decode_greedy(&m, slots, start, 2, N_STEPS, out)) fail_msg("%s", ds_last_error());
        for (int st = 0; st < N_STEPS; st++)
            for (int i = 0; i < 2; i++) assert_int_equal(out[st * 2 + i], g.ids[g.T + st]);
        assert_int_equal(m.pos[0], g.T - 1 + N_STEPS);
        assert_int_equal(m.pos[1], g.T - 1 + N_STEPS);
        if (graph == 0) assert_non_null(m.greedy_graphs[1]);
#if HAVE_SIM_COUNTERS
        SimStepCounters one, three;
        sim_counters_start();
        const int rc1 = fast_model_decode_greedy(&m, slots, out, 2, 1, out);
        sim_counters_stop(&one);
        sim_counters_start();
        const int rc3 = fast_model_decode_greedy(&m, slots, out, 2, 3, out);
        sim_counters_stop(&three);
        if (rc1 || rc3) fail_msg("%s", ds_last_error());
        printf("%s, graphs %s: host syncs of a greedy call of 1 step %llu, of 3 steps %llu\n", name,
               graph ? "off" : "on", one.host_syncs, three.host_syncs);
        assert_int_equal(one.host_syncs, 2);
        assert_int_equal(three.host_syncs, 2);
#endif
        const int none[2] = { 0, 0 };
        assert_int_equal(fast_model_decode_greedy(&m, slots, none, 2, 0, out), -1);
        printf("refused: %s\n", ds_last_error());
        fast_model_close(&m);
    }
    golden_close(&g);
}

/*
 * The control: under capture, a stream synchronisation (what a MoE layer that copied its expert
 * offsets to the host would need) is refused and invalidates the capture; the grouped kernel the
 * decode step uses and the grouped GEMM of prompt chunks both record cleanly.
 */
static void host_sync_invalidates_capture(void **state)
{
    (void)state;
    need_device();
    FastModel m;
    open_fast(&m, "lite", 0, 1);
    const int ids[3] = { 1, 2, 3 };
    if (fast_model_prefill(&m, 0, ids, 3, NULL, false)) fail_msg("%s", ds_last_error());
    const int l = m.cfg->first_k_dense_replace; /* the first MoE layer */
    assert_true(m.layers[l].is_moe);
    cudaGraph_t g = NULL;
    setenv("SIM_QUIET", "1", 1); /* the refusal below is expected */
    assert_int_equal(cudaStreamBeginCapture(m.ctx.stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_not_equal(cudaStreamSynchronize(m.ctx.stream), cudaSuccess);
    assert_int_equal(cudaStreamEndCapture(m.ctx.stream, &g), cudaErrorStreamCaptureInvalidated);
    assert_null(g);
    (void)cudaGetLastError();
    unsetenv("SIM_QUIET");
    for (int how = FAST_MOE_GROUPED; how <= FAST_MOE_GROUPED_GEMM; how++) {
        assert_int_equal(cudaStreamBeginCapture(m.ctx.stream, cudaStreamCaptureModeGlobal), cudaSuccess);
        assert_int_equal(fast_moe_forward_experts(&m.ctx, m.b, m.a, &m.layers[l].moe, m.cfg, 1, &m.scratch, how, NULL),
                         0);
        assert_int_equal(cudaStreamEndCapture(m.ctx.stream, &g), cudaSuccess);
        assert_non_null(g);
        assert_int_equal(cudaGraphDestroy(g), cudaSuccess);
    }
    fast_model_close(&m);
}

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0); /* replayed kernels under three thread orders too */
    const struct CMUnitTest tests[] = {
        { "lite: graph decode", graph_decode_matches, NULL, NULL, "lite" },
        { "v2: graph decode", graph_decode_matches, NULL, NULL, "v2" },
        { "norope: graph decode", graph_decode_matches, NULL, NULL, "norope" },
        { "longctx: graph decode", graph_decode_matches, NULL, NULL, "longctx" },
        { "lite: greedy decode on the device", greedy_on_device, NULL, NULL, "lite" },
        { "v2: greedy decode on the device", greedy_on_device, NULL, NULL, "v2" },
        { "v2: graph decode, B·K > FAST_MOE_GROUPED_MAX_ROWS", large_batch_graph_decode_matches, NULL, NULL, "v2" },
        cmocka_unit_test(host_sync_invalidates_capture),
    };
    return cmocka_run_group_tests_name("fast graph", tests, NULL, NULL);
}
