/**
 * \file faulty_kernels.cu
 * \brief Kernels with planted synchronisation bugs, which the simulator must report.
 *
 * They are valid CUDA (nvcc compiles them); on a GPU they would hang, or
 * return wrong answers now and then.
 */
#include "dsv2_launch.h"
#include "sim_test_kernels.h"

/** Threads 16..31 return while threads 0..15 wait at the barrier. */
__global__ void divergent_barrier(int *out)
{
    if (threadIdx.x >= 16) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

extern "C" cudaError_t launch_divergent_barrier(int *out, cudaStream_t stream)
{
    LAUNCH(divergent_barrier, dim3(1), dim3(32), 0, stream, out);
    return cudaGetLastError();
}

/** Only lanes 0..15 reach a shuffle whose mask names all 32. */
__global__ void divergent_shuffle(int *out)
{
    int t = (int)threadIdx.x;
    if (t < 16) out[t] = __shfl_xor_sync(0xffffffffu, t, 1);
}

extern "C" cudaError_t launch_divergent_shuffle(int *out, cudaStream_t stream)
{
    LAUNCH(divergent_shuffle, dim3(1), dim3(32), 0, stream, out);
    return cudaGetLastError();
}

/** In-place Hillis–Steele scan missing the barrier between the read of buf[t − off] and the write of buf[t]. */
__global__ void racy_scan(const int *x, int *y, int n)
{
    __shared__ int buf[256];
    int t = (int)threadIdx.x;
    buf[t] = t < n ? x[t] : 0;
    __syncthreads();
    for (int off = 1; off < (int)blockDim.x; off *= 2) {
        int v = buf[t];
        if (t >= off) v += buf[t - off];
        buf[t] = v; /* planted bug: a __syncthreads() belongs before this write */
        __syncthreads();
    }
    if (t < n) y[t] = buf[t];
}

extern "C" cudaError_t launch_racy_scan(const int *x, int *y, int n, cudaStream_t stream)
{
    LAUNCH(racy_scan, dim3(1), dim3(256), 0, stream, x, y, n);
    return cudaGetLastError();
}
