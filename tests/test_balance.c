/**
 * \file test_balance.c
 * \brief Device-limited routing, balance losses and their gradients, token dropping, and
 *        the expert-parallel plan (ref/balance.c, ref/ep.c).
 *
 * Evidence: PyTorch autograd on a transcription of the paper's formulas and of the released
 * MoEGate loss (tests/golden/balance, made by tools/make_balance_golden.py); central finite
 * differences in double precision; designed dropping cases; and the unsharded MoE layer.
 */
#include "balance.h"
#include "check.h"
#include "config.h"
#include "ep.h"
#include "error.h"
#include "model.h"
#include "router.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 3, T = 24, E = 16, K = 3, D = 4, M = 2 };
static const BalanceSpec BAL = { .E = E, .K = K, .D = D, .M = M, .alpha1 = 0.003, .alpha2 = 0.05, .alpha3 = 0.02 };

typedef struct {
    StFile f;
    float scores[B * T * E];
    int idx[B * T * K];
} Fixture;

static const float *tensor(const Fixture *fx, const char *name)
{
    const StTensor *t = st_find(&fx->f, name);
    if (!t) fail_msg("balance fixture: tensor '%s' missing", name);
    return t->data;
}

static void softmax_rows(float *s, const float *g, int n)
{
    for (int r = 0; r < n; r++) router_scores(s + (size_t)r * E, g + (size_t)r * E, E, SCORING_SOFTMAX);
}

static int setup(void **state)
{
    Fixture *fx = calloc(1, sizeof *fx);
    if (st_open("tests/golden/balance/balance.safetensors", &fx->f)) {
        fprintf(stderr, "%s\n", ds_last_error());
        free(fx);
        return -1;
    }
    softmax_rows(fx->scores, st_find(&fx->f, "logits")->data, B * T);
    const float *idx = st_find(&fx->f, "idx")->data;
    for (int i = 0; i < B * T * K; i++) fx->idx[i] = (int)idx[i];
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    Fixture *fx = *state;
    st_close(&fx->f);
    free(fx);
    return 0;
}

static int has(const int *set, int n, int x)
{
    for (int i = 0; i < n; i++)
        if (set[i] == x) return 1;
    return 0;
}

/* The paper's rule picks the same expert sets as the fixture's torch routing. */
static void device_limited_matches_torch(void **state)
{
    const Fixture *fx = *state;
    for (int t = 0; t < B * T; t++) {
        int idx[K];
        device_limited_route(idx, fx->scores + (size_t)t * E, E, K, D, M);
        for (int k = 0; k < K; k++)
            if (!has(fx->idx + t * K, K, idx[k])) fail_msg("token %d: expert %d not in torch's set", t, idx[k]);
    }
}

/* Device-limited routing is group_limited_greedy with n_group = D, topk_group = M (random scores). */
static void device_limited_is_group_limited_greedy(void **state)
{
    (void)state;
    TestRng rng;
    test_rng_seed(&rng, "balance");
    ModelConfig c = { .n_routed_experts = 64,
                      .num_experts_per_tok = 6,
                      .n_group = 8,
                      .topk_group = 3,
                      .topk_method = TOPK_GROUP_LIMITED_GREEDY,
                      .routed_scaling_factor = 1 };
    for (int trial = 0; trial < 2000; trial++) {
        float g[64], s[64], w[6];
        int a[6], b[6];
        test_rng_fill(&rng, g, 64, -4, 4);
        router_scores(s, g, 64, SCORING_SOFTMAX);
        device_limited_route(a, s, 64, 6, 8, 3);
        router_select(b, w, s, NULL, &c);
        for (int k = 0; k < 6; k++) assert_int_equal(a[k], b[k]);
    }
}

/* The three losses and the gradient of their sum w.r.t. the logits, against autograd. */
static void losses_and_gradient_match_autograd(void **state)
{
    const Fixture *fx = *state;
    double grad[T * E];
    float got[T * E];
    BalanceLosses L = balance_losses(fx->scores, fx->idx, T, &BAL, grad);
    /* float32 torch vs double C: agreement to ~1e-7 relative; 1e-5 leaves margin */
    const float le = (float)L.expert, ld = (float)L.device, lc = (float)L.comm;
    check_close("L_ExpBal", &le, tensor(fx, "loss_expert"), 1, -1, 1e-5);
    check_close("L_DevBal", &ld, tensor(fx, "loss_device"), 1, -1, 1e-5);
    check_close("L_CommBal", &lc, tensor(fx, "loss_comm"), 1, -1, 1e-5);
    for (int i = 0; i < T * E; i++) got[i] = (float)grad[i];
    check_close("dL/dg", got, tensor(fx, "grad_all"), T * E, -1, 1e-5);
}

/* Both seq_aux variants of the released loss, and their gradients, against autograd. */
static void released_variants_match_autograd(void **state)
{
    const Fixture *fx = *state;
    static double grad[B * T * E];
    static float got[B * T * E];
    const char *names[2][2] = { { "loss_seq_aux", "grad_seq_aux" }, { "loss_batch", "grad_batch" } };
    for (int v = 0; v < 2; v++) {
        float loss = (float)expert_balance_loss_batch(fx->scores, fx->idx, B, T, E, K, 0.003, v == 0, grad);
        check_close(names[v][0], &loss, tensor(fx, names[v][0]), 1, -1, 1e-5);
        for (int i = 0; i < B * T * E; i++) got[i] = (float)grad[i];
        check_close(names[v][1], got, tensor(fx, names[v][1]), B * T * E, -1, 1e-5);
    }
}

/* Central differences in double on fresh logits, routing held fixed (f has no gradient). */
static void gradient_matches_finite_differences(void **state)
{
    (void)state;
    TestRng rng;
    test_rng_seed(&rng, "balance-fd");
    static float g[T * E], s[T * E];
    static double grad[T * E], fd[T * E];
    int idx[T * K];
    test_rng_fill(&rng, g, T * E, -3, 3);
    softmax_rows(s, g, T);
    for (int t = 0; t < T; t++) device_limited_route(idx + t * K, s + t * E, E, K, D, M);
    balance_losses(s, idx, T, &BAL, grad);
    const double h = 1e-3;
    for (int i = 0; i < T * E; i += 7) { /* a spread of entries */
        double total[2];
        for (int side = 0; side < 2; side++) {
            /* perturb one logit; softmax of that row in double, losses from float scores */
            double row[E], max = -INFINITY, sum = 0;
            const int t = i / E;
            for (int j = 0; j < E; j++) row[j] = g[t * E + j] + (j == i % E ? (side ? h : -h) : 0);
            for (int j = 0; j < E; j++) max = fmax(max, row[j]);
            for (int j = 0; j < E; j++) sum += exp(row[j] - max);
            float saved[E];
            memcpy(saved, s + t * E, sizeof saved);
            for (int j = 0; j < E; j++) s[t * E + j] = (float)(exp(row[j] - max) / sum);
            BalanceLosses L = balance_losses(s, idx, T, &BAL, NULL);
            total[side] = L.expert + L.device + L.comm;
            memcpy(s + t * E, saved, sizeof saved);
        }
        fd[i] = (total[1] - total[0]) / (2 * h);
        /* float32 scores limit the difference quotient to ~1e-7 / 2h absolute */
        if (fabs(fd[i] - grad[i]) > 2e-5 + 1e-2 * fabs(grad[i]))
            fail_msg("dL/dg[%d]: finite difference %.9g, analytic %.9g", i, fd[i], grad[i]);
    }
}

/* ---- token dropping: designed cases ---------------------------------------------------- */

static void dropping_removes_lowest_affinity(void **state)
{
    (void)state;
    /* E = 4 on D = 2 devices, K = 1; all four tokens go to device 0: budget ceil(4/2) = 2 */
    const int idx[4] = { 0, 1, 0, 1 };
    const float w[4] = { 0.9f, 0.1f, 0.5f, 0.3f };
    bool keep[4];
    assert_int_equal(drop_tokens(keep, idx, w, NULL, 4, 1, 4, 2, 1.0), 2);
    assert_true(keep[0] && !keep[1] && keep[2] && !keep[3]);
    const bool exempt[4] = { false, true, false, false }; /* token 1 may not be dropped */
    assert_int_equal(drop_tokens(keep, idx, w, exempt, 4, 1, 4, 2, 1.0), 2);
    assert_true(keep[0] && keep[1] && !keep[2] && !keep[3]);
    assert_int_equal(drop_tokens(keep, idx, w, NULL, 4, 1, 4, 2, 2.0), 0); /* budget 4 */
    const bool all[4] = { true, true, true, true };
    assert_int_equal(drop_tokens(keep, idx, w, all, 4, 1, 4, 2, 1.0), 0); /* nothing droppable */
}

static void dropping_balances_devices(void **state)
{
    (void)state;
    /* K = 2, E = 4 on D = 2: device 1 gets 5 assignments, device 0 gets 3; budget 4 */
    const int idx[8] = { 2, 3, 2, 0, 3, 1, 2, 0 };
    const float w[8] = { 0.6f, 0.2f, 0.7f, 0.1f, 0.05f, 0.4f, 0.3f, 0.8f };
    bool keep[8];
    assert_int_equal(drop_tokens(keep, idx, w, NULL, 4, 2, 4, 2, 1.0), 1);
    for (int a = 0; a < 8; a++) assert_int_equal(keep[a], a != 4); /* 0.05 on device 1 goes */
}

/* ---- the expert-parallel plan and its execution -------------------------------------------- */

static void plan_groups_rows_by_expert_and_device(void **state)
{
    const Fixture *fx = *state;
    EpPlan p;
    assert_int_equal(ep_plan_build(&p, fx->idx, NULL, B * T, K, E, D), 0);
    assert_int_equal(p.n, B * T * K);
    for (int e = 0; e < E; e++) {
        int want = 0;
        for (int a = 0; a < B * T * K; a++) want += fx->idx[a] == e;
        assert_int_equal(p.count[e], want);
        for (int r = p.offset[e]; r < p.offset[e + 1]; r++) {
            assert_int_equal(fx->idx[p.order[r]], e);                      /* contiguous by expert */
            if (r > p.offset[e]) assert_true(p.order[r] > p.order[r - 1]); /* then by token */
        }
    }
    ep_plan_free(&p);
}

/* Over D = 1, 2, 4, 8 virtual devices the MoE layer gives moe_forward()'s result exactly. */
static void ep_equals_unsharded_moe(void **state)
{
    (void)state;
    Model m;
    if (model_open(&m, "tests/golden/v2", NULL)) fail_msg("%s", ds_last_error());
    const ModelConfig *c = m.cfg;
    const int n = 9, Dm = c->hidden_size;
    TestRng rng;
    test_rng_seed(&rng, "balance-ep");
    float *x = malloc(sizeof(float) * n * Dm), *want = malloc(sizeof(float) * n * Dm);
    float *got = malloc(sizeof(float) * n * Dm);
    test_rng_fill(&rng, x, (size_t)n * Dm, -2, 2);
    const MoeWeights *w = &m.layers[1].moe;
    moe_forward(want, x, w, c, n, &m.ffn);
    for (int Dv = 1; Dv <= 8; Dv *= 2) {
        poison(got, (size_t)n * Dm);
        assert_int_equal(moe_forward_ep(got, x, w, c, n, Dv, NULL, &m.ffn), 0);
        check_close("EP vs unsharded", got, want, (size_t)n * Dm, 0, 0); /* same arithmetic */
    }
    /* a dropped assignment contributes nothing: drop slot 0 of token 0 */
    bool keep[9 * 8];
    for (int a = 0; a < n * c->num_experts_per_tok; a++) keep[a] = a != 0;
    assert_int_equal(moe_forward_ep(got, x, w, c, n, 4, keep, &m.ffn), 0);
    const float g0 = m.ffn.weight[0];
    float *expert0 = malloc(sizeof(float) * Dm);
    swiglu_forward(expert0, x, &w->experts[m.ffn.expert[0]], 1, m.ffn.hidden);
    for (int d = 0; d < Dm; d++) { /* want − g·expert(x_0) ≈ got on token 0 */
        float diff = want[d] - g0 * expert0[d];
        if (fabsf(diff - got[d]) > 1e-4f * (1 + fabsf(diff)))
            fail_msg("dropped slot: [%d] got %.9g want %.9g", d, got[d], diff);
    }
    check_close("other tokens unchanged", got + Dm, want + Dm, (size_t)(n - 1) * Dm, 0, 0);
    free(expert0);
    free(x);
    free(want);
    free(got);
    model_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(device_limited_matches_torch),
        cmocka_unit_test(device_limited_is_group_limited_greedy),
        cmocka_unit_test(losses_and_gradient_match_autograd),
        cmocka_unit_test(released_variants_match_autograd),
        cmocka_unit_test(gradient_matches_finite_differences),
        cmocka_unit_test(dropping_removes_lowest_affinity),
        cmocka_unit_test(dropping_balances_devices),
        cmocka_unit_test(plan_groups_rows_by_expert_and_device),
        cmocka_unit_test(ep_equals_unsharded_moe),
    };
    return cmocka_run_group_tests_name("balance", tests, setup, teardown);
}
