/**
 * \file gemv.cu
 * \brief The decode step's matrix–vector products: a few tokens (T ≤ 16 per pass) against a weight matrix
 *        read once with 16-byte loads, one warp per output row, the tokens' activations staged in shared
 *        memory once per block; the small work that follows a product runs in its last block (the latent
 *        cache write, RoPE of q^R, RMSNorm of c^Q, the residual add and next RMSNorm); and the absorbed
 *        query q^L_{t,h} = W^UK_hᵀ q^N_{t,h} (paper §2.1.2; docs/semantics.md §5.2).
 *
 * A launch of 1 or a few blocks keeps too few bytes in flight to use the memory bandwidth (Little's law):
 * a norm of one 2048-wide row in one block spends its time waiting on DRAM latency. Folding that work into
 * the last block of a wide launch removes the launch and its latency from the step.
 */
#include "common.cuh"
#include "stage.cuh"

#define GEMV_THREADS       512                 /**< threads per block: 16 warps, one output row at a time each */
#define GEMV_WARPS         (GEMV_THREADS / 32) /**< warps per block */
#define GEMV_TARGET_BLOCKS 132 /**< blocks to aim for: one per SM of a 132-SM H100 (fewer blocks stage x fewer times) */
#define GEMV_MAX_RPW       32  /**< most rows per warp (large matrices: fewer blocks staging x) */
#define GEMV_MAX_TC        16  /**< most tokens per pass (one float32 sum each per lane) */
#define ABSORB_MAX_DN      128 /**< largest d_n the absorption holds in registers (4 rows per lane) */

// ANCHOR: gemv_v1
/**
 * Version 1: thread (t, r) computes y[t, r] = Σ_c W[r', c] x[t, c'] (the reference's linear_rows for one
 * row), with r' = (r / group)·w_group_stride + w_row0 + r mod group and x read from its group's offset.
 */
__global__ void gemv_v1_kernel(Gemv g)
{
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)g.T * g.rows) return;
    const int t = (int)(id / g.rows), r = (int)(id % g.rows), grp = r / g.group;
    const size_t w_row = (size_t)grp * g.w_group_stride + g.w_row0 + r % g.group;
    const size_t x_off = (size_t)t * g.ldx + (size_t)grp * g.x_group_stride;
    float s = 0.0f;
    for (int c = 0; c < g.cols; c++)
        s += load_elem(g.W, g.w_type, w_row * g.cols + c) * load_elem(g.x, g.x_type, x_off + c);
    if (r < g.split)
        g.y[(size_t)t * g.ldy + r] = s;
    else
        g.y2[(size_t)t * g.ldy2 + r - g.split] = s;
}
// ANCHOR_END: gemv_v1

extern "C" cudaError_t gemv_forward_v1(Gemv g, cudaStream_t stream)
{
    LAUNCH(gemv_v1_kernel, dim3(blocks_for((size_t)g.T * g.rows, 128)), dim3(128), 0, stream, g);
    return cudaGetLastError();
}

/** Whether this block is the launch's last to finish (one atomic counter per launch, left zero). */
static __device__ bool gemv_last_block(int *counter)
{
    __shared__ int last;
    __threadfence(); /* this block's rows, visible to all */
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(counter, 1) == (int)(gridDim.x * gridDim.y * gridDim.z) - 1;
        if (last) *counter = 0; /* zero again for the next launch or replay */
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

/** x[i] ← w_i · x[i] / rms(x) for one row of n floats, by the whole block (RMSNorm in place). */
static __device__ void block_rmsnorm(float *x, const float *w, int n, float eps, float *scratch)
{
    float sum_sq = 0.0f;
    for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x) sum_sq += x[i] * x[i];
    const float inv_rms = 1.0f / sqrtf(block_sum(sum_sq, scratch) / (float)n + eps);
    for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x) x[i] = w[i] * (x[i] * inv_rms);
    __syncthreads();
}

/** RoPE at position p of the q^R part (d_r wide, at d_n) of every head of one token's q row, by the block. */
static __device__ void block_rope_q(float *q, const GemvTail &e, int p)
{
    const int dr = e.dims.d_r, dq = e.dims.d_n + dr, pairs = dr / 2;
    for (int id = (int)threadIdx.x; id < e.dims.n_h * pairs; id += (int)blockDim.x)
        rope_rotate_pair(q + (size_t)(id / pairs) * dq + e.dims.d_n, id % pairs, e.inv_freq[id % pairs],
                         e.cos_sin_scale, p);
}

// ANCHOR: gemv_tail
/**
 * The last block's work, on the complete outputs. GEMV_TAIL_LATENT: y[t] = [c^KV_t ; k^R_raw_t] becomes
 * cache row base_t + p_t = [RMSNorm(c^KV_t) ; RoPE_{p_t}(k^R_raw_t)] (mla_latent_v2's function), then y2[t]
 * is either the token's queries (q^R of each head rotated) or c^Q (RMSNorm with q_norm). GEMV_TAIL_ROPE_Q:
 * y[t] holds the queries; q^R rotated. GEMV_TAIL_RESIDUAL_NORM: h[t] += y[t], a[t] = RMSNorm(h[t]) · norm.
 */
static __device__ void gemv_tail(const Gemv &g, const GemvTail &e)
{
    __shared__ float scratch[32];
    for (int t = 0; t < g.T; t++) {
        const int p = e.pos ? e.pos[t] : 0;
        if (e.kind == GEMV_TAIL_LATENT) {
            const int dc = e.dims.d_c, dr = e.dims.d_r, width = dc + dr;
            volatile float *kv = g.y + (size_t)t * g.ldy; /* written by other blocks */
            const size_t row = ((size_t)e.base[t] + p) * width;
            float sum_sq = 0.0f;
            for (int i = (int)threadIdx.x; i < dc; i += (int)blockDim.x) sum_sq += kv[i] * kv[i];
            const float inv_rms = 1.0f / sqrtf(block_sum(sum_sq, scratch) / (float)dc + e.latent_eps);
            for (int i = (int)threadIdx.x; i < dc; i += (int)blockDim.x)
                store_elem(e.cache, e.cache_type, row + i, e.kv_a_norm[i] * (kv[i] * inv_rms));
            for (int i = (int)threadIdx.x; i < dr / 2; i += (int)blockDim.x) {
                float pair[2] = { kv[dc + 2 * i], kv[dc + 2 * i + 1] };
                rope_rotate_pair(pair, 0, e.inv_freq[i], e.cos_sin_scale, p);
                store_elem(e.cache, e.cache_type, row + dc + 2 * i, pair[0]);
                store_elem(e.cache, e.cache_type, row + dc + 2 * i + 1, pair[1]);
            }
            float *q = g.y2 + (size_t)t * g.ldy2;
            if (e.q_norm)
                block_rmsnorm(q, e.q_norm, e.q_width, e.latent_eps, scratch);
            else
                block_rope_q(q, e, p);
        } else if (e.kind == GEMV_TAIL_ROPE_Q) {
            block_rope_q(g.y + (size_t)t * g.ldy, e, p);
        } else if (e.kind == GEMV_TAIL_RESIDUAL_NORM) {
            const int n = g.rows;
            float *h = e.h + (size_t)t * n, *a = e.a + (size_t)t * n;
            const volatile float *y = g.y + (size_t)t * g.ldy;
            float sum_sq = 0.0f;
            for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x) {
                const float v = h[i] + y[i]; /* h' = h + y */
                h[i] = v;
                sum_sq += v * v;
            }
            const float inv_rms = 1.0f / sqrtf(block_sum(sum_sq, scratch) / (float)n + e.eps);
            for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x) a[i] = e.norm[i] * (h[i] * inv_rms);
        }
        __syncthreads();
    }
}
// ANCHOR_END: gemv_tail

// ANCHOR: gemv_v2
/**
 * Version 2: block b owns rows [b·rpb, (b + 1)·rpb), warp w of them rows w·rpw … (w + 1)·rpw − 1. The
 * tokens come in passes of tc ≤ 16: per pass and row group, the block stages x[t, group] (t in the pass)
 * in shared memory once (16-byte loads when the strides allow), in the weights' type (as the cuBLAS
 * path's converted operand), then each warp
 * reads its rows' weights with 16-byte loads (8 elements per lane per step; element by element when
 * cols is not a multiple of 8 or W is not 16-byte aligned) and keeps one float32 sum per token, reduced
 * across the warp at the end. The last block to finish runs the tail (gemv_tail).
 */
__global__ void gemv_v2_kernel(Gemv g, GemvTail e, float *y, float *y2, int *counter, void *cache, float *h, float *a,
                               int rpw, int tc, int wide, int x_wide)
{
    /* the memory it writes, also as plain arguments (the simulator's race check restores those between runs) */
    g.y = y;
    g.y2 = y2;
    e.counter = counter;
    e.cache = cache;
    e.h = h;
    e.a = a;
    DYNAMIC_SHARED(float, stage_f);
    void *stage = stage_f;
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, C = g.cols;
    const int r0 = (int)blockIdx.x * GEMV_WARPS * rpw, r1 = min(g.rows, r0 + GEMV_WARPS * rpw);
    for (int t0 = 0; t0 < g.T; t0 += tc) {
        const int n_t = min(tc, g.T - t0);
        for (int grp = r0 / g.group; r0 < r1 && grp <= (r1 - 1) / g.group; grp++) {
            const size_t x0 = (size_t)t0 * g.ldx + (size_t)grp * g.x_group_stride; /* x[t0 .. t0 + n_t, group] */
            if (x_wide)                                                            /* 16-byte loads */
                for (int i = 8 * (int)threadIdx.x; i < n_t * C; i += 8 * (int)blockDim.x) {
                    float x8[8];
                    load8(g.x, g.x_type, x0 + (size_t)(i / C) * g.ldx + i % C, x8);
                    for (int j = 0; j < 8; j++) store_elem(stage, g.w_type, i + j, x8[j]);
                }
            else
                for (int i = (int)threadIdx.x; i < n_t * C; i += (int)blockDim.x)
                    store_elem(stage, g.w_type, i, load_elem(g.x, g.x_type, x0 + (size_t)(i / C) * g.ldx + i % C));
            __syncthreads();
            for (int k = 0; k < rpw; k++) {
                const int r = r0 + warp * rpw + k;
                if (r >= r1 || r / g.group != grp) continue;
                const size_t w_row = ((size_t)grp * g.w_group_stride + g.w_row0 + r % g.group) * C;
                float acc[GEMV_MAX_TC];
#pragma unroll
                for (int t = 0; t < GEMV_MAX_TC; t++) acc[t] = 0.0f;
                if (wide) {
                    for (int c = 8 * lane; c < C; c += 256) {
                        float w8[8];
                        load8(g.W, g.w_type, w_row + c, w8);
#pragma unroll
                        for (int t = 0; t < GEMV_MAX_TC; t++)
                            if (t < n_t) {
                                float x8[8];
                                load8(stage, g.w_type, (size_t)t * C + c, x8);
#pragma unroll
                                for (int i = 0; i < 8; i++) acc[t] += w8[i] * x8[i];
                            }
                    }
                } else {
                    for (int c = lane; c < C; c += 32) {
                        const float w = load_elem(g.W, g.w_type, w_row + c);
#pragma unroll
                        for (int t = 0; t < GEMV_MAX_TC; t++)
                            if (t < n_t) acc[t] += w * load_elem(stage, g.w_type, (size_t)t * C + c);
                    }
                }
#pragma unroll
                for (int t = 0; t < GEMV_MAX_TC; t++)
                    if (t < n_t) {
                        const float s = warp_sum(acc[t]);
                        if (lane == 0) {
                            if (r < g.split)
                                g.y[(size_t)(t0 + t) * g.ldy + r] = s;
                            else
                                g.y2[(size_t)(t0 + t) * g.ldy2 + r - g.split] = s;
                        }
                    }
            }
            __syncthreads(); /* the stage is read before the next group or pass overwrites it */
        }
    }
    if (e.kind != GEMV_TAIL_NONE && gemv_last_block(e.counter)) gemv_tail(g, e);
}
// ANCHOR_END: gemv_v2

extern "C" int gemv_v2_supports(const Gemv *g)
{
    const size_t esz = g->w_type == KERNEL_F32 ? 4 : 2;
    return g->T >= 1 && g->rows >= 1 && g->cols >= 1 && (size_t)g->cols * esz <= GEMV_STAGE_BYTES;
}

/** A product's launch shape (gemv_shape). */
typedef struct {
    int rpw;     /**< rows per warp */
    int tc;      /**< tokens per pass */
    int blocks;  /**< blocks of the product */
    int wide;    /**< 16-byte weight loads */
    int x_wide;  /**< 16-byte activation loads */
    size_t smem; /**< bytes of activations staged per pass */
} GemvShape;

/** gemv_v2's launch shape for g: about GEMV_TARGET_BLOCKS blocks, up to GEMV_MAX_TC tokens per pass. */
static GemvShape gemv_shape(const Gemv &g)
{
    GemvShape s;
    const size_t esz = g.w_type == KERNEL_F32 ? 4 : 2;
    const int by_stage = (int)(GEMV_STAGE_BYTES / ((size_t)g.cols * esz));
    s.tc = min(GEMV_MAX_TC, min(g.T, by_stage));
    s.rpw = (g.rows + GEMV_TARGET_BLOCKS * GEMV_WARPS - 1) / (GEMV_TARGET_BLOCKS * GEMV_WARPS);
    s.rpw = s.rpw < 1 ? 1 : s.rpw > GEMV_MAX_RPW ? GEMV_MAX_RPW : s.rpw;
    s.blocks = (int)blocks_for((size_t)g.rows, GEMV_WARPS * s.rpw);
    s.wide = g.cols % 8 == 0 && aligned16(g.W);
    s.x_wide = g.cols % 8 == 0 && g.ldx % 8 == 0 && g.x_group_stride % 8 == 0 && aligned16(g.x);
    s.smem = (size_t)s.tc * g.cols * esz;
    return s;
}

extern "C" cudaError_t gemv_forward_v2(Gemv g, GemvTail e, cudaStream_t stream)
{
    if (!gemv_v2_supports(&g) || (e.kind != GEMV_TAIL_NONE && !e.counter)) return cudaErrorInvalidValue;
    const GemvShape sh = gemv_shape(g);
    const int rpw = sh.rpw, tc = sh.tc, wide = sh.wide, x_wide = sh.x_wide;
    const size_t smem = sh.smem;
    if (smem > 48 * 1024) { /* beyond the default: opt in (up to 227 KB per block on sm_90, 163 KB on sm_80) */
        const cudaError_t err = cudaFuncSetAttribute(reinterpret_cast<const void *>(gemv_v2_kernel),
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, GEMV_STAGE_BYTES);
        if (err != cudaSuccess) return err;
    }
    LAUNCH(gemv_v2_kernel, dim3((unsigned)sh.blocks), dim3(GEMV_THREADS), smem, stream, g, e, g.y, g.y2, e.counter,
           e.cache, e.h, e.a, rpw, tc, wide, x_wide);
    return cudaGetLastError();
}

// ANCHOR: mla_absorb_v2
/**
 * q^L_{t,h} = W^UK_hᵀ q^N_{t,h}: q^L[c] = Σ_{d<d_n} W^UK_h[d, c] q^N[d], W^UK_h the rows h·(d_n + d_v) + d of
 * kv_b_proj [n_h(d_n + d_v), d_c]. Block (b, h), 16 warps: warp w owns the 8 columns c0 = 8(16b + w) …
 * c0 + 7 of head h; lane l holds the weights of rows d = l, l + 32, … in registers (16-byte loads, read
 * once for all tokens); the block stages q^N_{t,h} for all T tokens in shared memory; per token each
 * lane sums its rows, the warp reduces the 8 columns.
 */
__global__ void mla_absorb_v2_kernel(float *q_lat, const float *q, const void *kv_b, KernelDType kv_b_type,
                                     MlaDims dims, int T, int wide)
{
    DYNAMIC_SHARED(float, q_n);
    const int h = (int)blockIdx.y, lane = (int)threadIdx.x % 32, dn = dims.d_n, dc = dims.d_c;
    const int dq = dn + dims.d_r, c0 = 8 * ((int)blockIdx.x * GEMV_WARPS + (int)threadIdx.x / 32);
    for (int i = (int)threadIdx.x; i < T * dn; i += (int)blockDim.x)
        q_n[i] = q[((size_t)(i / dn) * dims.n_h + h) * dq + i % dn];
    __syncthreads();
    if (c0 >= dc) return;
    float w[ABSORB_MAX_DN / 32][8];
#pragma unroll
    for (int k = 0; k < ABSORB_MAX_DN / 32; k++) {
        const int d = lane + 32 * k;
        const size_t at = ((size_t)h * (dn + dims.d_v) + d) * dc + c0;
        if (d >= dn)
            for (int i = 0; i < 8; i++) w[k][i] = 0.0f;
        else if (wide)
            load8(kv_b, kv_b_type, at, w[k]);
        else
            for (int i = 0; i < 8; i++) w[k][i] = c0 + i < dc ? load_elem(kv_b, kv_b_type, at + i) : 0.0f;
    }
    for (int t = 0; t < T; t++) {
        float s[8] = { 0.0f };
#pragma unroll
        for (int k = 0; k < ABSORB_MAX_DN / 32; k++) {
            const float x = lane + 32 * k < dn ? q_n[(size_t)t * dn + lane + 32 * k] : 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) s[i] += w[k][i] * x;
        }
        float *out = q_lat + ((size_t)t * dims.n_h + h) * dc + c0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float v = warp_sum(s[i]);
            if (lane == 0 && c0 + i < dc) out[i] = v;
        }
    }
}
// ANCHOR_END: mla_absorb_v2

extern "C" cudaError_t mla_absorb_v2(float *q_lat, const float *q, const void *kv_b, KernelDType kv_b_type,
                                     MlaDims dims, int T, cudaStream_t stream)
{
    if (dims.d_n > ABSORB_MAX_DN || T < 1 || sizeof(float) * (size_t)T * dims.d_n > 48 * 1024)
        return cudaErrorInvalidValue;
    const int wide = dims.d_c % 8 == 0 && aligned16(kv_b);
    const dim3 grid(blocks_for((size_t)dims.d_c, 8 * GEMV_WARPS), (unsigned)dims.n_h);
    LAUNCH(mla_absorb_v2_kernel, grid, dim3(GEMV_THREADS), sizeof(float) * (size_t)T * dims.d_n, stream, q_lat, q, kv_b,
           kv_b_type, dims, T, wide);
    return cudaGetLastError();
}

/* ---- version 3: a chain of products and the absorption in one launch, in stages (kernels/stage.cuh) ---- */

/** Whether this block is the last of `count` to finish its rows of a stage (counter s of the launch). */
static __device__ bool stage_last(int *counters, int s, int count)
{
    __shared__ int last;
    __threadfence(); /* this block's rows, visible to all */
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counters + 2 + s, 1) == count - 1;
    __syncthreads();
    if (last) __threadfence();
    return last;
}

// ANCHOR: gemv_v3_rows
/**
 * One product's rows for the block that holds position `block` of its stage: gemv_v2_kernel's body with
 * blockIdx.x replaced by that position, and the activations read with __ldcg (an earlier stage of the
 * same launch may have written them).
 */
static __device__ void gemv_v3_rows(const Gemv &g, int block, int rpw, int tc, int wide, int x_wide, void *stage)
{
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, C = g.cols;
    const int r0 = block * GEMV_WARPS * rpw, r1 = min(g.rows, r0 + GEMV_WARPS * rpw);
    for (int t0 = 0; t0 < g.T; t0 += tc) {
        const int n_t = min(tc, g.T - t0);
        for (int grp = r0 / g.group; r0 < r1 && grp <= (r1 - 1) / g.group; grp++) {
            const size_t x0 = (size_t)t0 * g.ldx + (size_t)grp * g.x_group_stride; /* x[t0 .. t0 + n_t, group] */
            if (x_wide)                                                            /* 16-byte loads */
                for (int i = 8 * (int)threadIdx.x; i < n_t * C; i += 8 * (int)blockDim.x) {
                    float x8[8];
                    load8_cg(g.x, g.x_type, x0 + (size_t)(i / C) * g.ldx + i % C, x8);
                    for (int j = 0; j < 8; j++) store_elem(stage, g.w_type, i + j, x8[j]);
                }
            else
                for (int i = (int)threadIdx.x; i < n_t * C; i += (int)blockDim.x)
                    store_elem(stage, g.w_type, i, load_elem_cg(g.x, g.x_type, x0 + (size_t)(i / C) * g.ldx + i % C));
            __syncthreads();
            for (int k = 0; k < rpw; k++) {
                const int r = r0 + warp * rpw + k;
                if (r >= r1 || r / g.group != grp) continue;
                const size_t w_row = ((size_t)grp * g.w_group_stride + g.w_row0 + r % g.group) * C;
                float acc[GEMV_MAX_TC];
#pragma unroll
                for (int t = 0; t < GEMV_MAX_TC; t++) acc[t] = 0.0f;
                if (wide) {
                    for (int c = 8 * lane; c < C; c += 256) {
                        float w8[8];
                        load8(g.W, g.w_type, w_row + c, w8);
#pragma unroll
                        for (int t = 0; t < GEMV_MAX_TC; t++)
                            if (t < n_t) {
                                float x8[8];
                                load8(stage, g.w_type, (size_t)t * C + c, x8);
#pragma unroll
                                for (int i = 0; i < 8; i++) acc[t] += w8[i] * x8[i];
                            }
                    }
                } else {
                    for (int c = lane; c < C; c += 32) {
                        const float w = load_elem(g.W, g.w_type, w_row + c);
#pragma unroll
                        for (int t = 0; t < GEMV_MAX_TC; t++)
                            if (t < n_t) acc[t] += w * load_elem(stage, g.w_type, (size_t)t * C + c);
                    }
                }
#pragma unroll
                for (int t = 0; t < GEMV_MAX_TC; t++)
                    if (t < n_t) {
                        const float s = warp_sum(acc[t]);
                        if (lane == 0) {
                            if (r < g.split)
                                g.y[(size_t)(t0 + t) * g.ldy + r] = s;
                            else
                                g.y2[(size_t)(t0 + t) * g.ldy2 + r - g.split] = s;
                        }
                    }
            }
            __syncthreads(); /* the stage is read before the next group or pass overwrites it */
        }
    }
}
// ANCHOR_END: gemv_v3_rows

/** The launch's plan: the products, their shapes, the first ticket of each stage, the absorption. */
typedef struct {
    int n;                         /**< products */
    Gemv g[GEMV_CHAIN_MAX];        /**< product j reads product j − 1's output (or its tail's) */
    GemvTail e[GEMV_CHAIN_MAX];    /**< product j's tail (its counter unused: the launch's counters elect) */
    GemvShape sh[GEMV_CHAIN_MAX];  /**< launch shapes */
    int first[GEMV_CHAIN_MAX + 2]; /**< first ticket of product j; first[n]: of the absorption; first[n + 1]: end */
    GemvAbsorb ab;                 /**< the absorption (ab.q_lat NULL: none) */
    int ab_tiles;                  /**< column tiles of 8·GEMV_WARPS per head */
    int ab_wide;                   /**< 16-byte loads of W^UK */
} GemvChainPlan;

// ANCHOR: absorb_v3_stage
/**
 * The absorption as the last stage: block b of it computes mla_absorb_v2's block (b mod tiles, b / tiles).
 * It loads its W^UK columns into registers first (they depend on nothing), then waits for the stage that
 * writes q (the last product, with its RoPE tail) and reads q^N with __ldcg.
 */
static __device__ void absorb_v3_stage(const GemvChainPlan &c, float *q_lat, int b, int *counters, float *q_n)
{
    const MlaDims dims = c.ab.dims;
    const int h = b / c.ab_tiles, lane = (int)threadIdx.x % 32, dn = dims.d_n, dc = dims.d_c, T = c.ab.T;
    const int dq = dn + dims.d_r, c0 = 8 * ((b % c.ab_tiles) * GEMV_WARPS + (int)threadIdx.x / 32);
    float w[ABSORB_MAX_DN / 32][8];
#pragma unroll
    for (int k = 0; k < ABSORB_MAX_DN / 32; k++) {
        const int d = lane + 32 * k;
        const size_t at = ((size_t)h * (dn + dims.d_v) + d) * dc + c0;
        if (d >= dn || c0 >= dc)
            for (int i = 0; i < 8; i++) w[k][i] = 0.0f;
        else if (c.ab_wide)
            load8(c.ab.kv_b, c.ab.kv_b_type, at, w[k]);
        else
            for (int i = 0; i < 8; i++) w[k][i] = c0 + i < dc ? load_elem(c.ab.kv_b, c.ab.kv_b_type, at + i) : 0.0f;
    }
    stage_wait(counters, c.n - 1, c.sh[c.n - 1].blocks);
    for (int i = (int)threadIdx.x; i < T * dn; i += (int)blockDim.x)
        q_n[i] = __ldcg(c.ab.q + ((size_t)(i / dn) * dims.n_h + h) * dq + i % dn);
    __syncthreads();
    for (int t = 0; c0 < dc && t < T; t++) { /* no early return: stage_exit's barrier follows */
        float s[8] = { 0.0f };
#pragma unroll
        for (int k = 0; k < ABSORB_MAX_DN / 32; k++) {
            const float x = lane + 32 * k < dn ? q_n[(size_t)t * dn + lane + 32 * k] : 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) s[i] += w[k][i] * x;
        }
        float *out = q_lat + ((size_t)t * dims.n_h + h) * dc + c0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float v = warp_sum(s[i]);
            if (lane == 0 && c0 + i < dc) out[i] = v;
        }
    }
}
// ANCHOR_END: absorb_v3_stage

// ANCHOR: gemv_v3
/**
 * Version 3: the products of a chain, then the absorption, in one launch. A block's ticket picks its stage
 * and its position in it. Stage j > 0 waits for every block of stage j − 1; the last block of a stage to
 * finish its rows runs the stage's tail (gemv_tail) before it signals, so a count complete means the tail's
 * writes are done too. Counters: [2 + j] stage j's signals, [2 + n + j] its finished rows (the tail's election).
 */
__global__ void __launch_bounds__(GEMV_THREADS, 2)
    gemv_v3_kernel(GemvChainPlan c, float *y0, float *y0b, float *y1, float *y1b, float *y2, float *y2b, void *cache,
                   float *h, float *a, float *q_lat, int *counters)
{
    DYNAMIC_SHARED(float, stage_f);
    const int ticket = stage_ticket(counters);
    int j = 0;
    while (j < c.n && ticket >= c.first[j + 1]) j++;
    if (j < c.n) {
        Gemv g = c.g[j];
        GemvTail e = c.e[j];
        /* the memory it writes comes as plain arguments (the simulator's race check restores those between runs) */
        g.y = j == 0 ? y0 : j == 1 ? y1 : y2;
        g.y2 = j == 0 ? y0b : j == 1 ? y1b : y2b;
        if (e.kind == GEMV_TAIL_LATENT) e.cache = cache;
        if (e.kind == GEMV_TAIL_RESIDUAL_NORM) {
            e.h = h;
            e.a = a;
        }
        if (j > 0) stage_wait(counters, j - 1, c.sh[j - 1].blocks);
        const GemvShape &sh = c.sh[j];
        gemv_v3_rows(g, ticket - c.first[j], sh.rpw, sh.tc, sh.wide, sh.x_wide, stage_f);
        if (e.kind != GEMV_TAIL_NONE && stage_last(counters, c.n + j, sh.blocks)) gemv_tail(g, e);
        stage_signal(counters, j);
    } else {
        absorb_v3_stage(c, q_lat, ticket - c.first[c.n], counters, stage_f);
    }
    stage_exit(counters, 2 * c.n);
}
// ANCHOR_END: gemv_v3

extern "C" cudaError_t gemv_forward_v3(const Gemv *g, const GemvTail *e, int n, const GemvAbsorb *absorb, int *counters,
                                       cudaStream_t stream)
{
    if (n < 1 || n > GEMV_CHAIN_MAX || !counters) return cudaErrorInvalidValue;
    GemvChainPlan c = {};
    c.n = n;
    float *ys[GEMV_CHAIN_MAX][2] = { { NULL, NULL } };
    void *cache = NULL;
    float *h = NULL, *a = NULL;
    size_t smem = 0;
    for (int j = 0; j < n; j++) {
        if (!gemv_v2_supports(&g[j])) return cudaErrorInvalidValue;
        /* the kernel takes one cache and one (h, a) pair: tails of one kind share them */
        if (e[j].kind == GEMV_TAIL_LATENT) {
            if (cache && cache != e[j].cache) return cudaErrorInvalidValue;
            cache = e[j].cache;
        }
        if (e[j].kind == GEMV_TAIL_RESIDUAL_NORM) {
            if ((h && h != e[j].h) || (a && a != e[j].a)) return cudaErrorInvalidValue;
            h = e[j].h;
            a = e[j].a;
        }
        c.g[j] = g[j];
        c.e[j] = e[j];
        c.sh[j] = gemv_shape(g[j]);
        c.first[j + 1] = c.first[j] + c.sh[j].blocks;
        ys[j][0] = g[j].y;
        ys[j][1] = g[j].y2;
        if (c.sh[j].smem > smem) smem = c.sh[j].smem;
    }
    c.first[n + 1] = c.first[n];
    if (absorb && absorb->q_lat) {
        const MlaDims d = absorb->dims;
        if (d.d_n > ABSORB_MAX_DN || absorb->T < 1 || sizeof(float) * (size_t)absorb->T * d.d_n > GEMV_STAGE_BYTES)
            return cudaErrorInvalidValue;
        c.ab = *absorb;
        c.ab_tiles = (int)blocks_for((size_t)d.d_c, 8 * GEMV_WARPS);
        c.ab_wide = d.d_c % 8 == 0 && aligned16(absorb->kv_b);
        c.first[n + 1] = c.first[n] + c.ab_tiles * d.n_h;
        if (sizeof(float) * (size_t)absorb->T * d.d_n > smem) smem = sizeof(float) * (size_t)absorb->T * d.d_n;
    }
    if (smem > 48 * 1024) {
        const cudaError_t err = cudaFuncSetAttribute(reinterpret_cast<const void *>(gemv_v3_kernel),
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, GEMV_STAGE_BYTES);
        if (err != cudaSuccess) return err;
    }
    LAUNCH(gemv_v3_kernel, dim3((unsigned)c.first[n + 1]), dim3(GEMV_THREADS), smem, stream, c, ys[0][0], ys[0][1],
           ys[1][0], ys[1][1], ys[2][0], ys[2][1], cache, h, a, c.ab.q_lat, counters);
    return cudaGetLastError();
}
