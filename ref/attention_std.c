/**
 * \file attention_std.c
 * \brief Standard attention (MHA / GQA / MQA) forward and backward over a sequence (see
 * attention_std.h).
 */
#include "attention_std.h"

#include "error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The activations one layer's backward recomputes: rotated q, k, the values, every head's
 * causal probabilities and the concatenated head outputs. */
typedef struct {
    float *q; /* [T, n_h·d_h] */
    float *k; /* [T, n_g·d_h] */
    float *v; /* [T, n_g·d_v] */
    float *p; /* [n_h, T, T] p_{t,j} of head h in row (h, t), zero for j > t */
    float *o; /* [T, n_h·d_v] */
} Acts;

static void acts_free(Acts *s)
{
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->p);
    free(s->o);
}

static int acts_init(Acts *s, const ModelConfig *c, int T)
{
    const size_t nh = c->num_attention_heads, ng = c->num_key_value_heads, dh = config_qk_head_dim(c);
    const size_t dv = c->v_head_dim;
    s->q = malloc(sizeof(float) * T * nh * dh);
    s->k = malloc(sizeof(float) * T * ng * dh);
    s->v = malloc(sizeof(float) * T * ng * dv);
    s->p = calloc(nh * T * T, sizeof(float));
    s->o = malloc(sizeof(float) * T * nh * dv);
    if (!s->q || !s->k || !s->v || !s->p || !s->o) {
        acts_free(s);
        return ds_error("out of memory for standard attention over %d tokens", T);
    }
    return 0;
}

// ANCHOR: attn_std_forward
/* q = W^Q a, k = W^K a, v = W^V a; RoPE_t on the last d_r columns of every q and k head. */
static void project(Acts *s, const float *a, const StdAttnWeights *w, const ModelConfig *c, const Rope *rope, int T)
{
    const int nh = c->num_attention_heads, ng = c->num_key_value_heads, dh = config_qk_head_dim(c);
    const int dn = c->qk_nope_head_dim;
    linear(s->q, a, &w->q_proj, T);
    linear(s->k, a, &w->k_proj, T);
    linear(s->v, a, &w->v_proj, T);
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < nh; h++) rope_rotate(s->q + ((size_t)t * nh + h) * dh + dn, rope, t);
        for (int g = 0; g < ng; g++) rope_rotate(s->k + ((size_t)t * ng + g) * dh + dn, rope, t);
    }
}

/* p_{t,j} = softmax_{j≤t}(σ q_{t,h}·k_{j,g(h)}),  o_{t,h} = Σ_j p_{t,j} v_{j,g(h)}. */
static void attend(Acts *s, const ModelConfig *c, const Rope *rope, int T)
{
    const int nh = c->num_attention_heads, ng = c->num_key_value_heads, dh = config_qk_head_dim(c);
    const int dv = c->v_head_dim, per_group = nh / ng;
    for (int h = 0; h < nh; h++) {
        const int g = h / per_group; /* the key/value head query head h shares */
        for (int t = 0; t < T; t++) {
            const float *q = s->q + ((size_t)t * nh + h) * dh;
            float *p = s->p + ((size_t)h * T + t) * T, *o = s->o + ((size_t)t * nh + h) * dv;
            float max = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++) {
                p[j] = rope->softmax_scale * dot(q, s->k + ((size_t)j * ng + g) * dh, dh);
                max = fmaxf(max, p[j]);
            }
            for (int j = 0; j <= t; j++) sum += p[j] = expf(p[j] - max);
            for (int j = 0; j <= t; j++) p[j] /= sum;
            memset(o, 0, sizeof(float) * dv);
            for (int j = 0; j <= t; j++) {
                const float *v = s->v + ((size_t)j * ng + g) * dv;
                for (int d = 0; d < dv; d++) o[d] += p[j] * v[d];
            }
        }
    }
}

int attn_std_forward(float *out, const float *a, const StdAttnWeights *w, const ModelConfig *cfg, const Rope *rope,
                     int T)
{
    Acts s;
    if (acts_init(&s, cfg, T)) return -1;
    project(&s, a, w, cfg, rope, T);
    attend(&s, cfg, rope, T);
    linear(out, s.o, &w->o_proj, T); /* u = W^O o */
    acts_free(&s);
    return 0;
}
// ANCHOR_END: attn_std_forward

// ANCHOR: attn_std_backward
/* Through the softmax and the two products of one head h, given do = ∂L/∂o (every t):
 * dq, dk, dv accumulate (dk, dv shared by the heads of a group). */
static void head_backward(float *dq, float *dk, float *dv, float *dp, const float *dO, const Acts *s, int h,
                          const ModelConfig *c, float sigma, int T)
{
    const int nh = c->num_attention_heads, ng = c->num_key_value_heads, dh = config_qk_head_dim(c);
    const int dvw = c->v_head_dim, g = h / (nh / ng);
    for (int t = 0; t < T; t++) {
        const float *p = s->p + ((size_t)h * T + t) * T, *d_o = dO + ((size_t)t * nh + h) * dvw;
        const float *q = s->q + ((size_t)t * nh + h) * dh;
        float *dq_t = dq + ((size_t)t * nh + h) * dh;
        float mean = 0; /* Σ_i p_i dp_i */
        for (int j = 0; j <= t; j++) {
            const float *v = s->v + ((size_t)j * ng + g) * dvw;
            dp[j] = 0;
            for (int d = 0; d < dvw; d++) dp[j] += d_o[d] * v[d]; /* dp_j = do·v_j */
            mean += p[j] * dp[j];
        }
        for (int j = 0; j <= t; j++) {
            const float ds = sigma * p[j] * (dp[j] - mean); /* through softmax and the scale */
            const float *k = s->k + ((size_t)j * ng + g) * dh;
            float *dk_j = dk + ((size_t)j * ng + g) * dh, *dv_j = dv + ((size_t)j * ng + g) * dvw;
            for (int d = 0; d < dh; d++) {
                dq_t[d] += ds * k[d];
                dk_j[d] += ds * q[d];
            }
            for (int d = 0; d < dvw; d++) dv_j[d] += p[j] * d_o[d];
        }
    }
}

int attn_std_backward(float *da, const StdAttnGrads *g, const float *dout, const float *a, const StdAttnWeights *w,
                      const ModelConfig *cfg, const Rope *rope, int T)
{
    const int nh = cfg->num_attention_heads, ng = cfg->num_key_value_heads, dh = config_qk_head_dim(cfg);
    const int dn = cfg->qk_nope_head_dim, dvw = cfg->v_head_dim, D = cfg->hidden_size;
    Acts s;
    if (acts_init(&s, cfg, T)) return -1;
    float *dO = malloc(sizeof(float) * T * nh * dvw), *dp = malloc(sizeof(float) * T);
    float *dq = calloc((size_t)T * nh * dh, sizeof(float)), *dk = calloc((size_t)T * ng * dh, sizeof(float));
    float *dv = calloc((size_t)T * ng * dvw, sizeof(float)), *tmp = malloc(sizeof(float) * T * D);
    int rc = 0;
    if (!dO || !dp || !dq || !dk || !dv || !tmp) {
        rc = ds_error("out of memory for the standard-attention backward over %d tokens", T);
        goto done;
    }
    project(&s, a, w, cfg, rope, T); /* recompute the forward */
    attend(&s, cfg, rope, T);
    linear_backward(dO, g->o_proj, dout, s.o, &w->o_proj, T); /* do = W^Oᵀ dout, dW^O += dout oᵀ */
    for (int h = 0; h < nh; h++) head_backward(dq, dk, dv, dp, dO, &s, h, cfg, rope->softmax_scale, T);
    for (int t = 0; t < T; t++) { /* RoPE is a rotation: its backward is the transpose */
        for (int h = 0; h < nh; h++) rope_rotate_backward(dq + ((size_t)t * nh + h) * dh + dn, rope, t);
        for (int k = 0; k < ng; k++) rope_rotate_backward(dk + ((size_t)t * ng + k) * dh + dn, rope, t);
    }
    linear_backward(da, g->q_proj, dq, a, &w->q_proj, T); /* da = W^Qᵀ dq + W^Kᵀ dk + W^Vᵀ dv */
    linear_backward(tmp, g->k_proj, dk, a, &w->k_proj, T);
    for (size_t i = 0; i < (size_t)T * D; i++) da[i] += tmp[i];
    linear_backward(tmp, g->v_proj, dv, a, &w->v_proj, T);
    for (size_t i = 0; i < (size_t)T * D; i++) da[i] += tmp[i];
done:
    free(dO);
    free(dp);
    free(dq);
    free(dk);
    free(dv);
    free(tmp);
    acts_free(&s);
    return rc;
}
// ANCHOR_END: attn_std_backward

long attn_std_cache_elems(const ModelConfig *cfg)
{
    if (cfg->attention_type == ATTN_MLA) return 0;
    return (long)cfg->num_key_value_heads * (config_qk_head_dim(cfg) + cfg->v_head_dim);
}
