/**
 * \file rmsnorm_past_end.cu
 * \brief A faulty lab_rmsnorm for tests/test_lab.c: its last thread writes one element past the end of y.
 */
#include "dsv2_launch.h"
#include "contract.h"

/** Thread t normalises row t, then writes y[T·n] (one past the end) as well. */
__global__ void rmsnorm_past_end_kernel(float *y, const float *x, const float *w, int T, int n, float eps)
{
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= T) return;
    float sum_sq = 0.0f;
    for (int i = 0; i < n; i++) sum_sq += x[(size_t)t * n + i] * x[(size_t)t * n + i];
    const float inv_rms = rsqrtf(sum_sq / (float)n + eps);
    for (int i = 0; i < n; i++) y[(size_t)t * n + i] = w[i] * (x[(size_t)t * n + i] * inv_rms);
    if (t == T - 1) y[(size_t)T * n] = 0.0f;
}

extern "C" cudaError_t lab_rmsnorm(float *y, const float *x, const float *w, int T, int n, float eps,
                                   cudaStream_t stream)
{
    LAUNCH(rmsnorm_past_end_kernel, dim3((unsigned)(T + 31) / 32), dim3(32), 0, stream, y, x, w, T, n, eps);
    return cudaGetLastError();
}
