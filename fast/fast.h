/**
 * \file fast.h
 * \brief The fast path on one device: context, uploaded weights, the GPU components and the assembled model.
 *
 * Host C that drives kernels/ and cuBLAS. The API mirrors ref/model.h:
 * fast_model_open() reads the checkpoint with ref/checkpoint.h, binds the
 * same tensor names as the reference and uploads them (bf16 as stored, or
 * widened to float32 in float32 mode), allocates activations and the latent
 * cache once; fast_model_forward() runs prompts and decode steps of one
 * sequence. With FastOptions.max_batch > 1 the model holds that many sequence
 * slots: fast_model_prefill() feeds a prompt into one slot and
 * fast_model_decode() advances several slots by one token in one pass, by
 * default replayed from a CUDA graph captured once per batch size.
 *
 * Every CUDA and cuBLAS call is checked; a failure records one line with
 * ds_error() naming the call, the file and the line, and the function
 * returns −1. Nothing here exits.
 */
#ifndef DSV2_FAST_H
#define DSV2_FAST_H

#include "config.h"
#include "kernels.h"
#include "linear.h"
#include "model.h"
#include "rope.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdbool.h>

/*
 * The kernel versions fast/ runs, chosen here and only here. Version 2 of
 * every component: on the simulated device both versions compute the same
 * function (tests/test_fast_*.c) but sim/ says nothing about speed, and no
 * GPU timing exists yet on this project's machines; v2 is chosen because its
 * work per thread does not grow with the row, expert or sequence length
 * (block and warp reductions, one thread per RoPE pair, one warp per routed
 * token). `make bench-fast` times both versions where a GPU is present.
 */
#define FAST_RMSNORM          rmsnorm_forward_v2      /**< RMSNorm */
#define FAST_RMSNORM_RESIDUAL rmsnorm_residual_v2     /**< residual add fused with the next RMSNorm */
#define FAST_ROPE             rope_forward_at_v2      /**< RoPE on q^R in place, positions from the device */
#define FAST_ROUTER           router_forward_v2       /**< scores + group max + top-K in one kernel */
#define FAST_WRITE_LATENTS    mla_write_latents_at_v2 /**< ĉ_t, k^R_t into the cache, rows from the device */
#define FAST_ARGMAX           sample_argmax_v2        /**< greedy token */
#define FAST_MOE_ROUTE        moe_route_v4   /**< gate GEMV, routing and permutation of a small step, one launch */
#define FAST_MOE_FFN          moe_ffn_v5     /**< experts, combine, residual add, next norm: one launch */
#define FAST_MOE_GEMM         moe_experts_v4 /**< routed experts of a prompt chunk: grouped GEMM, offsets on the device */
#define FAST_MLA_PREFILL      mla_prefill_v2 /**< prompt attention: absorbed, online softmax over cache tiles */

/**
 * Up to this many (token, slot) rows per MoE call (T·K) a prompt chunk's routed
 * experts run in FAST_MOE_FFN, a grouped GEMV that reads the per-expert
 * offsets on the device; above it, in FAST_MOE_GEMM, a grouped GEMM whose
 * blocks also find their expert from the offsets on the device. Neither waits
 * for the host. Decode steps always take the grouped GEMV, at any batch (it
 * also runs the shared experts in the same launches): their rows spread over
 * the experts (batch 64 with V2-Lite's K = 6 is 384 rows over 64 experts, 6
 * each on average), so a warp's 2 FLOP per weight per row stay below the CUDA
 * cores' FLOP-per-byte ratio (about 18 on an H100). Prompt chunks above 256
 * rows take the GEMM, whose tiles of 64 rows of one expert reuse each weight
 * staged in shared memory 64 times; 256 is that estimate, not a measurement.
 */
#define FAST_MOE_GROUPED_MAX_ROWS 256

/**
 * Up to this many tokens an absorbed attention call (a decode step of up to 16 sequences) runs its
 * products as kernels/gemv.cu's matrix–vector launches, which read each weight once for all its tokens
 * and fuse the small work after them; longer calls (prompt chunks) take cuBLAS GEMMs.
 */
#define FAST_DECODE_MAX_T 16

/** Records "call failed: name (text) at file:line" when err is not cudaSuccess. \return 0 or −1. */
int fast_check_cuda(cudaError_t err, const char *call, const char *file, int line);
/** The same for a cuBLAS status. \return 0 or −1. */
int fast_check_blas(cublasStatus_t st, const char *call, const char *file, int line);

/** Returns −1 from the enclosing function when the CUDA call fails (error line recorded). */
#define CUDA_TRY(call)                                                     \
    do {                                                                   \
        if (fast_check_cuda((call), #call, __FILE__, __LINE__)) return -1; \
    } while (0)
/** Returns −1 from the enclosing function when the cuBLAS call fails (error line recorded). */
#define BLAS_TRY(call)                                                     \
    do {                                                                   \
        if (fast_check_blas((call), #call, __FILE__, __LINE__)) return -1; \
    } while (0)

/** One device: its stream, cuBLAS handle, precision mode and the bf16 staging buffer for GEMM operands. */
typedef struct {
    cudaStream_t stream; /**< every kernel and GEMM is queued here */
    cublasHandle_t blas; /**< bound to stream */
    bool bf16;           /**< weights and GEMM operands in bf16 (else float32) */
    KernelDType wtype;   /**< KERNEL_BF16 or KERNEL_F32, from bf16 */
    void *stage;         /**< [stage_elems] activations converted to wtype before a GEMM */
    size_t stage_elems;  /**< capacity of stage */
} FastContext;

/**
 * Creates the stream and cuBLAS handle on the current device and a staging
 * buffer of stage_elems elements. \return 0 or −1 (error line set).
 */
int fast_context_init(FastContext *ctx, bool bf16, size_t stage_elems);
/** Destroys what fast_context_init() created (safe on a zeroed context). */
void fast_context_free(FastContext *ctx);

/** A weight matrix on the device: rows × cols, row-major, of type dtype. */
typedef struct {
    void *data;        /**< device memory */
    KernelDType dtype; /**< ctx->wtype */
    int rows;          /**< out_features */
    int cols;          /**< in_features */
} FastMat;

/**
 * Uploads n_parts checkpoint matrices with the same column count stacked
 * row-wise into one device matrix, converted to ctx->wtype (bf16 kept as
 * stored; f32/f16 rounded to bf16 in bf16 mode; everything widened in
 * float32 mode). \return 0 or −1.
 */
int fast_mat_upload(FastContext *ctx, FastMat *out, const Mat *const *parts, int n_parts);
/** bytes[i] = max(n[i][0], 1) · n[i][1] for count buffers given as {elements, bytes per element}: every
 *  buffer gets at least one element, since cudaMalloc(0) gives NULL. The sizing functions' one rule. */
void fast_buffer_bytes(const size_t (*n)[2], int count, size_t *bytes);
/** Device bytes of a rows × cols matrix of wtype, as fast_mat_upload() allocates it. */
size_t fast_mat_bytes(KernelDType wtype, int64_t rows, int64_t cols);
/** Uploads a float32 vector (norm weights, router bias). *out = NULL when n = 0. \return 0 or −1. */
int fast_vec_upload(float **out, const float *host, size_t n);
/** Frees a FastMat's memory. */
void fast_mat_free(FastMat *m);

/**
 * y = x Wᵀ through cublasGemmEx: y: [T, W.rows] float32, x: [T, W.cols] of
 * x_type with row stride ldx (elements); x_type must equal W.dtype (cuBLAS
 * wants A and B of one type); float32 accumulation and output.
 */
int fast_gemm(FastContext *ctx, float *y, const void *x, KernelDType x_type, int ldx, const void *W, KernelDType w_type,
              int rows, int cols, int T);

/**
 * y = x Wᵀ for float32 activations x: [T, W.cols] (converted into ctx->stage
 * first in bf16 mode); y: [T, W.rows] float32.
 */
int fast_linear(FastContext *ctx, float *y, const float *x, const FastMat *W, int T);

/* ---- components ---------------------------------------------------------------------------- */

/** One SwiGLU FFN on the device: [W_gate; W_up] fused into one [2I, D] matrix, and W_down [D, I]. */
typedef struct {
    FastMat gate_up; /**< [2I, D] */
    FastMat down;    /**< [D, I] */
} FastSwiglu;

/** One MoE layer on the device. */
typedef struct {
    float *router;     /**< W_gate of the router [E, D], always float32 (docs/semantics.md §3.6.3) */
    float *bias;       /**< [E] e_score_correction_bias (noaux_tc) or NULL */
    FastMat gate_up;   /**< [E·2I, D]: expert e's [W_gate; W_up] at rows [2I·e, 2I·(e+1)) */
    FastMat down;      /**< [E·D, I]: expert e's W_down at rows [D·e, D·(e+1)) */
    FastSwiglu shared; /**< the N_s shared experts fused (width N_s·I_e); data NULL when N_s = 0 */
} FastMoe;

/**
 * One layer's attention weights on the device. The two products of the layer input a_t are one matrix,
 * in_proj = [W^DKV; W^KR; W^Q] (or [W^DKV; W^KR; W^DQ] with query compression), so a decode step reads
 * them in one launch; kv_a_proj and q_proj (or q_a_proj) are views of its rows, not separate memory.
 */
typedef struct {
    FastMat in_proj;   /**< [d_c + d_r + n_h·d_q (or d_c'), D]: owns kv_a_proj's and q_proj's (q_a_proj's) rows */
    FastMat q_proj;    /**< [n_h·d_q, D] (no query compression) */
    FastMat q_a_proj;  /**< W^DQ [d_c', D] */
    float *q_a_norm;   /**< [d_c'] */
    FastMat q_b_proj;  /**< [n_h·d_q, d_c'] */
    FastMat kv_a_proj; /**< [W^DKV; W^KR] [d_c + d_r, D] */
    float *kv_a_norm;  /**< [d_c] */
    FastMat kv_b_proj; /**< per head [W^UK_h; W^UV_h]: [n_h·(d_n + d_v), d_c] */
    FastMat o_proj;    /**< W^O [D, n_h·d_v] */
} FastMla;

/** Working memory of the device FFNs and attention for chunks of up to max_T tokens over max_ctx positions. */
typedef struct {
    int max_T;   /**< tokens per chunk it was sized for */
    int max_ctx; /**< cached positions it was sized for */
    /* FFN */
    float *logits;  /**< [max_T, E] router logits, then affinities (grouped: moe_route_v4's part) */
    int *idx;       /**< [max_T, K] chosen experts */
    float *weight;  /**< [max_T, K] their weights */
    int *counts;    /**< [E] rows per expert */
    int *offsets;   /**< [E + 1] first permuted row of each expert; then moe_route_v4's, then FAST_MOE_FFN's counters */
    int *slot_row;  /**< [max_T·K] permuted row of (t, k) */
    int *row_token; /**< [max_T·K] token of each permuted row */
    void *xp;       /**< [max_T·K, D] permuted inputs (wtype) */
    float *gu;      /**< [max_T, 2·I_max] fused gate/up outputs (dense FFN, a prompt's shared experts) */
    void
        *hidden; /**< SwiGLU outputs (wtype): [max_T·K, I_e] routed then [max_T, N_s·I_e] shared, or [max_T, I] dense */
    float *expert_out; /**< [max_T·K, D] permuted expert outputs */
    float *shared_out; /**< [max_T, D] */
    /* attention */
    float *q;       /**< [max_T, n_h·d_q] */
    float *c_q;     /**< [max_T, d_c'] */
    float *kv;      /**< [max_T, d_c + d_r] */
    float *o;       /**< [max_T, n_h·d_v] */
    float *q_lat;   /**< [max_T, n_h, d_c] */
    float *o_lat;   /**< [max_T, n_h, d_c] */
    float *partial; /**< the decode's counters, the gemv tails' counter, then the split-decode partials */
} FastScratch;

/** Uploads a reference SwiGLU (gate and up fused). \return 0 or −1. */
int fast_upload_swiglu(FastContext *ctx, FastSwiglu *out, const SwigluWeights *w);
/** Uploads a reference MoE layer (router float32, experts stacked, shared fused). \return 0 or −1. */
int fast_upload_moe(FastContext *ctx, FastMoe *out, const MoeWeights *w, const ModelConfig *cfg);
/** Uploads a reference attention layer. \return 0 or −1. */
int fast_upload_mla(FastContext *ctx, FastMla *out, const MlaWeights *w, const ModelConfig *cfg);
/** Frees an uploaded SwiGLU. */
void fast_free_swiglu(FastSwiglu *w);
/** Frees an uploaded MoE layer. */
void fast_free_moe(FastMoe *w);
/** Frees an uploaded attention layer. */
void fast_free_mla(FastMla *w);

/** The stage elements (bf16 copies of GEMM activations) a context needs for chunks of max_T tokens of cfg. */
size_t fast_stage_elems(const ModelConfig *cfg, int max_T);
/** Device buffers of a FastScratch (its pointer fields logits … partial, in order). */
#define FAST_SCRATCH_BUFFERS 19
/**
 * The bytes fast_scratch_init() allocates for each of FastScratch's buffers, in field order, for
 * chunks of max_T tokens over max_ctx positions with activations of type wtype: the one definition
 * of those sizes, shared by the allocator and fast/plan.c. \return FAST_SCRATCH_BUFFERS.
 */
int fast_scratch_sizes(const ModelConfig *cfg, KernelDType wtype, int max_T, int max_ctx,
                       size_t bytes[FAST_SCRATCH_BUFFERS]);
/** Their sum: the device bytes of one FastScratch. */
size_t fast_scratch_bytes(const ModelConfig *cfg, KernelDType wtype, int max_T, int max_ctx);
/** Allocates scratch (device) for cfg. \return 0 or −1. */
int fast_scratch_init(FastScratch *s, const FastContext *ctx, const ModelConfig *cfg, int max_T, int max_ctx);
/** Frees what fast_scratch_init() allocated. */
void fast_scratch_free(FastScratch *s);

/**
 * y = W_down (silu(W_gate x) ⊙ W_up x) for T tokens (dense layers, shared experts).
 * y, x: [T, D] float32 device memory.
 */
int fast_swiglu_forward(FastContext *ctx, float *y, const float *x, const FastSwiglu *w, int T, FastScratch *s);

/** How fast_moe_forward_experts() runs the routed experts. */
typedef enum {
    FAST_MOE_AUTO = 0,    /**< grouped up to FAST_MOE_GROUPED_MAX_ROWS rows (T·K), else the grouped GEMM (prompts) */
    FAST_MOE_GROUPED = 1, /**< FAST_MOE_FFN: offsets read on the device, no host synchronisation */
    FAST_MOE_GROUPED_GEMM =
        2 /**< FAST_MOE_GEMM on gathered rows (shared experts by cuBLAS): offsets on the device too */
} FastMoeExperts;

/**
 * The fused tail of a sub-layer in a decode step: h <- h + y, then a = RMSNorm(h) * norm (eps), for T
 * rows of width D. A kernel that produces y may apply it in its last stage instead of writing y, which
 * saves the separate residual-add-and-norm launch.
 */
typedef struct {
    float *h;          /**< [T, D] residual stream, updated in place */
    float *a;          /**< [T, D] output: the next sub-layer's normalised input */
    const float *norm; /**< [D] the next norm's weight */
    float eps;         /**< its epsilon */
} FastResidualNorm;

/**
 * The MoE FFN (ref/moe.h's moe_forward) on the device: router GEMM (float32),
 * router kernel, permutation by expert, the routed experts on contiguous rows
 * (fused gate/up, SwiGLU, down) as `how` says, combine in slot order, shared
 * experts added. y, x: [T, D] float32. Small steps (grouped) take two launches: FAST_MOE_ROUTE, then
 * FAST_MOE_FFN (the experts, the combine and the tail as stages of one launch). tail: NULL, or the fused
 * tail applied to the result (h ← h + y, a = RMSNorm(h)): y is then not written in the grouped path (it
 * may be scratch in the other). \return 0 or −1.
 */
int fast_moe_forward_experts(FastContext *ctx, float *y, const float *x, const FastMoe *w, const ModelConfig *cfg,
                             int T, FastScratch *s, FastMoeExperts how, const FastResidualNorm *tail);

/**
 * Where the T tokens of one attention call sit. Token t has position pos[t] (it attends to cached
 * positions [0, pos[t]]) in a sequence whose position 0 is cache row base[t]; both arrays live on
 * the device, uploaded once per step, so the kernels' launches never depend on them. The host copy
 * pos0/base0 is what the expanded form needs to size its GEMMs over one sequence's cache.
 */
typedef struct {
    const int *pos;  /**< [T] device: position of token t */
    const int *base; /**< [T] device: cache row of position 0 of token t's sequence */
    int pos0;        /**< host: pos[0] when the T tokens are one sequence's positions pos0, pos0 + 1, …; else −1 */
    int base0;       /**< host: that sequence's base (every base[t]) when pos0 ≥ 0 */
    int max_ctx;     /**< positions one sequence holds (sizes the split-decode grid) */
} FastPositions;

/**
 * Attention (ref/mla.h's mla_forward) for T tokens at positions at->pos: writes ĉ, k^R into cache
 * rows base[t] + pos[t], attends causally over each token's own sequence. out, a: [T, D] float32;
 * cache: [rows, d_c + d_r] of ctx->wtype; inv_freq: [d_r/2] device floats.
 * absorbed: the absorbed decode form, any tokens; else expanded, which needs at->pos0 ≥ 0 (one
 * sequence). An absorbed call of at most FAST_DECODE_MAX_T tokens is the decode step's three launches:
 * the input products of kernels/gemv.cu (cache write and RoPE in their last blocks) then the absorption,
 * in stages of one launch; mla_decode_v3; W^UV per head then W^O, in stages. tail: NULL, or the fused tail applied
 * to out (h += out; a = RMSNorm(h)), in W^O's last block on that path, by FAST_RMSNORM_RESIDUAL otherwise.
 * \return 0, or −1 with one error line.
 */
int fast_mla_forward(FastContext *ctx, float *out, const float *a, const FastMla *w, void *cache,
                     const ModelConfig *cfg, const Rope *rope, const float *inv_freq, const FastPositions *at, int T,
                     bool absorbed, FastScratch *s, const FastResidualNorm *tail);

/** C_h = op(A_h) · B_h for every head h (cuBLAS strided batched, float32 accumulation and output). \return 0 or −1. */
int fast_gemm_heads(FastContext *ctx, cublasOperation_t opA, int m, int n, int k, const void *A, KernelDType type,
                    int lda, long long strideA, const void *B, int ldb, long long strideB, float *C, int ldc,
                    long long strideC, int heads);

/**
 * The attention of a prompt chunk (fast/prefill.c), after fast_mla_forward() has written the chunk's
 * latents into the cache and its rotated queries into s->q: q^L = W^UK_hᵀ q^N per head (one batched
 * GEMM), o^L by FAST_MLA_PREFILL over each token's rows base[t] + j, j ≤ pos[t] (any positions, any
 * sequences), then s->o = W^UV_h o^L per head. Memory: s->q_lat, s->o_lat (or the staging buffer), no
 * buffer that grows with the context. \return 0, or −1 with one error line.
 */
int fast_mla_prefill(FastContext *ctx, const FastMla *w, const void *cache, MlaDims dims, const FastPositions *at,
                     int T, FastScratch *s);

/* ---- the model ----------------------------------------------------------------------------- */

/**
 * Checks that T new tokens fit `slot` of a model with `slots` sequence slots holding pos[slot] positions
 * of max_context, every id in [0, vocab). \return 0, or −1 with one error line naming who, the slot and
 * the token or the context.
 */
int fast_check_tokens(const char *who, int slot, int slots, const int *pos, int max_context, int vocab,
                      const int *tokens, int T);

/** Options for fast_model_open(). Zero means "the default". */
typedef struct {
    bool bf16;          /**< bf16 weights and latent cache (the fast path); false: float32 mode */
    int max_context;    /**< positions the cache holds (default: min(max_position_embeddings, 4096)) */
    int chunk;          /**< tokens per forward chunk (default FAST_DEFAULT_CHUNK, at most FAST_MAX_CHUNK) */
    int form;           /**< attention form: 0 automatic (absorbed for 1-token steps), 1 expanded, 2 absorbed */
    int ep_devices;     /**< N > 1: MoE layers expert-parallel over devices 0..N−1 (fast_ep.h); 0 or 1: one device */
    bool moe_elsewhere; /**< MoE layers not uploaded: the caller runs them (fast/dp_model.c's group) */
    int max_batch;      /**< sequence slots, each with its own latent cache and position (default 1) */
    int graph; /**< 0: decode steps replayed from CUDA graphs (one device; sharded layout: one per device); −1: eager */
} FastOptions;

/**
 * Prompt tokens per step unless FastOptions.chunk says otherwise. A chunk reads every weight once, so
 * its tokens share that read: at 2048 tokens V2-Lite's K = 6 gives each of its 64 experts 192 rows on
 * average, about 190 FLOP per weight byte, near the H100's ≈ 295 (bf16 tensor cores over HBM), where
 * chunks of 64 (6 rows per expert) spent ≈ 6. Larger chunks add little and cost scratch that grows
 * with the chunk (activations, the grouped GEMM's rows, q^L and o^L: 0.64 GB for V2-Lite at 2048).
 */
#define FAST_DEFAULT_CHUNK 2048
/** Most tokens per step: the prompt kernels' and scratch's design limit (larger chunks are refused). */
#define FAST_MAX_CHUNK     4096
/** Rows of logits the model holds on the device at once (more than max_batch only up to this). */
#define FAST_LOGIT_ROWS    64

/** One decoder layer on the device. */
typedef struct {
    float *attn_norm; /**< [D] */
    FastMla attn;     /**< attention */
    float *ffn_norm;  /**< [D] */
    bool is_moe;      /**< MoE or dense FFN */
    FastSwiglu dense; /**< dense FFN */
    FastMoe moe;      /**< MoE FFN */
} FastLayer;

/** An open fast model on the current device. */
typedef struct {
    ModelConfig config;     /**< the checkpoint's config */
    const ModelConfig *cfg; /**< = &config */
    Rope rope;              /**< host RoPE tables and σ */
    FastContext ctx;        /**< stream, cuBLAS, precision */
    float *inv_freq;        /**< [d_r/2] device copy of rope.inv_freq */
    FastMat embed;          /**< [vocab, D] */
    FastMat lm_head;        /**< [vocab, D] */
    float *final_norm;      /**< [D] */
    FastLayer *layers;      /**< [num_hidden_layers] */
    void *cache;            /**< slot s, layer l's [max_context, d_c + d_r] at row (s·layers + l)·max_context */
    int max_context;        /**< cache capacity in positions, per slot */
    int chunk;              /**< tokens per forward chunk */
    int form;               /**< attention form option (FastOptions.form) */
    int max_batch;          /**< sequence slots */
    int rows;               /**< rows of one step: max(chunk, max_batch) */
    int *pos;               /**< [max_batch] tokens already in each slot's cache (pos[0]: fast_model_forward's) */
    int *step_host; /**< [3·rows] pinned: the step's token ids, positions and cache bases (a region of step_pinned) */
    int *step_pinned;    /**< [step_regions·3·rows] pinned: one region per step since the host last waited */
    int step_regions;    /**< ⌈max_context / chunk⌉ + 1: a whole prompt's chunks, each staged in its own region */
    int step_unsynced;   /**< uploads queued since the host last waited for the stream (regions in use) */
    int *step;           /**< [3·rows] device copy: tokens at 0, positions at rows, bases at 2·rows */
    FastPositions at;    /**< the current step's positions (pointers into step) */
    float *h;            /**< [rows, D] residual stream */
    float *a;            /**< [rows, D] normalised input of attention / FFN */
    float *b;            /**< [rows, D] attention / FFN output, added to h by the next fused norm */
    bool a_ready;        /**< a already holds the next sub-layer's input: a fused tail (FastResidualNorm) added b */
    float *logits;       /**< [min(rows, max(max_batch, FAST_LOGIT_ROWS)), vocab] device logits */
    int last_row;        /**< row of m->logits holding the last position's logits, −1 when none */
    int *next;           /**< [1] device arg-max */
    FastScratch scratch; /**< working memory */
    cudaGraphExec_t
        *graphs; /**< [max_batch]: the decode step of B sequences at B − 1, captured at first use; NULL: no graphs */
    cudaGraphExec_t *greedy_graphs; /**< [max_batch]: fast_model_decode_greedy's step of B sequences, or NULL */
    int *greedy_host;               /**< pinned [greedy_cap]: the tokens of fast_model_decode_greedy's steps */
    size_t greedy_cap;              /**< its capacity in ints */
    struct FastEpModel *ep;         /**< MoE layers sharded over FastOptions.ep_devices devices; NULL on one device */
    bool moe_elsewhere; /**< FastOptions.moe_elsewhere: MoE layers not uploaded (fast_model_layer_ffn refuses) */
} FastModel;

/**
 * Opens the checkpoint in dir on the current device with the given options. With opt->ep_devices = N > 1
 * the model is on device 0 and its MoE layers expert-parallel over devices 0..N−1 (fast_ep_model_open()):
 * attention, dense FFNs, embedding and LM head run on device 0 for the whole chunk; only the MoE layers'
 * tokens are split over the devices.
 * \return 0, or −1 with one error line (nothing left open).
 */
int fast_model_open(FastModel *m, const char *dir, const FastOptions *opt);
/** Device buffers fast_model_open() allocates besides weights, context and scratch (inv_freq … next). */
#define FAST_MODEL_BUFFERS 8
/**
 * The bytes of each of those buffers, in the order inv_freq, cache, step, h, a, b, logits, next, for
 * max_batch slots of max_context positions and steps of rows tokens: the one definition of those
 * sizes (0: not allocated). The latent cache is max_batch · layers · max_context rows of d_c + d_r
 * elements of wtype. \return FAST_MODEL_BUFFERS.
 */
int fast_model_buffer_sizes(const ModelConfig *cfg, KernelDType wtype, int max_batch, int max_context, int rows,
                            size_t bytes[FAST_MODEL_BUFFERS]);
/**
 * Device bytes of the weights fast_weights_upload() uploads for cfg in wtype (embedding, LM head,
 * norms, attention, dense FFNs and, when with_moe, every MoE layer whole).
 */
size_t fast_weight_bytes(const ModelConfig *cfg, KernelDType wtype, bool with_moe);
/**
 * Device bytes of one MoE layer as fast_upload_moe() uploads it with `experts` of its routed experts: the
 * whole router [E, D] and bias [E] in float32 (every device routes), the experts and shared experts in wtype.
 */
size_t fast_moe_bytes(const ModelConfig *cfg, KernelDType wtype, int experts);
/** Device bytes of a FastContext made by fast_context_init() (its staging buffer). */
size_t fast_context_bytes(KernelDType wtype, size_t stage_elems);
/** Uploads every weight of the opened reference model into m (m->ctx ready). \return 0 or −1. */
int fast_weights_upload(FastModel *m, const Model *ref);
/** Frees what fast_weights_upload() uploaded. */
void fast_weights_free(FastModel *m);
/** Releases everything fast_model_open() acquired (safe on a zeroed model). */
void fast_model_close(FastModel *m);
/** Forgets the cached past of every slot. */
void fast_model_reset(FastModel *m);
/** Forgets slot's cached past (its next token is position 0). \return 0, or −1 when slot is out of range. */
int fast_model_reset_slot(FastModel *m, int slot);
/**
 * Feeds T tokens at positions [m->pos[0], m->pos[0] + T) of slot 0 (ref/model.h's model_forward):
 * fast_model_prefill(m, 0, …).
 * logits_host: NULL, or [T, vocab] when all_positions, else [vocab] for the last token.
 * \return 0, or −1 with one error line.
 */
int fast_model_forward(FastModel *m, const int *tokens, int T, float *logits_host, bool all_positions);
/**
 * Feeds T tokens of one sequence into slot, at positions [m->pos[slot], m->pos[slot] + T), in
 * chunks of m->chunk (a prompt; the attention form as FastOptions.form).
 * logits_host: NULL, or [T, vocab] when all_positions, else [vocab] for the last token.
 * \return 0, or −1 with one error line naming the slot or token.
 */
int fast_model_prefill(FastModel *m, int slot, const int *tokens, int T, float *logits_host, bool all_positions);
/**
 * One decode step of B sequences together: token i goes into slots[i] at position m->pos[slots[i]].
 * Every GEMM, norm, router and expert GEMM runs on the B rows at once (the weights are read once
 * for all of them); attention is per row over its own slot's cache, in the absorbed form, with the
 * positions read from the device. slots: B distinct slots; 1 ≤ B ≤ max_batch.
 * The routed experts run in the grouped kernel whatever B is, so with graphs on (FastOptions.graph)
 * the step from the token upload's end to the logits is a CUDA graph, captured at the first step of
 * B sequences and replayed.
 * The B rows' logits are always computed on the device (m->logits, row i for slots[i], graph or
 * not); logits_host: NULL, or [B, vocab] to receive a copy.
 * \return 0, or −1 with one error line naming the slot or token (nothing fed on error).
 */
int fast_model_decode(FastModel *m, const int *slots, const int *tokens, int B, float *logits_host);
/**
 * `steps` greedy decode steps of B sequences together with no host synchronisation between them: row i
 * starts with tokens[i] in slots[i] at position m->pos[slots[i]]; each step's arg-max tokens and the
 * advanced positions are written on the device for the next step (sample_argmax_advance_v2), each
 * step replayed from one CUDA graph when graphs are on. The host waits for the steps after the last one.
 * out: [steps, B], out[s·B + i] the token chosen at step s for row i (the input of step s + 1).
 * Counted between a step's first launch and its last, a step makes no host synchronisation.
 * \return 0, or −1 with one error line naming the slot or token (nothing fed when the arguments are refused).
 */
int fast_model_decode_greedy(FastModel *m, const int *slots, const int *tokens, int B, int steps, int *out);
/**
 * Starts a step of T tokens of one sequence in slot (1 ≤ T ≤ m->chunk, positions [m->pos[slot],
 * m->pos[slot] + T)): stages and uploads their ids, positions and cache bases and embeds them into h.
 * Followed by fast_model_layer_attention() and fast_model_layer_ffn() for every layer, then
 * fast_model_step_end(), it is one chunk of fast_model_prefill() — the pieces fast/dp_model.c drives
 * on each of its devices. \return 0, or −1 with one error line naming the slot or token.
 */
int fast_model_step_begin(FastModel *m, int slot, const int *tokens, int T);
/**
 * The attention half of decoder layer l on the step's T rows: h ← h + b (the previous layer's FFN
 * output, l > 0), b = MLA(RMSNorm(h)) over the slot's cache, h ← h + b, a = RMSNorm(h), the FFN input.
 * \return 0 or −1.
 */
int fast_model_layer_attention(FastModel *m, int l, int T);
/**
 * The FFN half of decoder layer l: b = FFN_l(a) on T rows — the dense SwiGLU, or the MoE layer on this
 * device (or its expert-parallel group); refused with one error line for a MoE layer of a model opened
 * with FastOptions.moe_elsewhere. \return 0 or −1.
 */
int fast_model_layer_ffn(FastModel *m, int l, int T);
/**
 * Ends the step of T rows begun in slot: the slot's position advances by T; when logits_host is not
 * NULL, the logits of rows [first, T) (final norm, LM head) are copied there, [T − first, vocab], and
 * are the ones fast_model_argmax() reads. \return 0 or −1.
 */
int fast_model_step_end(FastModel *m, int slot, int T, int first, float *logits_host);
/**
 * The greedy next token: arg max of the last position's logits, computed on the
 * device after a fast_model_forward() or fast_model_prefill() that asked for logits. \return 0 or −1.
 */
int fast_model_argmax(FastModel *m, int *token);

#endif
