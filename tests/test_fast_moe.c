/**
 * \file test_fast_moe.c
 * \brief The device MoE against ref/moe.c's moe_forward, in float32 and bf16 mode: fast_moe_forward_experts
 *        both ways (the grouped kernel FAST_MOE_FFN that reads the expert offsets on the device, and one
 *        cuBLAS GEMM pair per expert), moe_experts_v1 (the grouped kernel's reference loops), v2 and v3
 *        (16-byte loads at widths that are multiples of 8: the Lite and small-width shapes; element loads at
 *        the odd ones) and
 *        moe_forward_v1 (the whole FFN as reference loops on CUDA cores).
 *
 * The grouped path is FAST_MOE_ROUTE and FAST_MOE_FFN (version 5: two launches, the second in stages),
 * also with the fused residual-and-norm tail (against h0 + y and its RMSNorm on the host); its stage
 * counters must be zero after every call (the next call, or a graph replay, starts from them). Version 4
 * (moe_ffn_grouped_v4 and moe_combine_v4, with and without the tail) and fused version 3 of the grouped
 * experts run on the permutation version 4's gate wrote.
 *
 * Weights are random bf16 (as checkpoints store them), so both modes see the
 * same weights: float32 mode widens them on upload (relative L2 ≤ 1e-5), bf16
 * mode keeps them and rounds GEMM activations to bf16 (≤ 2e-2). The router
 * runs in float32 in both modes, so expert choices must equal the
 * reference's except where its margin (K-th vs (K+1)-th selection score, kept
 * vs best dropped group) is a near tie (< 1e-6): those tokens are skipped in
 * every comparison and counted.
 *
 * Shapes: DeepSeek-V2-Lite's widths (D 2048, expert width 1408, 2 shared,
 * K 6) with 8 experts instead of 64 — 64 experts at these widths are 1.1 GB of
 * bf16 weights (2.2 GB widened), too much for the simulated device in a unit
 * test — with 3 tokens and with 1 (a decode step); 64 experts are covered at
 * small width (D 64) with 40 tokens, so that some experts get several tokens
 * and some none; V2's group-limited routing (160 experts, 8 groups, 3 kept,
 * ×16); odd sizes with and without shared experts; 16 tokens (a batch-16 decode step) at a quarter of
 * Lite's widths; 48 tokens at D 64 (more rows than version 5 combines in one round). The wide shapes (Lite's
 * widths, the batch-16 step, the wide stage) compare the paths fast/ runs; the small and odd shapes also run
 * the older kernels (versions 1-3 and the grouped version 3).
 */
#include "check.h"
#include "fast_test.h"
#include "dtype.h"
#include "error.h"
#include "fast.h"
#include "moe.h"
#include "router.h"

#if __has_include("sim.h")
#include "sim.h"
#define HAVE_SIM_STATS 1
#else
#define HAVE_SIM_STATS 0
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEAR_TIE 1e-6f

static TestRng rng;

/* A random bf16 matrix with entries in [−a, a). */
static Mat random_mat(int rows, int cols, float a)
{
    const size_t n = (size_t)rows * cols;
    uint16_t *d = malloc(2 * n);
    for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(test_rng_uniform(&rng, -a, a));
    return (Mat){ d, DT_BF16, rows, cols };
}

static SwigluWeights random_swiglu(int I, int D)
{
    const float a = 1.0f / sqrtf((float)D), b = 1.0f / sqrtf((float)I);
    return (SwigluWeights){ random_mat(I, D, a), random_mat(I, D, a), random_mat(D, I, b) };
}

static void free_swiglu(SwigluWeights *w)
{
    free((void *)w->gate.data);
    free((void *)w->up.data);
    free((void *)w->down.data);
}

static ModelConfig moe_config(int D, int E, int I, int K, int Ns, TopkMethod m, int G, int Gk, bool norm, float scale)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.hidden_size = D;
    c.n_routed_experts = E;
    c.moe_intermediate_size = I;
    c.intermediate_size = I;
    c.num_experts_per_tok = K;
    c.n_shared_experts = Ns;
    c.topk_method = m;
    c.scoring_func = SCORING_SOFTMAX;
    c.n_group = G;
    c.topk_group = Gk;
    c.norm_topk_prob = norm;
    c.routed_scaling_factor = scale;
    c.rms_norm_eps = 1e-6f;
    return c;
}

/* Gap between the (r+1)-th and (r+2)-th largest of x[0..n). */
static float rank_gap(const float *x, int n, int r)
{
    float best[64];
    const int m = r + 2 < 64 ? r + 2 : 64;
    for (int i = 0; i < 64; i++) best[i] = -INFINITY;
    for (int i = 0; i < n; i++) { /* insertion into a sorted top-m list */
        float v = x[i];
        for (int j = 0; j < m; j++)
            if (v > best[j]) {
                const float t = best[j];
                best[j] = v;
                v = t;
            }
    }
    return r + 1 < n ? best[r] - best[r + 1] : INFINITY;
}

/* The reference's smallest routing decision margin for one token's affinities s (greedy or group-limited). */
static float ref_margin(const float *s, const ModelConfig *c)
{
    const int E = c->n_routed_experts, G = c->n_group, per = E / G;
    float sel[ROUTER_MAX_EXPERTS], margin = INFINITY;
    memcpy(sel, s, sizeof(float) * E);
    if (c->topk_method == TOPK_GROUP_LIMITED_GREEDY) {
        float gs[64] = { 0 };
        for (int g = 0; g < G; g++) {
            gs[g] = sel[g * per];
            for (int i = 1; i < per; i++) gs[g] = fmaxf(gs[g], sel[g * per + i]);
        }
        margin = rank_gap(gs, G, c->topk_group - 1);
        for (int g = 0; g < G; g++) {
            int rank = 0;
            for (int h = 0; h < G; h++) rank += gs[h] > gs[g] || (gs[h] == gs[g] && h < g);
            if (rank >= c->topk_group)
                for (int i = 0; i < per; i++) sel[g * per + i] = 0;
        }
    }
    return fminf(margin, rank_gap(sel, E, c->num_experts_per_tok - 1));
}

/* Compares rows of y (tokens that are not near ties) and reports. */
static void compare_rows(const char *what, const float *got, const float *want, const bool *tie, int T, int D,
                         double tol)
{
    float *g = malloc(sizeof(float) * (size_t)T * D), *w = malloc(sizeof(float) * (size_t)T * D);
    int n = 0;
    for (int t = 0; t < T; t++) {
        if (tie[t]) continue;
        memcpy(g + (size_t)n * D, got + (size_t)t * D, sizeof(float) * D);
        memcpy(w + (size_t)n * D, want + (size_t)t * D, sizeof(float) * D);
        n++;
    }
    const CheckStats st = check_stats(g, w, (size_t)n * D);
    printf("%s: rel-L2 %.3g, max-abs %.3g over %d tokens\n", what, st.rel_l2, st.max_abs, n);
    check_close(what, g, w, (size_t)n * D, -1, tol);
    free(g);
    free(w);
}

/* Version 4 after its gate, on the permutation the last grouped call left: moe_ffn_grouped_v4, then moe_combine_v4
 * into y, or with tail into tail->h and tail->a. Scratch outputs NaN-poisoned first. */
static void run_v4(FastContext *ctx, float *dy, const float *dx, const FastMoe *fw, const ModelConfig *c, int T,
                   FastScratch *s, const FastResidualNorm *tail)
{
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok, I = c->moe_intermediate_size;
    const int Is = fw->shared.down.data ? fw->shared.down.cols : 0;
    assert_int_equal(cudaMemset(s->expert_out, 0xff, sizeof(float) * (size_t)T * K * D), cudaSuccess);
    assert_int_equal(cudaMemset(s->shared_out, 0xff, sizeof(float) * (size_t)T * D), cudaSuccess);
    void *shared_hidden = (char *)s->hidden + (size_t)T * K * I * kernel_dtype_size(ctx->wtype);
    assert_int_equal(moe_ffn_grouped_v4(s->expert_out, s->shared_out, s->hidden, shared_hidden, dx, s->row_token,
                                        s->offsets, fw->gate_up.data, fw->down.data,
                                        Is ? fw->shared.gate_up.data : NULL, Is ? fw->shared.down.data : NULL,
                                        ctx->wtype, T, T * K, E, D, I, Is, ctx->stream),
                     cudaSuccess);
    assert_int_equal(moe_combine_v4(dy, s->expert_out, s->slot_row, s->weight, Is ? s->shared_out : NULL, T, K, D,
                                    tail ? tail->h : NULL, tail ? tail->a : NULL, tail ? tail->norm : NULL,
                                    tail ? tail->eps : 0.0f, s->logits, s->offsets + 2 * E + 2, ctx->stream),
                     cudaSuccess);
}

/* The grouped path's counters after the active-expert list (moe_ffn_v5's, moe_combine_v4's) are zero again. */
static void check_counters_zero(const FastScratch *s, int E, int T)
{
    const int n = T > MOE_V5_COUNTERS ? T : MOE_V5_COUNTERS;
    int *cnt = malloc(sizeof(int) * (size_t)n);
    assert_int_equal(cudaMemcpy(cnt, s->offsets + 2 * E + 2, sizeof(int) * (size_t)n, cudaMemcpyDeviceToHost),
                     cudaSuccess);
    for (int i = 0; i < n; i++) assert_int_equal(cnt[i], 0);
    free(cnt);
}

/*
 * The fused tail (FastResidualNorm) after the MoE: from a random residual h0 and norm weight w,
 * h = h0 + y and a = w ⊙ h / sqrt(mean(h²) + ε) against the same on the host from the reference y;
 * a NaN-poisoned, the layer's own y output not needed. Tokens that are near ties are skipped. With v4, version 4's
 * experts and combine (moe_ffn_grouped_v4, moe_combine_v4) on the permutation the last grouped call left.
 */
static void check_tail(FastContext *ctx, const float *dx, const FastMoe *fw, const ModelConfig *c, int T,
                       FastScratch *s, FastMoeExperts how, bool v4, const float *want, const bool *tie, double tol)
{
    const int D = c->hidden_size;
    const size_t n = (size_t)T * D;
    float *h0 = malloc(4 * n), *wn = malloc(4 * (size_t)D), *h_want = malloc(4 * n), *a_want = malloc(4 * n);
    float *got = malloc(4 * n);
    test_rng_fill(&rng, h0, n, -3.0f, 3.0f);
    test_rng_fill(&rng, wn, (size_t)D, 0.5f, 1.5f);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int d = 0; d < D; d++) {
            const float v = h0[(size_t)t * D + d] + want[(size_t)t * D + d];
            h_want[(size_t)t * D + d] = v;
            ss += (double)v * v;
        }
        const float inv = (float)(1.0 / sqrt(ss / D + c->rms_norm_eps));
        for (int d = 0; d < D; d++) a_want[(size_t)t * D + d] = wn[d] * h_want[(size_t)t * D + d] * inv;
    }
    float *dh, *da, *dw, *dy;
    assert_int_equal(cudaMalloc((void **)&dh, 4 * n), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&da, 4 * n), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dy, 4 * n), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dw, 4 * (size_t)D), cudaSuccess);
    assert_int_equal(cudaMemcpy(dh, h0, 4 * n, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dw, wn, 4 * (size_t)D, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemset(da, 0xff, 4 * n), cudaSuccess);
    const FastResidualNorm tail = { dh, da, dw, c->rms_norm_eps };
    if (v4)
        run_v4(ctx, dy, dx, fw, c, T, s, &tail);
    else if (fast_moe_forward_experts(ctx, dy, dx, fw, c, T, s, how, &tail))
        fail_msg("%s", ds_last_error());
    assert_int_equal(cudaStreamSynchronize(ctx->stream), cudaSuccess);
    char what[64];
    const char *path = v4 ? "grouped v4" : how == FAST_MOE_GROUPED ? "grouped" : "per-expert";
    assert_int_equal(cudaMemcpy(got, dh, 4 * n, cudaMemcpyDeviceToHost), cudaSuccess);
    snprintf(what, sizeof what, "tail h %s", path);
    compare_rows(what, got, h_want, tie, T, D, tol);
    assert_int_equal(cudaMemcpy(got, da, 4 * n, cudaMemcpyDeviceToHost), cudaSuccess);
    snprintf(what, sizeof what, "tail a %s", path);
    compare_rows(what, got, a_want, tie, T, D, tol);
    cudaFree(dh);
    cudaFree(da);
    cudaFree(dy);
    cudaFree(dw);
    free(h0);
    free(wn);
    free(h_want);
    free(a_want);
    free(got);
}

/* Fused version 3 of the grouped experts (two versions before FAST_MOE_FFN) on the permutation the grouped
 * run left, outputs NaN-poisoned, combined by moe_combine_v2. */
static void check_grouped_v3(FastContext *ctx, const float *dx, const FastMoe *fw, const ModelConfig *c, int T,
                             FastScratch *s, float *got, const float *want, const bool *tie, double tol)
{
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok, I = c->moe_intermediate_size;
    const int Is = fw->shared.down.data ? fw->shared.down.cols : 0;
    float *dy;
    assert_int_equal(cudaMalloc((void **)&dy, sizeof(float) * (size_t)T * D), cudaSuccess);
    assert_int_equal(cudaMemset(dy, 0xff, sizeof(float) * (size_t)T * D), cudaSuccess);
    assert_int_equal(cudaMemset(s->expert_out, 0xff, sizeof(float) * (size_t)T * K * D), cudaSuccess);
    assert_int_equal(cudaMemset(s->shared_out, 0xff, sizeof(float) * (size_t)T * D), cudaSuccess);
    void *shared_hidden = (char *)s->hidden + (size_t)T * K * I * kernel_dtype_size(ctx->wtype);
    assert_int_equal(moe_ffn_grouped_v3(s->expert_out, s->shared_out, s->hidden, shared_hidden, dx, s->row_token,
                                        s->offsets, fw->gate_up.data, fw->down.data,
                                        Is ? fw->shared.gate_up.data : NULL, Is ? fw->shared.down.data : NULL,
                                        ctx->wtype, T, T * K, E, D, I, Is, ctx->stream),
                     cudaSuccess);
    assert_int_equal(
        moe_combine_v2(dy, s->expert_out, s->slot_row, s->weight, Is ? s->shared_out : NULL, T, K, D, ctx->stream),
        cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(ctx->stream), cudaSuccess);
    assert_int_equal(cudaMemcpy(got, dy, sizeof(float) * (size_t)T * D, cudaMemcpyDeviceToHost), cudaSuccess);
    compare_rows(ctx->wtype == KERNEL_F32 ? "moe_ffn_grouped_v3 float32" : "moe_ffn_grouped_v3 bf16", got, want, tie, T,
                 D, tol);
    cudaFree(dy);
}

/* The fast paths (version 5 with and without its tail, version 4, the per-expert GEMM pair) against the reference;
 * with older_versions also the grouped version 3, the expert kernels of versions 1-3 and moe_forward_v1, which the
 * simulated device runs slowly at V2-Lite's widths and which the small and odd shapes hold to the reference. */
static void check_moe(const ModelConfig *c, int T, bool older_versions)
{
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok, I = c->moe_intermediate_size;
    const int Is = c->n_shared_experts * I;
    MoeWeights w = { .router = random_mat(E, D, 1.0f / sqrtf((float)D)), .bias = NULL };
    w.experts = malloc(sizeof *w.experts * E);
    for (int e = 0; e < E; e++) w.experts[e] = random_swiglu(I, D);
    if (Is) w.shared = random_swiglu(Is, D);
    float *x = malloc(sizeof(float) * (size_t)T * D), *want = malloc(sizeof(float) * (size_t)T * D);
    float *got = malloc(sizeof(float) * (size_t)T * D);
    FfnScratch fs;
    assert_int_equal(ffn_scratch_init(&fs, c, T), 0);
    bool *tie = calloc((size_t)T, 1);
    int ties = T;
    /* near ties are a property of the draw, not of the code: redraw (at most 20 times) until at most a
     * tenth of the tokens are near ties, so the comparison below covers most of them */
    for (int draw = 0; draw < 20 && ties * 10 > T; draw++) {
        test_rng_fill(&rng, x, (size_t)T * D, -2.0f, 2.0f);
        moe_forward(want, x, &w, c, T, &fs);
        ties = 0;
        for (int t = 0; t < T; t++) ties += tie[t] = ref_margin(fs.scores + (size_t)t * E, c) < NEAR_TIE;
    }
    printf("E=%d K=%d D=%d I=%d shared=%d T=%d: %d near-tie tokens skipped\n", E, K, D, I, Is, T, ties);
    assert_true(ties * 10 <= T);

    for (int mode = 0; mode < 2; mode++) {
        const bool bf16 = mode == 1;
        const double tol = bf16 ? 2e-2 : 1e-5;
        FastContext ctx;
        FastMoe fw;
        FastScratch s;
        memset(&fw, 0, sizeof fw);
        if (fast_context_init(&ctx, bf16, fast_stage_elems(c, T)) || fast_upload_moe(&ctx, &fw, &w, c) ||
            fast_scratch_init(&s, &ctx, c, T, 1))
            fail_msg("%s", ds_last_error());
        float *dx, *dy, *hidden;
        assert_int_equal(cudaMalloc((void **)&dx, sizeof(float) * (size_t)T * D), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&dy, sizeof(float) * (size_t)T * D), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&hidden, sizeof(float) * (size_t)T * (K * I + Is)), cudaSuccess);
        assert_int_equal(cudaMemcpy(dx, x, sizeof(float) * (size_t)T * D, cudaMemcpyHostToDevice), cudaSuccess);

        /* v2: the paths fast/ runs, the grouped kernel (small steps) and one GEMM pair per expert (prompts) */
        for (int how = FAST_MOE_GROUPED; how <= FAST_MOE_GROUPED_GEMM; how++) {
            assert_int_equal(cudaMemset(dy, 0xff, sizeof(float) * (size_t)T * D), cudaSuccess);
            assert_int_equal(cudaMemset(s.expert_out, 0xff, sizeof(float) * (size_t)T * K * D), cudaSuccess);
            assert_int_equal(cudaMemset(s.hidden, 0xff, kernel_dtype_size(ctx.wtype) * (size_t)T * K * I), cudaSuccess);
#if HAVE_SIM_STATS
            SimStats st0, st1;
            sim_stats(&st0);
#endif
            if (fast_moe_forward_experts(&ctx, dy, dx, &fw, c, T, &s, (FastMoeExperts)how, NULL))
                fail_msg("%s", ds_last_error());
            assert_int_equal(cudaStreamSynchronize(ctx.stream), cudaSuccess);
#if HAVE_SIM_STATS
            sim_stats(&st1);
            if (how == FAST_MOE_GROUPED)
                assert_int_equal(st1.launches - st0.launches, 2); /* route, then FAST_MOE_FFN */
#endif
            assert_int_equal(cudaMemcpy(got, dy, sizeof(float) * (size_t)T * D, cudaMemcpyDeviceToHost), cudaSuccess);
            int *idx = malloc(sizeof(int) * (size_t)T * K);
            assert_int_equal(cudaMemcpy(idx, s.idx, sizeof(int) * (size_t)T * K, cudaMemcpyDeviceToHost), cudaSuccess);
            for (int t = 0; t < T; t++)
                for (int k = 0; k < K && !tie[t]; k++) assert_int_equal(idx[t * K + k], fs.expert[t * K + k]);
            free(idx);
            char what[64];
            snprintf(what, sizeof what, "moe fast %s %s", how == FAST_MOE_GROUPED ? "grouped" : "per-expert",
                     bf16 ? "bf16" : "float32");
            compare_rows(what, got, want, tie, T, D, tol);
            check_tail(&ctx, dx, &fw, c, T, &s, (FastMoeExperts)how, false, want, tie, tol);
            if (how == FAST_MOE_GROUPED) {
                check_counters_zero(&s, E, T); /* two calls of FAST_MOE_FFN, each leaving them zero */
                if (older_versions) check_grouped_v3(&ctx, dx, &fw, c, T, &s, got, want, tie, tol);
                assert_int_equal(cudaMemset(dy, 0xff, sizeof(float) * (size_t)T * D), cudaSuccess);
                run_v4(&ctx, dy, dx, &fw, c, T, &s, NULL);
                assert_int_equal(cudaStreamSynchronize(ctx.stream), cudaSuccess);
                assert_int_equal(cudaMemcpy(got, dy, sizeof(float) * (size_t)T * D, cudaMemcpyDeviceToHost),
                                 cudaSuccess);
                compare_rows(bf16 ? "moe grouped v4 bf16" : "moe grouped v4 float32", got, want, tie, T, D, tol);
                check_tail(&ctx, dx, &fw, c, T, &s, (FastMoeExperts)how, true, want, tie, tol);
                check_counters_zero(&s, E, T);
            }
        }

        /* the grouped kernels themselves (v1 reference loops, v2, v3 with 16-byte loads when D and I are
         * multiples of 8, else element loads) on the permutation the last run left, NaN-poisoned outputs;
         * then v1, the reference loops, on the routing the v2 router just wrote */
        cudaError_t (*const grouped[3])(float *, void *, const void *, const int *, const void *, const void *,
                                        KernelDType, int, int, int, int,
                                        cudaStream_t) = { moe_experts_v1, moe_experts_v2, moe_experts_v3 };
        for (int v = 0; v < 3 && older_versions; v++) {
            assert_int_equal(cudaMemset(dy, 0xff, sizeof(float) * (size_t)T * D), cudaSuccess);
            assert_int_equal(cudaMemset(s.expert_out, 0xff, sizeof(float) * (size_t)T * K * D), cudaSuccess);
            assert_int_equal(cudaMemset(s.hidden, 0xff, kernel_dtype_size(ctx.wtype) * (size_t)T * K * I), cudaSuccess);
            assert_int_equal(grouped[v](s.expert_out, s.hidden, s.xp, s.offsets, fw.gate_up.data, fw.down.data,
                                        ctx.wtype, T * K, E, D, I, ctx.stream),
                             cudaSuccess);
            assert_int_equal(
                moe_combine_v2(dy, s.expert_out, s.slot_row, s.weight, Is ? s.shared_out : NULL, T, K, D, ctx.stream),
                cudaSuccess);
            assert_int_equal(cudaStreamSynchronize(ctx.stream), cudaSuccess);
            assert_int_equal(cudaMemcpy(got, dy, sizeof(float) * (size_t)T * D, cudaMemcpyDeviceToHost), cudaSuccess);
            char what[64];
            snprintf(what, sizeof what, "moe_experts_v%d %s%s", v + 1, bf16 ? "bf16" : "float32",
                     v == 2 ? (D % 8 == 0 && I % 8 == 0 ? " (16-byte loads)" : " (element loads)") : "");
            compare_rows(what, got, want, tie, T, D, tol);
        }

        if (older_versions) {
            assert_int_equal(cudaMemset(dy, 0xff, sizeof(float) * (size_t)T * D), cudaSuccess);
            assert_int_equal(moe_forward_v1(dy, dx, s.idx, s.weight, fw.gate_up.data, fw.down.data,
                                            Is ? fw.shared.gate_up.data : NULL, Is ? fw.shared.down.data : NULL,
                                            ctx.wtype, T, D, I, K, Is, hidden, ctx.stream),
                             cudaSuccess);
            assert_int_equal(cudaStreamSynchronize(ctx.stream), cudaSuccess);
            assert_int_equal(cudaMemcpy(got, dy, sizeof(float) * (size_t)T * D, cudaMemcpyDeviceToHost), cudaSuccess);
            compare_rows(bf16 ? "moe v1 bf16" : "moe v1 float32", got, want, tie, T, D, bf16 ? 2e-2 : 1e-5);
        }

        cudaFree(dx);
        cudaFree(dy);
        cudaFree(hidden);
        fast_scratch_free(&s);
        fast_free_moe(&fw);
        fast_context_free(&ctx);
    }
    ffn_scratch_free(&fs);
    for (int e = 0; e < E; e++) free_swiglu(&w.experts[e]);
    if (Is) free_swiglu(&w.shared);
    free(w.experts);
    free((void *)w.router.data);
    free(x);
    free(want);
    free(got);
    free(tie);
}

static void lite_widths(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(2048, 8, 1408, 6, 2, TOPK_GREEDY, 1, 1, false, 1.0f);
    check_moe(&c, 3, false);
}

static void lite_64_experts_small_width(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(64, 64, 32, 6, 2, TOPK_GREEDY, 1, 1, false, 1.0f);
    check_moe(&c, 40, true);
}

/* 48 tokens × 6 slots: more rows than a stage-1 block of version 5 combines at once (256), so two rounds; also
 * what a batch-48 decode step passes (decode steps take the grouped path at any batch). */
static void small_width_many_rows(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(64, 64, 32, 6, 2, TOPK_GREEDY, 1, 1, false, 1.0f);
    check_moe(&c, 48, true);
}

static void v2_group_limited(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(48, 160, 24, 6, 2, TOPK_GROUP_LIMITED_GREEDY, 8, 3, false, 16.0f);
    check_moe(&c, 17, true);
}

static void lite_widths_one_token(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(2048, 8, 1408, 6, 2, TOPK_GREEDY, 1, 1, false, 1.0f);
    check_moe(&c, 1, false);
}

/* A batch-16 decode step: V2-Lite's K, shared experts and 8 experts at a quarter of its widths (the full widths at 16
 * tokens cost the simulated device minutes); two passes of 8 rows for the shared experts' 16 tokens. */
static void sixteen_tokens(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(512, 8, 352, 6, 2, TOPK_GREEDY, 1, 1, false, 1.0f);
    check_moe(&c, 16, false);
}

static void odd_with_shared(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(45, 9, 23, 4, 1, TOPK_GREEDY, 1, 1, true, 2.5f);
    check_moe(&c, 2, true);
}

static void odd_no_shared(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(37, 12, 19, 3, 0, TOPK_GROUP_LIMITED_GREEDY, 4, 2, true, 1.0f);
    check_moe(&c, 5, true);
}

/* 8 tokens of width 1600 through expert width 1600: version 4 stages 8 rows of 6.4 kB per pass in both
 * launches, over 48 kB, so the launcher raises the kernels' shared memory limit first. */
static void wide_stage(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = moe_config(1600, 4, 1600, 2, 1, TOPK_GREEDY, 1, 1, false, 1.0f);
    check_moe(&c, 8, false);
}

/* Widths beyond what versions 4 and 5 stage in shared memory: fast_scratch_init refuses them with one line naming
 * the key, the launchers without launching; the limit itself is accepted. Version 5 also refuses more than
 * 32 experts per token (the router's limit). */
static void width_limits_refused(void **state)
{
    (void)state;
    need_device();
    FastContext ctx;
    if (fast_context_init(&ctx, false, 1)) fail_msg("%s", ds_last_error());
    const struct {
        int D, I, Ns;
        const char *key;
    } cases[] = { { MOE_V4_MAX_WIDTH + 1, 8, 1, "hidden_size" },
                  { 64, MOE_V4_MAX_WIDTH / 2 + 1, 2, "moe_intermediate_size" },
                  { MOE_V4_MAX_WIDTH, 8, 1, NULL } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const ModelConfig c = moe_config(cases[i].D, 4, cases[i].I, 2, cases[i].Ns, TOPK_GREEDY, 1, 1, false, 1.0f);
        FastScratch s;
        const int rc = fast_scratch_init(&s, &ctx, &c, 1, 1);
        printf("D %d, I %d × %d shared: %s\n", cases[i].D, cases[i].I, cases[i].Ns, rc ? ds_last_error() : "accepted");
        if (cases[i].key) {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(ds_last_error(), cases[i].key));
            assert_null(strchr(ds_last_error(), '\n'));
            assert_int_equal(moe_ffn_grouped_v4(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                                KERNEL_F32, 1, 2, 4, cases[i].D, cases[i].I, cases[i].I * cases[i].Ns,
                                                ctx.stream),
                             cudaErrorInvalidValue);
            int counters[MOE_V5_COUNTERS];
            const MoeFfn f = { .T = 1,
                               .K = 2,
                               .E = 4,
                               .D = cases[i].D,
                               .I = cases[i].I,
                               .I_s = cases[i].I * cases[i].Ns,
                               .counters = counters };
            assert_int_equal(moe_ffn_v5(f, ctx.stream), cudaErrorInvalidValue);
        } else {
            assert_int_equal(rc, 0);
            fast_scratch_free(&s);
        }
    }
    int counters[MOE_V5_COUNTERS];
    const MoeFfn slots = { .T = 1, .K = 33, .E = 64, .D = 64, .I = 32, .counters = counters };
    assert_int_equal(moe_ffn_v5(slots, ctx.stream), cudaErrorInvalidValue);
    fast_context_free(&ctx);
}

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0);
    test_rng_seed(&rng, "fast moe");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lite_widths),      cmocka_unit_test(lite_widths_one_token),
        cmocka_unit_test(odd_with_shared),  cmocka_unit_test(lite_64_experts_small_width),
        cmocka_unit_test(v2_group_limited), cmocka_unit_test(odd_no_shared),
        cmocka_unit_test(wide_stage),       cmocka_unit_test(width_limits_refused),
        cmocka_unit_test(sixteen_tokens),   cmocka_unit_test(small_width_many_rows),
    };
    return cmocka_run_group_tests_name("fast moe", tests, NULL, NULL);
}
