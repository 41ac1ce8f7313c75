/**
 * \file rope.c
 * \brief Decoupled RoPE with YaRN (see rope.h).
 */
#include "rope.h"

#include "error.h"
#include "shared_math.h"

#include <math.h>

// ANCHOR: yarn_mscale
float yarn_mscale(float s, float c)
{
    return s <= 1.0f ? 1.0f : (float)(0.1 * c * log(s) + 1.0);
}
// ANCHOR_END: yarn_mscale

// ANCHOR: correction_dim
/* YaRN's correction dimension: the pair index whose wavelength fits r
 * rotations into the original context L0 (computed in double, as Python does). */
static double correction_dim(double rotations, int dim, double theta, int L0)
{
    return dim * log(L0 / (rotations * 2 * M_PI)) / (2 * log(theta));
}
// ANCHOR_END: correction_dim

// ANCHOR: rope_init
int rope_init(Rope *r, const ModelConfig *cfg)
{
    const int dim = cfg->qk_rope_head_dim;
    if (dim > ROPE_MAX_DIM) return ds_error("qk_rope_head_dim %d exceeds %d", dim, ROPE_MAX_DIM);
    r->dim = dim;
    const float theta = cfg->rope_theta;
    /* the ramp's ends: pairs below `low` keep their frequency, pairs above `high` are divided by s */
    float low = 0, high = 0;
    if (cfg->rope_yarn) {
        low = (float)fmax(floor(correction_dim(cfg->rope_beta_fast, dim, theta, cfg->rope_original_max_position)), 0);
        high = (float)fmin(ceil(correction_dim(cfg->rope_beta_slow, dim, theta, cfg->rope_original_max_position)),
                           dim - 1);
        if (low == high) high += 0.001f;
    }
    for (int i = 0; i < dim / 2; i++) {
        float pos_freq = powf(theta, (float)(2 * i) / (float)dim); /* θ^{2i/d} */
        float extrapolated = 1.0f / pos_freq;                      /* the original θ_i */
        if (!cfg->rope_yarn) {
            r->inv_freq[i] = extrapolated;
            continue;
        }
        float interpolated = 1.0f / (cfg->rope_factor * pos_freq); /* θ_i / s */
        float ramp = fminf(fmaxf(((float)i - low) / (high - low), 0), 1);
        float keep = 1.0f - ramp; /* weight of the original */
        r->inv_freq[i] = interpolated * (1.0f - keep) + extrapolated * keep;
    }
    float sigma = 1.0f / sqrtf((float)config_qk_head_dim(cfg));
    r->cos_sin_scale = 1.0f;
    if (cfg->rope_yarn) {
        r->cos_sin_scale =
            yarn_mscale(cfg->rope_factor, cfg->rope_mscale) / yarn_mscale(cfg->rope_factor, cfg->rope_mscale_all_dim);
        if (cfg->rope_mscale_all_dim != 0) {
            float m = yarn_mscale(cfg->rope_factor, cfg->rope_mscale_all_dim);
            sigma = sigma * m * m; /* σ = d_q^{-1/2} · m² */
        }
    }
    r->softmax_scale = sigma;
    return 0;
}
// ANCHOR_END: rope_init

// ANCHOR: rope_rotate
void rope_rotate(float *x, const Rope *r, int pos)
{
    for (int i = 0; i < r->dim / 2; i++) rope_rotate_pair(x, i, r->inv_freq[i], r->cos_sin_scale, pos);
}
// ANCHOR_END: rope_rotate

// ANCHOR: rope_rotate_backward
void rope_rotate_backward(float *dx, const Rope *r, int pos)
{
    /* the rotation R(φ) is orthogonal up to the factor on cos and sin, so its transpose is
     * R(−φ) with the same factor: dx_in = R(φ)ᵀ dx_out */
    for (int i = 0; i < r->dim / 2; i++) {
        float phi = (float)pos * r->inv_freq[i];
        float c = cosf(phi) * r->cos_sin_scale, s = sinf(phi) * r->cos_sin_scale;
        float d0 = dx[2 * i], d1 = dx[2 * i + 1];
        dx[2 * i] = d0 * c + d1 * s;
        dx[2 * i + 1] = -d0 * s + d1 * c;
    }
}
// ANCHOR_END: rope_rotate_backward
