/**
 * \file ep_stats.cu
 * \brief Expert parallelism on the device: the routing statistics each device contributes to the balance
 *        losses (paper §2.2.3), before they are summed over devices with ncclAllReduce (fast/ep.c).
 */
#include "common.cuh"

// ANCHOR: ep_route_stats
/**
 * Thread j < E: count[j] = #{(t, k) : idx[t, k] = j} and score_sum[j] = Σ_t scores[t, j] (t ascending);
 * thread E + d (d < N): dev_tokens[d] = #{t : some idx[t, k] lies in [d·E/N, (d+1)·E/N)}.
 */
__global__ void ep_route_stats_kernel(int *count, float *score_sum, int *dev_tokens, const int *idx,
                                      const float *scores, int T, int K, int E, int N)
{
    const int per_device = E / N;
    for (int j = (int)threadIdx.x; j < E + N; j += (int)blockDim.x) {
        if (j < E) { /* expert j: f_i's count, P_i's sum */
            int c = 0;
            float s = 0.0f;
            for (int t = 0; t < T; t++) {
                for (int k = 0; k < K; k++) c += idx[t * K + k] == j;
                s += scores[(size_t)t * E + j];
            }
            count[j] = c;
            score_sum[j] = s;
        } else { /* device d: tokens that reach it (f''_d) */
            const int d = j - E;
            int c = 0;
            for (int t = 0; t < T; t++) {
                bool sent = false;
                for (int k = 0; k < K; k++) sent = sent || idx[t * K + k] / per_device == d;
                c += sent;
            }
            dev_tokens[d] = c;
        }
    }
}
// ANCHOR_END: ep_route_stats

extern "C" cudaError_t ep_route_stats_v1(int *count, float *score_sum, int *dev_tokens, const int *idx,
                                         const float *scores, int T, int K, int E, int N, cudaStream_t stream)
{
    const int n = E + N, threads = n < 1024 ? 32 * ((n + 31) / 32) : 1024;
    LAUNCH(ep_route_stats_kernel, dim3(1), dim3((unsigned)threads), 0, stream, count, score_sum, dev_tokens, idx,
           scores, T, K, E, N);
    return cudaGetLastError();
}
