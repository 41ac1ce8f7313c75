/**
 * \file contract.h
 * \brief The kernel lab's contracts: the launcher a kernel file must define for each component.
 *
 * A kernel file for the lab includes two headers, `dsv2_launch.h` and this
 * one, and defines one of the launchers below.
 * `make check-kernel COMPONENT=NAME SRC=FILE.cu` links it into that
 * component's harness, which calls it over a suite of shapes on random inputs from a fixed set of
 * seeds and compares with the C reference in ref/. kernels/contracts.md states each contract in
 * full (layouts, sizes, assumptions, tolerance and why); the comments here
 * are the summary.
 *
 * Every signature is the one of the project's own launcher in kernels.h, so
 * `kernels/lab/project_NAME.cu` satisfies the contract by forwarding to it.
 * Common rules: every pointer is device memory allocated by the harness with
 * cudaMalloc (256-byte aligned, exactly the documented size, so a read or
 * write past the end is caught by AddressSanitizer in the lab build); every
 * output is filled with NaN before the call; the launcher queues its work on
 * `stream` through LAUNCH and returns cudaGetLastError(); it may not
 * synchronise, allocate, or keep state between calls.
 */
#ifndef DSV2_KERNELS_LAB_CONTRACT_H
#define DSV2_KERNELS_LAB_CONTRACT_H

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Component `rmsnorm` (RMSNorm, docs/semantics.md §3.2): y[t] = w ⊙ x[t] / sqrt(mean_i x[t,i]² + eps), eps
 * inside the root. y, x: [T, n] float32 (distinct buffers); w: [n] float32. Any T ≥ 1, n ≥ 1
 * (odd n, n up to 5120), any eps > 0. Relative L2 ≤ 1e-5 per shape.
 * The project's kernel: rmsnorm_forward_v2.
 */
// ANCHOR: lab_rmsnorm
cudaError_t lab_rmsnorm(float *y, const float *x, const float *w, int T, int n, float eps, cudaStream_t stream);
// ANCHOR_END: lab_rmsnorm

/**
 * Component `rope` (decoupled RoPE, docs/semantics.md §3.5.4): rotates in place the d_r-wide
 * slice at x + t·row_stride + h·head_stride of every (token t, head h) by
 * φ = (pos0 + t)·inv_freq[i] on interleaved pairs, cos and sin scaled by
 * cos_sin_scale. inv_freq: [dim/2] float32. dim even ≤ 1024; T, heads ≥ 1;
 * elements outside the slices must stay untouched. Max-abs ≤ 1e-5·(1 + |x|).
 * The project's kernel: rope_forward_v2.
 */
cudaError_t lab_rope(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads, int row_stride,
                     int head_stride, int pos0, cudaStream_t stream);

/**
 * Component `mla_softmax` (MLA expanded form, the causal softmax after the
 * score GEMM): p[h, t, j] = softmax_j(scale·s[h, t, j]) over keys j ≤ pos0 + t,
 * 0 beyond. p, s: [n_h, T, ctx] float32 (distinct buffers); ctx ≥ pos0 + T.
 * Relative L2 ≤ 1e-5 and exact zeros beyond the causal limit.
 * The project's kernel: mla_causal_softmax_v2.
 */
cudaError_t lab_mla_softmax(float *p, const float *s, float scale, int n_h, int T, int ctx, int pos0,
                            cudaStream_t stream);

/** Fewest keys per split a split-sequence decode may use: the `partial` scratch is sized for it. */
#define LAB_MLA_DECODE_MIN_KEYS_PER_SPLIT 32

/**
 * Floats of the `partial` scratch lab_mla_decode() receives for ctx = pos0 + T
 * cached positions: T·n_h·⌈ctx / LAB_MLA_DECODE_MIN_KEYS_PER_SPLIT⌉·(d_c + 2), room for
 * one (max, sum, d_c accumulators) record per split of at least 32 keys.
 */
static inline size_t lab_mla_decode_partial_floats(MlaDims dims, int ctx, int T)
{
    const size_t splits = (size_t)(ctx + LAB_MLA_DECODE_MIN_KEYS_PER_SPLIT - 1) / LAB_MLA_DECODE_MIN_KEYS_PER_SPLIT;
    return (size_t)T * (size_t)dims.n_h * splits * (size_t)(dims.d_c + 2);
}

/**
 * Component `mla_decode` (MLA absorbed decode over the latent cache, paper §2.1.2, docs/semantics.md §5):
 * o^L_{t,h} = Σ_j softmax_j(σ(q^L_{t,h}·ĉ_j + q^R_{t,h}·k^R_j)) ĉ_j over keys j ≤ pos0 + t,
 * σ = dims.scale. o_lat, q_lat: [T, n_h, d_c] float32; q: [T, n_h·(d_n + d_r)]
 * float32, q^R the last d_r of each head; cache: [pos0 + T, d_c + d_r] of
 * cache_type, row j = [ĉ_j ; k^R_j]; partial: lab_mla_decode_partial_floats()
 * floats of scratch. dims.d_v is not used. Limits: d_c ≤ 512, d_r ≤ 64, d_r even.
 * Relative L2 ≤ 1e-5 per shape (float32 and bf16 caches alike: the
 * reference reads the same bf16 values).
 * The project's kernel: mla_decode_v2.
 */
// ANCHOR: lab_mla_decode
cudaError_t lab_mla_decode(float *o_lat, const float *q_lat, const float *q, const void *cache, KernelDType cache_type,
                           MlaDims dims, int pos0, int T, float *partial, cudaStream_t stream);
// ANCHOR_END: lab_mla_decode

/**
 * Component `router` (the MoE gate, docs/semantics.md §3.6.3): affinities, top-K selection
 * and weights exactly as ref/router.h's router_scores + router_select
 * (renormalised weights are scaled by routed_scaling_factor only under noaux_tc).
 * idx: [T, K] int; weight: [T, K] float32; scores: [T, E]; logits: [T, E]
 * (distinct from scores here); bias: [E] for noaux_tc, else NULL.
 * Limits: E ≤ 1024, K ≤ 32, n_group ≤ 32. Each token's expert ids must be
 * the reference's set unless its selection margin is below 1e-6 (an exact
 * tie of equal logits is decided by the lower index); scores relative
 * L2 ≤ 1e-5, weights (by expert id) ≤ 1e-6.
 * The project's kernel: router_forward_v2.
 */
cudaError_t lab_router(int *idx, float *weight, float *scores, const float *logits, const float *bias, RouterParams p,
                       int T, cudaStream_t stream);

/**
 * Component `moe_permute` (token permutation by expert, docs/semantics.md §3.6.4): counts[e]
 * (T, k) pairs choose expert e; offsets[e] = Σ_{e' < e} counts[e'] (E + 1
 * entries); the pairs of expert e occupy permuted rows [offsets[e],
 * offsets[e + 1]) in token order; slot_row[t·K + k] is the row of pair (t, k),
 * row_token[r] the token of row r. idx: [T, K] ids in [0, E), distinct per
 * token. Limits: E ≤ 1024. Every output must equal the reference exactly.
 * The project's kernel: moe_permute_v2.
 */
cudaError_t lab_moe_permute(int *counts, int *offsets, int *slot_row, int *row_token, const int *idx, int T, int K,
                            int E, cudaStream_t stream);

/**
 * Component `moe_ffn` (the routed + shared SwiGLU experts after routing, docs/semantics.md §3.6.2):
 * y_t = Σ_k weight[t,k]·FFN_{idx[t,k]}(x_t) + FFN_shared(x_t), FFN(x) = W_down(silu(W_gate x) ⊙ W_up x).
 * y, x: [T, D] float32; idx, weight: [T, K]; gate_up: [E, 2·I, D] of w_type
 * (W_gate rows then W_up rows); down: [E, D, I]; shared_gate_up: [2·I_s, D],
 * shared_down: [D, I_s], or NULL when I_s = 0; hidden: T·(K·I + I_s) floats of
 * scratch. Relative L2 ≤ 1e-5 (float32 weights).
 * The project's kernel: moe_forward_v1.
 */
cudaError_t lab_moe_ffn(float *y, const float *x, const int *idx, const float *weight, const void *gate_up,
                        const void *down, const void *shared_gate_up, const void *shared_down, KernelDType w_type,
                        int T, int D, int I, int K, int I_s, float *hidden, cudaStream_t stream);

/**
 * Component `ep_stats` (expert parallelism's routing statistics for the balance
 * losses, paper §2.2.3): count[e] = #{(t, k) : idx[t, k] = e} and score_sum[e]
 * = Σ_t scores[t, e] for e < E; dev_tokens[d] = #{t : some idx[t, k] lies in
 * [d·E/N, (d+1)·E/N)} for d < N (a token counts once per device it reaches).
 * count: [E] int; score_sum: [E] float32; dev_tokens: [N] int; idx: [T, K]
 * ids in [0, E), distinct per token; scores: [T, E] float32. N divides E;
 * E ≤ 1024. count and dev_tokens exact; score_sum |got − ref| ≤ 1e-5·|ref|
 * per expert. The project's kernel: ep_route_stats_v1.
 */
cudaError_t lab_ep_stats(int *count, float *score_sum, int *dev_tokens, const int *idx, const float *scores, int T,
                         int K, int E, int N, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
