/**
 * \file profile_fast.c
 * \brief `make profile-fast`: the fast path's device counters on the V2-Lite-shaped synthetic
 *        checkpoint, turned into H100 estimates by h100_model.h, with the targets of the issue.
 *
 * Runs on the simulated device with kernels/ built for counting (sim/sim.mk's SIM_CU_COUNTED),
 * on build/bench/v2-lite-2layer (bench_ref's writer: DeepSeek-V2-Lite's shapes, layer 0 dense,
 * layer 1 MoE with all 64 experts, bf16). Counted: a prefill of PREFILL tokens (argv[1]), one
 * batch-1 and one batch-16 decode step (graphs on, as the model runs them), the attention and FFN
 * of the MoE layer alone at both batches, and one batch-1 decode step with the MoE layer
 * expert-parallel over 8 devices. The full-depth estimate for DeepSeek-V2-Lite (26 MoE layers
 * after one dense one) adds 25 more copies of the measured MoE layer to the 2-layer step.
 * Prints each metric with its target and writes build/profile-fast.json. Every time here is the
 * model's estimate, not a measurement.
 */
#include "fast.h"
#include "fast_shard.h"
#include "h100_model.h"
#include "sim.h"
#include "sim_counters.h"

#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT               "build/bench/v2-lite-2layer"
#define OUT                "build/profile-fast.json"
#define V2_LITE_MOE_LAYERS 26 /**< DeepSeek-V2-Lite: 27 layers, the first dense */
#define BATCH              16

/** A counted interval and its estimate. */
typedef struct {
    SimStepCounters c;
    unsigned long long launches;                   /**< kernels, GEMMs, copies, fills */
    unsigned long long read, written;              /**< global bytes */
    double t, t_bytes, t_launch, t_sync;           /**< estimated seconds: total and its three terms */
    unsigned long long cache_read, cache_distinct; /**< reads of the latent cache */
} Measured;

static double width_eff(int w)
{
    static const double eff[SIM_WIDTHS] = { H100_EFF_WIDTH_1, H100_EFF_WIDTH_2,  H100_EFF_WIDTH_4,
                                            H100_EFF_WIDTH_8, H100_EFF_WIDTH_16, H100_EFF_WIDTH_16 };
    return eff[w];
}

/** Estimated seconds of one record's memory traffic (h100_model.h). */
static double record_seconds(const SimLaunchRecord *r)
{
    if (r->kind != SIM_REC_KERNEL)
        return (double)(sim_counters_sum(r->read) + sim_counters_sum(r->written)) /
               (H100_HBM_BYTES_PER_S * H100_EFF_LIBRARY);
    double weighted = 0, bytes = 0, width = 0;
    for (int w = 0; w < SIM_WIDTHS; w++) {
        const double b = (double)(r->read[w] + r->written[w]);
        bytes += b;
        weighted += b / width_eff(w);
        width += b * (w < 5 ? SIM_WIDTH_BYTES(w) : 16);
    }
    if (bytes == 0) return 0;
    double threads = (double)r->grid.x * r->grid.y * r->grid.z * r->block.x * r->block.y * r->block.z;
    if (threads > H100_RESIDENT_THREADS) threads = H100_RESIDENT_THREADS;
    const double flight = threads * (width / bytes) * H100_LOADS_IN_FLIGHT;
    double f = flight / (H100_HBM_BYTES_PER_S * H100_MEM_LATENCY_S);
    f = f < 1 ? f : 1;
    return weighted / (H100_HBM_BYTES_PER_S * f);
}

static void finish(Measured *m, const void *cache)
{
    size_t n = 0;
    const SimLaunchRecord *r = sim_counters_records(&n);
    m->launches = n;
    m->t_bytes = m->t_launch = 0;
    for (size_t i = 0; i < n; i++) {
        m->t_bytes += record_seconds(&r[i]);
        m->t_launch += r[i].in_graph ? H100_GRAPH_LAUNCH_S : H100_LAUNCH_S;
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
    finish(m, fm->cache);
    return rc;
}

/** Layer l's attention and FFN on the last decode step's B rows again (positions still on the device), counted. */
static int count_layer(FastModel *fm, int l, int B, Measured *m)
{
    sim_counters_start();
    const int rc = fast_model_layer_attention(fm, l, B) || fast_model_layer_ffn(fm, l, B) ||
                   fast_check_cuda(cudaStreamSynchronize(fm->ctx.stream), "cudaStreamSynchronize", __FILE__, __LINE__);
    sim_counters_stop(&m->c);
    finish(m, fm->cache);
    m->c.host_syncs--; /* the synchronisation that ends the measurement */
    m->t_sync -= H100_HOST_SYNC_S;
    m->t -= H100_HOST_SYNC_S;
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
                r[i].distinct, 1e6 * record_seconds(&r[i]), i + 1 < n ? "," : "");
    fprintf(f, "  ],\n");
}

static void measured_json(FILE *f, const char *key, const Measured *m)
{
    fprintf(f,
            "  \"%s\": {\"launches\": %llu, \"kernels\": %llu, \"gemms\": %llu, \"copies\": %llu, \"fills\": %llu, "
            "\"graph_launches\": %llu, \"host_syncs\": %llu, \"h2d_bytes\": %llu, \"d2h_bytes\": %llu, "
            "\"global_bytes_read\": %llu, \"global_bytes_written\": %llu, \"distinct_bytes_read\": %llu, "
            "\"weight_bytes_read\": %llu, \"weight_bytes_distinct\": %llu, \"cache_bytes_read\": %llu, "
            "\"cache_bytes_distinct\": %llu, \"estimated_s\": %.9f, \"estimated_bytes_s\": %.9f, "
            "\"estimated_launch_s\": %.9f, \"estimated_sync_s\": %.9f},\n",
            key, m->launches, m->c.kernels, m->c.gemms, m->c.copies, m->c.fills, m->c.graph_launches, m->c.host_syncs,
            m->c.h2d_bytes, m->c.d2h_bytes, m->read, m->written, m->c.distinct_read, m->c.ro_read, m->c.ro_distinct,
            m->cache_read, m->cache_distinct, m->t, m->t_bytes, m->t_launch, m->t_sync);
}

/**
 * The sharded layout over 8 devices (fast_shard.h) on the same checkpoint: one batch-1 decode step after a
 * 4-token prompt and a warm-up step, counted — host synchronisations (target 0), collectives' bytes, and
 * each device's memory high-water mark from its open (printed; the plan's prediction is test_fast_plan's).
 */
static int profile_sharded(void)
{
    const int D = 8, prompt[4] = { 11, 22, 33, 44 }, slot = 0, next = 5;
    const FastOptions opt = { .bf16 = true, .max_context = 64 };
    FastShardModel m;
    SimStepCounters open_c, c;
    sim_counters_start();
    if (fast_shard_open(&m, CKPT, D, &opt)) {
        sim_counters_stop(&open_c);
        fprintf(stderr, "profile-fast: sharded layout: %s\n", ds_last_error());
        return -1;
    }
    sim_counters_stop(&open_c);
    int rc = fast_shard_prefill(&m, 0, prompt, 4, NULL, false) || fast_shard_decode(&m, &slot, &next, 1, NULL);
    sim_counters_start();
    rc = rc || fast_shard_decode(&m, &slot, &next, 1, NULL);
    sim_counters_stop(&c);
    size_t n = 0;
    sim_counters_records(&n);
    fast_shard_close(&m);
    if (rc) {
        fprintf(stderr, "profile-fast: sharded layout: %s\n", ds_last_error());
        return -1;
    }
    unsigned long long nccl = 0;
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) nccl += c.nccl_bytes[i][j];
    printf("sharded layout over %d devices (attention by heads, cache by position, experts by expert):\n", D);
    report("host syncs per decode step, 8 devices (sharded)", (double)c.host_syncs, "0");
    report("launches per decode step, all 8 devices (sharded)", (double)n, "-");
    report("NCCL bytes per decode step, all peers (sharded)", (double)nccl, "-");
    for (int d = 0; d < D; d++) printf("  device %d high-water after open: %zu bytes\n", d, open_c.high_water[d]);
    return 0;
}

int main(int argc, char **argv)
{
    const int prefill = argc > 1 ? atoi(argv[1]) : 1024;
    if (prefill < 1 || prefill > 4096) {
        fprintf(stderr, "profile-fast: prefill length %s is outside [1, 4096]\n", argv[1]);
        return 1;
    }
    setenv("SIM_DEVICE_COUNT", "8", 1); /* before the first CUDA call: the expert-parallel run uses 8 */
    FastModel fm;
    memset(&fm, 0, sizeof fm);
    const int context = prefill + 8;
    const FastOptions opt = { .bf16 = true, .max_context = context, .max_batch = BATCH };
    if (fast_model_open(&fm, CKPT, &opt)) {
        fprintf(stderr, "profile-fast: %s\n", ds_last_error());
        return 1;
    }
    SimStats st;
    sim_stats(&st);
    const size_t weights = weight_bytes(&fm);
    const size_t cache = (size_t)fm.cfg->num_hidden_layers * BATCH * fm.max_context *
                         (fm.cfg->kv_lora_rank + fm.cfg->qk_rope_head_dim) * kernel_dtype_size(fm.ctx.wtype);
    const size_t scratch = st.live_bytes - weights - cache;

    int *prompt = malloc(sizeof(int) * (size_t)prefill);
    for (int i = 0; i < prefill; i++) prompt[i] = (i * 7919 + 3) % fm.cfg->vocab_size;
    Measured pre, d1, d16, l1, l16, ep;
    sim_counters_start();
    int rc = fast_model_prefill(&fm, 0, prompt, prefill, NULL, false);
    sim_counters_stop(&pre.c);
    finish(&pre, fm.cache);
    free(prompt);
    rc = rc || count_decode(&fm, 1, &d1);
    size_t nrec = 0;
    const SimLaunchRecord *rec = sim_counters_records(&nrec);
    SimLaunchRecord *d1_records = malloc(nrec * sizeof *d1_records + 1);
    if (d1_records) memcpy(d1_records, rec, nrec * sizeof *d1_records);
    rc = rc || count_layer(&fm, 1, 1, &l1) || count_decode(&fm, BATCH, &d16) || count_layer(&fm, 1, BATCH, &l16);
    fast_model_close(&fm);
    if (rc || !d1_records) {
        fprintf(stderr, "profile-fast: %s\n", ds_last_error());
        return 1;
    }

    const FastOptions ep_opt = { .bf16 = true, .max_context = 64, .ep_devices = 8 };
    memset(&fm, 0, sizeof fm);
    if (fast_model_open(&fm, CKPT, &ep_opt) || count_decode(&fm, 1, &ep)) {
        fprintf(stderr, "profile-fast: expert-parallel model: %s\n", ds_last_error());
        return 1;
    }
    fast_model_close(&fm);
    if (profile_sharded()) return 1;

    /* DeepSeek-V2-Lite at full depth: the 2-layer step plus 25 more MoE layers like layer 1 */
    const int extra = V2_LITE_MOE_LAYERS - 1;
    const double t_full = d1.t + extra * l1.t;
    /* roofline bytes: every weight the step needs and every cached row it attends to, read once */
    const double roof_bytes =
        (double)(d1.c.ro_distinct + d1.cache_distinct) + extra * (double)(l1.c.ro_distinct + l1.cache_distinct);
    const double weight_read = (double)d1.c.ro_read + extra * (double)l1.c.ro_read;
    const double weight_roof = (double)d1.c.ro_distinct + extra * (double)l1.c.ro_distinct;
    const double global_read = (double)d1.read + extra * (double)l1.read;
    double ro_width[SIM_WIDTHS];
    for (int w = 0; w < SIM_WIDTHS; w++)
        ro_width[w] = (double)d1.c.ro_read_width[w] + extra * (double)l1.c.ro_read_width[w];
    const int width = median_width(ro_width);
    const double t_roof = roof_bytes / H100_HBM_BYTES_PER_S;
    const double t_full16 = d16.t + extra * l16.t;
    const double cache_reads = l1.cache_distinct ? (double)l1.cache_read / (double)l1.cache_distinct : 0;
    unsigned long long nccl = 0;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) nccl += ep.c.nccl_bytes[i][j];

    printf("profile-fast: %s, bf16, prefill %d tokens, decode at batch 1 and %d (H100 figures are the time "
           "model's estimates)\n",
           CKPT, prefill, BATCH);
    report("launches per MoE layer (batch-1 decode)", (double)l1.launches, "<= 6");
    report("host syncs per decode step, 1 device", (double)d1.c.host_syncs, "0");
    report("host syncs per decode step, 8 devices (EP)", (double)ep.c.host_syncs, "0");
    report("global bytes read / roofline bytes (batch 1)", global_read / roof_bytes, "<= 1.10");
    report("weight bytes read / distinct weight bytes (batch 1)", weight_read / weight_roof, "-");
    report("weight load width, byte-weighted median (bytes)", width, ">= 16");
    report("MLA cache reads per row (batch 1, n_h = 16)", cache_reads, "<= 1 (n_h/16)");
    report("estimated H100 decode tok/s, V2-Lite full depth, B=1", 1.0 / t_full, "-");
    report("estimated fraction of roofline, B=1", t_roof / t_full, ">= 0.70");
    report("estimated H100 decode tok/s, V2-Lite full depth, B=16", BATCH / t_full16, "-");
    report("estimated H100 prefill tok/s, 2 layers", prefill / pre.t, "-");
    report("host syncs in the prefill", (double)pre.c.host_syncs, "-");
    report("scratch bytes (beyond weights and cache)", (double)scratch, "-");

    FILE *f = fopen(OUT, "w");
    if (!f) {
        fprintf(stderr, "profile-fast: cannot write %s\n", OUT);
        return 1;
    }
    fprintf(f,
            "{\n  \"checkpoint\": \"%s\",\n  \"note\": \"H100 times are estimates of fast/bench/h100_model.h, "
            "not measurements\",\n",
            CKPT);
    fprintf(f, "  \"launches_per_moe_layer\": %llu,\n", l1.launches);
    fprintf(f, "  \"launches_per_moe_layer_b16\": %llu,\n", l16.launches);
    fprintf(f, "  \"host_syncs_per_decode_step\": {\"1\": %llu, \"8\": %llu},\n", d1.c.host_syncs, ep.c.host_syncs);
    fprintf(f, "  \"weight_bytes_read_over_roofline\": %.4f,\n", weight_read / weight_roof);
    fprintf(f, "  \"global_bytes_read_over_roofline\": %.4f,\n", global_read / roof_bytes);
    fprintf(f, "  \"weight_load_width_bytes\": %d,\n", width);
    fprintf(f, "  \"mla_cache_reads_per_row\": %.3f,\n", cache_reads);
    fprintf(f, "  \"estimated_h100_decode_tok_s\": %.1f,\n", 1.0 / t_full);
    fprintf(f, "  \"estimated_h100_decode_tok_s_b16\": %.1f,\n", BATCH / t_full16);
    fprintf(f, "  \"estimated_fraction_of_roofline\": %.4f,\n", t_roof / t_full);
    fprintf(f, "  \"roofline_bytes_full_depth\": %.0f,\n", roof_bytes);
    fprintf(f, "  \"estimated_h100_prefill_tok_s_2_layers\": %.1f,\n", prefill / pre.t);
    fprintf(f,
            "  \"scratch_bytes\": {\"config\": \"%s\", \"context\": %d, \"batch\": %d, \"bytes\": %zu, "
            "\"weights\": %zu, \"cache\": %zu},\n",
            CKPT, context, BATCH, scratch, weights, cache);
    fprintf(f, "  \"ep8_nccl_bytes_per_decode_step\": %llu,\n", nccl);
    fprintf(f, "  \"ep8_high_water_bytes\": [%zu, %zu, %zu, %zu, %zu, %zu, %zu, %zu],\n", ep.c.high_water[0],
            ep.c.high_water[1], ep.c.high_water[2], ep.c.high_water[3], ep.c.high_water[4], ep.c.high_water[5],
            ep.c.high_water[6], ep.c.high_water[7]);
    measured_json(f, "prefill", &pre);
    measured_json(f, "decode_b1", &d1);
    measured_json(f, "moe_layer_b1", &l1);
    measured_json(f, "decode_b16", &d16);
    measured_json(f, "moe_layer_b16", &l16);
    measured_json(f, "decode_b1_ep8", &ep);
    kernels_json(f, d1_records, nrec);
    fprintf(f, "  \"prefill_tokens\": %d\n}\n", prefill);
    free(d1_records);
    if (fclose(f) != 0) return 1;
    printf("wrote %s\n", OUT);
    return 0;
}
