/**
 * \file test_grad_attn.c
 * \brief Standard attention (MHA / GQA / MQA, ref/attention_std.c) in the trainer: forward and
 * gradients against PyTorch, a central-difference check, the whole model's gradients, refusals.
 *
 * Evidence: tests/golden/attn/{mha,gqa,mqa} are small random checkpoints and
 * tests/golden/grad/attn_<name>.safetensors their fixtures, made by tools/make_attn_golden.py,
 * whose attention is written from the formulas and checked there against PyTorch's
 * scaled_dot_product_attention (1e-7 apart). gqa: 4 query heads over 2 key/value heads, RoPE
 * on 4 of 8 columns, YaRN, group-limited routing, the three balance losses and dropping; mha: 2
 * heads, RoPE on the whole head (the paper's baseline), greedy routing; mqa: 4 heads over one
 * key/value head.
 *  - layer 0 on fresh random inputs (9 tokens): output and every gradient ≤ 1e-5 relative
 *    (float32 both sides, summation orders differ; measured about 1e-7), da NaN-poisoned first;
 *  - a directional central difference of the same layer (Richardson-extrapolated, the objective
 *    Σ dy ⊙ out summed in double, as tests/test_grad_fd.c argues the bound) for a and each of
 *    W^Q, W^K, W^V, W^O — independent of PyTorch;
 *  - whole-model parameter gradients ≤ 1e-4 relative per tensor (as test_grad_model.c), loss
 *    ≤ 1e-5 relative, the dropped count exact; every gradient NaN-poisoned first.
 */
#include "attention_std.h"
#include "check.h"
#include "config.h"
#include "error.h"
#include "model.h"
#include "safetensors.h"
#include "train_model.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TA = 9 }; /* tokens of the layer fixtures */

/* An open fixture: the checkpoint as a TrainModel (mutable float32 weights) and its tensors. */
typedef struct {
    Model m;
    TrainModel tm;
    StFile f;
} Fixture;

static void open_fixture(Fixture *x, const char *name, const TrainOptions *opt)
{
    char dir[96], path[128];
    snprintf(dir, sizeof dir, "tests/golden/attn/%s", name);
    snprintf(path, sizeof path, "tests/golden/grad/attn_%s.safetensors", name);
    const ModelOptions mo = { .for_training = true };
    if (model_open(&x->m, dir, &mo) || train_model_init(&x->tm, &x->m, opt) || st_open(path, &x->f))
        fail_msg("%s", ds_last_error());
}

static void close_fixture(Fixture *x)
{
    train_model_free(&x->tm);
    model_close(&x->m);
    st_close(&x->f);
}

static const float *fx(const Fixture *x, const char *name, size_t *n)
{
    const StTensor *t = st_find(&x->f, name);
    if (!t) fail_msg("attention fixture: tensor '%s' missing", name);
    if (n) *n = t->nbytes / sizeof(float);
    return t->data;
}

static void expect(const Fixture *x, const char *name, const float *got, double tol)
{
    size_t n;
    const float *want = fx(x, name, &n);
    const CheckStats st = check_stats(got, want, n);
    printf("  %-34s rel %.3g  max-abs %.3g\n", name, st.rel_l2, st.max_abs);
    check_close(name, got, want, n, -1, tol);
}

/* Layer 0's weights and their four gradient arrays in tm (zeroed). */
static StdAttnGrads layer0_grads(Fixture *x)
{
    const StdAttnWeights *w = &x->tm.layers[0].std;
    memset(x->tm.grads, 0, sizeof(float) * x->tm.n_params);
    return (StdAttnGrads){ train_grad(&x->tm, w->q_proj.data), train_grad(&x->tm, w->k_proj.data),
                           train_grad(&x->tm, w->v_proj.data), train_grad(&x->tm, w->o_proj.data) };
}

/* ---- layer 0 against autograd ------------------------------------------------------------ */

static void check_layer(const char *name)
{
    Fixture x;
    open_fixture(&x, name, NULL);
    const ModelConfig *c = &x.tm.cfg;
    const StdAttnWeights *w = &x.tm.layers[0].std;
    const size_t n = (size_t)TA * c->hidden_size;
    float *out = malloc(sizeof(float) * n), *da = malloc(sizeof(float) * n);
    poison(out, n);
    poison(da, n);
    printf("%s (%s, n_h %d, n_g %d):\n", name, config_attention_name(c->attention_type), c->num_attention_heads,
           c->num_key_value_heads);
    assert_int_equal(attn_std_forward(out, fx(&x, "attn.a", NULL), w, c, &x.tm.rope, TA), 0);
    expect(&x, "attn.out", out, 1e-5);
    const StdAttnGrads g = layer0_grads(&x);
    assert_int_equal(attn_std_backward(da, &g, fx(&x, "attn.dout", NULL), fx(&x, "attn.a", NULL), w, c, &x.tm.rope, TA),
                     0);
    expect(&x, "attn.da", da, 1e-5);
    expect(&x, "attn.grad.q_proj.weight", g.q_proj, 1e-5);
    expect(&x, "attn.grad.k_proj.weight", g.k_proj, 1e-5);
    expect(&x, "attn.grad.v_proj.weight", g.v_proj, 1e-5);
    expect(&x, "attn.grad.o_proj.weight", g.o_proj, 1e-5);
    free(out);
    free(da);
    close_fixture(&x);
}

static void test_attn_layer_mha(void **state)
{
    (void)state;
    check_layer("mha");
}
static void test_attn_layer_gqa(void **state)
{
    (void)state;
    check_layer("gqa");
}
static void test_attn_layer_mqa(void **state)
{
    (void)state;
    check_layer("mqa");
}

/* ---- central differences ----------------------------------------------------------------- */

typedef struct {
    const Fixture *x;
    const float *a, *dy;
    float *out;
} FdCtx;

/* J = Σ dy ⊙ attention(a), in double; *abs_sum = Σ |dy ⊙ out|. */
static double objective(const FdCtx *f, double *abs_sum)
{
    const ModelConfig *c = &f->x->tm.cfg;
    const size_t n = (size_t)TA * c->hidden_size;
    if (attn_std_forward(f->out, f->a, &f->x->tm.layers[0].std, c, &f->x->tm.rope, TA)) fail_msg("%s", ds_last_error());
    double J = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        J += (double)f->dy[i] * f->out[i];
        s += fabs((double)f->dy[i] * f->out[i]);
    }
    if (abs_sum) *abs_sum = s;
    return J;
}

static double shifted(const FdCtx *f, float *theta, const float *saved, const float *v, size_t n, float s)
{
    for (size_t j = 0; j < n; j++) theta[j] = saved[j] + s * v[j];
    const double J = objective(f, NULL);
    memcpy(theta, saved, sizeof(float) * n);
    return J;
}

/* |fd − Σ g v| ≤ 1e-3 |Σ g v| + 12 u Σ|dy ⊙ out| / h, fd the Richardson-extrapolated central
 * difference along a random direction v (test_grad_fd.c derives the bound). */
static void fd_check(const char *what, const FdCtx *f, float *theta, const float *grad, size_t n, uint64_t seed)
{
    const float h = 1e-2f;
    TestRng rng = { seed };
    float *v = malloc(sizeof(float) * n), *saved = malloc(sizeof(float) * n);
    test_rng_fill(&rng, v, n, -1, 1);
    memcpy(saved, theta, sizeof(float) * n);
    double abs_sum, an = 0;
    objective(f, &abs_sum);
    const double d_h = (shifted(f, theta, saved, v, n, h) - shifted(f, theta, saved, v, n, -h)) / (2.0 * h);
    const double d_h2 = (shifted(f, theta, saved, v, n, h / 2) - shifted(f, theta, saved, v, n, -h / 2)) / (double)h;
    const double fd = (4 * d_h2 - d_h) / 3;
    for (size_t j = 0; j < n; j++) an += (double)grad[j] * v[j];
    const double bound = 1e-3 * fabs(an) + 3 * 4 * FLT_EPSILON * abs_sum / h;
    printf("  %-8s fd %-+14.7g analytic %-+14.7g rel %.2g (bound %.2g)\n", what, fd, an, fabs(fd - an) / fabs(an),
           bound / fabs(an));
    free(v);
    free(saved);
    if (!(fabs(fd - an) <= bound)) fail_msg("%s: finite difference %.9g, backward %.9g", what, fd, an);
}

static void check_fd(const char *name)
{
    Fixture x;
    open_fixture(&x, name, NULL);
    const ModelConfig *c = &x.tm.cfg;
    const size_t n = (size_t)TA * c->hidden_size;
    TestRng rng = { 70 };
    float *a = malloc(sizeof(float) * n), *dy = malloc(sizeof(float) * n), *da = malloc(sizeof(float) * n);
    FdCtx f = { &x, a, dy, malloc(sizeof(float) * n) };
    test_rng_fill(&rng, a, n, -1, 1);
    test_rng_fill(&rng, dy, n, -1, 1);
    const StdAttnWeights *w = &x.tm.layers[0].std;
    const StdAttnGrads g = layer0_grads(&x);
    assert_int_equal(attn_std_backward(da, &g, dy, a, w, c, &x.tm.rope, TA), 0);
    printf("%s:\n", name);
    fd_check("a", &f, a, da, n, 71);
    const Mat *mats[] = { &w->q_proj, &w->k_proj, &w->v_proj, &w->o_proj };
    const float *grads[] = { g.q_proj, g.k_proj, g.v_proj, g.o_proj };
    const char *names[] = { "W^Q", "W^K", "W^V", "W^O" };
    for (int i = 0; i < 4; i++)
        fd_check(names[i], &f, (float *)mats[i]->data, grads[i], (size_t)mats[i]->rows * mats[i]->cols, 72 + i);
    free(a);
    free(dy);
    free(da);
    free(f.out);
    close_fixture(&x);
}

static void test_attn_fd(void **state)
{
    (void)state;
    check_fd("mha");
    check_fd("gqa");
    check_fd("mqa");
}

/* ---- the whole model ---------------------------------------------------------------------- */

static void check_model(const char *name, TrainOptions opt)
{
    Fixture x;
    open_fixture(&x, name, &opt);
    size_t T;
    const float *tok = fx(&x, "tokens", &T), *tgt = fx(&x, "targets", NULL);
    int *tokens = malloc(sizeof(int) * T), *targets = malloc(sizeof(int) * T);
    for (size_t t = 0; t < T; t++) {
        tokens[t] = (int)tok[t];
        targets[t] = (int)tgt[t];
    }
    poison(x.tm.grads, x.tm.n_params);
    TrainLoss L;
    if (train_forward_backward(&x.tm, tokens, targets, (int)T, &L)) fail_msg("%s", ds_last_error());
    const double want = fx(&x, "loss", NULL)[0];
    printf("%s: loss %.7f (autograd %.7f), dropped %d\n", name, L.loss, want, L.dropped);
    assert_true(fabs(L.loss - want) <= 1e-5 * fabs(want));
    assert_int_equal(L.dropped, (int)fx(&x, "dropped", NULL)[0]);
    size_t covered = 0;
    double worst = 0;
    for (size_t i = 0; i < x.f.n_tensors; i++) {
        const StTensor *t = &x.f.tensors[i];
        if (strncmp(t->name, "grad.", 5)) continue;
        const float *p = train_param(&x.tm, t->name + 5);
        if (!p) fail_msg("%s", ds_last_error());
        const size_t n = t->nbytes / sizeof(float);
        const CheckStats st = check_stats(train_grad(&x.tm, p), t->data, n);
        worst = fmax(worst, st.rel_l2);
        check_close(t->name + 5, train_grad(&x.tm, p), t->data, n, -1, 1e-4);
        covered += n;
    }
    printf("%s: %zu parameters, worst relative error %.3g\n", name, covered, worst);
    assert_int_equal(covered, x.tm.n_params); /* every weight once */
    free(tokens);
    free(targets);
    close_fixture(&x);
}

static void test_attn_model_gqa(void **state)
{
    (void)state;
    check_model("gqa", (TrainOptions){ .alpha1 = 0.003, .alpha2 = 0.05, .alpha3 = 0.02, .capacity_factor = 1.0 });
}
static void test_attn_model_mha(void **state)
{
    (void)state;
    check_model("mha", (TrainOptions){ .alpha1 = 0.001 });
}
static void test_attn_model_mqa(void **state)
{
    (void)state;
    check_model("mqa", (TrainOptions){ 0 });
}

/* ---- refusals ------------------------------------------------------------------------------- */

/* tests/golden/attn/gqa's config with `key` set to the JSON `value`, written to a scratch file:
 * config_load must fail with one line naming the key. */
static void refused(const char *key, const char *value)
{
    const char *path = "build/tests/attn_config.json";
    json_error_t err;
    json_t *j = json_load_file("tests/golden/attn/gqa/config.json", 0, &err);
    assert_non_null(j);
    json_object_set_new(j, key, json_loads(value, JSON_DECODE_ANY, &err));
    assert_int_equal(json_dump_file(j, path, 0), 0);
    json_decref(j);
    ModelConfig c;
    assert_int_equal(config_load(path, &c), -1);
    printf("  %s = %s: %s\n", key, value, ds_last_error());
    assert_non_null(strstr(ds_last_error(), key));
    remove(path);
}

static void test_attn_refusals(void **state)
{
    (void)state;
    refused("num_key_value_heads", "3");
    refused("attention_type", "\"mla-lite\"");
    refused("q_lora_rank", "8");
    refused("kv_lora_rank", "8");
    /* inference runs MLA only: opening for generation fails naming the key, and a model opened
     * for training still refuses a forward pass */
    Model m;
    assert_int_equal(model_open(&m, "tests/golden/attn/mha", NULL), -1);
    printf("  model_open: %s\n", ds_last_error());
    assert_non_null(strstr(ds_last_error(), "attention_type"));
    const ModelOptions mo = { .for_training = true };
    assert_int_equal(model_open(&m, "tests/golden/attn/mha", &mo), 0);
    const int tok = 3;
    assert_int_equal(model_forward(&m, &tok, 1, NULL, false), -1);
    assert_non_null(strstr(ds_last_error(), "attention_type"));
    model_close(&m);
    ModelConfig c;
    assert_int_equal(config_load("tests/golden/attn/mqa/config.json", &c), 0);
    assert_int_equal(c.num_key_value_heads, 1);
    assert_int_equal(attn_std_cache_elems(&c), 1 * (8 + 6)); /* k (d_h = 8) and v (d_v = 6) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attn_layer_mha), cmocka_unit_test(test_attn_layer_gqa),
        cmocka_unit_test(test_attn_layer_mqa), cmocka_unit_test(test_attn_fd),
        cmocka_unit_test(test_attn_model_gqa), cmocka_unit_test(test_attn_model_mha),
        cmocka_unit_test(test_attn_model_mqa), cmocka_unit_test(test_attn_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
