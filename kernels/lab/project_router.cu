/**
 * \file project_router.cu
 * \brief The project's own router (router_forward_v2) under the lab's contract, to check the harness itself.
 *
 *     make check-kernel COMPONENT=router SRC=kernels/lab/project_router.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

extern "C" cudaError_t lab_router(int *idx, float *weight, float *scores, const float *logits, const float *bias,
                                  RouterParams p, int T, cudaStream_t stream)
{
    return router_forward_v2(idx, weight, scores, logits, bias, p, T, stream);
}
