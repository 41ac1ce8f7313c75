/**
 * \file test_fast_router.c
 * \brief kernels/router.cu against ref/router.c: affinities, expert choices and weights, v1 and v2; version 4
 *        (the gate GEMV, routing and permutation in one launch) from x and W_gate.
 *
 * Configurations: V2-Lite (greedy, E = 64, K = 6), V2 (group-limited, E = 160,
 * 8 groups, 3 kept, K = 6, ×16), V3-style noaux_tc (sigmoid, bias, E = 256,
 * top-2-sum groups, normalised and scaled), and odd sizes (E = 12 in 4 groups,
 * K = 3, normalised). Logits are float32 in both precision modes (the router
 * GEMM always is), so choices must be identical except where the reference's
 * own margin is a near tie (< 1e-6 between the K-th and (K+1)-th selection
 * score, or between the kept and the best dropped group): those tokens are
 * skipped and counted. Affinities and weights: relative L2 ≤ 1e-5.
 */
#include "check.h"
#include "fast_test.h"
#include "error.h"
#include "fast.h"
#include "kernels.h"
#include "router.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEAR_TIE 1e-6f

static TestRng rng;

static ModelConfig router_config(int E, int K, int G, int Gk, TopkMethod m, ScoringFunc sf, bool norm, float scale)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.n_routed_experts = E;
    c.num_experts_per_tok = K;
    c.n_group = G;
    c.topk_group = Gk;
    c.topk_method = m;
    c.scoring_func = sf;
    c.norm_topk_prob = norm;
    c.routed_scaling_factor = scale;
    return c;
}

/* Gap between the r-th and (r+1)-th largest of x[0..n) (sorted copy). */
static float rank_gap(const float *x, int n, int r)
{
    float *v = malloc(sizeof(float) * n);
    memcpy(v, x, sizeof(float) * n);
    for (int i = 0; i < n; i++) /* partial selection sort of the top r+1 */
        for (int j = i + 1; j < n && i <= r; j++)
            if (v[j] > v[i]) {
                const float t = v[i];
                v[i] = v[j];
                v[j] = t;
            }
    const float gap = r + 1 < n ? v[r] - v[r + 1] : INFINITY;
    free(v);
    return gap;
}

/* The reference's smallest decision margin for one token (groups, then experts after masking). */
static float ref_margin(const float *s, const float *bias, const ModelConfig *c)
{
    const int E = c->n_routed_experts, G = c->n_group, per = E / G;
    float sel[ROUTER_MAX_EXPERTS], margin = INFINITY;
    for (int i = 0; i < E; i++) sel[i] = s[i] + (c->topk_method == TOPK_NOAUX_TC ? bias[i] : 0);
    if (c->topk_method != TOPK_GREEDY) {
        float gs[64] = { 0 };
        for (int g = 0; g < G; g++) {
            float best = sel[g * per], second = -INFINITY;
            for (int i = 1; i < per; i++) {
                const float x = sel[g * per + i];
                if (x > best) {
                    second = best;
                    best = x;
                } else if (x > second)
                    second = x;
            }
            gs[g] = c->topk_method == TOPK_NOAUX_TC ? best + second : best;
        }
        margin = fminf(margin, rank_gap(gs, G, c->topk_group - 1));
        for (int g = 0; g < G; g++) { /* mask the dropped groups as the reference */
            int rank = 0;
            for (int h = 0; h < G; h++) rank += gs[h] > gs[g] || (gs[h] == gs[g] && h < g);
            if (rank >= c->topk_group)
                for (int i = 0; i < per; i++) sel[g * per + i] = 0;
        }
    }
    return fminf(margin, rank_gap(sel, E, c->num_experts_per_tok - 1));
}

static void check_config(const ModelConfig *c, int T)
{
    const int E = c->n_routed_experts, K = c->num_experts_per_tok;
    const size_t TE = (size_t)T * E, TK = (size_t)T * K;
    float *g = malloc(4 * TE), *s_want = malloc(4 * TE), *w_want = malloc(4 * TK), *bias = malloc(4 * (size_t)E);
    int *i_want = malloc(sizeof(int) * TK);
    test_rng_fill(&rng, g, TE, -4.0f, 4.0f);
    test_rng_fill(&rng, bias, (size_t)E, -0.1f, 0.1f);
    const bool has_bias = c->topk_method == TOPK_NOAUX_TC;
    for (int t = 0; t < T; t++) {
        router_scores(s_want + (size_t)t * E, g + (size_t)t * E, E, c->scoring_func);
        router_select(i_want + (size_t)t * K, w_want + (size_t)t * K, s_want + (size_t)t * E, has_bias ? bias : NULL,
                      c);
    }
    const RouterParams p = { E,
                             K,
                             c->n_group,
                             c->topk_group,
                             (int)c->topk_method,
                             (int)c->scoring_func,
                             c->norm_topk_prob,
                             c->routed_scaling_factor };
    float *dg, *ds, *dw, *db;
    int *di;
    assert_int_equal(cudaMalloc((void **)&dg, 4 * TE), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&ds, 4 * TE), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dw, 4 * TK), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&di, 4 * TK), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&db, 4 * (size_t)E), cudaSuccess);
    assert_int_equal(cudaMemcpy(dg, g, 4 * TE, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(db, bias, 4 * (size_t)E, cudaMemcpyHostToDevice), cudaSuccess);
    float *s_got = malloc(4 * TE), *w_got = malloc(4 * TK);
    int *i_got = malloc(sizeof(int) * TK);
    for (int version = 1; version <= 2; version++) {
        assert_int_equal(cudaMemset(ds, 0xff, 4 * TE), cudaSuccess); /* NaN */
        assert_int_equal(cudaMemset(dw, 0xff, 4 * TK), cudaSuccess);
        assert_int_equal(cudaMemset(di, 0xff, 4 * TK), cudaSuccess); /* −1 */
        assert_int_equal(
            (version == 1 ? router_forward_v1 : router_forward_v2)(di, dw, ds, dg, has_bias ? db : NULL, p, T, 0),
            cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        assert_int_equal(cudaMemcpy(s_got, ds, 4 * TE, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemcpy(w_got, dw, 4 * TK, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemcpy(i_got, di, 4 * TK, cudaMemcpyDeviceToHost), cudaSuccess);
        check_close("affinities", s_got, s_want, TE, -1, 1e-5);
        int skipped = 0;
        for (int t = 0; t < T; t++) {
            if (ref_margin(s_want + (size_t)t * E, bias, c) < NEAR_TIE) {
                skipped++;
                continue;
            }
            for (int k = 0; k < K; k++) assert_int_equal(i_got[(size_t)t * K + k], i_want[(size_t)t * K + k]);
            check_close("weights", w_got + (size_t)t * K, w_want + (size_t)t * K, (size_t)K, -1, 1e-5);
        }
        printf("router v%d E=%d K=%d G=%d: %d/%d tokens compared, %d near ties skipped\n", version, E, K, c->n_group,
               T - skipped, T, skipped);
        assert_true(skipped * 10 <= T); /* a near tie is rare, not the rule */
    }
    cudaFree(dg);
    cudaFree(ds);
    cudaFree(dw);
    cudaFree(di);
    cudaFree(db);
    free(g);
    free(s_want);
    free(w_want);
    free(bias);
    free(i_want);
    free(s_got);
    free(w_got);
    free(i_got);
}

/*
 * Version 4, the whole gate in one launch: x [T, D] and W_gate [E, D] random, the reference routes the
 * logits W_gate x_t (double sums, rounded); moe_route_v4 must choose the same experts (near ties
 * skipped), give the same weights and affinities (relative L2 ≤ 1e-5: the logits differ only in
 * summation order), and permute its own choices as moe_permute_v2 would: offsets from the counts,
 * the experts with rows in ascending order then −1, each row's token, and slot_row a bijection onto
 * the rows of the slot's expert. D not a multiple of 8 takes the element loads.
 */
static void check_route_v4(const ModelConfig *c, int T, int D)
{
    const int E = c->n_routed_experts, K = c->num_experts_per_tok;
    const size_t TE = (size_t)T * E, TK = (size_t)T * K;
    float *x = malloc(4 * (size_t)T * D), *w = malloc(4 * (size_t)E * D), *g = malloc(4 * TE);
    float *s_want = malloc(4 * TE), *w_want = malloc(4 * TK), *bias = malloc(4 * (size_t)E);
    int *i_want = malloc(sizeof(int) * TK);
    test_rng_fill(&rng, x, (size_t)T * D, -2.0f, 2.0f);
    const float a = 3.0f / sqrtf((float)D); /* logits of order 1, as check_config's, so near ties stay rare */
    test_rng_fill(&rng, w, (size_t)E * D, -a, a);
    test_rng_fill(&rng, bias, (size_t)E, -0.1f, 0.1f);
    const bool has_bias = c->topk_method == TOPK_NOAUX_TC;
    for (int t = 0; t < T; t++) {
        for (int e = 0; e < E; e++) {
            double acc = 0;
            for (int d = 0; d < D; d++) acc += (double)w[(size_t)e * D + d] * x[(size_t)t * D + d];
            g[(size_t)t * E + e] = (float)acc;
        }
        router_scores(s_want + (size_t)t * E, g + (size_t)t * E, E, c->scoring_func);
        router_select(i_want + (size_t)t * K, w_want + (size_t)t * K, s_want + (size_t)t * E, has_bias ? bias : NULL,
                      c);
    }
    const RouterParams p = { E,
                             K,
                             c->n_group,
                             c->topk_group,
                             (int)c->topk_method,
                             (int)c->scoring_func,
                             c->norm_topk_prob,
                             c->routed_scaling_factor };
    const size_t n_part = moe_route_v4_floats(E, D, T);
    float *dx, *dwg, *dpart, *dw, *db;
    int *di, *doff, *dslot, *drow;
    assert_int_equal(cudaMalloc((void **)&dx, 4 * (size_t)T * D), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dwg, 4 * (size_t)E * D), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dpart, 4 * n_part), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dw, 4 * TK), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&db, 4 * (size_t)E), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&di, 4 * TK), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&doff, 4 * (size_t)(2 * E + 2)), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dslot, 4 * TK), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&drow, 4 * TK), cudaSuccess);
    assert_int_equal(cudaMemcpy(dx, x, 4 * (size_t)T * D, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dwg, w, 4 * (size_t)E * D, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(db, bias, 4 * (size_t)E, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemset(doff, 0, 4 * (size_t)(2 * E + 2)), cudaSuccess); /* the launch counter */
    float *s_got = malloc(4 * TE), *w_got = malloc(4 * TK);
    int *i_got = malloc(sizeof(int) * TK), *off = malloc(sizeof(int) * (2 * E + 2)), *slot = malloc(sizeof(int) * TK);
    int *row = malloc(sizeof(int) * TK);
    for (int run = 0; run < 2; run++) { /* twice: the counter is left zero for the next launch */
        assert_int_equal(cudaMemset(dpart, 0xff, 4 * n_part), cudaSuccess); /* NaN */
        assert_int_equal(cudaMemset(dw, 0xff, 4 * TK), cudaSuccess);
        assert_int_equal(cudaMemset(di, 0xff, 4 * TK), cudaSuccess);
        assert_int_equal(cudaMemset(doff, 0xff, 4 * (size_t)(2 * E + 1)), cudaSuccess);
        assert_int_equal(cudaMemset(dslot, 0xff, 4 * TK), cudaSuccess);
        assert_int_equal(cudaMemset(drow, 0xff, 4 * TK), cudaSuccess);
        assert_int_equal(moe_route_v4(di, dw, doff, dslot, drow, dpart, dx, dwg, has_bias ? db : NULL, p, T, D, 0),
                         cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        assert_int_equal(cudaMemcpy(s_got, dpart + n_part - TE, 4 * TE, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemcpy(w_got, dw, 4 * TK, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemcpy(i_got, di, 4 * TK, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemcpy(off, doff, 4 * (size_t)(2 * E + 2), cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemcpy(slot, dslot, 4 * TK, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemcpy(row, drow, 4 * TK, cudaMemcpyDeviceToHost), cudaSuccess);
        check_close("affinities v4", s_got, s_want, TE, -1, 1e-5);
        int skipped = 0;
        for (int t = 0; t < T; t++) {
            if (ref_margin(s_want + (size_t)t * E, bias, c) < NEAR_TIE) {
                skipped++;
                continue;
            }
            for (int k = 0; k < K; k++) assert_int_equal(i_got[(size_t)t * K + k], i_want[(size_t)t * K + k]);
            check_close("weights v4", w_got + (size_t)t * K, w_want + (size_t)t * K, (size_t)K, -1, 1e-5);
        }
        assert_true(skipped * 10 <= T);
        /* the permutation of the kernel's own choices */
        int n_active = 0;
        assert_int_equal(off[0], 0);
        for (int e = 0; e < E; e++) {
            int count = 0;
            for (size_t r = 0; r < TK; r++) count += i_got[r] == e;
            assert_int_equal(off[e + 1] - off[e], count);
            if (count) assert_int_equal(off[E + 1 + n_active++], e);
        }
        for (int j = n_active; j < E; j++) assert_int_equal(off[E + 1 + j], -1);
        assert_int_equal(off[2 * E + 1], 0);
        for (size_t r = 0; r < TK; r++) {
            const int e = i_got[r], pr = slot[r];
            assert_true(pr >= off[e] && pr < off[e + 1]);
            assert_int_equal(row[pr], (int)(r / K));
            for (size_t q = 0; q < r; q++) assert_true(slot[q] != pr);
        }
        printf("router v4 E=%d K=%d G=%d D=%d: %d/%d tokens compared, %d near ties skipped, %d experts active\n", E, K,
               c->n_group, D, T - skipped, T, skipped, n_active);
    }
    cudaFree(dx);
    cudaFree(dwg);
    cudaFree(dpart);
    cudaFree(dw);
    cudaFree(db);
    cudaFree(di);
    cudaFree(doff);
    cudaFree(dslot);
    cudaFree(drow);
    free(x);
    free(w);
    free(g);
    free(s_want);
    free(w_want);
    free(bias);
    free(i_want);
    free(s_got);
    free(w_got);
    free(i_got);
    free(off);
    free(slot);
    free(row);
}

static void lite_greedy(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = router_config(64, 6, 1, 1, TOPK_GREEDY, SCORING_SOFTMAX, false, 1.0f);
    check_config(&c, 37);
    check_route_v4(&c, 1, 2048); /* a V2-Lite decode step */
    check_route_v4(&c, 37, 520);
}

static void v2_group_limited(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = router_config(160, 6, 8, 3, TOPK_GROUP_LIMITED_GREEDY, SCORING_SOFTMAX, false, 16.0f);
    check_config(&c, 29);
    check_route_v4(&c, 16, 264);
    const ModelConfig widest = router_config(1024, 6, 32, 4, TOPK_GROUP_LIMITED_GREEDY, SCORING_SOFTMAX, true, 1.0f);
    check_route_v4(&widest, 3, 64); /* the limits: E = 1024 in 32 groups */
}

static void v3_noaux_tc(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = router_config(256, 8, 8, 4, TOPK_NOAUX_TC, SCORING_SIGMOID, true, 2.5f);
    check_config(&c, 13);
    check_route_v4(&c, 13, 136);
}

static void odd_normalised(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = router_config(12, 3, 4, 2, TOPK_GROUP_LIMITED_GREEDY, SCORING_SOFTMAX, true, 1.0f);
    check_config(&c, 7);
    const ModelConfig one = router_config(5, 1, 1, 1, TOPK_GREEDY, SCORING_SOFTMAX, true, 2.0f);
    check_config(&one, 3);        /* K = 1: no normalisation, scaled */
    check_route_v4(&c, 7, 45);    /* element loads */
    check_route_v4(&one, 3, 300); /* element loads, two column blocks */
}

/* fast_scratch_init refuses settings beyond the router kernels' limits with one line naming the key, and
 * the launchers refuse them without launching; the limits themselves are accepted. */
static void limits_refused(void **state)
{
    (void)state;
    need_device();
    const struct {
        int E, G;
        const char *key;
    } cases[] = { { 66, 33, "n_group" }, { 1025, 1, "n_routed_experts" }, { 1024, 32, NULL }, { 64, 32, NULL } };
    FastContext ctx;
    if (fast_context_init(&ctx, false, 1)) fail_msg("%s", ds_last_error());
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const ModelConfig c =
            router_config(cases[i].E, 6, cases[i].G, 1, TOPK_GROUP_LIMITED_GREEDY, SCORING_SOFTMAX, false, 1.0f);
        FastScratch s;
        const int rc = fast_scratch_init(&s, &ctx, &c, 1, 1);
        printf("E %d, n_group %d: %s\n", cases[i].E, cases[i].G, rc ? ds_last_error() : "accepted");
        if (cases[i].key) {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(ds_last_error(), cases[i].key));
            assert_null(strchr(ds_last_error(), '\n'));
        } else {
            assert_int_equal(rc, 0);
            fast_scratch_free(&s);
        }
        const RouterParams p = { cases[i].E, 6, cases[i].G, 1, 1, 0, 0, 1.0f };
        if (cases[i].key) { /* refused before anything is read */
            assert_int_equal(router_forward_v1(NULL, NULL, NULL, NULL, NULL, p, 1, ctx.stream), cudaErrorInvalidValue);
            assert_int_equal(router_forward_v2(NULL, NULL, NULL, NULL, NULL, p, 1, ctx.stream), cudaErrorInvalidValue);
            assert_int_equal(moe_route_v4(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p, 1, 64, ctx.stream),
                             cudaErrorInvalidValue);
        }
    }
    fast_context_free(&ctx);
}

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0);
    test_rng_seed(&rng, "fast router");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lite_greedy),    cmocka_unit_test(v2_group_limited), cmocka_unit_test(v3_noaux_tc),
        cmocka_unit_test(odd_normalised), cmocka_unit_test(limits_refused),
    };
    return cmocka_run_group_tests_name("fast router", tests, NULL, NULL);
}
