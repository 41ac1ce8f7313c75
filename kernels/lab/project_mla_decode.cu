/**
 * \file project_mla_decode.cu
 * \brief The project's own absorbed decode (mla_decode_v2) under the lab's contract, to check the harness itself.
 *
 * mla_decode_v2 uses splits of 64 keys, so it needs half of the `partial`
 * scratch the contract provides.
 *
 *     make check-kernel COMPONENT=mla_decode SRC=kernels/lab/project_mla_decode.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

extern "C" cudaError_t lab_mla_decode(float *o_lat, const float *q_lat, const float *q, const void *cache,
                                      KernelDType cache_type, MlaDims dims, int pos0, int T, float *partial,
                                      cudaStream_t stream)
{
    return mla_decode_v2(o_lat, q_lat, q, cache, cache_type, dims, pos0, T, partial, stream);
}
