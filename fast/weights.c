/**
 * \file weights.c
 * \brief Uploading the reference's bound checkpoint weights to the device (bf16 as stored, or widened).
 *
 * The reference model (ref/model.h) already binds every tensor by name and
 * checks its shape against the config; the fast model opens it once, copies
 * each matrix to the device in the context's type, and closes it again.
 */
#include "fast.h"

#include "error.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One matrix. */
static int upload1(FastContext *ctx, FastMat *out, const Mat *m)
{
    const Mat *parts[1] = { m };
    return fast_mat_upload(ctx, out, parts, 1);
}

/* [W_gate; W_up] fused, and W_down. */
int fast_upload_swiglu(FastContext *ctx, FastSwiglu *out, const SwigluWeights *w)
{
    const Mat *gu[2] = { &w->gate, &w->up };
    return fast_mat_upload(ctx, &out->gate_up, gu, 2) || upload1(ctx, &out->down, &w->down) ? -1 : 0;
}

// ANCHOR: upload_router
/* The router weight, always float32 (docs/semantics.md §3.6.3: the gate GEMM runs in float32). */
static int upload_router(float **out, const Mat *m)
{
    const size_t n = (size_t)m->rows * m->cols;
    float *host = malloc(sizeof(float) * n);
    if (!host) return ds_error("fast: out of host memory for the router weight");
    dtype_widen(host, m->data, m->dtype, 0, n);
    const int rc = fast_vec_upload(out, host, n);
    free(host);
    return rc;
}
// ANCHOR_END: upload_router

/* Every expert's [gate; up] is stacked into one matrix of 2·E·I_e rows, the shared expert's into one of
 * 2·N_s·I_e; both counts must fit the int rows of a FastMat (config_load bounds N_s·I_e, not twice it). */
static int check_stacked_rows(const ModelConfig *cfg)
{
    const int64_t routed = 2 * (int64_t)cfg->n_routed_experts * cfg->moe_intermediate_size;
    const int64_t shared = 2 * (int64_t)cfg->n_shared_experts * cfg->moe_intermediate_size;
    if (routed <= INT_MAX && shared <= INT_MAX) return 0;
    const bool r = routed > INT_MAX;
    return ds_error("fast: 2 x %s %d x moe_intermediate_size %d = %lld stacked rows exceed %d",
                    r ? "n_routed_experts" : "n_shared_experts", r ? cfg->n_routed_experts : cfg->n_shared_experts,
                    cfg->moe_intermediate_size, (long long)(r ? routed : shared), INT_MAX);
}

// ANCHOR: fast_upload_moe
int fast_upload_moe(FastContext *ctx, FastMoe *out, const MoeWeights *w, const ModelConfig *cfg)
{
    const int E = cfg->n_routed_experts;
    if (check_stacked_rows(cfg)) return -1;
    const Mat **gu = malloc(sizeof *gu * 2 * E), **down = malloc(sizeof *down * E);
    int rc = !gu || !down ? ds_error("fast: out of host memory for the expert table") : 0;
    for (int e = 0; rc == 0 && e < E; e++) { /* expert e: rows [2I·e, 2I·(e+1)) = [gate; up] */
        gu[2 * e] = &w->experts[e].gate;
        gu[2 * e + 1] = &w->experts[e].up;
        down[e] = &w->experts[e].down;
    }
    if (rc == 0)
        rc = upload_router(&out->router, &w->router) || (w->bias && fast_vec_upload(&out->bias, w->bias, (size_t)E)) ||
                     fast_mat_upload(ctx, &out->gate_up, gu, 2 * E) || fast_mat_upload(ctx, &out->down, down, E) ||
                     (cfg->n_shared_experts > 0 && fast_upload_swiglu(ctx, &out->shared, &w->shared))
                 ? -1
                 : 0;
    free(gu);
    free(down);
    return rc;
}
// ANCHOR_END: fast_upload_moe

/* rows [row0, row0 + rows) of in_proj, as a matrix that does not own its memory */
static FastMat view_rows(const FastMat *m, int row0, int rows)
{
    return (FastMat){ (char *)m->data + (size_t)row0 * m->cols * kernel_dtype_size(m->dtype), m->dtype, rows, m->cols };
}

int fast_upload_mla(FastContext *ctx, FastMla *out, const MlaWeights *w, const ModelConfig *cfg)
{
    const Mat *in[2] = { &w->kv_a_proj, cfg->q_lora_rank ? &w->q_a_proj : &w->q_proj };
    if (fast_mat_upload(ctx, &out->in_proj, in, 2)) return -1;
    out->kv_a_proj = view_rows(&out->in_proj, 0, w->kv_a_proj.rows);
    *(cfg->q_lora_rank ? &out->q_a_proj : &out->q_proj) =
        view_rows(&out->in_proj, w->kv_a_proj.rows, out->in_proj.rows - w->kv_a_proj.rows);
    if (cfg->q_lora_rank && (upload1(ctx, &out->q_b_proj, &w->q_b_proj) ||
                             fast_vec_upload(&out->q_a_norm, w->q_a_norm, (size_t)cfg->q_lora_rank)))
        return -1;
    return fast_vec_upload(&out->kv_a_norm, w->kv_a_norm, (size_t)cfg->kv_lora_rank) ||
                   upload1(ctx, &out->kv_b_proj, &w->kv_b_proj) || upload1(ctx, &out->o_proj, &w->o_proj)
               ? -1
               : 0;
}

size_t fast_moe_bytes(const ModelConfig *cfg, KernelDType wtype, int experts)
{
    const int64_t E = cfg->n_routed_experts, D = cfg->hidden_size, I = cfg->moe_intermediate_size, n = experts;
    const int64_t I_s = (int64_t)cfg->n_shared_experts * I;
    return sizeof(float) * (size_t)(E * D + (cfg->topk_method == TOPK_NOAUX_TC ? E : 0)) + /* router, bias */
           fast_mat_bytes(wtype, 2 * n * I, D) + fast_mat_bytes(wtype, n * D, I) +         /* [gate; up], down */
           fast_mat_bytes(wtype, 2 * I_s, D) + fast_mat_bytes(wtype, D, I_s);              /* shared */
}

/* One layer's attention: W^DQ, W^UQ (or W^Q), [W^DKV; W^KR], [W^UK; W^UV], W^O and the two norms. */
static size_t mla_bytes(const ModelConfig *cfg, KernelDType wtype)
{
    const int64_t D = cfg->hidden_size, nh = cfg->num_attention_heads, dq = config_qk_head_dim(cfg);
    const int64_t dcq = cfg->q_lora_rank, dc = cfg->kv_lora_rank, dr = cfg->qk_rope_head_dim;
    const size_t q = dcq ? fast_mat_bytes(wtype, dcq, D) + fast_mat_bytes(wtype, nh * dq, dcq) + sizeof(float) * dcq
                         : fast_mat_bytes(wtype, nh * dq, D);
    return q + fast_mat_bytes(wtype, dc + dr, D) + sizeof(float) * dc +
           fast_mat_bytes(wtype, nh * (cfg->qk_nope_head_dim + cfg->v_head_dim), dc) +
           fast_mat_bytes(wtype, D, nh * cfg->v_head_dim);
}

size_t fast_weight_bytes(const ModelConfig *cfg, KernelDType wtype, bool with_moe)
{
    const int64_t D = cfg->hidden_size, I = cfg->intermediate_size;
    size_t sum = 2 * fast_mat_bytes(wtype, cfg->vocab_size, D) + sizeof(float) * D; /* embedding, LM head, norm */
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        sum += 2 * sizeof(float) * D + mla_bytes(cfg, wtype);
        if (!config_layer_is_moe(cfg, l))
            sum += fast_mat_bytes(wtype, 2 * I, D) + fast_mat_bytes(wtype, D, I);
        else if (with_moe)
            sum += fast_moe_bytes(cfg, wtype, cfg->n_routed_experts);
    }
    return sum;
}

// ANCHOR: fast_weights_upload
int fast_weights_upload(FastModel *m, const Model *ref)
{
    const ModelConfig *cfg = ref->cfg;
    const int L = cfg->num_hidden_layers, D = cfg->hidden_size;
    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers) return ds_error("fast: out of host memory for %d layers", L);
    if (upload1(&m->ctx, &m->embed, &ref->embed) || upload1(&m->ctx, &m->lm_head, &ref->lm_head) ||
        fast_vec_upload(&m->final_norm, ref->final_norm, (size_t)D))
        return -1;
    for (int l = 0; l < L; l++) {
        const LayerWeights *R = &ref->layers[l];
        FastLayer *F = &m->layers[l];
        F->is_moe = R->is_moe;
        if (fast_vec_upload(&F->attn_norm, R->attn_norm, (size_t)D) ||
            fast_vec_upload(&F->ffn_norm, R->ffn_norm, (size_t)D) ||
            fast_upload_mla(&m->ctx, &F->attn, &R->attn, cfg) ||
            (R->is_moe ? !m->ep && !m->moe_elsewhere && /* else m->ep holds it sharded, or the caller runs it */
                             fast_upload_moe(&m->ctx, &F->moe, &R->moe, cfg)
                       : fast_upload_swiglu(&m->ctx, &F->dense, &R->dense)))
            return -1;
    }
    return 0;
}
// ANCHOR_END: fast_weights_upload

void fast_free_swiglu(FastSwiglu *w)
{
    fast_mat_free(&w->gate_up);
    fast_mat_free(&w->down);
}

void fast_free_moe(FastMoe *w)
{
    cudaFree(w->router);
    cudaFree(w->bias);
    fast_mat_free(&w->gate_up);
    fast_mat_free(&w->down);
    fast_free_swiglu(&w->shared);
}

void fast_free_mla(FastMla *w)
{
    FastMat *mats[] = { &w->in_proj, &w->q_b_proj, &w->kv_b_proj, &w->o_proj };
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) fast_mat_free(mats[i]);
    memset(&w->q_proj, 0, sizeof w->q_proj); /* views of in_proj */
    memset(&w->q_a_proj, 0, sizeof w->q_a_proj);
    memset(&w->kv_a_proj, 0, sizeof w->kv_a_proj);
    cudaFree(w->q_a_norm);
    cudaFree(w->kv_a_norm);
}

void fast_weights_free(FastModel *m)
{
    if (m->layers)
        for (int l = 0; l < m->cfg->num_hidden_layers; l++) {
            FastLayer *F = &m->layers[l];
            cudaFree(F->attn_norm);
            cudaFree(F->ffn_norm);
            fast_free_mla(&F->attn);
            fast_free_moe(&F->moe);
            fast_free_swiglu(&F->dense);
        }
    free(m->layers);
    m->layers = NULL;
    fast_mat_free(&m->embed);
    fast_mat_free(&m->lm_head);
    cudaFree(m->final_norm);
    m->final_norm = NULL;
}
