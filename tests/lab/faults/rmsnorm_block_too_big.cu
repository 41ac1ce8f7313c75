/**
 * \file rmsnorm_block_too_big.cu
 * \brief A faulty lab_rmsnorm for tests/test_lab.c: one block of n threads per row, over the 1024-thread limit for wide rows.
 */
#include "dsv2_launch.h"
#include "contract.h"

/** Block t, thread i: y[t, i] from a mean square every thread recomputes. */
__global__ void rmsnorm_thread_per_element_kernel(float *y, const float *x, const float *w, int n, float eps)
{
    const float *xt = x + (size_t)blockIdx.x * n;
    float sum_sq = 0.0f;
    for (int i = 0; i < n; i++) sum_sq += xt[i] * xt[i];
    const int i = (int)threadIdx.x;
    y[(size_t)blockIdx.x * n + i] = w[i] * (xt[i] * rsqrtf(sum_sq / (float)n + eps));
}

extern "C" cudaError_t lab_rmsnorm(float *y, const float *x, const float *w, int T, int n, float eps,
                                   cudaStream_t stream)
{
    LAUNCH(rmsnorm_thread_per_element_kernel, dim3((unsigned)T), dim3((unsigned)n), 0, stream, y, x, w, n, eps);
    return cudaGetLastError();
}
