/**
 * \file model.h
 * \brief The DeepSeek-V2 decoder, assembled from the components (paper §2; docs/semantics.md §3).
 *
 *     h⁰_t = embed[token_t]
 *     for each layer l:  h ← h + MLA(RMSNorm(h));  h ← h + FFN_l(RMSNorm(h))
 *     logits_t = lm_head · RMSNorm(h^L_t)
 *
 * FFN_l is the dense SwiGLU for l < first_k_dense_replace and the MoE
 * otherwise (config_layer_is_moe()). Tokens are processed in chunks; the
 * latent cache carries the past, so a prompt followed by one token at a
 * time computes the same logits as one pass over the whole sequence.
 */
#ifndef DSV2_MODEL_H
#define DSV2_MODEL_H

#include "attention_std.h"
#include "checkpoint.h"
#include "mla.h"
#include "moe.h"
#include "rope.h"

#include <stdbool.h>

/** One decoder layer's weights. */
typedef struct {
    const float *attn_norm; /**< input_layernorm [D] */
    MlaWeights attn;        /**< self_attn.* */
    StdAttnWeights std;     /**< self_attn.{q,k,v,o}_proj instead, when attention_type is not MLA */
    const float *ffn_norm;  /**< post_attention_layernorm [D] */
    bool is_moe;            /**< MoE FFN (true) or dense FFN */
    SwigluWeights dense;    /**< mlp.{gate,up,down}_proj (dense layers) */
    MoeWeights moe;         /**< mlp.gate, mlp.experts.*, mlp.shared_experts (MoE layers) */
} LayerWeights;

/** The context when none is asked for (positions; capped by the config's max_position_embeddings). */
#define MODEL_DEFAULT_CONTEXT 4096
/** Tokens per forward chunk when none is asked for. */
#define MODEL_DEFAULT_CHUNK   64

/**
 * The positions a cache holds for requested (0: MODEL_DEFAULT_CONTEXT), never more than cfg's
 * max_position_embeddings — one rule for model_open() and fast_model_open().
 */
int model_context_size(const ModelConfig *cfg, int requested);

/** Options for model_open(). Zero means "the default". */
typedef struct {
    int max_context;   /**< positions the cache holds (default: min(max_position_embeddings, 4096)) */
    int chunk;         /**< tokens per forward chunk (default 64) */
    int form;          /**< attention form: 0 = automatic (expanded for chunks of > 1 token, absorbed
                          for one), 1 = always expanded, 2 = always absorbed */
    bool for_training; /**< also open standard-attention checkpoints (attention_type mha / gqa /
                            mqa) to bind their weights for dsv2 train; model_forward() refuses them */
} ModelOptions;

/**
 * Watches the router: model_forward() calls it after MoE layer l has run on a chunk of T tokens,
 * with s holding their affinities s->scores [T, E] and chosen experts s->expert [T, K] (valid
 * until the next layer runs). Chunks arrive in token order.
 */
typedef void (*MoeObserver)(void *ctx, int l, int T, const FfnScratch *s);

/** An open model: checkpoint, weights, latent cache and working memory. */
typedef struct {
    Checkpoint ck;           /**< the mapped files; cfg lives in ck.cfg */
    const ModelConfig *cfg;  /**< = &ck.cfg */
    Rope rope;               /**< RoPE tables and the softmax scale */
    Mat embed;               /**< model.embed_tokens.weight [vocab, D] */
    Mat lm_head;             /**< lm_head.weight [vocab, D] */
    const float *final_norm; /**< model.norm.weight [D] */
    LayerWeights *layers;    /**< [num_hidden_layers] */
    float *norms;            /**< one allocation holding every widened norm weight */
    SwigluWeights *experts;  /**< one allocation holding every layer's expert table */
    LatentCache *cache;      /**< [num_hidden_layers] */
    int max_context;         /**< cache capacity in positions */
    int chunk;               /**< tokens per chunk */
    int form;                /**< attention form option (see ModelOptions) */
    int pos;                 /**< tokens already in the cache */
    float *h;                /**< [chunk, D] the residual stream h */
    float *a;                /**< [chunk, D] RMSNorm'd input of a sublayer */
    float *b;                /**< [chunk, D] a sublayer's output, before the residual add */
    MlaScratch mla;          /**< attention working memory */
    FfnScratch ffn;          /**< FFN working memory */
    MoeObserver on_moe;      /**< NULL, or called after each MoE layer's routing (set after model_open) */
    void *on_moe_ctx;        /**< passed to on_moe */
} Model;

/**
 * Opens the model in dir: config, every tensor checked for presence, dtype
 * and shape against the config before anything is computed, then the cache
 * and working memory. \return 0, or −1 with one error line (nothing left open).
 */
int model_open(Model *m, const char *dir, const ModelOptions *opt);

/** Releases everything model_open() acquired. */
void model_close(Model *m);

/** Forgets the cached past (the next token is at position 0). */
void model_reset(Model *m);

/**
 * Feeds T tokens at positions [m->pos, m->pos + T) and advances m->pos.
 * logits: NULL, or [T, vocab] when all_positions, else [vocab] for the last token.
 * \return 0, or −1 with one error line (a token id ≥ vocab, or the context
 * would overflow: nothing is computed then).
 */
int model_forward(Model *m, const int *tokens, int T, float *logits, bool all_positions);

#endif
