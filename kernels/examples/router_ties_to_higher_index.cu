/**
 * \file router_ties_to_higher_index.cu
 * \brief Kernel lab example (wrong): a router whose top-k lets the higher index win a tie.
 *
 * One thread per token runs the reference's loops (affinities, group
 * scores, group masking, top-k, weights), except that its top-k compares
 * with `>=`: on equal scores the later candidate replaces the earlier one.
 * Random logits almost never tie, so every shape passes but the one built of
 * exact ties (the K-th and (K+1)-th logits bit-identical), where the lab
 * reports a discrete mismatch in idx: the contract, like ref/router.c, lets
 * the lower index win.
 *
 *     make check-kernel COMPONENT=router SRC=kernels/examples/router_ties_to_higher_index.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

#include <math.h>

/** Largest E the contract allows. */
#define MAX_E 1024
/** Largest n_group the contract allows. */
#define MAX_G 32

/** The k best of score[0..n) into out, best first; the higher index wins ties (the deliberate bug). */
__device__ void top_k_higher_wins(int *out, int k, const float *score, int n)
{
    for (int r = 0; r < k; r++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            bool taken = false;
            for (int j = 0; j < r && !taken; j++) taken = out[j] == i;
            if (!taken && (best < 0 || score[i] >= score[best])) best = i;
        }
        out[r] = best;
    }
}

/** Thread t routes token t. */
__global__ void router_higher_wins_kernel(int *idx, float *weight, float *scores, const float *logits,
                                          const float *bias, RouterParams p, int T)
{
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= T) return;
    const int E = p.E, K = p.K, G = p.n_group, per = E / G;
    const float *g = logits + (size_t)t * E;
    float *s = scores + (size_t)t * E;
    if (p.scoring == 1) {
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
    float sel[MAX_E];
    for (int i = 0; i < E; i++) sel[i] = s[i] + (p.topk_method == 2 ? bias[i] : 0.0f);
    if (p.topk_method != 0) {
        float group_score[MAX_G];
        int kept[MAX_G];
        for (int q = 0; q < G; q++) {
            float best = sel[q * per], second = -INFINITY;
            for (int i = 1; i < per; i++) {
                const float x = sel[q * per + i];
                if (x > best) {
                    second = best;
                    best = x;
                } else if (x > second) {
                    second = x;
                }
            }
            group_score[q] = p.topk_method == 2 ? best + second : best;
        }
        top_k_higher_wins(kept, p.topk_group, group_score, G);
        for (int i = 0; i < E; i++) {
            bool keep = false;
            for (int r = 0; r < p.topk_group && !keep; r++) keep = kept[r] == i / per;
            if (!keep) sel[i] = 0.0f;
        }
    }
    int *it = idx + (size_t)t * K;
    float *wt = weight + (size_t)t * K;
    top_k_higher_wins(it, K, sel, E);
    float sum = 0.0f;
    for (int k = 0; k < K; k++) {
        wt[k] = s[it[k]];
        sum += wt[k];
    }
    const bool normalise = p.norm_topk_prob && K > 1;
    for (int k = 0; k < K; k++) {
        if (normalise) wt[k] /= sum + 1e-20f;
        if (!normalise || p.topk_method == 2) wt[k] *= p.routed_scaling_factor;
    }
}

extern "C" cudaError_t lab_router(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                                  RouterParams p, int T, cudaStream_t stream)
{
    LAUNCH(router_higher_wins_kernel, dim3((unsigned)(T + 63) / 64), dim3(64), 0, stream, idx, weight, scores, logits,
           bias, p, T);
    return cudaGetLastError();
}
