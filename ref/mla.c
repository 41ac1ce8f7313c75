/**
 * \file mla.c
 * \brief Multi-head Latent Attention, expanded and absorbed (see mla.h).
 */
#include "mla.h"

#include "error.h"
#include "rmsnorm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int latent_cache_init(LatentCache *c, const ModelConfig *cfg, int capacity)
{
    c->capacity = capacity;
    c->c_kv = malloc((size_t)capacity * cfg->kv_lora_rank * sizeof(float));
    c->k_rope = malloc((size_t)capacity * cfg->qk_rope_head_dim * sizeof(float));
    if (!c->c_kv || !c->k_rope) {
        latent_cache_free(c);
        return ds_error("out of memory for a latent cache of %d positions", capacity);
    }
    return 0;
}

void latent_cache_free(LatentCache *c)
{
    free(c->c_kv);
    free(c->k_rope);
    memset(c, 0, sizeof *c);
}

// ANCHOR: mla_cache_bytes
size_t mla_cache_bytes_per_token(const ModelConfig *cfg, size_t elem_size)
{
    /* per layer: ĉ_t (d_c) and k^R_t (d_r); nothing per head */
    return (size_t)(cfg->kv_lora_rank + cfg->qk_rope_head_dim) * cfg->num_hidden_layers * elem_size;
}
// ANCHOR_END: mla_cache_bytes

int mla_scratch_init(MlaScratch *s, const ModelConfig *cfg, int max_T, int ctx)
{
    const size_t nh = cfg->num_attention_heads, dq = config_qk_head_dim(cfg);
    memset(s, 0, sizeof *s);
    s->q = malloc(sizeof(float) * max_T * nh * dq);
    s->c_q = malloc(sizeof(float) * max_T * (cfg->q_lora_rank ? cfg->q_lora_rank : 1));
    s->kv = malloc(sizeof(float) * max_T * (cfg->kv_lora_rank + cfg->qk_rope_head_dim));
    s->o = malloc(sizeof(float) * max_T * nh * cfg->v_head_dim);
    s->scores = malloc(sizeof(float) * ctx);
    s->k_nope = malloc(sizeof(float) * ctx * (cfg->qk_nope_head_dim ? cfg->qk_nope_head_dim : 1));
    s->v = malloc(sizeof(float) * ctx * cfg->v_head_dim);
    s->q_lat = malloc(sizeof(float) * cfg->kv_lora_rank);
    s->o_lat = malloc(sizeof(float) * cfg->kv_lora_rank);
    if (!s->q || !s->c_q || !s->kv || !s->o || !s->scores || !s->k_nope || !s->v || !s->q_lat || !s->o_lat) {
        mla_scratch_free(s);
        return ds_error("out of memory for attention scratch (%d tokens, %d positions)", max_T, ctx);
    }
    return 0;
}

void mla_scratch_free(MlaScratch *s)
{
    free(s->q);
    free(s->c_q);
    free(s->kv);
    free(s->o);
    free(s->scores);
    free(s->k_nope);
    free(s->v);
    free(s->q_lat);
    free(s->o_lat);
    memset(s, 0, sizeof *s);
}

// ANCHOR: mla_softmax
/* Numerically stable softmax of x[0..n) in place (float32, max subtracted). */
static void softmax(float *x, int n)
{
    float max = x[0], sum = 0;
    for (int j = 1; j < n; j++) max = fmaxf(max, x[j]);
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - max);
        sum += x[j];
    }
    for (int j = 0; j < n; j++) x[j] /= sum;
}
// ANCHOR_END: mla_softmax

// ANCHOR: mla_latent
/* Compresses the new tokens into the cache: ĉ_t = RMSNorm(W^DKV a_t), k^R_t = RoPE_t(W^KR a_t). */
static void mla_write_latents(const float *a, const MlaWeights *w, LatentCache *cache, const ModelConfig *cfg,
                              const Rope *rope, int pos0, int T, float *kv)
{
    const int dc = cfg->kv_lora_rank, dr = cfg->qk_rope_head_dim;
    linear(kv, a, &w->kv_a_proj, T); /* [c^KV_t ; k^R_raw_t], [T, d_c + d_r] */
    for (int t = 0; t < T; t++) {
        float *c_hat = cache->c_kv + (size_t)(pos0 + t) * dc;
        float *k_r = cache->k_rope + (size_t)(pos0 + t) * dr;
        const float *kv_t = kv + (size_t)t * (dc + dr);
        rmsnorm_forward(c_hat, kv_t, w->kv_a_norm, 1, dc, LATENT_NORM_EPS); /* the latent only */
        memcpy(k_r, kv_t + dc, sizeof(float) * dr);                         /* the RoPE key bypasses the norm */
        rope_rotate(k_r, rope, pos0 + t);
    }
}
// ANCHOR_END: mla_latent

// ANCHOR: mla_queries
/* q_t = W^UQ/W^QR applied to a_t (or to ĉ^Q_t = RMSNorm(W^DQ a_t)); q^R rotated per head. */
static void mla_queries(float *q, const float *a, const MlaWeights *w, const ModelConfig *cfg, const Rope *rope,
                        int pos0, int T, float *c_q)
{
    const int nh = cfg->num_attention_heads, dq = config_qk_head_dim(cfg);
    if (cfg->q_lora_rank) {
        linear(c_q, a, &w->q_a_proj, T); /* c^Q_t = W^DQ a_t, [T, d_c'] */
        rmsnorm_forward(c_q, c_q, w->q_a_norm, T, cfg->q_lora_rank, LATENT_NORM_EPS);
        linear(q, c_q, &w->q_b_proj, T); /* [T, n_h·d_q] */
    } else {
        linear(q, a, &w->q_proj, T);
    }
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) /* q^R_{t,h}: the last d_r of each head */
            rope_rotate(q + ((size_t)t * nh + h) * dq + cfg->qk_nope_head_dim, rope, pos0 + t);
}
// ANCHOR_END: mla_queries

// ANCHOR: mla_expanded
/* Expanded form: per head, decompress k^N_j = W^UK_h ĉ_j and v_j = W^UV_h ĉ_j for every
 * cached position, then s_{t,j} = σ (q^N_t·k^N_j + q^R_t·k^R_j), softmax, o_t = Σ p v_j. */
static void mla_attend_expanded(float *o, const float *q, const MlaWeights *w, const LatentCache *cache,
                                const ModelConfig *cfg, const Rope *rope, int pos0, int T, MlaScratch *s)
{
    const int nh = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int dv = cfg->v_head_dim, dq = dn + dr, ctx = pos0 + T;
    for (int h = 0; h < nh; h++) {
        const int row = h * (dn + dv);                                               /* head h's block of kv_b_proj */
        linear_rows(s->k_nope, cache->c_kv, &w->kv_b_proj, row, row + dn, ctx);      /* [ctx, d_n] */
        linear_rows(s->v, cache->c_kv, &w->kv_b_proj, row + dn, row + dn + dv, ctx); /* [ctx, d_v] */
        for (int t = 0; t < T; t++) {
            const float *q_nope = q + ((size_t)t * nh + h) * dq, *q_rope = q_nope + dn;
            const int n_keys = pos0 + t + 1; /* causal: keys 0..pos0+t */
            for (int j = 0; j < n_keys; j++)
                s->scores[j] = rope->softmax_scale * (dot(q_nope, s->k_nope + (size_t)j * dn, dn) +
                                                      dot(q_rope, cache->k_rope + (size_t)j * dr, dr));
            softmax(s->scores, n_keys);
            float *o_th = o + ((size_t)t * nh + h) * dv;
            for (int d = 0; d < dv; d++) o_th[d] = 0;
            for (int j = 0; j < n_keys; j++)
                for (int d = 0; d < dv; d++) o_th[d] += s->scores[j] * s->v[(size_t)j * dv + d];
        }
    }
}
// ANCHOR_END: mla_expanded

// ANCHOR: mla_absorbed
/* Absorbed form: q^L = W^UK_hᵀ q^N (the query in latent space), s_{t,j} = σ (q^L·ĉ_j + q^R·k^R_j),
 * o^L = Σ_j p_j ĉ_j (a weighted sum of latents), o_{t,h} = W^UV_h o^L. Nothing is decompressed. */
static void mla_attend_absorbed(float *o, const float *q, const MlaWeights *w, const LatentCache *cache,
                                const ModelConfig *cfg, const Rope *rope, int pos0, int T, MlaScratch *s)
{
    const int nh = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int dv = cfg->v_head_dim, dq = dn + dr, dc = cfg->kv_lora_rank;
    for (int t = 0; t < T; t++) {
        const int n_keys = pos0 + t + 1;
        for (int h = 0; h < nh; h++) {
            const int row = h * (dn + dv);
            const float *q_nope = q + ((size_t)t * nh + h) * dq, *q_rope = q_nope + dn;
            linear_transposed_rows(s->q_lat, q_nope, &w->kv_b_proj, row, dn); /* W^UK_hᵀ q^N, [d_c] */
            for (int j = 0; j < n_keys; j++) /* σ is still d_q^{-1/2}·m², not d_c's */
                s->scores[j] = rope->softmax_scale * (dot(s->q_lat, cache->c_kv + (size_t)j * dc, dc) +
                                                      dot(q_rope, cache->k_rope + (size_t)j * dr, dr));
            softmax(s->scores, n_keys);
            for (int c = 0; c < dc; c++) s->o_lat[c] = 0;
            for (int j = 0; j < n_keys; j++)
                for (int c = 0; c < dc; c++) s->o_lat[c] += s->scores[j] * cache->c_kv[(size_t)j * dc + c];
            linear_rows(o + ((size_t)t * nh + h) * dv, s->o_lat, &w->kv_b_proj, row + dn, row + dn + dv,
                        1); /* W^UV_h o^L, [d_v] */
        }
    }
}
// ANCHOR_END: mla_absorbed

// ANCHOR: mla_forward
void mla_forward(float *out, const float *a, const MlaWeights *w, LatentCache *cache, const ModelConfig *cfg,
                 const Rope *rope, int pos0, int T, MlaForm form, MlaScratch *s)
{
    mla_write_latents(a, w, cache, cfg, rope, pos0, T, s->kv);
    mla_queries(s->q, a, w, cfg, rope, pos0, T, s->c_q);
    if (form == MLA_EXPANDED)
        mla_attend_expanded(s->o, s->q, w, cache, cfg, rope, pos0, T, s);
    else
        mla_attend_absorbed(s->o, s->q, w, cache, cfg, rope, pos0, T, s);
    linear(out, s->o, &w->o_proj, T); /* W^O [o_{t,1}; …; o_{t,n_h}] */
}
// ANCHOR_END: mla_forward

/* The expanded forward over positions [0, T), keeping what the backward needs. */
typedef struct {
    float *kv, *c_raw, *c_hat, *k_r, *c_q_raw, *c_q, *q, *kvb, *p, *o;
} MlaActs;

static void mla_acts_free(MlaActs *x)
{
    free(x->kv);
    free(x->c_raw);
    free(x->c_hat);
    free(x->k_r);
    free(x->c_q_raw);
    free(x->c_q);
    free(x->q);
    free(x->kvb);
    free(x->p);
    free(x->o);
}

static int mla_recompute(MlaActs *x, const float *a, const MlaWeights *w, const ModelConfig *cfg, const Rope *rope,
                         int T)
{
    const int nh = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int dv = cfg->v_head_dim, dq = dn + dr, dc = cfg->kv_lora_rank, dcq = cfg->q_lora_rank;
    const size_t n = T;
    x->kv = malloc(sizeof(float) * n * (dc + dr));
    x->c_raw = malloc(sizeof(float) * n * dc);
    x->c_hat = malloc(sizeof(float) * n * dc);
    x->k_r = malloc(sizeof(float) * n * dr);
    x->c_q_raw = malloc(sizeof(float) * n * (dcq ? dcq : 1));
    x->c_q = malloc(sizeof(float) * n * (dcq ? dcq : 1));
    x->q = malloc(sizeof(float) * n * nh * dq);
    x->kvb = malloc(sizeof(float) * n * nh * (dn + dv));
    x->p = malloc(sizeof(float) * nh * n * n);
    x->o = malloc(sizeof(float) * n * nh * dv);
    if (!x->kv || !x->c_raw || !x->c_hat || !x->k_r || !x->c_q_raw || !x->c_q || !x->q || !x->kvb || !x->p || !x->o)
        return ds_error("out of memory for the attention backward (%d tokens)", T);
    linear(x->kv, a, &w->kv_a_proj, T); /* [c^KV_t ; k^R_raw_t] */
    for (int t = 0; t < T; t++) {
        memcpy(x->c_raw + (size_t)t * dc, x->kv + (size_t)t * (dc + dr), sizeof(float) * dc);
        memcpy(x->k_r + (size_t)t * dr, x->kv + (size_t)t * (dc + dr) + dc, sizeof(float) * dr);
        rope_rotate(x->k_r + (size_t)t * dr, rope, t);
    }
    rmsnorm_forward(x->c_hat, x->c_raw, w->kv_a_norm, T, dc, cfg->rms_norm_eps); /* ĉ_t */
    if (dcq) {
        linear(x->c_q_raw, a, &w->q_a_proj, T); /* c^Q_t = W^DQ a_t */
        rmsnorm_forward(x->c_q, x->c_q_raw, w->q_a_norm, T, dcq, cfg->rms_norm_eps);
        linear(x->q, x->c_q, &w->q_b_proj, T);
    } else {
        linear(x->q, a, &w->q_proj, T);
    }
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) rope_rotate(x->q + ((size_t)t * nh + h) * dq + dn, rope, t);
    linear(x->kvb, x->c_hat, &w->kv_b_proj, T); /* per head [k^N_{t,h}; v_{t,h}] */
    for (int h = 0; h < nh; h++)
        for (int t = 0; t < T; t++) {
            const float *qn = x->q + ((size_t)t * nh + h) * dq, *qr = qn + dn;
            float *p = x->p + ((size_t)h * T + t) * T, max = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++) { /* s_{t,j}, causal */
                const float *kn = x->kvb + ((size_t)j * nh + h) * (dn + dv);
                p[j] = rope->softmax_scale * (dot(qn, kn, dn) + dot(qr, x->k_r + (size_t)j * dr, dr));
                max = fmaxf(max, p[j]);
            }
            for (int j = 0; j <= t; j++) {
                p[j] = expf(p[j] - max);
                sum += p[j];
            }
            for (int j = 0; j <= t; j++) p[j] /= sum;
            float *o = x->o + ((size_t)t * nh + h) * dv;
            for (int d = 0; d < dv; d++) o[d] = 0;
            for (int j = 0; j <= t; j++)
                for (int d = 0; d < dv; d++) o[d] += p[j] * x->kvb[((size_t)j * nh + h) * (dn + dv) + dn + d];
        }
    return 0;
}

// ANCHOR: mla_attend_backward
/* Softmax attention backward, per head and query: from do_{t,h} to dq_{t,h}, dk^N, dv (into
 * dkvb, laid out like kvb) and the shared dk^R_j (summed over heads); dp: [T] scratch. */
static void mla_attend_backward(float *dq, float *dkvb, float *dk_r, float *dp, const float *d_o, const MlaActs *x,
                                const ModelConfig *cfg, const Rope *rope, int T)
{
    const int nh = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int dv = cfg->v_head_dim, dq_w = dn + dr, kw = dn + dv;
    for (int h = 0; h < nh; h++)
        for (int t = 0; t < T; t++) {
            const float *p = x->p + ((size_t)h * T + t) * T, *do_t = d_o + ((size_t)t * nh + h) * dv;
            const float *qn = x->q + ((size_t)t * nh + h) * dq_w, *qr = qn + dn;
            float *dqn = dq + ((size_t)t * nh + h) * dq_w, *dqr = dqn + dn;
            float mean = 0;
            for (int j = 0; j <= t; j++) { /* dp_j = do · v_j;  dv_j += p_j do */
                const float *v = x->kvb + ((size_t)j * nh + h) * kw + dn;
                float *dvj = dkvb + ((size_t)j * nh + h) * kw + dn;
                dp[j] = dot(do_t, v, dv);
                for (int d = 0; d < dv; d++) dvj[d] += p[j] * do_t[d];
                mean += p[j] * dp[j];
            }
            for (int j = 0; j <= t; j++) { /* ds_j = σ p_j (dp_j − Σ p dp) */
                const float ds = rope->softmax_scale * p[j] * (dp[j] - mean);
                const float *kn = x->kvb + ((size_t)j * nh + h) * kw, *kr = x->k_r + (size_t)j * dr;
                float *dkn = dkvb + ((size_t)j * nh + h) * kw, *dkr = dk_r + (size_t)j * dr;
                for (int d = 0; d < dn; d++) {
                    dqn[d] += ds * kn[d];
                    dkn[d] += ds * qn[d];
                }
                for (int d = 0; d < dr; d++) {
                    dqr[d] += ds * kr[d];
                    dkr[d] += ds * qr[d];
                }
            }
        }
}
// ANCHOR_END: mla_attend_backward

// ANCHOR: mla_backward
int mla_backward(float *da, const MlaGrads *g, const float *dout, const float *a, const MlaWeights *w,
                 const ModelConfig *cfg, const Rope *rope, int T)
{
    const int nh = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int dv = cfg->v_head_dim, dq = dn + dr, dc = cfg->kv_lora_rank, dcq = cfg->q_lora_rank;
    const int D = cfg->hidden_size;
    const size_t n = T;
    MlaActs x = { 0 };
    float *d_o = malloc(sizeof(float) * n * nh * dv), *d_q = calloc(n * nh * dq, sizeof(float));
    float *d_kvb = calloc(n * nh * (dn + dv), sizeof(float)), *d_kv = malloc(sizeof(float) * n * (dc + dr));
    float *d_kr = calloc(n * dr, sizeof(float)), *d_c = malloc(sizeof(float) * n * dc);
    float *d_c_raw = malloc(sizeof(float) * n * dc), *d_a = malloc(sizeof(float) * n * D);
    float *d_cq = malloc(sizeof(float) * n * (dcq ? dcq : 1));
    float *d_cq_raw = malloc(sizeof(float) * n * (dcq ? dcq : 1)), *d_p = malloc(sizeof(float) * n);
    int rc = 0;
    if (!d_p || !d_o || !d_q || !d_kvb || !d_kv || !d_kr || !d_c || !d_c_raw || !d_a || !d_cq || !d_cq_raw)
        rc = ds_error("out of memory for the attention backward (%d tokens)", T);
    if (rc == 0) rc = mla_recompute(&x, a, w, cfg, rope, T);
    if (rc) goto done;
    linear_backward(d_o, g->o_proj, dout, x.o, &w->o_proj, T); /* do = W^Oᵀ dout */
    mla_attend_backward(d_q, d_kvb, d_kr, d_p, d_o, &x, cfg, rope, T);
    linear_backward(d_c, g->kv_b_proj, d_kvb, x.c_hat, &w->kv_b_proj, T); /* dĉ = [W^UK; W^UV]ᵀ d[k^N; v] */
    rmsnorm_backward(d_c_raw, g->kv_a_norm, d_c, x.c_raw, w->kv_a_norm, T, dc, cfg->rms_norm_eps);
    for (int t = 0; t < T; t++) { /* d[c^KV; k^R_raw] */
        rope_rotate_backward(d_kr + (size_t)t * dr, rope, t);
        memcpy(d_kv + (size_t)t * (dc + dr), d_c_raw + (size_t)t * dc, sizeof(float) * dc);
        memcpy(d_kv + (size_t)t * (dc + dr) + dc, d_kr + (size_t)t * dr, sizeof(float) * dr);
        for (int h = 0; h < nh; h++) rope_rotate_backward(d_q + ((size_t)t * nh + h) * dq + dn, rope, t);
    }
    linear_backward(da, g->kv_a_proj, d_kv, a, &w->kv_a_proj, T); /* da = [W^DKV; W^KR]ᵀ d_kv */
    if (dcq) {                                                    /* the query's low-rank path */
        linear_backward(d_cq, g->q_b_proj, d_q, x.c_q, &w->q_b_proj, T);
        rmsnorm_backward(d_cq_raw, g->q_a_norm, d_cq, x.c_q_raw, w->q_a_norm, T, dcq, cfg->rms_norm_eps);
        linear_backward(d_a, g->q_a_proj, d_cq_raw, a, &w->q_a_proj, T);
    } else {
        linear_backward(d_a, g->q_proj, d_q, a, &w->q_proj, T);
    }
    for (size_t i = 0; i < n * D; i++) da[i] += d_a[i];
done:
    mla_acts_free(&x);
    free(d_o);
    free(d_q);
    free(d_kvb);
    free(d_kv);
    free(d_kr);
    free(d_c);
    free(d_c_raw);
    free(d_a);
    free(d_cq);
    free(d_cq_raw);
    free(d_p);
    return rc;
}
// ANCHOR_END: mla_backward
