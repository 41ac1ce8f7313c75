/**
 * \file rmsnorm_eps_outside_root.cu
 * \brief Kernel lab example (wrong): RMSNorm that adds ε to the root instead of under it.
 *
 * One block of 128 threads per row: each thread sums the squares of a strided
 * slice, thread 0 adds the 128 partial sums from shared memory and every
 * thread scales its slice. The mistake is one line: the inverse RMS is
 * 1/(sqrt(ms) + ε) where the contract says 1/sqrt(ms + ε). Beside a mean
 * square of about 3 and ε = 1e-6 the two differ by about 4e-7 relative, far
 * inside the 1e-5 tolerance, so the shapes of model widths pass; the lab's
 * shapes of tiny rows (mean square below ε) and of a large ε fail as a
 * numerical mismatch.
 *
 *     make check-kernel COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_eps_outside_root.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

#include <math.h>

/** Threads per block, one block per row. */
#define THREADS 128

/** Block t normalises row t. */
__global__ void rmsnorm_eps_outside_kernel(float *y, const float *x, const float *w, int n, float eps)
{
    __shared__ float partial[THREADS];
    __shared__ float inv_rms;
    const float *xt = x + (size_t)blockIdx.x * n;
    float *yt = y + (size_t)blockIdx.x * n;
    float sum_sq = 0.0f;
    for (int i = (int)threadIdx.x; i < n; i += THREADS) sum_sq += xt[i] * xt[i];
    partial[threadIdx.x] = sum_sq;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (int j = 0; j < THREADS; j++) total += partial[j];
        inv_rms = 1.0f / (sqrtf(total / (float)n) + eps); /* the bug: the contract has sqrtf(total / n + eps) */
    }
    __syncthreads();
    for (int i = (int)threadIdx.x; i < n; i += THREADS) yt[i] = w[i] * (xt[i] * inv_rms);
}

extern "C" cudaError_t lab_rmsnorm(float *y, const float *x, const float *w, int T, int n, float eps,
                                   cudaStream_t stream)
{
    LAUNCH(rmsnorm_eps_outside_kernel, dim3((unsigned)T), dim3(THREADS), 0, stream, y, x, w, n, eps);
    return cudaGetLastError();
}
