/**
 * \file rmsnorm.c
 * \brief RMSNorm reference (see rmsnorm.h).
 */
#include "rmsnorm.h"

#include "linear.h"

#include <math.h>
#include <stddef.h>

// ANCHOR: rmsnorm_forward
void rmsnorm_forward(float *y, const float *x, const float *w, int T, int n, float eps)
{
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * n;
        float *yt = y + (size_t)t * n;
        float mean_square = dot(xt, xt, n) / (float)n;   /* (1/n) Σ x_i² */
        float inv_rms = 1.0f / sqrtf(mean_square + eps); /* ε inside the root */
        for (int i = 0; i < n; i++) yt[i] = w[i] * (xt[i] * inv_rms);
    }
}
// ANCHOR_END: rmsnorm_forward

// ANCHOR: rmsnorm_backward
void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int T, int n, float eps)
{
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * n, *dyt = dy + (size_t)t * n;
        float *dxt = dx + (size_t)t * n;
        float inv_rms = 1.0f / sqrtf(dot(xt, xt, n) / (float)n + eps); /* r = (mean x² + ε)^{-1/2} */
        float proj = 0;                                                /* (1/n) Σ_i (dy_i w_i) x̂_i */
        for (int i = 0; i < n; i++) proj += dyt[i] * w[i] * xt[i] * inv_rms;
        proj /= (float)n;
        for (int i = 0; i < n; i++) {
            const float x_hat = xt[i] * inv_rms;
            if (dw) dw[i] += dyt[i] * x_hat;                   /* ∂y_i/∂w_i = x̂_i */
            dxt[i] = inv_rms * (dyt[i] * w[i] - x_hat * proj); /* r (g − x̂ ⟨g, x̂⟩/n) */
        }
    }
}
// ANCHOR_END: rmsnorm_backward
