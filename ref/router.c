/**
 * \file router.c
 * \brief MoE gate reference (see router.h).
 */
#include "router.h"

#include "shared_math.h"

#include <math.h>
#include <stdbool.h>

// ANCHOR: router_scores
void router_scores(float *s, const float *z, int E, ScoringFunc scoring)
{
    if (scoring == SCORING_SIGMOID) {
        for (int i = 0; i < E; i++) s[i] = 1.0f / (1.0f + expf(-z[i]));
        return;
    }
    float max = z[0], sum = 0;
    for (int i = 1; i < E; i++) max = fmaxf(max, z[i]);
    for (int i = 0; i < E; i++) {
        s[i] = expf(z[i] - max);
        sum += s[i];
    }
    for (int i = 0; i < E; i++) s[i] /= sum;
}
// ANCHOR_END: router_scores

// ANCHOR: top_k
/* The k best of score[0..n), best first; the lower index wins ties. */
static void top_k(int *out, int k, const float *score, int n)
{
    bool taken[ROUTER_MAX_EXPERTS] = { false };
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
// ANCHOR_END: top_k

// ANCHOR: router_select
void router_select(int *idx, float *weight, const float *s, const float *bias, const ModelConfig *cfg)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    const int G = cfg->n_group, per_group = E / G;
    float sel[ROUTER_MAX_EXPERTS]; /* the score experts are selected by */
    for (int i = 0; i < E; i++) sel[i] = s[i] + (cfg->topk_method == TOPK_NOAUX_TC ? bias[i] : 0);

    if (cfg->topk_method != TOPK_GREEDY) {
        float group_score[ROUTER_MAX_EXPERTS];
        for (int g = 0; g < G; g++) /* V2: the group's best affinity; V3: its best two */
            group_score[g] = router_group_score(sel + g * per_group, per_group, cfg->topk_method == TOPK_NOAUX_TC);
        int kept[ROUTER_MAX_EXPERTS];
        bool keep[ROUTER_MAX_EXPERTS] = { false };
        top_k(kept, cfg->topk_group, group_score, G);
        for (int r = 0; r < cfg->topk_group; r++) keep[kept[r]] = true;
        for (int i = 0; i < E; i++)
            if (!keep[i / per_group]) sel[i] = 0.0f; /* as the released code: masked to 0, not −∞ */
    }
    top_k(idx, K, sel, E);

    float sum = 0;
    for (int k = 0; k < K; k++) {
        weight[k] = s[idx[k]];
        sum += weight[k];
    }
    const bool normalise = cfg->norm_topk_prob && K > 1;
    if (normalise)
        for (int k = 0; k < K; k++) weight[k] /= sum + 1e-20f;
    if (!normalise || cfg->topk_method == TOPK_NOAUX_TC)
        for (int k = 0; k < K; k++) weight[k] *= cfg->routed_scaling_factor;
}
// ANCHOR_END: router_select

// ANCHOR: router_backward
void router_backward(float *dlogits, const float *s, const int *idx, const float *dweight, const ModelConfig *cfg)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    const bool normalise = cfg->norm_topk_prob && K > 1;
    const bool scale = !normalise || cfg->topk_method == TOPK_NOAUX_TC;
    float ds[ROUTER_MAX_EXPERTS] = { 0 }; /* ∂L/∂s_{i,t}; zero off the selected experts */
    float dw[ROUTER_MAX_EXPERTS], sum = 0, dot_wa = 0;
    for (int k = 0; k < K; k++) dw[k] = dweight[k] * (scale ? cfg->routed_scaling_factor : 1.0f);
    for (int k = 0; k < K; k++) {
        sum += s[idx[k]];
        dot_wa += dw[k] * s[idx[k]];
    }
    for (int k = 0; k < K; k++) {
        if (!normalise) {
            ds[idx[k]] += dw[k];
            continue;
        }
        const float S = sum + 1e-20f; /* g_k = s_k / S: ∂g_k/∂s_j = δ_kj/S − s_k/S² */
        ds[idx[k]] += dw[k] / S - dot_wa / (S * S);
    }
    if (cfg->scoring_func == SCORING_SIGMOID) { /* s = σ(z): ds/dz = s (1 − s) */
        for (int i = 0; i < E; i++) dlogits[i] = ds[i] * s[i] * (1.0f - s[i]);
        return;
    }
    float mean = 0; /* softmax: dz_j = s_j (ds_j − Σ_i s_i ds_i) */
    for (int i = 0; i < E; i++) mean += s[i] * ds[i];
    for (int i = 0; i < E; i++) dlogits[i] = s[i] * (ds[i] - mean);
}
// ANCHOR_END: router_backward
