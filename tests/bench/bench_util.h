/**
 * \file bench_util.h
 * \brief What every benchmark needs: a monotonic clock and the median of repeated runs.
 */
#ifndef DSV2_BENCH_UTIL_H
#define DSV2_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

/** Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/** The median of x[0..n) (sorts x). */
static inline double bench_median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, bench_cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

#endif
