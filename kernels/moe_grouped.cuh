/**
 * \file moe_grouped.cuh
 * \brief Pieces of the grouped MoE experts shared by versions 4 and 5 (kernels/moe_v4.cu, kernels/moe_v5.cu):
 *        which expert a block row serves, staging input rows in shared memory, the dot products of weight rows
 *        with the staged rows, and how many rows fit a stage.
 */
#ifndef DSV2_KERNELS_MOE_GROUPED_CUH
#define DSV2_KERNELS_MOE_GROUPED_CUH /**< include guard */

#include "common.cuh"

#define V4_WARPS 8           /**< warps per block: one hidden unit or output at a time each */
#define V4_UNITS 64          /**< hidden units (gate/up) or outputs (down) per block */
#define V4_ROWS  8           /**< most rows a block carries at once (accumulators per lane) */
#define V4_SMEM  (96 * 1024) /**< most dynamic shared memory of one block (opt-in above 48 KB) */

/** silu(z) = z · sigmoid(z). */
static __device__ __forceinline__ float silu_v4(float z)
{
    return z / (1.0f + expf(-z));
}

/**
 * Copies n rows of width w into the float stage xs (row k from element src0[k] of src, of type t), with
 * 16-byte loads when wide (w a multiple of 8, src 16-byte aligned), the whole block taking part.
 */
static __device__ void v4_stage(float *xs, const void *src, KernelDType t, const size_t *src0, int n, int w, int wide)
{
    if (wide) {
        for (int i = 8 * (int)threadIdx.x; i < n * w; i += 8 * (int)blockDim.x) {
            const int k = i / w, j = i % w;
            load8(src, t, src0[k] + j, xs + i);
        }
    } else {
        for (int i = (int)threadIdx.x; i < n * w; i += (int)blockDim.x) xs[i] = load_elem(src, t, src0[i / w] + i % w);
    }
}

/** Σ_j w[w0 + j] xs_k[j] over j < n_w for the n staged rows xs_k = xs + k·n_w, into acc[k]; this lane's share. */
static __device__ __forceinline__ void v4_dot(float acc[V4_ROWS], const void *w, KernelDType t, size_t w0,
                                              const float *xs, int n_w, int n, int lane, int wide)
{
    if (wide) {
        for (int j = 8 * lane; j < n_w; j += 8 * 32) {
            float wv[8];
            load8(w, t, w0 + j, wv);
#pragma unroll
            for (int k = 0; k < V4_ROWS; k++) {
                if (k < n) {
                    const float4 a = *reinterpret_cast<const float4 *>(xs + (size_t)k * n_w + j);
                    const float4 b = *reinterpret_cast<const float4 *>(xs + (size_t)k * n_w + j + 4);
                    acc[k] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w + wv[4] * b.x + wv[5] * b.y +
                              wv[6] * b.z + wv[7] * b.w;
                }
            }
        }
    } else {
        for (int j = lane; j < n_w; j += 32) {
            const float wv = load_elem(w, t, w0 + j);
#pragma unroll
            for (int k = 0; k < V4_ROWS; k++)
                if (k < n) acc[k] += wv * xs[(size_t)k * n_w + j];
        }
    }
}

/**
 * What block row y serves (versions 4 and 5): for y < min(rows, E) the y-th expert with rows (the active list moe_route_v4
 * writes after the offsets) and its permuted rows [first, last); the last block row, when I_s > 0, the
 * shared experts on tokens [0, T). Thread 0 reads the offsets for the block (slot: 3 ints of shared
 * memory). \return false when the y-th expert does not exist (fewer are active).
 */
static __device__ bool v4_slot_of(int *slot, const int *offsets, int y, int rows, int E, int T, int &e, int &first,
                                  int &last, bool &shared)
{
    shared = y >= min(rows, E);
    if (threadIdx.x == 0) {
        slot[0] = shared ? 0 : offsets[E + 1 + y];
        slot[1] = shared || slot[0] < 0 ? 0 : offsets[slot[0]];
        slot[2] = shared ? T : slot[0] < 0 ? 0 : offsets[slot[0] + 1];
    }
    __syncthreads();
    e = slot[0];
    first = slot[1];
    last = slot[2];
    return e >= 0;
}

/**
 * Rows of width w a block stages per pass: at most V4_ROWS, at most T (no expert has more rows than the
 * step has tokens, so a decode step of one token stages one row), and within V4_SMEM (w ≤ MOE_V4_MAX_WIDTH:
 * one row fits 48 KB).
 */
static int v4_pass_rows(int w, int T)
{
    int n = (int)(V4_SMEM / (sizeof(float) * (size_t)(w > 0 ? w : 1)));
    n = n < V4_ROWS ? n : V4_ROWS;
    return n < T ? n : T;
}

/** Allows `bytes` of dynamic shared memory for kernel when that is over the default 48 KB. */
static cudaError_t v4_allow_smem(const void *kernel, size_t bytes)
{
    if (bytes <= 48 * 1024) return cudaSuccess;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

/** Elements d .. d + 3 of row p (float4 when wide, else each one below D, 0 past it). */
static __device__ __forceinline__ float4 v4_load4(const float *p, int d, int D, int wide)
{
    if (wide) return *reinterpret_cast<const float4 *>(p + d);
    return make_float4(d < D ? p[d] : 0.0f, d + 1 < D ? p[d + 1] : 0.0f, d + 2 < D ? p[d + 2] : 0.0f,
                       d + 3 < D ? p[d + 3] : 0.0f);
}

/** Stores elements d .. d + 3 of row p that lie below D. */
static __device__ __forceinline__ void v4_store4(float *p, int d, int D, int wide, float4 v)
{
    if (wide) {
        *reinterpret_cast<float4 *>(p + d) = v;
        return;
    }
    const float f[4] = { v.x, v.y, v.z, v.w };
    for (int j = 0; j < 4 && d + j < D; j++) p[d + j] = f[j];
}

#endif
