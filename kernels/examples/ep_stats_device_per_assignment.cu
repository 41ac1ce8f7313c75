/**
 * \file ep_stats_device_per_assignment.cu
 * \brief Kernel lab example (wrong): routing statistics that count a device once per assignment, not per token.
 *
 * Expert statistics are right: thread e counts the assignments to expert e
 * and sums its affinities. The device statistic is f''_d's count, the tokens
 * sent to device d, and a token whose K experts include several on d is sent
 * there once (one copy of its hidden state crosses the link). This kernel
 * adds one per assignment instead, so dev_tokens[d] becomes the sum of
 * count[e] over d's experts. A token with one expert (tiny, K 1) cannot tell
 * the two apart; every shape with K > 1 can, and the lab reports a discrete
 * mismatch in dev_tokens while count and score_sum agree.
 *
 *     make check-kernel COMPONENT=ep_stats SRC=kernels/examples/ep_stats_device_per_assignment.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

/** Block x = output x: experts e < E, then devices d = x − E; threads stride over the tokens, a tree adds them up. */
__global__ void ep_stats_per_assignment_kernel(int *count, float *score_sum, int *dev_tokens, const int *idx,
                                               const float *scores, int T, int K, int E, int N)
{
    __shared__ int hits[256];
    __shared__ float sums[256];
    const int x = (int)blockIdx.x, per_device = E / N, tid = (int)threadIdx.x;
    int c = 0;
    float s = 0.0f;
    for (int t = tid; t < T; t += (int)blockDim.x)
        for (int k = 0; k < K; k++) {
            const int e = idx[t * K + k];
            if (x < E)
                c += e == x;
            else
                c += e / per_device == x - E; /* the bug: once per assignment, not once per token */
        }
    if (x < E)
        for (int t = tid; t < T; t += (int)blockDim.x) s += scores[(size_t)t * E + x];
    hits[tid] = c;
    sums[tid] = s;
    __syncthreads();
    for (int half = (int)blockDim.x / 2; half > 0; half /= 2) {
        if (tid < half) {
            hits[tid] += hits[tid + half];
            sums[tid] += sums[tid + half];
        }
        __syncthreads();
    }
    if (tid == 0) {
        if (x < E) {
            count[x] = hits[0];
            score_sum[x] = sums[0];
        } else
            dev_tokens[x - E] = hits[0];
    }
}

extern "C" cudaError_t lab_ep_stats(int *count, float *score_sum, int *dev_tokens, const int *idx, const float *scores,
                                    int T, int K, int E, int N, cudaStream_t stream)
{
    LAUNCH(ep_stats_per_assignment_kernel, dim3((unsigned)(E + N)), dim3(256), 0, stream, count, score_sum, dev_tokens,
           idx, scores, T, K, E, N);
    return cudaGetLastError();
}
