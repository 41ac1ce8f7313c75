/**
 * \file sim_test_kernels.h
 * \brief C-callable launchers of the simulator's test kernels (the .cu files of tests/sim).
 *
 * Each launcher queues one kernel on stream and returns cudaGetLastError(),
 * so launch-time errors (configuration, pointers) come back directly and
 * run-time ones at the next synchronisation. The same files build with
 * nvcc (make nvcc-check), so every kernel here is real CUDA.
 */
#ifndef DSV2_TESTS_SIM_TEST_KERNELS_H
#define DSV2_TESTS_SIM_TEST_KERNELS_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/** out[b] = Σ x[b·threads .. (b+1)·threads) over warp shuffles and shared memory; threads a multiple of 32. */
cudaError_t launch_block_sum(const float *x, int n, float *out, int threads, cudaStream_t stream);
/** y = inclusive prefix sum of x[0..n), one block of `threads` ≥ n threads (dynamic shared memory). */
cudaError_t launch_block_scan(const int *x, int *y, int n, int threads, cudaStream_t stream);
/** out (cols × rows) = inᵀ (rows × cols), row-major, through 32×33 shared tiles and 32×8 blocks. */
cudaError_t launch_transpose(const float *in, float *out, int rows, int cols, cudaStream_t stream);
/** Each thread writes its global linear index at that index, and packed blockDim/gridDim into dims. */
cudaError_t launch_coords(unsigned int *ids, unsigned int *dims, dim3 grid, dim3 block, cudaStream_t stream);
/** out[4t..4t+3] = __shfl_sync(t, lane+5), __shfl_up_sync(t, 3), __shfl_down_sync(t, 3), __shfl_xor_sync(t, xor_mask), given width. */
cudaError_t launch_shuffles(int *out, int threads, int width, int xor_mask, cudaStream_t stream);
/** out[4t..4t+3] = ballot(t%3==0), any(t==37), all(t<threads), all(t%3==0). */
cudaError_t launch_votes(unsigned int *out, int threads, cudaStream_t stream);
/** out[4t..4t+3] = __syncthreads_count(t%7==0), _and(1), _or(t==57), _or(0); also a __syncwarp. */
cudaError_t launch_barrier_variants(int *out, int threads, cudaStream_t stream);
/** hist[x[i] % 16]++, *fsum += 1 per element, *imax = max x, *flag CAS race won by one thread (*winners counts). */
cudaError_t launch_atomics(const int *x, int n, int *hist, float *fsum, int *imax, int *flag, int *winners,
                           cudaStream_t stream);
/** Fills smem_bytes of dynamic shared memory and sums it: *out = Σ_i i over smem_bytes/4 floats. */
cudaError_t launch_dynamic_smem(float *out, size_t smem_bytes, cudaStream_t stream);
/** Raises the dynamic shared memory limit of the kernel behind launch_dynamic_smem. */
cudaError_t set_dynamic_smem_limit(int bytes);
/** bits[i] = __float2bfloat16(in[i]) bits; back[i] = its float; pair[i] = bits through a bf16x2 shuffle. */
cudaError_t launch_bf16(const float *in, unsigned short *bits, float *back, int n, cudaStream_t stream);
/** x[i] *= a. */
cudaError_t launch_scale(float *x, int n, float a, cudaStream_t stream);
/** A kernel that does nothing, with the given configuration and dynamic shared memory. */
cudaError_t launch_empty(dim3 grid, dim3 block, size_t smem, cudaStream_t stream);
/** A block of 256 threads passing `iterations` barriers (fiber switch benchmark). */
cudaError_t launch_barriers(int iterations, cudaStream_t stream);

/** Planted bug: half of the block returns before a __syncthreads the other half waits at. */
cudaError_t launch_divergent_barrier(int *out, cudaStream_t stream);
/** Planted bug: half a warp calls a full-mask shuffle. */
cudaError_t launch_divergent_shuffle(int *out, cudaStream_t stream);
/** Planted bug: a scan missing the barrier between reading a neighbour and overwriting its own slot (n ≤ 256). */
cudaError_t launch_racy_scan(const int *x, int *y, int n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
