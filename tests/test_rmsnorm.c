/**
 * \file test_rmsnorm.c
 * \brief RMSNorm against a double-precision evaluation of docs/semantics.md §3.2:
 * y_i = w_i · x_i / sqrt((1/n) Σ x_j² + ε), ε inside the root, weight not offset by 1.
 */
#include "check.h"
#include "rmsnorm.h"

#include <math.h>
#include <stdlib.h>

static TestRng g_rng;

static int group_setup(void **state)
{
    (void)state;
    test_rng_seed(&g_rng, "rmsnorm");
    return 0;
}

/* docs/semantics.md §3.2 in double precision, for T rows of n. */
static void rmsnorm_double(float *y, const float *x, const float *w, int T, int n, double eps)
{
    for (int t = 0; t < T; t++) {
        double ms = 0;
        for (int i = 0; i < n; i++) ms += (double)x[t * n + i] * x[t * n + i];
        ms /= n;
        const double inv = 1.0 / sqrt(ms + eps);
        for (int i = 0; i < n; i++) y[t * n + i] = (float)((double)w[i] * x[t * n + i] * inv);
    }
}

/* Random x (rows of different scales) and w; compares rmsnorm_forward with the double formula. */
static void compare_random(int T, int n, float eps)
{
    float *x = malloc(sizeof(float) * T * n), *w = malloc(sizeof(float) * n);
    float *y = malloc(sizeof(float) * T * n), *want = malloc(sizeof(float) * T * n);
    assert_true(x && w && y && want);
    for (int t = 0; t < T; t++) {
        const float scale = powf(10.0f, (float)(t % 5) - 2); /* rows from 1e-2 to 1e2 */
        test_rng_fill(&g_rng, x + t * n, n, -scale, scale);
    }
    test_rng_fill(&g_rng, w, n, -2, 2);
    poison(y, (size_t)T * n);
    rmsnorm_forward(y, x, w, T, n, eps);
    rmsnorm_double(want, x, w, T, n, eps);
    /* |y| ≤ |w|·√n; a float32 mean of squares and one rsqrt are a few ulps off: 1e-6 relative */
    check_close("rmsnorm vs double", y, want, (size_t)T * n, 2e-6 * sqrt(n), 1e-6);
    free(x);
    free(w);
    free(y);
    free(want);
}

static void matches_double_precision(void **state)
{
    (void)state;
    compare_random(5, 37, 1e-6f);   /* odd width: exercises the dot product's tail */
    compare_random(3, 2048, 1e-6f); /* V2-Lite's hidden size */
    compare_random(2, 512, 1e-6f);  /* kv_lora_rank */
}

static void eps_inside_the_square_root(void **state)
{
    (void)state;
    /* mean square = 1e-6 = ε: inside the root gives x/sqrt(2e-6), outside x/(1e-3 + 1e-6) */
    enum { n = 64 };
    float x[n], w[n], y[n], want[n], outside[n];
    for (int i = 0; i < n; i++) {
        x[i] = i % 2 ? 1e-3f : -1e-3f;
        w[i] = 1;
    }
    poison(y, n);
    rmsnorm_forward(y, x, w, 1, n, 1e-6f);
    rmsnorm_double(want, x, w, 1, n, 1e-6);
    for (int i = 0; i < n; i++) outside[i] = (float)(x[i] / (sqrt(1e-6) + 1e-6));
    check_close("eps inside", y, want, n, 1e-5, 1e-6); /* |y| ≈ 0.707: float32 rounding */
    CheckStats st = check_stats(y, outside, n);
    assert_true(st.rel_l2 > 0.2); /* eps outside would be ~41 % off */
    /* and with a large eps against unit-scale inputs */
    test_rng_fill(&g_rng, x, n, -1, 1);
    test_rng_fill(&g_rng, w, n, -1, 1);
    poison(y, n);
    rmsnorm_forward(y, x, w, 1, n, 0.5f);
    rmsnorm_double(want, x, w, 1, n, 0.5);
    check_close("eps 0.5", y, want, n, 1e-6, 1e-6); /* |y| < 1.3: float32 rounding */
}

static void output_may_alias_input(void **state)
{
    (void)state;
    enum { T = 3, n = 45 };
    float x[T * n], w[n], y[T * n];
    test_rng_fill(&g_rng, x, T * n, -3, 3);
    test_rng_fill(&g_rng, w, n, -1, 1);
    poison(y, T * n);
    rmsnorm_forward(y, x, w, T, n, 1e-6f);
    rmsnorm_forward(x, x, w, T, n, 1e-6f);
    check_close("in place vs separate", x, y, T * n, 0, 0); /* same operations: bit-identical */
}

static void zero_row_stays_finite(void **state)
{
    (void)state;
    enum { n = 16 };
    float x[n] = { 0 }, w[n], y[n], want[n] = { 0 };
    test_rng_fill(&g_rng, w, n, -1, 1);
    poison(y, n);
    rmsnorm_forward(y, x, w, 1, n, 1e-6f);
    check_close("zero row", y, want, n, 0, -1); /* 0 · rsqrt(ε) is exactly 0 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_double_precision),
        cmocka_unit_test(eps_inside_the_square_root),
        cmocka_unit_test(output_may_alias_input),
        cmocka_unit_test(zero_row_stays_finite),
    };
    return cmocka_run_group_tests_name("rmsnorm", tests, group_setup, NULL);
}
