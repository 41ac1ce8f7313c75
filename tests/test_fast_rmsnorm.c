/**
 * \file test_fast_rmsnorm.c
 * \brief kernels/rmsnorm.cu against ref/rmsnorm.c: v1, v2 and v2 fused with the residual add.
 *
 * Fresh random rows at several widths (1, odd, and DeepSeek-V2-Lite's D = 2048,
 * d_c = 512, V2's d_c' = 1536), outputs NaN-poisoned first; relative L2 ≤ 1e-5.
 * Runs with sim's race check on; skips on a real-GPU build without a GPU.
 */
#include "check.h"
#include "fast_test.h"
#include "kernels.h"
#include "rmsnorm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static TestRng rng;

static void *to_device(const void *host, size_t bytes)
{
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes), cudaSuccess);
    assert_int_equal(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

static void from_device(void *host, const void *d, size_t bytes)
{
    assert_int_equal(cudaMemcpy(host, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

/* One shape: v1, v2 and the fused residual form against the reference. */
static void check_shape(int T, int n)
{
    const size_t N = (size_t)T * n;
    float *x = malloc(4 * N), *delta = malloc(4 * N), *w = malloc(4 * (size_t)n);
    float *want = malloc(4 * N), *got = malloc(4 * N), *h_want = malloc(4 * N);
    test_rng_fill(&rng, x, N, -3.0f, 3.0f);
    test_rng_fill(&rng, delta, N, -1.0f, 1.0f);
    test_rng_fill(&rng, w, (size_t)n, 0.5f, 1.5f);
    rmsnorm_forward(want, x, w, T, n, 1e-6f);
    float *dx = to_device(x, 4 * N), *dw = to_device(w, 4 * (size_t)n), *dd = to_device(delta, 4 * N);
    poison(got, N);
    float *dy = to_device(got, 4 * N);
    for (int version = 1; version <= 2; version++) {
        assert_int_equal(cudaMemcpy(dy, got, 4 * N, cudaMemcpyHostToDevice), cudaSuccess);
        assert_int_equal((version == 1 ? rmsnorm_forward_v1 : rmsnorm_forward_v2)(dy, dx, dw, T, n, 1e-6f, 0),
                         cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        float *out = malloc(4 * N);
        from_device(out, dy, 4 * N);
        check_close(version == 1 ? "rmsnorm v1" : "rmsnorm v2", out, want, N, -1, 1e-5);
        free(out);
    }
    /* fused: h = x + delta; y = RMSNorm(h) */
    for (size_t i = 0; i < N; i++) h_want[i] = x[i] + delta[i];
    rmsnorm_forward(want, h_want, w, T, n, 1e-6f);
    assert_int_equal(cudaMemcpy(dy, got, 4 * N, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(rmsnorm_residual_v2(dy, dx, dd, dw, T, n, 1e-6f, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(got, dy, 4 * N);
    check_close("rmsnorm_residual v2: y", got, want, N, -1, 1e-5);
    from_device(got, dx, 4 * N);
    check_close("rmsnorm_residual v2: h", got, h_want, N, 0, 0);
    cudaFree(dx);
    cudaFree(dw);
    cudaFree(dd);
    cudaFree(dy);
    free(x);
    free(delta);
    free(w);
    free(want);
    free(got);
    free(h_want);
}

static void odd_widths(void **state)
{
    (void)state;
    need_device();
    check_shape(1, 1);
    check_shape(3, 37);
    check_shape(5, 257);
}

static void deepseek_widths(void **state)
{
    (void)state;
    need_device();
    check_shape(4, 2048); /* D of V2-Lite */
    check_shape(6, 512);  /* d_c, kv_a_layernorm */
    check_shape(2, 1536); /* d_c' of V2, q_a_layernorm */
}

/* In place (y = x), as fast/ runs q_a_layernorm. */
static void in_place(void **state)
{
    (void)state;
    need_device();
    enum { T = 3, n = 100 };
    float x[T * n], w[n], want[T * n], got[T * n];
    test_rng_fill(&rng, x, T * n, -2.0f, 2.0f);
    test_rng_fill(&rng, w, n, 0.5f, 1.5f);
    rmsnorm_forward(want, x, w, T, n, 1e-6f);
    float *dx = to_device(x, sizeof x), *dw = to_device(w, sizeof w);
    assert_int_equal(rmsnorm_forward_v2(dx, dx, dw, T, n, 1e-6f, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(got, dx, sizeof got);
    check_close("rmsnorm v2 in place", got, want, T * n, -1, 1e-5);
    cudaFree(dx);
    cudaFree(dw);
}

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0);
    test_rng_seed(&rng, "fast rmsnorm");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(odd_widths),
        cmocka_unit_test(deepseek_widths),
        cmocka_unit_test(in_place),
    };
    return cmocka_run_group_tests_name("fast rmsnorm", tests, NULL, NULL);
}
