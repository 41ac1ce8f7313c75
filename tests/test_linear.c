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
 */
#include "check.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bf16_blocks_equal_dot),
        cmocka_unit_test(bf16_row_slices_equal_dot),
        cmocka_unit_test(f16_f32_equal_dot),
        cmocka_unit_test(chunk_independent),
    };
    return cmocka_run_group_tests_name("linear", tests, group_setup, NULL);
}
