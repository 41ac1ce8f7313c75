/**
 * \file config.h
 * \brief The model's hyper-parameters, read from a Hugging Face `config.json`.
 *
 * Every architectural key is required: the two families of defaults in
 * circulation (DeepSeek's remote code and native transformers) disagree, so
 * a missing key is an error rather than a guess (docs/semantics.md §1.2). The few keys
 * that released configs may omit without changing the model get the
 * remote-code default, listed in config_load()'s documentation.
 */
#ifndef DSV2_CONFIG_H
#define DSV2_CONFIG_H

#include <stdbool.h>

/** How the router picks experts (`topk_method`, docs/semantics.md §3.6.3). */
typedef enum {
    TOPK_GREEDY,               /**< "greedy": the K largest scores (V2-Lite) */
    TOPK_GROUP_LIMITED_GREEDY, /**< "group_limited_greedy": best topk_group groups by group max (V2) */
    TOPK_NOAUX_TC,             /**< "noaux_tc": V3's biased sigmoid scores, groups by top-2 sum */
} TopkMethod;

/**
 * Which attention the layers run (`attention_type`). MLA is the model; the other three are the
 * standard baselines of the paper's Appendix D, for `dsv2 train`'s ablation (inference refuses
 * them, config_require_mla()): per-head queries, n_g key/value heads each shared by n_h / n_g
 * query heads, and RoPE on the last qk_rope_head_dim columns of every query and key head.
 */
typedef enum {
    ATTN_MLA, /**< "mla": Multi-head Latent Attention (default) */
    ATTN_MHA, /**< "mha": n_g = n_h key/value heads */
    ATTN_GQA, /**< "gqa": n_g = num_key_value_heads, a divisor of n_h */
    ATTN_MQA, /**< "mqa": n_g = 1 */
} AttentionType;

/** How router logits become affinities (`scoring_func`). */
typedef enum {
    SCORING_SOFTMAX, /**< s = softmax(g) over all experts (V2) */
    SCORING_SIGMOID, /**< s = sigmoid(g) per expert (V3) */
} ScoringFunc;

/**
 * ε of the two latent RMSNorms, on c^Q (`q_a_layernorm`) and c^KV
 * (`kv_a_layernorm`). DeepSeek's released modelling code and transformers
 * build these two norms with the RMSNorm class default, so `rms_norm_eps`
 * never reaches them: a config with rms_norm_eps = 0.01 still normalises
 * the latents with 1e-6.
 */
#define LATENT_NORM_EPS 1e-6f

/** Hyper-parameters of a DeepSeek-V2-family model. Names follow config.json's keys (docs/semantics.md §1). */
typedef struct {
    int vocab_size;                 /**< vocabulary size */
    int hidden_size;                /**< D */
    int num_hidden_layers;          /**< number of decoder layers */
    int num_attention_heads;        /**< n_h */
    AttentionType attention_type;   /**< MLA, or a standard baseline (training only) */
    int num_key_value_heads;        /**< n_g, key/value heads of standard attention (n_h for MLA) */
    int q_lora_rank;                /**< d_c' (query compression); 0 when the config says null (V2-Lite) */
    int kv_lora_rank;               /**< d_c, width of the cached latent c^KV (0 for standard attention) */
    int qk_nope_head_dim;           /**< d_n, per-head query/key width without RoPE */
    int qk_rope_head_dim;           /**< d_r, width of the decoupled RoPE parts q^R, k^R */
    int v_head_dim;                 /**< d_v */
    int intermediate_size;          /**< I, width of the dense SwiGLU FFN */
    int moe_intermediate_size;      /**< I_e, width of one expert */
    int n_routed_experts;           /**< E (0: every layer is dense) */
    int n_shared_experts;           /**< N_s, fused into one SwiGLU of width N_s·I_e */
    int num_experts_per_tok;        /**< K */
    int first_k_dense_replace;      /**< layers [0, first_k_dense_replace) are dense */
    int moe_layer_freq;             /**< a layer l ≥ first_k_dense_replace is MoE iff l % freq == 0 */
    TopkMethod topk_method;         /**< expert selection rule */
    int n_group;                    /**< G, expert groups (= devices in the paper's device-limited routing) */
    int topk_group;                 /**< G_k (= M, devices a token may reach) */
    bool norm_topk_prob;            /**< renormalize the K selected weights */
    float routed_scaling_factor;    /**< multiplies routed weights (16 for V2) */
    ScoringFunc scoring_func;       /**< softmax for V2 */
    float rms_norm_eps;             /**< ε of the residual-stream RMSNorms (input, post-attention, final) */
    int max_position_embeddings;    /**< longest sequence the model accepts */
    float rope_theta;               /**< θ, RoPE base */
    bool rope_yarn;                 /**< true when rope_scaling is YaRN; false for plain RoPE */
    float rope_factor;              /**< s, YaRN scale factor */
    int rope_original_max_position; /**< L0, YaRN's original context */
    float rope_beta_fast;           /**< β_f */
    float rope_beta_slow;           /**< β_s */
    float rope_mscale;              /**< `mscale` (cos/sin factor numerator) */
    float rope_mscale_all_dim;      /**< `mscale_all_dim` (softmax m², and cos/sin denominator) */
    int bos_token_id;               /**< beginning-of-sequence id (−1 when absent) */
    int eos_token_id;               /**< end-of-sequence id (−1 when absent) */
} ModelConfig;

/**
 * Reads and validates `path` (a config.json).
 *
 * Required keys: vocab_size, hidden_size, num_hidden_layers,
 * num_attention_heads, q_lora_rank (integer or null), kv_lora_rank,
 * qk_nope_head_dim, qk_rope_head_dim, v_head_dim, intermediate_size,
 * max_position_embeddings, rms_norm_eps, and, when n_routed_experts is not
 * null, moe_intermediate_size, n_shared_experts, num_experts_per_tok,
 * topk_method, first_k_dense_replace. Optional, with DeepSeek's remote-code
 * defaults: moe_layer_freq 1, n_group/topk_group 1, norm_topk_prob false,
 * routed_scaling_factor 1, scoring_func "softmax", rope_theta 10000,
 * rope_scaling null (plain RoPE), bos/eos absent, tie_word_embeddings false
 * (true is rejected). RoPE scaling is read from `rope_scaling` (released
 * checkpoints) or from transformers ≥ 5's `rope_parameters`.
 *
 * Refused unless absent or equal to the one value implemented (the error
 * line names the key and that value): hidden_act "silu" (SwiGLU),
 * attention_bias false, mlp_bias false, for MLA num_key_value_heads =
 * num_attention_heads (MLA has one key and value per head; null for these
 * three reads as that value, as in transformers), partial_rotary_factor 1
 * (top level or in the RoPE object); for YaRN also attention_factor null
 * (m comes from mscale / mscale_all_dim) and truncate true.
 * attention_type (default "mla") may also be "mha", "gqa" or "mqa", the standard baselines
 * (AttentionType): then q_lora_rank and kv_lora_rank must be absent or null, the query/key
 * head is qk_nope_head_dim + qk_rope_head_dim wide with RoPE on its last qk_rope_head_dim
 * columns, num_key_value_heads is n_h ("mha", may be omitted), 1 ("mqa", may be omitted) or a
 * divisor of n_h ("gqa", required).
 * bos_token_id and eos_token_id must lie inside the vocabulary,
 * max_position_embeddings must be at least 2, and the shared experts'
 * width n_shared_experts × moe_intermediate_size must fit a matrix's int
 * extents.
 *
 * Read by DeepseekV2Config (transformers' or DeepSeek's) but without effect
 * on inference, so ignored: initializer_range, use_cache, pad_token_id
 * (only masks the embedding's gradient), pretraining_tp (transformers'
 * port never reads it; slicing a product into parts would not change its
 * value), attention_dropout (training only), output_router_logits,
 * aux_loss_alpha, seq_aux and ep_size (training and placement), head_dim
 * and qk_head_dim (transformers rederives them from qk_rope_head_dim and
 * qk_nope_head_dim), torch_dtype/dtype (each tensor's dtype comes from its
 * safetensors header). Two keys follow DeepSeek's released modelling code
 * where transformers' port (5.23) ignores them: norm_topk_prob and
 * moe_layer_freq; the released V2 configs set them to false and 1, where
 * the two agree.
 *
 * \return 0, or −1 with one error line naming the file and key (ds_last_error()).
 */
int config_load(const char *path, ModelConfig *cfg);

/** True when layer l uses the MoE FFN (docs/semantics.md §3.6.1), false for the dense FFN. */
bool config_layer_is_moe(const ModelConfig *cfg, int l);

/**
 * \return 0 when cfg's attention is MLA, else −1 with one error line naming the key
 * attention_type and `what` (the command or path that runs MLA only).
 */
int config_require_mla(const ModelConfig *cfg, const char *what);

/** The config.json spelling of an attention type ("mla", "mha", "gqa", "mqa"). */
const char *config_attention_name(AttentionType t);

/** d_q = d_n + d_r, the query/key head width. */
int config_qk_head_dim(const ModelConfig *cfg);

#endif
