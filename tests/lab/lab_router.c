/**
 * \file lab_router.c
 * \brief Kernel lab, component `router`: lab_router against ref/router.c's router_scores + router_select.
 *
 * Logits uniform in [-4, 4) (bias in [-0.1, 0.1) for noaux_tc); the
 * reference runs router_scores() and router_select() per token.
 *
 * Expert ids are compared per token as sets (lab_compare_sets), so the order
 * within a token is free. A token is a near tie, skipped and counted, when
 * the reference's own margin — between its K-th and (K+1)-th selection
 * score after group masking, or between the last kept and the best dropped
 * group score — is below 1e-6: float32 rounding in another summation order
 * may legitimately swap such candidates. An exact tie at the expert
 * boundary — the K-th and (K+1)-th candidates have bit-identical logits
 * (and biases) — is not skipped: equal inputs give equal scores in any
 * kernel, and the contract's rule (the lower index wins) decides it. The
 * suite has a shape built of such ties.
 *
 * Weights are compared by expert id (relative L2 ≤ 1e-6: a softmax and at
 * most a K-term normalisation, a few units in the last place), affinities by
 * relative L2 ≤ 1e-5.
 *
 * Shapes: tiny (E 4, K 1); odd (E 12 in 4 groups of 3, 2 kept, K 3,
 * normalised); designed exact ties (greedy, E 16, K 4); V2-Lite (greedy,
 * E 64, K 6); V2 (group_limited_greedy, E 160 in 8 groups, 3 kept, K 6,
 * ×16); V3-style noaux_tc (sigmoid + bias, E 256 in 8 groups, 4 kept by
 * top-2 sums, K 8, normalised, ×2.5); V2's two methods with the weights
 * renormalised and a factor other than 1 (greedy E 64, K 6, ×2.5;
 * group_limited_greedy E 160, K 6, ×16), where renormalising replaces the
 * factor, so a kernel that applies both is caught.
 */
#include "contract.h"
#include "lab.h"
#include "router.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NEAR_TIE 1e-6f

/** One shape's device buffers, for the timed runs. */
typedef struct {
    int *idx;
    float *weight, *scores, *logits, *bias;
    RouterParams p;
    int T;
} RouterRun;

static cudaError_t run_router(void *ctx, bool project)
{
    const RouterRun *r = ctx;
    return (project ? router_forward_v2 : lab_router)(r->idx, r->weight, r->scores, r->logits, r->bias, r->p, r->T, 0);
}

/* Index of the largest of score[0..n) not in taken (k of them), lowest index first; -1 when none is left. */
static int best_other(const float *score, int n, const int *taken, int k)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        bool in = false;
        for (int j = 0; j < k && !in; j++) in = taken[j] == i;
        if (!in && (best < 0 || score[i] > score[best])) best = i;
    }
    return best;
}

/*
 * Whether the reference's choice for one token is a near tie: its smallest decision margin (groups, then
 * experts after masking) is below NEAR_TIE, except an exact tie between experts of bit-identical inputs.
 * idx: the reference's K ids, best first.
 */
static bool near_tie(const float *s, const float *g, const float *bias, const int *idx, const ModelConfig *c)
{
    const int E = c->n_routed_experts, K = c->num_experts_per_tok, G = c->n_group, per = E / G;
    const bool tc = c->topk_method == TOPK_NOAUX_TC;
    float sel[ROUTER_MAX_EXPERTS];
    for (int i = 0; i < E; i++) sel[i] = s[i] + (tc ? bias[i] : 0.0f);
    if (c->topk_method != TOPK_GREEDY) {
        float gs[ROUTER_MAX_EXPERTS];
        int kept[ROUTER_MAX_EXPERTS];
        for (int q = 0; q < G; q++) {
            const float *x = sel + q * per;
            float best = x[0], second = -INFINITY;
            for (int i = 1; i < per; i++) {
                if (x[i] > best) {
                    second = best;
                    best = x[i];
                } else if (x[i] > second)
                    second = x[i];
            }
            gs[q] = tc ? best + second : best;
        }
        for (int r = 0; r < c->topk_group; r++) kept[r] = best_other(gs, G, kept, r);
        const int dropped = best_other(gs, G, kept, c->topk_group);
        if (dropped >= 0 && gs[kept[c->topk_group - 1]] - gs[dropped] < NEAR_TIE) return true;
        for (int i = 0; i < E; i++) {
            bool keep = false;
            for (int r = 0; r < c->topk_group && !keep; r++) keep = kept[r] == i / per;
            if (!keep) sel[i] = 0.0f;
        }
    }
    const int a = idx[K - 1], b = best_other(sel, E, idx, K);
    if (b < 0 || sel[a] - sel[b] >= NEAR_TIE) return false;
    const bool exact = sel[a] == sel[b] && g[a] == g[b] && (!tc || bias[a] == bias[b]);
    return !exact;
}

static void shape(const char *kind, int E, int K, int G, int Gk, TopkMethod m, ScoringFunc sf, bool norm, float scale,
                  int T, bool exact_ties)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.n_routed_experts = E;
    c.num_experts_per_tok = K;
    c.n_group = G;
    c.topk_group = Gk;
    c.topk_method = m;
    c.scoring_func = sf;
    c.norm_topk_prob = norm;
    c.routed_scaling_factor = scale;
    const bool has_bias = m == TOPK_NOAUX_TC;
    const size_t TE = (size_t)T * E, TK = (size_t)T * K;
    float *g = malloc(sizeof(float) * TE), *bias = malloc(sizeof(float) * E);
    float *s_want = malloc(sizeof(float) * TE), *s_got = malloc(sizeof(float) * TE);
    float *w_want = malloc(sizeof(float) * TK), *w_got = malloc(sizeof(float) * TK),
          *w_by_id = malloc(sizeof(float) * TK);
    int *i_want = malloc(sizeof(int) * TK), *i_got = malloc(sizeof(int) * TK);
    bool *skip = malloc(sizeof(bool) * T);
    test_rng_fill(&lab_rng, g, TE, -4.0f, 4.0f);
    test_rng_fill(&lab_rng, bias, (size_t)E, -0.1f, 0.1f);
    if (exact_ties) /* the (K+1)-th largest logit of every token takes the K-th's value: which stays is the tie rule */
        for (int t = 0; t < T; t++) {
            float *gt = g + (size_t)t * E;
            int order[ROUTER_MAX_EXPERTS];
            for (int r = 0; r <= K; r++) order[r] = best_other(gt, E, order, r);
            gt[order[K]] = gt[order[K - 1]];
        }
    for (int t = 0; t < T; t++) {
        router_scores(s_want + (size_t)t * E, g + (size_t)t * E, E, sf);
        router_select(i_want + (size_t)t * K, w_want + (size_t)t * K, s_want + (size_t)t * E, has_bias ? bias : NULL,
                      &c);
        skip[t] = near_tie(s_want + (size_t)t * E, g + (size_t)t * E, bias, i_want + (size_t)t * K, &c);
    }

    static const char *method[] = { "greedy", "group_limited_greedy", "noaux_tc" };
    lab_shape_begin("%-4s E %3d, K %d, %2d groups (%d kept), %-20s %-7s %-4s ×%-4g T %d%s", kind, E, K, G, Gk,
                    method[m], sf == SCORING_SIGMOID ? "sigmoid" : "softmax", norm ? "norm" : "", (double)scale, T,
                    exact_ties ? ", exact ties" : "");
    const RouterParams p = { E, K, G, Gk, (int)m, (int)sf, norm, scale };
    RouterRun r = { lab_device(NULL, sizeof(int) * TK),
                    lab_device(NULL, sizeof(float) * TK),
                    lab_device(NULL, sizeof(float) * TE),
                    lab_device(g, sizeof(float) * TE),
                    has_bias ? lab_device(bias, sizeof(float) * E) : NULL,
                    p,
                    T };
    const int d_tk[2] = { T, K }, d_te[2] = { T, E }, d_e[1] = { E };
    lab_arg("idx", r.idx, sizeof(int) * TK, sizeof(int), "t, k", 2, d_tk);
    lab_arg("weight", r.weight, sizeof(float) * TK, sizeof(float), "t, k", 2, d_tk);
    lab_arg("scores", r.scores, sizeof(float) * TE, sizeof(float), "t, e", 2, d_te);
    lab_arg("logits", r.logits, sizeof(float) * TE, sizeof(float), "t, e", 2, d_te);
    if (has_bias) lab_arg("bias", r.bias, sizeof(float) * E, sizeof(float), "e", 1, d_e);
    if (lab_call(lab_router(r.idx, r.weight, r.scores, r.logits, r.bias, p, T, 0)) && lab_sync()) {
        lab_host(i_got, r.idx, sizeof(int) * TK);
        lab_host(w_got, r.weight, sizeof(float) * TK);
        lab_host(s_got, r.scores, sizeof(float) * TE);
        lab_compare("scores", s_got, s_want, TE, 1e-5);
        if (lab_compare_sets("idx", i_got, i_want, T, K, skip)) {
            /* the kernel's weight of each reference expert, in the reference's order; near ties as the reference */
            for (int t = 0; t < T; t++)
                for (int k = 0; k < K; k++) {
                    const size_t at = (size_t)t * K + k;
                    w_by_id[at] = w_want[at];
                    for (int j = 0; j < K && !skip[t]; j++)
                        if (i_got[(size_t)t * K + j] == i_want[at]) w_by_id[at] = w_got[(size_t)t * K + j];
                }
            lab_compare("weight (by expert id)", w_by_id, w_want, TK, 1e-6);
        }
        /* bytes: logits read, scores written, ids and weights written; flops: about 4 per affinity */
        lab_time(run_router, &r, 8.0 * TE + 8.0 * TK + (has_bias ? 4.0 * E : 0.0), 4.0 * TE);
    }
    lab_shape_end();
    free(g);
    free(bias);
    free(s_want);
    free(s_got);
    free(w_want);
    free(w_got);
    free(w_by_id);
    free(i_want);
    free(i_got);
    free(skip);
}

static void run(void)
{
    shape("tiny", 4, 1, 1, 1, TOPK_GREEDY, SCORING_SOFTMAX, false, 1.0f, 3, false);
    shape("odd", 12, 3, 4, 2, TOPK_GROUP_LIMITED_GREEDY, SCORING_SOFTMAX, true, 1.0f, 37, false);
    shape("tie", 16, 4, 1, 1, TOPK_GREEDY, SCORING_SOFTMAX, false, 1.0f, 8, true);
    shape("Lite", 64, 6, 1, 1, TOPK_GREEDY, SCORING_SOFTMAX, false, 1.0f, 64, false);
    shape("V2", 160, 6, 8, 3, TOPK_GROUP_LIMITED_GREEDY, SCORING_SOFTMAX, false, 16.0f, 64, false);
    shape("V3", 256, 8, 8, 4, TOPK_NOAUX_TC, SCORING_SIGMOID, true, 2.5f, 32, false);
    /* V2's gates renormalised with a factor other than 1: renormalising replaces the factor (only noaux_tc has both) */
    shape("norm", 64, 6, 1, 1, TOPK_GREEDY, SCORING_SOFTMAX, true, 2.5f, 16, false);
    shape("norm", 160, 6, 8, 3, TOPK_GROUP_LIMITED_GREEDY, SCORING_SOFTMAX, true, 16.0f, 16, false);
}

const LabComponent lab_component = { "router", "lab_router", run };
