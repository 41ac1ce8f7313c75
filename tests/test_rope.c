/**
 * \file test_rope.c
 * \brief Decoupled RoPE with YaRN (docs/semantics.md §3.5): frequencies against docs/semantics.md §3.5.2's table and a
 * double-precision evaluation of the ramp, the mscale factors, and the interleaved-pair rotation.
 */
#include "check.h"
#include "rope.h"
#include "yarn_config.h"

#include <math.h>
#include <string.h>

static TestRng g_rng;

static int group_setup(void **state)
{
    (void)state;
    test_rng_seed(&g_rng, "rope");
    return 0;
}

/* DeepSeek-V2's attention and RoPE settings (docs/semantics.md §1.1). */
static ModelConfig v2_config(void)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.qk_nope_head_dim = 128;
    c.qk_rope_head_dim = 64;
    test_v2_rope(&c, true);
    return c;
}

static Rope init(const ModelConfig *c)
{
    Rope r;
    assert_int_equal(rope_init(&r, c), 0);
    assert_int_equal(r.dim, c->qk_rope_head_dim);
    return r;
}

/* YaRN's frequencies in double precision, straight from docs/semantics.md §3.5.2. */
static void yarn_inv_freq_double(double *out, const ModelConfig *c)
{
    const int dim = c->qk_rope_head_dim;
    const double theta = c->rope_theta, L0 = c->rope_original_max_position;
    const double cd_fast = dim * log(L0 / (2 * M_PI * c->rope_beta_fast)) / (2 * log(theta));
    const double cd_slow = dim * log(L0 / (2 * M_PI * c->rope_beta_slow)) / (2 * log(theta));
    const double low = fmax(floor(cd_fast), 0);
    double high = fmin(ceil(cd_slow), dim - 1);
    if (low == high) high += 0.001;
    for (int i = 0; i < dim / 2; i++) {
        const double extra = pow(theta, -2.0 * i / dim), inter = extra / c->rope_factor;
        const double ramp = fmin(fmax((i - low) / (high - low), 0), 1);
        out[i] = inter * ramp + extra * (1 - ramp);
    }
}

/* got[i] / want[i] against 1 (relative error per element) through check_close. */
static void check_ratio(const char *what, const float *got, const double *want, int n, double tol)
{
    float ratio[ROPE_MAX_DIM], ones[ROPE_MAX_DIM];
    for (int i = 0; i < n; i++) {
        ratio[i] = (float)(got[i] / want[i]);
        ones[i] = 1;
    }
    check_close(what, ratio, ones, (size_t)n, tol, -1);
}

static void yarn_frequencies_match_spec_table(void **state)
{
    (void)state;
    const ModelConfig c = v2_config();
    const Rope r = init(&c);
    static const int idx[8] = { 0, 8, 10, 11, 16, 22, 23, 31 };
    static const double want[8] = { 1.0, 0.1, 0.0562341, 0.0390069, 0.0055, 1.77828e-4, 3.33380e-5, 3.33380e-6 };
    float got[8];
    for (int k = 0; k < 8; k++) got[k] = r.inv_freq[idx[k]];
    check_ratio("docs/semantics.md §3.5.2 table", got, want, 8, 1e-5); /* the table has 6 significant digits */
}

static void yarn_frequencies_match_double_formula(void **state)
{
    (void)state;
    ModelConfig c = v2_config();
    double want[ROPE_MAX_DIM / 2];
    Rope r = init(&c);
    yarn_inv_freq_double(want, &c);
    /* float32 powf and the float32 blend: a few ulps */
    check_ratio("V2 YaRN, 32 pairs", r.inv_freq, want, 32, 2e-6);
    /* 0-10 untouched, 23-31 divided by s exactly as the formula, 11-22 blended */
    for (int i = 0; i <= 10; i++) assert_true(fabs(r.inv_freq[i] * pow(1e4, i / 32.0) - 1) < 2e-6);
    for (int i = 23; i < 32; i++) assert_true(fabs(r.inv_freq[i] * 40 * pow(1e4, i / 32.0) - 1) < 2e-6);
    /* another shape: the small golden fixtures' d_r = 8, where low = high is impossible but the
     * ramp covers only part of the 4 pairs */
    c.qk_rope_head_dim = 8;
    r = init(&c);
    yarn_inv_freq_double(want, &c);
    check_ratio("d_r 8 YaRN", r.inv_freq, want, 4, 2e-6);
}

static void plain_rope_frequencies(void **state)
{
    (void)state;
    ModelConfig c = v2_config();
    c.rope_yarn = false;
    const Rope r = init(&c);
    double want[32];
    for (int i = 0; i < 32; i++) want[i] = pow(1e4, -2.0 * i / 64);
    check_ratio("θ^{-2i/d}", r.inv_freq, want, 32, 2e-6); /* float32 powf: a few ulps */
    assert_true(r.cos_sin_scale == 1.0f);
    float got = r.softmax_scale, want_scale = (float)(1 / sqrt(192.0));
    check_close("σ without rope_scaling", &got, &want_scale, 1, 1e-8, -1); /* 0.0721688: ~1 ulp */
}

static void mscale_factors(void **state)
{
    (void)state;
    ModelConfig c = v2_config();
    Rope r = init(&c);
    assert_true(r.cos_sin_scale == 1.0f); /* 0.707 / 0.707: exactly 1 */
    float got = r.softmax_scale, want = 0.11472139f;
    check_close("σ for V2 (docs/semantics.md §3.5.3)", &got, &want, 1, 2e-8,
                -1); /* docs/semantics.md §3.5.3 gives 8 digits */
    const double m = 0.1 * 0.707 * log(40.0) + 1;
    want = (float)(m * m / sqrt(192.0));
    check_close("σ = 192^-1/2 m²", &got, &want, 1, 2e-8, -1); /* float32 vs double: ~1 ulp */

    /* remote code's defaults mscale 1, mscale_all_dim 0: cos/sin × (1 + 0.1 ln s), σ unscaled */
    c.rope_mscale = 1;
    c.rope_mscale_all_dim = 0;
    r = init(&c);
    got = r.cos_sin_scale;
    want = (float)(1 + 0.1 * log(40.0));
    check_close("cos/sin factor 1 + 0.1 ln s", &got, &want, 1, 4e-7, -1); /* 1.369: ~2 ulps */
    got = r.softmax_scale;
    want = (float)(1 / sqrt(192.0));
    check_close("σ without mscale_all_dim", &got, &want, 1, 1e-8, -1);

    /* V3-style 1.0/1.0: factor 1, m² = 1.8738542 */
    c.rope_mscale = c.rope_mscale_all_dim = 1;
    r = init(&c);
    assert_true(r.cos_sin_scale == 1.0f);
    got = r.softmax_scale;
    want = 0.13523378f;
    check_close("σ for mscale_all_dim 1 (docs/semantics.md §3.5.3)", &got, &want, 1, 2e-8, -1);
    assert_true(yarn_mscale(1.0f, 0.707f) == 1.0f && yarn_mscale(0.5f, 0.707f) == 1.0f);
}

/* The interleaved rotation in double, with the float32 angle docs/semantics.md §3.5.4 prescribes. */
static void rotate_double(float *out, const float *x, const Rope *r, int pos)
{
    for (int i = 0; i < r->dim / 2; i++) {
        const float phi = (float)pos * r->inv_freq[i];
        const double c = cos(phi) * r->cos_sin_scale, s = sin(phi) * r->cos_sin_scale;
        out[2 * i] = (float)(x[2 * i] * c - x[2 * i + 1] * s);
        out[2 * i + 1] = (float)(x[2 * i] * s + x[2 * i + 1] * c);
    }
}

static void rotation_of_interleaved_pairs(void **state)
{
    (void)state;
    ModelConfig c = v2_config();
    static const int positions[] = { 1, 2, 17, 1000, 4095, 4096, 70000, 163839 };
    for (int variant = 0; variant < 2; variant++) {
        if (variant == 1) {
            c.rope_mscale = 1;
            c.rope_mscale_all_dim = 0;
        } /* factor ≠ 1 */
        const Rope r = init(&c);
        for (size_t p = 0; p < sizeof positions / sizeof *positions; p++) {
            float x[64], got[64], want[64];
            test_rng_fill(&g_rng, x, 64, -1, 1);
            memcpy(got, x, sizeof x);
            rope_rotate(got, &r, positions[p]);
            rotate_double(want, x, &r, positions[p]);
            /* |x| ≤ 1 (× 1.37): cosf/sinf within an ulp and two products: ~1e-7 absolute */
            check_close("rotation vs double", got, want, 64, 5e-7, -1);
        }
    }
}

static void rotation_preserves_pair_norms_and_position_zero_is_identity(void **state)
{
    (void)state;
    const ModelConfig c = v2_config();
    const Rope r = init(&c);
    float x[64], y[64], norm_x[32], norm_y[32];
    test_rng_fill(&g_rng, x, 64, -2, 2);
    memcpy(y, x, sizeof x);
    rope_rotate(y, &r, 0);
    check_close("position 0", y, x, 64, 0, 0); /* cos 0 = 1, sin 0 = 0: exact */
    for (int pos = 1; pos < 5000; pos += 611) {
        memcpy(y, x, sizeof x);
        rope_rotate(y, &r, pos);
        for (int i = 0; i < 32; i++) {
            norm_x[i] = hypotf(x[2 * i], x[2 * i + 1]);
            norm_y[i] = hypotf(y[2 * i], y[2 * i + 1]);
        }
        check_close("pair norms", norm_y, norm_x, 32, 1e-6, -1); /* |pair| ≤ 2.9: a few ulps */
    }
}

static void scores_depend_on_relative_position(void **state)
{
    (void)state;
    const ModelConfig c = v2_config();
    const Rope r = init(&c);
    float q[64], k[64];
    test_rng_fill(&g_rng, q, 64, -1, 1);
    test_rng_fill(&g_rng, k, 64, -1, 1);
    for (int trial = 0; trial < 6; trial++) {
        const int m = (int)test_rng_uniform(&g_rng, 0, 300), n = (int)test_rng_uniform(&g_rng, 0, 300);
        float dots[4], want[4];
        for (int shift = 0; shift < 4; shift++) {
            float qr[64], kr[64];
            memcpy(qr, q, sizeof q);
            memcpy(kr, k, sizeof k);
            rope_rotate(qr, &r, m + 97 * shift);
            rope_rotate(kr, &r, n + 97 * shift);
            double d = 0;
            for (int i = 0; i < 64; i++) d += (double)qr[i] * kr[i];
            dots[shift] = (float)d;
        }
        for (int shift = 0; shift < 4; shift++) want[shift] = dots[0];
        /* angles are float32 products pos·θ_i (≤ 600 rad): each off by ≤ 3e-5 rad, so a
         * Σ|q_i k_i| ≤ 64 dot moves by ≤ 2e-3 */
        check_close("q·k under a common shift", dots, want, 4, 2e-3, -1);
    }
    /* and it does depend on m − n */
    float qr[64], kr[64], d1 = 0, d2 = 0;
    memcpy(qr, q, sizeof q);
    memcpy(kr, k, sizeof k);
    rope_rotate(qr, &r, 5);
    for (int i = 0; i < 64; i++) d1 += qr[i] * kr[i];
    rope_rotate(kr, &r, 3);
    for (int i = 0; i < 64; i++) d2 += qr[i] * kr[i];
    assert_true(fabsf(d1 - d2) > 1e-3f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(yarn_frequencies_match_spec_table),
        cmocka_unit_test(yarn_frequencies_match_double_formula),
        cmocka_unit_test(plain_rope_frequencies),
        cmocka_unit_test(mscale_factors),
        cmocka_unit_test(rotation_of_interleaved_pairs),
        cmocka_unit_test(rotation_preserves_pair_norms_and_position_zero_is_identity),
        cmocka_unit_test(scores_depend_on_relative_position),
    };
    return cmocka_run_group_tests_name("rope", tests, group_setup, NULL);
}
