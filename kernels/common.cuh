/**
 * \file common.cuh
 * \brief Device helpers shared by the kernels: typed loads and stores, warp and block reductions.
 */
#ifndef DSV2_KERNELS_COMMON_CUH
#define DSV2_KERNELS_COMMON_CUH /**< include guard */

#include "dsv2_launch.h"
#include "kernels.h"
#include "../ref/shared_math.h"

/** Every lane of a warp takes part. */
#define FULL_MASK 0xffffffffu

/** Element i of a float32 or bfloat16 tensor, as float. */
static __device__ __forceinline__ float load_elem(const void *p, KernelDType t, size_t i)
{
    return t == KERNEL_F32 ? static_cast<const float *>(p)[i]
                           : __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
}

/**
 * Elements i .. i + 7 of a float32 or bfloat16 tensor, as floats, in 16-byte loads: one uint4 of eight
 * bfloat16 (the low half of each 32-bit word is the lower element) or two float4. The caller guarantees
 * that element i sits on a 16-byte boundary (the tensor's base is 16-byte aligned and i is a multiple of 8).
 */
static __device__ __forceinline__ void load8(const void *p, KernelDType t, size_t i, float out[8])
{
    if (t == KERNEL_F32) {
        const float4 *v = reinterpret_cast<const float4 *>(static_cast<const float *>(p) + i);
        const float4 a = v[0], b = v[1];
        out[0] = a.x;
        out[1] = a.y;
        out[2] = a.z;
        out[3] = a.w;
        out[4] = b.x;
        out[5] = b.y;
        out[6] = b.z;
        out[7] = b.w;
    } else {
        const uint4 v = *reinterpret_cast<const uint4 *>(static_cast<const __nv_bfloat16 *>(p) + i);
        const unsigned int w[4] = { v.x, v.y, v.z, v.w };
        for (int k = 0; k < 4; k++) {
            out[2 * k] = __uint_as_float(w[k] << 16);
            out[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        }
    }
}

/**
 * Elements i .. i + 7 of a float32 or bf16 tensor written earlier in this launch: load8 through L2
 * (__ldcg; a stage of kernels/stage.cuh reads its predecessors' outputs this way, never through L1).
 */
static __device__ __forceinline__ void load8_cg(const void *p, KernelDType t, size_t i, float out[8])
{
    if (t == KERNEL_F32) {
        const float4 *v = reinterpret_cast<const float4 *>(static_cast<const float *>(p) + i);
        const float4 a = __ldcg(v), b = __ldcg(v + 1);
        const float f[8] = { a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w };
        for (int k = 0; k < 8; k++) out[k] = f[k];
    } else {
        const uint4 v = __ldcg(reinterpret_cast<const uint4 *>(static_cast<const __nv_bfloat16 *>(p) + i));
        const unsigned int w[4] = { v.x, v.y, v.z, v.w };
        for (int k = 0; k < 4; k++) {
            out[2 * k] = __uint_as_float(w[k] << 16);
            out[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        }
    }
}

/** Element i of a float32 or bf16 tensor written earlier in this launch, through L2. */
static __device__ __forceinline__ float load_elem_cg(const void *p, KernelDType t, size_t i)
{
    if (t == KERNEL_F32) return __ldcg(static_cast<const float *>(p) + i);
    const unsigned short b = __ldcg(static_cast<const unsigned short *>(p) + i);
    return __uint_as_float((unsigned int)b << 16);
}

/** Whether p lies on a 16-byte boundary (load8's requirement for element 0). */
static inline bool aligned16(const void *p)
{
    return ((size_t)p & 15u) == 0;
}

/** Stores v as element i of a float32 or bfloat16 tensor (round to nearest even). */
static __device__ __forceinline__ void store_elem(void *p, KernelDType t, size_t i, float v)
{
    if (t == KERNEL_F32)
        static_cast<float *>(p)[i] = v;
    else
        static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v);
}

/** Σ_i a_i b_i for two float32 vectors (ref/linear.c's dot, summed left to right by one thread). */
static __device__ __forceinline__ float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/** Sum over the 32 lanes; every lane gets the result. */
static __device__ __forceinline__ float warp_sum(float v)
{
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

/** Max over the 32 lanes; every lane gets the result. */
static __device__ __forceinline__ float warp_max(float v)
{
    for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, off));
    return v;
}

/**
 * Sum over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets
 * the result. scratch: 32 floats of shared memory, free again on return.
 */
static __device__ __forceinline__ float block_sum(float v, float *scratch)
{
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32, warps = (int)blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

/** Max over the block, as block_sum. */
static __device__ __forceinline__ float block_max(float v, float *scratch)
{
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32, warps = (int)blockDim.x / 32;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    v = warp_max(v);
    __syncthreads();
    return v;
}

/**
 * Position of token t of a launch: pos[t] when the positions come from device
 * memory (one array uploaded per step, so the launch does not depend on them),
 * else pos0 + t (one sequence's consecutive positions).
 */
static __device__ __forceinline__ int token_position(const int *pos, int pos0, int t)
{
    return pos ? pos[t] : pos0 + t;
}

/** Blocks of `threads` needed to cover n items. */
static inline unsigned int blocks_for(size_t n, int threads)
{
    return (unsigned int)((n + threads - 1) / threads);
}

#endif
