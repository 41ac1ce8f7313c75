/**
 * \file mla_shard.cu
 * \brief The sharded layout's absorbed attention (mla_shard.h): the latent cache split by position over the
 *        devices, a partial softmax per device, rescaled and summed over NCCL by fast/shard_model.c.
 */
#include "common.cuh"
#include "mla_shard.h"

#include <math.h>

#define SHARD_THREADS 128 /**< threads of the per-row kernels */
#define SHARD_MAX_DC  512 /**< largest d_c version 2 holds in registers (4 channels a thread) */
#define SHARD_PER     (SHARD_MAX_DC / SHARD_THREADS) /**< latent channels per thread in version 2 */

/** Block t copies lat[t] to the cache on the owning device only. */
__global__ void mla_shard_store_v1_kernel(void *cache, const void *lat, KernelDType type, int width, const int *pos,
                                          const int *base, MlaShard sh)
{
    const int t = (int)blockIdx.x, p = pos[t];
    if (p % sh.devices != sh.rank) return;
    const size_t dst = ((size_t)base[t] + (size_t)(p / sh.devices)) * width, src = (size_t)t * width;
    for (int i = (int)threadIdx.x; i < width; i += (int)blockDim.x)
        store_elem(cache, type, dst + i, load_elem(lat, type, src + i));
}

extern "C" cudaError_t mla_shard_store_v1(void *cache, const void *lat, KernelDType cache_type, int width,
                                          const int *pos, const int *base, int T, MlaShard sh, cudaStream_t stream)
{
    LAUNCH(mla_shard_store_v1_kernel, dim3((unsigned)T), dim3(SHARD_THREADS), 0, stream, cache, lat, cache_type, width,
           pos, base, sh);
    return cudaGetLastError();
}

/** Block (t, j) copies q^R of local head j of token t behind its q^L. */
__global__ void mla_shard_pack_v1_kernel(float *qp, const float *q, MlaDims dims, int hl)
{
    const int t = (int)blockIdx.x, j = (int)blockIdx.y, dq = dims.d_n + dims.d_r, w = dims.d_c + dims.d_r;
    const float *src = q + ((size_t)t * hl + j) * dq + dims.d_n;
    float *dst = qp + ((size_t)t * hl + j) * w + dims.d_c;
    for (int i = (int)threadIdx.x; i < dims.d_r; i += (int)blockDim.x) dst[i] = src[i];
}

extern "C" cudaError_t mla_shard_pack_v1(float *qp, const float *q, MlaDims dims, int T, int hl, cudaStream_t stream)
{
    if (dims.d_r == 0) return cudaSuccess;
    LAUNCH(mla_shard_pack_v1_kernel, dim3((unsigned)T, (unsigned)hl), dim3(32), 0, stream, qp, q, dims, hl);
    return cudaGetLastError();
}

// ANCHOR: mla_shard_partial_v1
/**
 * Version 1: thread (t, h), the reference's absorbed loop over this device's rows only, in two passes:
 * the max m of the scores s_p = σ(q^L·ĉ_p + q^R·k^R_p), then l = Σ e^{s_p − m} and o^L = Σ e^{s_p − m} ĉ_p,
 * accumulated in place in part.
 */
__global__ void mla_shard_partial_v1_kernel(float *part, float *m_loc, const float *q_all, const void *cache,
                                            KernelDType type, MlaDims dims, const int *pos, const int *base, int T,
                                            MlaShard sh)
{
    const int id = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (id >= T * dims.n_h) return;
    const int t = id / dims.n_h, h = id % dims.n_h, r = h / sh.hl, j = h % sh.hl;
    const int dc = dims.d_c, dr = dims.d_r, width = dc + dr, D = sh.devices;
    const float *ql = q_all + (((size_t)r * T + t) * sh.hl + j) * width, *qr = ql + dc;
    float *o = part + (((size_t)r * T + t) * sh.hl + j) * (dc + 1);
    const int n_rows = pos[t] >= sh.rank ? (pos[t] - sh.rank) / D + 1 : 0; /* p = rank, rank + D, … ≤ pos[t] */
    float m = -INFINITY;
    for (int i = 0; i < n_rows; i++) {
        const size_t row = ((size_t)base[t] + i) * width;
        float s_c = 0.0f, s_r = 0.0f;
        for (int c = 0; c < dc; c++) s_c += ql[c] * load_elem(cache, type, row + c);
        for (int c = 0; c < dr; c++) s_r += qr[c] * load_elem(cache, type, row + dc + c);
        m = fmaxf(m, dims.scale * (s_c + s_r));
    }
    for (int c = 0; c <= dc; c++) o[c] = 0.0f;
    for (int i = 0; i < n_rows; i++) {
        const size_t row = ((size_t)base[t] + i) * width;
        float s_c = 0.0f, s_r = 0.0f;
        for (int c = 0; c < dc; c++) s_c += ql[c] * load_elem(cache, type, row + c);
        for (int c = 0; c < dr; c++) s_r += qr[c] * load_elem(cache, type, row + dc + c);
        const float e = expf(dims.scale * (s_c + s_r) - m);
        o[dc] += e;
        for (int c = 0; c < dc; c++) o[c] += e * load_elem(cache, type, row + c);
    }
    m_loc[(size_t)t * dims.n_h + h] = m;
}
// ANCHOR_END: mla_shard_partial_v1

extern "C" cudaError_t mla_shard_partial_v1(float *part, float *m_loc, const float *q_all, const void *cache,
                                            KernelDType cache_type, MlaDims dims, const int *pos, const int *base,
                                            int T, MlaShard sh, cudaStream_t stream)
{
    LAUNCH(mla_shard_partial_v1_kernel, dim3(blocks_for((size_t)T * dims.n_h, 32)), dim3(32), 0, stream, part, m_loc,
           q_all, cache, cache_type, dims, pos, base, T, sh);
    return cudaGetLastError();
}

// ANCHOR: mla_shard_partial_v2
/**
 * Version 2: block (t, h) of 128 threads, each holding up to 4 latent channels of q^L and of the running
 * o^L in registers (thread i < d_r also one channel of q^R); the score of each row by a block reduction,
 * then one pass of the online softmax: m' = max(m, s), l ← l·e^{m − m'} + e^{s − m'},
 * o^L ← o^L·e^{m − m'} + e^{s − m'} ĉ_p. Each row is read once per head.
 */
__global__ void mla_shard_partial_v2_kernel(float *part, float *m_loc, const float *q_all, const void *cache,
                                            KernelDType type, MlaDims dims, const int *pos, const int *base, int T,
                                            MlaShard sh)
{
    __shared__ float scratch[32];
    const int t = (int)blockIdx.x, h = (int)blockIdx.y, r = h / sh.hl, j = h % sh.hl, tid = (int)threadIdx.x;
    const int dc = dims.d_c, dr = dims.d_r, width = dc + dr, D = sh.devices;
    const float *ql = q_all + (((size_t)r * T + t) * sh.hl + j) * width;
    float qc[SHARD_PER], acc[SHARD_PER];
    const float qr = tid < dr ? ql[dc + tid] : 0.0f;
#pragma unroll
    for (int k = 0; k < SHARD_PER; k++) {
        const int c = tid + k * SHARD_THREADS;
        qc[k] = c < dc ? ql[c] : 0.0f;
        acc[k] = 0.0f;
    }
    const int n_rows = pos[t] >= sh.rank ? (pos[t] - sh.rank) / D + 1 : 0;
    float m = -INFINITY, l = 0.0f;
    for (int i = 0; i < n_rows; i++) {
        const size_t row = ((size_t)base[t] + i) * width;
        float x[SHARD_PER], partial = tid < dr ? qr * load_elem(cache, type, row + dc + tid) : 0.0f;
#pragma unroll
        for (int k = 0; k < SHARD_PER; k++) {
            const int c = tid + k * SHARD_THREADS;
            x[k] = c < dc ? load_elem(cache, type, row + c) : 0.0f;
            partial += qc[k] * x[k];
        }
        const float s = dims.scale * block_sum(partial, scratch);
        const float m_new = fmaxf(m, s), f = expf(m - m_new), e = expf(s - m_new);
        l = l * f + e;
#pragma unroll
        for (int k = 0; k < SHARD_PER; k++) acc[k] = acc[k] * f + e * x[k];
        m = m_new;
    }
    float *o = part + (((size_t)r * T + t) * sh.hl + j) * (dc + 1);
#pragma unroll
    for (int k = 0; k < SHARD_PER; k++) {
        const int c = tid + k * SHARD_THREADS;
        if (c < dc) o[c] = acc[k];
    }
    if (tid == 0) {
        o[dc] = l;
        m_loc[(size_t)t * dims.n_h + h] = m;
    }
}
// ANCHOR_END: mla_shard_partial_v2

extern "C" cudaError_t mla_shard_partial_v2(float *part, float *m_loc, const float *q_all, const void *cache,
                                            KernelDType cache_type, MlaDims dims, const int *pos, const int *base,
                                            int T, MlaShard sh, cudaStream_t stream)
{
    if (dims.d_c > SHARD_MAX_DC || dims.d_r > SHARD_THREADS) return cudaErrorInvalidValue;
    LAUNCH(mla_shard_partial_v2_kernel, dim3((unsigned)T, (unsigned)dims.n_h), dim3(SHARD_THREADS), 0, stream, part,
           m_loc, q_all, cache, cache_type, dims, pos, base, T, sh);
    return cudaGetLastError();
}

/** Block (t, h): the partial of head h scaled by e^{m_loc − m_all}. */
__global__ void mla_shard_rescale_v1_kernel(float *part, const float *m_loc, const float *m_all, int n_h, int d_c,
                                            int T, MlaShard sh)
{
    const int t = (int)blockIdx.x, h = (int)blockIdx.y, r = h / sh.hl, j = h % sh.hl;
    const float ml = m_loc[(size_t)t * n_h + h];
    const float f = ml == -INFINITY ? 0.0f : expf(ml - m_all[(size_t)t * n_h + h]);
    float *o = part + (((size_t)r * T + t) * sh.hl + j) * (d_c + 1);
    for (int c = (int)threadIdx.x; c <= d_c; c += (int)blockDim.x) o[c] *= f;
}

extern "C" cudaError_t mla_shard_rescale_v1(float *part, const float *m_loc, const float *m_all, int n_h, int d_c,
                                            int T, MlaShard sh, cudaStream_t stream)
{
    LAUNCH(mla_shard_rescale_v1_kernel, dim3((unsigned)T, (unsigned)n_h), dim3(SHARD_THREADS), 0, stream, part, m_loc,
           m_all, n_h, d_c, T, sh);
    return cudaGetLastError();
}

/** Block (t, j): o^L / l of local head j. */
__global__ void mla_shard_normalise_v1_kernel(void *ol, KernelDType ol_type, const float *ol_sum, int d_c, int hl)
{
    const size_t row = (size_t)blockIdx.x * hl + blockIdx.y;
    const float *src = ol_sum + row * (d_c + 1);
    const float inv = 1.0f / src[d_c];
    for (int c = (int)threadIdx.x; c < d_c; c += (int)blockDim.x) store_elem(ol, ol_type, row * d_c + c, src[c] * inv);
}

extern "C" cudaError_t mla_shard_normalise_v1(void *ol, KernelDType ol_type, const float *ol_sum, int d_c, int T,
                                              int hl, cudaStream_t stream)
{
    LAUNCH(mla_shard_normalise_v1_kernel, dim3((unsigned)T, (unsigned)hl), dim3(SHARD_THREADS), 0, stream, ol, ol_type,
           ol_sum, d_c, hl);
    return cudaGetLastError();
}

// ANCHOR: shard_wire_sum_v1
/** Element i of out: Σ over q = 0..D−1, in that order, of slice q's element i widened from bf16 (own for q = rank). */
__global__ void shard_wire_sum_v1_kernel(void *out, KernelDType out_type, const uint16_t *slab, const uint16_t *own,
                                         int rank, int D, size_t n)
{
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float acc = 0.0f;
    for (int q = 0; q < D; q++) acc += load_elem(q == rank ? own : slab + (size_t)q * n, KERNEL_BF16, i);
    store_elem(out, out_type, i, acc);
}
// ANCHOR_END: shard_wire_sum_v1

extern "C" cudaError_t shard_wire_sum_v1(void *out, KernelDType out_type, const uint16_t *slab, const uint16_t *own,
                                         int rank, int D, size_t n, cudaStream_t stream)
{
    if (n == 0) return cudaSuccess;
    LAUNCH(shard_wire_sum_v1_kernel, dim3((unsigned)((n + 255) / 256)), dim3(256), 0, stream, out, out_type, slab, own,
           rank, D, n);
    return cudaGetLastError();
}
