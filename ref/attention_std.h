/**
 * \file attention_std.h
 * \brief Standard multi-head attention and its grouped variants (MHA, GQA, MQA): the baselines of
 * the paper's Appendix D, for training ablations (config attention_type "mha" | "gqa" | "mqa").
 *
 * For token t with input a_t (the RMSNorm'd residual stream), n_h query heads and n_g key/value
 * heads (n_g = n_h for MHA, 1 for MQA, a divisor of n_h for GQA), query head h reads key/value
 * head g(h) = h / (n_h / n_g):
 *
 *     q_{t,h} = W^Q_h a_t,   k_{t,g} = W^K_g a_t,   v_{t,g} = W^V_g a_t
 *     q_{t,h}, k_{t,g} ← RoPE_t on their last d_r columns (all of them when d_n = 0: the paper's
 *                        baselines rotate the whole head)
 *     o_{t,h} = Σ_{j≤t} softmax_j(σ q_{t,h}·k_{j,g(h)}) v_{j,g(h)},   u_t = W^O [o_{t,1}; …; o_{t,n_h}]
 *
 * with d_h = d_n + d_r the query/key head width, d_v the value head width and σ the softmax scale
 * of the config (d_h^{-1/2}, times YaRN's m² when rope_scaling is YaRN). A cache for generation
 * would hold k and v: n_g·(d_h + d_v) numbers per token and layer, against MLA's d_c + d_r.
 *
 * Checkpoint names (Llama's): self_attn.q_proj [n_h·d_h, D], k_proj [n_g·d_h, D],
 * v_proj [n_g·d_v, D], o_proj [D, n_h·d_v]. The functions run a whole sequence at positions
 * [0, T), as training does; inference refuses these configs (config_require_mla()).
 */
#ifndef DSV2_ATTENTION_STD_H
#define DSV2_ATTENTION_STD_H

#include "config.h"
#include "linear.h"
#include "rope.h"

/** One layer's standard-attention weights. */
typedef struct {
    Mat q_proj; /**< W^Q [n_h·d_h, D] */
    Mat k_proj; /**< W^K [n_g·d_h, D] */
    Mat v_proj; /**< W^V [n_g·d_v, D] */
    Mat o_proj; /**< W^O [D, n_h·d_v] */
} StdAttnWeights;

/** Their gradients, float32, each shaped like its weight (accumulated). */
typedef struct {
    float *q_proj; /**< dL/dW^Q */
    float *k_proj; /**< dL/dW^K */
    float *v_proj; /**< dL/dW^V */
    float *o_proj; /**< dL/dW^O */
} StdAttnGrads;

/**
 * u = attention of a [T, D] at positions [0, T), causal; out: [T, D].
 * \return 0, or −1 with one error line (out of memory).
 */
int attn_std_forward(float *out, const float *a, const StdAttnWeights *w, const ModelConfig *cfg, const Rope *rope,
                     int T);

/**
 * Backward of attn_std_forward(): recomputes q, k, v (rotated) and the probabilities p_{t,j} of
 * every head, then, per query head h and token t, with do = W^Oᵀ dout:
 *   dp_j = do_{t,h}·v_{j,g};  ds_j = σ p_j (dp_j − Σ_i p_i dp_i);
 *   dq_{t,h} += ds_j k_{j,g};  dk_{j,g} += ds_j q_{t,h};  dv_{j,g} += p_j do_{t,h}
 * (the n_h / n_g heads of a group sum into the same dk, dv), then RoPE transposed on dq and dk,
 * and da = W^Qᵀ dq + W^Kᵀ dk + W^Vᵀ dv. da [T, D] written; g accumulated.
 * \return 0, or −1 with one error line (out of memory).
 */
int attn_std_backward(float *da, const StdAttnGrads *g, const float *dout, const float *a, const StdAttnWeights *w,
                      const ModelConfig *cfg, const Rope *rope, int T);

/** Elements a generation cache would keep per token and layer: n_g·(d_h + d_v), k and v
 *  (2·n_g·d_h when d_v = d_h); 0 for MLA, whose cache is mla_cache_bytes_per_token()'s. */
long attn_std_cache_elems(const ModelConfig *cfg);

#endif
