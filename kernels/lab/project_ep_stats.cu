/**
 * \file project_ep_stats.cu
 * \brief The project's own routing statistics (ep_route_stats_v1) under the lab's contract, to check the harness itself.
 *
 *     make check-kernel COMPONENT=ep_stats SRC=kernels/lab/project_ep_stats.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

extern "C" cudaError_t lab_ep_stats(int *count, float *score_sum, int *dev_tokens, const int *idx, const float *scores,
                                    int T, int K, int E, int N, cudaStream_t stream)
{
    return ep_route_stats_v1(count, score_sum, dev_tokens, idx, scores, T, K, E, N, stream);
}
