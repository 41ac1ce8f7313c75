/**
 * \file rmsnorm_missing_barrier.cu
 * \brief Kernel lab example (deliberately wrong): RMSNorm whose block reduction lacks a __syncthreads().
 *
 * One block of 256 threads per row; the mean square is summed by a tree in
 * shared memory. The barrier between the tree's levels is missing, so a
 * thread adds partial sums its neighbours have not finished writing. The lab
 * reports wrong values, and with RACECHECK=1 names the race.
 *
 *     make check-kernel COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_missing_barrier.cu RACECHECK=1
 */
#include "dsv2_launch.h"
#include "contract.h"

/** Threads per block (one block per row). */
#define THREADS 256

// ANCHOR: missing_barrier
/** Block t normalises row t: per-thread partial Σ x_i², then a halving tree over partial[]. */
__global__ void rmsnorm_tree_kernel(float *y, const float *x, const float *w, int n, float eps)
{
    __shared__ float partial[THREADS];
    const int tid = (int)threadIdx.x;
    const float *xt = x + (size_t)blockIdx.x * n;
    float sum_sq = 0.0f;
    for (int i = tid; i < n; i += THREADS) sum_sq += xt[i] * xt[i];
    partial[tid] = sum_sq;
    __syncthreads();
    for (int stride = THREADS / 2; stride > 0; stride /= 2) {
        if (tid < stride) partial[tid] += partial[tid + stride];
        /* BUG (deliberate): a __syncthreads() belongs here; without it thread tid reads
         * partial[tid + stride] before thread tid + stride has added its own level. */
    }
    __syncthreads();
    const float inv_rms = rsqrtf(partial[0] / (float)n + eps);
    for (int i = tid; i < n; i += THREADS) y[(size_t)blockIdx.x * n + i] = w[i] * (xt[i] * inv_rms);
}
// ANCHOR_END: missing_barrier

extern "C" cudaError_t lab_rmsnorm(float *y, const float *x, const float *w, int T, int n, float eps,
                                   cudaStream_t stream)
{
    LAUNCH(rmsnorm_tree_kernel, dim3((unsigned)T), dim3(THREADS), 0, stream, y, x, w, n, eps);
    return cudaGetLastError();
}
