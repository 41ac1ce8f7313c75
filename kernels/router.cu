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
 * Version 2: warp w of block b routes token 4b + w: softmax by warp reductions,
 * selection scores in shared memory, group scores one group per lane, then
 * top-topk_group groups and top-K experts by warp arg-max rounds.
 * Dynamic shared memory: ROUTER_WARPS · (E + 2·ROUTER_MAX_G) floats.
 */
__global__ void router_v2_kernel(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                                 RouterParams p, int T)
{
    DYNAMIC_SHARED(float, smem);
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    const int t = (int)blockIdx.x * ROUTER_WARPS + warp;
    if (t >= T) return; /* whole warps leave; no block barrier follows */
    const int E = p.E, G = p.n_group, per_group = E / G;
    float *sel = smem + (size_t)warp * (E + 2 * ROUTER_MAX_G);
    float *group_score = sel + E;
    int *kept = reinterpret_cast<int *>(group_score + ROUTER_MAX_G);
    const float *g = logits + (size_t)t * E;
    float *s = scores + (size_t)t * E;

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
    int *idx_t = idx + (size_t)t * p.K;
    warp_top_k(idx_t, p.K, sel, E, lane);
    if (lane == 0) router_weights(weight + (size_t)t * p.K, idx_t, s, p);
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
