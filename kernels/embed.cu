/**
 * \file embed.cu
 * \brief Embedding rows (docs/semantics.md §3.1) and float32 → bfloat16 conversion of GEMM operands.
 */
#include "common.cuh"

// ANCHOR: embed_v2
/** Block t copies row tokens[t] of the table into h[t], widened to float32. */
__global__ void embed_v2_kernel(float *h, const int *tokens, const void *table, KernelDType table_type, int D)
{
    const int t = (int)blockIdx.x;
    const size_t row = (size_t)tokens[t] * D;
    for (int i = (int)threadIdx.x; i < D; i += (int)blockDim.x)
        h[(size_t)t * D + i] = load_elem(table, table_type, row + i);
}
// ANCHOR_END: embed_v2

extern "C" cudaError_t embed_forward_v2(float *h, const int *tokens, const void *table, KernelDType table_type, int T,
                                        int D, cudaStream_t stream)
{
    LAUNCH(embed_v2_kernel, dim3((unsigned)T), dim3(256), 0, stream, h, tokens, table, table_type, D);
    return cudaGetLastError();
}

/** dst[i] = src[i] as dst_type, grid-stride. */
__global__ void convert_v2_kernel(void *dst, KernelDType dst_type, const float *src, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        store_elem(dst, dst_type, i, src[i]);
}

extern "C" cudaError_t convert_forward_v2(void *dst, KernelDType dst_type, const float *src, size_t n,
                                          cudaStream_t stream)
{
    const unsigned int blocks = blocks_for(n, 256) < 4096 ? blocks_for(n, 256) : 4096;
    LAUNCH(convert_v2_kernel, dim3(blocks), dim3(256), 0, stream, dst, dst_type, src, n);
    return cudaGetLastError();
}
