/**
 * \file shared_math.h
 * \brief Small pieces of math that the reference (ref/) and the version-1 kernels (kernels/) both call,
 *        so that the two sides compute them with the same lines.
 *
 * Each function is `static inline` and marked DS_HOST_DEVICE, which is `__host__ __device__` under nvcc
 * (the kernels call them from device code) and nothing otherwise: plain C11 for ref/, and C++ for the
 * kernels compiled against the simulated device, where device code is host code.
 */
#ifndef DSV2_SHARED_MATH_H
#define DSV2_SHARED_MATH_H

#include <math.h>

#if defined(__CUDACC__)
#define DS_HOST_DEVICE __host__ __device__ /**< callable from the kernels and from the host */
#else
#define DS_HOST_DEVICE /**< plain C or the simulated device: nothing to mark */
#endif

// ANCHOR: rope_rotate_pair
/** RoPE on one interleaved pair: (x_{2i}, x_{2i+1}) rotated by φ = pos · θ_i, with θ_i = inv_freq and
 *  cos and sin both scaled by YaRN's cos_sin_scale. */
static inline DS_HOST_DEVICE void rope_rotate_pair(float *x, int i, float inv_freq, float cos_sin_scale, int pos)
{
    float phi = (float)pos * inv_freq;
    float c = cosf(phi) * cos_sin_scale, s = sinf(phi) * cos_sin_scale;
    float x0 = x[2 * i], x1 = x[2 * i + 1];
    x[2 * i] = x0 * c - x1 * s;
    x[2 * i + 1] = x0 * s + x1 * c;
}
// ANCHOR_END: rope_rotate_pair

// ANCHOR: router_group_score
/** The score of one expert group x[0..n) for group-limited routing: its best affinity (V2's
 *  group_limited_greedy) or, with best_two, the sum of its best two (V3's noaux_tc). */
static inline DS_HOST_DEVICE float router_group_score(const float *x, int n, int best_two)
{
    float best = x[0], second = -INFINITY;
    for (int i = 1; i < n; i++) {
        if (x[i] > best) {
            second = best;
            best = x[i];
        } else if (x[i] > second)
            second = x[i];
    }
    return best_two ? best + second : best;
}
// ANCHOR_END: router_group_score

#endif
