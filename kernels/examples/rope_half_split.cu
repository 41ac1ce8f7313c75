/**
 * \file rope_half_split.cu
 * \brief Kernel lab example (wrong): RoPE on the pairs (x_i, x_{i+d/2}) of the "rotate half" layout.
 *
 * Many Llama-style codebases store each rotary vector as two halves and
 * rotate x_i with x_{i+d/2}. DeepSeek-V2's checkpoints are converted to the
 * interleaved layout (x_{2i}, x_{2i+1}) instead (docs/semantics.md §3.5.4), so this kernel,
 * correct for the other convention, rotates the wrong partners: the lab
 * reports a numerical mismatch at every shape with d_r > 2 (with a single
 * pair the two layouts coincide).
 *
 *     make check-kernel COMPONENT=rope SRC=kernels/examples/rope_half_split.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

/** Block t, thread (h, i): rotates (x_i, x_{i+dim/2}) of slice (t, h) by (pos0 + t)·inv_freq[i]. */
__global__ void rope_half_split_kernel(float *x, const float *inv_freq, float cos_sin_scale, int dim, int heads,
                                       int row_stride, int head_stride, int pos0)
{
    const int t = (int)blockIdx.x, half = dim / 2;
    for (int p = (int)threadIdx.x; p < heads * half; p += (int)blockDim.x) {
        const int h = p / half, i = p % half;
        float *slice = x + (size_t)t * row_stride + (size_t)h * head_stride;
        const float phi = (float)(pos0 + t) * inv_freq[i];
        const float c = cosf(phi) * cos_sin_scale, s = sinf(phi) * cos_sin_scale;
        const float x0 = slice[i], x1 = slice[i + half];
        slice[i] = x0 * c - x1 * s;
        slice[i + half] = x0 * s + x1 * c;
    }
}

extern "C" cudaError_t lab_rope(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                                int row_stride, int head_stride, int pos0, cudaStream_t stream)
{
    LAUNCH(rope_half_split_kernel, dim3((unsigned)T), dim3(256), 0, stream, x, inv_freq, cos_sin_scale, dim, heads,
           row_stride, head_stride, pos0);
    return cudaGetLastError();
}
