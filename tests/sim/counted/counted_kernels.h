/**
 * \file counted_kernels.h
 * \brief Launchers of tiny kernels whose global-memory traffic can be counted by hand, built with
 *        the counting instrumentation (sim/sim.mk's SIM_CU_COUNTED) for tests/test_sim_counters.c.
 */
#ifndef DSV2_TESTS_SIM_COUNTED_KERNELS_H
#define DSV2_TESTS_SIM_COUNTED_KERNELS_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/** out[i] = x[4i] + … + x[4i+3] for i < n/4: n floats read as float4 (width 16), n/4 floats written (width 4). */
cudaError_t launch_count_float4(const float *x, float *out, int n, cudaStream_t stream);
/** out[i] = x[i] as float for n bf16 values: 2n bytes read at width 2, 4n written at width 4. */
cudaError_t launch_count_bf16(const unsigned short *x, float *out, int n, cudaStream_t stream);
/** out[i] = x[i].x ^ x[i].y for n uint2: 8n bytes read at width 8; bytes[i] = (unsigned char)i: n at width 1. */
cudaError_t launch_count_uint2(const uint2 *x, unsigned int *out, unsigned char *bytes, int n, cudaStream_t stream);
/** Each of 64 threads reads the same 4 floats of x (1024 bytes read, 16 distinct) and adds 1 to *counter atomically. */
cudaError_t launch_count_broadcast(const float *x, int *counter, float *out, cudaStream_t stream);
/** y = x through a 256-float shared-memory tile (reversed): only the 1024 + 1024 global bytes count. */
cudaError_t launch_count_shared(const float *x, float *y, cudaStream_t stream);
/**
 * One launch of two stages (kernels/stage.cuh): `producers` blocks write x[i] = i + 1 (64 each), then
 * `consumers` blocks each write the sum of x to sums[c]. counters: STAGE_COUNTER_INTS(2) ints, zero.
 * With `wrong`, the producers wait for the consumers: a wait that never ends.
 */
cudaError_t launch_count_staged(float *x, float *sums, int *counters, int producers, int consumers, int wrong,
                                cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
