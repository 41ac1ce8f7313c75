/**
 * \file mla.h
 * \brief Multi-head Latent Attention (paper §2.1; docs/semantics.md §3.4, §5).
 *
 * MLA compresses keys and values jointly into one small latent per token,
 * c^KV_t = W^DKV h_t (d_c = 512 wide), normalised to ĉ_t. Per-head keys and
 * values are up-projections of that latent: k^N_{t,h} = W^UK_h ĉ_t,
 * v_{t,h} = W^UV_h ĉ_t. Position enters through a separate, shared,
 * rotated key k^R_t (d_r = 64). So the cache keeps only ĉ_t and k^R_t per
 * token and layer — (d_c + d_r) numbers instead of 2·n_h·d_h.
 *
 * Two ways to attend over that cache compute the same function:
 *  - the **expanded** form decompresses k^N and v for every cached token and
 *    runs ordinary multi-head attention (cheap when many queries share the
 *    work: prompts);
 *  - the **absorbed** form never decompresses: since
 *    q^N·(W^UK ĉ) = (W^UKᵀ q^N)·ĉ, each query is mapped into the latent
 *    space once (q^L = W^UKᵀ q^N), scores are taken against ĉ directly, the
 *    weighted sum of latents o^L = Σ p ĉ is formed, and W^UV is applied once
 *    to o^L (cheap per generated token: decode).
 *
 * Weight names: kv_a_proj_with_mqa = [W^DKV; W^KR], kv_b_proj = per head
 * [W^UK_h; W^UV_h], q_proj = [W^UQ; W^QR] per head (no query compression),
 * or q_a_proj = W^DQ, q_b_proj = [W^UQ; W^QR] (with it).
 */
#ifndef DSV2_MLA_H
#define DSV2_MLA_H

#include "config.h"
#include "linear.h"
#include "rope.h"

#include <stddef.h>

/** One layer's attention weights, in checkpoint storage. */
typedef struct {
    Mat q_proj;             /**< [n_h·d_q, D]; used when q_lora_rank is null */
    Mat q_a_proj;           /**< W^DQ [d_c', D]; with query compression */
    const float *q_a_norm;  /**< [d_c'] weight of the RMSNorm on c^Q */
    Mat q_b_proj;           /**< [n_h·d_q, d_c'] = per head [W^UQ_h (d_n rows); W^QR_h (d_r rows)] */
    Mat kv_a_proj;          /**< [d_c + d_r, D] = [W^DKV; W^KR] */
    const float *kv_a_norm; /**< [d_c] weight of the RMSNorm on c^KV */
    Mat kv_b_proj;          /**< [n_h·(d_n + d_v), d_c] = per head [W^UK_h; W^UV_h] */
    Mat o_proj;             /**< W^O [D, n_h·d_v] */
} MlaWeights;

/** The latent cache of one layer: ĉ_t and k^R_t for positions [0, capacity). */
typedef struct {
    int capacity;  /**< positions it can hold */
    float *c_kv;   /**< ĉ_t, the normalised latent: [capacity, d_c] */
    float *k_rope; /**< k^R_t after RoPE: [capacity, d_r] */
} LatentCache;

/** Which attention form mla_forward() uses. */
typedef enum {
    MLA_EXPANDED, /**< decompress k^N, v from the cache; ordinary MHA */
    MLA_ABSORBED, /**< attend in latent space with W^UK, W^UV absorbed */
} MlaForm;

/** Working memory for mla_forward(), sized once for a chunk of T tokens over ctx positions. */
typedef struct {
    float *q;      /**< [T, n_h·d_q] queries */
    float *c_q;    /**< [T, d_c'] compressed queries */
    float *kv;     /**< [T, d_c + d_r] kv_a_proj output */
    float *o;      /**< [T, n_h·d_v] per-head outputs, head-major */
    float *scores; /**< [ctx] one query's scores */
    float *k_nope; /**< [ctx, d_n] one head's decompressed keys (expanded form) */
    float *v;      /**< [ctx, d_v] one head's decompressed values (expanded form) */
    float *q_lat;  /**< [d_c] q^L (absorbed form) */
    float *o_lat;  /**< [d_c] o^L (absorbed form) */
} MlaScratch;

/** Allocates a cache for capacity positions. \return 0 or −1 (error line set). */
int latent_cache_init(LatentCache *c, const ModelConfig *cfg, int capacity);
/** Frees what latent_cache_init() allocated. */
void latent_cache_free(LatentCache *c);

/**
 * Bytes the latent cache needs per token for the whole model:
 * (d_c + d_r) × layers × elem_size. (The reference stores float32: 4.)
 */
size_t mla_cache_bytes_per_token(const ModelConfig *cfg, size_t elem_size);

/** Allocates scratch for chunks of up to max_T tokens over up to ctx positions. \return 0 or −1. */
int mla_scratch_init(MlaScratch *s, const ModelConfig *cfg, int max_T, int ctx);
/** Frees what mla_scratch_init() allocated. */
void mla_scratch_free(MlaScratch *s);

/**
 * Attention for T new tokens at positions [pos0, pos0 + T).
 * out: [T, D], a: [T, D] (the RMSNorm'd residual stream), both float32.
 * Writes ĉ and k^R of the new tokens into cache rows [pos0, pos0 + T), then
 * attends causally over rows [0, pos0 + t] for token t, in the given form.
 * The caller guarantees pos0 + T ≤ cache->capacity and T ≤ the scratch's max_T.
 */
void mla_forward(float *out, const float *a, const MlaWeights *w, LatentCache *cache, const ModelConfig *cfg,
                 const Rope *rope, int pos0, int T, MlaForm form, MlaScratch *s);

/* ---- backward (training) ---------------------------------------------------------------- */

/** Gradient arrays of one layer's attention, each float32 and shaped like its weight (NULL where
 *  the weight is unused: q_proj with query compression, q_a_proj/q_a_norm/q_b_proj without). */
typedef struct {
    float *q_proj;    /**< [n_h·d_q, D] */
    float *q_a_proj;  /**< W^DQ [d_c', D] */
    float *q_a_norm;  /**< [d_c'] */
    float *q_b_proj;  /**< [n_h·d_q, d_c'] */
    float *kv_a_proj; /**< [d_c + d_r, D] */
    float *kv_a_norm; /**< [d_c] */
    float *kv_b_proj; /**< [n_h·(d_n + d_v), d_c] */
    float *o_proj;    /**< W^O [D, n_h·d_v] */
} MlaGrads;

/**
 * Backward of mla_forward() over a whole sequence: T tokens at positions [0, T), attended
 * causally in the expanded form (as training runs it). a: [T, D] the forward input,
 * dout: [T, D] ∂L/∂out. Recomputes the forward (ĉ, k^R, q, k^N, v and the probabilities
 * p_{t,j} per head), then, with σ the softmax scale:
 *   do = W^Oᵀ dout;  dp_j = do·v_j;  ds_j = σ p_j (dp_j − Σ_i p_i dp_i);
 *   dq^N_t += ds_j k^N_j, dk^N_j += ds_j q^N_t, dq^R_t += ds_j k^R_j, dk^R_j += ds_j q^R_t
 *   (k^R_j is shared by the heads, so its gradient sums over them), dv_j += p_j do;
 *   then through W^UK/W^UV, kv_a_layernorm, RoPE (transposed), [W^DKV; W^KR], and the
 *   query path (W^UQ/W^QR, q_a_layernorm, W^DQ — or q_proj).
 * da: [T, D] written; g accumulated. \return 0, or −1 (out of memory).
 */
int mla_backward(float *da, const MlaGrads *g, const float *dout, const float *a, const MlaWeights *w,
                 const ModelConfig *cfg, const Rope *rope, int T);

#endif
