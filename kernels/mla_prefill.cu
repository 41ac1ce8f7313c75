/**
 * \file mla_prefill.cu
 * \brief MLA for prompt chunks in the absorbed form (paper §2.1.2; docs/semantics.md §5.2): the chunk's
 *        queries in latent space against the cache rows [ĉ_j ; k^R_j] with an online softmax over
 *        tiles of rows, so nothing the size of the context (scores, decompressed keys or values) exists.
 *
 * Inputs per (token t, head h): q^L_{t,h} = W^UK_hᵀ q^N_{t,h} (d_c floats, a batched GEMM before the
 * launch) and q^R_{t,h} (d_r floats inside q). Output o^L_{t,h} = Σ_j p_{t,h,j} ĉ_j with
 * p = softmax_j(σ (q^L·ĉ_j + q^R·k^R_j)) over the keys j ≤ pos[t] at cache rows base[t] + j; the
 * W^UV GEMM after the launch turns o^L into o.
 */
#include "common.cuh"

#define PREFILL_ROWS    16 /**< (token, head) query rows per block of version 2 */
#define PREFILL_LANES   16 /**< threads per query row, each 1/16 of its latent and rotary dims */
#define PREFILL_THREADS (PREFILL_ROWS * PREFILL_LANES) /**< 256 */
#define PREFILL_HEADS   16  /**< most heads of one block (a head group; several tokens when n_h is smaller) */
#define PREFILL_KEYS    16  /**< cache rows per shared-memory tile */
#define PREFILL_MAX_DC  512 /**< largest d_c version 2 holds in registers */
#define PREFILL_MAX_DR  64  /**< largest d_r version 2 holds in registers */
#define DC_PER          (PREFILL_MAX_DC / PREFILL_LANES) /**< latent dims per thread */
#define DR_PER          (PREFILL_MAX_DR / PREFILL_LANES) /**< rotary dims per thread */

/* Work on shared memory and registers only: the counted build (sim/count_hooks.c counts global traffic)
 * need not instrument it, and without the hooks it runs at the simulator's speed. */
#ifdef __CUDACC__
#define SHARED_ONLY /**< nvcc: nothing to mark */
#else
#define SHARED_ONLY __attribute__((no_sanitize_thread)) /**< not instrumented by the counted build */
#endif

/** σ (q^L·ĉ_j + q^R·k^R_j) for the stored cache row at element `row` (one thread, left to right). */
static __device__ float latent_score(const float *q_l, const float *q_r, const void *cache, KernelDType type,
                                     size_t row, MlaDims dims)
{
    float s = 0.0f, r = 0.0f;
    for (int c = 0; c < dims.d_c; c++) s += q_l[c] * load_elem(cache, type, row + c);
    for (int i = 0; i < dims.d_r; i++) r += q_r[i] * load_elem(cache, type, row + dims.d_c + i);
    return dims.scale * (s + r);
}

// ANCHOR: mla_prefill_v1
/**
 * Version 1: thread (t, h) runs ref/mla.c's absorbed loop for its query without a score array: the
 * softmax's max, then its sum, then o^L_c = Σ_j e^{s_j − max} / sum · ĉ_j[c], recomputing s_j in each pass.
 */
__global__ void mla_prefill_v1_kernel(float *o_lat, const float *q_lat, const float *q, const void *cache,
                                      KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T)
{
    const int id = (int)(blockIdx.x * blockDim.x + threadIdx.x), nh = dims.n_h, dc = dims.d_c;
    if (id >= T * nh) return;
    const int t = id / nh, h = id % nh, n_keys = pos[t] + 1, width = dc + dims.d_r;
    const float *q_l = q_lat + (size_t)id * dc, *q_r = q + (size_t)id * (dims.d_n + dims.d_r) + dims.d_n;
    const size_t key0 = (size_t)base[t] * width; /* element of cache row base_t + 0 */
    float max = -INFINITY, sum = 0.0f;
    for (int j = 0; j < n_keys; j++)
        max = fmaxf(max, latent_score(q_l, q_r, cache, cache_type, key0 + (size_t)j * width, dims));
    for (int j = 0; j < n_keys; j++)
        sum += expf(latent_score(q_l, q_r, cache, cache_type, key0 + (size_t)j * width, dims) - max);
    float *o = o_lat + ((size_t)t * nh + h) * dc;
    for (int c = 0; c < dc; c++) o[c] = 0.0f;
    for (int j = 0; j < n_keys; j++) {
        const size_t row = key0 + (size_t)j * width;
        const float p = expf(latent_score(q_l, q_r, cache, cache_type, row, dims) - max) / sum;
        for (int c = 0; c < dc; c++) o[c] += p * load_elem(cache, cache_type, row + c);
    }
}
// ANCHOR_END: mla_prefill_v1

extern "C" cudaError_t mla_prefill_v1(float *o_lat, const float *q_lat, const float *q, const void *cache,
                                      KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T,
                                      cudaStream_t stream)
{
    LAUNCH(mla_prefill_v1_kernel, dim3(blocks_for((size_t)T * dims.n_h, 32)), dim3(32), 0, stream, o_lat, q_lat, q,
           cache, cache_type, dims, pos, base, T);
    return cudaGetLastError();
}

/** The running softmax of one query row: max m, sum l, accumulator acc (this thread's latent dims). */
struct OnlineSoftmax {
    float m;           /**< max score so far (−∞: none yet) */
    float l;           /**< Σ e^{s − m} */
    float acc[DC_PER]; /**< Σ e^{s − m} ĉ[c] for c = lane + 16·i */
};

/**
 * Folds the staged tile of n rows (keys j0 … j0 + n − 1 of width floats each) into state st of the
 * thread's query row: scores by a 16-lane reduction, then m' = max(m, max s), l' = l e^{m − m'} +
 * Σ e^{s − m'}, acc' = acc e^{m − m'} + Σ e^{s − m'} ĉ. Keys at or past `visible` are masked.
 * Every thread of the warp calls it with the same n (the shuffles need all lanes).
 */
static __device__ SHARED_ONLY void fold_tile(OnlineSoftmax *st, const float *tile, int n, int width, int visible,
                                             int j0, const float *q_l, const float *q_r, MlaDims dims)
{
    const int lane = (int)threadIdx.x % PREFILL_LANES, dc = dims.d_c, dr = dims.d_r;
    float s[PREFILL_KEYS];
    float tile_max = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < PREFILL_KEYS; jj++) {
        float d = 0.0f;
        if (jj < n) {
            const float *key = tile + (size_t)jj * width;
#pragma unroll
            for (int i = 0; i < DC_PER; i++)
                if (lane + PREFILL_LANES * i < dc) d += q_l[i] * key[lane + PREFILL_LANES * i];
#pragma unroll
            for (int i = 0; i < DR_PER; i++)
                if (lane + PREFILL_LANES * i < dr) d += q_r[i] * key[dc + lane + PREFILL_LANES * i];
        }
        if (jj < n) { /* n is the same for the whole block */
            d += __shfl_xor_sync(FULL_MASK, d, 8);
            d += __shfl_xor_sync(FULL_MASK, d, 4);
            d += __shfl_xor_sync(FULL_MASK, d, 2);
            d += __shfl_xor_sync(FULL_MASK, d, 1);
        }
        s[jj] = jj < n && j0 + jj < visible ? dims.scale * d : -INFINITY;
        tile_max = fmaxf(tile_max, s[jj]);
    }
    const float m_new = fmaxf(st->m, tile_max);
    if (m_new == -INFINITY) /* nothing visible to this row yet */
        return;
    const float rescale = expf(st->m - m_new);
    float l = st->l * rescale;
#pragma unroll
    for (int jj = 0; jj < PREFILL_KEYS; jj++) {
        s[jj] = expf(s[jj] - m_new); /* masked keys give 0 */
        l += s[jj];
    }
#pragma unroll
    for (int i = 0; i < DC_PER; i++) {
        const int c = lane + PREFILL_LANES * i;
        if (c >= dc) break;
        float a = st->acc[i] * rescale;
        for (int jj = 0; jj < n; jj++) a += s[jj] * tile[(size_t)jj * width + c];
        st->acc[i] = a;
    }
    st->m = m_new;
    st->l = l;
}

/**
 * Stages cache rows [row0, row0 + n) (contiguous, `width` elements each) into tile as floats: 16-byte
 * loads when `vec` (the cache 16-byte aligned, width a multiple of 8), element loads otherwise.
 */
static __device__ void stage_keys(float *tile, const void *cache, KernelDType type, size_t row0, int n, int width,
                                  bool vec)
{
    const size_t first = row0 * width, count = (size_t)n * width;
    if (vec) {
        for (size_t i = 8 * threadIdx.x; i < count; i += 8 * PREFILL_THREADS) {
            float v[8];
            load8(cache, type, first + i, v);
            for (int k = 0; k < 8; k++) tile[i + k] = v[k];
        }
    } else {
        for (size_t i = threadIdx.x; i < count; i += PREFILL_THREADS) tile[i] = load_elem(cache, type, first + i);
    }
}

// ANCHOR: mla_prefill_v2
/**
 * Version 2: block (x, y) holds PREFILL_ROWS query rows, heads [y·g, y·g + g) (g = min(n_h, 16)) of
 * tokens [x·τ, x·τ + τ) (τ = 16 / g), sixteen threads per row, each with 1/16 of q^L, q^R and the o^L
 * accumulator in registers. The block streams its sequence's cache rows through shared memory,
 * PREFILL_KEYS at a time, once for all its rows: each row is read once per block, not once per head,
 * and each row's online softmax masks the keys beyond its token's position. Tokens of different
 * sequences in one block (bases differ) take one pass over the cache per sequence.
 * Dynamic shared memory: PREFILL_KEYS · (d_c + d_r) floats.
 */
__global__ void __launch_bounds__(PREFILL_THREADS)
    mla_prefill_v2_kernel(void *o_lat, KernelDType o_type, const float *q_lat, const float *q, const void *cache,
                          KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T, bool vec)
{
    DYNAMIC_SHARED(float, tile);
    const int nh = dims.n_h, dc = dims.d_c, dr = dims.d_r, width = dc + dr;
    const int g = nh < PREFILL_HEADS ? nh : PREFILL_HEADS, tau = PREFILL_ROWS / g;
    const int row = (int)threadIdx.x / PREFILL_LANES, lane = (int)threadIdx.x % PREFILL_LANES;
    const int t_first = (int)blockIdx.x * tau, t = t_first + row / g, h = (int)blockIdx.y * g + row % g;
    const bool live = row < tau * g && t < T && h < nh;
    const int my_base = live ? base[t] : -1, visible = live ? pos[t] + 1 : 0;
    float q_l[DC_PER], q_r[DR_PER];
    OnlineSoftmax st;
    st.m = -INFINITY;
    st.l = 0.0f;
    for (int i = 0; i < DC_PER; i++) {
        const int c = lane + PREFILL_LANES * i;
        q_l[i] = live && c < dc ? q_lat[((size_t)t * nh + h) * dc + c] : 0.0f;
        st.acc[i] = 0.0f;
    }
    for (int i = 0; i < DR_PER; i++) {
        const int c = lane + PREFILL_LANES * i;
        q_r[i] = live && c < dr ? q[((size_t)t * nh + h) * (dims.d_n + dr) + dims.d_n + c] : 0.0f;
    }
    const int t_end = min(T, t_first + tau);
    for (int u = t_first; u < t_end; u++) { /* one pass per sequence among the block's tokens */
        const int b = base[u];
        bool seen = false;
        int keys = 0;
        for (int v = t_first; v < t_end; v++) {
            seen = seen || (v < u && base[v] == b);
            if (base[v] == b) keys = max(keys, pos[v] + 1);
        }
        if (seen) continue;
        for (int j0 = 0; j0 < keys; j0 += PREFILL_KEYS) {
            const int n = min(PREFILL_KEYS, keys - j0);
            __syncthreads(); /* the previous tile is consumed */
            stage_keys(tile, cache, cache_type, (size_t)b + j0, n, width, vec);
            __syncthreads();
            fold_tile(&st, tile, n, width, my_base == b ? visible : 0, j0, q_l, q_r, dims);
        }
    }
    if (!live) return;
    for (int i = 0; i < DC_PER; i++) {
        const int c = lane + PREFILL_LANES * i;
        if (c < dc) store_elem(o_lat, o_type, ((size_t)t * nh + h) * dc + c, st.acc[i] / st.l);
    }
}
// ANCHOR_END: mla_prefill_v2

extern "C" cudaError_t mla_prefill_v2(void *o_lat, KernelDType o_type, const float *q_lat, const float *q,
                                      const void *cache, KernelDType cache_type, MlaDims dims, const int *pos,
                                      const int *base, int T, cudaStream_t stream)
{
    if (dims.d_c > PREFILL_MAX_DC || dims.d_r > PREFILL_MAX_DR || dims.n_h < 1 || T < 1) return cudaErrorInvalidValue;
    const int g = dims.n_h < PREFILL_HEADS ? dims.n_h : PREFILL_HEADS, tau = PREFILL_ROWS / g;
    const size_t smem = sizeof(float) * PREFILL_KEYS * (size_t)(dims.d_c + dims.d_r);
    const bool vec = (dims.d_c + dims.d_r) % 8 == 0 && aligned16(cache);
    LAUNCH(mla_prefill_v2_kernel, dim3(blocks_for((size_t)T, tau), blocks_for((size_t)dims.n_h, g)),
           dim3(PREFILL_THREADS), smem, stream, o_lat, o_type, q_lat, q, cache, cache_type, dims, pos, base, T, vec);
    return cudaGetLastError();
}

extern "C" int mla_prefill_supported(MlaDims dims)
{
    return dims.d_c <= PREFILL_MAX_DC && dims.d_r <= PREFILL_MAX_DR;
}
