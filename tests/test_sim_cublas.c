/**
 * \file test_sim_cublas.c
 * \brief The simulated cuBLAS follows cuBLAS's column-major conventions: checked against a naive triple loop.
 */
#include "check.h"
#include "cublas_v2.h"
#include "sim.h"

#include <stdlib.h>
#include <string.h>

static TestRng rng;

/** Element (i, j) of op(X), X column-major with leading dimension ld. */
static float at(const float *x, int ld, cublasOperation_t op, int i, int j)
{
    return op == CUBLAS_OP_N ? x[i + (size_t)j * ld] : x[j + (size_t)i * ld];
}

/** C = alpha · op(A) · op(B) + beta · C in double, the definition cuBLAS documents. */
static void naive_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int p = 0; p < k; p++) s += (double)at(A, lda, ta, i, p) * at(B, ldb, tb, p, j);
            C[i + (size_t)j * ldc] = (float)(alpha * s + (beta != 0.0f ? beta * C[i + (size_t)j * ldc] : 0.0));
        }
    }
}

static void *upload(const void *h, size_t bytes)
{
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes), cudaSuccess);
    assert_int_equal(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/** One GEMM of each transpose combination, with padded leading dimensions, in float32 or bf16 inputs. */
static void gemm_case(cublasOperation_t ta, cublasOperation_t tb, int bf16_in, int bf16_out)
{
    int m = 7, n = 5, k = 9;
    int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
    int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
    int lda = arows + 3, ldb = brows + 2, ldc = m + 4;
    float alpha = 1.5f, beta = bf16_out ? 0.0f : -0.5f;
    size_t na = (size_t)lda * acols, nb = (size_t)ldb * bcols, nc = (size_t)ldc * n;
    float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4), *want = malloc(nc * 4), *got = malloc(nc * 4);
    test_rng_fill(&rng, A, na, -1.0f, 1.0f);
    test_rng_fill(&rng, B, nb, -1.0f, 1.0f);
    test_rng_fill(&rng, C, nc, -1.0f, 1.0f);
    uint16_t *Ah = malloc(na * 2), *Bh = malloc(nb * 2), *Ch = malloc(nc * 2);
    for (size_t i = 0; i < na; i++) {
        Ah[i] = to_bf16(A[i]);
        if (bf16_in) A[i] = from_bf16(Ah[i]);
    }
    for (size_t i = 0; i < nb; i++) {
        Bh[i] = to_bf16(B[i]);
        if (bf16_in) B[i] = from_bf16(Bh[i]);
    }
    memcpy(want, C, nc * 4);
    naive_gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, want, ldc);
    void *dA = bf16_in ? upload(Ah, na * 2) : upload(A, na * 4);
    void *dB = bf16_in ? upload(Bh, nb * 2) : upload(B, nb * 4);
    for (size_t i = 0; i < nc; i++) Ch[i] = 0x7fc0; /* NaN: beta = 0 must not read C */
    void *dC = bf16_out ? upload(Ch, nc * 2) : upload(C, nc * 4);
    cublasHandle_t h;
    assert_int_equal(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    cudaDataType in = bf16_in ? CUDA_R_16BF : CUDA_R_32F, out = bf16_out ? CUDA_R_16BF : CUDA_R_32F;
    assert_int_equal(cublasGemmEx(h, ta, tb, m, n, k, &alpha, dA, in, lda, dB, in, ldb, &beta, dC, out, ldc,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    if (bf16_out) {
        assert_int_equal(cudaMemcpy(Ch, dC, nc * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < ldc; i++)
                got[i + (size_t)j * ldc] = i < m ? from_bf16(Ch[i + (size_t)j * ldc]) : want[i + (size_t)j * ldc];
        /* Padding rows between m and ldc are left alone (still NaN on the device). */
        assert_int_equal(Ch[m], 0x7fc0);
        check_close("bf16 GEMM", got, want, nc, 2e-2, 1e-2);
    } else {
        assert_int_equal(cudaMemcpy(got, dC, nc * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        check_close("GEMM", got, want, nc, 1e-5, 1e-6);
    }
    cublasDestroy(h);
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    free(A), free(B), free(C), free(want), free(got), free(Ah), free(Bh), free(Ch);
}

static const cublasOperation_t ops[3] = { CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C };

static void gemm_f32_every_transpose_combination(void **state)
{
    (void)state;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) gemm_case(ops[a], ops[b], 0, 0);
}

static void gemm_bf16_inputs_f32_output(void **state)
{
    (void)state;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) gemm_case(ops[a], ops[b], 1, 0);
}

static void gemm_bf16_output_beta_zero_ignores_nan(void **state)
{
    (void)state;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) gemm_case(ops[a], ops[b], 1, 1);
}

static void strided_batched_gemm(void **state)
{
    (void)state;
    enum { M = 4, N = 3, K = 6, BATCH = 5 };
    long long sa = M * K + 2, sb = K * N + 1, sc = M * N;
    float A[(M * K + 2) * BATCH], B[(K * N + 1) * BATCH], C[M * N * BATCH], want[M * N * BATCH];
    test_rng_fill(&rng, A, sizeof A / 4, -1, 1);
    test_rng_fill(&rng, B, sizeof B / 4, -1, 1);
    float alpha = 0.75f, beta = 0.0f;
    for (int i = 0; i < BATCH; i++)
        naive_gemm(CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, alpha, A + i * sa, K, B + i * sb, K, beta, want + i * sc, M);
    void *dA = upload(A, sizeof A), *dB = upload(B, sizeof B), *dC = NULL;
    assert_int_equal(cudaMalloc(&dC, sizeof C), cudaSuccess);
    cublasHandle_t h;
    assert_int_equal(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &alpha, dA, CUDA_R_32F, K, sa, dB,
                                                CUDA_R_32F, K, sb, &beta, dC, CUDA_R_32F, M, sc, BATCH,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cudaMemcpy(C, dC, sizeof C, cudaMemcpyDeviceToHost), cudaSuccess);
    check_close("strided batched", C, want, M * N * BATCH, 1e-5, 1e-6);
    cublasDestroy(h);
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
}

static void grouped_batched_gemm(void **state)
{
    (void)state;
    /* Two groups: 2 problems of 3×2×4 (N, N) and 1 problem of 5×4×2 (T, N). */
    cublasOperation_t ta[2] = { CUBLAS_OP_N, CUBLAS_OP_T }, tb[2] = { CUBLAS_OP_N, CUBLAS_OP_N };
    int m[2] = { 3, 5 }, n[2] = { 2, 4 }, k[2] = { 4, 2 }, lda[2] = { 3, 2 }, ldb[2] = { 4, 2 }, ldc[2] = { 3, 5 },
        size[2] = { 2, 1 };
    float alpha[2] = { 1.0f, 2.0f }, beta[2] = { 0.0f, 0.0f };
    float A[3][12], B[3][8], want[3][20], got[20];
    void *dA[3], *dB[3], *dC[3];
    for (int p = 0; p < 3; p++) {
        int g = p < 2 ? 0 : 1;
        test_rng_fill(&rng, A[p], 12, -1, 1);
        test_rng_fill(&rng, B[p], 8, -1, 1);
        naive_gemm(ta[g], tb[g], m[g], n[g], k[g], alpha[g], A[p], lda[g], B[p], ldb[g], beta[g], want[p], ldc[g]);
        dA[p] = upload(A[p], sizeof A[p]);
        dB[p] = upload(B[p], sizeof B[p]);
        assert_int_equal(cudaMalloc(&dC[p], 20 * 4), cudaSuccess);
    }
    void **dAarr = upload(dA, sizeof dA), **dBarr = upload(dB, sizeof dB), **dCarr = upload(dC, sizeof dC);
    cublasHandle_t h;
    assert_int_equal(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cublasGemmGroupedBatchedEx(h, ta, tb, m, n, k, alpha, (const void *const *)dAarr, CUDA_R_32F, lda,
                                                (const void *const *)dBarr, CUDA_R_32F, ldb, beta, (void *const *)dCarr,
                                                CUDA_R_32F, ldc, 2, size, CUBLAS_COMPUTE_32F),
                     CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    for (int p = 0; p < 3; p++) {
        int g = p < 2 ? 0 : 1;
        assert_int_equal(cudaMemcpy(got, dC[p], (size_t)(m[g] * n[g]) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        check_close("grouped", got, want[p], (size_t)(m[g] * n[g]), 1e-5, 1e-6);
        cudaFree(dA[p]), cudaFree(dB[p]), cudaFree(dC[p]);
    }
    cublasDestroy(h);
    cudaFree(dAarr), cudaFree(dBarr), cudaFree(dCarr);
}

static void gemm_runs_on_the_handle_stream(void **state)
{
    (void)state;
    float a = 2.0f, b = 3.0f, c = -1.0f, one = 1.0f, zero = 0.0f;
    float *dA = upload(&a, 4), *dB = upload(&b, 4), *dC = upload(&c, 4);
    cudaStream_t s;
    cublasHandle_t h;
    assert_int_equal(cudaStreamCreate(&s), cudaSuccess);
    assert_int_equal(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, dA, CUDA_R_32F, 1, dB, CUDA_R_32F, 1,
                                  &zero, dC, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cudaStreamQuery(s), cudaErrorNotReady); /* queued, not yet run */
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    assert_int_equal(cudaMemcpy(&c, dC, 4, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_true(c == 6.0f);
    cublasDestroy(h);
    cudaStreamDestroy(s);
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
}

static void gemm_argument_errors(void **state)
{
    (void)state;
    float host[64] = { 0 }, one = 1.0f;
    float *d = upload(host, sizeof host);
    cublasHandle_t h;
    assert_int_equal(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    /* lda smaller than the rows of A as stored (m = 4 for OP_N). */
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 2, &one, d, CUDA_R_32F, 3, d, CUDA_R_32F, 2, &one,
                                  d, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_INVALID_VALUE);
    assert_non_null(strstr(sim_last_detail(), "lda"));
    /* ldb for OP_T must cover n. */
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, 2, 4, 2, &one, d, CUDA_R_32F, 2, d, CUDA_R_32F, 2, &one,
                                  d, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_INVALID_VALUE);
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 2, &one, d, CUDA_R_32F, 2, d, CUDA_R_32F, 2, &one,
                                  d, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_INVALID_VALUE);
    /* f32 A with bf16 B is not a combination cuBLAS computes. */
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d, CUDA_R_32F, 2, d, CUDA_R_16BF, 2, &one,
                                  d, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_NOT_SUPPORTED);
    /* A host matrix, and a device matrix too small for its shape. */
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, host, CUDA_R_32F, 2, d, CUDA_R_32F, 2,
                                  &one, d, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_INVALID_VALUE);
    assert_non_null(strstr(sim_last_detail(), "matrix A"));
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, d, CUDA_R_32F, 8, d, CUDA_R_32F, 8, &one,
                                  d, CUDA_R_32F, 8, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 9, 8, 8, &one, d, CUDA_R_32F, 9, d, CUDA_R_32F, 8, &one,
                                  d, CUDA_R_32F, 9, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_INVALID_VALUE);
    assert_int_equal(cublasGemmEx(NULL, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d, CUDA_R_32F, 2, d, CUDA_R_32F, 2,
                                  &one, d, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_NOT_INITIALIZED);
    assert_string_equal(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    cublasDestroy(h);
    cudaFree(d);
}

static int setup(void **state)
{
    (void)state;
    setenv("SIM_QUIET", "1", 1);
    test_rng_seed(&rng, "sim_cublas");
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gemm_f32_every_transpose_combination),
        cmocka_unit_test(gemm_bf16_inputs_f32_output),
        cmocka_unit_test(gemm_bf16_output_beta_zero_ignores_nan),
        cmocka_unit_test(strided_batched_gemm),
        cmocka_unit_test(grouped_batched_gemm),
        cmocka_unit_test(gemm_runs_on_the_handle_stream),
        cmocka_unit_test(gemm_argument_errors),
    };
    return cmocka_run_group_tests_name("sim_cublas", tests, setup, NULL);
}
