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
        float mean_square = dot(xt, xt, n) / (float)n;     /* (1/n) Σ x_i² */
        float inv_rms = 1.0f / sqrtf(mean_square + eps);    /* ε inside the root */
        for (int i = 0; i < n; i++) yt[i] = w[i] * (xt[i] * inv_rms);
    }
}
// ANCHOR_END: rmsnorm_forward
