/**
 * \file ep.c
 * \brief The expert-parallel plan and its execution over virtual devices (see ep.h).
 */
#include "ep.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

// ANCHOR: ep_plan_build
int ep_plan_build(EpPlan *p, const int *idx, const bool *keep, int T, int K, int E, int D)
{
    memset(p, 0, sizeof *p);
    p->D = D;
    p->E = E;
    p->count = calloc((size_t)E, sizeof *p->count);
    p->offset = calloc((size_t)E + 1, sizeof *p->offset);
    p->order = malloc(sizeof *p->order * ((size_t)T * K + 1));
    if (!p->count || !p->offset || !p->order) {
        ep_plan_free(p);
        return ds_error("out of memory for an expert-parallel plan of %d tokens", T);
    }
    for (int a = 0; a < T * K; a++)
        if (!keep || keep[a]) p->count[idx[a]]++;
    for (int e = 0; e < E; e++) p->offset[e + 1] = p->offset[e] + p->count[e];
    p->n = p->offset[E];
    int *fill = calloc((size_t)E, sizeof *fill);
    if (!fill) {
        ep_plan_free(p);
        return ds_error("out of memory for an expert-parallel plan of %d tokens", T);
    }
    for (int a = 0; a < T * K; a++) /* by expert, then by token: rows contiguous */
        if (!keep || keep[a]) p->order[p->offset[idx[a]] + fill[idx[a]]++] = a;
    free(fill);
    return 0;
}
// ANCHOR_END: ep_plan_build

void ep_plan_free(EpPlan *p)
{
    free(p->count);
    free(p->offset);
    free(p->order);
    memset(p, 0, sizeof *p);
}

// ANCHOR: moe_forward_ep
int moe_forward_ep(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, int D,
                   const bool *keep, FfnScratch *s)
{
    const int Dm = cfg->hidden_size, E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    moe_route(x, w, cfg, T, s); /* routing is moe_forward()'s */
    EpPlan plan;
    if (ep_plan_build(&plan, s->expert, keep, T, K, E, D)) return -1;
    memset(s->routed, 0, sizeof(float) * (size_t)T * K * Dm); /* dropped slots add nothing */
    for (int d = 0; d < D; d++) {                             /* each virtual device, its own experts */
        for (int e = d * (E / D); e < (d + 1) * (E / D); e++) /* rows contiguous per expert */
            if (plan.count[e] > 0)
                moe_expert_rows(x, &w->experts[e], plan.order + plan.offset[e], plan.count[e], cfg, s);
    }
    ep_plan_free(&plan);
    moe_combine(y, x, w, cfg, T, s);
    return 0;
}
// ANCHOR_END: moe_forward_ep
