/**
 * \file kernels.cu
 * \brief Kernels with known answers that exercise the simulated device (and compile with nvcc).
 */
#include "dsv2_launch.h"
#include "sim_test_kernels.h"

#define FULL_MASK 0xffffffffu

/** Block sum: shuffle within warps, warp sums through shared memory, a last shuffle in warp 0. */
__global__ void block_sum(const float *x, int n, float *out)
{
    __shared__ float warp_sums[32];
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    float v = i < n ? x[i] : 0.0f;
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(FULL_MASK, v, off);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)blockDim.x / 32 ? warp_sums[lane] : 0.0f;
        for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(FULL_MASK, v, off);
        if (lane == 0) out[blockIdx.x] = v;
    }
}

extern "C" cudaError_t launch_block_sum(const float *x, int n, float *out, int threads, cudaStream_t stream)
{
    LAUNCH(block_sum, dim3((unsigned)((n + threads - 1) / threads)), dim3((unsigned)threads), 0, stream, x, n, out);
    return cudaGetLastError();
}

/** Hillis–Steele inclusive scan, double-buffered in dynamic shared memory (2 · blockDim ints). */
__global__ void block_scan(const int *x, int *y, int n)
{
    DYNAMIC_SHARED(int, buf);
    int t = (int)threadIdx.x, nt = (int)blockDim.x;
    int out = 0;
    buf[t] = t < n ? x[t] : 0;
    __syncthreads();
    for (int off = 1; off < nt; off *= 2) {
        int in = out;
        out = 1 - out;
        int v = buf[in * nt + t];
        if (t >= off) v += buf[in * nt + t - off];
        buf[out * nt + t] = v;
        __syncthreads();
    }
    if (t < n) y[t] = buf[out * nt + t];
}

extern "C" cudaError_t launch_block_scan(const int *x, int *y, int n, int threads, cudaStream_t stream)
{
    LAUNCH(block_scan, dim3(1), dim3((unsigned)threads), 2 * (size_t)threads * sizeof(int), stream, x, y, n);
    return cudaGetLastError();
}

#define TILE      32
#define TILE_ROWS 8

/** Transpose through a shared tile padded to 33 columns (no bank conflicts on a GPU). */
__global__ void transpose_tiled(const float *in, float *out, int rows, int cols)
{
    __shared__ float tile[TILE][TILE + 1];
    int x = (int)(blockIdx.x * TILE + threadIdx.x);
    int y = (int)(blockIdx.y * TILE + threadIdx.y);
    for (int j = 0; j < TILE; j += TILE_ROWS)
        if (x < cols && y + j < rows) tile[threadIdx.y + j][threadIdx.x] = in[(size_t)(y + j) * cols + x];
    __syncthreads();
    x = (int)(blockIdx.y * TILE + threadIdx.x);
    y = (int)(blockIdx.x * TILE + threadIdx.y);
    for (int j = 0; j < TILE; j += TILE_ROWS)
        if (x < rows && y + j < cols) out[(size_t)(y + j) * rows + x] = tile[threadIdx.x][threadIdx.y + j];
}

extern "C" cudaError_t launch_transpose(const float *in, float *out, int rows, int cols, cudaStream_t stream)
{
    dim3 grid((unsigned)((cols + TILE - 1) / TILE), (unsigned)((rows + TILE - 1) / TILE));
    LAUNCH(transpose_tiled, grid, dim3(TILE, TILE_ROWS), 0, stream, in, out, rows, cols);
    return cudaGetLastError();
}

/** ids[g] = g for the global linear index g; dims[g] packs blockDim and gridDim. */
__global__ void coords(unsigned int *ids, unsigned int *dims)
{
    unsigned int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned int g = b * blockDim.x * blockDim.y * blockDim.z + t;
    ids[g] = g;
    dims[g] = blockDim.x | blockDim.y << 5 | blockDim.z << 10 | gridDim.x << 15 | gridDim.y << 20 | gridDim.z << 25;
}

extern "C" cudaError_t launch_coords(unsigned int *ids, unsigned int *dims, dim3 grid, dim3 block, cudaStream_t stream)
{
    LAUNCH(coords, grid, block, 0, stream, ids, dims);
    return cudaGetLastError();
}

/** The four shuffles on v = threadIdx.x. */
__global__ void shuffles(int *out, int width, int xor_mask)
{
    int t = (int)threadIdx.x, lane = t % 32;
    out[4 * t + 0] = __shfl_sync(FULL_MASK, t, lane + 5, width);
    out[4 * t + 1] = __shfl_up_sync(FULL_MASK, t, 3, width);
    out[4 * t + 2] = __shfl_down_sync(FULL_MASK, t, 3, width);
    out[4 * t + 3] = __shfl_xor_sync(FULL_MASK, t, xor_mask, width);
}

extern "C" cudaError_t launch_shuffles(int *out, int threads, int width, int xor_mask, cudaStream_t stream)
{
    LAUNCH(shuffles, dim3(1), dim3((unsigned)threads), 0, stream, out, width, xor_mask);
    return cudaGetLastError();
}

/** Ballot and the any/all votes. */
__global__ void votes(unsigned int *out)
{
    int t = (int)threadIdx.x;
    out[4 * t + 0] = __ballot_sync(FULL_MASK, t % 3 == 0);
    out[4 * t + 1] = (unsigned int)__any_sync(FULL_MASK, t == 37);
    out[4 * t + 2] = (unsigned int)__all_sync(FULL_MASK, t < (int)blockDim.x);
    out[4 * t + 3] = (unsigned int)__all_sync(FULL_MASK, t % 3 == 0);
}

extern "C" cudaError_t launch_votes(unsigned int *out, int threads, cudaStream_t stream)
{
    LAUNCH(votes, dim3(1), dim3((unsigned)threads), 0, stream, out);
    return cudaGetLastError();
}

/** The predicate-combining barriers, and __syncwarp. */
__global__ void barrier_variants(int *out)
{
    int t = (int)threadIdx.x;
    out[4 * t + 0] = __syncthreads_count(t % 7 == 0);
    out[4 * t + 1] = __syncthreads_and(1);
    __syncwarp();
    out[4 * t + 2] = __syncthreads_or(t == 57);
    out[4 * t + 3] = __syncthreads_or(0);
}

extern "C" cudaError_t launch_barrier_variants(int *out, int threads, cudaStream_t stream)
{
    LAUNCH(barrier_variants, dim3(1), dim3((unsigned)threads), 0, stream, out);
    return cudaGetLastError();
}

/** Histogram, float sum, maximum and a compare-and-swap election. */
__global__ void atomics(const int *x, int n, int *hist, float *fsum, int *imax, int *flag, int *winners)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) {
        atomicAdd(&hist[x[i] % 16], 1);
        atomicAdd(fsum, 1.0f);
        atomicMax(imax, x[i]);
        if (atomicCAS(flag, 0, i + 1) == 0) atomicAdd(winners, 1);
    }
}

extern "C" cudaError_t launch_atomics(const int *x, int n, int *hist, float *fsum, int *imax, int *flag, int *winners,
                                      cudaStream_t stream)
{
    LAUNCH(atomics, dim3((unsigned)((n + 127) / 128)), dim3(128), 0, stream, x, n, hist, fsum, imax, flag, winners);
    return cudaGetLastError();
}

/** Writes i to every float of the dynamic shared memory, then thread 0 sums it. */
__global__ void dynamic_smem(float *out, int nfloats)
{
    DYNAMIC_SHARED(float, smem);
    for (int i = (int)threadIdx.x; i < nfloats; i += (int)blockDim.x) smem[i] = (float)i;
    __syncthreads();
    if (threadIdx.x == 0) {
        double sum = 0.0;
        for (int i = 0; i < nfloats; i++) sum += smem[i];
        out[0] = (float)sum;
    }
}

extern "C" cudaError_t launch_dynamic_smem(float *out, size_t smem_bytes, cudaStream_t stream)
{
    LAUNCH(dynamic_smem, dim3(1), dim3(128), smem_bytes, stream, out, (int)(smem_bytes / sizeof(float)));
    return cudaGetLastError();
}

extern "C" cudaError_t set_dynamic_smem_limit(int bytes)
{
    return cudaFuncSetAttribute(dynamic_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

/** Round-trips floats through bfloat16, and moves a bfloat16 pair through a shuffle. */
__global__ void bf16_convert(const float *in, unsigned short *bits, float *back, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    float v = i < n ? in[i] : 0.0f;
    __nv_bfloat16 h = __float2bfloat16(v);
    __nv_bfloat162 pair = __halves2bfloat162(h, h);
    pair = __shfl_xor_sync(FULL_MASK, pair, 1);
    pair = __shfl_xor_sync(FULL_MASK, pair, 1);
    if (i < n) {
        bits[i] = __bfloat16_as_ushort(__low2bfloat16(pair));
        back[i] = __bfloat162float(h);
    }
}

extern "C" cudaError_t launch_bf16(const float *in, unsigned short *bits, float *back, int n, cudaStream_t stream)
{
    LAUNCH(bf16_convert, dim3((unsigned)((n + 63) / 64)), dim3(64), 0, stream, in, bits, back, n);
    return cudaGetLastError();
}

/** x *= a. */
__global__ void scale(float *x, int n, float a)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) x[i] *= a;
}

extern "C" cudaError_t launch_scale(float *x, int n, float a, cudaStream_t stream)
{
    LAUNCH(scale, dim3((unsigned)((n + 255) / 256)), dim3(256), 0, stream, x, n, a);
    return cudaGetLastError();
}

/** Nothing at all. */
__global__ void empty(void) {}

extern "C" cudaError_t launch_empty(dim3 grid, dim3 block, size_t smem, cudaStream_t stream)
{
    LAUNCH(empty, grid, block, smem, stream);
    return cudaGetLastError();
}

/** iterations barriers in a row. */
__global__ void barriers(int iterations)
{
    for (int i = 0; i < iterations; i++) __syncthreads();
}

extern "C" cudaError_t launch_barriers(int iterations, cudaStream_t stream)
{
    LAUNCH(barriers, dim3(1), dim3(256), 0, stream, iterations);
    return cudaGetLastError();
}
