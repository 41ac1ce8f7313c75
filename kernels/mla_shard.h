/**
 * \file mla_shard.h
 * \brief Launchers of kernels/mla_shard.cu: the absorbed attention of the sharded layout, where the latent
 *        cache is split by position over D devices (position p on device p mod D, at row p / D there).
 *
 * Every device attends every head over its own rows and leaves a partial per (token, head): the unnormalised
 * o^L = Σ_j e^{s_j − m} ĉ_j, the sum l = Σ_j e^{s_j − m} and the running max m over its rows only. The
 * devices agree on m with an all-reduce MAX, rescale by e^{m_local − m}, and a reduce-scatter SUM by heads
 * gives each device its heads' totals, which mla_shard_normalise_v1 divides out (fast/shard_model.c).
 * Version 1, one thread per (token, head), mirrors ref/mla.c's absorbed loop; version 2, one block per
 * (token, head) with an online softmax, is the one fast/ runs (FAST_SHARD_PARTIAL in fast_shard.h).
 */
#ifndef DSV2_KERNELS_MLA_SHARD_H
#define DSV2_KERNELS_MLA_SHARD_H

#include "kernels.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Where the sharded cache's rows of a step live. */
typedef struct {
    int devices; /**< D */
    int rank;    /**< this device */
    int hl;      /**< heads per device (n_h / D) */
} MlaShard;

/**
 * Stores token t's cache row lat[t] = [ĉ_t; k^R_t] at row base[t] + pos[t] / D of cache, only on the device
 * that owns position pos[t] (pos[t] mod D = rank). lat, cache: rows of d_c + d_r elements of cache_type.
 */
cudaError_t mla_shard_store_v1(void *cache, const void *lat, KernelDType cache_type, int width, const int *pos,
                               const int *base, int T, MlaShard sh, cudaStream_t stream);

/** Copies each local head's rotated q^R (q: [T, hl, d_n + d_r]) behind its q^L in qp: [T, hl, d_c + d_r]. */
cudaError_t mla_shard_pack_v1(float *qp, const float *q, MlaDims dims, int T, int hl, cudaStream_t stream);

/**
 * The partial absorbed attention of every head over this device's rows. q_all: [D][T][hl][d_c + d_r], the
 * absorbed queries [q^L; q^R] of head h = r·hl + j at block r, row (t, j). Token t attends positions
 * p ≤ pos[t] with p mod D = rank, at cache rows base[t] + p / D. Writes, for h = r·hl + j:
 * part[((r·T + t)·hl + j)·(d_c + 1) + c] = Σ_p e^{s_p − m} ĉ_p[c] (c < d_c) and l at c = d_c;
 * m_loc[t·n_h + h] = max_p s_p (−∞ and zeros when the device owns none), s_p = σ(q^L·ĉ_p + q^R·k^R_p).
 */
cudaError_t mla_shard_partial_v1(float *part, float *m_loc, const float *q_all, const void *cache,
                                 KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T,
                                 MlaShard sh, cudaStream_t stream);

/**
 * Version 2 of mla_shard_partial_v1 (same arguments and result up to rounding): one block of 128 threads per
 * (token, head), one pass of the online softmax over the device's rows. Limits: d_c ≤ 512, d_r ≤ 128
 * (cudaErrorInvalidValue, nothing launched, beyond them).
 */
cudaError_t mla_shard_partial_v2(float *part, float *m_loc, const float *q_all, const void *cache,
                                 KernelDType cache_type, MlaDims dims, const int *pos, const int *base, int T,
                                 MlaShard sh, cudaStream_t stream);

/** part (layout as mla_shard_partial_v1) scaled by e^{m_loc − m_all} per (token, head); 0 where m_loc = −∞. */
cudaError_t mla_shard_rescale_v1(float *part, const float *m_loc, const float *m_all, int n_h, int d_c, int T,
                                 MlaShard sh, cudaStream_t stream);

/** ol[t, j, c] = ol_sum[t, j, c] / ol_sum[t, j, d_c] (o^L over l) for T tokens of hl heads, stored as ol_type. */
cudaError_t mla_shard_normalise_v1(void *ol, KernelDType ol_type, const float *ol_sum, int d_c, int T, int hl,
                                   cudaStream_t stream);

/**
 * The bf16 wire's sum (fast/shard_model.c): out[i] = Σ_{q=0}^{D−1} x_q[i] in float32, in the order q = 0, 1, …,
 * where x_q = slab + q·n for q ≠ rank and x_rank = own, each element widened from bf16; out is float32 or bf16
 * (out_type). With D = 1 it widens own.
 */
cudaError_t shard_wire_sum_v1(void *out, KernelDType out_type, const uint16_t *slab, const uint16_t *own, int rank,
                              int D, size_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
