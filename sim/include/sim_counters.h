/**
 * \file sim_counters.h
 * \brief Device counters of the simulated device: global-memory bytes by access width per launch,
 *        and per measured interval (a "step") launches, host synchronisations, copies, NCCL bytes
 *        per peer and the memory high-water mark.
 *
 * **What is counted.** Between sim_counters_start() and sim_counters_stop():
 *
 * - kernels: every load and store a simulated thread makes to device memory (an allocation of
 *   cudaMalloc), by its width in bytes (1, 2, 4, 8, 16; wider aggregate copies go to "other").
 *   The widths are observed, not guessed: kernels built for counting (`make profile-fast`,
 *   tests/test_sim_counters.c) are compiled with GCC's ThreadSanitizer instrumentation, which
 *   calls `__tsan_readN(addr)` / `__tsan_writeN(addr)` before every access of N bytes, and
 *   sim/count_hooks.c implements those calls instead of the ThreadSanitizer runtime. Shared
 *   memory, registers, the thread's stack and pinned host memory are not device allocations
 *   and are not counted. Kernels built the ordinary way run uncounted (their records show 0 bytes).
 * - cuBLAS GEMMs: one record per call, A and B read and C written (C read too when beta ≠ 0),
 *   all at width 16 (cuBLAS's tiles use 16-byte loads).
 * - copies and fills queued on a stream: one record each; device bytes at width 16.
 * - host synchronisations: every call that makes the host wait for a device; host_syncs_inside
 *   counts those that come after the interval's first queued operation and before its last (an
 *   operation is queued when the host issues it on a stream: sim_machine.next_seq), so a step's
 *   own round trips are told apart from the waits at its edges.
 * - distinct bytes: per record, the bytes of device memory touched at least once; per step,
 *   the bytes read at least once, in total and restricted to allocations the step never writes
 *   (in a decode step: the weights).
 */
#ifndef DSV2_SIM_COUNTERS_H
#define DSV2_SIM_COUNTERS_H

#include "cuda_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Access widths counted: 1, 2, 4, 8, 16 bytes, then "other" (aggregate copies of other sizes). */
#define SIM_WIDTHS 6

/** Bytes of width class w (0..4): 1 << w. Class 5 is "other". */
#define SIM_WIDTH_BYTES(w) (1u << (w))

/** What a record describes. */
typedef enum { SIM_REC_KERNEL = 0, SIM_REC_GEMM = 1, SIM_REC_COPY = 2, SIM_REC_FILL = 3 } SimRecordKind;

/** One launch (kernel, GEMM, copy or fill) executed while counting. */
typedef struct {
    char name[48];                          /**< kernel name, "cublasGemm", "memcpy", "memset" */
    SimRecordKind kind;                     /**< what it was */
    int device;                             /**< device whose stream ran it */
    const void *stream;                     /**< the stream it was queued on */
    dim3 grid;                              /**< launch grid (kernels) */
    dim3 block;                             /**< launch block (kernels) */
    int in_graph;                           /**< replayed from a CUDA graph */
    unsigned long long read[SIM_WIDTHS];    /**< global bytes read, by width class */
    unsigned long long written[SIM_WIDTHS]; /**< global bytes written, by width class */
    unsigned long long distinct;            /**< distinct device bytes read or written */
    int stages; /**< distinct stage counters its blocks waited on (kernels/stage.cuh): dependencies inside it */
} SimLaunchRecord;

/** Totals of one counted interval. */
typedef struct {
    unsigned long long kernels;                   /**< kernel launches run */
    unsigned long long gemms;                     /**< cuBLAS GEMM calls run */
    unsigned long long copies;                    /**< stream copies run */
    unsigned long long fills;                     /**< stream fills run */
    unsigned long long graph_launches;            /**< cudaGraphLaunch replays run */
    unsigned long long host_syncs;                /**< calls that made the host wait for a device */
    unsigned long long h2d_bytes;                 /**< host→device copy bytes */
    unsigned long long d2h_bytes;                 /**< device→host copy bytes */
    unsigned long long d2d_bytes;                 /**< device-to-device and peer copy bytes */
    unsigned long long nccl_bytes[8][8];          /**< NCCL bytes sent from rank device [i] to device [j] */
    unsigned long long read[SIM_WIDTHS];          /**< global bytes read by width class, every record */
    unsigned long long written[SIM_WIDTHS];       /**< global bytes written by width class */
    unsigned long long distinct_read;             /**< device bytes read at least once */
    unsigned long long ro_read;                   /**< bytes read from allocations the interval never wrote */
    unsigned long long ro_distinct;               /**< distinct bytes of those reads */
    unsigned long long ro_read_width[SIM_WIDTHS]; /**< ro_read by width class */
    size_t high_water[8];                         /**< per device: most bytes allocated at once */
    unsigned long long
        queued; /**< operations the host queued on streams (launches, copies, fills, GEMMs, graph launches, events) */
    unsigned long long
        host_syncs_inside; /**< host_syncs after the interval's first queued operation and before its last */
} SimStepCounters;

/** Clears the records and totals and starts counting (the high-water mark restarts at what is allocated now). */
void sim_counters_start(void);
/** Stops counting and writes the interval's totals. */
void sim_counters_stop(SimStepCounters *out);
/** The records of the last interval, in execution order; *n receives their number. */
const SimLaunchRecord *sim_counters_records(size_t *n);
/**
 * Bytes read from the device allocation containing p in the last interval (*read) and how many
 * distinct bytes they covered (*distinct); 0 and 0 when nothing of it was read.
 */
void sim_counters_alloc_reads(const void *p, unsigned long long *read, unsigned long long *distinct);
/** Sum of a record's (or a total's) bytes over every width class. */
unsigned long long sim_counters_sum(const unsigned long long v[SIM_WIDTHS]);

#ifdef __cplusplus
}
#endif

#endif
