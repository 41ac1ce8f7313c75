/**
 * \file sim.h
 * \brief What the simulated device offers beyond the CUDA API: error details and counters.
 */
#ifndef DSV2_SIM_SIM_H
#define DSV2_SIM_SIM_H

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The sentence behind the most recent error of the runtime, cuBLAS or NCCL
 * (which call, kernel, argument, pointer, thread), "" when there was none.
 */
const char *sim_last_detail(void);

/** Counters since the process started, for the benchmarks and the leak checks. */
typedef struct SimStats {
    unsigned long long launches;       /**< kernel launches executed */
    unsigned long long blocks;         /**< blocks executed */
    unsigned long long threads;        /**< simulated threads executed */
    unsigned long long fiber_switches; /**< context switches between fibers and the scheduler */
    unsigned long long malloc_calls;   /**< cudaMalloc calls, failed ones included (what SIM_FAIL_MALLOC counts) */
    unsigned long long live_allocs;    /**< device allocations not yet freed, over every device */
    unsigned long long live_bytes;     /**< their bytes */
} SimStats;

/** Reads the counters. */
void sim_stats(SimStats *stats);

#ifdef __cplusplus
}
#endif

#endif
