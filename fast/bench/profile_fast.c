/**
 * \file profile_fast.c
 * \brief `make profile-fast` and `make profile-fast-v2`: the fast path's device counters on a 2-layer
 *        synthetic checkpoint, turned into H100 estimates by h100_model.h, with the targets of the issue.
 *
 * Runs on the simulated device with kernels/ built for counting (sim/sim.mk's SIM_CU_COUNTED), on
 * one of bench_ref's checkpoints (layer 0 dense, layer 1 MoE with all routed experts, bf16):
 *
 * - `profile_fast [PREFILL]`: build/bench/v2-lite-2layer (DeepSeek-V2-Lite's shapes). Counted: a
 *   prefill of PREFILL tokens, one batch-1 and one batch-16 decode step (graphs on, as the model
 *   runs them), the attention and FFN halves of the MoE layer alone at both batches, one batch-1
 *   decode step with the MoE layer expert-parallel over 8 devices, and the kernels `make bench-fast`
 *   times, at its shapes (profile_cases.c). Writes build/profile-fast.json.
 * - `profile_fast --v2 [PREFILL]`: build/bench/v2-2layer (DeepSeek-V2's shapes, vocabulary cut to
 *   12800). The prompt runs uncounted (counting it would track every expert's bytes); counted: one
 *   batch-1 decode step and the MoE layer alone. Writes build/profile-fast-v2.json.
 *
 * The full-depth estimate adds copies of the measured MoE layer to the 2-layer step (25 for
 * V2-Lite's 26 MoE layers, 58 for V2's 59), and for the cut vocabulary the LM-head bytes it lacks.
 * Every time here is the model's estimate, not a measurement.
 */
#include "fast.h"
#include "fast_ep.h"
#include "fast_plan.h"
#include "fast_shard.h"
#include "h100_model.h"
#include "profile_cases.h"
#include "sim.h"
#include "sim_counters.h"

#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH      16
#define FULL_VOCAB 102400 /**< DeepSeek-V2's and V2-Lite's vocabulary */

/** Which model a run profiles. */
typedef struct {
    const char *model; /**< the full-depth model the estimate is for */
    const char *ckpt;  /**< its 2-layer checkpoint */
    const char *out;   /**< the JSON written */
    int layers;        /**< layers of the full-depth model, the first dense */
    bool full;         /**< the whole profile (prefill, batch 16, 8 devices, bench-fast's kernels) */
} Profile;

static const Profile LITE = { "DeepSeek-V2-Lite", "build/bench/v2-lite-2layer", "build/profile-fast.json", 27, true };
static const Profile V2 = { "DeepSeek-V2", "build/bench/v2-2layer", "build/profile-fast-v2.json", 60, false };

/** A counted interval and its estimate. */
typedef struct {
    SimStepCounters c;
    unsigned long long launches;                   /**< kernels, GEMMs, copies, fills */
    unsigned long long read, written;              /**< global bytes */
    double t, t_bytes, t_launch, t_sync;           /**< estimated seconds: total and its three terms */
    unsigned long long cache_read, cache_distinct; /**< reads of the latent cache */
} Measured;

/** Totals and estimate of the interval just stopped; as_graph: launches priced as replayed from a graph. */
static void finish(Measured *m, const void *cache, int as_graph)
{
    size_t n = 0;
    const SimLaunchRecord *r = sim_counters_records(&n);
    m->launches = n;
    m->t_bytes = m->t_launch = 0;
    for (size_t i = 0; i < n; i++) {
        m->t_bytes += h100_record_seconds(&r[i]);
        m->t_launch += h100_launch_seconds(&r[i], as_graph);
    }
    m->read = sim_counters_sum(m->c.read);
    m->written = sim_counters_sum(m->c.written);
    m->t_sync = (double)m->c.host_syncs * H100_HOST_SYNC_S;
    m->t = m->t_bytes + m->t_launch + m->t_sync;
    sim_counters_alloc_reads(cache, &m->cache_read, &m->cache_distinct);
}

/** One decode step of B sequences (slots 0..B−1), counted. */
static int count_decode(FastModel *fm, int B, Measured *m)
{
    int slots[BATCH], tokens[BATCH];
    for (int i = 0; i < B; i++) {
        slots[i] = i;
        tokens[i] = (i * 7919 + 11) % fm->cfg->vocab_size;
    }
    if (fast_model_decode(fm, slots, tokens, B, NULL)) /* warm-up: the graph of B is captured here */
        return -1;
    sim_counters_start();
    const int rc = fast_model_decode(fm, slots, tokens, B, NULL);
    sim_counters_stop(&m->c);
    finish(m, fm->cache, 0);
    return rc;
}

/*
 * The greedy loop (fast_model_decode_greedy, slot 0): calls of 1 and of 9 steps, counted. The difference over
 * 8 steps is what one step of the loop costs, launches and bytes included; the 1-step call's host
 * synchronisations are what a call costs at its edges, however many steps it runs.
 */
static int count_greedy(FastModel *fm, Measured *one, Measured *nine)
{
    const int slot = 0;
    int token = 11, out[9];
    if (fast_model_decode_greedy(fm, &slot, &token, 1, 9, out)) /* warm-up: the graph and the pinned token buffer */
        return -1;
    sim_counters_start();
    int rc = fast_model_decode_greedy(fm, &slot, &token, 1, 1, out);
    sim_counters_stop(&one->c);
    finish(one, fm->cache, 0);
    sim_counters_start();
    rc = rc || fast_model_decode_greedy(fm, &slot, &token, 1, 9, out);
    sim_counters_stop(&nine->c);
    finish(nine, fm->cache, 0);
    return rc;
}

/** Kernel names of one half of a layer (a launch belongs to the half whose call issued it). */
typedef struct {
    char names[32][48];
    int n;
} Half;

static void half_names(Half *h, const SimLaunchRecord *r, size_t from, size_t to)
{
    h->n = 0;
    for (size_t i = from; i < to; i++, h->n++)
        if (h->n < 32) snprintf(h->names[h->n], sizeof h->names[0], "%s", r[i].name);
}

/*
 * MoE layer l (≥ 1) on the last decode step's B rows again (positions still on the device), counted, in
 * the state of a MoE layer that follows a MoE layer, as the full-depth estimate's copies do (V2-Lite's
 * layers 2..26, V2's 2..59): first, uncounted, layer l − 1 if it is a MoE layer, else layer l itself, so
 * that a fused FFN tail has written the counted layer's normalised input (FastModel.a_ready) and its
 * first norm is not launched. Values differ from a real step's, shapes and bytes do not. The attention half is made to finish before the FFN half starts (one
 * synchronisation, not counted, as is the one that ends the measurement) so their launches can be told
 * apart; launches are priced as in a graph, as the decode step replays them.
 */
static int count_layer(FastModel *fm, int l, int B, Measured *m, Half *attn, Half *ffn)
{
    const int prev = fm->layers[l - 1].is_moe ? l - 1 : l;
    if (fast_model_layer_attention(fm, prev, B) || fast_model_layer_ffn(fm, prev, B) ||
        fast_check_cuda(cudaStreamSynchronize(fm->ctx.stream), "cudaStreamSynchronize", __FILE__, __LINE__))
        return -1; /* queued work runs at the next synchronisation: layer l − 1's must run before counting starts */
    size_t n_attn = 0, n = 0;
    sim_counters_start();
    int rc = fast_model_layer_attention(fm, l, B) ||
             fast_check_cuda(cudaStreamSynchronize(fm->ctx.stream), "cudaStreamSynchronize", __FILE__, __LINE__);
    sim_counters_records(&n_attn);
    rc = rc || fast_model_layer_ffn(fm, l, B) ||
         fast_check_cuda(cudaStreamSynchronize(fm->ctx.stream), "cudaStreamSynchronize", __FILE__, __LINE__);
    sim_counters_stop(&m->c);
    const SimLaunchRecord *r = sim_counters_records(&n);
    half_names(attn, r, 0, n_attn);
    half_names(ffn, r, n_attn, n);
    finish(m, fm->cache, fm->graphs != NULL);
    m->c.host_syncs -= 2; /* the two synchronisations of the measurement */
    m->c.host_syncs_inside -= m->c.host_syncs_inside ? 1 : 0;
    m->t_sync -= 2 * H100_HOST_SYNC_S;
    m->t -= 2 * H100_HOST_SYNC_S;
    return rc ? -1 : 0;
}

static size_t mat_bytes(const FastMat *w)
{
    return w->data ? (size_t)w->rows * w->cols * kernel_dtype_size(w->dtype) : 0;
}

/** Bytes of every weight uploaded to the device. */
static size_t weight_bytes(const FastModel *fm)
{
    const ModelConfig *c = fm->cfg;
    size_t b = mat_bytes(&fm->embed) + mat_bytes(&fm->lm_head) + 4 * (size_t)c->hidden_size;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const FastLayer *L = &fm->layers[l];
        const FastMla *a = &L->attn;
        b += 8 * (size_t)c->hidden_size + mat_bytes(&a->q_proj) + mat_bytes(&a->q_a_proj) + mat_bytes(&a->q_b_proj) +
             mat_bytes(&a->kv_a_proj) + mat_bytes(&a->kv_b_proj) + mat_bytes(&a->o_proj) + 4 * (size_t)c->kv_lora_rank +
             (a->q_a_norm ? 4 * (size_t)c->q_lora_rank : 0);
        if (L->is_moe)
            b += 4 * (size_t)c->n_routed_experts * (c->hidden_size + (L->moe.bias ? 1 : 0)) +
                 mat_bytes(&L->moe.gate_up) + mat_bytes(&L->moe.down) + mat_bytes(&L->moe.shared.gate_up) +
                 mat_bytes(&L->moe.shared.down);
        else
            b += mat_bytes(&L->dense.gate_up) + mat_bytes(&L->dense.down);
    }
    return b;
}

/** Byte-weighted median width of weight reads (reads of allocations the interval never wrote), by width class. */
static int median_width(const double ro_width[SIM_WIDTHS])
{
    double total = 0, acc = 0;
    for (int w = 0; w < SIM_WIDTHS; w++) total += ro_width[w];
    for (int w = 0; w < SIM_WIDTHS; w++) {
        acc += ro_width[w];
        if (total > 0 && 2 * acc >= total) return w < 5 ? (int)SIM_WIDTH_BYTES(w) : 0;
    }
    return 0;
}

static void report(const char *what, double value, const char *target)
{
    printf("  %-52s %14.4g   (target %s)\n", what, value, target);
}

/** Launches of the batch-1 step by kernel name, as JSON, with their estimated microseconds. */
static void kernels_json(FILE *f, const SimLaunchRecord *r, size_t n)
{
    fprintf(f, "  \"decode_b1_launches\": [\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f,
                "    {\"name\": \"%s\", \"grid\": [%u, %u, %u], \"block\": [%u, %u, %u], \"in_graph\": %d, "
                "\"read_by_width\": [%llu, %llu, %llu, %llu, %llu, %llu], "
                "\"written_by_width\": [%llu, %llu, %llu, %llu, %llu, %llu], \"distinct\": %llu, "
                "\"estimated_us\": %.3f}%s\n",
                r[i].name, r[i].grid.x, r[i].grid.y, r[i].grid.z, r[i].block.x, r[i].block.y, r[i].block.z,
                r[i].in_graph, r[i].read[0], r[i].read[1], r[i].read[2], r[i].read[3], r[i].read[4], r[i].read[5],
                r[i].written[0], r[i].written[1], r[i].written[2], r[i].written[3], r[i].written[4], r[i].written[5],
                r[i].distinct, 1e6 * h100_record_seconds(&r[i]), i + 1 < n ? "," : "");
    fprintf(f, "  ],\n");
}

static void measured_json(FILE *f, const char *key, const Measured *m)
{
    fprintf(f,
            "  \"%s\": {\"launches\": %llu, \"kernels\": %llu, \"gemms\": %llu, \"copies\": %llu, \"fills\": %llu, "
            "\"graph_launches\": %llu, \"queued\": %llu, \"host_syncs\": %llu, \"host_syncs_inside\": %llu, "
            "\"h2d_bytes\": %llu, \"d2h_bytes\": %llu, "
            "\"global_bytes_read\": %llu, \"global_bytes_written\": %llu, \"distinct_bytes_read\": %llu, "
            "\"weight_bytes_read\": %llu, \"weight_bytes_distinct\": %llu, \"cache_bytes_read\": %llu, "
            "\"cache_bytes_distinct\": %llu, \"estimated_s\": %.9f, \"estimated_bytes_s\": %.9f, "
            "\"estimated_launch_s\": %.9f, \"estimated_sync_s\": %.9f},\n",
            key, m->launches, m->c.kernels, m->c.gemms, m->c.copies, m->c.fills, m->c.graph_launches, m->c.queued,
            m->c.host_syncs, m->c.host_syncs_inside, m->c.h2d_bytes, m->c.d2h_bytes, m->read, m->written,
            m->c.distinct_read, m->c.ro_read, m->c.ro_distinct, m->cache_read, m->cache_distinct, m->t, m->t_bytes,
            m->t_launch, m->t_sync);
}

static void names_json(FILE *f, const char *key, const Half *h)
{
    fprintf(f, "\"%s\": [", key);
    for (int i = 0; i < h->n && i < 32; i++) fprintf(f, "%s\"%s\"", i ? ", " : "", h->names[i]);
    fprintf(f, "]");
}

static void names_print(const char *what, const Half *h)
{
    printf("    %s (%d):", what, h->n);
    for (int i = 0; i < h->n && i < 32; i++) printf("%s %s", i ? "," : "", h->names[i]);
    printf("\n");
}

/** Device memory the planner (fast/plan.c) predicts for cfg on one device, bf16, at each context and batch. */
static void plans_json(FILE *f, const ModelConfig *cfg, const char *model)
{
    static const int contexts[] = { 4096, 32768, 131072 }, batches[] = { 1, BATCH };
    fprintf(f, "  \"scratch_bytes_planned\": [\n");
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            FastPlan p;
            if (fast_plan_memory(&p, cfg, 1, FAST_LAYOUT_SINGLE, contexts[i], batches[j], true, 0)) continue;
            const FastPlanDevice *d = &p.dev[0];
            fprintf(f,
                    "    {\"config\": \"%s\", \"context\": %d, \"batch\": %d, \"scratch\": %zu, \"staging\": %zu, "
                    "\"cache\": %zu, \"weights\": %zu, \"total\": %zu}%s\n",
                    model, p.context, p.batch, d->scratch, d->staging, d->cache, d->weights, d->total,
                    i == 2 && j == 1 ? "" : ",");
            printf("  planned scratch, %s, context %6d, batch %2d: %8.2f GB (+ staging %.2f GB, cache %.2f GB)\n",
                   model, p.context, p.batch, d->scratch / 1e9, d->staging / 1e9, d->cache / 1e9);
        }
    fprintf(f, "  ],\n");
}

/**
 * The sharded layout over 8 devices (fast_shard.h) on the same checkpoint, its collectives' payload wire: one
 * batch-1 decode step after a 4-token prompt and a warm-up step (which captured the step's graphs). host_syncs:
 * those of the decode call (target 0); the rest of c, *launches and *in_graph: the work it queued, run by the
 * synchronisation after it (the graph replays, their launches, the collectives' bytes); and each device's
 * memory high-water mark from its open (printed; the plan's prediction is test_fast_plan's).
 */
static int profile_sharded(const char *ckpt, FastShardWire wire, SimStepCounters *c, size_t *launches, size_t *in_graph,
                           size_t high_water[8])
{
    const int D = 8, prompt[4] = { 11, 22, 33, 44 }, slot = 0, next = 5;
    const FastOptions opt = { .bf16 = true, .max_context = 64 };
    FastShardModel m;
    SimStepCounters open_c;
    sim_counters_start();
    if (fast_shard_open(&m, ckpt, D, &opt)) {
        sim_counters_stop(&open_c);
        fprintf(stderr, "profile-fast: sharded layout: %s\n", ds_last_error());
        return -1;
    }
    sim_counters_stop(&open_c);
    fast_shard_set_wire(&m, wire);
    int rc = fast_shard_prefill(&m, 0, prompt, 4, NULL, false) || fast_shard_decode(&m, &slot, &next, 1, NULL);
    for (int d = 0; d < D; d++) rc = rc || cudaSetDevice(d) || cudaDeviceSynchronize();
    SimStepCounters queued;
    sim_counters_start();
    rc = rc || fast_shard_decode(&m, &slot, &next, 1, NULL);
    sim_counters_stop(&queued);
    sim_counters_start();
    for (int d = 0; d < D; d++) rc = rc || cudaSetDevice(d) || cudaDeviceSynchronize();
    sim_counters_stop(c);
    c->host_syncs = queued.host_syncs;
    *launches = *in_graph = 0;
    const SimLaunchRecord *rec = sim_counters_records(launches);
    for (size_t i = 0; i < *launches; i++) *in_graph += rec[i].in_graph != 0;
    fast_shard_close(&m);
    if (rc) {
        fprintf(stderr, "profile-fast: sharded layout: %s\n", ds_last_error());
        return -1;
    }
    for (int d = 0; d < D; d++) high_water[d] = open_c.high_water[d];
    return 0;
}

int main(int argc, char **argv)
{
    const Profile *P = argc > 1 && strcmp(argv[1], "--v2") == 0 ? &V2 : &LITE;
    const char *arg = argc > (P == &V2 ? 2 : 1) ? argv[P == &V2 ? 2 : 1] : NULL;
    const int prefill = arg ? atoi(arg) : 1024;
    if (prefill < 1 || prefill > 4096) {
        fprintf(stderr, "profile-fast: prefill length %s is outside [1, 4096]\n", arg);
        return 1;
    }
    setenv("SIM_DEVICE_COUNT", "8", 1); /* before the first CUDA call: the expert-parallel run uses 8 */
    FastModel fm;
    memset(&fm, 0, sizeof fm);
    const int context = prefill + 32, batch = P->full ? BATCH : 1;
    const FastOptions opt = { .bf16 = true, .max_context = context, .max_batch = batch };
    if (fast_model_open(&fm, P->ckpt, &opt)) {
        fprintf(stderr, "profile-fast: %s\n", ds_last_error());
        return 1;
    }
    SimStats st;
    sim_stats(&st);
    const size_t weights = weight_bytes(&fm);
    const size_t cache = (size_t)fm.cfg->num_hidden_layers * batch * fm.max_context *
                         (fm.cfg->kv_lora_rank + fm.cfg->qk_rope_head_dim) * kernel_dtype_size(fm.ctx.wtype);
    const size_t scratch = st.live_bytes - weights - cache;
    FastPlan plan_here; /* the planner at the profiled (context, batch), beside the measured scratch */
    if (fast_plan_memory(&plan_here, fm.cfg, 1, FAST_LAYOUT_SINGLE, context, batch, true, 0)) {
        fprintf(stderr, "profile-fast: %s\n", ds_last_error());
        return 1;
    }
    ModelConfig full = fm.config; /* the full-depth model the estimate is for */
    full.num_hidden_layers = P->layers;
    full.vocab_size = FULL_VOCAB;

    int *prompt = malloc(sizeof(int) * (size_t)prefill);
    for (int i = 0; i < prefill; i++) prompt[i] = (i * 7919 + 3) % fm.cfg->vocab_size;
    Measured pre = { 0 }, d1, d16 = { 0 }, l1, l16 = { 0 }, ep = { 0 };
    Measured g1, g9;                          /* greedy calls of 1 and 9 steps */
    SimStepCounters sh = { 0 }, sh32 = { 0 }; /* the sharded layout over 8 devices: bf16, float32 wire */
    size_t sh_launches = 0, sh_in_graph = 0, sh_high[8] = { 0 }, sh32_launches = 0, sh32_in_graph = 0, sh32_high[8];
    long long ep_fixed = 0, ep_exact = 0; /* EP: one MoE layer's payload bytes both ways, fixed capacity and exact */
    Half a1, f1, a16, f16;
    if (P->full) sim_counters_start();
    int rc = fast_model_prefill(&fm, 0, prompt, prefill, NULL, false);
    if (P->full) {
        sim_counters_stop(&pre.c);
        finish(&pre, fm.cache, 0);
    }
    free(prompt);
    rc = rc || count_decode(&fm, 1, &d1);
    size_t nrec = 0;
    const SimLaunchRecord *rec = sim_counters_records(&nrec);
    SimLaunchRecord *d1_records = malloc(nrec * sizeof *d1_records + 1);
    if (d1_records) memcpy(d1_records, rec, nrec * sizeof *d1_records);
    rc = rc || count_layer(&fm, 1, 1, &l1, &a1, &f1) || count_greedy(&fm, &g1, &g9);
    if (P->full) rc = rc || count_decode(&fm, BATCH, &d16) || count_layer(&fm, 1, BATCH, &l16, &a16, &f16);
    const int vocab = fm.cfg->vocab_size, D = fm.cfg->hidden_size;
    fast_model_close(&fm);
    if (rc || !d1_records) {
        fprintf(stderr, "profile-fast: %s\n", ds_last_error());
        return 1;
    }
    if (P->full) {
        const FastOptions ep_opt = { .bf16 = true, .max_context = 64, .ep_devices = 8 };
        memset(&fm, 0, sizeof fm);
        if (fast_model_open(&fm, P->ckpt, &ep_opt) || count_decode(&fm, 1, &ep) || fast_ep_host_plan(&fm.ep->ep)) {
            fprintf(stderr, "profile-fast: expert-parallel model: %s\n", ds_last_error());
            return 1;
        }
        const FastEp *g = &fm.ep->ep; /* its last MoE call: blocks of T_s rows to every device vs distinct pairs */
        for (int s = 0; s < g->N; s++) ep_fixed += 2LL * g->N * g->last_T[s] * g->D * 2;
        ep_exact = 2LL * g->stats.rows_dispatched * g->D * 2;
        fast_model_close(&fm);
        if (profile_sharded(P->ckpt, FAST_WIRE_BF16, &sh, &sh_launches, &sh_in_graph, sh_high) ||
            profile_sharded(P->ckpt, FAST_WIRE_F32, &sh32, &sh32_launches, &sh32_in_graph, sh32_high))
            return 1;
    }

    /* full depth: the 2-layer step plus more MoE layers like layer 1, and the LM-head rows the cut vocabulary lacks
     * (read at the library's efficiency, as the LM head is a cuBLAS GEMM) */
    const int extra = P->layers - 2;
    const double head_extra = (double)(FULL_VOCAB - vocab) * D * kernel_dtype_size(KERNEL_BF16);
    const double t_head_extra = head_extra / (H100_HBM_BYTES_PER_S * H100_EFF_LIBRARY);
    /* one step of the greedy loop (no synchronisation inside; the layers, the head and the arg-max): the
     * 2-layer step of the estimate; fast_model_decode's step, with its two synchronisations, beside it */
    const double t_step = (g9.t - g1.t) / 8;
    const double greedy_syncs = (double)(g9.c.host_syncs - g1.c.host_syncs) / 8;
    const double t_full = t_step + extra * l1.t + t_head_extra;
    const double t_full_api = d1.t + extra * l1.t + t_head_extra;
    /* roofline bytes: every weight the step needs and every cached row it attends to, read once */
    const double roof_bytes = (double)(d1.c.ro_distinct + d1.cache_distinct) +
                              extra * (double)(l1.c.ro_distinct + l1.cache_distinct) + head_extra;
    const double weight_read = (double)d1.c.ro_read + extra * (double)l1.c.ro_read;
    const double weight_roof = (double)d1.c.ro_distinct + extra * (double)l1.c.ro_distinct;
    const double global_read = (double)d1.read + extra * (double)l1.read;
    double ro_width[SIM_WIDTHS];
    for (int w = 0; w < SIM_WIDTHS; w++)
        ro_width[w] = (double)d1.c.ro_read_width[w] + extra * (double)l1.c.ro_read_width[w];
    const int width = median_width(ro_width);
    const double t_roof = roof_bytes / H100_HBM_BYTES_PER_S;
    const double t_full16 = d16.t + extra * l16.t + t_head_extra;
    const double cache_reads = l1.cache_distinct ? (double)l1.cache_read / (double)l1.cache_distinct : 0;
    const int n_h = full.num_attention_heads;
    unsigned long long nccl = 0;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) nccl += ep.c.nccl_bytes[i][j];
    char cache_target[32];
    snprintf(cache_target, sizeof cache_target, "<= %d (n_h/16)", n_h / 16 > 1 ? n_h / 16 : 1);

    printf("profile-fast: %s, bf16, prompt %d tokens, decode at batch 1%s; full depth = %s, %d layers (H100 figures "
           "are the time model's estimates, not measurements)\n",
           P->ckpt, prefill, P->full ? " and 16" : "", P->model, P->layers);
    if (vocab != FULL_VOCAB)
        printf("  vocabulary %d in the checkpoint: the estimate adds the %.0f MB of LM head of %d\n", vocab,
               head_extra / 1e6, FULL_VOCAB);
    report("launches per MoE layer (batch-1 decode)", (double)l1.launches, "<= 6");
    report("  of which attention (from the layer's first launch)", (double)a1.n, "-");
    report("  of which FFN (through the next layer's input)", (double)f1.n, "-");
    names_print("attention", &a1);
    names_print("FFN", &f1);
    report("host syncs per decode step, 1 device (greedy loop)", greedy_syncs, "0");
    printf("    = the syncs of a 9-step fast_model_decode_greedy call less a 1-step call's, over 8; a call waits "
           "%llu times at its edges, however many steps it runs\n",
           g1.c.host_syncs);
    report("host syncs per decode step, 1 device (fast_model_decode)", (double)d1.c.host_syncs, "-");
    printf("    = %llu between the step's first queued operation and its last + %llu at its edges (the call "
           "returns the logits)\n",
           d1.c.host_syncs_inside, d1.c.host_syncs - d1.c.host_syncs_inside);
    if (P->full) {
        report("host syncs inside a decode step, 8 devices (EP)", (double)ep.c.host_syncs_inside, "0");
        printf("    = between the step's first queued operation and its last; the call waits %llu more times at "
               "its edges (it returns the logits, as fast_model_decode does)\n",
               ep.c.host_syncs - ep.c.host_syncs_inside);
        report("  NCCL bytes per decode step, all peers (EP)", (double)nccl, "-");
        report("  of which one MoE layer's bf16 rows and partials, fixed capacity", (double)ep_fixed, "-");
        report("  the same with exact sizes (the host's plan)", (double)ep_exact, "-");
        report("host syncs per decode step, 8 devices (sharded)", (double)sh.host_syncs, "0");
        unsigned long long sh_nccl = 0, sh32_nccl = 0;
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 8; j++) sh_nccl += sh.nccl_bytes[i][j], sh32_nccl += sh32.nccl_bytes[i][j];
        report("  launches per decode step, all 8 devices (sharded)", (double)sh_launches, "-");
        report("  of them replayed from the step's graphs (sharded)", (double)sh_in_graph, "all");
        report("  graph launches per decode step (sharded, one per device)", (double)sh.graph_launches, "8");
        report("  NCCL bytes per decode step, all peers (sharded, bf16 wire)", (double)sh_nccl, "-");
        report("  NCCL bytes per decode step, all peers (sharded, float32 wire)", (double)sh32_nccl, "-");
        report("  bf16 wire / float32 wire bytes (sharded)", (double)sh_nccl / (double)sh32_nccl, "-");
        printf(
            "    = the sub-layer sums travel in bf16; queries and logits stay float32 (in this 2-layer checkpoint the "
            "float32 logits gather dominates)\n");
        report("  high-water after open, device 0 (sharded, each the same)", (double)sh_high[0], "-");
    }
    report("global bytes read / roofline bytes (batch 1)", global_read / roof_bytes, "<= 1.10");
    report("weight bytes read / distinct weight bytes (batch 1)", weight_read / weight_roof, "1 (each once)");
    report("weight load width, byte-weighted median (bytes)", width, ">= 16");
    report("MLA cache reads per row (batch 1)", cache_reads, cache_target);
    report("estimated H100 decode tok/s, full depth, B=1", 1.0 / t_full, "-");
    report("estimated fraction of roofline, B=1", t_roof / t_full, ">= 0.70");
    report("  the same through fast_model_decode (2 syncs a step)", t_roof / t_full_api, "-");
    if (P->full) {
        report("estimated H100 decode tok/s, full depth, B=16", BATCH / t_full16, "-");
        report("estimated H100 prefill tok/s, 2 layers", prefill / pre.t, "-");
        report("host syncs in the prefill", (double)pre.c.host_syncs, "-");
    }
    report("scratch bytes (beyond weights and cache), measured", (double)scratch, "-");
    report("  planned (scratch + staging), same context and batch",
           (double)(plan_here.dev[0].scratch + plan_here.dev[0].staging), "-");

    FILE *f = fopen(P->out, "w");
    if (!f) {
        fprintf(stderr, "profile-fast: cannot write %s\n", P->out);
        return 1;
    }
    fprintf(f,
            "{\n  \"checkpoint\": \"%s\",\n  \"model\": \"%s\",\n  \"full_depth_layers\": %d,\n  \"vocab_size\": %d,\n"
            "  \"note\": \"H100 times are estimates of fast/bench/h100_model.h, not measurements\",\n",
            P->ckpt, P->model, P->layers, vocab);
    fprintf(f, "  \"launches_per_moe_layer\": %llu,\n", l1.launches);
    fprintf(f, "  \"launches_per_moe_layer_attention\": %d,\n  \"launches_per_moe_layer_ffn\": %d,\n", a1.n, f1.n);
    fprintf(f, "  \"moe_layer_b1_kernels\": {");
    names_json(f, "attention", &a1);
    fprintf(f, ", ");
    names_json(f, "ffn", &f1);
    fprintf(f, "},\n");
    if (P->full) fprintf(f, "  \"launches_per_moe_layer_b16\": %llu,\n", l16.launches);
    fprintf(f, "  \"host_syncs_per_decode_step\": {\"1\": %.3f, \"1_fast_model_decode\": %llu", greedy_syncs,
            d1.c.host_syncs);
    if (P->full)
        fprintf(f, ", \"8\": %llu, \"8_sharded_f32_wire\": %llu, \"8_ep\": %llu", sh.host_syncs, sh32.host_syncs,
                ep.c.host_syncs);
    fprintf(f, "},\n  \"host_syncs_per_decode_step_inside\": {\"1\": %llu", d1.c.host_syncs_inside);
    if (P->full) fprintf(f, ", \"8_ep\": %llu", ep.c.host_syncs_inside);
    fprintf(f, "},\n  \"host_syncs_definition\": \"1: per step of the greedy loop (a 9-step "
               "fast_model_decode_greedy call less a 1-step call, over 8); 8: one decode step of the sharded layout "
               "over 8 devices, replayed from its graphs; 1_fast_model_decode and 8_ep: every synchronisation inside "
               "one fast_model_decode call (8_ep: the ep layout over 8 devices): those between the step's first "
               "queued operation and its last (_inside), plus those the call forces at its edges\",\n");
    fprintf(f, "  \"host_syncs_per_greedy_call\": %llu,\n", g1.c.host_syncs);
    if (P->full) {
        unsigned long long b16 = 0, b32 = 0;
        for (int i = 0; i < 64; i++) b16 += sh.nccl_bytes[i / 8][i % 8], b32 += sh32.nccl_bytes[i / 8][i % 8];
        fprintf(f,
                "  \"sharded_8_decode_step\": {\"launches\": %zu, \"in_graph\": %zu, \"graph_launches\": %llu, "
                "\"nccl_bytes_bf16_wire\": %llu, \"nccl_bytes_f32_wire\": %llu},\n",
                sh_launches, sh_in_graph, sh.graph_launches, b16, b32);
    }
    fprintf(f, "  \"estimated_fraction_of_roofline_fast_model_decode\": %.4f,\n", t_roof / t_full_api);
    fprintf(f, "  \"weight_bytes_read_over_roofline\": %.4f,\n", weight_read / weight_roof);
    fprintf(f, "  \"global_bytes_read_over_roofline\": %.4f,\n", global_read / roof_bytes);
    fprintf(f, "  \"weight_load_width_bytes\": %d,\n", width);
    fprintf(f, "  \"mla_cache_reads_per_row\": %.3f,\n", cache_reads);
    fprintf(f, "  \"mla_cache_reads_per_row_target\": %d,\n", n_h / 16 > 1 ? n_h / 16 : 1);
    fprintf(f, "  \"estimated_h100_decode_tok_s\": %.1f,\n", 1.0 / t_full);
    if (P->full) fprintf(f, "  \"estimated_h100_decode_tok_s_b16\": %.1f,\n", BATCH / t_full16);
    fprintf(f, "  \"estimated_fraction_of_roofline\": %.4f,\n", t_roof / t_full);
    fprintf(f, "  \"roofline_bytes_full_depth\": %.0f,\n", roof_bytes);
    fprintf(f, "  \"estimated_h100_decode_step_2_layers_s\": %.9f,\n", d1.t);
    if (P->full) {
        fprintf(f, "  \"estimated_h100_decode_step_2_layers_b16_s\": %.9f,\n", d16.t);
        fprintf(f, "  \"estimated_h100_prefill_tok_s_2_layers\": %.1f,\n", prefill / pre.t);
    }
    fprintf(f,
            "  \"scratch_bytes\": {\"config\": \"%s\", \"context\": %d, \"batch\": %d, \"bytes\": %zu, "
            "\"weights\": %zu, \"cache\": %zu, \"planned_scratch_and_staging\": %zu},\n",
            P->ckpt, context, batch, scratch, weights, cache, plan_here.dev[0].scratch + plan_here.dev[0].staging);
    plans_json(f, &full, P->model);
    if (P->full) {
        fprintf(f, "  \"ep8_nccl_bytes_per_decode_step\": %llu,\n", nccl);
        fprintf(f, "  \"ep8_moe_layer_payload_bytes\": {\"fixed_capacity\": %lld, \"exact\": %lld},\n", ep_fixed,
                ep_exact);
        fprintf(f, "  \"ep8_high_water_bytes\": [%zu, %zu, %zu, %zu, %zu, %zu, %zu, %zu],\n", ep.c.high_water[0],
                ep.c.high_water[1], ep.c.high_water[2], ep.c.high_water[3], ep.c.high_water[4], ep.c.high_water[5],
                ep.c.high_water[6], ep.c.high_water[7]);
        measured_json(f, "prefill", &pre);
    }
    measured_json(f, "decode_b1", &d1);
    measured_json(f, "moe_layer_b1", &l1);
    if (P->full) {
        measured_json(f, "decode_b16", &d16);
        measured_json(f, "moe_layer_b16", &l16);
        measured_json(f, "decode_b1_ep8", &ep);
        if (profile_cases_json(f, d1.t, d16.t)) {
            fprintf(stderr, "profile-fast: bench-fast's kernels: %s\n", ds_last_error());
            return 1;
        }
    }
    kernels_json(f, d1_records, nrec);
    fprintf(f, "  \"prefill_tokens\": %d\n}\n", prefill);
    free(d1_records);
    if (fclose(f) != 0) return 1;
    printf("wrote %s\n", P->out);
    return 0;
}
