/**
 * \file counted_kernels.cu
 * \brief Kernels with hand-counted global traffic, for the device counters' suite.
 *
 * Built with the counting instrumentation (every access becomes a __tsan_readN / __tsan_writeN
 * call, sim/count_hooks.c) as `make profile-fast` builds kernels/, so the suite checks the very
 * mechanism the profile relies on. Each launcher is one block unless said otherwise.
 */
#include "dsv2_launch.h"
#include "stage.cuh"
#include "counted_kernels.h"

__global__ void count_float4(const float *x, float *out, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (4 * i < n) {
        float4 v = reinterpret_cast<const float4 *>(x)[i];
        out[i] = v.x + v.y + v.z + v.w;
    }
}

__global__ void count_bf16(const __nv_bfloat16 *x, float *out, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) out[i] = __bfloat162float(x[i]);
}

__global__ void count_uint2(const uint2 *x, unsigned int *out, unsigned char *bytes, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) {
        uint2 v = x[i];
        out[i] = v.x ^ v.y;
        bytes[i] = (unsigned char)i;
    }
}

__global__ void count_broadcast(const float *x, int *counter, float *out)
{
    float s = 0.0f;
    for (int j = 0; j < 4; j++) s += x[j];
    atomicAdd(counter, 1);
    if (threadIdx.x == 0) out[0] = s;
}

__global__ void count_shared(const float *x, float *y)
{
    __shared__ float tile[256];
    const int t = (int)threadIdx.x;
    tile[t] = x[t];
    __syncthreads();
    y[t] = tile[255 - t];
}

/*
 * Two stages in one launch: the first `producers` tickets write x[i] = i + 1 for their 64 values,
 * the remaining tickets wait for all of them and each writes the sum of x. With `wrong` set, the
 * producers wait for the consumers instead, a wait no block can end.
 */
__global__ void count_staged(float *x, float *sums, int *counters, int producers, int wrong)
{
    const int t = stage_ticket(counters);
    if (t < producers) {
        if (wrong) stage_wait(counters, 1, 1);
        x[t * 64 + (int)threadIdx.x] = (float)(t * 64 + (int)threadIdx.x + 1);
        stage_signal(counters, 0);
    } else {
        stage_wait(counters, 0, producers);
        __shared__ float part[64];
        float s = 0.0f;
        for (int i = (int)threadIdx.x; i < producers * 64; i += 64) s += __ldcg(x + i);
        part[threadIdx.x] = s;
        __syncthreads();
        if (threadIdx.x == 0) {
            float total = 0.0f;
            for (int i = 0; i < 64; i++) total += part[i];
            sums[t - producers] = total;
        }
        stage_signal(counters, 1);
    }
    stage_exit(counters, 2);
}

extern "C" cudaError_t launch_count_staged(float *x, float *sums, int *counters, int producers, int consumers,
                                           int wrong, cudaStream_t stream)
{
    LAUNCH(count_staged, dim3((unsigned)(producers + consumers)), dim3(64), 0, stream, x, sums, counters, producers,
           wrong);
    return cudaGetLastError();
}

extern "C" cudaError_t launch_count_float4(const float *x, float *out, int n, cudaStream_t stream)
{
    LAUNCH(count_float4, dim3((unsigned)((n / 4 + 63) / 64)), dim3(64), 0, stream, x, out, n);
    return cudaGetLastError();
}

extern "C" cudaError_t launch_count_bf16(const unsigned short *x, float *out, int n, cudaStream_t stream)
{
    const __nv_bfloat16 *xb = reinterpret_cast<const __nv_bfloat16 *>(x);
    LAUNCH(count_bf16, dim3((unsigned)((n + 63) / 64)), dim3(64), 0, stream, xb, out, n);
    return cudaGetLastError();
}

extern "C" cudaError_t launch_count_uint2(const uint2 *x, unsigned int *out, unsigned char *bytes, int n,
                                          cudaStream_t stream)
{
    LAUNCH(count_uint2, dim3((unsigned)((n + 63) / 64)), dim3(64), 0, stream, x, out, bytes, n);
    return cudaGetLastError();
}

extern "C" cudaError_t launch_count_broadcast(const float *x, int *counter, float *out, cudaStream_t stream)
{
    LAUNCH(count_broadcast, dim3(1), dim3(64), 0, stream, x, counter, out);
    return cudaGetLastError();
}

extern "C" cudaError_t launch_count_shared(const float *x, float *y, cudaStream_t stream)
{
    LAUNCH(count_shared, dim3(1), dim3(256), 0, stream, x, y);
    return cudaGetLastError();
}
