/**
 * \file fast_plan.h
 * \brief Device memory the fast path will allocate, predicted from the config alone.
 *
 * fast_plan_memory() adds up, per device, the same sizes the allocators use (fast_weight_bytes(),
 * fast_model_buffer_sizes(), fast_scratch_sizes(), fast_context_bytes(), fast_ep_device_bytes(),
 * fast_shard_buffer_sizes(), fast_shard_weight_bytes()),
 * so the prediction is the simulated device's high-water mark after the model is open and stays
 * so while it runs: every buffer is allocated once, at open.
 */
#ifndef DSV2_FAST_PLAN_H
#define DSV2_FAST_PLAN_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>

/** Most devices a plan describes (fast_ep.h's FAST_EP_MAX_DEVICES). */
#define FAST_PLAN_MAX_DEVICES 8

/** The existing multi-device layouts. */
typedef enum {
    FAST_LAYOUT_SINGLE = 0, /**< everything on device 0 (fast_model_open) */
    FAST_LAYOUT_EP = 1,     /**< model on device 0, MoE layers expert-parallel over 0..N−1 (FastOptions.ep_devices) */
    FAST_LAYOUT_DP = 2,     /**< a whole non-MoE model per device, MoE layers expert-parallel (fast_dp.h) */
    FAST_LAYOUT_SHARDED = 3 /**< attention by heads, cache by position, experts by expert (fast_shard.h) */
} FastLayout;

/** One device's bytes, by what they hold. */
typedef struct {
    size_t weights; /**< weights resident on the device (the MoE share where sharded) */
    size_t cache;   /**< latent cache c^KV, k^R of every slot and layer */
    size_t scratch; /**< working memory: activations, FastScratch, expert-parallel buffers */
    size_t staging; /**< bf16 staging buffers of the GEMM operands (one per FastContext) */
    size_t total;   /**< their sum */
} FastPlanDevice;

/** A plan: per device. */
typedef struct {
    int devices;                               /**< devices used */
    int context;                               /**< positions per slot (after the default) */
    int batch;                                 /**< sequence slots */
    FastPlanDevice dev[FAST_PLAN_MAX_DEVICES]; /**< [devices] */
} FastPlan;

/**
 * Predicts the device memory of cfg opened in layout over `devices` devices with FastOptions
 * {bf16, max_context = context (0: the default), max_batch = batch, chunk (0: the default)}.
 * \return 0, or −1 with one error line (a layout that cannot take that many devices).
 */
int fast_plan_memory(FastPlan *out, const ModelConfig *cfg, int devices, FastLayout layout, int context, int batch,
                     bool bf16, int chunk);

/** The layouts' names, by FastLayout: "single", "ep", "dp", "sharded". */
extern const char *const fast_layout_names[4];

/** "single", "ep", "dp", "sharded" → *out. \return 0, or −1 with one error line naming the value. */
int fast_layout_parse(const char *s, FastLayout *out);

#endif
