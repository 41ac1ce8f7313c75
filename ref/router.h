/**
 * \file router.h
 * \brief The MoE gate: affinities, expert selection, routing weights (paper §2.2.1–2.2.2; docs/semantics.md §3.6.3).
 *
 * For a token's FFN input b_t the router computes logits z_{i,t} = b_tᵀ e_i
 * (z = W_gate b_t, row i of W_gate being expert i's centroid e_i) in
 * float32 and affinities s_{i,t} (softmax over all experts for V2; sigmoid
 * for V3), selects K experts by topk_method, and turns their affinities into
 * the weights g_{i,t} that scale each expert's output.
 *
 * Tie rule: whenever two candidates (experts or groups) have equal scores,
 * the one with the lower index is preferred. PyTorch's topk leaves ties
 * unspecified; the golden fixtures are generated without near-ties.
 */
#ifndef DSV2_ROUTER_H
#define DSV2_ROUTER_H

#include "config.h"

/** Largest number of experts the router handles per token (stack buffers). */
#define ROUTER_MAX_EXPERTS 1024

/**
 * Affinities from router logits: s = softmax(z) or s = sigmoid(z), float32.
 * s, z: [E] (may alias).
 */
void router_scores(float *s, const float *z, int E, ScoringFunc scoring);

/**
 * Picks the K = cfg->num_experts_per_tok experts for one token and their weights.
 * s: [E] affinities from router_scores(); bias: [E] V3's e_score_correction_bias
 * (noaux_tc only; NULL otherwise). Writes expert ids to idx[K] in descending
 * order of selection score and weights to weight[K]:
 *  - greedy: the K largest s;
 *  - group_limited_greedy: keep the topk_group groups with the largest group
 *    max of s, treat the other groups' scores as 0, take the K largest
 *    (this is the paper's device-limited routing, groups = devices);
 *  - noaux_tc: selection score s + bias, groups ranked by the sum of their
 *    top-2 selection scores, weights from the unbiased s.
 * Weights: V2 rule (greedy, group_limited_greedy) — if K > 1 and
 * norm_topk_prob, w ← w / (Σw + 1e-20), else w ← w · routed_scaling_factor;
 * V3 rule (noaux_tc) — optionally normalise, then always scale.
 */
void router_select(int *idx, float *weight, const float *s, const float *bias, const ModelConfig *cfg);

/**
 * Backward of router_scores() + router_select() for one token, with the selection idx[K]
 * held fixed (choosing experts has no gradient; only the weights g_{i,t} do).
 * s: [E] the affinities, idx: [K] the chosen experts, dweight: [K] ∂L/∂weight[k].
 * Applies the forward's rule in reverse (routed_scaling_factor, then the renormalisation
 * g_k = s_k / (Σ_j s_j + 1e-20) when norm_topk_prob and K > 1), then the softmax (or sigmoid)
 * Jacobian. Writes dlogits: [E] = ∂L/∂g, the gradient with respect to the router logits.
 * noaux_tc's bias only moves the selection, so it receives no gradient.
 */
void router_backward(float *dlogits, const float *s, const int *idx, const float *dweight, const ModelConfig *cfg);

#endif
