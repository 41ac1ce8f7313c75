/**
 * \file fast_shard.h
 * \brief The sharded layout: every device busy, tokens replicated, attention split by heads and the latent
 *        cache by position, routed experts by expert, and only NCCL collectives between the devices — no
 *        host round trip inside a step (fast/shard_model.c; book chapter 15).
 *
 * Over D devices (ranks 0..D−1 of one NCCL clique), every device holds the step's hidden states h [T, D_m]
 * (identical on all of them) and:
 *   - replicated: the norms, W^DQ, [W^DKV; W^KR], the routers;
 *   - split by vocabulary (V/D rows each): the embedding (a token's row comes from the one device holding it,
 *     the others add zeros in an all-reduce) and the LM head (each device's logits slice, all-gathered);
 *   - split by heads (n_h/D heads per device, device r has heads [r·n_h/D, (r+1)·n_h/D)): W^UQ/W^QR rows,
 *     [W^UK_h; W^UV_h] rows, W^O's columns;
 *   - split by position: the latent cache row of position p lives on device p mod D, at row p / D;
 *   - split by expert: routed experts [r·E/D, (r+1)·E/D);
 *   - split by hidden unit: the dense FFNs and the fused shared experts (I/D and N_s·I_e/D units each).
 * Per attention layer: all-gather of the absorbed queries [q^L; q^R], all-reduce MAX of each (token, head)'s
 * running max m, reduce-scatter SUM of the rescaled partial [o^L, l] by heads, all-reduce SUM of the W^O
 * output. Per FFN layer: one all-reduce SUM of the routed + shared (or dense) partial outputs. Per step: an
 * all-reduce SUM of the embedded rows and an all-gather of the logits.
 */
#ifndef DSV2_FAST_SHARD_H
#define DSV2_FAST_SHARD_H

#include "fast.h"

#include <nccl.h>

/** The partial attention kernel fast/shard_model.c runs (kernels/mla_shard.h): version 2, the online softmax. */
#define FAST_SHARD_PARTIAL mla_shard_partial_v2

/** Most devices of a sharded group (the simulated machine's, and one node's). */
#define FAST_SHARD_MAX_DEVICES 8

/** One layer's share on one device. */
typedef struct {
    float *attn_norm;  /**< [D] */
    float *ffn_norm;   /**< [D] */
    FastMat q_proj;    /**< this device's heads' rows of W^Q [hl·d_q, D] (no query compression) */
    FastMat q_a_proj;  /**< W^DQ [d_c', D], whole */
    float *q_a_norm;   /**< [d_c'] */
    FastMat q_b_proj;  /**< this device's heads' rows of [W^UQ; W^QR] [hl·d_q, d_c'] */
    FastMat kv_a_proj; /**< [W^DKV; W^KR] [d_c + d_r, D], whole */
    float *kv_a_norm;  /**< [d_c] */
    FastMat kv_b_proj; /**< this device's heads' [W^UK_h; W^UV_h] [hl·(d_n + d_v), d_c] */
    FastMat o_proj;    /**< W^O's columns of this device's heads [D, hl·d_v] */
    bool is_moe;       /**< MoE or dense FFN */
    FastSwiglu dense;  /**< dense FFN: hidden units [r·I/D, (r+1)·I/D) */
    float *router;     /**< [E, D] float32, whole: every device routes every token */
    float *bias;       /**< [E] or NULL */
    FastMat gate_up;   /**< [El·2I_e, D]: local expert e's [W_gate; W_up] */
    FastMat down;      /**< [El·D, I_e] */
    FastSwiglu shared; /**< the fused shared experts' hidden units [r·I_s/D, (r+1)·I_s/D); NULL data if none */
} FastShardLayer;

/** Device buffers of a FastShardDevice (its pointer fields cache … shared_out, in order). */
#define FAST_SHARD_BUFFERS 30

/** One device of the group. */
typedef struct {
    FastContext ctx;        /**< stream, cuBLAS, precision, staging */
    ncclComm_t comm;        /**< rank r = this device */
    FastMat embed;          /**< [V/D + 1, D]: rows [r·V/D, (r+1)·V/D) of the table, then a zero row */
    FastMat lm_head;        /**< [V/D, D]: rows [r·V/D, (r+1)·V/D) */
    float *final_norm;      /**< [D] */
    float *inv_freq;        /**< [d_r/2] */
    FastShardLayer *layers; /**< [num_hidden_layers] */
    void *cache;            /**< slot s, layer l's rows [cap] at row (s·layers + l)·cap; row j = position j·D + r */
    int *step;              /**< [5·rows]: tokens, positions, cache bases, latent rows (t − pos[t]), local ids */
    float *h;               /**< [rows, D] residual stream (the same on every device) */
    float *a;               /**< [rows, D] normalised input of a sub-layer */
    float *b;               /**< [rows, D] a sub-layer's partial output, then (all-reduced) its output */
    float *logits_loc;      /**< [rows, V/D] this device's slice of the logits */
    float *logits;          /**< [D][rows][V/D] every device's slice, all-gathered */
    float *kv;              /**< [rows, d_c + d_r] [c^KV; k^R_raw] */
    void *lat;              /**< [rows, d_c + d_r] (wtype) each token's cache row [ĉ_t; k^R_t] */
    float *c_q;             /**< [rows, d_c'] */
    float *q;               /**< [rows, hl·d_q] this device's heads' queries */
    float *qp;              /**< [rows, hl, d_c + d_r] their absorbed queries [q^L; q^R] */
    float *q_all;           /**< [D][rows][hl][d_c + d_r] every head's, all-gathered */
    float *m_loc;           /**< [rows, n_h] running max of each (token, head) over this device's rows */
    float *m_all;           /**< [rows, n_h] its max over the devices */
    float *part;            /**< [D][rows][hl][d_c + 1] partial [o^L, l] by head block */
    float *ol_sum;          /**< [rows, hl, d_c + 1] this device's heads' [o^L, l] summed over the devices */
    void *ol;               /**< [rows, hl·d_c] (wtype) o^L normalised */
    float *o;               /**< [rows, hl·d_v] */
    float *rlogits;         /**< [rows, E] router logits, then affinities */
    int *idx;               /**< [rows, K] */
    float *weight;          /**< [rows, K] */
    int *counts;            /**< [E] */
    int *offsets;           /**< [E + 1] */
    int *slot_row;          /**< [rows·K] */
    int *row_token;         /**< [rows·K] */
    float *gu;              /**< [rows, 2·I/D] the dense FFN's gate/up */
    void *hidden;           /**< [rows·K·I_e + rows·I_s/D] or [rows, I/D] (wtype) */
    float *expert_out;      /**< [rows·K, D] permuted expert outputs (zero where another device's expert) */
    float *shared_out;      /**< [rows, D] */
    void *wire_send;        /**< bf16 wire: a payload narrowed to bf16, then the summed slices (= logits, free until the
                          step's last collective fills it) */
    void *wire_recv;        /**< bf16 wire: the slices received from the other devices (= q_all, free once the partial
                          attention has read it) */
} FastShardDevice;

/** The collectives' payload (fast_shard_set_wire()). */
typedef enum {
    FAST_WIRE_BF16 = 0, /**< bf16 on the wire, float32 sums in device order (the default) */
    FAST_WIRE_F32 = 1   /**< float32 collectives throughout */
} FastShardWire;

/** A model opened in the sharded layout over D devices. */
typedef struct {
    ModelConfig config;      /**< the checkpoint's config */
    const ModelConfig *cfg;  /**< = &config */
    Rope rope;               /**< host RoPE tables and σ */
    int D;                   /**< devices */
    int hl;                  /**< heads per device n_h / D */
    int max_context;         /**< positions per slot */
    int cap;                 /**< cache rows per slot, layer and device: ⌈max_context / D⌉ */
    int chunk;               /**< tokens per prompt chunk */
    int max_batch;           /**< sequence slots */
    int rows;                /**< rows of one step: max(chunk, max_batch) */
    int *pos;                /**< [max_batch] tokens in each slot */
    int *step_host;          /**< [D][5·rows] pageable: copied by value when queued */
    float *gathered;         /**< [D·rows·V/D] host: the logits as gathered, before reordering */
    int last_rows;           /**< rows of m->logits the last step computed */
    FastShardWire wire;      /**< the collectives' payload */
    cudaGraphExec_t *graphs; /**< [max_batch·D]: device r's decode step of B sequences at (B − 1)·D + r, captured at
                                  the first such step; NULL: every step eager (FastOptions.graph −1) */
    FastShardDevice dev[FAST_SHARD_MAX_DEVICES]; /**< [D] */
} FastShardModel;

/**
 * Opens the checkpoint in dir over devices 0..D−1 with opt's bf16, max_context, chunk, max_batch and graph
 * (decode steps replayed from one CUDA graph per device and batch size unless it is −1; its ep_devices and form
 * are not used). Refused with one line: D outside 1..8 or above the devices
 * present, vocab_size, n_h, n_routed_experts, intermediate_size or n_shared_experts·moe_intermediate_size
 * not divisible by D. \return 0, or −1 with one error line (nothing held).
 */
int fast_shard_open(FastShardModel *m, const char *dir, int D, const FastOptions *opt);
/** Releases everything (safe on a zeroed model); leaves device 0 current. */
void fast_shard_close(FastShardModel *m);
/** Forgets every slot's past. */
void fast_shard_reset(FastShardModel *m);
/**
 * Sets the collectives' payload (the default is FAST_WIRE_BF16): with bf16, each sub-layer's all-reduce SUM
 * sends bf16 slices point to point, adds them widened in float32 in device order and all-gathers the bf16
 * sums; the attention combine's reduce-scatter likewise (float32 sums kept); the absorbed queries'
 * all-gather and the running max's all-reduce MAX carry bf16; the logits stay float32. Drops captured graphs.
 */
void fast_shard_set_wire(FastShardModel *m, FastShardWire wire);
/**
 * Feeds a prompt of T tokens into slot (chunks of m->chunk); logits_host as fast_model_prefill().
 * \return 0, or −1 with one error line.
 */
int fast_shard_prefill(FastShardModel *m, int slot, const int *tokens, int T, float *logits_host, bool all_positions);
/**
 * One decode step of B sequences (slots distinct). Queues everything and returns without waiting for any
 * device when logits_host is NULL (the logits stay on the devices: fast_shard_logits()); else copies the
 * [B, vocab] logits there (one synchronisation). \return 0, or −1 with one error line.
 */
int fast_shard_decode(FastShardModel *m, const int *slots, const int *tokens, int B, float *logits_host);
/** Copies the last step's [rows, vocab] logits from device 0 (waits for it). \return 0 or −1. */
int fast_shard_logits(FastShardModel *m, float *logits_host);

/**
 * The bytes fast_shard_open() allocates on each device for its buffers (cache … shared_out, in
 * FastShardDevice's order) for D devices, max_batch slots of max_context positions and steps of rows tokens:
 * the one definition of those sizes, shared with fast/plan.c. \return FAST_SHARD_BUFFERS.
 */
int fast_shard_buffer_sizes(const ModelConfig *cfg, KernelDType wtype, int D, int max_batch, int max_context, int rows,
                            size_t bytes[FAST_SHARD_BUFFERS]);
/** Device bytes of the weights each device holds (its shares and the replicated tensors). */
size_t fast_shard_weight_bytes(const ModelConfig *cfg, KernelDType wtype, int D);
/** Staging elements of each device's FastContext for steps of rows tokens. */
size_t fast_shard_stage_elems(const ModelConfig *cfg, int D, int rows);
/** Uploads device r's share of every weight of the opened reference model (device r current). \return 0 or −1. */
int fast_shard_upload(FastShardModel *m, int r, const Model *ref);
/** Frees what fast_shard_upload() uploaded to v (its device current; safe on a zeroed device). */
void fast_shard_free_weights(FastShardDevice *v, int layers);
/** Refuses (one line, naming the key) a config whose vocabulary, heads, experts or FFN widths D does not divide. \return 0 or −1. */
int fast_shard_check(const ModelConfig *cfg, int D);

#endif
