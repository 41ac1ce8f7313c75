/**
 * \file test_grad_model.c
 * \brief Whole-model parameter gradients (ref/train_model.c) against PyTorch autograd.
 *
 * Evidence: tools/make_grad_golden.py implements the training loss of DeepSeek-V2 from the paper's
 * formulas in PyTorch (MLA, MoE with group-limited or greedy routing, the three balance losses,
 * device-level token dropping, cross-entropy) and saves autograd's gradient of every weight of two
 * small checkpoints, under their checkpoint names:
 *  - tests/golden/v2: query compression, 4 expert groups with group-limited routing (2 kept),
 *    routed_scaling_factor 16, YaRN; α₁ = 0.003, α₂ = 0.05, α₃ = 0.02, capacity factor 1 (drops);
 *  - tests/golden/lite: no query compression, greedy routing, YaRN; α₁ = 0.001, no dropping.
 * Tolerance 1e-4 relative (‖a − b‖/‖b‖) per weight tensor: both sides run float32 with different
 * summation orders over ~20 chained operations; measured errors are near 1e-6, so a wrong term
 * (a missing transpose, a lost residual path, a dropped pair's gradient) shows as O(1).
 */
#include "check.h"
#include "error.h"
#include "model.h"
#include "safetensors.h"
#include "train_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The TrainOptions the fixture was made with (tools/make_grad_golden.py's OPTIONS). */
static void check_model(const char *name, TrainOptions opt)
{
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "tests/golden/%s", name);
    snprintf(path, sizeof path, "tests/golden/grad/model_%s.safetensors", name);
    Model m;
    StFile f;
    if (model_open(&m, dir, NULL)) fail_msg("%s", ds_last_error());
    if (st_open(path, &f)) fail_msg("%s", ds_last_error());
    TrainModel tm;
    if (train_model_init(&tm, &m, &opt)) fail_msg("%s", ds_last_error());
    const StTensor *tok = st_find(&f, "tokens"), *tgt = st_find(&f, "targets");
    assert_non_null(tok);
    assert_non_null(tgt);
    const int T = (int)tok->shape[0];
    int *tokens = malloc(sizeof(int) * T), *targets = malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) {
        tokens[t] = (int)((const float *)tok->data)[t];
        targets[t] = (int)((const float *)tgt->data)[t];
    }
    poison(tm.grads, tm.n_params); /* every gradient must be written */
    TrainLoss L;
    if (train_forward_backward(&tm, tokens, targets, T, &L)) fail_msg("%s", ds_last_error());

    const float want_loss = *(const float *)st_find(&f, "loss")->data;
    const float want_bal = *(const float *)st_find(&f, "balance")->data;
    const int want_drop = (int)*(const float *)st_find(&f, "dropped")->data;
    printf("%s: loss %.7f (autograd %.7f), balance %.7g (%.7g), dropped %d (%d)\n", name, L.loss, want_loss, L.balance,
           want_bal, L.dropped, want_drop);
    assert_int_equal(L.dropped, want_drop);
    assert_true(fabs(L.loss - want_loss) <= 1e-5 * fabs(want_loss));
    assert_true(fabs(L.balance - want_bal) <= 1e-5 * fabs(want_bal) + 1e-9);

    size_t covered = 0;
    double worst = 0;
    const char *worst_name = "";
    for (size_t i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        if (strncmp(t->name, "grad.", 5)) continue;
        const float *p = train_param(&tm, t->name + 5);
        if (!p) fail_msg("%s", ds_last_error());
        const size_t n = t->nbytes / sizeof(float);
        const float *got = train_grad(&tm, p);
        CheckStats st = check_stats(got, t->data, n);
        if (st.rel_l2 > worst) {
            worst = st.rel_l2;
            worst_name = t->name + 5;
        }
        check_close(t->name + 5, got, t->data, n, -1, 1e-4);
        covered += n;
    }
    printf("%s: %zu parameters, worst relative error %.3g (%s)\n", name, covered, worst, worst_name);
    assert_int_equal(covered, tm.n_params); /* the fixture names every weight once */
    free(tokens);
    free(targets);
    train_model_free(&tm);
    st_close(&f);
    model_close(&m);
}

static void test_grad_model_v2(void **state)
{
    (void)state;
    check_model("v2", (TrainOptions){ .alpha1 = 0.003, .alpha2 = 0.05, .alpha3 = 0.02, .capacity_factor = 1.0 });
}

static void test_grad_model_lite(void **state)
{
    (void)state;
    check_model("lite", (TrainOptions){ .alpha1 = 0.001 });
}

/* Batches by accumulation: the same sequence with weights 0.25 and 0.75 must give autograd's
 * gradient of that sequence, 1e-4 relative per weight tensor as above. */
static void test_grad_model_accumulates(void **state)
{
    (void)state;
    Model m;
    StFile f;
    TrainModel tm;
    const TrainOptions opt = { .alpha1 = 0.003, .alpha2 = 0.05, .alpha3 = 0.02, .capacity_factor = 1.0 };
    if (model_open(&m, "tests/golden/v2", NULL) || st_open("tests/golden/grad/model_v2.safetensors", &f) ||
        train_model_init(&tm, &m, &opt))
        fail_msg("%s", ds_last_error());
    const StTensor *tok = st_find(&f, "tokens"), *tgt = st_find(&f, "targets");
    const int T = (int)tok->shape[0];
    int tokens[64], targets[64];
    for (int t = 0; t < T; t++) {
        tokens[t] = (int)((const float *)tok->data)[t];
        targets[t] = (int)((const float *)tgt->data)[t];
    }
    memset(tm.grads, 0, sizeof(float) * tm.n_params);
    TrainLoss L;
    if (train_accumulate(&tm, tokens, targets, T, 0.25, &L) || train_accumulate(&tm, tokens, targets, T, 0.75, &L))
        fail_msg("%s", ds_last_error());
    for (size_t i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        if (strncmp(t->name, "grad.", 5)) continue;
        const float *p = train_param(&tm, t->name + 5);
        check_close(t->name + 5, train_grad(&tm, p), t->data, t->nbytes / sizeof(float), -1, 1e-4);
    }
    train_model_free(&tm);
    st_close(&f);
    model_close(&m);
}

/* Bad input: one error line, nothing computed. */
static void test_grad_model_refuses_bad_ids(void **state)
{
    (void)state;
    Model m;
    if (model_open(&m, "tests/golden/lite", NULL)) fail_msg("%s", ds_last_error());
    TrainModel tm;
    if (train_model_init(&tm, &m, NULL)) fail_msg("%s", ds_last_error());
    const int tokens[2] = { 1, 2 }, targets[2] = { 3, 512 };
    TrainLoss L;
    assert_int_equal(train_forward_backward(&tm, tokens, targets, 2, &L), -1);
    assert_string_equal(ds_last_error(), "training token 1: id 2 → target 512 outside the vocabulary [0, 512)");
    assert_int_equal(train_forward_backward(&tm, tokens, targets, 0, &L), -1);
    assert_null(train_param(&tm, "model.layers.9.input_layernorm.weight"));
    assert_string_equal(ds_last_error(), "no training parameter named 'model.layers.9.input_layernorm.weight'");
    train_model_free(&tm);
    const TrainOptions negative = { .capacity_factor = -1 };
    assert_int_equal(train_model_init(&tm, &m, &negative), -1);
    assert_string_equal(ds_last_error(), "training options: alpha1/alpha2/alpha3/capacity_factor must be ≥ 0");
    model_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_model_v2),
        cmocka_unit_test(test_grad_model_lite),
        cmocka_unit_test(test_grad_model_accumulates),
        cmocka_unit_test(test_grad_model_refuses_bad_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
