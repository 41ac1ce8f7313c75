/**
 * \file rope.h
 * \brief Decoupled RoPE with YaRN (paper §2.1.3, §3.1.4; docs/semantics.md §3.5).
 *
 * MLA cannot rotate its compressed keys (a position-dependent rotation
 * between W^UQ and W^UK would block weight absorption), so position enters
 * through separate d_r-wide parts: q^R_{t,h} per head and one k^R_t shared
 * by all heads. Both rotate adjacent pairs (x_{2i}, x_{2i+1}) by the angle
 * t·θ_i, where YaRN blends each frequency between its original value and
 * the value divided by the context-extension factor s.
 *
 * YaRN also changes two magnitudes: cos/sin are multiplied by
 * mscale(s, mscale) / mscale(s, mscale_all_dim) (exactly 1 for every
 * released V2 config), and the attention softmax scale is multiplied by
 * m² = mscale(s, mscale_all_dim)² (1.5896 for V2).
 */
#ifndef DSV2_ROPE_H
#define DSV2_ROPE_H

#include "config.h"

/** Largest d_r supported (pairs are computed into a stack buffer). */
#define ROPE_MAX_DIM 1024

/** RoPE tables derived from the config. */
typedef struct {
    int dim;                          /**< d_r, rotated width (even) */
    float inv_freq[ROPE_MAX_DIM / 2]; /**< θ_i for pair i, after the YaRN blend */
    float cos_sin_scale;              /**< factor on cos and sin (YaRN's mscale ratio) */
    float softmax_scale;              /**< σ = d_q^{-1/2} · m², the attention score scale */
} Rope;

/** yarn_mscale(s, c) = 1 if s ≤ 1, else 0.1·c·ln s + 1 (docs/semantics.md §3.5.3). */
float yarn_mscale(float s, float c);

/**
 * Fills r from cfg: frequencies (with the YaRN ramp when rope_scaling is
 * yarn), the cos/sin factor and the softmax scale.
 * \return 0, or −1 when d_r exceeds ROPE_MAX_DIM.
 */
int rope_init(Rope *r, const ModelConfig *cfg);

/**
 * Rotates x (d_r floats, interleaved pairs) in place for position pos:
 * x'_{2i} = x_{2i} cos φ − x_{2i+1} sin φ, x'_{2i+1} = x_{2i} sin φ + x_{2i+1} cos φ,
 * φ = pos · θ_i, with cos and sin multiplied by r->cos_sin_scale.
 */
void rope_rotate(float *x, const Rope *r, int pos);

/**
 * Backward of rope_rotate(): maps the gradient dx (d_r floats) with respect to the rotated
 * vector to the gradient with respect to the input, in place, by the transposed rotation
 * (angle −φ, same cos/sin factor): dx_{2i} ← dx_{2i} cos φ + dx_{2i+1} sin φ,
 * dx_{2i+1} ← −dx_{2i} sin φ + dx_{2i+1} cos φ.
 */
void rope_rotate_backward(float *dx, const Rope *r, int pos);

#endif
