/**
 * \file dsv2_launch.h
 * \brief The one header a kernel file includes: CUDA headers plus LAUNCH and DYNAMIC_SHARED.
 *
 * The same `.cu` file builds two ways. Under nvcc (`__CUDACC__` defined) the
 * toolkit's headers are used and LAUNCH is the triple-chevron launch. Under
 * the host C++ compiler with `-Isim/include` the simulator's headers are used
 * and LAUNCH hands the kernel and its arguments to the simulated runtime.
 *
 *     LAUNCH(kernel, grid, block, smem_bytes, stream, arg0, arg1, ...);
 *
 * Check the launch with cudaGetLastError() afterwards, as with `<<< >>>`.
 * The kernel must be a plain name (for a template instance, take its address
 * into a variable first: the macro splits on commas).
 *
 * Dynamic shared memory is declared inside the kernel with
 *
 *     DYNAMIC_SHARED(float, smem);   // float smem[] of smem_bytes bytes, 16-byte aligned
 *
 * (`extern __shared__` cannot be expressed in host C++.)
 */
#ifndef DSV2_LAUNCH_H
#define DSV2_LAUNCH_H

#include <cuda_runtime.h>
#include <cuda_bf16.h>

#ifdef __CUDACC__
/** Launches kernel on stream with the given grid, block and dynamic shared memory. */
#define LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
    kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
/** Declares the block's dynamic shared memory as an array of type. */
#define DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#else
/** Launches kernel on stream with the given grid, block and dynamic shared memory (simulated). */
#define LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
    sim_launch(#kernel, kernel, (grid), (block), (smem_bytes), (stream), ##__VA_ARGS__)
/** Declares the block's dynamic shared memory as an array of type (simulated: a pointer). */
#define DYNAMIC_SHARED(type, name) type *const name = static_cast<type *>(sim_dynamic_smem())
#endif

#endif
