/**
 * \file test_moe.c
 * \brief SwiGLU and the DeepSeekMoE layer (docs/semantics.md §3.6) against naive double-precision
 * re-derivations, and the bf16 weight path against the same weights widened to float32.
 */
#include "check.h"
#include "moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static TestRng g_rng;

static int group_setup(void **state)
{
    (void)state;
    test_rng_seed(&g_rng, "moe");
    return 0;
}

/* A float32 matrix with uniform entries in [-a, a) (the caller frees data). */
static Mat random_mat(int rows, int cols, float a)
{
    float *w = malloc(sizeof(float) * rows * cols);
    assert_non_null(w);
    test_rng_fill(&g_rng, w, (size_t)rows * cols, -a, a);
    return (Mat){ w, DT_F32, rows, cols };
}

/* Weights scaled by 1/√fan_in keep activations of order 1. */
static SwigluWeights random_swiglu(int I, int D)
{
    return (SwigluWeights){ random_mat(I, D, 1.7f / sqrtf((float)D)), random_mat(I, D, 1.7f / sqrtf((float)D)),
                            random_mat(D, I, 1.7f / sqrtf((float)I)) };
}

static void free_swiglu(SwigluWeights *w)
{
    free((void *)w->gate.data);
    free((void *)w->up.data);
    free((void *)w->down.data);
}

static double w_at(const Mat *m, int r, int c)
{
    return ((const float *)m->data)[(size_t)r * m->cols + c];
}

/* docs/semantics.md §3.6.2 in double: down · (silu(gate · x) ⊙ up · x), one token. */
static void swiglu_double(double *y, const float *x, const SwigluWeights *w)
{
    const int I = w->gate.rows, D = w->gate.cols;
    double *h = malloc(sizeof(double) * I);
    assert_non_null(h);
    for (int i = 0; i < I; i++) {
        double g = 0, u = 0;
        for (int d = 0; d < D; d++) {
            g += w_at(&w->gate, i, d) * x[d];
            u += w_at(&w->up, i, d) * x[d];
        }
        h[i] = g / (1 + exp(-g)) * u;
    }
    for (int d = 0; d < D; d++) {
        y[d] = 0;
        for (int i = 0; i < I; i++) y[d] += w_at(&w->down, d, i) * h[i];
    }
    free(h);
}

static void swiglu_matches_double(void **state)
{
    (void)state;
    enum { T = 5, D = 37, I = 23 };
    SwigluWeights w = random_swiglu(I, D);
    float x[T * D], y[T * D], want[T * D], hidden[2 * T * I];
    double yd[D];
    test_rng_fill(&g_rng, x, T * D, -2, 2);
    poison(y, T * D);
    swiglu_forward(y, x, &w, T, hidden);
    for (int t = 0; t < T; t++) {
        swiglu_double(yd, x + t * D, &w);
        for (int d = 0; d < D; d++) want[t * D + d] = (float)yd[d];
    }
    check_close("swiglu vs double", y, want, T * D, 1e-5, 1e-5); /* O(1) outputs: float32 dots */
    poison(y, D);
    swiglu_forward(y, x, &w, 1, hidden); /* the one-token path */
    check_close("swiglu T=1 vs double", y, want, D, 1e-5, 1e-5);
    free_swiglu(&w);
}

/* A small MoE layer's config: E experts of width Ie, K per token, Ns shared. */
static ModelConfig moe_config(TopkMethod method, int G, int Gk, bool norm, float scale)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.hidden_size = 29;
    c.intermediate_size = 40;
    c.moe_intermediate_size = 13;
    c.n_routed_experts = 12;
    c.n_shared_experts = 2;
    c.num_experts_per_tok = 3;
    c.topk_method = method;
    c.n_group = G;
    c.topk_group = Gk;
    c.norm_topk_prob = norm;
    c.routed_scaling_factor = scale;
    c.scoring_func = SCORING_SOFTMAX;
    return c;
}

static MoeWeights random_moe(const ModelConfig *c)
{
    const int D = c->hidden_size, E = c->n_routed_experts, Ie = c->moe_intermediate_size;
    MoeWeights w = { .router = random_mat(E, D, 2.0f / sqrtf((float)D)) };
    w.experts = malloc(sizeof *w.experts * E);
    assert_non_null(w.experts);
    for (int e = 0; e < E; e++) w.experts[e] = random_swiglu(Ie, D);
    w.shared = random_swiglu(c->n_shared_experts * Ie, D);
    return w;
}

static void free_moe(MoeWeights *w, int E)
{
    for (int e = 0; e < E; e++) free_swiglu(&w->experts[e]);
    free(w->experts);
    free_swiglu(&w->shared);
    free((void *)w->router.data);
}

/*
 * docs/semantics.md §3.6.3–3.6.4 for one token, in double: softmax over W_gate x, groups ranked by their
 * max (group_limited_greedy), the K best of the kept experts, V2's weight rule,
 * y = Σ w_k expert_k(x) + shared(x). Returns the smallest gap between a chosen and an
 * unchosen candidate (group or expert), so the caller can avoid near-ties.
 */
static double moe_double(double *y, const float *x, const MoeWeights *w, const ModelConfig *c)
{
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok;
    const int G = c->n_group, per = E / G;
    double s[64], sum = 0, gmax[64], margin = INFINITY, wk[64], *part = malloc(sizeof(double) * D);
    bool keep[64] = { false }, taken[64] = { false };
    int idx[64];
    assert_non_null(part);
    for (int e = 0; e < E; e++) {
        s[e] = 0;
        for (int d = 0; d < D; d++) s[e] += w_at(&w->router, e, d) * x[d];
    }
    double max = s[0];
    for (int e = 1; e < E; e++) max = fmax(max, s[e]);
    for (int e = 0; e < E; e++) sum += s[e] = exp(s[e] - max);
    for (int e = 0; e < E; e++) s[e] /= sum;
    for (int q = 0; q < G; q++) {
        gmax[q] = 0;
        for (int i = 0; i < per; i++) gmax[q] = fmax(gmax[q], s[q * per + i]);
    }
    const int Gk = c->topk_method == TOPK_GREEDY ? G : c->topk_group;
    for (int r = 0; r < Gk; r++) {
        int best = -1;
        for (int q = 0; q < G; q++)
            if (!keep[q] && (best < 0 || gmax[q] > gmax[best])) best = q;
        keep[best] = true;
    }
    for (int q = 0; q < G; q++)
        for (int p = 0; p < G; p++)
            if (keep[q] && !keep[p]) margin = fmin(margin, gmax[q] - gmax[p]);
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (keep[e / per] && !taken[e] && (best < 0 || s[e] > s[best])) best = e;
        idx[k] = best;
        taken[best] = true;
    }
    for (int e = 0; e < E; e++)
        if (keep[e / per] && !taken[e]) margin = fmin(margin, s[idx[K - 1]] - s[e]);
    double wsum = 0;
    for (int k = 0; k < K; k++) wsum += wk[k] = s[idx[k]];
    for (int k = 0; k < K; k++) wk[k] = c->norm_topk_prob && K > 1 ? wk[k] / wsum : wk[k] * c->routed_scaling_factor;
    swiglu_double(y, x, &w->shared);
    for (int k = 0; k < K; k++) {
        swiglu_double(part, x, &w->experts[idx[k]]);
        for (int d = 0; d < D; d++) y[d] += wk[k] * part[d];
    }
    free(part);
    return margin;
}

/* Draws T tokens whose routing has a margin of at least 1e-3 in the double reference. */
static void draw_tokens(float *x, double *want, int T, const MoeWeights *w, const ModelConfig *c)
{
    const int D = c->hidden_size;
    for (int t = 0; t < T; t++) {
        int tries = 0;
        do {
            test_rng_fill(&g_rng, x + t * D, D, -2, 2);
            assert_true(++tries < 1000);
        } while (moe_double(want + t * D, x + t * D, w, c) < 1e-3);
    }
}

static void moe_matches_naive_double(const ModelConfig *c)
{
    enum { T = 9 };
    const int D = c->hidden_size;
    MoeWeights w = random_moe(c);
    FfnScratch s;
    assert_int_equal(ffn_scratch_init(&s, c, T), 0);
    float *x = malloc(sizeof(float) * T * D), *y = malloc(sizeof(float) * T * D);
    float *want = malloc(sizeof(float) * T * D);
    double *wd = malloc(sizeof(double) * T * D);
    assert_true(x && y && want && wd);
    draw_tokens(x, wd, T, &w, c);
    for (int i = 0; i < T * D; i++) want[i] = (float)wd[i];
    for (int chunk = 1; chunk <= T; chunk += T - 1) { /* token by token, then all at once */
        poison(y, (size_t)T * D);
        for (int t0 = 0; t0 < T; t0 += chunk) moe_forward(y + t0 * D, x + t0 * D, &w, c, chunk, &s);
        /* routing agrees by construction (margin ≥ 1e-3 ≫ float32 error); the values differ
         * by float32 summation only; outputs are O(1–10) */
        check_close("moe vs naive double", y, want, (size_t)T * D, 1e-4, 1e-5);
    }
    free(x);
    free(y);
    free(want);
    free(wd);
    ffn_scratch_free(&s);
    free_moe(&w, c->n_routed_experts);
}

static void moe_group_limited_scaled(void **state)
{
    (void)state;
    const ModelConfig c = moe_config(TOPK_GROUP_LIMITED_GREEDY, 4, 2, false, 16.0f);
    moe_matches_naive_double(&c);
}

static void moe_greedy_normalised(void **state)
{
    (void)state;
    const ModelConfig c = moe_config(TOPK_GREEDY, 1, 1, true, 16.0f); /* V2 rule: no scale */
    moe_matches_naive_double(&c);
}

/* bf16 copy of a float32 matrix, and that copy widened back to float32. */
static void to_bf16_pair(Mat *bf, Mat *f32, const Mat *src)
{
    const size_t n = (size_t)src->rows * src->cols;
    uint16_t *h = malloc(2 * n);
    float *f = malloc(4 * n);
    assert_true(h && f);
    for (size_t i = 0; i < n; i++) {
        h[i] = f32_to_bf16(((const float *)src->data)[i]);
        f[i] = bf16_to_f32(h[i]);
    }
    *bf = (Mat){ h, DT_BF16, src->rows, src->cols };
    *f32 = (Mat){ f, DT_F32, src->rows, src->cols };
}

static void bf16_weights_equal_widened_f32(void **state)
{
    (void)state;
    enum { T = 6 };
    const ModelConfig c = moe_config(TOPK_GROUP_LIMITED_GREEDY, 4, 2, false, 16.0f);
    const int D = c.hidden_size, E = c.n_routed_experts;
    MoeWeights src = random_moe(&c), bf = { 0 }, f32 = { 0 };
    bf.experts = malloc(sizeof *bf.experts * E);
    f32.experts = malloc(sizeof *f32.experts * E);
    assert_true(bf.experts && f32.experts);
    to_bf16_pair(&bf.router, &f32.router, &src.router);
    for (int e = 0; e <= E; e++) {
        const SwigluWeights *s = e < E ? &src.experts[e] : &src.shared;
        SwigluWeights *b = e < E ? &bf.experts[e] : &bf.shared, *f = e < E ? &f32.experts[e] : &f32.shared;
        to_bf16_pair(&b->gate, &f->gate, &s->gate);
        to_bf16_pair(&b->up, &f->up, &s->up);
        to_bf16_pair(&b->down, &f->down, &s->down);
    }
    FfnScratch s;
    assert_int_equal(ffn_scratch_init(&s, &c, T), 0);
    float x[T * D], yb[T * D], yf[T * D];
    test_rng_fill(&g_rng, x, T * D, -2, 2);
    for (int chunk = 1; chunk <= T; chunk += T - 1) { /* decode (widen in registers) and prompt */
        poison(yb, T * D);
        poison(yf, T * D);
        for (int t0 = 0; t0 < T; t0 += chunk) {
            moe_forward(yb + t0 * D, x + t0 * D, &bf, &c, chunk, &s);
            moe_forward(yf + t0 * D, x + t0 * D, &f32, &c, chunk, &s);
        }
        /* bf16 → f32 is exact and both paths sum in the same order: bit-identical */
        check_close("bf16 vs widened f32", yb, yf, T * D, 0, 0);
    }
    ffn_scratch_free(&s);
    free_moe(&src, E);
    free_moe(&bf, E);
    free_moe(&f32, E);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(swiglu_matches_double),
        cmocka_unit_test(moe_group_limited_scaled),
        cmocka_unit_test(moe_greedy_normalised),
        cmocka_unit_test(bf16_weights_equal_widened_f32),
    };
    return cmocka_run_group_tests_name("moe", tests, group_setup, NULL);
}
