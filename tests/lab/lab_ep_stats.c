/**
 * \file lab_ep_stats.c
 * \brief Kernel lab, component `ep_stats`: lab_ep_stats against the statistics ref/balance.c's balance_losses
 *        is built from (per-expert counts, affinity sums, tokens per device).
 *
 * Scores are softmax affinities of logits uniform in [-4, 4) (ref/router.h's
 * router_scores); each token's K experts come from ref/balance.h's
 * device_limited_route over N devices with device limit M, so the ids are
 * distinct per token and, at V2's shape, confined to M of the 8 devices as
 * the paper routes them.
 *
 * The reference repeats balance_losses' loops (ref/balance.c): count[e] adds
 * one per assignment, dev_tokens[d] one per token that has at least one
 * expert on device d (the `sent` flags), score_sum[e] sums s_{e,t} over t in
 * double. balance_losses returns only the losses, so the harness checks
 * itself first: the losses computed from its statistics (f_i = E/(K·T)·count_i,
 * P_i = score_sum_i/T, f'_d, f''_d = N/(M·T)·dev_tokens_d) must equal
 * balance_losses' to 1e-12, or the shape fails as a harness error.
 *
 * count and dev_tokens are compared exactly; score_sum element by element
 * with |got − ref| ≤ 1e-5·|ref| (sums of positive terms: no cancellation,
 * float32 rounding in any order stays near √T·6e-8).
 *
 * Shapes: tiny (T 1, E 2, K 1, one device); odd (T 37, E 12, K 3, 3 devices,
 * M 2; T 13, E 15, K 4, 5 devices, M 2); V2-Lite (T 512, E 64, K 6, one
 * device); V2 (T 512, E 160, K 6, 8 devices, M 3).
 */
#include "balance.h"
#include "contract.h"
#include "lab.h"
#include "router.h"

#include <math.h>
#include <stdlib.h>

/** One shape's device buffers, for the timed runs. */
typedef struct {
    int *count, *dev_tokens, *idx;
    float *score_sum, *scores;
    int T, K, E, N;
} StatsRun;

static cudaError_t run_stats(void *ctx, bool project)
{
    const StatsRun *r = ctx;
    return (project ? ep_route_stats_v1 : lab_ep_stats)(r->count, r->score_sum, r->dev_tokens, r->idx, r->scores, r->T,
                                                        r->K, r->E, r->N, 0);
}

/* The reference statistics, balance_losses' loops: counts per expert, tokens per device, affinity sums in double. */
static void reference(int *count, double *score_sum, int *dev_tokens, const int *idx, const float *scores, int T, int K,
                      int E, int N)
{
    const int per_device = E / N;
    for (int e = 0; e < E; e++) {
        count[e] = 0;
        score_sum[e] = 0.0;
    }
    for (int d = 0; d < N; d++) dev_tokens[d] = 0;
    for (int t = 0; t < T; t++) {
        bool sent[ROUTER_MAX_EXPERTS] = { false };
        for (int k = 0; k < K; k++) {
            const int e = idx[(size_t)t * K + k];
            count[e]++;
            sent[e / per_device] = true;
        }
        for (int d = 0; d < N; d++) dev_tokens[d] += sent[d];
        for (int e = 0; e < E; e++) score_sum[e] += scores[(size_t)t * E + e];
    }
}

/* Whether the losses built from the reference statistics equal balance_losses' (the harness's own check). */
static bool losses_agree(const int *count, const double *score_sum, const int *dev_tokens, const float *scores,
                         const int *idx, int T, int K, int E, int N, int M)
{
    const BalanceSpec b = { E, K, N, M, 1.0, 1.0, 1.0 };
    const BalanceLosses want = balance_losses(scores, idx, T, &b, NULL);
    const int per_device = E / N;
    double expert = 0.0, device = 0.0, comm = 0.0;
    for (int d = 0; d < N; d++) {
        double f_dev = 0.0, P_dev = 0.0;
        for (int e = d * per_device; e < (d + 1) * per_device; e++) {
            const double f = (double)E / ((double)K * T) * count[e], P = score_sum[e] / T;
            expert += f * P;
            f_dev += f / per_device;
            P_dev += P;
        }
        device += f_dev * P_dev;
        comm += (double)N / ((double)M * T) * dev_tokens[d] * P_dev;
    }
    return fabs(expert - want.expert) <= 1e-12 * fabs(want.expert) &&
           fabs(device - want.device) <= 1e-12 * fabs(want.device) && fabs(comm - want.comm) <= 1e-12 * fabs(want.comm);
}

static void shape(const char *kind, int T, int E, int K, int N, int M)
{
    const size_t TE = (size_t)T * E, TK = (size_t)T * K;
    float *g = malloc(sizeof(float) * TE), *s = malloc(sizeof(float) * TE);
    float *sum_want = malloc(sizeof(float) * E), *sum_got = malloc(sizeof(float) * E);
    double *sum_ref = malloc(sizeof(double) * E);
    int *idx = malloc(sizeof(int) * TK), *c_want = malloc(sizeof(int) * E), *c_got = malloc(sizeof(int) * E);
    int *d_want = malloc(sizeof(int) * N), *d_got = malloc(sizeof(int) * N);
    test_rng_fill(&lab_rng, g, TE, -4.0f, 4.0f);
    for (int t = 0; t < T; t++) {
        router_scores(s + (size_t)t * E, g + (size_t)t * E, E, SCORING_SOFTMAX);
        device_limited_route(idx + (size_t)t * K, s + (size_t)t * E, E, K, N, M);
    }
    reference(c_want, sum_ref, d_want, idx, s, T, K, E, N);
    for (int e = 0; e < E; e++) sum_want[e] = (float)sum_ref[e];

    lab_shape_begin("%-4s T %3d, E %3d, K %d, %d device%s (M %d)", kind, T, E, K, N, N == 1 ? " " : "s", M);
    StatsRun r = { lab_device(NULL, sizeof(int) * E),
                   lab_device(NULL, sizeof(int) * N),
                   lab_device(idx, sizeof(int) * TK),
                   lab_device(NULL, sizeof(float) * E),
                   lab_device(s, sizeof(float) * TE),
                   T,
                   K,
                   E,
                   N };
    const int d_e[1] = { E }, d_n[1] = { N }, d_tk[2] = { T, K }, d_te[2] = { T, E };
    lab_arg("count", r.count, sizeof(int) * E, sizeof(int), "e", 1, d_e);
    lab_arg("score_sum", r.score_sum, sizeof(float) * E, sizeof(float), "e", 1, d_e);
    lab_arg("dev_tokens", r.dev_tokens, sizeof(int) * N, sizeof(int), "d", 1, d_n);
    lab_arg("idx", r.idx, sizeof(int) * TK, sizeof(int), "t, k", 2, d_tk);
    lab_arg("scores", r.scores, sizeof(float) * TE, sizeof(float), "t, e", 2, d_te);
    if (!losses_agree(c_want, sum_ref, d_want, s, idx, T, K, E, N, M))
        lab_fail("harness error: the losses from the reference statistics differ from ref/balance.c's balance_losses");
    else if (lab_call(lab_ep_stats(r.count, r.score_sum, r.dev_tokens, r.idx, r.scores, T, K, E, N, 0)) && lab_sync()) {
        lab_host(c_got, r.count, sizeof(int) * E);
        lab_host(sum_got, r.score_sum, sizeof(float) * E);
        lab_host(d_got, r.dev_tokens, sizeof(int) * N);
        /* every comparison runs, so the line shows which outputs agree */
        lab_compare_ints("count", c_got, c_want, (size_t)E, NULL);
        lab_compare_pointwise("score_sum", sum_got, sum_want, (size_t)E, 0.0, 1e-5);
        lab_compare_ints("dev_tokens", d_got, d_want, (size_t)N, NULL);
        /* bytes: scores and ids read, the statistics written; flops: one add per affinity */
        lab_time(run_stats, &r, 4.0 * TE + 4.0 * TK + 8.0 * E + 4.0 * N, (double)TE);
    }
    lab_shape_end();
    free(g);
    free(s);
    free(sum_want);
    free(sum_got);
    free(sum_ref);
    free(idx);
    free(c_want);
    free(c_got);
    free(d_want);
    free(d_got);
}

static void run(void)
{
    shape("tiny", 1, 2, 1, 1, 1);
    shape("odd", 37, 12, 3, 3, 2);
    shape("odd", 13, 15, 4, 5, 2);
    shape("Lite", 512, 64, 6, 1, 1);
    shape("V2", 512, 160, 6, 8, 3);
}

const LabComponent lab_component = { "ep_stats", "lab_ep_stats", run };
