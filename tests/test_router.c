/**
 * \file test_router.c
 * \brief The MoE gate (docs/semantics.md §3.6.3): affinities, greedy / group-limited (group max) / noaux_tc
 * selection, the weight rules of V2 and V3, the tie rule, on cases designed with clear margins.
 */
#include "check.h"
#include "router.h"

#include <math.h>
#include <string.h>

static TestRng g_rng;

static int group_setup(void **state)
{
    (void)state;
    test_rng_seed(&g_rng, "router");
    return 0;
}

static ModelConfig router_config(int E, int K, TopkMethod method, int G, int Gk)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.n_routed_experts = E;
    c.num_experts_per_tok = K;
    c.topk_method = method;
    c.n_group = G;
    c.topk_group = Gk;
    c.routed_scaling_factor = 1;
    c.scoring_func = method == TOPK_NOAUX_TC ? SCORING_SIGMOID : SCORING_SOFTMAX;
    return c;
}

/* router_select() into poisoned outputs; idx must equal want_idx exactly. */
static void select_and_check(const ModelConfig *c, const float *s, const float *bias, const int *want_idx,
                             float *weight)
{
    int idx[ROUTER_MAX_EXPERTS];
    const int K = c->num_experts_per_tok;
    for (int k = 0; k < K; k++) idx[k] = -1;
    poison(weight, (size_t)K);
    router_select(idx, weight, s, bias, c);
    for (int k = 0; k < K; k++)
        if (idx[k] != want_idx[k]) fail_msg("slot %d: expert %d, expected %d", k, idx[k], want_idx[k]);
}

static void softmax_and_sigmoid_scores(void **state)
{
    (void)state;
    enum { E = 37 };
    float g[E], s[E], want[E];
    test_rng_fill(&g_rng, g, E, -8, 8);
    double max = g[0], sum = 0;
    for (int i = 1; i < E; i++) max = fmax(max, g[i]);
    for (int i = 0; i < E; i++) sum += exp(g[i] - max);
    for (int i = 0; i < E; i++) want[i] = (float)(exp(g[i] - max) / sum);
    poison(s, E);
    router_scores(s, g, E, SCORING_SOFTMAX);
    check_close("softmax", s, want, E, 1e-7, 1e-6); /* scores ≤ 1; float32 expf and sum: ~ulps */
    for (int i = 0; i < E; i++) want[i] = (float)(1 / (1 + exp(-(double)g[i])));
    poison(s, E);
    router_scores(s, g, E, SCORING_SIGMOID);
    check_close("sigmoid", s, want, E, 1e-7, 1e-6); /* same: a few ulps of values ≤ 1 */
    memcpy(s, g, sizeof g);
    router_scores(s, s, E, SCORING_SIGMOID); /* s may alias g */
    check_close("sigmoid in place", s, want, E, 1e-7, 1e-6);
    /* huge logits must not overflow the softmax (max is subtracted) */
    g[3] = 1000;
    router_scores(s, g, E, SCORING_SOFTMAX);
    assert_true(isfinite(s[0]) && s[3] > 0.999f);
}

static void greedy_top_k(void **state)
{
    (void)state;
    const ModelConfig c = router_config(8, 3, TOPK_GREEDY, 1, 1);
    const float s[8] = { 0.05f, 0.30f, 0.02f, 0.20f, 0.10f, 0.25f, 0.03f, 0.05f };
    const int want_idx[3] = { 1, 5, 3 }; /* descending selection score */
    float w[3];
    const float want_w[3] = { 0.30f, 0.25f, 0.20f };
    select_and_check(&c, s, NULL, want_idx, w);
    check_close("greedy weights", w, want_w, 3, 0, 0); /* s × 1.0: exact */
}

/* Group max and group sum disagree: a sum-ranked implementation keeps other groups. */
static void group_limited_greedy_ranks_groups_by_max(void **state)
{
    (void)state;
    ModelConfig c = router_config(8, 3, TOPK_GROUP_LIMITED_GREEDY, 4, 2);
    c.routed_scaling_factor = 16;
    /* groups of 2: max 0.30, 0.20, 0.18, 0.06 → keep g0, g1; sums 0.31, 0.22, 0.36, 0.11 would
     * keep g2, g0; plain greedy would take e4 (0.18) third */
    const float s[8] = { 0.30f, 0.01f, 0.20f, 0.02f, 0.18f, 0.18f, 0.05f, 0.06f };
    const int want_idx[3] = { 0, 2, 3 };
    float w[3];
    const float want_w[3] = { 0.30f * 16, 0.20f * 16, 0.02f * 16 };
    select_and_check(&c, s, NULL, want_idx, w);
    check_close("scaled weights", w, want_w, 3, 0, 0); /* × 16 is exact in float32 */
}

static void masked_groups_never_selected(void **state)
{
    (void)state;
    enum { E = 64, G = 8, Gk = 3, K = 6, per = E / G };
    const ModelConfig c = router_config(E, K, TOPK_GROUP_LIMITED_GREEDY, G, Gk);
    for (int trial = 0; trial < 200; trial++) {
        float g[E], s[E], w[K];
        int idx[K];
        test_rng_fill(&g_rng, g, E, -4, 4);
        router_scores(s, g, E, SCORING_SOFTMAX);
        /* the test's own choice: the Gk groups with the largest max, then the K best inside */
        double gmax[G];
        bool kept[G] = { false }, taken[E] = { false };
        for (int q = 0; q < G; q++) {
            gmax[q] = 0;
            for (int i = 0; i < per; i++) gmax[q] = fmax(gmax[q], s[q * per + i]);
        }
        for (int r = 0; r < Gk; r++) {
            int best = -1;
            for (int q = 0; q < G; q++)
                if (!kept[q] && (best < 0 || gmax[q] > gmax[best])) best = q;
            kept[best] = true;
        }
        int want[K];
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int i = 0; i < E; i++)
                if (kept[i / per] && !taken[i] && (best < 0 || s[i] > s[best])) best = i;
            want[k] = best;
            taken[best] = true;
        }
        poison(w, K);
        router_select(idx, w, s, NULL, &c);
        for (int k = 0; k < K; k++) {
            assert_true(kept[idx[k] / per]);
            assert_int_equal(idx[k], want[k]);
            assert_true(w[k] == s[idx[k]]); /* unmasked affinity, scale 1 */
        }
    }
}

static void noaux_tc_selects_by_biased_score(void **state)
{
    (void)state;
    ModelConfig c = router_config(8, 2, TOPK_NOAUX_TC, 4, 2);
    c.routed_scaling_factor = 2.5f;
    /* selection s + bias = {0.4, 0.1, 0.7, 0.65, 0.8, 0.2, 0.6, 0.6}: groups by top-2 sum
     * 0.5, 1.35, 1.0, 1.2 → keep g1, g3 (by max it would be g2, g1; unbiased greedy e0, e4) */
    const float s[8] = { 0.9f, 0.1f, 0.5f, 0.3f, 0.8f, 0.2f, 0.3f, 0.3f };
    const float bias[8] = { -0.5f, 0, 0.2f, 0.35f, 0, 0, 0.3f, 0.3f };
    const int want_idx[2] = { 2, 3 };
    float w[2];
    const float plain[2] = { 0.5f * 2.5f, 0.3f * 2.5f }; /* unbiased s, always scaled */
    select_and_check(&c, s, bias, want_idx, w);
    check_close("noaux_tc weights", w, plain, 2, 1e-7, -1); /* one float32 product each */
    c.norm_topk_prob = true;                                /* V3: normalise, then scale */
    const float normed[2] = { (float)(0.5 / 0.8 * 2.5), (float)(0.3 / 0.8 * 2.5) };
    select_and_check(&c, s, bias, want_idx, w);
    check_close("noaux_tc normalised weights", w, normed, 2, 1e-6, -1); /* division + product */
}

static void v2_weight_rule_normalise_xor_scale(void **state)
{
    (void)state;
    ModelConfig c = router_config(8, 3, TOPK_GREEDY, 1, 1);
    const float s[8] = { 0.05f, 0.30f, 0.02f, 0.20f, 0.10f, 0.25f, 0.03f, 0.05f };
    const int want_idx[3] = { 1, 5, 3 };
    float w[3], want[3];
    const double sum = (double)0.30f + 0.25f + 0.20f;
    for (int norm = 0; norm < 2; norm++) {
        for (int sc = 0; sc < 2; sc++) {
            c.norm_topk_prob = norm;
            c.routed_scaling_factor = sc ? 16.0f : 1.0f;
            for (int k = 0; k < 3; k++) {
                const double p = s[want_idx[k]];
                /* V2: normalised weights are not scaled; otherwise scaled */
                want[k] = (float)(norm ? p / sum : p * c.routed_scaling_factor);
            }
            select_and_check(&c, s, NULL, want_idx, w);
            check_close("V2 weight rule", w, want, 3, 1e-6, -1); /* a division or exact product */
        }
    }
    /* K = 1: no normalisation even when asked (a single weight would become 1) */
    c = router_config(8, 1, TOPK_GREEDY, 1, 1);
    c.norm_topk_prob = true;
    c.routed_scaling_factor = 16;
    const int one[1] = { 1 };
    const float want1 = 0.30f * 16;
    select_and_check(&c, s, NULL, one, w);
    check_close("K = 1 scaled", w, &want1, 1, 0, 0);
}

static void ties_go_to_the_lower_index(void **state)
{
    (void)state;
    const ModelConfig greedy = router_config(8, 3, TOPK_GREEDY, 1, 1);
    const float s[8] = { 0.1f, 0.2f, 0.05f, 0.2f, 0.1f, 0.2f, 0.1f, 0.05f };
    const int want_idx[3] = { 1, 3, 5 };
    float w[3];
    select_and_check(&greedy, s, NULL, want_idx, w);
    const ModelConfig two = router_config(8, 2, TOPK_GREEDY, 1, 1);
    const int want_two[2] = { 1, 3 };
    select_and_check(&two, s, NULL, want_two, w);
    /* one group kept: g1, g2 and g3 tie on their max 0.2, so g1 wins (g2 would give {4, 5}) */
    const ModelConfig grouped = router_config(8, 2, TOPK_GROUP_LIMITED_GREEDY, 4, 1);
    const float t[8] = { 0.05f, 0.1f, 0.2f, 0.1f, 0.2f, 0.15f, 0.2f, 0.0f };
    const int want_grouped[2] = { 2, 3 };
    select_and_check(&grouped, t, NULL, want_grouped, w);
}

static void one_expert_per_group_equals_greedy(void **state)
{
    (void)state;
    enum { E = 64, K = 6 };
    const ModelConfig greedy = router_config(E, K, TOPK_GREEDY, 1, 1);
    const ModelConfig grouped = router_config(E, K, TOPK_GROUP_LIMITED_GREEDY, E, K);
    for (int trial = 0; trial < 500; trial++) {
        float g[E], s[E], w1[K], w2[K];
        int i1[K], i2[K];
        test_rng_fill(&g_rng, g, E, -5, 5);
        router_scores(s, g, E, SCORING_SOFTMAX);
        router_select(i1, w1, s, NULL, &greedy);
        router_select(i2, w2, s, NULL, &grouped);
        assert_memory_equal(i1, i2, sizeof i1);
        check_close("weights", w2, w1, K, 0, 0); /* the same s values, same rule */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(softmax_and_sigmoid_scores),
        cmocka_unit_test(greedy_top_k),
        cmocka_unit_test(group_limited_greedy_ranks_groups_by_max),
        cmocka_unit_test(masked_groups_never_selected),
        cmocka_unit_test(noaux_tc_selects_by_biased_score),
        cmocka_unit_test(v2_weight_rule_normalise_xor_scale),
        cmocka_unit_test(ties_go_to_the_lower_index),
        cmocka_unit_test(one_expert_per_group_equals_greedy),
    };
    return cmocka_run_group_tests_name("router", tests, group_setup, NULL);
}
