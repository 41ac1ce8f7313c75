/**
 * \file test_grad_adamw.c
 * \brief AdamW, the learning-rate schedules and global-norm clipping (ref/train_optim.c)
 *        against torch.optim.AdamW and torch.nn.utils.clip_grad_norm_.
 *
 * Evidence: tests/golden/grad/adamw.safetensors (tools/make_grad_golden.py): 976 parameters,
 * 12 fixed gradients (two of them 100× larger, so clipping engages), and PyTorch's parameters
 * after every step for warmup (3 steps) + cosine and warmup + the paper's step schedule.
 * Tolerance 1e-6 relative per step: PyTorch updates in float32, the C in double rounded to
 * float32, so the parameters differ by an ulp or so. Also: determinism (two runs bit-identical)
 * and refusal of bad hyper-parameters.
 */
#include "check.h"
#include "error.h"
#include "safetensors.h"
#include "train_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const AdamWConfig CFG = { .lr = 3e-3,
                                 .min_lr = 3e-4,
                                 .beta1 = 0.9,
                                 .beta2 = 0.95,
                                 .eps = 1e-8,
                                 .weight_decay = 0.1,
                                 .clip_norm = 1.0,
                                 .warmup_steps = 3,
                                 .total_steps = 12 };

static const StTensor *need(const StFile *f, const char *name)
{
    const StTensor *t = st_find(f, name);
    if (!t) fail_msg("adamw fixture: tensor '%s' missing", name);
    return t;
}

/* Runs the 12 steps under schedule s; compares every step's rate, norm and parameters. */
static void check_schedule(const char *kind, LrSchedule s, float *final_out)
{
    StFile f;
    if (st_open("tests/golden/grad/adamw.safetensors", &f)) fail_msg("%s", ds_last_error());
    const StTensor *init = need(&f, "init");
    const size_t n = init->nbytes / sizeof(float);
    char name[64];
    snprintf(name, sizeof name, "%s.params", kind);
    const float *want = need(&f, name)->data;
    snprintf(name, sizeof name, "%s.lr", kind);
    const float *want_lr = need(&f, name)->data;
    snprintf(name, sizeof name, "%s.norm", kind);
    const float *want_norm = need(&f, name)->data;
    const float *grads = need(&f, "grads")->data;
    AdamWConfig cfg = CFG;
    cfg.schedule = s;
    AdamW opt;
    if (adamw_init(&opt, &cfg, n)) fail_msg("%s", ds_last_error());
    float *p = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    memcpy(p, init->data, sizeof(float) * n);
    double worst = 0;
    for (int t = 1; t <= cfg.total_steps; t++) {
        memcpy(g, grads + (size_t)(t - 1) * n, sizeof(float) * n);
        const double lr = lr_at(&cfg, t);
        assert_true(fabs(lr - want_lr[t - 1]) <= 1e-6 * want_lr[t - 1]);
        const double norm = adamw_step(&opt, p, g);
        assert_true(fabs(norm - want_norm[t - 1]) <= 1e-6 * want_norm[t - 1]);
        char what[64];
        snprintf(what, sizeof what, "%s step %d", kind, t);
        CheckStats st = check_stats(p, want + (size_t)(t - 1) * n, n);
        if (st.rel_l2 > worst) worst = st.rel_l2;
        check_close(what, p, want + (size_t)(t - 1) * n, n, -1, 1e-6);
    }
    printf("%s: %d steps, worst relative error %.3g\n", kind, cfg.total_steps, worst);
    if (final_out) memcpy(final_out, p, sizeof(float) * n);
    free(p);
    free(g);
    adamw_free(&opt);
    st_close(&f);
}

static void test_adamw_cosine(void **state)
{
    (void)state;
    check_schedule("cosine", LR_COSINE, NULL);
}
static void test_adamw_step_schedule(void **state)
{
    (void)state;
    check_schedule("step", LR_STEP, NULL);
}

static void test_adamw_deterministic(void **state)
{
    (void)state;
    float a[976], b[976];
    check_schedule("cosine", LR_COSINE, a);
    check_schedule("cosine", LR_COSINE, b);
    assert_memory_equal(a, b, sizeof a);
}

static void test_adamw_refuses_bad_config(void **state)
{
    (void)state;
    AdamW opt;
    AdamWConfig c = CFG;
    c.beta2 = 1.0;
    assert_int_equal(adamw_init(&opt, &c, 4), -1);
    assert_string_equal(ds_last_error(), "optimizer: beta2 must be in [0, 1) (got 1)");
    c = CFG;
    c.lr = 0;
    assert_int_equal(adamw_init(&opt, &c, 4), -1);
    assert_string_equal(ds_last_error(), "optimizer: lr must be positive (got 0)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_cosine),
        cmocka_unit_test(test_adamw_step_schedule),
        cmocka_unit_test(test_adamw_deterministic),
        cmocka_unit_test(test_adamw_refuses_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
