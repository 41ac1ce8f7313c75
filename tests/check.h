/**
 * \file check.h
 * \brief Numerical comparison for the test suites.
 *
 * CMocka's assert_float_equal passes when a side is NaN and prints with %f,
 * so every numerical test goes through check_close(): it fails on any
 * non-finite value first, then reports the max-abs error, the relative L2
 * error ‖a − b‖ / ‖b‖ and the worst index with %.9g.
 */
#ifndef DSV2_TESTS_CHECK_H
#define DSV2_TESTS_CHECK_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

/** Error figures of one comparison. */
typedef struct {
    double max_abs;   /**< max_i |got_i − want_i| */
    double rel_l2;    /**< ‖got − want‖₂ / ‖want‖₂ (‖Δ‖ itself when ‖want‖ is 0) */
    size_t worst;     /**< index of the max-abs error */
    size_t nonfinite; /**< number of non-finite entries in got */
} CheckStats;

/** Computes the error figures of got against want, both of length n. */
CheckStats check_stats(const float *got, const float *want, size_t n);

/**
 * Fails the current test (fail_msg) unless every got[i] is finite,
 * the max-abs error is ≤ max_abs and the relative L2 error is ≤ rel_l2.
 * A negative tolerance disables that criterion. what names the comparison.
 */
#define check_close(what, got, want, n, max_abs, rel_l2) \
    check_close_at(__FILE__, __LINE__, (what), (got), (want), (n), (max_abs), (rel_l2))

/** Implementation of check_close(); prints the figures on failure. */
void check_close_at(const char *file, int line, const char *what, const float *got, const float *want, size_t n,
                    double max_abs, double rel_l2);

/** Fills x[0..n) with NaN, so that any element a function fails to write shows up. */
void poison(float *x, size_t n);

/** A small seeded generator (xorshift64*), so tests draw fresh but reproducible inputs. */
typedef struct {
    uint64_t s;
} TestRng;

/** Seeds rng; the seed is taken from DSV2_TEST_SEED when set, else from the clock, and printed. */
void test_rng_seed(TestRng *rng, const char *suite);
/** Uniform float in [lo, hi). */
float test_rng_uniform(TestRng *rng, float lo, float hi);
/** Fills x[0..n) with uniform values in [lo, hi). */
void test_rng_fill(TestRng *rng, float *x, size_t n, float lo, float hi);

#endif
