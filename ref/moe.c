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
    if (!s->hidden || !s->scores || !s->expert || !s->weight || !s->rows || !s->x_in || !s->x_out || !s->routed) {
        ffn_scratch_free(s);
        return ds_error("out of memory for FFN scratch (%d tokens)", max_T);
    }
    return 0;
}

void ffn_scratch_free(FfnScratch *s)
{
    free(s->hidden);
    free(s->scores);
    free(s->expert);
    free(s->weight);
    free(s->rows);
    free(s->x_in);
    free(s->x_out);
    free(s->routed);
    memset(s, 0, sizeof *s);
}

// ANCHOR: swiglu_forward
void swiglu_forward(float *y, const float *x, const SwigluWeights *w, int T, float *hidden)
{
    const size_t n = (size_t)T * w->gate.rows;
    float *g = hidden, *u = hidden + n;
    linear(g, x, &w->gate, T); /* W_gate x, [T, I] */
    linear(u, x, &w->up, T);   /* W_up x,   [T, I] */
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i]; /* silu(z) = z·sigmoid(z), times the up branch */
    linear(y, g, &w->down, T);                     /* W_down (…), [T, D] */
}
// ANCHOR_END: swiglu_forward

// ANCHOR: moe_route
void moe_route(const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, FfnScratch *s)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    linear(s->scores, x, &w->router, T); /* logits z_{i,t} = b_tᵀ e_i (z = W_gate b_t), float32 */
    for (int t = 0; t < T; t++) {
        float *s_t = s->scores + (size_t)t * E;
        router_scores(s_t, s_t, E, cfg->scoring_func); /* affinities s_{i,t} */
        router_select(s->expert + t * K, s->weight + t * K, s_t, w->bias, cfg);
    }
}
// ANCHOR_END: moe_route

// ANCHOR: moe_combine
void moe_combine(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, FfnScratch *s)
{
    const int D = cfg->hidden_size, K = cfg->num_experts_per_tok;
    for (int t = 0; t < T; t++) { /* y_t = Σ_k g_{k,t} FFN_{e_k}(b_t), slot order */
        float *y_t = y + (size_t)t * D;
        for (int d = 0; d < D; d++) y_t[d] = 0;
        for (int k = 0; k < K; k++) {
            const float g = s->weight[t * K + k], *o = s->routed + ((size_t)t * K + k) * D;
            for (int d = 0; d < D; d++) y_t[d] += g * o[d];
        }
    }
    if (cfg->n_shared_experts > 0) { /* + the shared experts, on the same b_t */
        swiglu_forward(s->x_out, x, &w->shared, T, s->hidden);
        for (size_t i = 0; i < (size_t)T * D; i++) y[i] += s->x_out[i];
    }
}
// ANCHOR_END: moe_combine

// ANCHOR: moe_expert_rows
void moe_expert_rows(const float *x, const SwigluWeights *expert, const int *rows, int n, const ModelConfig *cfg,
                     FfnScratch *s)
{
    const int D = cfg->hidden_size, K = cfg->num_experts_per_tok;
    for (int i = 0; i < n; i++) /* gather: assignment t·K + k reads token t */
        memcpy(s->x_in + (size_t)i * D, x + (size_t)(rows[i] / K) * D, sizeof(float) * D);
    swiglu_forward(s->x_out, s->x_in, expert, n, s->hidden);
    for (int i = 0; i < n; i++) /* scatter: back to its (token, slot) */
        memcpy(s->routed + (size_t)rows[i] * D, s->x_out + (size_t)i * D, sizeof(float) * D);
}
// ANCHOR_END: moe_expert_rows

// ANCHOR: moe_forward
void moe_forward(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, FfnScratch *s)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    moe_route(x, w, cfg, T, s);
    for (int e = 0; e < E; e++) { /* each routed expert once, on its tokens */
        int n = 0;
        for (int r = 0; r < T * K; r++)
            if (s->expert[r] == e) s->rows[n++] = r;
        if (n > 0) moe_expert_rows(x, &w->experts[e], s->rows, n, cfg, s);
    }
    moe_combine(y, x, w, cfg, T, s);
}
// ANCHOR_END: moe_forward

// ANCHOR: swiglu_backward
int swiglu_backward(float *dx, const SwigluGrads *g, const float *dy, const float *x, const SwigluWeights *w, int T)
{
    const int I = w->gate.rows;
    const size_t n = (size_t)T * I;
    float *z = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n);
    float *h = malloc(sizeof(float) * n), *dh = malloc(sizeof(float) * n);
    float *dx_up = malloc(sizeof(float) * (size_t)T * w->gate.cols);
    if (!z || !u || !h || !dh || !dx_up) {
        free(z);
        free(u);
        free(h);
        free(dh);
        free(dx_up);
        return ds_error("out of memory for the SwiGLU backward (%d tokens)", T);
    }
    linear(z, x, &w->gate, T); /* recompute z = W_gate x, u = W_up x */
    linear(u, x, &w->up, T);
    for (size_t i = 0; i < n; i++) h[i] = z[i] / (1.0f + expf(-z[i])) * u[i];
    linear_backward(dh, g->down, dy, h, &w->down, T); /* dh = W_downᵀ dy; dW_down += dy hᵀ */
    for (size_t i = 0; i < n; i++) {
        const float sig = 1.0f / (1.0f + expf(-z[i]));
        const float silu = z[i] * sig;
        const float d = dh[i];
        dh[i] = d * u[i] * sig * (1.0f + z[i] * (1.0f - sig)); /* dz: silu'(z) = σ(z)(1 + z(1 − σ(z))) */
        u[i] = d * silu;                                       /* du = dh ⊙ silu(z) */
    }
    linear_backward(dx, g->gate, dh, x, &w->gate, T); /* dx = W_gateᵀ dz + W_upᵀ du */
    linear_backward(dx_up, g->up, u, x, &w->up, T);
    for (size_t i = 0; i < (size_t)T * w->gate.cols; i++) dx[i] += dx_up[i];
    free(z);
    free(u);
    free(h);
    free(dh);
    free(dx_up);
    return 0;
}
// ANCHOR_END: swiglu_backward

// ANCHOR: moe_forward_kept
void moe_forward_kept(float *y, const float *x, const MoeWeights *w, const ModelConfig *cfg, int T, const bool *keep,
                      FfnScratch *s)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok, D = cfg->hidden_size;
    for (int r = 0; r < T * K; r++)
        if (keep && !keep[r]) { /* a dropped pair: no expert work, no output */
            s->weight[r] = 0;
            memset(s->routed + (size_t)r * D, 0, sizeof(float) * D);
        }
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int r = 0; r < T * K; r++)
            if (s->expert[r] == e && (!keep || keep[r])) s->rows[n++] = r;
        if (n > 0) moe_expert_rows(x, &w->experts[e], s->rows, n, cfg, s);
    }
    moe_combine(y, x, w, cfg, T, s);
}
// ANCHOR_END: moe_forward_kept

// ANCHOR: moe_backward
int moe_backward(float *dx, const MoeGrads *g, const float *dy, const float *x, const MoeWeights *w,
                 const ModelConfig *cfg, int T, const bool *keep, const float *dlogits_aux)
{
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok, D = cfg->hidden_size;
    float *s = malloc(sizeof(float) * (size_t)T * E), *dl = malloc(sizeof(float) * (size_t)T * E);
    float *wt = malloc(sizeof(float) * (size_t)T * K), *dwt = calloc((size_t)T * K, sizeof(float));
    int *idx = malloc(sizeof(int) * (size_t)T * K), *rows = malloc(sizeof(int) * (size_t)T * K);
    float *xin = malloc(sizeof(float) * (size_t)T * K * D), *dyin = malloc(sizeof(float) * (size_t)T * K * D);
    float *o = malloc(sizeof(float) * (size_t)T * K * D), *dxin = malloc(sizeof(float) * (size_t)T * K * D);
    const size_t I_max = (size_t)cfg->moe_intermediate_size; /* one routed expert's width */
    float *hidden = malloc(sizeof(float) * 2 * (size_t)T * K * I_max);
    int rc = 0;
    if (!s || !dl || !wt || !dwt || !idx || !rows || !xin || !dyin || !o || !dxin || !hidden) {
        rc = ds_error("out of memory for the MoE backward (%d tokens)", T);
        goto done;
    }
    linear(s, x, &w->router, T); /* recompute the routing: s_{i,t}, idx, g_{i,t} */
    for (int t = 0; t < T; t++) {
        router_scores(s + (size_t)t * E, s + (size_t)t * E, E, cfg->scoring_func);
        router_select(idx + t * K, wt + t * K, s + (size_t)t * E, w->bias, cfg);
    }
    if (cfg->n_shared_experts > 0) { /* shared experts: dx = their input gradient */
        if ((rc = swiglu_backward(dx, &g->shared, dy, x, &w->shared, T))) goto done;
    } else {
        memset(dx, 0, sizeof(float) * (size_t)T * D);
    }
    for (int e = 0; e < E; e++) { /* each routed expert on its kept pairs */
        int n = 0;
        for (int r = 0; r < T * K; r++)
            if (idx[r] == e && (!keep || keep[r])) rows[n++] = r;
        if (n == 0) continue;
        for (int i = 0; i < n; i++) { /* gather b_t and g_{k,t} · dy_t */
            const int t = rows[i] / K;
            memcpy(xin + (size_t)i * D, x + (size_t)t * D, sizeof(float) * D);
            for (int d = 0; d < D; d++) dyin[(size_t)i * D + d] = wt[rows[i]] * dy[(size_t)t * D + d];
        }
        swiglu_forward(o, xin, &w->experts[e], n, hidden); /* FFN_e(b_t), for ∂L/∂g */
        if ((rc = swiglu_backward(dxin, &g->experts[e], dyin, xin, &w->experts[e], n))) goto done;
        for (int i = 0; i < n; i++) { /* scatter: dx_t += expert's dx; ∂L/∂g = dy_t · FFN_e(b_t) */
            const int t = rows[i] / K;
            dwt[rows[i]] = dot(dy + (size_t)t * D, o + (size_t)i * D, D);
            for (int d = 0; d < D; d++) dx[(size_t)t * D + d] += dxin[(size_t)i * D + d];
        }
    }
    for (int t = 0; t < T; t++) { /* weights → affinities → router logits */
        router_backward(dl + (size_t)t * E, s + (size_t)t * E, idx + t * K, dwt + t * K, cfg);
        if (dlogits_aux)
            for (int i = 0; i < E; i++) dl[(size_t)t * E + i] += dlogits_aux[(size_t)t * E + i];
    }
    linear_backward(xin, g->router, dl, x, &w->router, T); /* dx += W_routerᵀ dlogits */
    for (size_t i = 0; i < (size_t)T * D; i++) dx[i] += xin[i];
done:
    free(s);
    free(dl);
    free(wt);
    free(dwt);
    free(idx);
    free(rows);
    free(xin);
    free(dyin);
    free(o);
    free(dxin);
    free(hidden);
    return rc;
}
// ANCHOR_END: moe_backward
