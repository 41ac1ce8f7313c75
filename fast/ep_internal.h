/**
 * \file ep_internal.h
 * \brief What fast/ep.c (the group and its steps) and fast/ep_plan.c (the host's plan) share.
 */
#ifndef DSV2_FAST_EP_INTERNAL_H
#define DSV2_FAST_EP_INTERNAL_H

#include "fast_ep.h"

/** One call's tokens: device d holds T[d] of them, rows [first[d], first[d+1]) in device order. */
typedef struct {
    const int *T;                       /**< tokens per device */
    int first[FAST_EP_MAX_DEVICES + 1]; /**< first global row of each device's tokens; first[N] in all */
    int T_max;                          /**< the most tokens on one device (rows gathered per device) */
} EpBatch;

/** First row of segment j when segments of n[0], n[1], … rows lie back to back. */
static inline int ep_seg_start(const int *n, int j)
{
    int at = 0;
    for (int i = 0; i < j; i++) at += n[i];
    return at;
}

/** The type of the rows the group exchanges: the activations' type unless FastEp.f32_payload. */
static inline KernelDType ep_payload_type(const FastEp *ep)
{
    return ep->f32_payload ? KERNEL_F32 : ep->dev[0].ctx.wtype;
}

/** The layout of T[0..N) tokens, refused when a device holds more than the group was sized for or none holds any. */
int ep_lay_out_tokens(const FastEp *ep, const int *T, EpBatch *b);

/** Assignments one device keeps under ep->capacity_factor (drop_tokens' ⌈cf·T·K/N⌉), −1 without dropping. */
int ep_drop_budget(const FastEp *ep, int total);

#endif
