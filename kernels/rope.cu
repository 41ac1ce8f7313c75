/**
 * \file rope.cu
 * \brief Decoupled RoPE on the device (docs/semantics.md §3.5.4): q^R_{t,h} and k^R_t rotated in place, interleaved pairs.
 */
#include "common.cuh"

// ANCHOR: rope_v1
/**
 * Version 1: thread (t, h) rotates slice (t, h) pair by pair (ref/rope.c's rope_rotate)
 * at token t's position (token_position: pos[t], or pos0 + t when pos is NULL).
 */
__global__ void rope_v1_kernel(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                               int row_stride, int head_stride, const int *pos, int pos0)
{
    const int id = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (id >= T * heads) return;
    const int t = id / heads, h = id % heads;
    float *slice = x + (size_t)t * row_stride + (size_t)h * head_stride;
    for (int i = 0; i < dim / 2; i++)
        rope_rotate_pair(slice, i, inv_freq[i], cos_sin_scale, token_position(pos, pos0, t));
}
// ANCHOR_END: rope_v1

extern "C" cudaError_t rope_forward_v1(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                                       int row_stride, int head_stride, int pos0, cudaStream_t stream)
{
    LAUNCH(rope_v1_kernel, dim3(blocks_for((size_t)T * heads, 64)), dim3(64), 0, stream, x, inv_freq, cos_sin_scale,
           dim, T, heads, row_stride, head_stride, (const int *)NULL, pos0);
    return cudaGetLastError();
}

extern "C" cudaError_t rope_forward_at_v1(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T,
                                          int heads, int row_stride, int head_stride, const int *pos,
                                          cudaStream_t stream)
{
    LAUNCH(rope_v1_kernel, dim3(blocks_for((size_t)T * heads, 64)), dim3(64), 0, stream, x, inv_freq, cos_sin_scale,
           dim, T, heads, row_stride, head_stride, pos, 0);
    return cudaGetLastError();
}

// ANCHOR: rope_v2
/** Version 2: block (t) covers all heads of token t; thread (h, i) rotates pair i of head h. */
__global__ void rope_v2_kernel(float *x, const float *inv_freq, float cos_sin_scale, int dim, int heads, int row_stride,
                               int head_stride, const int *pos, int pos0)
{
    const int t = (int)blockIdx.x, pairs = dim / 2, p = token_position(pos, pos0, t);
    for (int id = (int)threadIdx.x; id < heads * pairs; id += (int)blockDim.x) {
        const int h = id / pairs, i = id % pairs;
        rope_rotate_pair(x + (size_t)t * row_stride + (size_t)h * head_stride, i, inv_freq[i], cos_sin_scale, p);
    }
}
// ANCHOR_END: rope_v2

/** Threads per rope_v2_kernel block: the pairs of one token, rounded up to a warp, at most 256. */
static int rope_v2_threads(int dim, int heads)
{
    return heads * (dim / 2) < 256 ? 32 * ((heads * (dim / 2) + 31) / 32) : 256;
}

extern "C" cudaError_t rope_forward_v2(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                                       int row_stride, int head_stride, int pos0, cudaStream_t stream)
{
    LAUNCH(rope_v2_kernel, dim3((unsigned)T), dim3((unsigned)rope_v2_threads(dim, heads)), 0, stream, x, inv_freq,
           cos_sin_scale, dim, heads, row_stride, head_stride, (const int *)NULL, pos0);
    return cudaGetLastError();
}

extern "C" cudaError_t rope_forward_at_v2(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T,
                                          int heads, int row_stride, int head_stride, const int *pos,
                                          cudaStream_t stream)
{
    LAUNCH(rope_v2_kernel, dim3((unsigned)T), dim3((unsigned)rope_v2_threads(dim, heads)), 0, stream, x, inv_freq,
           cos_sin_scale, dim, heads, row_stride, head_stride, pos, 0);
    return cudaGetLastError();
}
