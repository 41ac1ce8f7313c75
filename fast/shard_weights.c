/**
 * \file shard_weights.c
 * \brief The sharded layout's sizes and its weights: each device's share of the reference's bound tensors
 *        (fast_shard.h). Rows of a head or an expert are contiguous in the checkpoint and upload as views;
 *        W^O's and the down projections' column blocks are gathered on the host first.
 */
#include "fast_shard.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

static size_t smax(size_t a, size_t b)
{
    return a > b ? a : b;
}

static bool has_dense(const ModelConfig *c)
{
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (!config_layer_is_moe(c, l)) return true;
    return false;
}

int fast_shard_check(const ModelConfig *c, int D)
{
    const int E = c->n_routed_experts, I_s = c->n_shared_experts * c->moe_intermediate_size;
    if (D < 1 || D > FAST_SHARD_MAX_DEVICES)
        return ds_error("sharded layout: %d devices (1..%d)", D, FAST_SHARD_MAX_DEVICES);
    if (c->vocab_size % D)
        return ds_error("sharded layout: vocab_size = %d is not divisible by %d devices", c->vocab_size, D);
    if (c->num_attention_heads % D)
        return ds_error("sharded layout: num_attention_heads = %d is not divisible by %d devices",
                        c->num_attention_heads, D);
    if (E % D) return ds_error("sharded layout: n_routed_experts = %d is not divisible by %d devices", E, D);
    if (E && I_s % D)
        return ds_error("sharded layout: n_shared_experts x moe_intermediate_size = %d is not divisible by %d devices",
                        I_s, D);
    if (has_dense(c) && c->intermediate_size % D)
        return ds_error("sharded layout: intermediate_size = %d is not divisible by %d devices", c->intermediate_size,
                        D);
    if (E > ROUTER_MAX_E)
        return ds_error("sharded layout: n_routed_experts = %d exceeds the device router's %d", E, ROUTER_MAX_E);
    if (E && c->n_group > ROUTER_MAX_G)
        return ds_error("sharded layout: n_group = %d exceeds the device router's %d", c->n_group, ROUTER_MAX_G);
    return 0;
}

// ANCHOR: fast_shard_buffer_sizes
int fast_shard_buffer_sizes(const ModelConfig *c, KernelDType wtype, int D, int max_batch, int max_context, int rows,
                            size_t bytes[FAST_SHARD_BUFFERS])
{
    const size_t R = rows, Dm = c->hidden_size, nh = c->num_attention_heads, hl = nh / D, dc = c->kv_lora_rank;
    const size_t w = dc + c->qk_rope_head_dim, dq = config_qk_head_dim(c), dv = c->v_head_dim;
    const size_t E = c->n_routed_experts, K = c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1;
    const size_t Ie = c->moe_intermediate_size, Is = (size_t)c->n_shared_experts * Ie / D;
    const size_t Id = has_dense(c) ? (size_t)c->intermediate_size / D : 0, esz = kernel_dtype_size(wtype);
    const size_t cap = ((size_t)max_context + D - 1) / D; /* positions p ≡ rank (mod D) of one slot */
    /* the bf16 wire's largest payload (a sub-layer's output or every head's attention partials), in floats */
    const size_t wire = (smax(R * Dm, R * nh * (dc + 1)) + 1) / 2;
    const size_t n[FAST_SHARD_BUFFERS][2] = {
        { (size_t)max_batch * c->num_hidden_layers * cap * w, esz }, /* cache: 1/D of every slot's rows */
        { 5 * R, 4 },                                                /* step */
        { R * Dm, 4 },                                               /* h */
        { R * Dm, 4 },                                               /* a */
        { R * Dm, 4 },                                               /* b */
        { R * (c->vocab_size / D), 4 },                              /* logits_loc */
        { smax(R * c->vocab_size, wire), 4 },                        /* logits, and the bf16 wire's sends */
        { R * w, 4 },                                                /* kv */
        { R * w, esz },                                              /* lat */
        { R * c->q_lora_rank, 4 },                                   /* c_q */
        { R * hl * dq, 4 },                                          /* q */
        { R * hl * w, 4 },                                           /* qp */
        { smax(R * nh * w, wire), 4 },                               /* q_all, and the bf16 wire's receives */
        { R * nh, 4 },                                               /* m_loc */
        { R * nh, 4 },                                               /* m_all */
        { R * nh * (dc + 1), 4 },                                    /* part */
        { R * hl * (dc + 1), 4 },                                    /* ol_sum */
        { R * hl * dc, esz },                                        /* ol */
        { R * hl * dv, 4 },                                          /* o */
        { R * E, 4 },                                                /* rlogits */
        { R * K, 4 },                                                /* idx */
        { R * K, 4 },                                                /* weight */
        { E, 4 },                                                    /* counts */
        { E + 1, 4 },                                                /* offsets */
        { R * K, 4 },                                                /* slot_row */
        { R * K, 4 },                                                /* row_token */
        { R * 2 * Id, 4 },                                           /* gu */
        { smax(R * K * Ie + R * Is, R * Id), esz },                  /* hidden */
        { R * K * Dm, 4 },                                           /* expert_out */
        { R * Dm, 4 }                                                /* shared_out */
    };
    fast_buffer_bytes(n, FAST_SHARD_BUFFERS, bytes);
    return FAST_SHARD_BUFFERS;
}
// ANCHOR_END: fast_shard_buffer_sizes

size_t fast_shard_stage_elems(const ModelConfig *c, int D, int rows)
{
    const size_t hl = (size_t)c->num_attention_heads / D;
    size_t w = smax((size_t)c->hidden_size, (size_t)c->q_lora_rank);
    w = smax(w, smax(hl * c->v_head_dim, hl * config_qk_head_dim(c)));
    return (size_t)rows * w;
}

size_t fast_shard_weight_bytes(const ModelConfig *c, KernelDType wtype, int D)
{
    const int64_t Dm = c->hidden_size, hl = c->num_attention_heads / D, dq = config_qk_head_dim(c);
    const int64_t dcq = c->q_lora_rank, dc = c->kv_lora_rank, w = dc + c->qk_rope_head_dim;
    const int64_t E = c->n_routed_experts, El = E / D, Ie = c->moe_intermediate_size;
    const int64_t Is = (int64_t)c->n_shared_experts * Ie / D, Id = c->intermediate_size / D;
    const int64_t Vl = c->vocab_size / D; /* the embedding's slice has a zero row more */
    size_t sum = fast_mat_bytes(wtype, Vl + 1, Dm) + fast_mat_bytes(wtype, Vl, Dm) +
                 sizeof(float) * (size_t)(Dm + c->qk_rope_head_dim / 2);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        sum += 2 * sizeof(float) * Dm; /* the two norms */
        sum += dcq ? fast_mat_bytes(wtype, dcq, Dm) + sizeof(float) * dcq + fast_mat_bytes(wtype, hl * dq, dcq)
                   : fast_mat_bytes(wtype, hl * dq, Dm);
        sum += fast_mat_bytes(wtype, w, Dm) + sizeof(float) * dc +
               fast_mat_bytes(wtype, hl * (c->qk_nope_head_dim + c->v_head_dim), dc) +
               fast_mat_bytes(wtype, Dm, hl * c->v_head_dim);
        if (!config_layer_is_moe(c, l)) {
            sum += fast_mat_bytes(wtype, 2 * Id, Dm) + fast_mat_bytes(wtype, Dm, Id);
            continue;
        }
        sum += sizeof(float) * (size_t)(E * Dm + (c->topk_method == TOPK_NOAUX_TC ? E : 0));
        sum += fast_mat_bytes(wtype, 2 * El * Ie, Dm) + fast_mat_bytes(wtype, El * Dm, Ie);
        if (Is) sum += fast_mat_bytes(wtype, 2 * Is, Dm) + fast_mat_bytes(wtype, Dm, Is);
    }
    return sum;
}

/* ---- uploads --------------------------------------------------------------------------------- */

/* Rows [r0, r0 + n) of m, as a view. */
static Mat rows_of(const Mat *m, int r0, int n)
{
    Mat v = *m;
    v.data = (const char *)m->data + (size_t)r0 * m->cols * dtype_size(m->dtype);
    v.rows = n;
    return v;
}

/* Uploads the given parts stacked row-wise. */
static int upload_parts(FastContext *ctx, FastMat *out, const Mat *a, const Mat *b)
{
    const Mat *parts[2] = { a, b };
    return fast_mat_upload(ctx, out, parts, b ? 2 : 1);
}

/* Columns [c0, c0 + n) of m, gathered on the host and uploaded. */
static int upload_cols(FastContext *ctx, FastMat *out, const Mat *m, int c0, int n)
{
    const size_t esz = dtype_size(m->dtype);
    char *host = malloc((size_t)m->rows * n * esz);
    if (!host) return ds_error("sharded layout: out of host memory for a %d x %d column block", m->rows, n);
    for (int r = 0; r < m->rows; r++)
        memcpy(host + (size_t)r * n * esz, (const char *)m->data + ((size_t)r * m->cols + c0) * esz, (size_t)n * esz);
    const Mat v = { host, m->dtype, m->rows, n };
    const int rc = upload_parts(ctx, out, &v, NULL);
    free(host);
    return rc;
}

/* A float32 copy of a norm or router matrix of n elements. */
static int upload_f32(float **out, const Mat *m)
{
    const size_t n = (size_t)m->rows * m->cols;
    float *host = malloc(sizeof(float) * n);
    if (!host) return ds_error("sharded layout: out of host memory for the router weight");
    dtype_widen(host, m->data, m->dtype, 0, n);
    const int rc = fast_vec_upload(out, host, n);
    free(host);
    return rc;
}

/* A SwiGLU's hidden units [u0, u0 + n): rows of W_gate and W_up, columns of W_down. */
static int upload_swiglu_units(FastContext *ctx, FastSwiglu *out, const SwigluWeights *w, int u0, int n)
{
    const Mat g = rows_of(&w->gate, u0, n), u = rows_of(&w->up, u0, n);
    return upload_parts(ctx, &out->gate_up, &g, &u) || upload_cols(ctx, &out->down, &w->down, u0, n) ? -1 : 0;
}

/* Attention heads [r·hl, (r+1)·hl) and the replicated projections. */
static int upload_attention(FastContext *ctx, FastShardLayer *L, const MlaWeights *w, const ModelConfig *c, int r,
                            int hl)
{
    const int dq = config_qk_head_dim(c), dkv = c->qk_nope_head_dim + c->v_head_dim, dv = c->v_head_dim;
    const Mat kv_b = rows_of(&w->kv_b_proj, r * hl * dkv, hl * dkv);
    if (c->q_lora_rank) {
        const Mat q_b = rows_of(&w->q_b_proj, r * hl * dq, hl * dq);
        if (upload_parts(ctx, &L->q_a_proj, &w->q_a_proj, NULL) || upload_parts(ctx, &L->q_b_proj, &q_b, NULL) ||
            fast_vec_upload(&L->q_a_norm, w->q_a_norm, (size_t)c->q_lora_rank))
            return -1;
    } else {
        const Mat q = rows_of(&w->q_proj, r * hl * dq, hl * dq);
        if (upload_parts(ctx, &L->q_proj, &q, NULL)) return -1;
    }
    return upload_parts(ctx, &L->kv_a_proj, &w->kv_a_proj, NULL) ||
                   fast_vec_upload(&L->kv_a_norm, w->kv_a_norm, (size_t)c->kv_lora_rank) ||
                   upload_parts(ctx, &L->kv_b_proj, &kv_b, NULL) ||
                   upload_cols(ctx, &L->o_proj, &w->o_proj, r * hl * dv, hl * dv)
               ? -1
               : 0;
}

/* The router whole, experts [r·El, (r+1)·El), the shared experts' units [r·Is, (r+1)·Is). */
static int upload_moe(FastContext *ctx, FastShardLayer *L, const MoeWeights *w, const ModelConfig *c, int r, int D)
{
    const int E = c->n_routed_experts, El = E / D, Is = c->n_shared_experts * c->moe_intermediate_size / D;
    const Mat **gu = malloc(sizeof *gu * 2 * El), **down = malloc(sizeof *down * El);
    int rc = !gu || !down ? ds_error("sharded layout: out of host memory for the expert table") : 0;
    for (int e = 0; rc == 0 && e < El; e++) {
        gu[2 * e] = &w->experts[r * El + e].gate;
        gu[2 * e + 1] = &w->experts[r * El + e].up;
        down[e] = &w->experts[r * El + e].down;
    }
    if (rc == 0)
        rc = upload_f32(&L->router, &w->router) || (w->bias && fast_vec_upload(&L->bias, w->bias, (size_t)E)) ||
                     fast_mat_upload(ctx, &L->gate_up, gu, 2 * El) || fast_mat_upload(ctx, &L->down, down, El) ||
                     (Is && upload_swiglu_units(ctx, &L->shared, &w->shared, r * Is, Is))
                 ? -1
                 : 0;
    free(gu);
    free(down);
    return rc;
}

/* Device r's share of every weight (its device current). */
int fast_shard_upload(FastShardModel *m, int r, const Model *ref)
{
    const ModelConfig *c = m->cfg;
    FastShardDevice *v = &m->dev[r];
    FastContext *ctx = &v->ctx;
    const int L = c->num_hidden_layers, Dm = c->hidden_size, Id = c->intermediate_size / m->D;
    v->layers = calloc((size_t)L, sizeof *v->layers);
    if (!v->layers) return ds_error("sharded layout: out of host memory for %d layers", L);
    const int Vl = c->vocab_size / m->D;
    const Mat embed = rows_of(&ref->embed, r * Vl, Vl), head = rows_of(&ref->lm_head, r * Vl, Vl);
    char *zero = calloc((size_t)Dm, dtype_size(ref->embed.dtype));
    const Mat zero_row = { zero, ref->embed.dtype, 1, Dm };
    const int rc =
        !zero ? ds_error("sharded layout: out of host memory") : upload_parts(ctx, &v->embed, &embed, &zero_row);
    free(zero);
    if (rc || upload_parts(ctx, &v->lm_head, &head, NULL) ||
        fast_vec_upload(&v->final_norm, ref->final_norm, (size_t)Dm) ||
        fast_vec_upload(&v->inv_freq, m->rope.inv_freq, (size_t)c->qk_rope_head_dim / 2))
        return -1;
    for (int l = 0; l < L; l++) {
        const LayerWeights *R = &ref->layers[l];
        FastShardLayer *F = &v->layers[l];
        F->is_moe = R->is_moe;
        if (fast_vec_upload(&F->attn_norm, R->attn_norm, (size_t)Dm) ||
            fast_vec_upload(&F->ffn_norm, R->ffn_norm, (size_t)Dm) || upload_attention(ctx, F, &R->attn, c, r, m->hl) ||
            (R->is_moe ? upload_moe(ctx, F, &R->moe, c, r, m->D)
                       : upload_swiglu_units(ctx, &F->dense, &R->dense, r * Id, Id)))
            return -1;
    }
    return 0;
}

/* Frees device r's weights (its device current). */
void fast_shard_free_weights(FastShardDevice *v, int layers)
{
    for (int l = 0; v->layers && l < layers; l++) {
        FastShardLayer *F = &v->layers[l];
        FastMat *mats[] = { &F->q_proj,    &F->q_a_proj, &F->q_b_proj,       &F->kv_a_proj,
                            &F->kv_b_proj, &F->o_proj,   &F->dense.gate_up,  &F->dense.down,
                            &F->gate_up,   &F->down,     &F->shared.gate_up, &F->shared.down };
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) fast_mat_free(mats[i]);
        float *vecs[] = { F->attn_norm, F->ffn_norm, F->q_a_norm, F->kv_a_norm, F->router, F->bias };
        for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) cudaFree(vecs[i]);
    }
    free(v->layers);
    v->layers = NULL;
    fast_mat_free(&v->embed);
    fast_mat_free(&v->lm_head);
    cudaFree(v->final_norm);
    cudaFree(v->inv_freq);
    v->final_norm = v->inv_freq = NULL;
}
