/**
 * \file test_fast_sample.c
 * \brief kernels/sample.cu and kernels/embed.cu: device arg-max (v1, v2) against ref/sample.c's
 *        sample_argmax, embedding rows against ref's widening, bf16 conversion against ref/dtype.h.
 *
 * Arg-max on random logits at odd sizes and DeepSeek-V2's vocabulary (102400),
 * with planted ties (the lowest index must win) and a maximum in the last slot.
 */
#include "check.h"
#include "fast_test.h"
#include "dtype.h"
#include "kernels.h"
#include "sample.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static TestRng rng;

/* Both versions on logits x[0..n) against the reference. */
static void check_argmax(const float *x, int n)
{
    float *dx;
    int *dout, got;
    assert_int_equal(cudaMalloc((void **)&dx, sizeof(float) * n), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dout, sizeof(int)), cudaSuccess);
    assert_int_equal(cudaMemcpy(dx, x, sizeof(float) * n, cudaMemcpyHostToDevice), cudaSuccess);
    for (int version = 1; version <= 2; version++) {
        assert_int_equal(cudaMemset(dout, 0xff, sizeof(int)), cudaSuccess);
        assert_int_equal((version == 1 ? sample_argmax_v1 : sample_argmax_v2)(dout, dx, n, 0), cudaSuccess);
        assert_int_equal(cudaMemcpy(&got, dout, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(got, sample_argmax(x, n));
    }
    cudaFree(dx);
    cudaFree(dout);
}

static void argmax_random_and_ties(void **state)
{
    (void)state;
    need_device();
    const int sizes[] = { 1, 2, 31, 33, 1000, 1025, 102400 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int n = sizes[s];
        float *x = malloc(sizeof(float) * n);
        test_rng_fill(&rng, x, (size_t)n, -10.0f, 10.0f);
        check_argmax(x, n);
        if (n > 2) {
            const int a = n / 3, b = 2 * n / 3; /* a tie: the lower index wins */
            x[a] = x[b] = 11.0f;
            check_argmax(x, n);
        }
        x[n - 1] = 12.0f; /* the last slot */
        check_argmax(x, n);
        for (int i = 0; i < n; i++) /* all equal: index 0 */
            x[i] = -1.0f;
        check_argmax(x, n);
        free(x);
    }
}

static void embed_rows_and_conversion(void **state)
{
    (void)state;
    need_device();
    enum { V = 50, D = 37, T = 9 };
    float table[V * D], want[T * D], got[T * D];
    uint16_t table16[V * D], conv[V * D];
    int tokens[T];
    test_rng_fill(&rng, table, V * D, -1.0f, 1.0f);
    for (int i = 0; i < V * D; i++) table16[i] = f32_to_bf16(table[i]);
    for (int t = 0; t < T; t++) tokens[t] = (int)test_rng_uniform(&rng, 0.0f, (float)V) % V;
    tokens[T - 1] = V - 1;
    float *dtable, *dh;
    uint16_t *dtable16, *dconv;
    int *dtok;
    assert_int_equal(cudaMalloc((void **)&dtable, sizeof table), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dtable16, sizeof table16), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dconv, sizeof conv), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dh, sizeof got), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dtok, sizeof tokens), cudaSuccess);
    assert_int_equal(cudaMemcpy(dtable, table, sizeof table, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dtable16, table16, sizeof table16, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dtok, tokens, sizeof tokens, cudaMemcpyHostToDevice), cudaSuccess);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        for (int t = 0; t < T; t++)
            dtype_widen(want + t * D, bf16 ? (const void *)table16 : (const void *)table, bf16 ? DT_BF16 : DT_F32,
                        (size_t)tokens[t] * D, D);
        assert_int_equal(cudaMemset(dh, 0xff, sizeof got), cudaSuccess);
        assert_int_equal(embed_forward_v2(dh, dtok, bf16 ? (void *)dtable16 : (void *)dtable,
                                          bf16 ? KERNEL_BF16 : KERNEL_F32, T, D, 0),
                         cudaSuccess);
        assert_int_equal(cudaMemcpy(got, dh, sizeof got, cudaMemcpyDeviceToHost), cudaSuccess);
        check_close(bf16 ? "embed bf16" : "embed f32", got, want, T * D, 0, 0);
    }
    assert_int_equal(convert_forward_v2(dconv, KERNEL_BF16, dtable, V * D, 0), cudaSuccess);
    assert_int_equal(cudaMemcpy(conv, dconv, sizeof conv, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_memory_equal(conv, table16, sizeof conv); /* round to nearest even, as ref's f32_to_bf16 */
    cudaFree(dtable);
    cudaFree(dtable16);
    cudaFree(dconv);
    cudaFree(dh);
    cudaFree(dtok);
}

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0);
    test_rng_seed(&rng, "fast sample");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(argmax_random_and_ties),
        cmocka_unit_test(embed_rows_and_conversion),
    };
    return cmocka_run_group_tests_name("fast sample", tests, NULL, NULL);
}
