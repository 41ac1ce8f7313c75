/**
 * \file project_moe_ffn.cu
 * \brief The project's own expert FFN after routing (moe_forward_v1) under the lab's contract, to check the harness itself.
 *
 *     make check-kernel COMPONENT=moe_ffn SRC=kernels/lab/project_moe_ffn.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

extern "C" cudaError_t lab_moe_ffn(float *y, const float *x, const int *idx, const float *weight, const void *gate_up,
                                   const void *down, const void *shared_gate_up, const void *shared_down,
                                   KernelDType w_type, int T, int D, int I, int K, int I_s, float *hidden,
                                   cudaStream_t stream)
{
    return moe_forward_v1(y, x, idx, weight, gate_up, down, shared_gate_up, shared_down, w_type, T, D, I, K, I_s,
                          hidden, stream);
}
