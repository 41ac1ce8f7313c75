/**
 * \file rmsnorm.h
 * \brief RMSNorm (docs/semantics.md §3.2): y = w ⊙ x / sqrt(mean(x²) + ε).
 *
 * DeepSeek-V2 normalises before attention and before the FFN of every
 * layer, after the last layer, and inside MLA on the compressed latents
 * c^Q (q_a_layernorm) and c^KV (kv_a_layernorm).
 */
#ifndef DSV2_RMSNORM_H
#define DSV2_RMSNORM_H

/**
 * For each of T rows: y[t] = w ⊙ x[t] · rsqrt(mean_i x[t,i]² + eps).
 * y, x: [T, n] (float32; y may equal x), w: [n].
 * ε sits inside the square root; the weight is not offset by 1.
 */
void rmsnorm_forward(float *y, const float *x, const float *w, int T, int n, float eps);

/**
 * Backward of rmsnorm_forward() for T rows of width n, given the forward input x (the norm is
 * recomputed). With x̂ = x·r, r = (mean x² + ε)^{-1/2} and g = dy ⊙ w:
 *   dx = r (g − x̂ · (1/n) Σ_i g_i x̂_i)   (written, [T, n]);
 *   dw += Σ_t dy_t ⊙ x̂_t                (accumulated, [n]; skipped when dw is NULL).
 * dx must not overlap dy or x.
 */
void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int T, int n, float eps);

#endif
