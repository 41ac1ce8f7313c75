/**
 * \file lab.h
 * \brief The kernel lab's harness: shapes, comparison with the reference, verdicts, errors in the contract's terms.
 *
 * One harness binary per (component, kernel file): tests/lab/lab.c (main,
 * comparison, error mapping, timing) + tests/lab/lab_<component>.c (the
 * shape suite and the reference) + the user's kernel file defining the
 * contract's launcher (kernels/lab/contract.h). kernels/lab/lab.mk builds
 * and runs it for `make check-kernel`.
 *
 * A component's suite runs shapes one at a time: lab_shape_begin(), then
 * lab_arg() for every argument the launcher receives (name, device pointer,
 * size, layout), then the launch through lab_call() and lab_sync(), then
 * comparisons (lab_compare(), lab_compare_ints()), then lab_shape_end(),
 * which prints the shape's line. Any problem is recorded as the shape's
 * diagnosis, phrased with the contract's argument names and the shape.
 */
#ifndef DSV2_TESTS_LAB_H
#define DSV2_TESTS_LAB_H

#include <cuda_runtime.h>
#include <stdbool.h>
#include <stddef.h>

#include "check.h"

/** What the harness was asked to do (command-line options). */
typedef struct {
    const char *src; /**< the kernel file, for messages */
    bool racecheck;  /**< SIM_RACECHECK is on */
    bool gpu;        /**< built for a real GPU: time the kernel beside the project's */
    int reps;        /**< timed repetitions on a GPU */
} LabOptions;

/** A component: its name, its launcher's name and its shape suite. */
typedef struct {
    const char *name;     /**< COMPONENT= value */
    const char *launcher; /**< the contract's function, lab_<name> */
    void (*run)(void);    /**< runs every shape of the suite */
} LabComponent;

/** Defined by each tests/lab/lab_<component>.c. */
extern const LabComponent lab_component;

/** The generator every suite draws its inputs from (seeded afresh for each seed of the run, printed). */
extern TestRng lab_rng;

/** The options of this run. */
extern LabOptions lab_options;

/** Starts a shape; name is printed (printf format). */
void lab_shape_begin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * Registers a launcher argument of the current shape: its name in the
 * contract, its device pointer and bytes, its element size, and its layout
 * as up to 4 dimensions with their names ("T,n" for [T, n]), so that an
 * address or element index can be reported as argument[coordinates].
 */
void lab_arg(const char *name, const void *ptr, size_t bytes, size_t elem, const char *dim_names, int rank,
             const int *dims);

/** Allocates bytes of device memory and copies host into it (host may be NULL: filled with 0xff, NaN floats). */
void *lab_device(const void *host, size_t bytes);

/** Copies bytes of device memory to host. */
void lab_host(void *host, const void *dev, size_t bytes);

/** Frees every lab_device() allocation of the current shape. */
void lab_free_all(void);

/**
 * Checks what the launcher returned; on an error records the diagnosis (the
 * error name, the simulator's detail with pointers named by argument) and
 * returns false.
 */
bool lab_call(cudaError_t launched);

/** Synchronises the device; on an error (race, barrier divergence, fault) records the diagnosis, returns false. */
bool lab_sync(void);

/**
 * Compares got with want (n floats, the reference; arg names the output as
 * registered): non-finite pattern first (a NaN where the reference is finite
 * is an unwritten or broken element), then relative L2 ≤ rel_tol. Prints
 * nothing; the figures go into the shape's line. Returns true when it passes.
 */
bool lab_compare(const char *arg, const float *got, const float *want, size_t n, double rel_tol);

/**
 * Element-wise comparison: every element must satisfy |got − want| ≤ atol + rtol·|want|,
 * after the same non-finite check as lab_compare(); the figures (rel-L2, max-abs,
 * cosine, non-finite) are the same. Returns true when it passes.
 */
bool lab_compare_pointwise(const char *arg, const float *got, const float *want, size_t n, double atol, double rtol);

/**
 * Exact comparison of a discrete output (expert ids, counts, rows). skip, when
 * not NULL, marks entries whose reference value is a near tie (not compared;
 * counted and printed). Returns true when every compared entry agrees.
 */
bool lab_compare_ints(const char *arg, const int *got, const int *want, size_t n, const bool *skip);

/**
 * Exact comparison of rows of a discrete output taken as sets (expert ids per
 * token, in any order): got and want are [rows, k]; skip, when not NULL,
 * marks rows that are near ties (not compared; counted and printed). Returns
 * true when every compared row holds the same k values.
 */
bool lab_compare_sets(const char *arg, const int *got, const int *want, int rows, int k, const bool *skip);

/** Records a failure of the current shape in words (printf format). */
void lab_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * On a GPU build: times run(ctx, false) (the user's kernel) and run(ctx, true)
 * (the project's) with events over lab_options.reps calls and prints both with
 * the bandwidth bytes/time and the rate flops/time. Does nothing on sim/.
 */
void lab_time(cudaError_t (*run)(void *ctx, bool project), void *ctx, double bytes, double flops);

/** Ends the shape: prints its line (figures and PASS/FAIL) and frees its device memory. */
void lab_shape_end(void);

#endif
