/**
 * \file fault_sweep.h
 * \brief The SIM_FAIL_MALLOC sweep shared by the fault suites: every cudaMalloc of a run made to fail in
 *        turn, each in a fresh child process, and the failure checked to be clean.
 *
 * The simulated device reads SIM_FAIL_MALLOC once, when it starts, so each N runs in a child: the suite's
 * binary spawned again with the arguments `child ID N`. The child sets the variable before its first CUDA
 * call, runs, and prints what it saw; the parent asserts for each N that the child exited normally, the
 * run returned −1 with one error line naming cudaMalloc, a file and a line, and no device allocation is
 * live afterwards. N = count + 1 must succeed, which shows the count is exact.
 *
 * This file knows nothing of the simulator's symbols (it is linked into the real-GPU suites too): the
 * suite passes the counters in through FaultSweep.counts.
 */
#ifndef DSV2_TESTS_FAULT_SWEEP_H
#define DSV2_TESTS_FAULT_SWEEP_H

/** The device counters a sweep reads (the simulator's sim_stats()). */
typedef struct {
    unsigned long long malloc_calls; /**< cudaMalloc calls so far */
    unsigned long long live_allocs;  /**< device allocations not yet freed */
    unsigned long long live_bytes;   /**< their bytes */
} FaultCounts;

/** One run under test. */
typedef struct {
    const char *id;                   /**< names the run on the child's command line (no spaces) */
    const char *what;                 /**< printed description */
    int (*run)(void);                 /**< the run: 0, or −1 with one ds_error() line; leaves nothing open */
    void (*counts)(FaultCounts *out); /**< the counters now */
} FaultSweep;

/**
 * The child side: SIM_FAIL_MALLOC = n and SIM_QUIET = 1, then fs->run(), then prints "rc R", "live L B"
 * and "error E" on standard output. \return the child's exit status (0).
 */
int fault_sweep_child(const FaultSweep *fs, const char *n);

/**
 * The parent side, inside a CMocka test: counts the cudaMalloc calls of one clean run in this process,
 * then for N = 1 .. count + 1 spawns `self child fs->id N` and asserts as described above.
 */
void fault_sweep_run(const FaultSweep *fs, const char *self);

#endif
