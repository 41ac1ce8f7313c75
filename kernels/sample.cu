/**
 * \file sample.cu
 * \brief Greedy sampling on the device: the arg-max of the logits, the lowest index on ties (ref/sample.h).
 */
#include "common.cuh"

#define ARGMAX_THREADS 1024 /**< threads of the arg-max block (version 2) */

// ANCHOR: argmax_v1
/** Version 1: one thread scans the logits (ref/sample.c's sample_argmax). */
__global__ void argmax_v1_kernel(int *out, const float *logits, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    *out = best;
}
// ANCHOR_END: argmax_v1

extern "C" cudaError_t sample_argmax_v1(int *out, const float *logits, int n, cudaStream_t stream)
{
    LAUNCH(argmax_v1_kernel, dim3(1), dim3(1), 0, stream, out, logits, n);
    return cudaGetLastError();
}

/** The block's arg-max of logits[0..n) (lowest index on ties), known to thread 0; 16-byte loads when n is a
 *  multiple of 4 and logits 16-byte aligned. */
static __device__ int block_argmax(const float *logits, int n)
{
    __shared__ float best_v[ARGMAX_THREADS / 32];
    __shared__ int best_i[ARGMAX_THREADS / 32];
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    float v = -INFINITY;
    int i = n; /* loses every comparison with a real index */
    if (n % 4 == 0 && ((size_t)logits & 15) == 0) {
        /* 16-byte loads: thread j takes logits 4j..4j+3, 4(j + blockDim.x).., still in increasing index order */
        const float4 *l4 = (const float4 *)logits;
        for (int j = (int)threadIdx.x; j < n / 4; j += (int)blockDim.x) {
            const float4 q = l4[j];
            const float e[4] = { q.x, q.y, q.z, q.w };
            for (int k = 0; k < 4; k++)
                if (e[k] > v || i == n) {
                    v = e[k];
                    i = 4 * j + k;
                }
        }
    } else {
        for (int j = (int)threadIdx.x; j < n; j += (int)blockDim.x)
            if (logits[j] > v || i == n) {
                v = logits[j];
                i = j;
            }
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int off = 16; off > 0; off /= 2) {
            const float ov = __shfl_xor_sync(FULL_MASK, v, off);
            const int oi = __shfl_xor_sync(FULL_MASK, i, off);
            if (oi < n && (i == n || ov > v || (ov == v && oi < i))) {
                v = ov;
                i = oi;
            }
        }
        if (pass == 1) break;
        if (lane == 0) {
            best_v[warp] = v;
            best_i[warp] = i;
        }
        __syncthreads();
        v = lane < (int)blockDim.x / 32 ? best_v[lane] : -INFINITY;
        i = lane < (int)blockDim.x / 32 ? best_i[lane] : n;
    }
    return i;
}

// ANCHOR: argmax_v2
/** Version 2: each thread scans a strided share, then (value, index) pairs are reduced over the block. */
__global__ void argmax_v2_kernel(int *out, const float *logits, int n)
{
    const int i = block_argmax(logits, n);
    if (threadIdx.x == 0) *out = i;
}
// ANCHOR_END: argmax_v2

extern "C" cudaError_t sample_argmax_v2(int *out, const float *logits, int n, cudaStream_t stream)
{
    LAUNCH(argmax_v2_kernel, dim3(1), dim3(ARGMAX_THREADS), 0, stream, out, logits, n);
    return cudaGetLastError();
}

// ANCHOR: argmax_advance_v2
/**
 * Block b: the greedy token of row b of logits [B, n] becomes the next decode step's input, tokens[b],
 * and that row's position advances, pos[b] += 1, so the next step needs nothing from the host.
 */
__global__ void argmax_advance_v2_kernel(int *tokens, int *pos, const float *logits, int n)
{
    const int b = (int)blockIdx.x;
    const int i = block_argmax(logits + (size_t)b * n, n);
    if (threadIdx.x == 0) {
        tokens[b] = i;
        pos[b] += 1;
    }
}
// ANCHOR_END: argmax_advance_v2

extern "C" cudaError_t sample_argmax_advance_v2(int *tokens, int *pos, const float *logits, int B, int n,
                                                cudaStream_t stream)
{
    LAUNCH(argmax_advance_v2_kernel, dim3((unsigned)B), dim3(ARGMAX_THREADS), 0, stream, tokens, pos, logits, n);
    return cudaGetLastError();
}
