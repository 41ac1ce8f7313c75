/**
 * \file router_scale_after_renorm.cu
 * \brief Kernel lab example (wrong): a router that multiplies renormalised V2 weights by routed_scaling_factor.
 *
 * One thread per token: affinities, the selection score (plus the bias for
 * noaux_tc), group masking, top-K with the lower index winning ties, then
 * the weights. DeepSeek-V2's gate either renormalises the K weights
 * (norm_topk_prob, K > 1) or multiplies them by routed_scaling_factor, never
 * both; only V3's noaux_tc does both. This kernel multiplies in every case.
 * Wherever the factor is 1, or the weights are not renormalised, or the
 * method is noaux_tc, it agrees with the contract; the lab's shapes that
 * renormalise with a factor other than 1 under greedy or
 * group_limited_greedy fail as a numerical mismatch in the weights.
 *
 *     make check-kernel COMPONENT=router SRC=kernels/examples/router_scale_after_renorm.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

#include <math.h>

/** Largest E the contract allows. */
#define MAX_E 1024
/** Largest n_group the contract allows. */
#define MAX_G 32

/** Writes the indices of the k largest of v[0..n) to out, largest first; equal values: lower index first. */
__device__ void largest_k(int *out, int k, const float *v, int n, bool *used)
{
    for (int i = 0; i < n; i++) used[i] = false;
    for (int r = 0; r < k; r++) {
        int pick = -1;
        for (int i = 0; i < n; i++)
            if (!used[i] && (pick < 0 || v[i] > v[pick])) pick = i;
        used[pick] = true;
        out[r] = pick;
    }
}

/** Thread t routes token t. */
__global__ void router_scale_after_renorm_kernel(int *idx, float *weight, float *scores, const float *logits,
                                                 const float *bias, RouterParams p, int T)
{
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= T) return;
    const int E = p.E, per_group = p.E / p.n_group;
    const bool noaux_tc = p.topk_method == 2;
    const float *g = logits + (size_t)t * E;
    float *s = scores + (size_t)t * E;
    /* s_{i,t}: sigmoid, or softmax with the maximum subtracted */
    float top = -INFINITY, total = 0.0f;
    for (int i = 0; i < E; i++) top = fmaxf(top, g[i]);
    for (int i = 0; i < E; i++) {
        s[i] = p.scoring == 1 ? 1.0f / (1.0f + expf(-g[i])) : expf(g[i] - top);
        total += s[i];
    }
    if (p.scoring != 1)
        for (int i = 0; i < E; i++) s[i] /= total;
    float choose[MAX_E];
    bool used[MAX_E];
    for (int i = 0; i < E; i++) choose[i] = noaux_tc ? s[i] + bias[i] : s[i];
    if (p.topk_method != 0) { /* keep the topk_group best groups, zero the rest */
        float group[MAX_G];
        int kept[MAX_G];
        for (int q = 0; q < p.n_group; q++) {
            float first = -INFINITY, second = -INFINITY;
            for (int i = q * per_group; i < (q + 1) * per_group; i++) {
                if (choose[i] > first) {
                    second = first;
                    first = choose[i];
                } else if (choose[i] > second) {
                    second = choose[i];
                }
            }
            group[q] = noaux_tc ? first + second : first;
        }
        largest_k(kept, p.topk_group, group, p.n_group, used);
        for (int q = 0; q < p.n_group; q++) used[q] = false;
        for (int r = 0; r < p.topk_group; r++) used[kept[r]] = true;
        for (int i = 0; i < E; i++)
            if (!used[i / per_group]) choose[i] = 0.0f;
    }
    int *it = idx + (size_t)t * p.K;
    float *wt = weight + (size_t)t * p.K;
    largest_k(it, p.K, choose, E, used);
    float sum = 0.0f;
    for (int k = 0; k < p.K; k++) sum += s[it[k]];
    const bool renormalise = p.norm_topk_prob && p.K > 1;
    for (int k = 0; k < p.K; k++) {
        const float w = renormalise ? s[it[k]] / (sum + 1e-20f) : s[it[k]];
        wt[k] = w * p.routed_scaling_factor; /* the bug: a V2 gate that renormalises does not scale */
    }
}

extern "C" cudaError_t lab_router(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                                  RouterParams p, int T, cudaStream_t stream)
{
    LAUNCH(router_scale_after_renorm_kernel, dim3((unsigned)(T + 31) / 32), dim3(32), 0, stream, idx, weight, scores,
           logits, bias, p, T);
    return cudaGetLastError();
}
