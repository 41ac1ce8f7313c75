/**
 * \file test_fast_ep.c
 * \brief Expert parallelism over 2, 4 and 8 simulated devices (fast/ep.c) against the reference:
 *        ref/moe.h's moe_forward and ref/ep.h's moe_forward_ep on the same tokens, split across devices.
 *
 * Each case draws T tokens per device, runs the whole batch through the reference and the same tokens,
 * device d holding rows [d·T, (d+1)·T), through fast_ep_moe_forward(), then checks:
 *   - the output, float32 mode relative L2 ≤ 1e-5 (bf16 mode ≤ 2e-2: rows and partials travel in bf16, a
 *     partial rounded once more than on one device; with FastEp.f32_payload as well);
 *   - every case here is a small step, so the plan is the devices' (ep_plan_v1): it must equal, field by
 *     field, the host's derivation from the same gathered routing (fast_ep_host_plan), and the call must
 *     not wait for the host (the simulator's host_syncs = 0); host_plan_eight runs the host's exact-size
 *     plan on three of the layouts;
 *   - the routing: every token's experts equal the reference's and lie on at most M devices
 *     (fast_ep_device_limit(); with n_group = N, the same set as ref device_limited_route());
 *   - the plan: each device's expanded rows per local expert equal EpPlan's counts of the whole batch;
 *   - dispatch once per device: rows dispatched = distinct (token, device) pairs of the kept assignments,
 *     counted here from the reference's routing and keep mask, each source's rows per destination its
 *     share of those pairs, rows to other devices and their bytes likewise; the per-token maximum of
 *     bytes dispatched equals (most devices of one token) × D × element size and is ≤ M × D × element
 *     size, the combined partials' ≤ M × D × 4;
 *   - the statistics summed with ncclAllReduce: f_i, P_i and the three losses equal ref/balance.c's;
 *   - with a capacity factor: the dropped assignments are exactly drop_tokens()'s, and the output equals
 *     moe_forward_ep() with that keep mask.
 * Float32 tolerance: the expert terms g_{k,t}·FFN_{e_k}(u_t) are computed as on one device; the source
 * sums one partial per device (device order), each partial summing its device's slots in slot order, so
 * only the grouping of at most K float32 additions differs from moe_forward's slot order — a few ulps,
 * well inside relative L2 1e-5.
 * The router runs in float32 on both sides but its GEMM sums in another order, so tokens whose reference
 * margin is a near tie (< 1e-6) are skipped and counted, as in test_fast_moe.c. The golden v2 router has
 * near ties in about 3 % of random tokens (0–3 of 40 over 30 seeds), so a case only requires that at most
 * half of its tokens are skipped: a tighter bound fails for an unlucky seed (5 of 40 happened, 1 run in 40).
 *
 * Layers: random bf16 weights with n_group = N (the paper's device groups), and the MoE layer of the
 * golden fixture tests/golden/v2 (8 experts, n_group 4, topk_group 2, K 3) over 2, 4 and 8 devices, and a
 * designed routing where every token picks two or four experts on one device (rows known in advance).
 * On the simulated device every launch runs under the race check (SIM_RACECHECK=1).
 */
#include "check.h"
#include "fast_test.h"
#include "dtype.h"
#include "ep.h"
#include "error.h"
#include "fast_ep.h"
#include "model.h"
#include "router.h"

#if __has_include("sim_counters.h")
#include "sim_counters.h"
#define HAVE_SIM_COUNTERS 1
#else
#define HAVE_SIM_COUNTERS 0
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEAR_TIE 1e-6f

static TestRng rng;
static bool host_plan_only; /* the case runs the host's exact-size plan (FastEp.host_free_max = 0) */
static bool f32_payload;    /* the case keeps float32 payloads in bf16 mode (FastEp.f32_payload) */

/* First row of segment j when segments of n[0], n[1], … rows lie back to back. */
static int seg_start(const int *n, int j)
{
    int at = 0;
    for (int i = 0; i < j; i++) at += n[i];
    return at;
}

/* n ints (or floats) of device memory on device d, copied to a new host array. */
static void *from_device(int d, const void *src, size_t bytes)
{
    void *h = malloc(bytes ? bytes : 1);
    assert_int_equal(cudaSetDevice(d), cudaSuccess);
    assert_int_equal(cudaMemcpy(h, src, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

/* The device plan of a host-free call (ep_plan_v1, on each device from its gathered routing) against the host's
 * derivation from device 0's copy (fast_ep_host_plan): the kept routing, each receiver's expert offsets, its
 * expanded rows (global tokens there, received rows here), each token's partial slots and weights, each
 * source's dispatch rows and the rows its partials come back to. Every device holds T tokens. */
static void check_device_plan(const FastEp *ep, int T)
{
    const int N = ep->N, K = ep->K, per = ep->E / N, NT = N * T, Kl = ep->Kl, Kd = ep->Kd;
    for (int r = 0; r < N; r++) {
        const FastEpDevice *v = &ep->dev[r];
        const FastEpPlan *pl = &v->plan;
        int *kept = from_device(r, v->idx_kept, sizeof(int) * (size_t)NT * K);
        int *off = from_device(r, v->expert_off, sizeof(int) * (size_t)(per + 1));
        assert_memory_equal(kept, ep->keep_idx, sizeof(int) * (size_t)NT * K); /* every rank, the same */
        assert_memory_equal(off, pl->expert_off, sizeof(int) * (size_t)(per + 1));
        int *expand = from_device(r, v->expand_row, sizeof(int) * (size_t)off[per]);
        int *pslot = from_device(r, v->part_slot, sizeof(int) * (size_t)NT * Kl);
        float *pweight = from_device(r, v->part_weight, sizeof(float) * (size_t)NT * Kl);
        for (int n = 0; n < off[per]; n++) assert_int_equal(expand[n], pl->recv_token[pl->expand_row[n]]);
        bool *received = calloc((size_t)NT, 1);
        const int rows = seg_start(pl->n_recv, N);
        for (int i = 0; i < rows; i++) {
            const int g = pl->recv_token[i];
            received[g] = true;
            for (int j = 0; j < Kl; j++) {
                assert_int_equal(pslot[g * Kl + j], pl->part_slot[i * Kl + j]);
                assert_true(pweight[g * Kl + j] == pl->part_weight[i * Kl + j]);
            }
        }
        for (int g = 0; g < NT; g++)
            for (int j = 0; j < Kl && !received[g]; j++) assert_int_equal(pslot[g * Kl + j], -1);
        /* as a source: dispatch row (q, t) carries t exactly when the host sends t to q */
        int *send = from_device(r, v->send_token, sizeof(int) * (size_t)N * T);
        int *cslot = from_device(r, v->comb_slot, sizeof(int) * (size_t)T * Kd);
        for (int q = 0, row = 0; q < N; q++) {
            bool *sent = calloc((size_t)T, 1);
            for (int i = 0; i < pl->n_send[q]; i++) sent[pl->send_token[row++]] = true;
            for (int t = 0; t < T; t++) assert_int_equal(send[q * T + t], sent[t] ? t : -1);
            free(sent);
        }
        for (int t = 0; t < T; t++)
            for (int j = 0; j < Kd; j++) {
                const int h = pl->comb_slot[t * Kd + j];
                int q = 0;
                while (h >= 0 && h >= seg_start(pl->n_send, q + 1)) q++;
                assert_int_equal(cslot[t * Kd + j], h < 0 ? -1 : q * T + t);
            }
        free(kept);
        free(off);
        free(expand);
        free(pslot);
        free(pweight);
        free(received);
        free(send);
        free(cslot);
    }
}

/* A random bf16 matrix with entries in [−a, a). */
static Mat rand_mat(int rows, int cols, float a)
{
    uint16_t *d = malloc(2 * (size_t)rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++) d[i] = f32_to_bf16(test_rng_uniform(&rng, -a, a));
    return (Mat){ d, DT_BF16, rows, cols };
}

static SwigluWeights rand_swiglu(int I, int D)
{
    return (SwigluWeights){ rand_mat(I, D, 1.0f / sqrtf((float)D)), rand_mat(I, D, 1.0f / sqrtf((float)D)),
                            rand_mat(D, I, 1.0f / sqrtf((float)I)) };
}

static void free_swiglu(SwigluWeights *w)
{
    free((void *)w->gate.data);
    free((void *)w->up.data);
    free((void *)w->down.data);
}

/* Group-limited greedy routing over G groups keeping Gk, softmax scores. */
static ModelConfig ep_config(int D, int E, int I, int K, int Ns, int G, int Gk)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.hidden_size = D;
    c.n_routed_experts = E;
    c.moe_intermediate_size = I;
    c.intermediate_size = I;
    c.num_experts_per_tok = K;
    c.n_shared_experts = Ns;
    c.topk_method = TOPK_GROUP_LIMITED_GREEDY;
    c.scoring_func = SCORING_SOFTMAX;
    c.n_group = G;
    c.topk_group = Gk;
    c.norm_topk_prob = false;
    c.routed_scaling_factor = 1.0f;
    c.rms_norm_eps = 1e-6f;
    return c;
}

/* The (r+1)-th minus the (r+2)-th largest of x[0..n) (∞ when there is none). */
static float gap_after(const float *x, int n, int r)
{
    float top[34];
    const int m = r + 2 < 34 ? r + 2 : 34;
    for (int j = 0; j < 34; j++) top[j] = -INFINITY;
    for (int i = 0; i < n; i++) {
        float v = x[i];
        for (int j = 0; j < m; j++)
            if (v > top[j]) {
                const float t = top[j];
                top[j] = v;
                v = t;
            }
    }
    return r + 1 < n ? top[r] - top[r + 1] : INFINITY;
}

/* Smallest decision margin of group-limited routing on one token's affinities s. */
static float route_margin(const float *s, const ModelConfig *c)
{
    const int E = c->n_routed_experts, G = c->n_group, per = E / G, Gk = c->topk_group;
    float group_max[32], masked[ROUTER_MAX_EXPERTS];
    for (int g = 0; g < G; g++) {
        group_max[g] = -INFINITY;
        for (int i = g * per; i < (g + 1) * per; i++) group_max[g] = fmaxf(group_max[g], s[i]);
    }
    float margin = gap_after(group_max, G, Gk - 1);
    for (int g = 0; g < G; g++) {
        int better = 0;
        for (int h = 0; h < G; h++) better += group_max[h] > group_max[g] || (group_max[h] == group_max[g] && h < g);
        for (int i = g * per; i < (g + 1) * per; i++) masked[i] = better < Gk ? s[i] : 0.0f;
    }
    return fminf(margin, gap_after(masked, E, c->num_experts_per_tok - 1));
}

/* Runs one MoE layer w of config c over N devices with T tokens each and checks everything listed above;
 * the tokens are x_given [N·T, D] or, when NULL, drawn. \return the rows dispatched. */
static long long check_ep(const ModelConfig *c, const MoeWeights *w, int N, int T, bool bf16, double capacity_factor,
                          const float *x_given)
{
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok, NT = N * T, per = E / N;
    const size_t xn = (size_t)NT * D;
    float *x = malloc(sizeof(float) * xn), *want = malloc(sizeof(float) * xn), *got = malloc(sizeof(float) * xn);
    if (x_given)
        memcpy(x, x_given, sizeof(float) * xn);
    else
        test_rng_fill(&rng, x, xn, -2.0f, 2.0f);

    /* the reference on the whole batch */
    FfnScratch fs;
    assert_int_equal(ffn_scratch_init(&fs, c, NT), 0);
    moe_forward(want, x, w, c, NT, &fs);
    bool *tie = calloc((size_t)NT, 1), *keep = malloc((size_t)NT * K);
    int ties = 0, ref_dropped = 0;
    for (int t = 0; t < NT; t++) ties += tie[t] = route_margin(fs.scores + (size_t)t * E, c) < NEAR_TIE;
    assert_true(ties * 2 <= NT); /* most tokens compared (see the file comment) */
    for (int a = 0; a < NT * K; a++) keep[a] = true;
    float *scores = malloc(sizeof(float) * (size_t)NT * E);
    int *ref_idx = malloc(sizeof(int) * (size_t)NT * K);
    memcpy(scores, fs.scores, sizeof(float) * (size_t)NT * E);
    memcpy(ref_idx, fs.expert, sizeof(int) * (size_t)NT * K);
    if (capacity_factor > 0) ref_dropped = drop_tokens(keep, fs.expert, fs.weight, NULL, NT, K, E, N, capacity_factor);
    float *want_ep = malloc(sizeof(float) * xn);
    assert_int_equal(moe_forward_ep(want_ep, x, w, c, NT, N, capacity_factor > 0 ? keep : NULL, &fs), 0);
    if (capacity_factor == 0) /* the reference's EP is moe_forward exactly */
        assert_memory_equal(want_ep, want, sizeof(float) * xn);

    /* the same tokens over N devices */
    FastEp ep;
    FastEpMoe fw;
    if (fast_ep_init(&ep, N, bf16, c, T) || fast_ep_upload_moe(&ep, &fw, w, c)) fail_msg("%s", ds_last_error());
    ep.capacity_factor = capacity_factor;
    ep.f32_payload = f32_payload;
    if (host_plan_only) ep.host_free_max = 0;
    float *dx[FAST_EP_MAX_DEVICES], *dy[FAST_EP_MAX_DEVICES];
    for (int d = 0; d < N; d++) {
        assert_int_equal(cudaSetDevice(d), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&dx[d], sizeof(float) * (size_t)T * D), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&dy[d], sizeof(float) * (size_t)T * D), cudaSuccess);
        assert_int_equal(
            cudaMemcpy(dx[d], x + (size_t)d * T * D, sizeof(float) * (size_t)T * D, cudaMemcpyHostToDevice),
            cudaSuccess);
        assert_int_equal(cudaMemset(dy[d], 0xff, sizeof(float) * (size_t)T * D), cudaSuccess); /* NaN */
    }
    int counts[FAST_EP_MAX_DEVICES];
    for (int d = 0; d < N; d++) counts[d] = T;
#if HAVE_SIM_COUNTERS
    SimStepCounters sc;
    sim_counters_start();
#endif
    if (fast_ep_moe_forward(&ep, &fw, c, dy, (const float *const *)dx, counts)) fail_msg("%s", ds_last_error());
#if HAVE_SIM_COUNTERS
    sim_counters_stop(&sc);
    if (ep.last_host_free) assert_int_equal(sc.host_syncs, 0); /* a small step never waits for the host */
#endif
    assert_true(ep.last_host_free == (!host_plan_only && NT * K <= FAST_EP_HOST_FREE_MAX));
    if (ep.last_host_free) { /* the statistics and the independent plan, on request */
        assert_int_equal(fast_ep_host_plan(&ep), 0);
        check_device_plan(&ep, T);
    }
    int *idx = malloc(sizeof(int) * (size_t)NT * K);
    for (int d = 0; d < N; d++) {
        assert_int_equal(cudaSetDevice(d), cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        assert_int_equal(
            cudaMemcpy(got + (size_t)d * T * D, dy[d], sizeof(float) * (size_t)T * D, cudaMemcpyDeviceToHost),
            cudaSuccess);
    }
    memcpy(idx, ep.keep_idx, sizeof(int) * (size_t)NT * K); /* the routing the plan used, E where dropped */

    /* routing: the reference's experts (E where dropped), on at most M devices */
    const int M = fast_ep_device_limit(c, N);
    bool *fkeep = malloc((size_t)NT * K);
    int *fidx = malloc(sizeof(int) * (size_t)NT * K), fast_dropped = 0;
    for (int t = 0; t < NT; t++) {
        bool on[FAST_EP_MAX_DEVICES] = { false };
        int devices = 0;
        for (int k = 0; k < K; k++) {
            const int a = t * K + k, e = ref_idx[a];
            if (!on[e / per]) {
                on[e / per] = true;
                devices++;
            }
            fkeep[a] = idx[a] < E;
            fast_dropped += !fkeep[a];
            if (!tie[t] && (capacity_factor == 0 || ties == 0)) {
                assert_int_equal(fkeep[a], keep[a]);
                if (fkeep[a]) assert_int_equal(idx[a], e);
            }
        }
        assert_true(devices <= M);
        if (c->n_group == N && !tie[t]) { /* the paper's device-limited routing */
            int dl[32];
            device_limited_route(dl, scores + (size_t)t * E, E, K, N, c->topk_group);
            for (int k = 0; k < K; k++) {
                bool found = false;
                for (int j = 0; j < K; j++) found = found || dl[j] == ref_idx[t * K + k];
                assert_true(found);
            }
        }
    }
    assert_true(ep.stats.max_devices <= M);
    assert_int_equal(ep.stats.dropped, fast_dropped);

    /* the plan: each receiver's rows per local expert are EpPlan's counts of the batch */
    for (int a = 0; a < NT * K; a++) fidx[a] = fkeep[a] ? idx[a] : 0;
    EpPlan all;
    assert_int_equal(ep_plan_build(&all, fidx, fkeep, NT, K, E, N), 0);
    for (int r = 0; r < N; r++)
        for (int j = 0; j < per; j++)
            assert_int_equal(ep.dev[r].plan.expert_off[j + 1] - ep.dev[r].plan.expert_off[j], all.count[r * per + j]);
    ep_plan_free(&all);

    /* dispatch once per device: rows = distinct (token, device) pairs of the kept assignments, counted here
     * from the reference's routing and keep mask (from the fast routing where near ties make them differ) */
    const int *pair_idx = ties == 0 ? ref_idx : idx;
    const bool *pair_keep = ties == 0 ? keep : fkeep;
    long long pairs = 0, remote = 0, assignments = 0;
    int most = 0;
    for (int t = 0; t < NT; t++) {
        bool on[FAST_EP_MAX_DEVICES] = { false };
        int devices = 0;
        for (int k = 0; k < K; k++) {
            const int a = t * K + k;
            if (!pair_keep[a]) continue;
            assignments++;
            if (on[pair_idx[a] / per]) continue;
            on[pair_idx[a] / per] = true;
            devices++;
            remote += pair_idx[a] / per != t / T;           /* token t lives on device t / T */
            ep.dev[t / T].plan.n_send[pair_idx[a] / per]--; /* each pair accounted for once, below */
        }
        pairs += devices;
        most = devices > most ? devices : most;
    }
    for (int s = 0; s < N; s++)
        for (int r = 0; r < N; r++) assert_int_equal(ep.dev[s].plan.n_send[r], 0);
    const long long esz = bf16 && !f32_payload ? 2 : 4;
    assert_int_equal(ep.stats.rows_dispatched, pairs);
    assert_int_equal(ep.stats.rows_sent, remote);
    assert_int_equal(ep.stats.bytes_sent, remote * D * esz);
    assert_int_equal(ep.stats.max_token_dispatch_bytes, most * D * esz);
    assert_true(ep.stats.max_token_dispatch_bytes <= (long long)M * D * esz);
    assert_true(ep.stats.max_token_combine_bytes <= (long long)M * D * 4);

    /* statistics: f_i, P_i and the losses of ref/balance.c on the whole batch */
    const BalanceSpec spec = { .E = E, .K = K, .D = N, .M = M, .alpha1 = 0.003, .alpha2 = 0.05, .alpha3 = 0.02 };
    const BalanceLosses want_L = balance_losses(scores, ref_idx, NT, &spec, NULL);
    const BalanceLosses got_L = fast_ep_balance_losses(&ep, &spec);
    double worst_P = 0;
    assert_int_equal(ep.stats.T, NT);
    for (int i = 0; i < E && ties == 0; i++) {
        int n = 0;
        double P = 0;
        for (int a = 0; a < NT * K; a++) n += ref_idx[a] == i;
        for (int t = 0; t < NT; t++) P += scores[(size_t)t * E + i];
        P /= NT;
        assert_int_equal(ep.stats.expert_count[i], n);
        assert_true(fabs(ep.stats.f[i] - (double)E / ((double)K * NT) * n) <= 1e-12);
        worst_P = fmax(worst_P, fabs(ep.stats.P[i] - P) / P);
    }
    const double dL =
        fmax(fabs(got_L.expert - want_L.expert) / want_L.expert,
             fmax(fabs(got_L.device - want_L.device) / want_L.device, fabs(got_L.comm - want_L.comm) / want_L.comm));
    if (ties == 0) {
        assert_true(worst_P <= 1e-5);
        assert_true(dL <= 1e-5);
    }

    /* the output, over the tokens that are not near ties */
    const float *ref = capacity_factor > 0 ? want_ep : want;
    float *g = malloc(sizeof(float) * xn), *r = malloc(sizeof(float) * xn);
    int n = 0;
    for (int t = 0; t < NT; t++) {
        if (tie[t] || (capacity_factor > 0 && ties > 0)) continue;
        memcpy(g + (size_t)n * D, got + (size_t)t * D, sizeof(float) * D);
        memcpy(r + (size_t)n * D, ref + (size_t)t * D, sizeof(float) * D);
        n++;
    }
    const CheckStats cs = check_stats(g, r, (size_t)n * D);
    printf("%s plan, %s payload: N=%d E=%d K=%d M=%d T=%d/device %s cf=%.2f: rel-L2 %.3g max-abs %.3g over %d tokens "
           "(%d near ties); "
           "dropped %d (ref %d); rows dispatched %lld for %lld kept assignments, %lld to other devices (%lld bytes); "
           "most devices per token %d (%lld bytes, M bound %lld); P rel err %.3g, loss rel err %.3g\n",
           ep.last_host_free ? "device" : "host", esz == 2 ? "bf16" : "float32", N, E, K, M, T,
           bf16 ? "bf16" : "float32", capacity_factor, cs.rel_l2, cs.max_abs, n, ties, ep.stats.dropped, ref_dropped,
           ep.stats.rows_dispatched, assignments, ep.stats.rows_sent, ep.stats.bytes_sent, ep.stats.max_devices,
           ep.stats.max_token_dispatch_bytes, (long long)M * D * esz, worst_P, dL);
    check_close("ep moe", g, r, (size_t)n * D, -1, bf16 ? 2e-2 : 1e-5);

    const long long rows_dispatched = ep.stats.rows_dispatched;
    for (int d = 0; d < N; d++) {
        cudaSetDevice(d);
        cudaFree(dx[d]);
        cudaFree(dy[d]);
    }
    fast_ep_free_moe(&ep, &fw);
    fast_ep_free(&ep);
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    ffn_scratch_free(&fs);
    free(x);
    free(want);
    free(got);
    free(want_ep);
    free(tie);
    free(keep);
    free(scores);
    free(ref_idx);
    free(idx);
    free(fkeep);
    free(fidx);
    free(g);
    free(r);
    return rows_dispatched;
}

/* A random MoE layer of config c. */
static MoeWeights rand_moe(const ModelConfig *c)
{
    const int D = c->hidden_size, E = c->n_routed_experts, I = c->moe_intermediate_size;
    MoeWeights w = { .router = rand_mat(E, D, 1.0f / sqrtf((float)D)), .bias = NULL };
    w.experts = malloc(sizeof *w.experts * E);
    for (int e = 0; e < E; e++) w.experts[e] = rand_swiglu(I, D);
    if (c->n_shared_experts) w.shared = rand_swiglu(c->n_shared_experts * I, D);
    return w;
}

static void free_moe(MoeWeights *w, const ModelConfig *c)
{
    for (int e = 0; e < c->n_routed_experts; e++) free_swiglu(&w->experts[e]);
    if (c->n_shared_experts) free_swiglu(&w->shared);
    free(w->experts);
    free((void *)w->router.data);
}

/* Random layer with the paper's layout: n_group = N device groups, at most M of them per token. */
static void random_layer(int N, int M, int T, bool bf16, double cf)
{
    need_devices(N);
    const ModelConfig c = ep_config(32, 16, 16, 4, 1, N, M);
    MoeWeights w = rand_moe(&c);
    check_ep(&c, &w, N, T, bf16, cf, NULL);
    free_moe(&w, &c);
}

static void two_devices(void **state)
{
    (void)state;
    random_layer(2, 1, 7, false, 0);
}
static void four_devices(void **state)
{
    (void)state;
    random_layer(4, 2, 6, false, 0);
}
static void eight_devices(void **state)
{
    (void)state;
    random_layer(8, 3, 5, false, 0);
}
static void four_devices_bf16(void **state)
{
    (void)state;
    random_layer(4, 2, 6, true, 0);
}
static void two_and_eight_devices_bf16(void **state)
{
    (void)state;
    random_layer(2, 1, 7, true, 0);
    random_layer(8, 3, 5, true, 0);
}
static void dropping_four(void **state)
{
    (void)state;
    random_layer(4, 2, 8, false, 1.0);
}
static void dropping_eight(void **state)
{
    (void)state;
    random_layer(8, 3, 4, false, 0.5);
}

/* The host's exact-size plan (prompts take it) on the same layouts. */
static void host_plan_eight(void **state)
{
    (void)state;
    host_plan_only = true;
    random_layer(8, 3, 5, false, 0);
    random_layer(4, 2, 6, true, 0);
    random_layer(4, 2, 8, false, 1.0);
    host_plan_only = false;
}
/* bf16 mode with float32 payloads both ways: within bf16's bound as well. */
static void four_devices_bf16_f32_payload(void **state)
{
    (void)state;
    f32_payload = true;
    random_layer(4, 2, 6, true, 0);
    f32_payload = false;
}

/* The MoE layer (layer 1) of the golden fixture tests/golden/v2 over N devices. */
static void golden_v2(int N, double cf)
{
    need_devices(N);
    Model m;
    if (model_open(&m, "tests/golden/v2", NULL)) fail_msg("%s", ds_last_error());
    assert_true(m.layers[1].is_moe);
    check_ep(m.cfg, &m.layers[1].moe, N, 5, false, cf, NULL);
    model_close(&m);
}

static void golden_v2_two(void **state)
{
    (void)state;
    golden_v2(2, 0);
}
static void golden_v2_four(void **state)
{
    (void)state;
    golden_v2(4, 0);
}
static void golden_v2_eight(void **state)
{
    (void)state;
    golden_v2(8, 0);
}
static void golden_v2_four_dropping(void **state)
{
    (void)state;
    golden_v2(4, 1.0);
}

/* A designed routing over 4 devices (4 experts each, groups = devices, 2 kept, K = 4): the router row of
 * expert e is the unit vector e_e, so a token's logits are its first E entries. Token t puts 4.0 and 3.5 on
 * two experts of device A = t mod 4 and, for t mod 3 ≠ 0, 3.0 and 2.5 on two experts of device
 * B = A + 1 + t mod 3 (mod 4); for t mod 3 = 0 all four on A; the other entries lie in [−0.5, 0.5).
 * Every token picks two or four experts on one device: by design it is dispatched to 2 devices, or 1, so
 * rows = Σ_t (t mod 3 = 0 ? 1 : 2), half or a quarter of the kept assignments. */
static void designed_routing(void **state)
{
    (void)state;
    need_devices(4);
    const int N = 4, T = 6, NT = N * T, D = 32, E = 16;
    const ModelConfig c = ep_config(D, E, 16, 4, 1, N, 2);
    MoeWeights w = rand_moe(&c);
    uint16_t *router = (uint16_t *)w.router.data;
    for (int e = 0; e < E; e++)
        for (int j = 0; j < D; j++) router[e * D + j] = f32_to_bf16(j == e ? 1.0f : 0.0f);
    float *x = malloc(sizeof(float) * (size_t)NT * D);
    test_rng_fill(&rng, x, (size_t)NT * D, -2.0f, 2.0f);
    long long want_rows = 0;
    for (int t = 0; t < NT; t++) {
        float *xt = x + (size_t)t * D;
        const int A = t % N, B = (A + 1 + t % 3) % N;
        for (int e = 0; e < E; e++) xt[e] = test_rng_uniform(&rng, -0.5f, 0.5f);
        xt[4 * A] = 4.0f;
        xt[4 * A + 1] = 3.5f;
        xt[4 * (t % 3 ? B : A) + 2] = 3.0f;
        xt[4 * (t % 3 ? B : A) + 3] = 2.5f;
        want_rows += t % 3 ? 2 : 1;
    }
    assert_int_equal(check_ep(&c, &w, N, T, false, 0, x), want_rows);
    free(x);
    free_moe(&w, &c);
}

/* SIM_FAIL_COMM=1: ncclCommInitAll fails; fast_ep_init returns −1 with one line naming it, nothing held. */
static void comm_failure(void **state)
{
    (void)state;
    need_devices(2);
    const ModelConfig c = ep_config(32, 16, 16, 4, 1, 2, 1);
    FastEp ep;
    setenv("SIM_FAIL_COMM", "1", 1);
    const int rc = fast_ep_init(&ep, 2, false, &c, 4);
    unsetenv("SIM_FAIL_COMM");
    assert_int_equal(rc, -1);
    printf("error line: %s\n", ds_last_error());
    assert_non_null(strstr(ds_last_error(), "ncclCommInitAll failed: "));
    assert_non_null(strstr(ds_last_error(), "fast/ep.c:"));
    assert_int_equal(ep.N, 0);
    assert_null(ep.keep_idx);
}

int main(void)
{
    setenv("SIM_DEVICE_COUNT", "8", 1); /* before the first CUDA call */
    setenv("SIM_RACECHECK", "1", 0);    /* every simulated launch under three thread orders */
    test_rng_seed(&rng, "fast ep");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_devices),
        cmocka_unit_test(four_devices),
        cmocka_unit_test(eight_devices),
        cmocka_unit_test(four_devices_bf16),
        cmocka_unit_test(two_and_eight_devices_bf16),
        cmocka_unit_test(dropping_four),
        cmocka_unit_test(dropping_eight),
        cmocka_unit_test(host_plan_eight),
        cmocka_unit_test(four_devices_bf16_f32_payload),
        cmocka_unit_test(designed_routing),
        cmocka_unit_test(golden_v2_two),
        cmocka_unit_test(golden_v2_four),
        cmocka_unit_test(golden_v2_eight),
        cmocka_unit_test(golden_v2_four_dropping),
        cmocka_unit_test(comm_failure),
    };
    return cmocka_run_group_tests_name("fast ep", tests, NULL, NULL);
}
