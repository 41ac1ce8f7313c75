/**
 * \file kernels.h
 * \brief C-callable launchers of the CUDA kernels: one `.cu` per component, the same stems as ref/.
 *
 * Every launcher queues its kernel(s) on `stream` through the LAUNCH macro
 * (dsv2_launch.h) and returns cudaGetLastError(): launch-time errors
 * (configuration, pointers) come back directly, run-time ones at the next
 * synchronisation. Every pointer argument is device memory. Arguments come
 * in ref/'s order: outputs, inputs, weights, sizes, then the stream.
 *
 * Each component has a version 1, the literal translation of the reference
 * loop (one thread per row, token or (token, head), kept as the readable
 * baseline and tested), and a version 2, the one fast/ uses (warp and block
 * reductions, fusion, one block per row). fast/ picks the versions in one
 * place (the FAST_* names in fast/fast.h).
 *
 * Activations, norms, router weights and accumulators are float32. Tensors
 * that may be bfloat16 (weights, the latent cache, GEMM operands) are
 * passed as `void *` with a KernelDType, so this header stays plain C
 * (C sees bfloat16 only as raw 16-bit storage).
 *
 * Shapes are row-major; `[T, n]` means T rows of n contiguous elements.
 * Symbols follow the paper: ĉ_t the normalised KV latent (d_c wide), k^R_t
 * the shared RoPE key (d_r), q^N/q^R the per-head query parts (d_n, d_r),
 * q^L = W^UKᵀ q^N the absorbed query, o^L = Σ_j p_j ĉ_j the latent context,
 * s_{i,t} the router affinities.
 */
#ifndef DSV2_KERNELS_H
#define DSV2_KERNELS_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Element type of a tensor handed over as `void *`. */
typedef enum {
    KERNEL_F32 = 0, /**< float */
    KERNEL_BF16 = 1 /**< __nv_bfloat16 (round to nearest even on store) */
} KernelDType;

/** Bytes per element of t. */
static inline size_t kernel_dtype_size(KernelDType t)
{
    return t == KERNEL_F32 ? 4 : 2;
}

/* ---- embed.cu: embedding rows, type conversion ------------------------------------------- */

/**
 * h⁰_t = embed[token_t], widened to float32 (docs/semantics.md §3.1).
 * h: [T, D] float32; tokens: [T] ids in [0, vocab) (not checked here);
 * table: [vocab, D] of table_type. Any T ≥ 1, D ≥ 1. One block per token.
 */
cudaError_t embed_forward_v2(float *h, const int *tokens, const void *table, KernelDType table_type, int T, int D,
                             cudaStream_t stream);

/** dst[i] = src[i] rounded to dst_type (a copy for KERNEL_F32), i < n; any n ≥ 1. */
cudaError_t convert_forward_v2(void *dst, KernelDType dst_type, const float *src, size_t n, cudaStream_t stream);

/* ---- rmsnorm.cu: RMSNorm (docs/semantics.md §3.2) ------------------------------------------------------- */

/**
 * Version 1: y[t] = w ⊙ x[t] / sqrt(mean_i x[t,i]² + eps), one thread per row (the reference loop).
 * y, x: [T, n] float32 (y may equal x); w: [n]. Any T ≥ 1, n ≥ 1.
 */
cudaError_t rmsnorm_forward_v1(float *y, const float *x, const float *w, int T, int n, float eps, cudaStream_t stream);

/**
 * Version 2: the same function, one block of 256 threads per row, the mean
 * square summed by warp shuffles then across warps in shared memory.
 * y, x: [T, n] float32 (y may equal x); w: [n]. Any T ≥ 1, n ≥ 1.
 */
cudaError_t rmsnorm_forward_v2(float *y, const float *x, const float *w, int T, int n, float eps, cudaStream_t stream);

/**
 * Version 2 fused with the residual add of the decoder layer (docs/semantics.md §3.3):
 * h[t] += delta[t], then y[t] = RMSNorm(h[t]) with weight w.
 * y: [T, n] float32 (must not alias h or delta); h: [T, n] updated in place;
 * delta: [T, n]; w: [n]. Any T ≥ 1, n ≥ 1. One block of 256 threads per row.
 */
cudaError_t rmsnorm_residual_v2(float *y, float *h, const float *delta, const float *w, int T, int n, float eps,
                                cudaStream_t stream);

/* ---- rope.cu: decoupled RoPE (docs/semantics.md §3.5.4) ------------------------------------------------- */

/**
 * Rotates, in place, the d_r-wide slice of `heads` vectors per token:
 * slice (t, h) starts at x + t·row_stride + h·head_stride and holds interleaved
 * pairs (x_{2i}, x_{2i+1}), rotated by φ = (pos0 + t)·inv_freq[i] with cos and
 * sin multiplied by cos_sin_scale (ref/rope.h's rope_rotate on each slice).
 * For q^R: x = q + d_n, heads = n_h, head_stride = d_q, row_stride = n_h·d_q;
 * for k^R inside a [T, d_c + d_r] row: x = kv + d_c, heads = 1.
 * inv_freq: [dim/2] device floats. dim even, ≤ 1024; any T, heads ≥ 1.
 * Version 1: one thread per (token, head) walking the pairs.
 */
cudaError_t rope_forward_v1(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                            int row_stride, int head_stride, int pos0, cudaStream_t stream);

/** Version 2 of rope_forward_v1 (same arguments and limits): one thread per pair. */
cudaError_t rope_forward_v2(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                            int row_stride, int head_stride, int pos0, cudaStream_t stream);

/**
 * rope_forward_v1 with each token's position read from device memory: slice (t, h) rotated by
 * φ = pos[t]·inv_freq[i]. pos: [T] device ints ≥ 0. The launch does not depend on the positions
 * (the tokens of a batched decode step, each in its own sequence; capturable in a CUDA graph).
 */
cudaError_t rope_forward_at_v1(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                               int row_stride, int head_stride, const int *pos, cudaStream_t stream);

/** Version 2 of rope_forward_at_v1 (same arguments; rope_forward_v2's kernel). */
cudaError_t rope_forward_at_v2(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                               int row_stride, int head_stride, const int *pos, cudaStream_t stream);

/* ---- router.cu: the MoE gate (docs/semantics.md §3.6.3) ------------------------------------------------- */

#define ROUTER_MAX_E 1024 /**< most routed experts the router kernels take (version 1's per-thread flags) */
#define ROUTER_MAX_G 32   /**< most expert groups (version 2 scores one group per lane) */

/** The router's settings, copied from ModelConfig (numeric values of ref/config.h's enums). */
typedef struct {
    int E;                       /**< routed experts, ≤ 1024 */
    int K;                       /**< experts per token, ≤ 32 and ≤ E */
    int n_group;                 /**< G; E % G == 0, G ≤ 32 */
    int topk_group;              /**< groups kept, ≤ G */
    int topk_method;             /**< 0 greedy, 1 group_limited_greedy, 2 noaux_tc (TopkMethod) */
    int scoring;                 /**< 0 softmax, 1 sigmoid (ScoringFunc) */
    int norm_topk_prob;          /**< renormalise the K weights (when K > 1) */
    float routed_scaling_factor; /**< scale of the weights (docs/semantics.md §3.6.3 step 4) */
} RouterParams;

/**
 * Router for T tokens: affinities s_{i,t} from the logits g (softmax or
 * sigmoid), then expert selection and weights exactly as ref/router.h's
 * router_scores + router_select (lower index wins ties; experts in
 * descending order of selection score).
 * idx: [T, K] int; weight: [T, K] float; scores: [T, E] receives s;
 * logits: [T, E] (may equal scores); bias: [E] (noaux_tc) or NULL.
 * Version 1: one thread per token running the reference loops.
 * Settings beyond ROUTER_MAX_E experts or ROUTER_MAX_G groups: cudaErrorInvalidValue, nothing launched
 * (fast_scratch_init refuses such a configuration first, naming the key).
 */
cudaError_t router_forward_v1(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                              RouterParams p, int T, cudaStream_t stream);

/**
 * Version 2: one warp per token (4 tokens per block): softmax by warp
 * reductions, group scores and top-k by warp arg-max rounds, all in one
 * kernel. Same arguments and limits as router_forward_v1.
 */
cudaError_t router_forward_v2(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                              RouterParams p, int T, cudaStream_t stream);

/** Floats of moe_route_v4's part for up to max_T tokens of width D: ⌈D/256⌉ + 1 slices of [max_T, E]. */
size_t moe_route_v4_floats(int E, int D, int max_T);
/**
 * Version 4 of the whole gate in one launch: g = W_gate x_t (float32 weights [E, D], x [T, D]) over
 * blocks of 8 experts × 256 columns, x staged in shared memory once per block; the last block adds the
 * column partials (part: moe_route_v4_floats), routes as router_forward_v2 (idx, weight; the affinities
 * are left in part's last [T, E] slice) and permutes as moe_permute_v2 (slot_row, row_token).
 * offsets: 2E + 2 ints: [E + 1] offsets, [E] the experts with rows in ascending order (−1 after the
 * last; moe_ffn_grouped_v4 reads them), and the launch counter, zero before the first launch (one
 * cudaMemset) and left zero. Limits as router_forward_v1 (cudaErrorInvalidValue, nothing launched).
 */
cudaError_t moe_route_v4(int *idx, float *weight, int *offsets, int *slot_row, int *row_token, float *part,
                         const float *x, const float *w_gate, const float *bias, RouterParams p, int T, int D,
                         cudaStream_t stream);

/* ---- moe.cu: SwiGLU experts and the token permutation (docs/semantics.md §3.6.2, §3.6.4) --------------- */

/**
 * Version 1 of the whole MoE FFN after routing, the reference loops on CUDA
 * cores (no GEMM): y_t = Σ_k weight[t,k] · FFN_{idx[t,k]}(x_t) + FFN_shared(x_t).
 * y, x: [T, D] float32; idx, weight: [T, K] from the router;
 * gate_up: [E, 2·I, D] of w_type (expert e's W_gate rows, then its W_up rows);
 * down: [E, D, I]; shared_gate_up: [2·I_s, D] and shared_down: [D, I_s], or
 * NULL when I_s = 0; hidden: scratch of T·(K·I + I_s) floats.
 * Any sizes ≥ 1. Step 1 per expert (ref/moe.c's loop over experts): one block per expert that has
 * tokens, plus one for the shared experts, threads over hidden units; step 2 one thread per (token, d).
 */
cudaError_t moe_forward_v1(float *y, const float *x, const int *idx, const float *weight, const void *gate_up,
                           const void *down, const void *shared_gate_up, const void *shared_down, KernelDType w_type,
                           int T, int D, int I, int K, int I_s, float *hidden, cudaStream_t stream);

/**
 * The SwiGLU nonlinearity on a fused [gate | up] GEMM output:
 * h[r, i] = silu(gu[r, i]) · gu[r, I + i], stored as h_type (for the down GEMM).
 * h: [rows, I]; gu: [rows, 2·I] float32. Any rows, I ≥ 1.
 */
cudaError_t swiglu_forward_v2(void *h, KernelDType h_type, const float *gu, int rows, int I, cudaStream_t stream);

/**
 * Plans the permutation of (token, slot) pairs by expert: counts[e] rows go to
 * expert e, at rows [offsets[e], offsets[e] + counts[e]) of the permuted order,
 * in token order; slot_row[t·K + k] is the permuted row of (t, k), row_token[r]
 * the token of permuted row r. counts: [E]; offsets: [E + 1]; slot_row,
 * row_token: [T·K]; idx: [T, K]. E ≤ 1024; one block.
 */
cudaError_t moe_permute_v2(int *counts, int *offsets, int *slot_row, int *row_token, const int *idx, int T, int K,
                           int E, cudaStream_t stream);

/**
 * Gathers the permuted expert inputs: xp[r] = x[row_token[r]] stored as xp_type.
 * xp: [rows, D]; x: [T, D] float32; row_token: [rows]. Any rows, D ≥ 1.
 */
cudaError_t moe_gather_v2(void *xp, KernelDType xp_type, const float *x, const int *row_token, int rows, int D,
                          cudaStream_t stream);

/**
 * Combines in slot order (docs/semantics.md §3.6.4): y_t = Σ_k weight[t,k] · out[slot_row[t·K + k]]
 * (float32, k ascending), then y_t += shared_t when shared is not NULL.
 * y: [T, D]; out: [T·K, D] permuted expert outputs; slot_row, weight: [T, K];
 * shared: [T, D] or NULL. Any sizes ≥ 1.
 */
cudaError_t moe_combine_v2(float *y, const float *out, const int *slot_row, const float *weight, const float *shared,
                           int T, int K, int D, cudaStream_t stream);

/**
 * Version 1 of the routed experts on permuted rows, grouped by expert, the reference loops
 * (one thread per (row, hidden unit), then per (row, output)): for the expert e owning row r
 * (offsets[e] ≤ r < offsets[e + 1]), hidden[r] = silu(W_gate,e xp_r) ⊙ (W_up,e xp_r) stored as
 * w_type, then out[r] = W_down,e hidden[r] in float32. The offsets are read on the device, so the
 * launch depends only on rows: no host round trip, capturable in a CUDA graph.
 * out: [rows, D] float32; hidden: [rows, I] of w_type (scratch); xp: [rows, D] of w_type (moe_gather_v2);
 * offsets: [E + 1] (moe_permute_v2, offsets[E] = rows); gate_up: [E·2I, D] (expert e's W_gate rows,
 * then its W_up rows, at rows [2I·e, 2I·(e + 1))); down: [E·D, I]. Any sizes ≥ 1.
 * The same numbers as swiglu_forward_v2 between two GEMMs: float32 accumulation, hidden rounded once.
 */
cudaError_t moe_experts_v1(float *out, void *hidden, const void *xp, const int *offsets, const void *gate_up,
                           const void *down, KernelDType w_type, int rows, int E, int D, int I, cudaStream_t stream);

/**
 * Version 2 of moe_experts_v1 (same arguments and result): a grouped GEMV. Block (tile, j) serves
 * the j-th expert that has rows, j < min(rows, E); each warp owns one output unit (a weight row,
 * read once per 4 rows of the expert, lanes striding over it) and loops over the expert's rows.
 * Blocks of experts without rows return at once. Two launches (hidden, then down).
 */
cudaError_t moe_experts_v2(float *out, void *hidden, const void *xp, const int *offsets, const void *gate_up,
                           const void *down, KernelDType w_type, int rows, int E, int D, int I, cudaStream_t stream);

/**
 * Version 3 of moe_experts_v1 (same arguments and result): version 2's grouped GEMV with block (tile, r)
 * serving the expert whose rows begin at permuted row r, r < rows (a binary search of the offsets, not a
 * scan of all E), and 16-byte loads of weights and activations when D and I are multiples of 8 and the
 * tensors 16-byte aligned; other sizes take element loads (same results).
 */
cudaError_t moe_experts_v3(float *out, void *hidden, const void *xp, const int *offsets, const void *gate_up,
                           const void *down, KernelDType w_type, int rows, int E, int D, int I, cudaStream_t stream);

/**
 * The routed and shared experts of a small step in two launches (fused version 3; the literal version
 * is moe_forward_v1): moe_experts_v3 on permuted rows r < rows that reads token row_token[r]'s input
 * straight from x (no gathered copy), plus, when I_s > 0, the shared experts on every token as T more
 * rows of blocks. out: [rows, D] float32 (as moe_experts_v1's); shared_out: [T, D] float32;
 * hidden: [rows, I], shared_hidden: [T, I_s] (w_type); x: [T, D] float32; row_token, offsets as
 * moe_permute_v2 writes them; shared_gate_up: [2·I_s, D]; shared_down: [D, I_s]. 16-byte loads when D,
 * I and I_s are multiples of 8 and the tensors 16-byte aligned, element loads otherwise.
 */
cudaError_t moe_ffn_grouped_v3(float *out, float *shared_out, void *hidden, void *shared_hidden, const float *x,
                               const int *row_token, const int *offsets, const void *gate_up, const void *down,
                               const void *shared_gate_up, const void *shared_down, KernelDType w_type, int T, int rows,
                               int E, int D, int I, int I_s, cudaStream_t stream);

#define MOE_V4_MAX_WIDTH 12288 /**< widest input or hidden row moe_ffn_grouped_v4 stages (48 KB of floats) */

/**
 * Version 4 of moe_ffn_grouped_v3 (same arguments and outputs; offsets as moe_route_v4 writes them,
 * with the active experts after the offsets): block rows are the active experts (at most min(rows, E))
 * plus one for the shared experts on all T tokens, blocks of 64 hidden units or outputs, each block's
 * input rows staged in shared memory once per pass of up to min(8, T) rows (up to 96 KB, raised with
 * cudaFuncSetAttribute above 48 KB), so the weights are read about once
 * and the activations once per 64 weight rows. D and max(I, I_s) up to MOE_V4_MAX_WIDTH;
 * beyond: cudaErrorInvalidValue, nothing launched.
 */
cudaError_t moe_ffn_grouped_v4(float *out, float *shared_out, void *hidden, void *shared_hidden, const float *x,
                               const int *row_token, const int *offsets, const void *gate_up, const void *down,
                               const void *shared_gate_up, const void *shared_down, KernelDType w_type, int T, int rows,
                               int E, int D, int I, int I_s, cudaStream_t stream);

/**
 * Version 4 of moe_combine_v2 over blocks of (256 outputs, token), K ≤ 32. h NULL: y as moe_combine_v2.
 * Else the fused tail instead of y: h ← h + y, a = RMSNorm(h) · norm (eps), with sq [T, ⌈D/256⌉] floats
 * of scratch and done [T] counters, zero before the first launch and left zero. All [T, D] float32.
 */
cudaError_t moe_combine_v4(float *y, const float *out, const int *slot_row, const float *weight, const float *shared,
                           int T, int K, int D, float *h, float *a, const float *norm, float eps, float *sq, int *done,
                           cudaStream_t stream);

/* ---- moe_v5.cu: the MoE FFN of a small step in one launch after the gate (docs/semantics.md §3.6) ---------- */

#define MOE_V5_COUNTERS 4 /**< ints of moe_ffn_v5's stage counters (kernels/stage.cuh, two stages) */

/** The operands of moe_ffn_v5: the routing moe_route_v4 wrote, the experts' weights, scratch and outputs. */
typedef struct {
    float *y;                   /**< [T, D] float32: the layer's output (when h is NULL) */
    float *h;                   /**< [T, D] float32 residual stream, h ← h + y, or NULL (then y is written) */
    float *a;                   /**< [T, D] float32: RMSNorm(h) ⊙ norm, with h */
    const float *norm;          /**< [D] weight of the next RMSNorm, with h */
    float eps;                  /**< ε of the next RMSNorm */
    float *out;                 /**< [T·K, D] float32 scratch: each permuted row's expert output */
    float *shared_out;          /**< [T, D] float32 scratch: the shared experts' output, with I_s > 0 */
    void *hidden;               /**< [T·K, I] of w_type scratch: the routed rows' SwiGLU hidden units */
    void *shared_hidden;        /**< [T, I_s] of w_type scratch, with I_s > 0 */
    const float *x;             /**< [T, D] float32: the layer's input */
    const int *row_token;       /**< [T·K]: the token of each permuted row (moe_route_v4) */
    const int *offsets;         /**< offsets and active experts as moe_route_v4 writes them */
    const int *slot_row;        /**< [T·K]: the permuted row of slot (t, k) (moe_route_v4) */
    const float *weight;        /**< [T, K]: g_{k,t}, the gate weights (moe_route_v4) */
    const void *gate_up;        /**< [E·2I, D] of w_type: each expert's W_gate rows then its W_up rows */
    const void *down;           /**< [E·D, I] of w_type */
    const void *shared_gate_up; /**< [2·I_s, D] of w_type, or NULL */
    const void *shared_down;    /**< [D, I_s] of w_type, or NULL */
    KernelDType w_type;         /**< the weights' (and hidden rows') type */
    int T;                      /**< tokens */
    int K;                      /**< experts per token, ≤ 32 and ≤ E */
    int E;                      /**< routed experts */
    int D;                      /**< model width, ≤ MOE_V4_MAX_WIDTH */
    int I;                      /**< one routed expert's hidden width */
    int I_s;                    /**< the shared experts' hidden width (N_s·I), 0 without them */
    int *counters;              /**< MOE_V5_COUNTERS device ints, zero before the first launch and left zero */
} MoeFfn;

/**
 * Version 5 of the MoE FFN after the gate (moe_ffn_grouped_v4 and moe_combine_v4 in one launch, the same
 * results): stages inside the launch (kernels/stage.cuh). Stage 0 is version 4's hidden blocks (gate/up and
 * SwiGLU of the active experts' rows and of the shared experts on every token); stage 1 blocks each own 64 of
 * the D outputs for all T tokens: they wait for stage 0, apply W_down of every active expert and of the
 * shared experts to those outputs, then add y_t = Σ_k g_{k,t} out[slot_row[t,k]] + shared_t in k order
 * (no atomics) and, with h, h_t ← h_t + y_t; the last T blocks (with h) each wait for stage 1 and write
 * a_t = norm ⊙ h_t / sqrt(mean(h_t²) + ε). Any T ≥ 1; D, max(I, I_s) ≤ MOE_V4_MAX_WIDTH, K ≤ min(32, E);
 * beyond: cudaErrorInvalidValue, nothing launched.
 */
cudaError_t moe_ffn_v5(MoeFfn p, cudaStream_t stream);

/**
 * Version 4 of moe_experts_v1 (same arguments and result; kernels/moe_gemm.cu): a grouped GEMM for
 * prompt chunks. Tiles of 64 rows of one expert × 128 weight rows, staged through shared memory with
 * 16-byte loads (element loads when D or I is not a multiple of 8), float32 accumulation; each block
 * finds its expert and rows from the offsets on the device, the grid is sized from rows and E alone.
 * Two launches: [gate | up] with SwiGLU in the epilogue, then down.
 */
cudaError_t moe_experts_v4(float *out, void *hidden, const void *xp, const int *offsets, const void *gate_up,
                           const void *down, KernelDType w_type, int rows, int E, int D, int I, cudaStream_t stream);

/* ---- mla.cu: Multi-head Latent Attention (docs/semantics.md §3.4, §5) ---------------------------------- */

/** Sizes of one MLA layer and the scale σ = d_q^{-1/2}·m². */
typedef struct {
    int n_h;     /**< heads */
    int d_n;     /**< q^N / k^N width per head */
    int d_r;     /**< q^R / k^R width (even, ≤ 64 for the decode kernel) */
    int d_v;     /**< value width per head */
    int d_c;     /**< latent width (≤ 512 for the decode kernel) */
    float scale; /**< σ, applied to the finished dot product */
} MlaDims;

/**
 * Writes the new tokens' latents into the cache (ref/mla.c's mla_write_latents):
 * cache row pos0 + t = [ĉ_t = RMSNorm(c^KV_t) with kv_a_norm ; k^R_t = RoPE_{pos0+t}(k^R_raw_t)].
 * cache: [capacity, d_c + d_r] of cache_type; kv: [T, d_c + d_r] float32
 * (the kv_a_proj output); kv_a_norm: [d_c]; inv_freq: [d_r/2].
 * Version 1: one thread per token.
 */
cudaError_t mla_write_latents_v1(void *cache, KernelDType cache_type, const float *kv, const float *kv_a_norm,
                                 const float *inv_freq, float cos_sin_scale, MlaDims dims, int pos0, int T, float eps,
                                 cudaStream_t stream);

/** Version 2 of mla_write_latents_v1 (same arguments): one block of 128 threads per token. */
cudaError_t mla_write_latents_v2(void *cache, KernelDType cache_type, const float *kv, const float *kv_a_norm,
                                 const float *inv_freq, float cos_sin_scale, MlaDims dims, int pos0, int T, float eps,
                                 cudaStream_t stream);

/**
 * mla_write_latents_v1 with positions and cache rows from device memory: token t's row goes to cache
 * row base[t] + pos[t], k^R rotated by pos[t]. pos, base: [T] device ints (base[t]: the cache row of
 * position 0 of token t's sequence). The launch does not depend on them.
 */
cudaError_t mla_write_latents_at_v1(void *cache, KernelDType cache_type, const float *kv, const float *kv_a_norm,
                                    const float *inv_freq, float cos_sin_scale, MlaDims dims, const int *pos,
                                    const int *base, int T, float eps, cudaStream_t stream);

/** Version 2 of mla_write_latents_at_v1 (same arguments; mla_write_latents_v2's kernel). */
cudaError_t mla_write_latents_at_v2(void *cache, KernelDType cache_type, const float *kv, const float *kv_a_norm,
                                    const float *inv_freq, float cos_sin_scale, MlaDims dims, const int *pos,
                                    const int *base, int T, float eps, cudaStream_t stream);

/** Scratch floats per (token, head) of mla_attend_v1 over ctx positions: scores, then the absorbed
 *  form's q^L and o^L (2·d_c) or the expanded form's k^N_j and v_j (d_n + d_v), whichever is larger. */
#define MLA_V1_SCRATCH(dims, ctx) \
    ((size_t)(ctx) + (size_t)(2 * (dims).d_c > (dims).d_n + (dims).d_v ? 2 * (dims).d_c : (dims).d_n + (dims).d_v))

/**
 * Version 1 of attention over the cache, the reference loops, one thread per (token, head): kernel
 * mla_attend_expanded_v1 (absorbed = 0) mirrors ref/mla.c's mla_attend_expanded, kernel
 * mla_attend_absorbed_v1 (absorbed = 1) its mla_attend_absorbed.
 * o: [T, n_h·d_v] float32; q: [T, n_h·(d_n + d_r)] (q^R already rotated);
 * kv_b: [n_h·(d_n + d_v), d_c] of kv_b_type (per head [W^UK_h; W^UV_h]);
 * cache: [≥ pos0 + T, d_c + d_r] of cache_type holding rows [0, pos0 + T);
 * scratch: T·n_h·MLA_V1_SCRATCH(dims, pos0 + T) floats. absorbed: 0 expanded, 1 absorbed.
 * Token t attends to keys [0, pos0 + t].
 */
cudaError_t mla_attend_v1(float *o, const float *q, const void *kv_b, KernelDType kv_b_type, const void *cache,
                          KernelDType cache_type, MlaDims dims, int pos0, int T, int absorbed, float *scratch,
                          cudaStream_t stream);

/**
 * mla_attend_v1 with positions and cache rows from device memory: token t attends to keys
 * j ∈ [0, pos[t]] at cache rows base[t] + j. pos, base: [T] device ints, pos[t] < max_ctx;
 * scratch: T·n_h·MLA_V1_SCRATCH(dims, max_ctx) floats.
 */
cudaError_t mla_attend_at_v1(float *o, const float *q, const void *kv_b, KernelDType kv_b_type, const void *cache,
                             KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T, int max_ctx,
                             int absorbed, float *scratch, cudaStream_t stream);

/**
 * Expanded form, step 2 (after the GEMM u = [k^N ; v] = kv_b · ĉ for every
 * cached row): builds per-head keys K[j, h] = [k^N_{j,h} ; k^R_j] and values V[j, h].
 * k: [ctx, n_h·(d_n + d_r)]; v: [ctx, n_h·d_v]; u: [ctx, n_h·(d_n + d_v)] float32;
 * cache: [≥ ctx, d_c + d_r]. One block per cached row.
 */
cudaError_t mla_expand_v2(float *k, float *v, const float *u, const void *cache, KernelDType cache_type, MlaDims dims,
                          int ctx, cudaStream_t stream);

/**
 * Expanded form, step 4: p = softmax_j(σ·s) over keys j ≤ pos0 + t, p = 0 beyond
 * (causal mask), for each head and token. p, s: [n_h, T, ctx] float32 (may alias).
 * One block of 128 threads per (token, head) row. ctx ≥ pos0 + T.
 */
cudaError_t mla_causal_softmax_v2(float *p, const float *s, float scale, int n_h, int T, int ctx, int pos0,
                                  cudaStream_t stream);

/**
 * Absorbed form over the latent cache, split over the sequence (FlashMLA's
 * idea on CUDA cores): o^L_{t,h} = Σ_j softmax_j(σ(q^L_{t,h}·ĉ_j + q^R_{t,h}·k^R_j)) ĉ_j
 * for keys j ≤ pos0 + t. Blocks (split, head, token) of 4 warps keep an
 * online softmax per warp, merge the warps, and write a partial (max, sum,
 * d_c accumulators); a second kernel combines the splits.
 * o_lat: [T, n_h, d_c] float32; q_lat: [T, n_h, d_c]; q: [T, n_h·(d_n + d_r)]
 * (q^R read from each head's tail); cache: [≥ pos0 + T, d_c + d_r];
 * partial: scratch of T·n_h·n_split·(d_c + 2) floats, n_split = mla_decode_splits(pos0 + T).
 * Limits: d_c ≤ 512, d_r ≤ 64.
 */
cudaError_t mla_decode_v2(float *o_lat, const float *q_lat, const float *q, const void *cache, KernelDType cache_type,
                          MlaDims dims, int pos0, int T, float *partial, cudaStream_t stream);

/**
 * mla_decode_v2 with positions and cache rows from device memory: token t attends to keys
 * j ∈ [0, pos[t]] at cache rows base[t] + j (pos, base: [T] device ints, pos[t] < max_ctx). The
 * grid is sized by max_ctx, not by the positions (blocks past a token's keys return at once), so
 * one launch serves every step of a batched decode and can be captured in a CUDA graph.
 * partial: T·n_h·mla_decode_splits(max_ctx)·(d_c + 2) floats. Limits as mla_decode_v2.
 */
cudaError_t mla_decode_at_v2(float *o_lat, const float *q_lat, const float *q, const void *cache,
                             KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T, int max_ctx,
                             float *partial, cudaStream_t stream);

/** Number of sequence splits mla_decode_v2 uses for ctx cached positions (keys per split: 64). */
int mla_decode_splits(int ctx);

/**
 * Version 3 of the absorbed decode (mla_decode_v2's arguments and result, o^L stored as o_type), in one
 * launch: blocks (split, head group, token) of 16 warps, a group of 16 heads per block, so each cache row
 * is read once per token per group (⌈n_h/16⌉ times instead of n_h) and staged in shared memory for all
 * of the group's scores and o^L. The split count is fixed by the launch (mla_decode_v3_splits) and each
 * token's keys are spread over as many of those splits as its own length needs (at least 64 keys each),
 * read on the device; the block that finishes a token's last split combines them. q^L, the partials and
 * the combine move in float4 when d_c is a multiple of 4 and q_lat and partial are 16-byte aligned.
 * partial: mla_decode_v3_partial_floats(dims, T, pos0 + T) floats (d_c + 2 per (token, head, split),
 * padded to a multiple of 4); counters:
 * mla_decode_v3_counters(n_h, T) ints, zero before the first launch (one cudaMemset), left zero by every
 * launch. Limits as mla_decode_v2.
 */
cudaError_t mla_decode_v3(void *o_lat, KernelDType o_type, const float *q_lat, const float *q, const void *cache,
                          KernelDType cache_type, MlaDims dims, int pos0, int T, float *partial, int *counters,
                          cudaStream_t stream);

/**
 * mla_decode_v3 with positions and cache rows from device memory, as mla_decode_at_v2 (pos[t] < max_ctx).
 * The grid depends on n_h, T and max_ctx only, so the launch can be captured in a CUDA graph.
 * partial: mla_decode_v3_partial_floats(dims, T, max_ctx) floats; counters as mla_decode_v3.
 */
cudaError_t mla_decode_at_v3(void *o_lat, KernelDType o_type, const float *q_lat, const float *q, const void *cache,
                             KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T, int max_ctx,
                             float *partial, int *counters, cudaStream_t stream);

/** Splits (grid columns) mla_decode_v3 launches for T tokens of n_h heads over at most max_ctx keys:
 *  enough blocks for two per SM of a 132-SM H100, no more than max_ctx/128, at most 128. */
int mla_decode_v3_splits(int n_h, int T, int max_ctx);

/** Ints of counters mla_decode_v3 needs for up to max_T tokens of n_h heads: one per (token, head group). */
size_t mla_decode_v3_counters(int n_h, int max_T);

/** Floats of partials mla_decode_at_v3 needs for any T ≤ max_T at max_ctx. */
size_t mla_decode_v3_partial_floats(MlaDims dims, int max_T, int max_ctx);

/* ---- gemv.cu: the decode step's matrix–vector products and what follows them ----------------- */

/**
 * y[t, r] = Σ_c W[r', c] x[t, x_off + c] for T tokens and output rows r < rows, with the weight row
 * r' = (r / group)·w_group_stride + w_row0 + r mod group and x_off = (r / group)·x_group_stride (group =
 * rows, w_row0 = 0 for a plain matrix; per-head blocks of a stacked matrix otherwise). Rows r < split go
 * to y[t·ldy + r], the rest to y2[t·ldy2 + r − split].
 */
typedef struct {
    const void *W;            /**< weights, w_type, rows of cols elements */
    KernelDType w_type;       /**< also the type the activations are rounded to (the cuBLAS operand's) */
    int rows;                 /**< output rows */
    int cols;                 /**< the reduction length */
    int group;                /**< output rows per group */
    int w_row0;               /**< first weight row of group 0 */
    long long w_group_stride; /**< weight rows from one group to the next */
    const void *x;            /**< activations, x_type */
    KernelDType x_type;       /**< float32, or bf16 (a decode output already in the weights' type) */
    int ldx;                  /**< elements between tokens of x */
    long long x_group_stride; /**< elements of x from one group to the next */
    float *y;                 /**< output rows [0, split) */
    float *y2;                /**< output rows [split, rows) (used only when split < rows) */
    int ldy;                  /**< row stride of y */
    int ldy2;                 /**< row stride of y2 */
    int split;                /**< the first row that goes to y2 */
    int T;                    /**< tokens */
} Gemv;

/** What the last block of a gemv_forward_v2 launch does once every row is written. */
typedef enum {
    GEMV_TAIL_NONE = 0,         /**< nothing */
    GEMV_TAIL_LATENT = 1,       /**< y = [c^KV ; k^R_raw] → cache rows; y2 = queries (RoPE) or c^Q (q_norm) */
    GEMV_TAIL_ROPE_Q = 2,       /**< y = queries [T, n_h·(d_n + d_r)]: RoPE of each head's q^R */
    GEMV_TAIL_RESIDUAL_NORM = 3 /**< h += y; a = RMSNorm(h)·norm (y, h, a: [T, rows]) */
} GemvTailKind;

/** The tail's arguments (those of its kind; the rest unused). */
typedef struct {
    GemvTailKind kind;      /**< which tail */
    int *counter;           /**< one device int, zero before the first launch; every launch leaves it zero */
    void *cache;            /**< LATENT: the latent cache [rows, d_c + d_r] of cache_type */
    KernelDType cache_type; /**< its type */
    const float *kv_a_norm; /**< LATENT: [d_c] the latent norm's weight */
    float latent_eps;       /**< LATENT: eps of the latent norms (c^KV, c^Q) */
    MlaDims dims;           /**< LATENT, ROPE_Q: head shapes */
    const float *inv_freq;  /**< LATENT, ROPE_Q: [d_r/2] RoPE frequencies */
    float cos_sin_scale;    /**< their m-scale (YaRN) */
    const int *pos;         /**< LATENT, ROPE_Q: [T] positions */
    const int *base;        /**< LATENT: [T] cache row of position 0 of each token's sequence */
    const float *q_norm;    /**< LATENT: NULL (y2 holds queries, rotated), or [q_width] (y2 holds c^Q, normalised) */
    int q_width;            /**< LATENT: d_c^Q when q_norm */
    float *h;               /**< RESIDUAL_NORM: [T, rows] residual stream (updated) */
    float *a;               /**< RESIDUAL_NORM: [T, rows] the normalised output */
    const float *norm;      /**< RESIDUAL_NORM: [rows] */
    float eps;              /**< RESIDUAL_NORM: epsilon */
} GemvTail;

/** Version 1: thread (t, r) sums one output (any sizes, no tail). */
cudaError_t gemv_forward_v1(Gemv g, cudaStream_t stream);

/** Shared memory gemv_forward_v2 may stage activations in per pass (opted in above the default 48 KB): 16
 *  tokens of 3072 bf16, or 6 of 4096 floats. */
#define GEMV_STAGE_BYTES 98304

/** Whether gemv_forward_v2 takes g: cols · element size ≤ GEMV_STAGE_BYTES (one token's activations staged). */
int gemv_v2_supports(const Gemv *g);

/**
 * Version 2: one warp per row (blocks of 16 warps, up to 32 rows per warp, about 132 blocks), x staged per block once per
 * pass of ≤ 16 tokens, 16-byte weight loads when cols is a multiple of 8 and W is 16-byte aligned; then
 * the tail in the last block. \return cudaErrorInvalidValue when !gemv_v2_supports(&g) or a tail lacks
 * its counter.
 */
cudaError_t gemv_forward_v2(Gemv g, GemvTail e, cudaStream_t stream);

/**
 * The absorbed query q^L_{t,h} = W^UK_hᵀ q^N_{t,h} (W^UK_h: rows h·(d_n + d_v) … + d_n − 1 of kv_b
 * [n_h(d_n + d_v), d_c]). q_lat: [T, n_h, d_c] float32; q: [T, n_h, d_n + d_r]. One warp per 8 columns of
 * a head, its weights read once with 16-byte loads for all T tokens. d_n ≤ 128 and T·d_n floats of q^N
 * within 48 KB of shared memory (T ≤ 96 at d_n 128), else cudaErrorInvalidValue.
 */
cudaError_t mla_absorb_v2(float *q_lat, const float *q, const void *kv_b, KernelDType kv_b_type, MlaDims dims, int T,
                          cudaStream_t stream);

/** Most products gemv_forward_v3 chains in one launch. */
#define GEMV_CHAIN_MAX 3

/** Ints of the counters gemv_forward_v3 needs (kernels/stage.cuh's layout for 2·GEMV_CHAIN_MAX stages). */
#define GEMV_V3_COUNTER_INTS (2 + 2 * GEMV_CHAIN_MAX)

/** The absorption as a stage of gemv_forward_v3: mla_absorb_v2's arguments. */
typedef struct {
    float *q_lat;          /**< [T, n_h, d_c] float32 (NULL: no absorption stage) */
    const float *q;        /**< [T, n_h, d_n + d_r]: the last product's output */
    const void *kv_b;      /**< kv_b_proj [n_h(d_n + d_v), d_c] */
    KernelDType kv_b_type; /**< its type */
    MlaDims dims;          /**< head shapes */
    int T;                 /**< tokens */
} GemvAbsorb;

/**
 * Version 3: the products g[0 .. n − 1] (n ≤ GEMV_CHAIN_MAX) and, when absorb and absorb->q_lat are given,
 * the absorption of absorb->q, in one launch of stages (kernels/stage.cuh): product j may read product
 * j − 1's output or tail (x = an earlier y), the absorption reads the last product's. Each product keeps
 * gemv_forward_v2's row decomposition, loads and tail (e[j]; its counter is not used). counters:
 * GEMV_V3_COUNTER_INTS ints, zero before the first launch, left zero by every launch. \return
 * cudaErrorInvalidValue when a product fails gemv_v2_supports, two tails of one kind name different
 * memory, or the absorption's limits (mla_absorb_v2's, with GEMV_STAGE_BYTES for q^N) are not met.
 */
cudaError_t gemv_forward_v3(const Gemv *g, const GemvTail *e, int n, const GemvAbsorb *absorb, int *counters,
                            cudaStream_t stream);

/* ---- mla_prefill.cu: MLA for prompt chunks, absorbed, online softmax over tiles of cache rows ---------- */

/**
 * Version 1: o^L_{t,h} = Σ_j softmax_j(σ (q^L_{t,h}·ĉ_j + q^R_{t,h}·k^R_j)) ĉ_j over keys j ≤ pos[t] at
 * cache rows base[t] + j, one thread per (t, h), ref/mla.c's loops without a score array.
 * o_lat, q_lat: [T, n_h, d_c] float32; q: [T, n_h, d_n + d_r] (q^R at d_n); cache: rows of d_c + d_r
 * elements of cache_type; pos, base: [T] device ints. Any sizes.
 */
cudaError_t mla_prefill_v1(float *o_lat, const float *q_lat, const float *q, const void *cache, KernelDType cache_type,
                           MlaDims dims, const int *pos, const int *base, int T, cudaStream_t stream);

/**
 * Version 2 of mla_prefill_v1 (same function; o_lat stored as o_type): 16 query rows (a group of up to
 * 16 heads of one or more tokens) per block, the cache streamed through shared memory in tiles of 16
 * rows with an online softmax; memory beyond its output: none. d_c ≤ 512 and d_r ≤ 64
 * (mla_prefill_supported), else cudaErrorInvalidValue.
 */
cudaError_t mla_prefill_v2(void *o_lat, KernelDType o_type, const float *q_lat, const float *q, const void *cache,
                           KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T,
                           cudaStream_t stream);

/** Whether mla_prefill_v2 takes these sizes (d_c ≤ 512, d_r ≤ 64). */
int mla_prefill_supported(MlaDims dims);

/* ---- ep_stats.cu: expert parallelism's routing statistics (paper §2.2.3) ----------------- */

/**
 * One device's routing statistics for the balance losses: count[j] assignments to expert j and
 * score_sum[j] = Σ_t s_{j,t} (float32, t ascending) for j < E; dev_tokens[d] tokens with at least one
 * expert on device d (experts [d·E/N, (d+1)·E/N)) for d < N. idx: [T, K]; scores: [T, E].
 * Any E, N ≥ 1 with N dividing E; one block, one thread per expert or device (striding).
 */
cudaError_t ep_route_stats_v1(int *count, float *score_sum, int *dev_tokens, const int *idx, const float *scores, int T,
                              int K, int E, int N, cudaStream_t stream);

/* ---- ep_plan.cu: expert parallelism without the host (paper §2.2.3, §3.2) ----------------- */

#define EP_MAX_DEVICES 8 /**< devices of one expert-parallel group (FAST_EP_MAX_DEVICES) */

/** The gathered routing of one expert-parallel call and the sizes its plan needs (all known to the host). */
typedef struct {
    int N;                         /**< devices */
    int E;                         /**< routed experts, E/N per device */
    int K;                         /**< experts per token */
    int T_max;                     /**< routing rows gathered per device (the stride of idx_all) */
    int first[EP_MAX_DEVICES + 1]; /**< global token of each device's first token; first[N] tokens in all */
    int budget; /**< assignments one device keeps (drop_tokens' ⌈cf·T·K/N⌉), −1: no dropping */
} EpLayout;

/** Device r's plan, written by ep_plan_v1 (total = first[N], Kl = min(K, E/N), Kd = min(K, N), T_r its tokens). */
typedef struct {
    int *idx_kept;      /**< [total·K] every token's experts in global token order, E where dropped */
    int *slot;          /**< [total·K] expanded row of each assignment kept on r (others untouched) */
    int *expert_off;    /**< [E/N + 1] first expanded row of each local expert */
    int *expand_row;    /**< [total·Kl] global token (its received row) of each expanded row */
    int *part_slot;     /**< [total·Kl] per global token: expanded rows of its slots on r, k ascending, then −1 */
    float *part_weight; /**< [total·Kl] their g_{k,t}, 0 for padding */
    int *send_token;    /**< [N·T_r] dispatch row (q, t): t when t has a kept expert on q, else −1 */
    int *comb_slot;     /**< [T_r·Kd] per own token: returned rows q·T_r + t, q ascending, then −1 */
    float *comb_weight; /**< [T_r·Kd] 1 for a partial, 0 for padding */
} EpDevicePlan;

/**
 * Device r's plan from the gathered routing idx_all, weight_all ([N][T_max][K]): token dropping by
 * drop_tokens' rule when L.budget ≥ 0, the local permutation by expert (offsets on the device), the
 * slots of each token's partial on r, the rows of each own token's returned partials and its dispatch
 * rows. Every device derives the same idx_kept. One block; N ≤ EP_MAX_DEVICES dividing E, else
 * cudaErrorInvalidValue and nothing launched.
 */
cudaError_t ep_plan_v1(EpDevicePlan p, const int *idx_all, const float *weight_all, EpLayout L, int r,
                       cudaStream_t stream);

/** xp[r] = x[row_token[r]] stored as xp_type, zeros where row_token[r] < 0. xp: [rows, D]; x float32. */
cudaError_t ep_gather_v1(void *xp, KernelDType xp_type, const float *x, const int *row_token, int rows, int D,
                         cudaStream_t stream);

/**
 * xe[n] = xr[expand_row[n]] converted from xr_type to xe_type for n < offsets[experts] (read on the
 * device); rows ≥ offsets[experts] bounds the grid.
 */
cudaError_t ep_expand_v1(void *xe, KernelDType xe_type, const void *xr, KernelDType xr_type, const int *expand_row,
                         const int *offsets, int experts, int rows, int D, cudaStream_t stream);

/**
 * moe_combine_v2 with typed rows: y_t = Σ_k weight[t,k] · in[slot[t,k]] over the slots ≥ 0 (−1 pads) in float32
 * (k ascending, in read as in_type), + shared_t when not NULL, stored as y_type. y: [rows, D]; slot, weight:
 * [rows, K].
 */
cudaError_t ep_combine_v1(void *y, KernelDType y_type, const void *in, KernelDType in_type, const int *slot,
                          const float *weight, const float *shared, int rows, int K, int D, cudaStream_t stream);

/* ---- sample.cu: greedy choice on the device ----------------------------------------------- */

/** Version 1: *out = arg max logits[0..n) (lowest index on ties), one thread. */
cudaError_t sample_argmax_v1(int *out, const float *logits, int n, cudaStream_t stream);

/** Version 2: the same with one block of 1024 threads and a (value, index) reduction. Any n ≥ 1. */
cudaError_t sample_argmax_v2(int *out, const float *logits, int n, cudaStream_t stream);

/**
 * For each row b < B of logits [B, n]: tokens[b] = its arg-max (lowest index on ties), pos[b] += 1 — the
 * next decode step's inputs written on the device. One block per row, as version 2.
 */
cudaError_t sample_argmax_advance_v2(int *tokens, int *pos, const float *logits, int B, int n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
