/**
 * \file check.c
 * \brief Numerical comparison helpers for the test suites (see check.h).
 */
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

CheckStats check_stats(const float *got, const float *want, size_t n)
{
    CheckStats st = { 0, 0, 0, 0 };
    double diff2 = 0, want2 = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            if (st.nonfinite++ == 0) st.worst = i;
            continue;
        }
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > st.max_abs) {
            st.max_abs = d;
            if (st.nonfinite == 0) st.worst = i;
        }
        diff2 += d * d;
        want2 += (double)want[i] * want[i];
    }
    st.rel_l2 = want2 > 0 ? sqrt(diff2 / want2) : sqrt(diff2);
    return st;
}

void check_close_at(const char *file, int line, const char *what, const float *got, const float *want, size_t n,
                    double max_abs, double rel_l2)
{
    CheckStats st = check_stats(got, want, n);
    int bad = st.nonfinite > 0 || (max_abs >= 0 && st.max_abs > max_abs) || (rel_l2 >= 0 && st.rel_l2 > rel_l2);
    if (!bad) return;
    fail_msg("%s:%d: %s: %zu non-finite, max-abs %.9g (tol %.3g), rel-L2 %.9g (tol %.3g), "
             "worst [%zu] got %.9g want %.9g",
             file, line, what, st.nonfinite, st.max_abs, max_abs, st.rel_l2, rel_l2, st.worst, (double)got[st.worst],
             (double)want[st.worst]);
}

void poison(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

void test_rng_seed(TestRng *rng, const char *suite)
{
    const char *env = getenv("DSV2_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    if (seed == 0) seed = 0x9E3779B97F4A7C15ull;
    printf("%s: DSV2_TEST_SEED=%llu\n", suite, (unsigned long long)seed);
    rng->s = seed;
}

float test_rng_uniform(TestRng *rng, float lo, float hi)
{
    rng->s ^= rng->s >> 12;
    rng->s ^= rng->s << 25;
    rng->s ^= rng->s >> 27;
    uint64_t r = rng->s * 0x2545F4914F6CDD1Dull;
    return lo + (hi - lo) * (float)((r >> 40) * (1.0 / 16777216.0));
}

void test_rng_fill(TestRng *rng, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) x[i] = test_rng_uniform(rng, lo, hi);
}
