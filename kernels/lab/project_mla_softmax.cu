/**
 * \file project_mla_softmax.cu
 * \brief The project's own causal softmax (mla_causal_softmax_v2) under the lab's contract, to check the harness itself.
 *
 *     make check-kernel COMPONENT=mla_softmax SRC=kernels/lab/project_mla_softmax.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

extern "C" cudaError_t lab_mla_softmax(float *p, const float *s, float scale, int n_h, int T, int ctx, int pos0,
                                       cudaStream_t stream)
{
    return mla_causal_softmax_v2(p, s, scale, n_h, T, ctx, pos0, stream);
}
