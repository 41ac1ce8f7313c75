/**
 * \file router.cu
 * \brief The MoE gate on the device (docs/semantics.md §3.6.3): affinities s_{i,t}, group-limited top-K, weights g_{i,t}.
 */
#include "common.cuh"

#define ROUTER_WARPS 4 /**< tokens per block (one warp each, version 2) */

enum { TOPK_GREEDY_ = 0, TOPK_GROUP_LIMITED_ = 1, TOPK_NOAUX_TC_ = 2 };
enum { SCORING_SOFTMAX_ = 0, SCORING_SIGMOID_ = 1 };

/** weight[k] ← s[idx[k]], then the V2 or V3 rule (normalise and/or scale), as ref/router.c. */
static __device__ void router_weights(float *weight, const int *idx, const float *s, const RouterParams &p)
{
    float sum = 0.0f;
    for (int k = 0; k < p.K; k++) {
        weight[k] = s[idx[k]];
        sum += weight[k];
    }
    const bool normalise = p.norm_topk_prob && p.K > 1;
    if (normalise)
        for (int k = 0; k < p.K; k++) weight[k] /= sum + 1e-20f;
    if (!normalise || p.topk_method == TOPK_NOAUX_TC_)
        for (int k = 0; k < p.K; k++) weight[k] *= p.routed_scaling_factor;
}

// ANCHOR: router_v1
// ANCHOR: router_top_k_v1
/* The k best of score[0..n), best first; the lower index wins ties (ref/router.c's top_k). */
static __device__ void top_k(int *out, int k, const float *score, int n)
{
    bool taken[ROUTER_MAX_E];
    for (int i = 0; i < n; i++) taken[i] = false;
    for (int r = 0; r < k; r++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            if (taken[i]) continue;
            if (best < 0 || score[i] > score[best]) best = i;
        }
        out[r] = best;
        taken[best] = true;
    }
}
// ANCHOR_END: router_top_k_v1

/** Version 1: thread t routes token t with the reference loops. */
__global__ void router_v1_kernel(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                                 RouterParams p, int T)
{
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= T) return;
    const int E = p.E, G = p.n_group, per_group = E / G;
    const float *g = logits + (size_t)t * E;
    float *s = scores + (size_t)t * E;
    if (p.scoring == SCORING_SIGMOID_) {
        for (int i = 0; i < E; i++) s[i] = 1.0f / (1.0f + expf(-g[i]));
    } else {
        float max = g[0], sum = 0.0f;
        for (int i = 1; i < E; i++) max = fmaxf(max, g[i]);
        for (int i = 0; i < E; i++) {
            s[i] = expf(g[i] - max);
            sum += s[i];
        }
        for (int i = 0; i < E; i++) s[i] /= sum;
    }
    float sel[ROUTER_MAX_E];
    for (int i = 0; i < E; i++) sel[i] = s[i] + (p.topk_method == TOPK_NOAUX_TC_ ? bias[i] : 0.0f);
    if (p.topk_method != TOPK_GREEDY_) {
        float group_score[ROUTER_MAX_G];
        for (int gi = 0; gi < G; gi++)
            group_score[gi] = router_group_score(sel + gi * per_group, per_group, p.topk_method == TOPK_NOAUX_TC_);
        int kept[ROUTER_MAX_G];
        bool keep[ROUTER_MAX_G];
        for (int gi = 0; gi < G; gi++) keep[gi] = false;
        top_k(kept, p.topk_group, group_score, G);
        for (int r = 0; r < p.topk_group; r++) keep[kept[r]] = true;
        for (int i = 0; i < E; i++)
            if (!keep[i / per_group]) sel[i] = 0.0f; /* masked to 0, as the released code */
    }
    int *idx_t = idx + (size_t)t * p.K;
    top_k(idx_t, p.K, sel, E);
    router_weights(weight + (size_t)t * p.K, idx_t, s, p);
}
// ANCHOR_END: router_v1

/** Whether p is within the kernels' limits (ROUTER_MAX_E experts, ROUTER_MAX_G groups, kernels.h). */
static bool router_fits(const RouterParams &p)
{
    return p.E >= 1 && p.E <= ROUTER_MAX_E && p.n_group >= 1 && p.n_group <= ROUTER_MAX_G;
}

extern "C" cudaError_t router_forward_v1(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                                         RouterParams p, int T, cudaStream_t stream)
{
    if (!router_fits(p)) return cudaErrorInvalidValue;
    LAUNCH(router_v1_kernel, dim3(blocks_for((size_t)T, 32)), dim3(32), 0, stream, idx, weight, scores, logits, bias, p,
           T);
    return cudaGetLastError();
}

// ANCHOR: router_v2
/** Warp arg-max of (v, i): the larger value wins, the lower index on ties. Every lane gets the result. */
static __device__ __forceinline__ void warp_argmax(float &v, int &i)
{
    for (int off = 16; off > 0; off /= 2) {
        const float ov = __shfl_xor_sync(FULL_MASK, v, off);
        const int oi = __shfl_xor_sync(FULL_MASK, i, off);
        if (ov > v || (ov == v && oi < i)) {
            v = ov;
            i = oi;
        }
    }
}

/**
 * The best k of score[0..n) (shared memory of this warp), best first, lower
 * index on ties; each pick is overwritten with −∞. Lane 0 writes out[0..k).
 */
static __device__ void warp_top_k(int *out, int k, float *score, int n, int lane)
{
    for (int r = 0; r < k; r++) {
        float best = -INFINITY;
        int best_i = n + lane; /* never wins against a real candidate */
        for (int i = lane; i < n; i += 32)
            if (score[i] > best || (score[i] == best && i < best_i)) {
                best = score[i];
                best_i = i;
            }
        warp_argmax(best, best_i);
        if (lane == 0) {
            out[r] = best_i;
            score[best_i] = -INFINITY; /* taken */
        }
        __syncwarp();
    }
}

/**
 * One token routed by one warp: affinities s (softmax by warp reductions, or sigmoid) from the logits g,
 * selection scores in sel (shared memory, E + 2·ROUTER_MAX_G floats of this warp), group scores one
 * group per lane, then top-topk_group groups and top-K experts by warp arg-max rounds into idx_t, and
 * the weights into weight_t. s may equal g.
 */
static __device__ void warp_route(int *idx_t, float *weight_t, float *s, const float *g, const float *bias,
                                  const RouterParams &p, float *sel, int lane)
{
    const int E = p.E, G = p.n_group, per_group = E / G;
    float *group_score = sel + E;
    int *kept = reinterpret_cast<int *>(group_score + ROUTER_MAX_G);
    if (p.scoring == SCORING_SIGMOID_) {
        for (int i = lane; i < E; i += 32) s[i] = 1.0f / (1.0f + expf(-g[i]));
    } else {
        float max = -INFINITY, sum = 0.0f;
        for (int i = lane; i < E; i += 32) max = fmaxf(max, g[i]);
        max = warp_max(max);
        for (int i = lane; i < E; i += 32) {
            const float e = expf(g[i] - max);
            s[i] = e;
            sum += e;
        }
        sum = warp_sum(sum);
        for (int i = lane; i < E; i += 32) s[i] /= sum;
    }
    for (int i = lane; i < E; i += 32) sel[i] = s[i] + (p.topk_method == TOPK_NOAUX_TC_ ? bias[i] : 0.0f);
    __syncwarp();

    if (p.topk_method != TOPK_GREEDY_) {
        if (lane < G) /* lane g scores group g */
            group_score[lane] = router_group_score(sel + lane * per_group, per_group, p.topk_method == TOPK_NOAUX_TC_);
        __syncwarp();
        warp_top_k(kept, p.topk_group, group_score, G, lane);
        for (int i = lane; i < E; i += 32) {
            bool keep = false;
            for (int r = 0; r < p.topk_group; r++) keep |= kept[r] == i / per_group;
            if (!keep) sel[i] = 0.0f; /* masked to 0, as the released code */
        }
        __syncwarp();
    }
    warp_top_k(idx_t, p.K, sel, E, lane);
    if (lane == 0) router_weights(weight_t, idx_t, s, p);
    __syncwarp();
}

/**
 * Version 2: warp w of block b routes token 4b + w (warp_route).
 * Dynamic shared memory: ROUTER_WARPS · (E + 2·ROUTER_MAX_G) floats.
 */
__global__ void router_v2_kernel(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                                 RouterParams p, int T)
{
    DYNAMIC_SHARED(float, smem);
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    const int t = (int)blockIdx.x * ROUTER_WARPS + warp;
    if (t >= T) return; /* whole warps leave; no block barrier follows */
    warp_route(idx + (size_t)t * p.K, weight + (size_t)t * p.K, scores + (size_t)t * p.E, logits + (size_t)t * p.E,
               bias, p, smem + (size_t)warp * (p.E + 2 * ROUTER_MAX_G), lane);
}
// ANCHOR_END: router_v2

extern "C" cudaError_t router_forward_v2(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                                         RouterParams p, int T, cudaStream_t stream)
{
    if (!router_fits(p)) return cudaErrorInvalidValue;
    const size_t smem = sizeof(float) * ROUTER_WARPS * (size_t)(p.E + 2 * ROUTER_MAX_G);
    LAUNCH(router_v2_kernel, dim3(blocks_for((size_t)T, ROUTER_WARPS)), dim3(32 * ROUTER_WARPS), smem, stream, idx,
           weight, scores, logits, bias, p, T);
    return cudaGetLastError();
}

/* ---- version 4: the gate GEMV, routing and permutation in one launch ------------------------- */

#define ROUTE_V4_WARPS \
    8 /**< experts per block of the gate GEMV (one warp each); tokens the last block routes at once */
#define ROUTE_V4_CHUNK  256 /**< columns of x per block: 8 per lane */
#define ROUTE_V4_TOKENS 16  /**< tokens of x staged in shared memory per pass */

/** Blocks over the columns of x (grid.y of moe_route_v4). */
static int route_v4_chunks(int D)
{
    return (D + ROUTE_V4_CHUNK - 1) / ROUTE_V4_CHUNK;
}

extern "C" size_t moe_route_v4_floats(int E, int D, int max_T)
{
    return (size_t)(route_v4_chunks(D) + 1) * max_T * (E > 0 ? E : 1);
}

/**
 * The permutation by expert, by the whole block (ints: E of shared memory): thread e counts the
 * (token, slot) pairs that chose e, thread 0 turns the counts into offsets and lists the experts that
 * have rows (active, ascending, −1 after the last), then thread e hands out its rows in token order.
 */
static __device__ void block_permute(int *count, int *offsets, int *active, int *slot_row, int *row_token,
                                     const int *idx, int T, int K, int E)
{
    const int n = T * K;
    for (int e = (int)threadIdx.x; e < E; e += (int)blockDim.x) {
        int c = 0;
        for (int r = 0; r < n; r++) c += idx[r] == e;
        count[e] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int n_active = 0;
        offsets[0] = 0;
        for (int e = 0; e < E; e++) {
            offsets[e + 1] = offsets[e] + count[e];
            if (count[e]) active[n_active++] = e;
        }
        for (int j = n_active; j < E; j++) active[j] = -1;
    }
    __syncthreads();
    for (int e = (int)threadIdx.x; e < E; e += (int)blockDim.x) {
        int next = offsets[e];
        for (int r = 0; r < n; r++)
            if (idx[r] == e) {
                slot_row[r] = next;
                row_token[next] = r / K;
                next++;
            }
    }
}

// ANCHOR: router_v4
/**
 * Version 4, one launch for the whole gate. Block (b, c): warp w takes expert e = 8b + w and columns
 * [256c, 256c + 256) of g_t = W_gate x_t: the columns of x for up to 16 tokens at a time are staged in
 * shared memory once per block, each lane holds its 8 weights (two 16-byte loads when D is a multiple of
 * 8), and the warp's sum for token t goes to part[c][t][e]. The last block to finish (an atomic counter
 * in offsets[2E + 1], left zero again) adds the partials in column order into the logits, routes the
 * tokens one warp each (warp_route: s_{i,t}, group-limited top-K, g_{i,t}) and permutes the rows by
 * expert (block_permute), so the experts' launch finds offsets, active experts and row tokens ready.
 * Dynamic shared memory: the larger of 16 · 256 floats and ROUTE_V4_WARPS · (E + 2·ROUTER_MAX_G) floats.
 */
__global__ void moe_route_v4_kernel(int *idx, float *weight, int *offsets, int *slot_row, int *row_token, float *part,
                                    const float *x, const float *w_gate, const float *bias, RouterParams p, int T,
                                    int D, int wide)
{
    DYNAMIC_SHARED(float, smem);
    __shared__ int last;
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32, E = p.E;
    const int e = (int)blockIdx.x * ROUTE_V4_WARPS + warp, c0 = (int)blockIdx.y * ROUTE_V4_CHUNK;
    const int cw = min(ROUTE_V4_CHUNK, D - c0), d0 = c0 + 8 * lane;
    float wv[8] = { 0.0f }; /* this lane's columns d0 .. d0 + 7 of row e */
    if (e < E) {
        if (wide && d0 < D)
            load8(w_gate, KERNEL_F32, (size_t)e * D + d0, wv);
        else if (!wide)
            for (int v = 0; v < 8 && d0 + v < D; v++) wv[v] = w_gate[(size_t)e * D + d0 + v];
    }
    for (int t0 = 0; t0 < T; t0 += ROUTE_V4_TOKENS) {
        const int n = min(ROUTE_V4_TOKENS, T - t0);
        __syncthreads(); /* the previous pass has read the stage */
        for (int i = (int)threadIdx.x; i < n * ROUTE_V4_CHUNK / 4; i += (int)blockDim.x) {
            const int k = i / (ROUTE_V4_CHUNK / 4), j = 4 * (i % (ROUTE_V4_CHUNK / 4));
            const float *src = x + (size_t)(t0 + k) * D + c0 + j;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (wide && j < cw)
                v = *reinterpret_cast<const float4 *>(src);
            else if (!wide) {
                v.x = j < cw ? src[0] : 0.0f;
                v.y = j + 1 < cw ? src[1] : 0.0f;
                v.z = j + 2 < cw ? src[2] : 0.0f;
                v.w = j + 3 < cw ? src[3] : 0.0f;
            }
            reinterpret_cast<float4 *>(smem)[i] = v;
        }
        __syncthreads();
        if (e < E) /* uniform over the warp */
            for (int k = 0; k < n; k++) {
                const float *xs = smem + k * ROUTE_V4_CHUNK + 8 * lane;
                float acc = 0.0f;
#pragma unroll
                for (int v = 0; v < 8; v++) acc += wv[v] * xs[v];
                acc = warp_sum(acc);
                if (lane == 0) part[((size_t)blockIdx.y * T + t0 + k) * E + e] = acc;
            }
    }

    __threadfence(); /* this block's partials, visible to all */
    __syncthreads();
    if (threadIdx.x == 0) {
        int *done = offsets + 2 * E + 1;
        last = atomicAdd(done, 1) == (int)(gridDim.x * gridDim.y) - 1;
        if (last) *done = 0; /* zero again for the next launch or replay */
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int chunks = (int)gridDim.y;
    const volatile float *vp = part; /* written by other blocks */
    float *g = part + (size_t)chunks * T * E;
    for (int i = (int)threadIdx.x; i < T * E; i += (int)blockDim.x) {
        float acc = 0.0f;
        for (int c = 0; c < chunks; c++) acc += vp[(size_t)c * T * E + i];
        g[i] = acc;
    }
    __syncthreads();
    for (int t = warp; t < T; t += ROUTE_V4_WARPS) /* the affinities replace the logits */
        warp_route(idx + (size_t)t * p.K, weight + (size_t)t * p.K, g + (size_t)t * E, g + (size_t)t * E, bias, p,
                   smem + (size_t)warp * (E + 2 * ROUTER_MAX_G), lane);
    __syncthreads();
    block_permute(reinterpret_cast<int *>(smem), offsets, offsets + E + 1, slot_row, row_token, idx, T, p.K, E);
}
// ANCHOR_END: router_v4

extern "C" cudaError_t moe_route_v4(int *idx, float *weight, int *offsets, int *slot_row, int *row_token, float *part,
                                    const float *x, const float *w_gate, const float *bias, RouterParams p, int T,
                                    int D, cudaStream_t stream)
{
    if (!router_fits(p) || T < 1 || D < 1) return cudaErrorInvalidValue;
    const int wide = D % 8 == 0 && aligned16(x) && aligned16(w_gate);
    const size_t stage = (size_t)ROUTE_V4_TOKENS * ROUTE_V4_CHUNK,
                 route = (size_t)ROUTE_V4_WARPS * (p.E + 2 * ROUTER_MAX_G);
    const size_t smem = sizeof(float) * (stage > route ? stage : route);
    LAUNCH(moe_route_v4_kernel, dim3(blocks_for((size_t)p.E, ROUTE_V4_WARPS), (unsigned)route_v4_chunks(D)),
           dim3(32 * ROUTE_V4_WARPS), smem, stream, idx, weight, offsets, slot_row, row_token, part, x, w_gate, bias, p,
           T, D, wide);
    return cudaGetLastError();
}
