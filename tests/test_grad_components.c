/**
 * \file test_grad_components.c
 * \brief Each backward function in ref/ against PyTorch autograd on small float32 cases.
 *
 * Evidence: tests/golden/grad/components.safetensors, made by tools/make_grad_golden.py from
 * PyTorch modules written from the paper's formulas (not from the C): inputs, an upstream
 * gradient dy, and autograd's gradients of Σ dy ⊙ f(inputs). MLA uses layer 0 of the golden v2
 * (query compression, YaRN) and lite (no query compression) checkpoints; the MoE uses layer 1 of
 * v2 (group-limited routing, scaling 16, two shared experts) with 9 of 30 (token, expert) pairs
 * dropped. Every input gradient is NaN-poisoned before the call; parameter gradients start at 0.
 * Tolerance 1e-5 relative (‖a − b‖/‖b‖): float32 on both sides, summation orders differ;
 * measured errors are 1e-7 to 1e-6.
 */
#include "check.h"
#include "config.h"
#include "error.h"
#include "linear.h"
#include "mla.h"
#include "model.h"
#include "moe.h"
#include "rmsnorm.h"
#include "rope.h"
#include "router.h"
#include "safetensors.h"
#include "train_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

static StFile fx_file;

/* Fixture tensor `prefix.name` (F32), with its element count in *n when n is not NULL. */
static const float *fx(const char *prefix, const char *name, size_t *n)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    const StTensor *t = st_find(&fx_file, full);
    if (!t) fail_msg("components fixture: tensor '%s' missing", full);
    if (n) *n = t->nbytes / sizeof(float);
    return t->data;
}

/* A float buffer of n: NaN-poisoned (for written outputs) or zeroed (for accumulated ones). */
static float *buf(size_t n, int zero)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (zero)
        memset(p, 0, sizeof(float) * n);
    else
        poison(p, n);
    return p;
}

/* Compares got [n] with fixture tensor prefix.name, printing the relative error. */
static void expect(const char *prefix, const char *name, const float *got)
{
    size_t n;
    const float *want = fx(prefix, name, &n);
    CheckStats st = check_stats(got, want, n);
    printf("  %-32s %-22s rel %.3g  max-abs %.3g\n", prefix, name, st.rel_l2, st.max_abs);
    char what[200];
    snprintf(what, sizeof what, "%s.%s", prefix, name);
    check_close(what, got, want, n, -1, TOL);
}

static void test_rmsnorm_backward(void **state)
{
    (void)state;
    const float *x = fx("rmsnorm", "x", NULL), *w = fx("rmsnorm", "w", NULL), *dy = fx("rmsnorm", "dy", NULL);
    float *dx = buf(5 * 24, 0), *dw = buf(24, 1);
    rmsnorm_backward(dx, dw, dy, x, w, 5, 24, 1e-6f);
    expect("rmsnorm", "dx", dx);
    expect("rmsnorm", "dw", dw);
    free(dx);
    free(dw);
}

static void test_linear_backward(void **state)
{
    (void)state;
    const Mat W = { fx("linear", "W", NULL), DT_F32, 16, 24 };
    float *dx = buf(5 * 24, 0), *dW = buf(16 * 24, 1);
    linear_backward(dx, dW, fx("linear", "dy", NULL), fx("linear", "x", NULL), &W, 5);
    expect("linear", "dx", dx);
    expect("linear", "dW", dW);
    free(dx);
    free(dW);
}

static void test_rope_backward(void **state)
{
    (void)state;
    ModelConfig cfg;
    Rope r;
    if (config_load("tests/golden/v2/config.json", &cfg) || rope_init(&r, &cfg)) fail_msg("%s", ds_last_error());
    const int dr = r.dim;
    const float *pos = fx("rope", "pos", NULL), *dy = fx("rope", "dy", NULL);
    float *dx = buf(6 * (size_t)dr, 0);
    for (int t = 0; t < 6; t++) { /* rotate each upstream gradient back by −φ */
        memcpy(dx + t * dr, dy + t * dr, sizeof(float) * dr);
        rope_rotate_backward(dx + t * dr, &r, (int)pos[t]);
    }
    expect("rope", "dx", dx);
    free(dx);
}

static void test_swiglu_backward(void **state)
{
    (void)state;
    const SwigluWeights w = { { fx("swiglu", "gate", NULL), DT_F32, 16, 24 },
                              { fx("swiglu", "up", NULL), DT_F32, 16, 24 },
                              { fx("swiglu", "down", NULL), DT_F32, 24, 16 } };
    float *dx = buf(5 * 24, 0);
    SwigluGrads g = { buf(16 * 24, 1), buf(16 * 24, 1), buf(24 * 16, 1) };
    assert_int_equal(swiglu_backward(dx, &g, fx("swiglu", "dy", NULL), fx("swiglu", "x", NULL), &w, 5), 0);
    expect("swiglu", "dx", dx);
    expect("swiglu", "dgate", g.gate);
    expect("swiglu", "dup", g.up);
    expect("swiglu", "ddown", g.down);
    free(dx);
    free(g.gate);
    free(g.up);
    free(g.down);
}

/* The router's weights g_{i,t} back to its logits, with the selection compared first. */
static void check_router(const char *prefix, const ModelConfig *cfg)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok, T = 6;
    const float *logits = fx(prefix, "logits", NULL), *idx_want = fx(prefix, "idx", NULL);
    const float *dweight = fx(prefix, "dweight", NULL);
    float *dl = buf((size_t)T * E, 0);
    for (int t = 0; t < T; t++) {
        float s[64], w[64];
        int idx[64];
        router_scores(s, logits + t * E, E, cfg->scoring_func);
        router_select(idx, w, s, NULL, cfg);
        for (int k = 0; k < K; k++) assert_int_equal(idx[k], (int)idx_want[t * K + k]);
        router_backward(dl + t * E, s, idx, dweight + t * K, cfg);
    }
    expect(prefix, "dlogits", dl);
    free(dl);
}

static void test_router_backward(void **state)
{
    (void)state;
    ModelConfig cfg;
    if (config_load("tests/golden/v2/config.json", &cfg)) fail_msg("%s", ds_last_error());
    check_router("router_v2", &cfg); /* group-limited, × routed_scaling_factor 16 */
    cfg.topk_method = TOPK_GREEDY;
    cfg.norm_topk_prob = true;
    check_router("router_norm", &cfg); /* greedy, g_k = s_k / Σ s */
}

/* One gradient array for an attention weight, zeroed; NULL when the weight is absent. */
static float *mat_grad(const Mat *m)
{
    return m->data ? buf((size_t)m->rows * m->cols, 1) : NULL;
}

static void check_mla(const char *name)
{
    char dir[64], prefix[64], gprefix[80];
    snprintf(dir, sizeof dir, "tests/golden/%s", name);
    snprintf(prefix, sizeof prefix, "mla_%s", name);
    snprintf(gprefix, sizeof gprefix, "mla_%s.grad", name);
    Model m;
    if (model_open(&m, dir, NULL)) fail_msg("%s", ds_last_error());
    const ModelConfig *c = m.cfg;
    const MlaWeights *w = &m.layers[0].attn;
    const int T = 7, D = c->hidden_size;
    MlaGrads g = { mat_grad(&w->q_proj),    mat_grad(&w->q_a_proj),  c->q_lora_rank ? buf(c->q_lora_rank, 1) : NULL,
                   mat_grad(&w->q_b_proj),  mat_grad(&w->kv_a_proj), buf(c->kv_lora_rank, 1),
                   mat_grad(&w->kv_b_proj), mat_grad(&w->o_proj) };
    float *da = buf((size_t)T * D, 0);
    assert_int_equal(mla_backward(da, &g, fx(prefix, "dout", NULL), fx(prefix, "a", NULL), w, c, &m.rope, T), 0);
    expect(prefix, "da", da);
    if (c->q_lora_rank) {
        expect(gprefix, "q_a_proj.weight", g.q_a_proj);
        expect(gprefix, "q_a_layernorm.weight", g.q_a_norm);
        expect(gprefix, "q_b_proj.weight", g.q_b_proj);
    } else {
        expect(gprefix, "q_proj.weight", g.q_proj);
    }
    expect(gprefix, "kv_a_proj_with_mqa.weight", g.kv_a_proj);
    expect(gprefix, "kv_a_layernorm.weight", g.kv_a_norm);
    expect(gprefix, "kv_b_proj.weight", g.kv_b_proj);
    expect(gprefix, "o_proj.weight", g.o_proj);
    free(da);
    free(g.q_proj);
    free(g.q_a_proj);
    free(g.q_a_norm);
    free(g.q_b_proj);
    free(g.kv_a_proj);
    free(g.kv_a_norm);
    free(g.kv_b_proj);
    free(g.o_proj);
    model_close(&m);
}

static void test_mla_backward_q_compression(void **state)
{
    (void)state;
    check_mla("v2");
}
static void test_mla_backward_no_q_compression(void **state)
{
    (void)state;
    check_mla("lite");
}

static SwigluGrads swiglu_zero_grads(const SwigluWeights *w)
{
    return (SwigluGrads){ mat_grad(&w->gate), mat_grad(&w->up), mat_grad(&w->down) };
}

static void expect_swiglu(const char *gprefix, const char *who, const SwigluGrads *g)
{
    char name[96];
    snprintf(name, sizeof name, "%sgate_proj.weight", who);
    expect(gprefix, name, g->gate);
    snprintf(name, sizeof name, "%sup_proj.weight", who);
    expect(gprefix, name, g->up);
    snprintf(name, sizeof name, "%sdown_proj.weight", who);
    expect(gprefix, name, g->down);
    free(g->gate);
    free(g->up);
    free(g->down);
}

static void test_moe_backward_with_dropping(void **state)
{
    (void)state;
    Model m;
    if (model_open(&m, "tests/golden/v2", NULL)) fail_msg("%s", ds_last_error());
    const ModelConfig *c = m.cfg;
    const MoeWeights *w = &m.layers[1].moe;
    const int T = 10, D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok;
    const float *x = fx("moe", "x", NULL), *keep_f = fx("moe", "keep", NULL), *idx_f = fx("moe", "idx", NULL);
    bool keep[30];
    FfnScratch s;
    if (ffn_scratch_init(&s, c, T)) fail_msg("%s", ds_last_error());
    moe_route(x, w, c, T, &s); /* the same selection as PyTorch's */
    for (int r = 0; r < T * K; r++) {
        assert_int_equal(s.expert[r], (int)idx_f[r]);
        keep[r] = keep_f[r] != 0;
    }
    SwigluGrads eg[64];
    for (int e = 0; e < E; e++) eg[e] = swiglu_zero_grads(&w->experts[e]);
    MoeGrads g = { buf((size_t)E * D, 1), eg, swiglu_zero_grads(&w->shared) };
    float *dx = buf((size_t)T * D, 0);
    assert_int_equal(moe_backward(dx, &g, fx("moe", "dy", NULL), x, w, c, T, keep, NULL), 0);
    expect("moe", "dx", dx);
    expect("moe.grad", "gate.weight", g.router);
    for (int e = 0; e < E; e++) {
        char who[32];
        snprintf(who, sizeof who, "experts.%d.", e);
        expect_swiglu("moe.grad", who, &eg[e]);
    }
    expect_swiglu("moe.grad", "shared_experts.", &g.shared);
    free(dx);
    free(g.router);
    ffn_scratch_free(&s);
    model_close(&m);
}

static void test_cross_entropy_and_embedding(void **state)
{
    (void)state;
    const float *tf = fx("ce", "targets", NULL);
    int targets[5], tokens[6];
    for (int t = 0; t < 5; t++) targets[t] = (int)tf[t];
    float *dl = buf(5 * 32, 0);
    const double loss = cross_entropy(dl, fx("ce", "logits", NULL), targets, 5, 32);
    const float want = *fx("ce", "loss", NULL);
    printf("  cross-entropy loss %.9g (autograd %.9g)\n", loss, want);
    assert_true(fabs(loss - want) <= 1e-6 * fabs(want));
    expect("ce", "dlogits", dl);
    const float *tok = fx("embedding", "tokens", NULL);
    for (int t = 0; t < 6; t++) tokens[t] = (int)tok[t];
    float *dE = buf(10 * 4, 1); /* token 2 appears three times: gradients add */
    embedding_backward(dE, fx("embedding", "dh", NULL), tokens, 6, 4);
    expect("embedding", "dE", dE);
    free(dl);
    free(dE);
}

static int setup(void **state)
{
    (void)state;
    if (st_open("tests/golden/grad/components.safetensors", &fx_file)) {
        fprintf(stderr, "%s\n", ds_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    st_close(&fx_file);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_backward),
        cmocka_unit_test(test_linear_backward),
        cmocka_unit_test(test_rope_backward),
        cmocka_unit_test(test_swiglu_backward),
        cmocka_unit_test(test_router_backward),
        cmocka_unit_test(test_mla_backward_q_compression),
        cmocka_unit_test(test_mla_backward_no_q_compression),
        cmocka_unit_test(test_moe_backward_with_dropping),
        cmocka_unit_test(test_cross_entropy_and_embedding),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
