/**
 * \file mla_softmax_strict_mask.cu
 * \brief Kernel lab example (wrong): a causal softmax whose mask also hides the token's own key.
 *
 * Token t sits at position pos0 + t and must attend to keys j ≤ pos0 + t,
 * its own included. This kernel keeps j < pos0 + t — the mask of a model
 * that predicts from strictly earlier positions — so every row loses its
 * diagonal term and renormalises the rest; the row of the first token of a
 * prompt (pos0 + t = 0) has no key left and comes out all zeros. The lab
 * reports a numerical mismatch at every shape, the worst element on the
 * diagonal j = pos0 + t.
 *
 *     make check-kernel COMPONENT=mla_softmax SRC=kernels/examples/mla_softmax_strict_mask.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

#include <math.h>

/** Block (t, h), one thread walking the row: max, sum, then p over keys j < pos0 + t (the bug: < for ≤). */
__global__ void mla_softmax_strict_kernel(float *p, const float *s, float scale, int T, int ctx, int pos0)
{
    const int t = (int)blockIdx.x, h = (int)blockIdx.y, n_keys = pos0 + t;
    const size_t row = ((size_t)h * T + t) * ctx;
    float max = -INFINITY, sum = 0.0f;
    for (int j = 0; j < n_keys; j++) max = fmaxf(max, scale * s[row + j]);
    for (int j = 0; j < n_keys; j++) sum += expf(scale * s[row + j] - max);
    for (int j = 0; j < ctx; j++) p[row + j] = j < n_keys ? expf(scale * s[row + j] - max) / sum : 0.0f;
}

extern "C" cudaError_t lab_mla_softmax(float *p, const float *s, float scale, int n_h, int T, int ctx, int pos0,
                                       cudaStream_t stream)
{
    LAUNCH(mla_softmax_strict_kernel, dim3((unsigned)T, (unsigned)n_h), dim3(1), 0, stream, p, s, scale, T, ctx, pos0);
    return cudaGetLastError();
}
