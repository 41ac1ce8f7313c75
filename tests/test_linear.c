/**
 * \file test_linear.c
 * \brief linear_rows() is blocked by rows and tokens for speed; these tests hold it to linear.h's promise:
 *        every y[t, r] is bit-identical to dot() of the widened row with x_t, whatever the chunk.
 *
 * The independent reference is dot() on a float32 copy of the row (bf16 and f16 widen exactly), called
 * one token and one row at a time. Equality is exact (memcmp), because the project relies on it: a token
 * decoded alone must get the projections it got inside a prompt chunk (tests/test_mla.c's incremental
 * decode and the latent cache depend on it). Shapes cover every remainder of the 4-row × 2-token blocks
 * and of the 32 lanes: odd and even row counts, T = 1…5, n below, at and above multiples of 32.
 *
 * gemm.c builds its kernels for AVX-512, AVX2 and portable C with different tile shapes; the builds
 * this CPU can run are called explicitly on the same inputs and must agree bit for bit (a build the
 * CPU lacks is skipped, naming it). The products are also held to double-precision sums with the
 * rounding bound of float32 summation, and the backward to its stated order (increasing r, or t).
 */
#include "check.h"
#include "gemm.h"
#include "linear.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static TestRng g_rng;

static int group_setup(void **state)
{
    (void)state;
    test_rng_seed(&g_rng, "linear");
    return 0;
}

/* Rounds float32 to the nearest bf16 (ties to even); inputs here are finite. */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* y from linear_rows over rows [r0, r1) must equal dot(widened row, x_t) bit for bit. */
static void check_shape(DType dtype, int rows, int cols, int T, int r0, int r1)
{
    const size_t nw = (size_t)rows * cols;
    float *wide = malloc(sizeof(float) * nw), *x = malloc(sizeof(float) * (size_t)T * cols);
    float *y = malloc(sizeof(float) * (size_t)T * (r1 - r0)), *want = malloc(sizeof(float) * (size_t)T * (r1 - r0));
    void *stored = malloc(dtype == DT_F32 ? sizeof(float) * nw : sizeof(uint16_t) * nw);
    assert_true(wide && x && y && want && stored);
    test_rng_fill(&g_rng, wide, nw, -1.0f, 1.0f);
    test_rng_fill(&g_rng, x, (size_t)T * cols, -2.0f, 2.0f);
    for (size_t i = 0; i < nw; i++) {
        if (dtype == DT_BF16) {
            ((uint16_t *)stored)[i] = to_bf16(wide[i]);
            wide[i] = bf16_to_f32(((uint16_t *)stored)[i]);
        } else if (dtype == DT_F16) { /* a random normal half in ±[2^-2, 2^2) */
            const uint16_t sign = wide[i] < 0 ? 0x8000u : 0, mant = (uint16_t)(fabsf(wide[i]) * 1023.0f);
            ((uint16_t *)stored)[i] = (uint16_t)(sign | (uint16_t)((13 + i % 4) << 10) | mant);
            wide[i] = f16_to_f32(((uint16_t *)stored)[i]);
        } else {
            ((float *)stored)[i] = wide[i];
        }
    }
    const int out = r1 - r0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < out; r++)
            want[(size_t)t * out + r] = dot(wide + (size_t)(r0 + r) * cols, x + (size_t)t * cols, cols);
    poison(y, (size_t)T * out);
    const Mat W = { .data = stored, .dtype = dtype, .rows = rows, .cols = cols };
    linear_rows(y, x, &W, r0, r1, T);
    if (memcmp(y, want, sizeof(float) * (size_t)T * out) != 0)
        fail_msg("dtype %d, %d×%d rows [%d, %d), T %d: not bit-identical to dot()", (int)dtype, rows, cols, r0, r1, T);
    free(wide);
    free(x);
    free(y);
    free(want);
    free(stored);
}

/* bf16, the checkpoints' type, through every block remainder. */
static void bf16_blocks_equal_dot(void **state)
{
    (void)state;
    const int rows[] = { 1, 2, 3, 7, 8 }, cols[] = { 1, 31, 32, 33, 100, 2048 }, Ts[] = { 1, 2, 3, 4, 5 };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        for (size_t j = 0; j < sizeof cols / sizeof cols[0]; j++)
            for (size_t k = 0; k < sizeof Ts / sizeof Ts[0]; k++)
                check_shape(DT_BF16, rows[i], cols[j], Ts[k], 0, rows[i]);
}

/* Row slices (MLA's per-head views) start at odd and even rows. */
static void bf16_row_slices_equal_dot(void **state)
{
    (void)state;
    for (int r0 = 0; r0 < 3; r0++)
        for (int r1 = r0 + 1; r1 <= 7; r1++) check_shape(DT_BF16, 7, 65, 3, r0, r1);
}

/* f16 and f32 weights take the one-row path. */
static void f16_f32_equal_dot(void **state)
{
    (void)state;
    for (int T = 1; T <= 3; T++) {
        check_shape(DT_F16, 5, 33, T, 0, 5);
        check_shape(DT_F32, 5, 33, T, 0, 5);
    }
}

/* A token's projection does not depend on the chunk it came in: T = 5 at once equals five T = 1 calls. */
static void chunk_independent(void **state)
{
    (void)state;
    enum { R = 9, C = 70, T = 5 };
    uint16_t w[R * C];
    float x[T * C], all[T * R], one[R];
    for (int i = 0; i < R * C; i++) w[i] = to_bf16(test_rng_uniform(&g_rng, -1, 1));
    test_rng_fill(&g_rng, x, T * C, -1, 1);
    const Mat W = { .data = w, .dtype = DT_BF16, .rows = R, .cols = C };
    poison(all, T * R);
    linear(all, x, &W, T);
    for (int t = 0; t < T; t++) {
        poison(one, R);
        linear(one, x + t * C, &W, 1);
        assert_memory_equal(one, all + t * R, sizeof one);
    }
}

/* Random stored weights [rows, cols] of dtype and their float32 widening. */
static void *random_weights(DType dtype, int rows, int cols, float **wide_out)
{
    const size_t nw = (size_t)rows * cols;
    float *wide = malloc(sizeof(float) * nw);
    void *stored = malloc(dtype == DT_F32 ? sizeof(float) * nw : sizeof(uint16_t) * nw);
    assert_true(wide && stored);
    test_rng_fill(&g_rng, wide, nw, -1.0f, 1.0f);
    for (size_t i = 0; i < nw; i++) {
        if (dtype == DT_BF16) {
            ((uint16_t *)stored)[i] = to_bf16(wide[i]);
            wide[i] = bf16_to_f32(((uint16_t *)stored)[i]);
        } else if (dtype == DT_F16) {
            const uint16_t sign = wide[i] < 0 ? 0x8000u : 0, mant = (uint16_t)(fabsf(wide[i]) * 1023.0f);
            ((uint16_t *)stored)[i] = (uint16_t)(sign | (uint16_t)((13 + i % 4) << 10) | mant);
            wide[i] = f16_to_f32(((uint16_t *)stored)[i]);
        } else {
            ((float *)stored)[i] = wide[i];
        }
    }
    *wide_out = wide;
    return stored;
}

/* Forward, dot and backward of build isa equal the portable build's bit for bit on odd shapes. */
static void check_isa_equal(GemmIsa isa)
{
    const DType types[] = { DT_BF16, DT_F32, DT_F16 };
    const int shapes[][3] = { { 1, 1, 1 },    { 7, 33, 5 },   { 13, 100, 9 }, { 5, 48, 17 },
                              { 9, 2048, 3 }, { 16, 512, 8 }, { 10, 57, 4 },  { 17, 80, 11 } };
    for (size_t d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int R = shapes[s][0], C = shapes[s][1], T = shapes[s][2];
            float *wide, *x = malloc(sizeof(float) * T * C), *dy = malloc(sizeof(float) * T * R);
            float *y[2], *dx[2], *dW[2];
            void *stored = random_weights(types[d], R, C, &wide);
            assert_true(x && dy);
            test_rng_fill(&g_rng, x, (size_t)T * C, -2, 2);
            test_rng_fill(&g_rng, dy, (size_t)T * R, -1, 1);
            const Mat W = { .data = stored, .dtype = types[d], .rows = R, .cols = C };
            for (int k = 0; k < 2; k++) {
                const GemmIsa use = k ? isa : GEMM_PORTABLE;
                y[k] = malloc(sizeof(float) * T * R);
                dx[k] = malloc(sizeof(float) * T * C);
                dW[k] = malloc(sizeof(float) * R * C);
                assert_true(y[k] && dx[k] && dW[k]);
                poison(y[k], (size_t)T * R);
                poison(dx[k], (size_t)T * C);
                for (int i = 0; i < R * C; i++) dW[k][i] = 0.25f * wide[i]; /* dW accumulates onto this */
                gemm_rows_isa(use, y[k], x, &W, 0, R, T);
                gemm_backward_isa(use, dx[k], dW[k], dy, x, &W, T);
            }
            if (memcmp(y[0], y[1], sizeof(float) * T * R) || memcmp(dx[0], dx[1], sizeof(float) * T * C) ||
                memcmp(dW[0], dW[1], sizeof(float) * R * C))
                fail_msg("%s differs from portable: dtype %d, %dx%d, T %d", gemm_isa_name(isa), (int)types[d], R, C, T);
            const float a = gemm_dot_isa(GEMM_PORTABLE, x, wide, C), b = gemm_dot_isa(isa, x, wide, C);
            assert_memory_equal(&a, &b, sizeof a);
            for (int k = 0; k < 2; k++) {
                free(y[k]);
                free(dx[k]);
                free(dW[k]);
            }
            free(wide);
            free(stored);
            free(x);
            free(dy);
        }
}

static void avx2_equals_portable(void **state)
{
    (void)state;
    if (!gemm_isa_available(GEMM_AVX2)) {
        print_message("skipped: this CPU (or a non-x86 GCC build) has no AVX2\n");
        skip();
    }
    check_isa_equal(GEMM_AVX2);
}

static void avx512_equals_portable(void **state)
{
    (void)state;
    if (!gemm_isa_available(GEMM_AVX512)) {
        print_message("skipped: this CPU (or a non-x86 GCC build) has no AVX-512 (F, BW, DQ, VL)\n");
        skip();
    }
    check_isa_equal(GEMM_AVX512);
}

/* The best build against double-precision sums: |y − y_ref| ≤ n·2⁻²³·Σ_k |w_k x_k| + 1e-30, the
 * textbook bound for float32 summation of n terms (each partial sum rounds at most once per add,
 * products round once more); the backward must also equal its stated order (increasing r for dx,
 * increasing t onto the old dW) computed here in plain float32 loops. */
static void against_double_and_order(void **state)
{
    (void)state;
    const int shapes[][3] = {
        { 3, 1, 2 }, { 11, 47, 7 }, { 6, 129, 5 }, { 33, 48, 13 }, { 10, 57, 4 }, { 17, 80, 11 }
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int R = shapes[s][0], C = shapes[s][1], T = shapes[s][2];
        float *wide, *x = malloc(sizeof(float) * T * C), *dy = malloc(sizeof(float) * T * R);
        float *y = malloc(sizeof(float) * T * R), *dx = malloc(sizeof(float) * T * C);
        float *dW = malloc(sizeof(float) * R * C), *dW0 = malloc(sizeof(float) * R * C);
        void *stored = random_weights(DT_BF16, R, C, &wide);
        assert_true(x && dy && y && dx && dW && dW0);
        test_rng_fill(&g_rng, x, (size_t)T * C, -2, 2);
        test_rng_fill(&g_rng, dy, (size_t)T * R, -1, 1);
        test_rng_fill(&g_rng, dW0, (size_t)R * C, -1, 1);
        memcpy(dW, dW0, sizeof(float) * R * C);
        poison(y, (size_t)T * R);
        poison(dx, (size_t)T * C);
        const Mat W = { .data = stored, .dtype = DT_BF16, .rows = R, .cols = C };
        linear(y, x, &W, T);
        linear_backward(dx, dW, dy, x, &W, T);
        for (int t = 0; t < T; t++)
            for (int r = 0; r < R; r++) {
                double want = 0, mag = 0;
                for (int c = 0; c < C; c++) {
                    want += (double)wide[r * C + c] * x[t * C + c];
                    mag += fabs((double)wide[r * C + c] * x[t * C + c]);
                }
                assert_true(fabs(y[t * R + r] - want) <= C * 0x1p-23 * mag + 1e-30);
            }
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                float s = 0;
                for (int r = 0; r < R; r++) s += dy[t * R + r] * wide[r * C + c];
                assert_memory_equal(&s, &dx[t * C + c], sizeof s);
            }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) {
                float s = dW0[r * C + c];
                for (int t = 0; t < T; t++) s += dy[t * R + r] * x[t * C + c];
                assert_memory_equal(&s, &dW[r * C + c], sizeof s);
            }
        free(wide);
        free(stored);
        free(x);
        free(dy);
        free(y);
        free(dx);
        free(dW);
        free(dW0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bf16_blocks_equal_dot),    cmocka_unit_test(bf16_row_slices_equal_dot),
        cmocka_unit_test(f16_f32_equal_dot),        cmocka_unit_test(chunk_independent),
        cmocka_unit_test(avx2_equals_portable),     cmocka_unit_test(avx512_equals_portable),
        cmocka_unit_test(against_double_and_order),
    };
    return cmocka_run_group_tests_name("linear", tests, group_setup, NULL);
}
