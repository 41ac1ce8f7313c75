/**
 * \file moe.h
 * \brief SwiGLU feed-forward networks: dense FFN, shared and routed experts (paper §2.2.1; docs/semantics.md §3.6).
 *
 * Every FFN in DeepSeek-V2 is a SwiGLU, FFN(x) = W_down (silu(W_gate x) ⊙ W_up x).
 * Dense layers use one wide FFN. MoE layers (DeepSeekMoE) combine N_s
 * shared experts, always active and stored fused as one SwiGLU of width
 * N_s·I_e, with K of E fine-grained routed experts chosen per token:
 *   h'_t = Σ_{i ∈ top-K} g_{i,t} FFN_i(b_t) + FFN_shared(b_t).
 */
#ifndef DSV2_MOE_H
#define DSV2_MOE_H

#include "config.h"
#include "linear.h"

#include <stdbool.h>

/** One SwiGLU FFN: gate and up [I, D], down [D, I]. */
typedef struct {
    Mat gate; /**< W_gate [I, D] (through SiLU) */
    Mat up;   /**< W_up [I, D] */
    Mat down; /**< W_down [D, I] */
} SwigluWeights;

/** One MoE layer's weights. */
typedef struct {
    Mat router;             /**< W_gate of the router [E, D] (`mlp.gate.weight`) */
    const float *bias;      /**< [E] e_score_correction_bias (noaux_tc), else NULL */
    SwigluWeights *experts; /**< [E] routed experts, width I_e */
    SwigluWeights shared;   /**< the N_s shared experts fused, width N_s·I_e (unused if N_s = 0) */
} MoeWeights;

/** Working memory for the FFNs, sized once for chunks of up to max_T tokens. */
typedef struct {
    float *hidden; /**< [2, max_T, I_max] gate and up activations */
    float *scores; /**< [max_T, E] router logits, then affinities s_{i,t} */
    int *expert;   /**< [max_T, K] chosen experts */
    float *weight; /**< [max_T, K] their weights g_{i,t} */
    int *rows;     /**< [max_T·K] (token, slot) pairs routed to one expert */
    float *x_in;   /**< [max_T, D] inputs gathered for one expert */
    float *x_out;  /**< [max_T, D] that expert's outputs */
    float *routed; /**< [max_T, K, D] each token's K expert outputs, in slot order */
} FfnScratch;

/** Allocates scratch for chunks of up to max_T tokens. \return 0 or −1. */
int ffn_scratch_init(FfnScratch *s, const ModelConfig *cfg, int max_T);
/** Frees what ffn_scratch_init() allocated. */
void ffn_scratch_free(FfnScratch *s);

/**
 * y = W_down (silu(W_gate x) ⊙ (W_up x)) for T tokens.
 * y, x: [T, D] (float32; no overlap); hidden: scratch of 2·T·I floats.
 */
void swiglu_forward(float *y, const float *x, const SwigluWeights *w, int T, float *hidden);

/**
 * Routes T tokens: router logits in float32, affinities, the K experts and weights of each
 * token into s->scores [T, E], s->expert [T, K], s->weight [T, K]. x: [T, D].
 */
void moe_route(const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, FfnScratch *s);

/**
 * Runs one routed expert on the n assignments rows[0..n) (ids t·K + k): gathers their
 * tokens' inputs from x [T, D], applies the SwiGLU, writes each output to s->routed[t, k].
 */
void moe_expert_rows(const float *x, const SwigluWeights *expert, const int *rows, int n, const ModelConfig *cfg,
                     FfnScratch *s);

/**
 * Combines: y_t = Σ_k weight[t, k] · routed[t, k] (float32, slot order) + shared(x_t).
 * Reads s->weight and s->routed [T, K, D] (each (token, slot)'s expert output).
 * y, x: [T, D], no overlap.
 */
void moe_combine(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, FfnScratch *s);

/**
 * The MoE FFN for T tokens: route each token (router.h), run each routed
 * expert once on all the tokens it received, combine each token's K outputs
 * in selection order with their weights (float32), then add the shared
 * experts' output. y, x: [T, D] float32, no overlap.
 */
void moe_forward(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, FfnScratch *s);

/* ---- backward (training) ----------------------------------------------------------------
 * Convention for every backward: the input gradient dx is written; parameter gradients are
 * float32 arrays laid out like the weights and are accumulated (+=). Each backward recomputes
 * its forward's intermediates from the forward input x instead of keeping them. */

/** Gradient arrays of one SwiGLU, each shaped like its weight: gate, up [I, D], down [D, I]. */
typedef struct {
    float *gate; /**< ∂L/∂W_gate */
    float *up;   /**< ∂L/∂W_up */
    float *down; /**< ∂L/∂W_down */
} SwigluGrads;

/** Gradient arrays of one MoE layer. */
typedef struct {
    float *router;        /**< ∂L/∂W_gate of the router [E, D] */
    SwigluGrads *experts; /**< [E] */
    SwigluGrads shared;   /**< the fused shared experts (unused if N_s = 0) */
} MoeGrads;

/**
 * Backward of swiglu_forward(). With z = W_gate x, u = W_up x, h = silu(z) ⊙ u:
 * dh = W_downᵀ dy, dz = dh ⊙ u ⊙ silu'(z), du = dh ⊙ silu(z), dx = W_gateᵀ dz + W_upᵀ du.
 * dx, dy, x: [T, D]; dx written, g's arrays accumulated. \return 0, or −1 (out of memory).
 */
int swiglu_backward(float *dx, const SwigluGrads *g, const float *dy, const float *x, const SwigluWeights *w, int T);

/**
 * The MoE FFN with token dropping: s holds moe_route()'s routing of x; keep [T, K] (NULL: keep
 * all) marks the (token, slot) pairs that survive drop_tokens(). A dropped pair runs no expert
 * and adds nothing (its s->weight and s->routed rows are zeroed); the shared experts see every
 * token. y, x: [T, D].
 */
void moe_forward_kept(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, const bool *keep,
                      FfnScratch *s);

/**
 * Backward of moe_forward_kept() (or moe_forward() when keep is NULL). Recomputes the routing
 * from x; the selection is a fixed mask. For a kept pair (t, k) routed to expert e:
 * the expert sees dy_t · g_{k,t}, and ∂L/∂g_{k,t} = dy_t · FFN_e(b_t), which router_backward()
 * takes to the router logits; dlogits_aux [T, E] (NULL: none) is added there — the balance
 * losses' gradient (balance_losses()). Dropped pairs get no gradient.
 * dx, dy, x: [T, D]; dx written, g accumulated. \return 0, or −1 (out of memory).
 */
int moe_backward(float *dx, const MoeGrads *g, const float *dy, const float *x, const MoeWeights *w,
                 const ModelConfig *cfg, int T, const bool *keep, const float *dlogits_aux);

#endif
