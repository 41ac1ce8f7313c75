/**
 * \file test_sample.c
 * \brief Token sampling: greedy argmax and its tie rule, temperature sampling frequencies
 * against softmax(logits / T), the top-p nucleus, top-k alone and before top-p (frequencies
 * against hand-computed renormalised distributions), the repetition penalty (exact values), and
 * seeded reproducibility.
 */
#include "check.h"
#include "sample.h"

#include <math.h>
#include <string.h>

static TestRng g_rng;

static int group_setup(void **state)
{
    (void)state;
    test_rng_seed(&g_rng, "sample");
    return 0;
}

enum { V = 7, DRAWS = 20000 };

static void greedy_is_argmax_lowest_index_on_ties(void **state)
{
    (void)state;
    const float tied[V] = { 0.5f, 2.0f, -1.0f, 2.0f, 1.9f, 2.0f, 0.0f };
    assert_int_equal(sample_argmax(tied, V), 1);
    const float last[3] = { -3, -2, -1 };
    assert_int_equal(sample_argmax(last, 3), 2);
    Sampler s;
    assert_int_equal(sampler_init(&s, V, 0, 1, 42), 0);
    for (int i = 0; i < 10; i++) assert_int_equal(sample_next(&s, tied), 1);
    float x[V];
    for (int trial = 0; trial < 100; trial++) {
        test_rng_fill(&g_rng, x, V, -5, 5);
        int best = 0;
        for (int i = 1; i < V; i++)
            if (x[i] > x[best]) best = i;
        assert_int_equal(sample_next(&s, x), best);
    }
    sampler_free(&s);
}

/* softmax(logits / T) in double. */
static void softmax_double(double *p, const float *logits, int n, double T)
{
    double max = logits[0], sum = 0;
    for (int i = 1; i < n; i++) max = fmax(max, logits[i]);
    for (int i = 0; i < n; i++) sum += p[i] = exp((logits[i] - max) / T);
    for (int i = 0; i < n; i++) p[i] /= sum;
}

/* Draws DRAWS tokens and checks each token's frequency against p within 5 standard errors
 * (a binomial count's sd is sqrt(N p (1 − p)); 5 sd fails once in ~1.7 million per token). */
static void check_frequencies(Sampler *s, const float *logits, const double *p)
{
    int count[V] = { 0 };
    for (int d = 0; d < DRAWS; d++) {
        const int tok = sample_next(s, logits);
        assert_in_range(tok, 0, V - 1);
        count[tok]++;
    }
    float z[V], zero[V] = { 0 };
    for (int i = 0; i < V; i++) {
        const double sd = sqrt(DRAWS * p[i] * (1 - p[i]));
        if (p[i] == 0 || p[i] == 1) { /* certain: every draw, or none */
            assert_int_equal(count[i], p[i] == 1 ? DRAWS : 0);
            z[i] = 0;
            continue;
        }
        z[i] = (float)((count[i] - DRAWS * p[i]) / sd);
    }
    check_close("frequency z-scores", z, zero, V, 5, -1);
}

static void temperature_frequencies_match_softmax(void **state)
{
    (void)state;
    const float logits[V] = { 1.0f, 0.2f, -0.5f, 1.3f, 0.0f, -2.0f, 0.7f };
    static const double temps[] = { 1.0, 0.6, 2.5 };
    for (size_t k = 0; k < sizeof temps / sizeof *temps; k++) {
        double p[V];
        softmax_double(p, logits, V, temps[k]);
        Sampler s;
        assert_int_equal(sampler_init(&s, V, (float)temps[k], 1, 1000 + k), 0);
        check_frequencies(&s, logits, p);
        sampler_free(&s);
    }
}

static void top_p_stays_in_the_nucleus(void **state)
{
    (void)state;
    /* p = {0.06, 0.25, 0.04, 0.40, 0.10, 0.15, ~0}: cumulative mass in order 0.40, 0.65, 0.80,
     * so the nucleus for top_p 0.6 is {3, 1} and for 0.75 it is {3, 1, 5}; every boundary is
     * 0.05 away from the cut */
    const double p0[V] = { 0.06, 0.25, 0.04, 0.40, 0.10, 0.15, 1e-30 };
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)log(p0[i]);
    static const float top_p[2] = { 0.6f, 0.75f };
    static const int nucleus[2][V] = { { 0, 1, 0, 1, 0, 0, 0 }, { 0, 1, 0, 1, 0, 1, 0 } };
    for (int k = 0; k < 2; k++) {
        double p[V], mass = 0;
        softmax_double(p, logits, V, 1.0);
        for (int i = 0; i < V; i++) mass += nucleus[k][i] ? p[i] : 0;
        for (int i = 0; i < V; i++) p[i] = nucleus[k][i] ? p[i] / mass : 0; /* renormalised */
        Sampler s;
        assert_int_equal(sampler_init(&s, V, 1, top_p[k], 7 + k), 0);
        check_frequencies(&s, logits, p); /* also asserts no draw outside the nucleus */
        sampler_free(&s);
    }
}

/* The distribution of top_p_stays_in_the_nucleus: p = {0.06, 0.25, 0.04, 0.40, 0.10, 0.15, ~0}. */
static void nucleus_logits(float *logits)
{
    const double p0[V] = { 0.06, 0.25, 0.04, 0.40, 0.10, 0.15, 1e-30 };
    for (int i = 0; i < V; i++) logits[i] = (float)log(p0[i]);
}

static void top_k_keeps_the_k_most_probable(void **state)
{
    (void)state;
    float logits[V];
    nucleus_logits(logits);
    /* by hand: top-3 keeps {3, 1, 5} with mass 0.80, so p = 0.40/0.80, 0.25/0.80, 0.15/0.80;
     * top-3 then top-p 0.7: shares 0.5, 0.8125 of that mass, so the nucleus is {3, 1} with
     * p = 0.40/0.65, 0.25/0.65; top-1 is greedy */
    static const struct {
        int k;
        float top_p;
        double p[V];
    } cases[] = {
        { 3, 1, { 0, 0.3125, 0, 0.5, 0, 0.1875, 0 } },
        { 3, 0.7f, { 0, 0.25 / 0.65, 0, 0.40 / 0.65, 0, 0, 0 } },
        { 1, 1, { 0, 0, 0, 1, 0, 0, 0 } },
        { V, 1, { 0.06, 0.25, 0.04, 0.40, 0.10, 0.15, 0 } },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        Sampler s;
        assert_int_equal(sampler_init(&s, V, 1, cases[c].top_p, 31 + c), 0);
        s.top_k = cases[c].k;
        check_frequencies(&s, logits, cases[c].p);
        sampler_free(&s);
    }
}

static void repeat_penalty_divides_positive_and_multiplies_negative(void **state)
{
    (void)state;
    /* powers of two, so every result is exact: each distinct id once (0 appears twice), ids
     * outside the vocabulary ignored, unseen ids untouched */
    float logits[5] = { 2, -1, 0.5f, 0, 3 };
    const int recent[6] = { 0, 1, 0, 7, -1, 4 };
    sample_repeat_penalty(logits, 5, recent, 6, 2);
    const float want[5] = { 1, -2, 0.5f, 0, 1.5f };
    assert_memory_equal(logits, want, sizeof want);
    sample_repeat_penalty(logits, 5, recent, 6, 1); /* penalty 1: unchanged */
    assert_memory_equal(logits, want, sizeof want);
    /* greedy after the penalty: the seen leader 2 (1.0 → 0.25) falls below unseen 1 (0.75) */
    float g[3] = { 0.5f, 0.75f, 1.0f };
    const int seen[1] = { 2 };
    sample_repeat_penalty(g, 3, seen, 1, 4);
    assert_int_equal(sample_argmax(g, 3), 1); /* 1.0 / 4 = 0.25 < 0.75 */
}

static void same_seed_same_sequence(void **state)
{
    (void)state;
    float logits[V];
    test_rng_fill(&g_rng, logits, V, -1, 1);
    int a[200], b[200], c[200];
    Sampler s1, s2, s3;
    const uint64_t seed = (uint64_t)(test_rng_uniform(&g_rng, 1, 1e6f));
    assert_int_equal(sampler_init(&s1, V, 0.8f, 0.9f, seed), 0);
    assert_int_equal(sampler_init(&s2, V, 0.8f, 0.9f, seed), 0);
    assert_int_equal(sampler_init(&s3, V, 0.8f, 0.9f, seed + 1), 0);
    for (int i = 0; i < 200; i++) {
        a[i] = sample_next(&s1, logits);
        b[i] = sample_next(&s2, logits);
        c[i] = sample_next(&s3, logits);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    sampler_free(&s1);
    sampler_free(&s2);
    sampler_free(&s3);
    /* seed 0 is usable (replaced by a fixed constant), not a stuck generator */
    Sampler z;
    assert_int_equal(sampler_init(&z, V, 1, 1, 0), 0);
    int seen[V] = { 0 }, distinct = 0;
    for (int i = 0; i < 200; i++) seen[sample_next(&z, logits)] = 1;
    for (int i = 0; i < V; i++) distinct += seen[i];
    assert_true(distinct > 1);
    sampler_free(&z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greedy_is_argmax_lowest_index_on_ties),
        cmocka_unit_test(temperature_frequencies_match_softmax),
        cmocka_unit_test(top_p_stays_in_the_nucleus),
        cmocka_unit_test(top_k_keeps_the_k_most_probable),
        cmocka_unit_test(repeat_penalty_divides_positive_and_multiplies_negative),
        cmocka_unit_test(same_seed_same_sequence),
    };
    return cmocka_run_group_tests_name("sample", tests, group_setup, NULL);
}
