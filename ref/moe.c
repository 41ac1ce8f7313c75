/**
 * \file moe.c
 * \brief SwiGLU experts and the DeepSeekMoE layer (see moe.h).
 */
#include "moe.h"

#include "error.h"
#include "router.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int ffn_scratch_init(FfnScratch *s, const ModelConfig *cfg, int max_T)
{
    const size_t D = cfg->hidden_size, E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    size_t I = cfg->intermediate_size;
    if ((size_t)cfg->n_shared_experts * cfg->moe_intermediate_size > I)
        I = (size_t)cfg->n_shared_experts * cfg->moe_intermediate_size;
    if ((size_t)cfg->moe_intermediate_size > I) I = cfg->moe_intermediate_size;
    memset(s, 0, sizeof *s);
    s->hidden = malloc(sizeof(float) * 2 * max_T * I);
    s->scores = malloc(sizeof(float) * max_T * (E ? E : 1));
    s->expert = malloc(sizeof(int) * max_T * (K ? K : 1));
    s->weight = malloc(sizeof(float) * max_T * (K ? K : 1));
    s->rows = malloc(sizeof(int) * max_T * (K ? K : 1));
    s->x_in = malloc(sizeof(float) * max_T * D);
    s->x_out = malloc(sizeof(float) * max_T * D);
    s->routed = malloc(sizeof(float) * max_T * (K ? K : 1) * D);
    if (!s->hidden || !s->scores || !s->expert || !s->weight || !s->rows || !s->x_in ||
        !s->x_out || !s->routed) {
        ffn_scratch_free(s);
        return ds_error("out of memory for FFN scratch (%d tokens)", max_T);
    }
    return 0;
}

void ffn_scratch_free(FfnScratch *s)
{
    free(s->hidden); free(s->scores); free(s->expert); free(s->weight);
    free(s->rows); free(s->x_in); free(s->x_out); free(s->routed);
    memset(s, 0, sizeof *s);
}

// ANCHOR: swiglu_forward
void swiglu_forward(float *y, const float *x, const SwigluWeights *w, int T, float *hidden)
{
    const size_t n = (size_t)T * w->gate.rows;
    float *g = hidden, *u = hidden + n;
    linear(g, x, &w->gate, T);                      /* W_gate x, [T, I] */
    linear(u, x, &w->up, T);                        /* W_up x,   [T, I] */
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];  /* silu(z) = z·sigmoid(z), times the up branch */
    linear(y, g, &w->down, T);                      /* W_down (…), [T, D] */
}
// ANCHOR_END: swiglu_forward

// ANCHOR: moe_route
void moe_route(const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, FfnScratch *s)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    linear(s->scores, x, &w->router, T);             /* logits g = W_gate b_t, float32 */
    for (int t = 0; t < T; t++) {
        float *s_t = s->scores + (size_t)t * E;
        router_scores(s_t, s_t, E, cfg->scoring_func); /* affinities s_{i,t} */
        router_select(s->expert + t * K, s->weight + t * K, s_t, w->bias, cfg);
    }
}
// ANCHOR_END: moe_route

// ANCHOR: moe_combine
void moe_combine(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T,
                 FfnScratch *s)
{
    const int D = cfg->hidden_size, K = cfg->num_experts_per_tok;
    for (int t = 0; t < T; t++) {                    /* y_t = Σ_k g_{k,t} FFN_{e_k}(b_t), slot order */
        float *y_t = y + (size_t)t * D;
        for (int d = 0; d < D; d++) y_t[d] = 0;
        for (int k = 0; k < K; k++) {
            const float g = s->weight[t * K + k], *o = s->routed + ((size_t)t * K + k) * D;
            for (int d = 0; d < D; d++) y_t[d] += g * o[d];
        }
    }
    if (cfg->n_shared_experts > 0) {                 /* + the shared experts, on the same b_t */
        swiglu_forward(s->x_out, x, &w->shared, T, s->hidden);
        for (size_t i = 0; i < (size_t)T * D; i++) y[i] += s->x_out[i];
    }
}
// ANCHOR_END: moe_combine

// ANCHOR: moe_expert_rows
void moe_expert_rows(const float *x, const SwigluWeights *expert, const int *rows, int n,
                     const ModelConfig *cfg, FfnScratch *s)
{
    const int D = cfg->hidden_size, K = cfg->num_experts_per_tok;
    for (int i = 0; i < n; i++)                      /* gather: assignment t·K + k reads token t */
        memcpy(s->x_in + (size_t)i * D, x + (size_t)(rows[i] / K) * D, sizeof(float) * D);
    swiglu_forward(s->x_out, s->x_in, expert, n, s->hidden);
    for (int i = 0; i < n; i++)                      /* scatter: back to its (token, slot) */
        memcpy(s->routed + (size_t)rows[i] * D, s->x_out + (size_t)i * D, sizeof(float) * D);
}
// ANCHOR_END: moe_expert_rows

// ANCHOR: moe_forward
void moe_forward(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T,
                 FfnScratch *s)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    moe_route(x, w, cfg, T, s);
    for (int e = 0; e < E; e++) {                    /* each routed expert once, on its tokens */
        int n = 0;
        for (int r = 0; r < T * K; r++)
            if (s->expert[r] == e) s->rows[n++] = r;
        if (n > 0) moe_expert_rows(x, &w->experts[e], s->rows, n, cfg, s);
    }
    moe_combine(y, x, w, cfg, T, s);
}
// ANCHOR_END: moe_forward
