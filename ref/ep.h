/**
 * \file ep.h
 * \brief Expert parallelism in the reference: the dispatch plan, executed over virtual devices
 *        (paper §3.2; the CUDA counterpart sends the same rows over NCCL).
 *
 * With D devices each holding E/D routed experts, every (token, slot) assignment must
 * travel to the device of its expert, be processed there, and come back to be combined.
 * The plan lists the assignments grouped by expert — so each expert's rows are contiguous
 * and each device's rows are one contiguous range — and the counts that size the
 * exchange. moe_forward_ep() runs the MoE layer that way over D virtual devices and gives
 * exactly moe_forward()'s result.
 */
#ifndef DSV2_EP_H
#define DSV2_EP_H

#include "moe.h"

#include <stdbool.h>

/**
 * An expert-parallel dispatch plan: which (token, slot) assignments go to which device,
 * grouped by expert so each expert's rows are contiguous.
 */
typedef struct {
    int D;       /**< devices */
    int E;       /**< experts (E/D per device) */
    int n;       /**< assignments planned (kept ones) */
    int *count;  /**< [E] assignments per expert */
    int *offset; /**< [E + 1] start of each expert's rows in order[]; device d's rows are
                           [offset[d·E/D], offset[(d+1)·E/D]) */
    int *order;  /**< [n] assignment ids t·K + k, by expert, then token */
} EpPlan;

/** Builds the plan for T tokens of K assignments (keep may be NULL: all kept). \return 0 or −1. */
int ep_plan_build(EpPlan *p, const int *idx, const bool *keep, int T, int K, int E, int D);

/** Frees what ep_plan_build() allocated. */
void ep_plan_free(EpPlan *p);

/**
 * The MoE layer of moe_forward(), executed over D virtual devices through an EpPlan:
 * route, plan, then for each device gather its rows, run each of its experts on its
 * contiguous rows, and return the outputs to their (token, slot); combine and add the
 * shared experts as moe_forward() does. keep: [T, K] assignments to keep (NULL: all;
 * a dropped assignment contributes nothing). y, x: [T, D_model] float32.
 * \return 0, or −1 (out of memory).
 */
int moe_forward_ep(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, int D,
                   const bool *keep, FfnScratch *s);

#endif
