/**
 * \file sim_kernel.h
 * \brief Device-side CUDA vocabulary for `.cu` files compiled as C++ against sim/.
 *
 * Included by the simulator's cuda_runtime.h when compiled as C++. Under the
 * simulator a kernel is an ordinary C++ function; each thread of a block runs
 * it on its own fiber (a small stack the block's scheduler switches between,
 * see sim/fiber.c and sim/block.c). This header maps CUDA's built-ins onto
 * that machinery:
 *
 * - `threadIdx`, `blockIdx`, `blockDim`, `gridDim` read the running fiber's
 *   coordinates through a thread-local pointer;
 * - `__syncthreads()` and the warp collectives (`__syncwarp`, `__shfl*_sync`,
 *   `__ballot_sync`, `__any_sync`, `__all_sync`) suspend the fiber until
 *   every thread that must take part has arrived;
 * - `__shared__` is `static thread_local`: one copy per OS thread, which is
 *   one copy per block because a block's fibers all run on one OS thread;
 *   dynamic shared memory is declared with DYNAMIC_SHARED (dsv2_launch.h);
 * - atomics are GCC `__atomic` built-ins; math intrinsics are libm calls.
 *
 * Kernels are launched with sim_launch(), which the LAUNCH macro calls.
 */
#ifndef DSV2_SIM_KERNEL_H
#define DSV2_SIM_KERNEL_H

#ifndef __cplusplus
#error "sim_kernel.h is for .cu files compiled as C++"
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

/* Function and variable qualifiers: kernels are plain host functions here. */
#define __global__             /**< a kernel: an ordinary function, called per simulated thread */
#define __device__             /**< device code runs on the host */
#define __host__               /**< host code, as always */
#define __constant__           /**< constant memory is ordinary memory */
#define __forceinline__        inline __attribute__((always_inline)) /**< as nvcc's */
#define __noinline__           __attribute__((noinline))             /**< as nvcc's */
#define __align__(n)           __attribute__((aligned(n)))           /**< alignment, as nvcc's */
#define __launch_bounds__(...) /**< register-allocation hint: nothing to do here */
/** One copy per block; see the file comment. `extern __shared__` does not compile: use DYNAMIC_SHARED. */
#define __shared__             static thread_local

/** Threads per warp. */
#define warpSize 32

#include "sim_abi.h"

#define threadIdx (sim_coords->thread_idx) /**< index of the thread in its block */
#define blockIdx  (sim_coords->block_idx)  /**< index of the block in the grid */
#define blockDim  (sim_coords->block_dim)  /**< block extent */
#define gridDim   (sim_coords->grid_dim)   /**< grid extent */

/* --- barriers and warp collectives ---------------------------------------------------------- */

/** Waits until every thread of the block has arrived. */
static inline void __syncthreads(void)
{
    sim_block_barrier(SIM_BARRIER_PLAIN, 0);
}
/** Barrier that returns how many threads passed a non-zero predicate. */
static inline int __syncthreads_count(int pred)
{
    return sim_block_barrier(SIM_BARRIER_COUNT, pred);
}
/** Barrier that returns non-zero when every predicate is non-zero. */
static inline int __syncthreads_and(int pred)
{
    return sim_block_barrier(SIM_BARRIER_AND, pred);
}
/** Barrier that returns non-zero when any predicate is non-zero. */
static inline int __syncthreads_or(int pred)
{
    return sim_block_barrier(SIM_BARRIER_OR, pred);
}
/** Waits until every lane of mask has arrived. */
static inline void __syncwarp(unsigned int mask = 0xffffffffu)
{
    sim_warp_collective(mask, SIM_WARP_SYNC, 0, 0);
}
/** Lanes of the warp that have not exited. */
static inline unsigned int __activemask(void)
{
    return sim_warp_active_mask();
}
/** Bit i set when lane i of mask has a non-zero predicate. */
static inline unsigned int __ballot_sync(unsigned int mask, int pred)
{
    return (unsigned int)sim_warp_collective(mask, SIM_WARP_BALLOT, pred != 0, 0);
}
/** Non-zero when any lane of mask has a non-zero predicate. */
static inline int __any_sync(unsigned int mask, int pred)
{
    return __ballot_sync(mask, pred) != 0;
}
/** Non-zero when every lane of mask has a non-zero predicate. */
static inline int __all_sync(unsigned int mask, int pred)
{
    return (int)sim_warp_collective(mask, SIM_WARP_ALL, pred != 0, 0);
}

/** Types a shuffle may move: scalars of at most 8 bytes (cuda_bf16.h adds its own). */
template <typename T> struct SimShuffleable {
    static const bool value = std::is_arithmetic<T>::value; /**< true for arithmetic types */
};

/** Shared part of the four shuffles: moves var from lane src of the warp. */
template <typename T> static inline T sim_shuffle(unsigned int mask, T var, unsigned int src)
{
    static_assert(SimShuffleable<T>::value && sizeof(T) <= 8, "__shfl*_sync: unsupported type");
    unsigned long long bits = 0;
    memcpy(&bits, &var, sizeof(T));
    bits = sim_warp_collective(mask, SIM_WARP_SHFL, bits, (int)src);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}

/** var from lane srcLane of this lane's width-wide segment. */
template <typename T> static inline T __shfl_sync(unsigned int mask, T var, int srcLane, int width = warpSize)
{
    unsigned int lane = sim_coords->lane, w = (unsigned int)width;
    return sim_shuffle(mask, var, (lane & ~(w - 1)) | ((unsigned int)srcLane & (w - 1)));
}
/** var from lane − delta, or this lane's own var when that leaves the segment. */
template <typename T> static inline T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize)
{
    unsigned int lane = sim_coords->lane, w = (unsigned int)width;
    return sim_shuffle(mask, var, (lane & (w - 1)) >= delta ? lane - delta : lane);
}
/** var from lane + delta, or this lane's own var when that leaves the segment. */
template <typename T>
static inline T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize)
{
    unsigned int lane = sim_coords->lane, w = (unsigned int)width;
    return sim_shuffle(mask, var, (lane & (w - 1)) + delta < w ? lane + delta : lane);
}
/** var from lane ^ laneMask, or this lane's own var when that is in a later segment. */
template <typename T> static inline T __shfl_xor_sync(unsigned int mask, T var, int laneMask, int width = warpSize)
{
    unsigned int lane = sim_coords->lane, w = (unsigned int)width;
    unsigned int src = lane ^ (unsigned int)laneMask;
    return sim_shuffle(mask, var, src < (lane & ~(w - 1)) + w ? src : lane);
}

/* --- atomics: GCC built-ins, sequentially consistent --------------------------------------- */

/** *addr += val; returns the old value. */
static inline int atomicAdd(int *addr, int val)
{
    return __atomic_fetch_add(addr, val, __ATOMIC_SEQ_CST);
}
/** *addr += val; returns the old value. */
static inline unsigned int atomicAdd(unsigned int *addr, unsigned int val)
{
    return __atomic_fetch_add(addr, val, __ATOMIC_SEQ_CST);
}
/** *addr += val; returns the old value. */
static inline unsigned long long atomicAdd(unsigned long long *addr, unsigned long long val)
{
    return __atomic_fetch_add(addr, val, __ATOMIC_SEQ_CST);
}
/** Floating-point add by compare-and-swap on the bits; returns the old value. */
template <typename F, typename U> static inline F sim_atomic_add_float(F *addr, F val)
{
    U *bits = reinterpret_cast<U *>(addr);
    U old = __atomic_load_n(bits, __ATOMIC_SEQ_CST), next;
    F oldf, sum;
    do {
        memcpy(&oldf, &old, sizeof(F));
        sum = oldf + val;
        memcpy(&next, &sum, sizeof(F));
    } while (!__atomic_compare_exchange_n(bits, &old, next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return oldf;
}
/** *addr += val; returns the old value. */
static inline float atomicAdd(float *addr, float val)
{
    return sim_atomic_add_float<float, uint32_t>(addr, val);
}
/** *addr += val; returns the old value. */
static inline double atomicAdd(double *addr, double val)
{
    return sim_atomic_add_float<double, uint64_t>(addr, val);
}
/** *addr −= val; returns the old value. */
static inline int atomicSub(int *addr, int val)
{
    return __atomic_fetch_sub(addr, val, __ATOMIC_SEQ_CST);
}
/** *addr −= val; returns the old value. */
static inline unsigned int atomicSub(unsigned int *addr, unsigned int val)
{
    return __atomic_fetch_sub(addr, val, __ATOMIC_SEQ_CST);
}
/** Integer max by compare-and-swap; returns the old value. */
template <typename T> static inline T sim_atomic_max(T *addr, T val)
{
    T old = __atomic_load_n(addr, __ATOMIC_SEQ_CST);
    while (old < val && !__atomic_compare_exchange_n(addr, &old, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
/** Integer min by compare-and-swap; returns the old value. */
template <typename T> static inline T sim_atomic_min(T *addr, T val)
{
    T old = __atomic_load_n(addr, __ATOMIC_SEQ_CST);
    while (val < old && !__atomic_compare_exchange_n(addr, &old, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
/** *addr = max(*addr, val); returns the old value. */
static inline int atomicMax(int *addr, int val)
{
    return sim_atomic_max(addr, val);
}
/** *addr = max(*addr, val); returns the old value. */
static inline unsigned int atomicMax(unsigned int *addr, unsigned int val)
{
    return sim_atomic_max(addr, val);
}
/** *addr = max(*addr, val); returns the old value. */
static inline unsigned long long atomicMax(unsigned long long *addr, unsigned long long val)
{
    return sim_atomic_max(addr, val);
}
/** *addr = min(*addr, val); returns the old value. */
static inline int atomicMin(int *addr, int val)
{
    return sim_atomic_min(addr, val);
}
/** *addr = min(*addr, val); returns the old value. */
static inline unsigned int atomicMin(unsigned int *addr, unsigned int val)
{
    return sim_atomic_min(addr, val);
}
/** Stores val when *addr == compare; returns the old value. */
template <typename T> static inline T sim_atomic_cas(T *addr, T compare, T val)
{
    __atomic_compare_exchange_n(addr, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}
/** Compare-and-swap; returns the old value. */
static inline int atomicCAS(int *addr, int compare, int val)
{
    return sim_atomic_cas(addr, compare, val);
}
/** Compare-and-swap; returns the old value. */
static inline unsigned int atomicCAS(unsigned int *addr, unsigned int compare, unsigned int val)
{
    return sim_atomic_cas(addr, compare, val);
}
/** Compare-and-swap; returns the old value. */
static inline unsigned long long atomicCAS(unsigned long long *addr, unsigned long long compare, unsigned long long val)
{
    return sim_atomic_cas(addr, compare, val);
}
/** Stores val; returns the old value. */
static inline int atomicExch(int *addr, int val)
{
    return __atomic_exchange_n(addr, val, __ATOMIC_SEQ_CST);
}
/** Stores val; returns the old value. */
static inline unsigned int atomicExch(unsigned int *addr, unsigned int val)
{
    return __atomic_exchange_n(addr, val, __ATOMIC_SEQ_CST);
}
/** Orders memory accesses; fibers on one OS thread need only a compiler barrier. */
static inline void __threadfence(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
/** Orders memory accesses within the block. */
static inline void __threadfence_block(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* --- math and bit intrinsics ---------------------------------------------------------------- */

/** 1 / sqrt(x). */
static inline float rsqrtf(float x)
{
    return 1.0f / sqrtf(x);
}
/* glibc's <math.h> already declares __expf, __logf, __powf, __sinf and __cosf
 * (with C linkage, without exporting them); the simulator defines them. */
extern "C" {
/** Fast exp: exact expf here. */
inline float __expf(float x) noexcept
{
    return expf(x);
}
/** Fast log: exact logf here. */
inline float __logf(float x) noexcept
{
    return logf(x);
}
/** Fast pow: exact powf here. */
inline float __powf(float x, float y) noexcept
{
    return powf(x, y);
}
/** Fast sine: exact sinf here. */
inline float __sinf(float x) noexcept
{
    return sinf(x);
}
/** Fast cosine: exact cosf here. */
inline float __cosf(float x) noexcept
{
    return cosf(x);
}
}
/** Fast division: exact here. */
static inline float __fdividef(float x, float y)
{
    return x / y;
}
/** Reciprocal, round to nearest. */
static inline float __frcp_rn(float x)
{
    return 1.0f / x;
}
/** Square root, round to nearest. */
static inline float __fsqrt_rn(float x)
{
    return sqrtf(x);
}
/** Fused multiply-add, round to nearest. */
static inline float __fmaf_rn(float x, float y, float z)
{
    return fmaf(x, y, z);
}
/** Clamps to [0, 1] (NaN → 0). */
static inline float __saturatef(float x)
{
    return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f;
}
/** Bits of a float as int. */
static inline int __float_as_int(float x)
{
    int i;
    memcpy(&i, &x, 4);
    return i;
}
/** Bits of a float as unsigned int. */
static inline unsigned int __float_as_uint(float x)
{
    unsigned int i;
    memcpy(&i, &x, 4);
    return i;
}
/** Float with the given bits. */
static inline float __int_as_float(int i)
{
    float x;
    memcpy(&x, &i, 4);
    return x;
}
/** Float with the given bits. */
static inline float __uint_as_float(unsigned int i)
{
    float x;
    memcpy(&x, &i, 4);
    return x;
}
/** Number of set bits. */
static inline int __popc(unsigned int x)
{
    return __builtin_popcount(x);
}
/** Number of set bits. */
static inline int __popcll(unsigned long long x)
{
    return __builtin_popcountll(x);
}
/** Leading zeros (32 for 0). */
static inline int __clz(int x)
{
    return x ? __builtin_clz((unsigned int)x) : 32;
}
/** Position of the least significant set bit, from 1 (0 for 0). */
static inline int __ffs(int x)
{
    return __builtin_ffs(x);
}
/** Read-only cached load: a plain load here. */
template <typename T> static inline T __ldg(const T *p)
{
    return *p;
}
/** Load cached in L2 only (not L1): a plain load here. */
template <typename T> static inline T __ldcg(const T *p)
{
    return *p;
}
/** Pauses a spinning thread about ns nanoseconds on a GPU; here it lets the block's other threads run. */
static inline void __nanosleep(unsigned int ns)
{
    (void)ns;
    sim_spin_wait();
}
/** Integer minimum, as CUDA's device overloads. */
static inline int min(int a, int b)
{
    return a < b ? a : b;
}
/** Integer maximum. */
static inline int max(int a, int b)
{
    return a > b ? a : b;
}
/** Unsigned minimum. */
static inline unsigned int min(unsigned int a, unsigned int b)
{
    return a < b ? a : b;
}
/** Unsigned maximum. */
static inline unsigned int max(unsigned int a, unsigned int b)
{
    return a > b ? a : b;
}
/** Float minimum (fminf). */
static inline float min(float a, float b)
{
    return fminf(a, b);
}
/** Float maximum (fmaxf). */
static inline float max(float a, float b)
{
    return fmaxf(a, b);
}

/* --- launch ---------------------------------------------------------------------------------- */

/** A launch's kernel and a copy of its arguments, kept until the stream runs it. */
template <typename... P> struct SimKernelPack {
    void (*kernel)(P...);                /**< the kernel */
    std::tuple<std::decay_t<P>...> args; /**< its arguments, converted as a call would */
};

/** Calls the kernel for the running thread (each thread gets its own copy of the parameters). */
template <typename... P> static void sim_invoke_pack(void *pack)
{
    SimKernelPack<P...> *p = static_cast<SimKernelPack<P...> *>(pack);
    std::apply(p->kernel, p->args);
}

/** Frees a pack. */
template <typename... P> static void sim_release_pack(void *pack)
{
    delete static_cast<SimKernelPack<P...> *>(pack);
}

/** The value of an argument when it is a pointer (for the host-memory check), else NULL. */
template <typename T> static inline const void *sim_pointer_or_null(const T &v)
{
    if constexpr (std::is_pointer<T>::value)
        return reinterpret_cast<const void *>(v);
    else
        return nullptr;
}

/** Lists the pointer arguments of a pack. */
template <typename Tuple, size_t... I>
static inline void sim_list_pointers(const Tuple &t, const void **out, std::index_sequence<I...>)
{
    ((out[I] = sim_pointer_or_null(std::get<I>(t))), ...);
}

/**
 * The simulated `kernel<<<grid, block, smem, stream>>>(args...)`: copies the
 * arguments (converted to the kernel's parameter types), lists the pointers
 * among them, and hands the launch to the runtime, which checks it and queues
 * it on stream. Called through LAUNCH (dsv2_launch.h), which supplies name.
 */
template <typename... P, typename... A>
static inline void sim_launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                              cudaStream_t stream, A &&...args)
{
    static_assert(sizeof...(P) == sizeof...(A), "LAUNCH: wrong number of kernel arguments");
    SimKernelPack<P...> *pack =
        new SimKernelPack<P...>{ kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...) };
    const void *pointers[sizeof...(P) + 1] = { nullptr };
    sim_list_pointers(pack->args, pointers, std::index_sequence_for<P...>{});
    SimKernelLaunch launch = { name,
                               reinterpret_cast<const void *>(kernel),
                               grid,
                               block,
                               smem,
                               stream,
                               sim_invoke_pack<P...>,
                               sim_release_pack<P...>,
                               pack,
                               (int)sizeof...(P),
                               pointers };
    sim_launch_kernel(&launch);
}

#endif
