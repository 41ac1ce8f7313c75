/**
 * \file rmsnorm_tail_load_unguarded.cu
 * \brief Kernel lab example (wrong): RMSNorm that loads four elements before asking whether they exist.
 *
 * One thread per row walks its row four elements at a time and loads all four
 * before the bounds test that decides which of them count. When n is not a
 * multiple of 4 the last row's last step reads up to 3 floats past the end of
 * x; the values are thrown away, so y is right, but the read is outside the
 * allocation (on a GPU, a possible fault or a read of another buffer). An
 * optimising compiler may move those loads behind the test that discards
 * them, which hides the read from AddressSanitizer; the lab compiles the
 * kernel file at -O0 on sim/, so the read happens and is reported against x
 * at the first shape (n = 1).
 *
 *     make check-kernel COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_tail_load_unguarded.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

#include <math.h>

/** Thread t normalises row t; Σ x_i² four elements per step. */
__global__ void rmsnorm_tail_load_kernel(float *y, const float *x, const float *w, int T, int n, float eps)
{
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= T) return;
    const float *xt = x + (size_t)t * n;
    float sum_sq = 0.0f;
    const int padded = (n + 3) / 4 * 4;
    for (int i = 0; i < padded; i++) {
        const float v = xt[i]; /* the bug: the load comes before the bound */
        if (i < n) sum_sq += v * v;
    }
    const float inv_rms = 1.0f / sqrtf(sum_sq / (float)n + eps);
    for (int i = 0; i < n; i++) y[(size_t)t * n + i] = w[i] * (xt[i] * inv_rms);
}

extern "C" cudaError_t lab_rmsnorm(float *y, const float *x, const float *w, int T, int n, float eps,
                                   cudaStream_t stream)
{
    LAUNCH(rmsnorm_tail_load_kernel, dim3((unsigned)(T + 63) / 64), dim3(64), 0, stream, y, x, w, T, n, eps);
    return cudaGetLastError();
}
