/**
 * \file plan.c
 * \brief fast_plan_memory(): per-device bytes of the fast path's layouts from the allocators' own sizes.
 */
#include "fast_plan.h"

#include "error.h"
#include "fast.h"
#include "fast_ep.h"
#include "fast_shard.h"
#include "model.h"

#include <string.h>

const char *const fast_layout_names[4] = { "single", "ep", "dp", "sharded" };

int fast_layout_parse(const char *s, FastLayout *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, fast_layout_names[i]) == 0) {
            *out = (FastLayout)i;
            return 0;
        }
    return ds_error("--layout %s: expected single, ep, dp or sharded", s);
}

/* What fast_model_open() allocates on its device; MoE layers included unless with_moe is false. */
static void model_device(FastPlanDevice *d, const ModelConfig *cfg, KernelDType wtype, int context, int batch, int rows,
                         bool with_moe)
{
    size_t bytes[FAST_MODEL_BUFFERS];
    fast_model_buffer_sizes(cfg, wtype, batch, context, rows, bytes);
    d->weights += fast_weight_bytes(cfg, wtype, with_moe);
    d->cache += bytes[1];
    for (int i = 0; i < FAST_MODEL_BUFFERS; i++)
        if (i != 1) d->scratch += bytes[i];
    d->scratch += fast_scratch_bytes(cfg, wtype, rows, context);
    d->staging += fast_context_bytes(wtype, fast_stage_elems(cfg, rows));
}

/* What fast_ep_init() and fast_ep_upload_moe() allocate on each of N devices for shares of max_T tokens. */
static void ep_devices(FastPlan *p, const ModelConfig *cfg, KernelDType wtype, int N, int max_T)
{
    size_t layers = 0;
    for (int l = 0; l < cfg->num_hidden_layers; l++) layers += config_layer_is_moe(cfg, l);
    for (int d = 0; d < N; d++) {
        FastPlanDevice *v = &p->dev[d];
        v->weights += layers * fast_ep_moe_bytes(cfg, wtype, N);
        v->scratch += fast_ep_device_bytes(cfg, wtype, N, max_T);
        v->staging += fast_context_bytes(wtype, fast_ep_stage_elems(cfg, max_T));
    }
}

/* What fast_shard_open() allocates on each of D devices: the same on every one. */
static void shard_devices(FastPlan *p, const ModelConfig *cfg, KernelDType wtype, int D, int batch, int rows)
{
    size_t bytes[FAST_SHARD_BUFFERS];
    fast_shard_buffer_sizes(cfg, wtype, D, batch, p->context, rows, bytes);
    for (int d = 0; d < D; d++) {
        FastPlanDevice *v = &p->dev[d];
        v->weights = fast_shard_weight_bytes(cfg, wtype, D);
        v->cache = bytes[0];
        for (int i = 1; i < FAST_SHARD_BUFFERS; i++) v->scratch += bytes[i];
        v->staging = fast_context_bytes(wtype, fast_shard_stage_elems(cfg, D, rows));
    }
}

// ANCHOR: fast_plan_memory
int fast_plan_memory(FastPlan *out, const ModelConfig *cfg, int devices, FastLayout layout, int context, int batch,
                     bool bf16, int chunk)
{
    memset(out, 0, sizeof *out);
    const KernelDType wtype = bf16 ? KERNEL_BF16 : KERNEL_F32;
    const int E = cfg->n_routed_experts;
    if (devices < 1 || devices > FAST_PLAN_MAX_DEVICES)
        return ds_error("plan: %d devices (1..%d)", devices, FAST_PLAN_MAX_DEVICES);
    if (layout == FAST_LAYOUT_SINGLE && devices != 1)
        return ds_error("plan: the single layout uses one device, not %d", devices);
    if (layout == FAST_LAYOUT_SHARDED && fast_shard_check(cfg, devices)) return -1;
    if (layout != FAST_LAYOUT_SINGLE && layout != FAST_LAYOUT_SHARDED && (E < 1 || E % devices != 0))
        return ds_error("plan: %d devices cannot share the %d routed experts", devices, E);
    if (batch < 1) return ds_error("plan: batch %d must be at least 1", batch);
    out->devices = devices;
    out->context = model_context_size(cfg, context);
    out->batch = batch;
    chunk = chunk > 0 ? chunk : FAST_DEFAULT_CHUNK;
    const int rows = chunk > batch ? chunk : batch; /* fast/model.c's rows of one step */
    if (layout == FAST_LAYOUT_SHARDED) {
        shard_devices(out, cfg, wtype, devices, batch, rows);
    } else if (layout == FAST_LAYOUT_DP) { /* a model without MoE layers per device */
        for (int d = 0; d < devices; d++) model_device(&out->dev[d], cfg, wtype, out->context, batch, rows, false);
        ep_devices(out, cfg, wtype, devices, chunk);
    } else {
        const bool ep = layout == FAST_LAYOUT_EP && devices > 1;
        model_device(&out->dev[0], cfg, wtype, out->context, batch, rows, !ep);
        if (ep) {
            const int share = (rows + devices - 1) / devices; /* fast_ep_model_open()'s largest share */
            ep_devices(out, cfg, wtype, devices, share);
            for (int d = 1; d < devices; d++) /* the share's input and output rows */
                out->dev[d].scratch += 2 * fast_ep_share_bytes(cfg, share);
        }
    }
    for (int d = 0; d < devices; d++) {
        FastPlanDevice *v = &out->dev[d];
        v->total = v->weights + v->cache + v->scratch + v->staging;
    }
    return 0;
}
// ANCHOR_END: fast_plan_memory
