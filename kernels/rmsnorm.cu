/**
 * \file rmsnorm.cu
 * \brief RMSNorm on the device (docs/semantics.md §3.2): y = w ⊙ x / sqrt(mean(x²) + ε), and its fusion with the residual add.
 */
#include "common.cuh"

#define RMSNORM_THREADS 256 /**< threads per row (version 2) */

// ANCHOR: rmsnorm_v1
/** Version 1: thread t normalises row t with the reference loop. x, y: [T, n]. */
__global__ void rmsnorm_v1_kernel(float *y, const float *x, const float *w, int T, int n, float eps)
{
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x); /* one pass of the loop over t */
    if (t < T) {
        const float *xt = x + (size_t)t * n;
        float *yt = y + (size_t)t * n;
        float mean_square = dot(xt, xt, n) / (float)n;   /* (1/n) Σ x_i² */
        float inv_rms = 1.0f / sqrtf(mean_square + eps); /* ε inside the root */
        for (int i = 0; i < n; i++) yt[i] = w[i] * (xt[i] * inv_rms);
    }
}
// ANCHOR_END: rmsnorm_v1

extern "C" cudaError_t rmsnorm_forward_v1(float *y, const float *x, const float *w, int T, int n, float eps,
                                          cudaStream_t stream)
{
    LAUNCH(rmsnorm_v1_kernel, dim3(blocks_for((size_t)T, 64)), dim3(64), 0, stream, y, x, w, T, n, eps);
    return cudaGetLastError();
}

// ANCHOR: rmsnorm_v2
/**
 * Version 2: block t normalises row t. When delta is not NULL the residual add
 * comes first: h[t] += delta[t] (h is then the row normalised, written back).
 * Each thread reads and writes the same strided elements, so y may alias x.
 */
__global__ void rmsnorm_v2_kernel(float *y, float *h, const float *delta, const float *w, int n, float eps)
{
    __shared__ float scratch[32];
    const size_t row = (size_t)blockIdx.x * n;
    float *ht = h + row;
    float sum_sq = 0.0f;
    for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x) {
        float v = ht[i];
        if (delta) {
            v += delta[row + i]; /* h' = h + Δ */
            ht[i] = v;
        }
        sum_sq += v * v;
    }
    sum_sq = block_sum(sum_sq, scratch);
    const float inv_rms = 1.0f / sqrtf(sum_sq / (float)n + eps);
    for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x) y[row + i] = w[i] * (ht[i] * inv_rms);
}
// ANCHOR_END: rmsnorm_v2

extern "C" cudaError_t rmsnorm_forward_v2(float *y, const float *x, const float *w, int T, int n, float eps,
                                          cudaStream_t stream)
{
    const float *no_delta = NULL; /* without a delta the kernel only reads its h argument */
    LAUNCH(rmsnorm_v2_kernel, dim3((unsigned)T), dim3(RMSNORM_THREADS), 0, stream, y, const_cast<float *>(x), no_delta,
           w, n, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t rmsnorm_residual_v2(float *y, float *h, const float *delta, const float *w, int T, int n,
                                           float eps, cudaStream_t stream)
{
    LAUNCH(rmsnorm_v2_kernel, dim3((unsigned)T), dim3(RMSNORM_THREADS), 0, stream, y, h, delta, w, n, eps);
    return cudaGetLastError();
}
