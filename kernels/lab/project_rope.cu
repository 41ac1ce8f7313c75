/**
 * \file project_rope.cu
 * \brief The project's own decoupled RoPE (rope_forward_v2) under the lab's contract, to check the harness itself.
 *
 *     make check-kernel COMPONENT=rope SRC=kernels/lab/project_rope.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

extern "C" cudaError_t lab_rope(float *x, const float *inv_freq, float cos_sin_scale, int dim, int T, int heads,
                                int row_stride, int head_stride, int pos0, cudaStream_t stream)
{
    return rope_forward_v2(x, inv_freq, cos_sin_scale, dim, T, heads, row_stride, head_stride, pos0, stream);
}
