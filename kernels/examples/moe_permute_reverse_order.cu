/**
 * \file moe_permute_reverse_order.cu
 * \brief Kernel lab example (wrong): a token permutation that fills each expert's rows from the end.
 *
 * Counts and offsets are right, and every (token, slot) pair lands in its
 * expert's range, so a combine through slot_row would even give the right
 * y; but the contract fixes the rows of an expert in token order (the order
 * expert parallelism exchanges them in, ref/ep.c's plan), and this kernel
 * writes them last token first. The lab reports a discrete mismatch in
 * slot_row at every shape where some expert receives two tokens.
 *
 *     make check-kernel COMPONENT=moe_permute SRC=kernels/examples/moe_permute_reverse_order.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

/** Thread e counts expert e's pairs; after the scan it writes them from the end of its range backwards. */
__global__ void moe_permute_reverse_kernel(int *counts, int *offsets, int *slot_row, int *row_token, const int *idx,
                                           int T, int K, int E)
{
    const int n = T * K;
    for (int e = (int)threadIdx.x; e < E; e += (int)blockDim.x) {
        int c = 0;
        for (int r = 0; r < n; r++) c += idx[r] == e;
        counts[e] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        offsets[0] = 0;
        for (int e = 0; e < E; e++) offsets[e + 1] = offsets[e] + counts[e];
    }
    __syncthreads();
    for (int e = (int)threadIdx.x; e < E; e += (int)blockDim.x) {
        int next = offsets[e + 1] - 1;
        for (int r = 0; r < n; r++)
            if (idx[r] == e) {
                slot_row[r] = next;
                row_token[next] = r / K;
                next--;
            }
    }
}

extern "C" cudaError_t lab_moe_permute(int *counts, int *offsets, int *slot_row, int *row_token, const int *idx, int T,
                                       int K, int E, cudaStream_t stream)
{
    LAUNCH(moe_permute_reverse_kernel, dim3(1), dim3(256), 0, stream, counts, offsets, slot_row, row_token, idx, T, K,
           E);
    return cudaGetLastError();
}
