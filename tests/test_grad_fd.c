/**
 * \file test_grad_fd.c
 * \brief Each backward function against central finite differences of its own forward.
 *
 * Evidence independent of PyTorch: for a forward f, an upstream gradient dy and the objective
 * J(θ) = Σ_i dy_i f(θ)_i (summed in double), the backward's gradient g must predict the central
 * difference along a random direction v (uniform in [−1, 1]^n, a fixed seed per case):
 *     D(h) = (J(θ + h v) − J(θ − h v)) / 2h,  fd = (4 D(h/2) − D(h)) / 3   against   an = Σ_j g_j v_j.
 * (Richardson's extrapolation cancels the h² term of the central difference.) The forwards run in
 * float32, so fd carries two errors: truncation, O(h⁴), below 1e-3 |an| with h = 1e-2 on inputs
 * of size ~1 (1e-3 where a larger step would change the MoE's routing); and rounding, a few ulps
 * of each output, so at most about 4 u Σ|dy_i f_i| / h per D with u = 2^-23 (tripled by the
 * extrapolation). The test passes when |fd − an| ≤ 1e-3 |an| + 12 u Σ|dy_i f_i| / h; measured
 * errors are 1e-6 to 4e-3 of |an|, each well inside its bound. A wrong term in a
 * backward (a missing transpose, a sign, a lost path) is an O(1) relative error. Routing (the
 * top-K choice and token dropping) is discrete: the MoE cases check that θ ± h v route every
 * token to the same experts as θ, so the difference measures the gradient of one fixed mask.
 */
#include "balance.h"
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
#include "train_model.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A forward under test: writes n_out floats from the parameters its context points at. */
typedef struct {
    void (*forward)(void *ctx, float *out);
    void *ctx;
    size_t n_out;
    const float *dy; /* [n_out] upstream gradient */
} Fn;

static double objective(const Fn *f, float *out, double *abs_sum)
{
    f->forward(f->ctx, out);
    double J = 0, a = 0;
    for (size_t i = 0; i < f->n_out; i++) {
        J += (double)f->dy[i] * out[i];
        a += fabs((double)f->dy[i] * out[i]);
    }
    if (abs_sum) *abs_sum = a;
    return J;
}

/* J(θ + s v) with θ restored from saved afterwards. */
static double shifted(const Fn *f, float *theta, const float *saved, const float *v, size_t n, float s, float *out)
{
    for (size_t j = 0; j < n; j++) theta[j] = saved[j] + s * v[j];
    const double J = objective(f, out, NULL);
    memcpy(theta, saved, sizeof(float) * n);
    return J;
}

/* The directional check of grad [n] for the parameter array theta [n] (restored afterwards). */
static void fd_check(const char *what, const Fn *f, float *theta, const float *grad, size_t n, float h, uint64_t seed)
{
    TestRng rng = { seed };
    float *v = malloc(sizeof(float) * n), *saved = malloc(sizeof(float) * n);
    float *out = malloc(sizeof(float) * f->n_out);
    test_rng_fill(&rng, v, n, -1, 1);
    memcpy(saved, theta, sizeof(float) * n);
    double abs_sum, an = 0;
    objective(f, out, &abs_sum);
    const double d_h = (shifted(f, theta, saved, v, n, h, out) - shifted(f, theta, saved, v, n, -h, out)) / (2.0 * h);
    const double d_h2 =
        (shifted(f, theta, saved, v, n, h / 2, out) - shifted(f, theta, saved, v, n, -h / 2, out)) / (double)h;
    const double fd = (4 * d_h2 - d_h) / 3; /* Richardson: the h² terms cancel */
    for (size_t j = 0; j < n; j++) an += (double)grad[j] * v[j];
    const double bound = 1e-3 * fabs(an) + 3 * 4 * FLT_EPSILON * abs_sum / h;
    printf("  %-28s fd %-+14.7g analytic %-+14.7g rel %.2g (bound %.2g)\n", what, fd, an, fabs(fd - an) / fabs(an),
           bound / fabs(an));
    free(v);
    free(saved);
    free(out);
    if (!(fabs(fd - an) <= bound)) fail_msg("%s: finite difference %.9g, backward %.9g", what, fd, an);
}

static float *rnd(TestRng *rng, size_t n, float lo, float hi)
{
    float *p = malloc(sizeof(float) * n);
    test_rng_fill(rng, p, n, lo, hi);
    return p;
}

/* ---- RMSNorm, linear, RoPE, SwiGLU -------------------------------------------------------- */

enum { T = 6, N = 20, M = 12 };

typedef struct {
    float *x, *w;
} NormCtx;
static void norm_fwd(void *c, float *out)
{
    NormCtx *n = c;
    rmsnorm_forward(out, n->x, n->w, T, N, 1e-6f);
}

static void test_fd_rmsnorm(void **state)
{
    (void)state;
    TestRng rng = { 11 };
    NormCtx c = { rnd(&rng, T * N, -1, 1), rnd(&rng, N, 0.5f, 1.5f) };
    float *dy = rnd(&rng, T * N, -1, 1), *dx = malloc(sizeof(float) * T * N), *dw = calloc(N, sizeof(float));
    rmsnorm_backward(dx, dw, dy, c.x, c.w, T, N, 1e-6f);
    const Fn f = { norm_fwd, &c, T * N, dy };
    fd_check("rmsnorm dx", &f, c.x, dx, T * N, 1e-2f, 1);
    fd_check("rmsnorm dw", &f, c.w, dw, N, 1e-2f, 2);
    free(c.x);
    free(c.w);
    free(dy);
    free(dx);
    free(dw);
}

typedef struct {
    float *x;
    Mat W;
} LinCtx;
static void lin_fwd(void *c, float *out)
{
    LinCtx *l = c;
    linear(out, l->x, &l->W, T);
}

static void test_fd_linear(void **state)
{
    (void)state;
    TestRng rng = { 12 };
    float *Wd = rnd(&rng, M * N, -1, 1);
    LinCtx c = { rnd(&rng, T * N, -1, 1), { Wd, DT_F32, M, N } };
    float *dy = rnd(&rng, T * M, -1, 1), *dx = malloc(sizeof(float) * T * N), *dW = calloc(M * N, sizeof(float));
    linear_backward(dx, dW, dy, c.x, &c.W, T);
    const Fn f = { lin_fwd, &c, T * M, dy };
    fd_check("linear dx", &f, c.x, dx, T * N, 1e-2f, 3);
    fd_check("linear dW", &f, Wd, dW, M * N, 1e-2f, 4);
    free(c.x);
    free(Wd);
    free(dy);
    free(dx);
    free(dW);
}

typedef struct {
    float *x;
    Rope r;
} RopeCtx;
static const int rope_pos[T] = { 0, 1, 7, 100, 1000, 4000 };
static void rope_fwd(void *c, float *out)
{
    RopeCtx *r = c;
    for (int t = 0; t < T; t++) {
        memcpy(out + t * r->r.dim, r->x + t * r->r.dim, sizeof(float) * r->r.dim);
        rope_rotate(out + t * r->r.dim, &r->r, rope_pos[t]);
    }
}

static void test_fd_rope(void **state)
{
    (void)state;
    ModelConfig cfg;
    RopeCtx c;
    if (config_load("tests/golden/v2/config.json", &cfg) || rope_init(&c.r, &cfg)) fail_msg("%s", ds_last_error());
    c.r.cos_sin_scale = 1.25f; /* a factor ≠ 1, so the transpose keeps it */
    const int dr = c.r.dim;
    TestRng rng = { 13 };
    c.x = rnd(&rng, (size_t)T * dr, -1, 1);
    float *dy = rnd(&rng, (size_t)T * dr, -1, 1), *dx = malloc(sizeof(float) * T * dr);
    memcpy(dx, dy, sizeof(float) * T * dr);
    for (int t = 0; t < T; t++) rope_rotate_backward(dx + t * dr, &c.r, rope_pos[t]);
    const Fn f = { rope_fwd, &c, (size_t)T * dr, dy };
    fd_check("rope dx", &f, c.x, dx, (size_t)T * dr, 1e-2f, 5);
    free(c.x);
    free(dy);
    free(dx);
}

typedef struct {
    float *x;
    SwigluWeights w;
    float *hidden;
} SwiCtx;
static void swi_fwd(void *c, float *out)
{
    SwiCtx *s = c;
    swiglu_forward(out, s->x, &s->w, T, s->hidden);
}

static void test_fd_swiglu(void **state)
{
    (void)state;
    TestRng rng = { 14 };
    float *g = rnd(&rng, M * N, -1, 1), *u = rnd(&rng, M * N, -1, 1), *d = rnd(&rng, N * M, -1, 1);
    SwiCtx c = { rnd(&rng, T * N, -1, 1),
                 { { g, DT_F32, M, N }, { u, DT_F32, M, N }, { d, DT_F32, N, M } },
                 malloc(sizeof(float) * 2 * T * M) };
    float *dy = rnd(&rng, T * N, -1, 1), *dx = malloc(sizeof(float) * T * N);
    SwigluGrads gr = { calloc(M * N, 4), calloc(M * N, 4), calloc(N * M, 4) };
    assert_int_equal(swiglu_backward(dx, &gr, dy, c.x, &c.w, T), 0);
    const Fn f = { swi_fwd, &c, T * N, dy };
    fd_check("swiglu dx", &f, c.x, dx, T * N, 1e-2f, 6);
    fd_check("swiglu dW_gate", &f, g, gr.gate, M * N, 1e-2f, 7);
    fd_check("swiglu dW_up", &f, u, gr.up, M * N, 1e-2f, 8);
    fd_check("swiglu dW_down", &f, d, gr.down, N * M, 1e-2f, 9);
    free(c.x);
    free(g);
    free(u);
    free(d);
    free(c.hidden);
    free(dy);
    free(dx);
    free(gr.gate);
    free(gr.up);
    free(gr.down);
}

/* ---- router, cross-entropy -------------------------------------------------------------- */

typedef struct {
    float *logits;
    const ModelConfig *cfg;
    const int *idx;
} RouterCtx;
static void router_fwd(void *c, float *out)
{
    RouterCtx *r = c;
    const int E = r->cfg->n_routed_experts, K = r->cfg->num_experts_per_tok;
    for (int t = 0; t < T; t++) {
        float s[64];
        int idx[64];
        router_scores(s, r->logits + t * E, E, r->cfg->scoring_func);
        router_select(idx, out + t * K, s, NULL, r->cfg);
        for (int k = 0; k < K; k++)
            if (idx[k] != r->idx[t * K + k]) fail_msg("router: the step changed token %d's experts", t);
    }
}

static void check_router_fd(const char *what, const ModelConfig *cfg, uint64_t seed)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    TestRng rng = { seed };
    float *logits = rnd(&rng, (size_t)T * E, -2, 2), *dw = rnd(&rng, (size_t)T * K, -1, 1);
    float *dl = malloc(sizeof(float) * T * E), w[64];
    int idx[T * 16];
    for (int t = 0; t < T; t++) {
        float s[64];
        router_scores(s, logits + t * E, E, cfg->scoring_func);
        router_select(idx + t * K, w, s, NULL, cfg);
        router_backward(dl + t * E, s, idx + t * K, dw + t * K, cfg);
    }
    RouterCtx c = { logits, cfg, idx };
    const Fn f = { router_fwd, &c, (size_t)T * K, dw };
    fd_check(what, &f, logits, dl, (size_t)T * E, 1e-2f, seed + 1);
    free(logits);
    free(dw);
    free(dl);
}

static void test_fd_router(void **state)
{
    (void)state;
    ModelConfig cfg;
    if (config_load("tests/golden/v2/config.json", &cfg)) fail_msg("%s", ds_last_error());
    check_router_fd("router group-limited ×16", &cfg, 20);
    cfg.topk_method = TOPK_GREEDY;
    cfg.norm_topk_prob = true;
    check_router_fd("router norm_topk_prob", &cfg, 22);
    cfg.scoring_func = SCORING_SIGMOID;
    check_router_fd("router sigmoid", &cfg, 24);
}

typedef struct {
    float *logits;
    int targets[T];
    float *scratch;
} CeCtx;
static void ce_fwd(void *c, float *out)
{
    CeCtx *e = c;
    out[0] = (float)cross_entropy(e->scratch, e->logits, e->targets, T, N);
}

static void test_fd_cross_entropy(void **state)
{
    (void)state;
    TestRng rng = { 30 };
    CeCtx c = { rnd(&rng, T * N, -3, 3), { 0, 5, 19, 5, 2, 11 }, malloc(sizeof(float) * T * N) };
    float *dl = malloc(sizeof(float) * T * N);
    const float one = 1;
    cross_entropy(dl, c.logits, c.targets, T, N);
    const Fn f = { ce_fwd, &c, 1, &one };
    fd_check("cross-entropy dlogits", &f, c.logits, dl, T * N, 1e-2f, 31);
    free(c.logits);
    free(c.scratch);
    free(dl);
}

typedef struct {
    float *E;
    int tokens[T];
} EmbCtx;
static void emb_fwd(void *c, float *out)
{
    EmbCtx *e = c;
    for (int t = 0; t < T; t++) memcpy(out + t * M, e->E + (size_t)e->tokens[t] * M, sizeof(float) * M);
}

static void test_fd_embedding(void **state)
{
    (void)state;
    TestRng rng = { 32 };
    EmbCtx c = { rnd(&rng, N * M, -1, 1), { 3, 0, 3, 19, 7, 3 } }; /* token 3 three times */
    float *dy = rnd(&rng, T * M, -1, 1), *dE = calloc(N * M, sizeof(float));
    embedding_backward(dE, dy, c.tokens, T, M);
    const Fn f = { emb_fwd, &c, T * M, dy };
    fd_check("embedding dE", &f, c.E, dE, N * M, 1e-2f, 33);
    free(c.E);
    free(dy);
    free(dE);
}

/* ---- MLA and the MoE layer, on golden checkpoint layers (widened to float32) ------------- */

/* A float32 copy of a stored matrix (caller frees m->data). */
static Mat widen(const Mat *src)
{
    const size_t n = (size_t)src->rows * src->cols;
    float *p = NULL; /* an absent weight stays absent */
    if (src->data) {
        p = malloc(sizeof(float) * n);
        dtype_widen(p, src->data, src->dtype, 0, n);
    }
    return (Mat){ p, DT_F32, src->rows, src->cols };
}

typedef struct {
    float *a;
    MlaWeights w;
    const ModelConfig *cfg;
    const Rope *rope;
    int T;
} MlaCtx;
static void mla_fwd(void *c, float *out)
{
    MlaCtx *m = c;
    LatentCache cache;
    MlaScratch s;
    if (latent_cache_init(&cache, m->cfg, m->T) || mla_scratch_init(&s, m->cfg, m->T, m->T))
        fail_msg("%s", ds_last_error());
    mla_forward(out, m->a, &m->w, &cache, m->cfg, m->rope, 0, m->T, MLA_EXPANDED, &s);
    latent_cache_free(&cache);
    mla_scratch_free(&s);
}

static void check_mla_fd(const char *name)
{
    char dir[64];
    snprintf(dir, sizeof dir, "tests/golden/%s", name);
    Model m;
    if (model_open(&m, dir, NULL)) fail_msg("%s", ds_last_error());
    const ModelConfig *c = m.cfg;
    const MlaWeights *src = &m.layers[0].attn;
    const int Tm = 9, D = c->hidden_size;
    MlaCtx x = { NULL, *src, c, &m.rope, Tm };
    Mat *mats[] = { &x.w.q_proj, &x.w.q_a_proj, &x.w.q_b_proj, &x.w.kv_a_proj, &x.w.kv_b_proj, &x.w.o_proj };
    const char *names[] = { "W^UQ;W^QR (q_proj)", "W^DQ", "W^UQ;W^QR (q_b)", "W^DKV;W^KR", "W^UK;W^UV", "W^O" };
    for (int i = 0; i < 6; i++) *mats[i] = widen(mats[i]);
    TestRng rng = { 40 };
    x.a = rnd(&rng, (size_t)Tm * D, -1, 1);
    float *dy = rnd(&rng, (size_t)Tm * D, -1, 1), *da = malloc(sizeof(float) * Tm * D);
    float *g[6];
    for (int i = 0; i < 6; i++) g[i] = calloc((size_t)mats[i]->rows * mats[i]->cols + 1, sizeof(float));
    float *g_qn = calloc(c->q_lora_rank + 1, sizeof(float)), *g_kvn = calloc(c->kv_lora_rank, sizeof(float));
    const MlaGrads grads = { g[0], g[1], g_qn, g[2], g[3], g_kvn, g[4], g[5] };
    assert_int_equal(mla_backward(da, &grads, dy, x.a, &x.w, c, &m.rope, Tm), 0);
    const Fn f = { mla_fwd, &x, (size_t)Tm * D, dy };
    fd_check("mla da", &f, x.a, da, (size_t)Tm * D, 1e-2f, 41);
    for (int i = 0; i < 6; i++)
        if (mats[i]->data)
            fd_check(names[i], &f, (float *)mats[i]->data, g[i], (size_t)mats[i]->rows * mats[i]->cols, 1e-2f, 42 + i);
    fd_check("kv_a_layernorm", &f, (float *)x.w.kv_a_norm, g_kvn, c->kv_lora_rank, 1e-2f, 50);
    if (c->q_lora_rank) fd_check("q_a_layernorm", &f, (float *)x.w.q_a_norm, g_qn, c->q_lora_rank, 1e-2f, 51);
    for (int i = 0; i < 6; i++) {
        free((void *)mats[i]->data);
        free(g[i]);
    }
    free(x.a);
    free(dy);
    free(da);
    free(g_qn);
    free(g_kvn);
    model_close(&m);
}

static void test_fd_mla_q_compression(void **state)
{
    (void)state;
    check_mla_fd("v2");
}
static void test_fd_mla_no_q_compression(void **state)
{
    (void)state;
    check_mla_fd("lite");
}

typedef struct {
    float *x;
    MoeWeights w;
    const ModelConfig *cfg;
    const bool *keep;
    const int *idx;
} MoeCtx;
enum { TM = 10 };
static void moe_fwd(void *c, float *out)
{
    MoeCtx *m = c;
    FfnScratch s;
    if (ffn_scratch_init(&s, m->cfg, TM)) fail_msg("%s", ds_last_error());
    moe_route(m->x, &m->w, m->cfg, TM, &s);
    for (int r = 0; r < TM * m->cfg->num_experts_per_tok; r++)
        if (s.expert[r] != m->idx[r]) fail_msg("moe: the step changed assignment %d's expert", r);
    moe_forward_kept(out, m->x, &m->w, m->cfg, TM, m->keep, &s);
    ffn_scratch_free(&s);
}

static void test_fd_moe_with_dropping(void **state)
{
    (void)state;
    Model m;
    if (model_open(&m, "tests/golden/v2", NULL)) fail_msg("%s", ds_last_error());
    const ModelConfig *c = m.cfg;
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok;
    MoeCtx x = { NULL, m.layers[1].moe, c, NULL, NULL };
    SwigluWeights experts[8];
    x.w.router = widen(&x.w.router);
    for (int e = 0; e < E; e++)
        experts[e] =
            (SwigluWeights){ widen(&x.w.experts[e].gate), widen(&x.w.experts[e].up), widen(&x.w.experts[e].down) };
    x.w.experts = experts;
    x.w.shared.down = widen(&x.w.shared.down);
    TestRng rng = { 60 };
    x.x = rnd(&rng, (size_t)TM * D, -1, 1);
    float *dy = rnd(&rng, (size_t)TM * D, -1, 1), *dx = malloc(sizeof(float) * TM * D);
    FfnScratch s; /* the routing and a capacity-0.75 drop */
    if (ffn_scratch_init(&s, c, TM)) fail_msg("%s", ds_last_error());
    moe_route(x.x, &x.w, c, TM, &s);
    bool keep[TM * 8];
    int idx[TM * 8];
    const int dropped = drop_tokens(keep, s.expert, s.weight, NULL, TM, K, E, c->n_group, 0.75);
    printf("  %d of %d pairs dropped\n", dropped, TM * K);
    assert_true(dropped > 0);
    memcpy(idx, s.expert, sizeof(int) * TM * K);
    x.keep = keep;
    x.idx = idx;
    SwigluGrads eg[8];
    float *gsh = calloc((size_t)D * x.w.shared.down.cols, sizeof(float));
    for (int e = 0; e < E; e++)
        eg[e] = (SwigluGrads){ calloc((size_t)experts[e].gate.rows * D, 4), calloc((size_t)experts[e].up.rows * D, 4),
                               calloc((size_t)D * experts[e].down.cols, 4) };
    SwigluGrads shg = { calloc((size_t)x.w.shared.gate.rows * D, 4), calloc((size_t)x.w.shared.up.rows * D, 4), gsh };
    const MoeGrads grads = { calloc((size_t)E * D, 4), eg, shg };
    assert_int_equal(moe_backward(dx, &grads, dy, x.x, &x.w, c, TM, keep, NULL), 0);
    const Fn f = { moe_fwd, &x, (size_t)TM * D, dy };
    fd_check("moe dx", &f, x.x, dx, (size_t)TM * D, 1e-3f, 61);
    fd_check("moe router W_gate", &f, (float *)x.w.router.data, grads.router, (size_t)E * D, 1e-3f, 62);
    const int e = idx[0]; /* the first token's first expert */
    fd_check("moe expert W_gate", &f, (float *)experts[e].gate.data, eg[e].gate, (size_t)experts[e].gate.rows * D,
             1e-2f, 63);
    fd_check("moe expert W_down", &f, (float *)experts[e].down.data, eg[e].down, (size_t)D * experts[e].down.cols,
             1e-2f, 64);
    fd_check("moe shared W_down", &f, (float *)x.w.shared.down.data, gsh, (size_t)D * x.w.shared.down.cols, 1e-2f, 65);
    for (int i = 0; i < E; i++) {
        free((void *)experts[i].gate.data);
        free((void *)experts[i].up.data);
        free((void *)experts[i].down.data);
        free(eg[i].gate);
        free(eg[i].up);
        free(eg[i].down);
    }
    free((void *)x.w.router.data);
    free((void *)x.w.shared.down.data);
    free(shg.gate);
    free(shg.up);
    free(gsh);
    free(grads.router);
    free(x.x);
    free(dy);
    free(dx);
    ffn_scratch_free(&s);
    model_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_rmsnorm),
        cmocka_unit_test(test_fd_linear),
        cmocka_unit_test(test_fd_rope),
        cmocka_unit_test(test_fd_swiglu),
        cmocka_unit_test(test_fd_router),
        cmocka_unit_test(test_fd_cross_entropy),
        cmocka_unit_test(test_fd_embedding),
        cmocka_unit_test(test_fd_mla_q_compression),
        cmocka_unit_test(test_fd_mla_no_q_compression),
        cmocka_unit_test(test_fd_moe_with_dropping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
