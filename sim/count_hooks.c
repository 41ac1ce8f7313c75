/**
 * \file count_hooks.c
 * \brief The calls GCC's ThreadSanitizer instrumentation (-fsanitize=thread) inserts before every
 *        memory access, implemented as the device counters' width-exact load and store counting.
 *
 * Kernels built for counting (tools/profile.mk, the counter suite) are compiled with
 * `-fsanitize=thread --param tsan-instrument-func-entry-exit=0` and linked without the
 * ThreadSanitizer runtime: these definitions take its place. `__tsan_readN(addr)` precedes a load
 * of N bytes, `__tsan_writeN` a store; the atomics become `__tsan_atomicNN_*` calls, performed
 * here with GCC's built-ins and counted as a read and a write of their width. sim_count_access()
 * keeps only accesses to device allocations made by a running kernel while counters run.
 * This object is linked only into programs whose kernels were built that way.
 */
#include "sim_internal.h"

#include <stdint.h>

/* GCC emits calls to these names; they have no prototypes elsewhere. */
#pragma GCC diagnostic ignored "-Wmissing-prototypes"

#define ACCESS(n)                           \
    void __tsan_read##n(void *p)            \
    {                                       \
        sim_count_access(p, n, 0);          \
    }                                       \
    void __tsan_write##n(void *p)           \
    {                                       \
        sim_count_access(p, n, 1);          \
    }                                       \
    void __tsan_unaligned_read##n(void *p)  \
    {                                       \
        sim_count_access(p, n, 0);          \
    }                                       \
    void __tsan_unaligned_write##n(void *p) \
    {                                       \
        sim_count_access(p, n, 1);          \
    }
ACCESS(1)
ACCESS(2)
ACCESS(4)
ACCESS(8)
ACCESS(16)
#undef ACCESS

void __tsan_read_range(void *p, unsigned long n)
{
    sim_count_access(p, n, 0);
}
void __tsan_write_range(void *p, unsigned long n)
{
    sim_count_access(p, n, 1);
}
void __tsan_init(void) {}
void __tsan_func_entry(void *pc)
{
    (void)pc;
}
void __tsan_func_exit(void) {}

#define ATOMICS(bits, T)                                                                          \
    T __tsan_atomic##bits##_load(const volatile T *a, int mo)                                     \
    {                                                                                             \
        (void)mo;                                                                                 \
        sim_count_access((const void *)a, sizeof(T), 0);                                          \
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                              \
    }                                                                                             \
    void __tsan_atomic##bits##_store(volatile T *a, T v, int mo)                                  \
    {                                                                                             \
        (void)mo;                                                                                 \
        sim_count_access((const void *)a, sizeof(T), 1);                                          \
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                 \
    }                                                                                             \
    static T rmw##bits(volatile T *a)                                                             \
    {                                                                                             \
        sim_count_access((const void *)a, sizeof(T), 0);                                          \
        sim_count_access((const void *)a, sizeof(T), 1);                                          \
        return 0;                                                                                 \
    }                                                                                             \
    T __tsan_atomic##bits##_exchange(volatile T *a, T v, int mo)                                  \
    {                                                                                             \
        (void)mo;                                                                                 \
        return rmw##bits(a) + __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                        \
    }                                                                                             \
    T __tsan_atomic##bits##_fetch_add(volatile T *a, T v, int mo)                                 \
    {                                                                                             \
        (void)mo;                                                                                 \
        return rmw##bits(a) + __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                         \
    }                                                                                             \
    T __tsan_atomic##bits##_fetch_sub(volatile T *a, T v, int mo)                                 \
    {                                                                                             \
        (void)mo;                                                                                 \
        return rmw##bits(a) + __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                         \
    }                                                                                             \
    int __tsan_atomic##bits##_compare_exchange_strong(volatile T *a, T *c, T v, int mo, int fail) \
    {                                                                                             \
        (void)mo;                                                                                 \
        (void)fail;                                                                               \
        rmw##bits(a);                                                                             \
        return __atomic_compare_exchange_n(a, c, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);       \
    }                                                                                             \
    int __tsan_atomic##bits##_compare_exchange_weak(volatile T *a, T *c, T v, int mo, int fail)   \
    {                                                                                             \
        return __tsan_atomic##bits##_compare_exchange_strong(a, c, v, mo, fail);                  \
    }                                                                                             \
    T __tsan_atomic##bits##_compare_exchange_val(volatile T *a, T c, T v, int mo, int fail)       \
    {                                                                                             \
        __tsan_atomic##bits##_compare_exchange_strong(a, &c, v, mo, fail);                        \
        return c;                                                                                 \
    }
ATOMICS(32, int32_t)
ATOMICS(64, int64_t)
#undef ATOMICS

void __tsan_atomic_thread_fence(int mo)
{
    (void)mo;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
void __tsan_atomic_signal_fence(int mo)
{
    (void)mo;
}
