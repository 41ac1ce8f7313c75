/**
 * \file project_moe_permute.cu
 * \brief The project's own token permutation (moe_permute_v2) under the lab's contract, to check the harness itself.
 *
 *     make check-kernel COMPONENT=moe_permute SRC=kernels/lab/project_moe_permute.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

extern "C" cudaError_t lab_moe_permute(int *counts, int *offsets, int *slot_row, int *row_token, const int *idx, int T,
                                       int K, int E, cudaStream_t stream)
{
    return moe_permute_v2(counts, offsets, slot_row, row_token, idx, T, K, E, stream);
}
