/**
 * \file mla.cu
 * \brief Multi-head Latent Attention on the device (paper §2.1; docs/semantics.md §3.4, §5): writing ĉ_t and k^R_t into
 *        the latent cache, the expanded form's key/value expansion and causal softmax (around cuBLAS GEMMs),
 *        and the absorbed decode over the latent cache, split over the sequence with an online softmax.
 *
 * A cache row is [ĉ_t (d_c) ; k^R_t (d_r)]: the one 576-wide "key" all heads
 * share in the absorbed form (docs/semantics.md §5.2).
 */
#include "common.cuh"

#define MLA_LATENT_THREADS        128 /**< threads per token writing its cache row */
#define MLA_SOFTMAX_THREADS       128 /**< threads per (token, head) score row */
#define MLA_DECODE_WARPS          4   /**< warps per decode block, each with its own online softmax */
#define MLA_DECODE_MAX_DC         512 /**< largest d_c the decode kernel holds in registers */
#define MLA_DECODE_MAX_DR         64  /**< largest d_r the decode kernel holds in registers */
#define MLA_DECODE_KEYS_PER_SPLIT 64  /**< cached positions per decode block's split */

// ANCHOR: mla_latent_v1
/**
 * Version 1: thread t writes cache row base_t + p_t = [RMSNorm(c^KV_t) ; RoPE_{p_t}(k^R_raw_t)], where
 * p_t = pos[t] and base_t = base[t] (device arrays), or p_t = pos0 + t and base_t = 0 when pos is NULL.
 */
__global__ void mla_latent_v1_kernel(void *cache, KernelDType cache_type, const float *kv, const float *kv_a_norm,
                                     const float *inv_freq, float cos_sin_scale, MlaDims dims, const int *pos,
                                     const int *base, int pos0, int T, float eps)
{
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= T) return;
    const int dc = dims.d_c, dr = dims.d_r, width = dc + dr, p = token_position(pos, pos0, t);
    const float *kv_t = kv + (size_t)t * width;
    const size_t row = ((size_t)(pos ? base[t] : 0) + p) * width;
    float sum_sq = 0.0f;
    for (int i = 0; i < dc; i++) sum_sq += kv_t[i] * kv_t[i];
    const float inv_rms = 1.0f / sqrtf(sum_sq / (float)dc + eps);
    for (int i = 0; i < dc; i++) /* ĉ_t: the latent only */
        store_elem(cache, cache_type, row + i, kv_a_norm[i] * (kv_t[i] * inv_rms));
    for (int i = 0; i < dr / 2; i++) { /* k^R_t bypasses the norm */
        float pair[2] = { kv_t[dc + 2 * i], kv_t[dc + 2 * i + 1] };
        rope_rotate_pair(pair, 0, inv_freq[i], cos_sin_scale, p);
        store_elem(cache, cache_type, row + dc + 2 * i, pair[0]);
        store_elem(cache, cache_type, row + dc + 2 * i + 1, pair[1]);
    }
}
// ANCHOR_END: mla_latent_v1

extern "C" cudaError_t mla_write_latents_v1(void *cache, KernelDType cache_type, const float *kv,
                                            const float *kv_a_norm, const float *inv_freq, float cos_sin_scale,
                                            MlaDims dims, int pos0, int T, float eps, cudaStream_t stream)
{
    LAUNCH(mla_latent_v1_kernel, dim3(blocks_for((size_t)T, 32)), dim3(32), 0, stream, cache, cache_type, kv, kv_a_norm,
           inv_freq, cos_sin_scale, dims, (const int *)NULL, (const int *)NULL, pos0, T, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t mla_write_latents_at_v1(void *cache, KernelDType cache_type, const float *kv,
                                               const float *kv_a_norm, const float *inv_freq, float cos_sin_scale,
                                               MlaDims dims, const int *pos, const int *base, int T, float eps,
                                               cudaStream_t stream)
{
    LAUNCH(mla_latent_v1_kernel, dim3(blocks_for((size_t)T, 32)), dim3(32), 0, stream, cache, cache_type, kv, kv_a_norm,
           inv_freq, cos_sin_scale, dims, pos, base, 0, T, eps);
    return cudaGetLastError();
}

// ANCHOR: mla_latent_v2
/**
 * Version 2: block t writes the same row as version 1; the mean square by a block reduction, threads over
 * ĉ elements and k^R pairs.
 */
__global__ void mla_latent_v2_kernel(void *cache, KernelDType cache_type, const float *kv, const float *kv_a_norm,
                                     const float *inv_freq, float cos_sin_scale, MlaDims dims, const int *pos,
                                     const int *base, int pos0, float eps)
{
    __shared__ float scratch[32];
    const int t = (int)blockIdx.x, dc = dims.d_c, dr = dims.d_r, width = dc + dr, p = token_position(pos, pos0, t);
    const float *kv_t = kv + (size_t)t * width;
    const size_t row = ((size_t)(pos ? base[t] : 0) + p) * width;
    float sum_sq = 0.0f;
    for (int i = (int)threadIdx.x; i < dc; i += (int)blockDim.x) sum_sq += kv_t[i] * kv_t[i];
    const float inv_rms = 1.0f / sqrtf(block_sum(sum_sq, scratch) / (float)dc + eps);
    for (int i = (int)threadIdx.x; i < dc; i += (int)blockDim.x)
        store_elem(cache, cache_type, row + i, kv_a_norm[i] * (kv_t[i] * inv_rms));
    for (int i = (int)threadIdx.x; i < dr / 2; i += (int)blockDim.x) {
        float pair[2] = { kv_t[dc + 2 * i], kv_t[dc + 2 * i + 1] };
        rope_rotate_pair(pair, 0, inv_freq[i], cos_sin_scale, p);
        store_elem(cache, cache_type, row + dc + 2 * i, pair[0]);
        store_elem(cache, cache_type, row + dc + 2 * i + 1, pair[1]);
    }
}
// ANCHOR_END: mla_latent_v2

extern "C" cudaError_t mla_write_latents_v2(void *cache, KernelDType cache_type, const float *kv,
                                            const float *kv_a_norm, const float *inv_freq, float cos_sin_scale,
                                            MlaDims dims, int pos0, int T, float eps, cudaStream_t stream)
{
    LAUNCH(mla_latent_v2_kernel, dim3((unsigned)T), dim3(MLA_LATENT_THREADS), 0, stream, cache, cache_type, kv,
           kv_a_norm, inv_freq, cos_sin_scale, dims, (const int *)NULL, (const int *)NULL, pos0, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t mla_write_latents_at_v2(void *cache, KernelDType cache_type, const float *kv,
                                               const float *kv_a_norm, const float *inv_freq, float cos_sin_scale,
                                               MlaDims dims, const int *pos, const int *base, int T, float eps,
                                               cudaStream_t stream)
{
    LAUNCH(mla_latent_v2_kernel, dim3((unsigned)T), dim3(MLA_LATENT_THREADS), 0, stream, cache, cache_type, kv,
           kv_a_norm, inv_freq, cos_sin_scale, dims, pos, base, 0, eps);
    return cudaGetLastError();
}

/* Device twins of ref/linear.c's helpers, one token at a time, so the version-1 kernels below read like
 * ref/mla.c. An operand is either float32 or a stored tensor (pointer, element type, first element). */

/** Σ_i a_i b_i with b stored: b_i = element off + i of a float32 or bfloat16 tensor (dot of common.cuh). */
static __device__ float dot(const float *a, const void *b, KernelDType b_type, size_t off, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * load_elem(b, b_type, off + i);
    return s;
}

/** y[r − r0] = Σ_c W[r, c] x_c for rows [r0, r1) of W [·, cols] (ref/linear.c's linear_rows, T = 1). */
static __device__ void linear_rows(float *y, const void *x, KernelDType x_type, size_t x_off, const void *W,
                                   KernelDType w_type, int cols, int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        float s = 0.0f;
        for (int c = 0; c < cols; c++)
            s += load_elem(W, w_type, (size_t)r * cols + c) * load_elem(x, x_type, x_off + c);
        y[r - r0] = s;
    }
}

/** y_c = Σ_{r<n} W[r0 + r, c] x_r for W [·, cols] (ref/linear.c's linear_transposed_rows). */
static __device__ void linear_transposed_rows(float *y, const float *x, const void *W, KernelDType w_type, int cols,
                                              int r0, int n)
{
    for (int c = 0; c < cols; c++) {
        float s = 0.0f;
        for (int r = 0; r < n; r++) s += load_elem(W, w_type, (size_t)(r0 + r) * cols + c) * x[r];
        y[c] = s;
    }
}

/** Numerically stable softmax of x[0..n) in place (ref/mla.c's softmax). */
static __device__ void softmax(float *x, int n)
{
    float max = x[0], sum = 0;
    for (int j = 1; j < n; j++) max = fmaxf(max, x[j]);
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - max);
        sum += x[j];
    }
    for (int j = 0; j < n; j++) x[j] /= sum;
}

// ANCHOR: mla_expanded_v1
/** Expanded form: per head, decompress k^N_j = W^UK_h ĉ_j and v_j = W^UV_h ĉ_j for every
 * cached position, then s_{t,j} = σ (q^N_t·k^N_j + q^R_t·k^R_j), softmax, o_t = Σ p v_j.
 * Version 1: thread (t, h) runs one pass of the loops over h and t, with keys j ∈ [0, p_t] at cache
 * rows base_t + j (p_t, base_t as in mla_latent_v1_kernel), decompressing one key at a time.
 * scratch per thread: ctx + d_n + d_v floats (ctx > every p_t). */
__global__ void mla_attend_expanded_v1(float *o, const float *q, const void *kv_b, KernelDType kv_b_type,
                                       const void *cache, KernelDType cache_type, MlaDims dims, const int *pos,
                                       const int *base, int pos0, int T, int ctx, float *scratch)
{
    const int nh = dims.n_h, dn = dims.d_n, dr = dims.d_r, dc = dims.d_c, width = dc + dr;
    const int dv = dims.d_v, dq = dn + dr, id = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (id >= T * nh) return;
    float *scores = scratch + (size_t)id * (ctx + dn + dv), *k_nope = scores + ctx, *v = k_nope + dn;
    {
        const int h = id % nh;         /* this thread's head... */
        const int row = h * (dn + dv); /* head h's block of kv_b_proj */
        {
            const int t = id / nh; /* ...and token */
            const float *q_nope = q + ((size_t)t * nh + h) * dq, *q_rope = q_nope + dn;
            const int n_keys = token_position(pos, pos0, t) + 1;     /* causal: keys 0..p_t */
            const size_t c_kv = (size_t)(pos ? base[t] : 0) * width; /* cache row of key 0 */
            for (int j = 0; j < n_keys; j++) {
                linear_rows(k_nope, cache, cache_type, c_kv + (size_t)j * width, kv_b, kv_b_type, dc, row,
                            row + dn); /* k^N_j, [d_n] */
                scores[j] = dims.scale * (dot(q_nope, k_nope, dn) +
                                          dot(q_rope, cache, cache_type, c_kv + (size_t)j * width + dc, dr));
            }
            softmax(scores, n_keys);
            float *o_th = o + ((size_t)t * nh + h) * dv;
            for (int d = 0; d < dv; d++) o_th[d] = 0;
            for (int j = 0; j < n_keys; j++) {
                linear_rows(v, cache, cache_type, c_kv + (size_t)j * width, kv_b, kv_b_type, dc, row + dn,
                            row + dn + dv); /* v_j, [d_v] */
                for (int d = 0; d < dv; d++) o_th[d] += scores[j] * v[d];
            }
        }
    }
}
// ANCHOR_END: mla_expanded_v1

// ANCHOR: mla_absorbed_v1
/** Absorbed form: q^L = W^UK_hᵀ q^N (the query in latent space), s_{t,j} = σ (q^L·ĉ_j + q^R·k^R_j),
 * o^L = Σ_j p_j ĉ_j (a weighted sum of latents), o_{t,h} = W^UV_h o^L. Nothing is decompressed.
 * Version 1: thread (t, h) runs one pass of the loops over t and h, keys as in mla_attend_expanded_v1.
 * scratch per thread: ctx + 2·d_c floats. */
__global__ void mla_attend_absorbed_v1(float *o, const float *q, const void *kv_b, KernelDType kv_b_type,
                                       const void *cache, KernelDType cache_type, MlaDims dims, const int *pos,
                                       const int *base, int pos0, int T, int ctx, float *scratch)
{
    const int nh = dims.n_h, dn = dims.d_n, dr = dims.d_r, width = dims.d_c + dr;
    const int dv = dims.d_v, dq = dn + dr, dc = dims.d_c, id = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (id >= T * nh) return;
    float *scores = scratch + (size_t)id * (ctx + 2 * dc), *q_lat = scores + ctx, *o_lat = q_lat + dc;
    {
        const int t = id / nh; /* this thread's token... */
        const int n_keys = token_position(pos, pos0, t) + 1;
        const size_t c_kv = (size_t)(pos ? base[t] : 0) * width; /* cache row of key 0 */
        {
            const int h = id % nh; /* ...and head */
            const int row = h * (dn + dv);
            const float *q_nope = q + ((size_t)t * nh + h) * dq, *q_rope = q_nope + dn;
            linear_transposed_rows(q_lat, q_nope, kv_b, kv_b_type, dc, row, dn); /* W^UK_hᵀ q^N, [d_c] */
            for (int j = 0; j < n_keys; j++) /* σ is still d_q^{-1/2}·m², not d_c's */
                scores[j] = dims.scale * (dot(q_lat, cache, cache_type, c_kv + (size_t)j * width, dc) +
                                          dot(q_rope, cache, cache_type, c_kv + (size_t)j * width + dc, dr));
            softmax(scores, n_keys);
            for (int c = 0; c < dc; c++) o_lat[c] = 0;
            for (int j = 0; j < n_keys; j++)
                for (int c = 0; c < dc; c++)
                    o_lat[c] += scores[j] * load_elem(cache, cache_type, c_kv + (size_t)j * width + c);
            linear_rows(o + ((size_t)t * nh + h) * dv, o_lat, KERNEL_F32, 0, kv_b, kv_b_type, dc, row + dn,
                        row + dn + dv); /* W^UV_h o^L, [d_v] */
        }
    }
}
// ANCHOR_END: mla_absorbed_v1

extern "C" cudaError_t mla_attend_v1(float *o, const float *q, const void *kv_b, KernelDType kv_b_type,
                                     const void *cache, KernelDType cache_type, MlaDims dims, int pos0, int T,
                                     int absorbed, float *scratch, cudaStream_t stream)
{
    const dim3 grid(blocks_for((size_t)T * dims.n_h, 32));
    if (absorbed)
        LAUNCH(mla_attend_absorbed_v1, grid, dim3(32), 0, stream, o, q, kv_b, kv_b_type, cache, cache_type, dims,
               (const int *)NULL, (const int *)NULL, pos0, T, pos0 + T, scratch);
    else
        LAUNCH(mla_attend_expanded_v1, grid, dim3(32), 0, stream, o, q, kv_b, kv_b_type, cache, cache_type, dims,
               (const int *)NULL, (const int *)NULL, pos0, T, pos0 + T, scratch);
    return cudaGetLastError();
}

extern "C" cudaError_t mla_attend_at_v1(float *o, const float *q, const void *kv_b, KernelDType kv_b_type,
                                        const void *cache, KernelDType cache_type, MlaDims dims, const int *pos,
                                        const int *base, int T, int max_ctx, int absorbed, float *scratch,
                                        cudaStream_t stream)
{
    const dim3 grid(blocks_for((size_t)T * dims.n_h, 32));
    if (absorbed)
        LAUNCH(mla_attend_absorbed_v1, grid, dim3(32), 0, stream, o, q, kv_b, kv_b_type, cache, cache_type, dims, pos,
               base, 0, T, max_ctx, scratch);
    else
        LAUNCH(mla_attend_expanded_v1, grid, dim3(32), 0, stream, o, q, kv_b, kv_b_type, cache, cache_type, dims, pos,
               base, 0, T, max_ctx, scratch);
    return cudaGetLastError();
}

// ANCHOR: mla_expanded_v2
/** Block j: K[j, h] = [k^N_{j,h} ; k^R_j] and V[j, h] = v_{j,h} from u = kv_b · ĉ_j. */
__global__ void mla_expand_v2_kernel(float *k, float *v, const float *u, const void *cache, KernelDType cache_type,
                                     MlaDims dims)
{
    const int j = (int)blockIdx.x, nh = dims.n_h, dn = dims.d_n, dr = dims.d_r, dv = dims.d_v, dq = dn + dr;
    const float *u_j = u + (size_t)j * nh * (dn + dv);
    const size_t k_rope = (size_t)j * (dims.d_c + dr) + dims.d_c;
    for (int i = (int)threadIdx.x; i < nh * dq; i += (int)blockDim.x) {
        const int h = i / dq, d = i % dq;
        k[(size_t)j * nh * dq + i] = d < dn ? u_j[h * (dn + dv) + d] : load_elem(cache, cache_type, k_rope + d - dn);
    }
    for (int i = (int)threadIdx.x; i < nh * dv; i += (int)blockDim.x) {
        const int h = i / dv, d = i % dv;
        v[(size_t)j * nh * dv + i] = u_j[h * (dn + dv) + dn + d];
    }
}

/** Block (t, h): one row of scores, scaled by σ, masked beyond key pos0 + t, softmax in float32. */
__global__ void mla_causal_softmax_v2_kernel(float *p, const float *s, float scale, int T, int ctx, int pos0)
{
    __shared__ float scratch[32];
    const int t = (int)blockIdx.x, h = (int)blockIdx.y, n_keys = pos0 + t + 1;
    const size_t row = ((size_t)h * T + t) * ctx;
    float max = -INFINITY;
    for (int j = (int)threadIdx.x; j < n_keys; j += (int)blockDim.x) max = fmaxf(max, scale * s[row + j]);
    max = block_max(max, scratch);
    float sum = 0.0f;
    for (int j = (int)threadIdx.x; j < n_keys; j += (int)blockDim.x) sum += expf(scale * s[row + j] - max);
    sum = block_sum(sum, scratch);
    for (int j = (int)threadIdx.x; j < ctx; j += (int)blockDim.x)
        p[row + j] = j < n_keys ? expf(scale * s[row + j] - max) / sum : 0.0f;
}
// ANCHOR_END: mla_expanded_v2

extern "C" cudaError_t mla_expand_v2(float *k, float *v, const float *u, const void *cache, KernelDType cache_type,
                                     MlaDims dims, int ctx, cudaStream_t stream)
{
    LAUNCH(mla_expand_v2_kernel, dim3((unsigned)ctx), dim3(256), 0, stream, k, v, u, cache, cache_type, dims);
    return cudaGetLastError();
}

extern "C" cudaError_t mla_causal_softmax_v2(float *p, const float *s, float scale, int n_h, int T, int ctx, int pos0,
                                             cudaStream_t stream)
{
    LAUNCH(mla_causal_softmax_v2_kernel, dim3((unsigned)T, (unsigned)n_h), dim3(MLA_SOFTMAX_THREADS), 0, stream, p, s,
           scale, T, ctx, pos0);
    return cudaGetLastError();
}

// ANCHOR: mla_decode_v2
#define DC_PER_LANE (MLA_DECODE_MAX_DC / 32) /**< latent dims per lane */
#define DR_PER_LANE (MLA_DECODE_MAX_DR / 32) /**< k^R dims per lane */

/**
 * Block (split, h, t), 4 warps. Lane l holds q^L and the o^L accumulator for
 * latent dims c = l + 32·i, and q^R for dims l + 32·i of k^R. Warp w takes keys
 * start + w, start + w + 4, … of the split: score s = σ(q^L·ĉ_j + q^R·k^R_j) by a
 * warp reduction, then the online softmax update m' = max(m, s),
 * l' = l·e^{m−m'} + e^{s−m'}, acc' = acc·e^{m−m'} + e^{s−m'} ĉ_j. The warps' states
 * are merged through shared memory into one partial (m, l, acc[d_c]) per split.
 * Token t's keys are j ≤ p_t at cache rows base_t + j (as in mla_latent_v1_kernel); the grid may
 * hold more splits than a token needs (sized by the cache, not by p_t): those blocks return at once.
 * Dynamic shared memory: MLA_DECODE_WARPS · (d_c + 2) floats.
 */
__global__ void mla_decode_split_kernel(float *partial, const float *q_lat, const float *q, const void *cache,
                                        KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int pos0,
                                        int n_split)
{
    DYNAMIC_SHARED(float, smem);
    const int split = (int)blockIdx.x, h = (int)blockIdx.y, t = (int)blockIdx.z;
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    const int nh = dims.n_h, dc = dims.d_c, dr = dims.d_r, dq = dims.d_n + dr, width = dc + dr;
    const int n_keys = token_position(pos, pos0, t) + 1, start = split * MLA_DECODE_KEYS_PER_SPLIT;
    if (start >= n_keys) /* a split past this token's keys: no partial */
        return;
    const int end = min(start + MLA_DECODE_KEYS_PER_SPLIT, n_keys);
    const size_t first = (size_t)(pos ? base[t] : 0) * width; /* cache row of key 0 */
    const float *ql = q_lat + ((size_t)t * nh + h) * dc, *qr = q + ((size_t)t * nh + h) * dq + dims.d_n;
    float q_l[DC_PER_LANE], q_r[DR_PER_LANE], acc[DC_PER_LANE];
    for (int i = 0; i < DC_PER_LANE; i++) {
        const int c = lane + 32 * i;
        q_l[i] = c < dc ? ql[c] : 0.0f;
        acc[i] = 0.0f;
    }
    for (int i = 0; i < DR_PER_LANE; i++) q_r[i] = lane + 32 * i < dr ? qr[lane + 32 * i] : 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int j = start + warp; j < end; j += MLA_DECODE_WARPS) {
        const size_t row = first + (size_t)j * width;
        float c_hat[DC_PER_LANE];
        float dot = 0.0f;
        for (int i = 0; i < DC_PER_LANE; i++) {
            const int c = lane + 32 * i;
            c_hat[i] = c < dc ? load_elem(cache, cache_type, row + c) : 0.0f;
            dot += q_l[i] * c_hat[i];
        }
        for (int i = 0; i < DR_PER_LANE; i++)
            if (lane + 32 * i < dr) dot += q_r[i] * load_elem(cache, cache_type, row + dc + lane + 32 * i);
        const float s = dims.scale * warp_sum(dot);
        const float m_new = fmaxf(m, s), rescale = expf(m - m_new), p = expf(s - m_new);
        l = l * rescale + p;
        for (int i = 0; i < DC_PER_LANE; i++) acc[i] = acc[i] * rescale + p * c_hat[i];
        m = m_new;
    }
    float *w_acc = smem + (size_t)warp * (dc + 2); /* this warp's (acc, m, l) */
    for (int i = 0; i < DC_PER_LANE; i++)
        if (lane + 32 * i < dc) w_acc[lane + 32 * i] = acc[i];
    if (lane == 0) {
        w_acc[dc] = m;
        w_acc[dc + 1] = l;
    }
    __syncthreads();
    float m_all = -INFINITY;
    for (int w = 0; w < MLA_DECODE_WARPS; w++) m_all = fmaxf(m_all, smem[(size_t)w * (dc + 2) + dc]);
    float *out = partial + (((size_t)t * nh + h) * n_split + split) * (dc + 2);
    for (int c = (int)threadIdx.x; c < dc + 2; c += (int)blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < MLA_DECODE_WARPS; w++) {
            const float *ws = smem + (size_t)w * (dc + 2);
            const float f = ws[dc] == -INFINITY ? 0.0f : expf(ws[dc] - m_all); /* a warp with no keys adds 0 */
            v += c == dc ? 0.0f : f * ws[c];
        }
        out[c] = c == dc ? m_all : v;
    }
}

/**
 * Block (h, t): o^L = Σ_s e^{m_s − M} acc_s / Σ_s e^{m_s − M} l_s over the splits holding token t's keys,
 * M = max_s m_s.
 */
__global__ void mla_decode_combine_kernel(float *o_lat, const float *partial, MlaDims dims, const int *pos, int pos0,
                                          int n_split)
{
    const int h = (int)blockIdx.x, t = (int)blockIdx.y, nh = dims.n_h, dc = dims.d_c;
    const float *part = partial + ((size_t)t * nh + h) * n_split * (dc + 2);
    n_split = min(n_split, (token_position(pos, pos0, t) + MLA_DECODE_KEYS_PER_SPLIT) / MLA_DECODE_KEYS_PER_SPLIT);
    float m_all = -INFINITY;
    for (int s = 0; s < n_split; s++) m_all = fmaxf(m_all, part[(size_t)s * (dc + 2) + dc]);
    float l_all = 0.0f;
    for (int s = 0; s < n_split; s++) {
        const float *ps = part + (size_t)s * (dc + 2);
        l_all += ps[dc] == -INFINITY ? 0.0f : expf(ps[dc] - m_all) * ps[dc + 1];
    }
    for (int c = (int)threadIdx.x; c < dc; c += (int)blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < n_split; s++) {
            const float *ps = part + (size_t)s * (dc + 2);
            v += ps[dc] == -INFINITY ? 0.0f : expf(ps[dc] - m_all) * ps[c];
        }
        o_lat[((size_t)t * nh + h) * dc + c] = v / l_all;
    }
}
// ANCHOR_END: mla_decode_v2

extern "C" int mla_decode_splits(int ctx)
{
    return (ctx + MLA_DECODE_KEYS_PER_SPLIT - 1) / MLA_DECODE_KEYS_PER_SPLIT;
}

/** Launches the split kernel on n_split splits and the combine (positions as in mla_decode_split_kernel). */
static cudaError_t decode_launch(float *o_lat, const float *q_lat, const float *q, const void *cache,
                                 KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int pos0, int T,
                                 int n_split, float *partial, cudaStream_t stream)
{
    if (dims.d_c > MLA_DECODE_MAX_DC || dims.d_r > MLA_DECODE_MAX_DR) return cudaErrorInvalidValue;
    const size_t smem = sizeof(float) * MLA_DECODE_WARPS * (size_t)(dims.d_c + 2);
    LAUNCH(mla_decode_split_kernel, dim3((unsigned)n_split, (unsigned)dims.n_h, (unsigned)T),
           dim3(32 * MLA_DECODE_WARPS), smem, stream, partial, q_lat, q, cache, cache_type, dims, pos, base, pos0,
           n_split);
    LAUNCH(mla_decode_combine_kernel, dim3((unsigned)dims.n_h, (unsigned)T), dim3(128), 0, stream, o_lat, partial, dims,
           pos, pos0, n_split);
    return cudaGetLastError();
}

extern "C" cudaError_t mla_decode_v2(float *o_lat, const float *q_lat, const float *q, const void *cache,
                                     KernelDType cache_type, MlaDims dims, int pos0, int T, float *partial,
                                     cudaStream_t stream)
{
    return decode_launch(o_lat, q_lat, q, cache, cache_type, dims, NULL, NULL, pos0, T, mla_decode_splits(pos0 + T),
                         partial, stream);
}

extern "C" cudaError_t mla_decode_at_v2(float *o_lat, const float *q_lat, const float *q, const void *cache,
                                        KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T,
                                        int max_ctx, float *partial, cudaStream_t stream)
{
    return decode_launch(o_lat, q_lat, q, cache, cache_type, dims, pos, base, 0, T, mla_decode_splits(max_ctx), partial,
                         stream);
}

/* ---- version 3: one read of each cache row per head group ------------------------------------ */

#define MLA_V3_GROUP         16                            /**< heads sharing one pass over the cache rows */
#define MLA_V3_WARPS         16                            /**< warps per block: one head each */
#define MLA_V3_HPW           (MLA_V3_GROUP / MLA_V3_WARPS) /**< heads per warp */
#define MLA_V3_TILE          16                            /**< cache rows staged in shared memory at once */
/** Fewest keys per split: a split writes MLA_V3_GROUP·(d_c + 2) floats of partials (33 KB at d_c 512),
 *  so 64 bf16 rows of 576 (74 KB) keep the partials under half of the cache bytes while a 1K context
 *  still spreads over 17 blocks of 512 threads. */
#define MLA_V3_MIN_KEYS      64
#define MLA_V3_MAX_SPLITS    128 /**< most splits of one sequence: about one block per SM at batch 1 */
#define MLA_V3_TARGET_BLOCKS 264 /**< blocks to aim for: two per SM of a 132-SM H100 */

/** Keys per split for n_keys keys over n_split grid columns: at least MLA_V3_MIN_KEYS, a whole number of tiles. */
static __device__ __forceinline__ int v3_keys_per_split(int n_keys, int n_split)
{
    const int k = max(MLA_V3_MIN_KEYS, (n_keys + n_split - 1) / n_split);
    return (k + MLA_V3_TILE - 1) / MLA_V3_TILE * MLA_V3_TILE;
}

/** Floats per (token, head, split) partial: o^L's d_c, then m and ℓ, padded to a 16-byte multiple. */
static __host__ __device__ __forceinline__ int v3_partial_stride(int dc)
{
    return (dc + 2 + 3) / 4 * 4;
}

/** Latent dimension of a lane's i-th value (i < DC_PER_LANE): 4 consecutive dims per 128, for float4 access. */
static __device__ __forceinline__ int v3_dim(int lane, int i)
{
    return 4 * lane + 128 * (i / 4) + i % 4;
}

// ANCHOR: mla_decode_v3
/**
 * Block (split, group, t), 16 warps; warp w owns head g·16 + w (MLA_V3_HPW heads per warp), lane l holding
 * its q^L, q^R and o^L accumulator at dims l + 32·i as in version 2. The split's keys come from the
 * token's length on the device: keys_per_split = max(64, ⌈n_keys / n_split⌉) rounded up to a tile, so a
 * short sequence uses few splits of a fixed grid and a CUDA graph replays at any length. Per tile of 16
 * cache rows: the block copies the rows [ĉ_j ; k^R_j] into shared memory once (16-byte loads when the row
 * width is a multiple of 8, else element by element); every warp scores its heads against the tile
 * (each shared-memory element read once for both), s_j = σ(q^L·ĉ_j + q^R·k^R_j), and folds the tile into
 * each head's online softmax with one rescale,
 * m' = max(m, max_j s_j), l' = l·e^{m−m'} + Σ_j e^{s_j−m'}, acc' = acc·e^{m−m'} + Σ_j e^{s_j−m'} ĉ_j.
 * Each head's (acc, m, l) is its split's partial; a counter per (token, group) tells the block that writes
 * the last partial to combine them, so one launch does it all. counters: zero at the first launch, and
 * left zero by every launch. Dynamic shared memory: MLA_V3_TILE · (d_c + d_r) floats.
 */
__global__ void mla_decode_v3_kernel(void *o_lat, KernelDType o_type, float *partial, int *counters, const float *q_lat,
                                     const float *q, const void *cache, KernelDType cache_type, MlaDims dims,
                                     const int *pos, const int *base, int pos0, int n_split, int wide, int vec)
{
    DYNAMIC_SHARED(float, tile);
    const int split = (int)blockIdx.x, t = (int)blockIdx.z, lane = (int)threadIdx.x % 32;
    const int h0 = (int)blockIdx.y * MLA_V3_GROUP + ((int)threadIdx.x / 32) * MLA_V3_HPW;
    const int nh = dims.n_h, dc = dims.d_c, dr = dims.d_r, dq = dims.d_n + dr, width = dc + dr;
    const int n_keys = token_position(pos, pos0, t) + 1, kps = v3_keys_per_split(n_keys, n_split);
    const int start = split * kps;
    if (start >= n_keys) /* whole block: this split has no keys */
        return;
    const int end = min(start + kps, n_keys);
    const size_t first = (size_t)(pos ? base[t] : 0) * width; /* cache row of key 0 */
    float q_l[MLA_V3_HPW][DC_PER_LANE], q_r[MLA_V3_HPW][DR_PER_LANE], acc[MLA_V3_HPW][DC_PER_LANE];
    float m[MLA_V3_HPW], l[MLA_V3_HPW];
#pragma unroll
    for (int k = 0; k < MLA_V3_HPW; k++) { /* a head past n_h scores with q = 0, unwritten */
        const bool live = h0 + k < nh;
        const size_t th = (size_t)t * nh + (live ? h0 + k : 0);
        const float *ql = q_lat + th * dc, *qr = q + th * dq + dims.d_n;
#pragma unroll
        for (int i = 0; i < DC_PER_LANE; i += 4) { /* float4 loads when d_c is a multiple of 4 */
            const int c = v3_dim(lane, i);
            if (vec && live && c < dc) {
                const float4 v = *reinterpret_cast<const float4 *>(ql + c);
                q_l[k][i] = v.x;
                q_l[k][i + 1] = v.y;
                q_l[k][i + 2] = v.z;
                q_l[k][i + 3] = v.w;
            } else {
                for (int j = 0; j < 4; j++) q_l[k][i + j] = live && c + j < dc ? ql[c + j] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < 4; j++) acc[k][i + j] = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < DR_PER_LANE; i++) q_r[k][i] = live && lane + 32 * i < dr ? qr[lane + 32 * i] : 0.0f;
        m[k] = -INFINITY;
        l[k] = 0.0f;
    }
    for (int j0 = start; j0 < end; j0 += MLA_V3_TILE) {
        const int n = min(MLA_V3_TILE, end - j0);
        const size_t row0 = first + (size_t)j0 * width;
        if (wide) /* each row read once for the whole group */
            for (int c = 8 * (int)threadIdx.x; c < n * width; c += 8 * (int)blockDim.x)
                load8(cache, cache_type, row0 + c, tile + c);
        else
            for (int c = (int)threadIdx.x; c < n * width; c += (int)blockDim.x)
                tile[c] = load_elem(cache, cache_type, row0 + c);
        __syncthreads();
        float s[MLA_V3_HPW][MLA_V3_TILE], m_new[MLA_V3_HPW]; /* every head of the warp per shared-memory read */
#pragma unroll
        for (int k = 0; k < MLA_V3_HPW; k++) m_new[k] = m[k];
#pragma unroll
        for (int j = 0; j < MLA_V3_TILE; j++) {
            if (j < n) { /* uniform over the block */
                const float *row = tile + (size_t)j * width;
                float dot[MLA_V3_HPW] = { 0.0f };
#pragma unroll
                for (int i = 0; i < DC_PER_LANE; i++)
                    if (v3_dim(lane, i) < dc) {
                        const float c = row[v3_dim(lane, i)];
#pragma unroll
                        for (int k = 0; k < MLA_V3_HPW; k++) dot[k] += q_l[k][i] * c;
                    }
#pragma unroll
                for (int i = 0; i < DR_PER_LANE; i++)
                    if (lane + 32 * i < dr) {
                        const float r = row[dc + lane + 32 * i];
#pragma unroll
                        for (int k = 0; k < MLA_V3_HPW; k++) dot[k] += q_r[k][i] * r;
                    }
#pragma unroll
                for (int k = 0; k < MLA_V3_HPW; k++) {
                    s[k][j] = dims.scale * warp_sum(dot[k]);
                    m_new[k] = fmaxf(m_new[k], s[k][j]);
                }
            }
        }
        float p[MLA_V3_HPW][MLA_V3_TILE];
#pragma unroll
        for (int k = 0; k < MLA_V3_HPW; k++) {
            const float rescale = expf(m[k] - m_new[k]); /* 0 on the first tile (m = −∞) */
            l[k] *= rescale;
#pragma unroll
            for (int i = 0; i < DC_PER_LANE; i++) acc[k][i] *= rescale;
#pragma unroll
            for (int j = 0; j < MLA_V3_TILE; j++) {
                p[k][j] = j < n ? expf(s[k][j] - m_new[k]) : 0.0f;
                l[k] += p[k][j];
            }
            m[k] = m_new[k];
        }
#pragma unroll
        for (int j = 0; j < MLA_V3_TILE; j++) {
            if (j < n) {
                const float *row = tile + (size_t)j * width;
#pragma unroll
                for (int i = 0; i < DC_PER_LANE; i++)
                    if (v3_dim(lane, i) < dc) {
                        const float c = row[v3_dim(lane, i)];
#pragma unroll
                        for (int k = 0; k < MLA_V3_HPW; k++) acc[k][i] += p[k][j] * c;
                    }
            }
        }
        __syncthreads(); /* the tile is read before the next overwrites it */
    }
    const int ps_w = v3_partial_stride(dc);
    float *part = partial + ((size_t)t * nh + h0) * n_split * ps_w; /* [head of the warp][split][ps_w] */
#pragma unroll
    for (int k = 0; k < MLA_V3_HPW; k++) {
        if (h0 + k >= nh) continue;
        float *out = part + ((size_t)k * n_split + split) * ps_w;
#pragma unroll
        for (int i = 0; i < DC_PER_LANE; i += 4) {
            const int c = v3_dim(lane, i);
            if (vec && c < dc)
                *reinterpret_cast<float4 *>(out + c) =
                    make_float4(acc[k][i], acc[k][i + 1], acc[k][i + 2], acc[k][i + 3]);
            else
                for (int j = 0; j < 4; j++)
                    if (c + j < dc) out[c + j] = acc[k][i + j];
        }
        if (lane == 0) {
            out[dc] = m[k];
            out[dc + 1] = l[k];
        }
    }

    /* The last of the token's used splits to finish combines them (no second launch):
     * o^L = Σ_s e^{m_s − M} acc_s / Σ_s e^{m_s − M} ℓ_s, M = max_s m_s, stored as o_type. */
    __shared__ int last;
    const int used = (n_keys + kps - 1) / kps;
    __threadfence(); /* this block's partials, visible to all */
    __syncthreads();
    if (threadIdx.x == 0) {
        int *done = counters + (size_t)t * gridDim.y + blockIdx.y;
        last = atomicAdd(done, 1) == used - 1;
        if (last) *done = 0; /* zero again for the next launch or replay */
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    __shared__ float split_w[MLA_V3_WARPS][MLA_V3_MAX_SPLITS]; /* e^{m_s − M} of the warp's head */
    float *w_s = split_w[threadIdx.x / 32];
#pragma unroll
    for (int k = 0; k < MLA_V3_HPW; k++) {
        if (h0 + k >= nh) continue;
        const float *ps = part + (size_t)k * n_split * ps_w; /* written by other blocks, never read before */
        float m_all = -INFINITY, l_all = 0.0f;
        for (int sp = lane; sp < used; sp += 32) m_all = fmaxf(m_all, ps[(size_t)sp * ps_w + dc]);
        m_all = warp_max(m_all);
        for (int sp = lane; sp < used; sp += 32) { /* each split's m_s and ℓ_s read once */
            w_s[sp] = expf(ps[(size_t)sp * ps_w + dc] - m_all);
            l_all += w_s[sp] * ps[(size_t)sp * ps_w + dc + 1];
        }
        l_all = warp_sum(l_all);
        __syncwarp();
        const size_t o_row = ((size_t)t * nh + h0 + k) * dc;
        for (int c = vec ? 4 * lane : lane; c < dc; c += vec ? 128 : 32) { /* 4 dims per lane when vec, else 1 */
            float v[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
            for (int sp = 0; sp < used; sp++) {
                const float *src = ps + (size_t)sp * ps_w + c;
                if (vec) {
                    const float4 a = *reinterpret_cast<const float4 *>(src);
                    v[0] += w_s[sp] * a.x;
                    v[1] += w_s[sp] * a.y;
                    v[2] += w_s[sp] * a.z;
                    v[3] += w_s[sp] * a.w;
                } else {
                    v[0] += w_s[sp] * src[0];
                }
            }
            for (int j = 0; j < (vec ? 4 : 1); j++) store_elem(o_lat, o_type, o_row + c + j, v[j] / l_all);
        }
        __syncwarp(); /* w_s is read before the warp's next head overwrites it */
    }
}
// ANCHOR_END: mla_decode_v3

extern "C" int mla_decode_v3_splits(int n_h, int T, int max_ctx)
{
    const int groups = n_h > MLA_V3_GROUP ? (n_h + MLA_V3_GROUP - 1) / MLA_V3_GROUP : 1;
    const int by_blocks = (MLA_V3_TARGET_BLOCKS + groups * T - 1) / (groups * T);
    const int by_ctx = (max_ctx + MLA_V3_MIN_KEYS - 1) / MLA_V3_MIN_KEYS;
    const int s = by_blocks < by_ctx ? by_blocks : by_ctx;
    return s < 1 ? 1 : s > MLA_V3_MAX_SPLITS ? MLA_V3_MAX_SPLITS : s;
}

extern "C" size_t mla_decode_v3_partial_floats(MlaDims dims, int max_T, int max_ctx)
{
    size_t most = 0;
    for (int T = 1; T <= max_T; T++) {
        const size_t n = (size_t)T * mla_decode_v3_splits(dims.n_h, T, max_ctx);
        most = n > most ? n : most;
    }
    return most * (size_t)dims.n_h * (size_t)v3_partial_stride(dims.d_c);
}

extern "C" size_t mla_decode_v3_counters(int n_h, int max_T)
{
    return (size_t)max_T * (size_t)(n_h > MLA_V3_GROUP ? (n_h + MLA_V3_GROUP - 1) / MLA_V3_GROUP : 1);
}

/** Launches mla_decode_v3_kernel (positions as in the kernel). */
static cudaError_t decode_v3_launch(void *o_lat, KernelDType o_type, const float *q_lat, const float *q,
                                    const void *cache, KernelDType cache_type, MlaDims dims, const int *pos,
                                    const int *base, int pos0, int T, int max_ctx, float *partial, int *counters,
                                    cudaStream_t stream)
{
    if (dims.d_c > MLA_DECODE_MAX_DC || dims.d_r > MLA_DECODE_MAX_DR) return cudaErrorInvalidValue;
    const int width = dims.d_c + dims.d_r, n_split = mla_decode_v3_splits(dims.n_h, T, max_ctx);
    const int wide = width % 8 == 0 && aligned16(cache);
    const int vec = dims.d_c % 4 == 0 && aligned16(q_lat) && aligned16(partial);
    const unsigned int groups = (unsigned int)mla_decode_v3_counters(dims.n_h, 1);
    LAUNCH(mla_decode_v3_kernel, dim3((unsigned)n_split, groups, (unsigned)T), dim3(32 * MLA_V3_WARPS),
           sizeof(float) * MLA_V3_TILE * (size_t)width, stream, o_lat, o_type, partial, counters, q_lat, q, cache,
           cache_type, dims, pos, base, pos0, n_split, wide, vec);
    return cudaGetLastError();
}

extern "C" cudaError_t mla_decode_v3(void *o_lat, KernelDType o_type, const float *q_lat, const float *q,
                                     const void *cache, KernelDType cache_type, MlaDims dims, int pos0, int T,
                                     float *partial, int *counters, cudaStream_t stream)
{
    return decode_v3_launch(o_lat, o_type, q_lat, q, cache, cache_type, dims, NULL, NULL, pos0, T, pos0 + T, partial,
                            counters, stream);
}

extern "C" cudaError_t mla_decode_at_v3(void *o_lat, KernelDType o_type, const float *q_lat, const float *q,
                                        const void *cache, KernelDType cache_type, MlaDims dims, const int *pos,
                                        const int *base, int T, int max_ctx, float *partial, int *counters,
                                        cudaStream_t stream)
{
    return decode_v3_launch(o_lat, o_type, q_lat, q, cache, cache_type, dims, pos, base, 0, T, max_ctx, partial,
                            counters, stream);
}
