/**
 * \file model.c
 * \brief The DeepSeek-V2 decoder on one device (ref/model.c's structure, the components of fast/layers.c).
 *
 *     h⁰_t = embed[token_t]
 *     for each layer l:  a = RMSNorm(h) (fused with the previous layer's residual add)
 *                        h ← h + MLA(a);  b = RMSNorm(h);  h ← h + FFN_l(b)
 *     logits_t = lm_head · RMSNorm(h^L_t)
 *
 * With FastOptions.ep_devices > 1 every FFN_l that is MoE runs through fast/ep_model.c over the group.
 */
#include "fast.h"

#include "error.h"
#include "fast_ep.h"

#include <stdio.h>
#include <string.h>

static int alloc(void *p, size_t bytes)
{
    CUDA_TRY(cudaMalloc((void **)p, bytes ? bytes : 1));
    return 0;
}

/* Opens the reference model just long enough to borrow its bound weights, then uploads them. */
static int open_device(FastModel *m, const char *dir, const FastOptions *opt)
{
    Model ref;
    const ModelOptions ref_opt = {.max_context = 1, .chunk = 1};
    if (model_open(&ref, dir, &ref_opt))
        return -1;
    m->config = ref.ck.cfg;
    m->cfg = &m->config;
    m->rope = ref.rope;
    const ModelConfig *c = m->cfg;
    m->max_context = opt && opt->max_context ? opt->max_context : c->max_position_embeddings;
    if (!(opt && opt->max_context) && m->max_context > 4096)
        m->max_context = 4096;
    if (m->max_context > c->max_position_embeddings)
        m->max_context = c->max_position_embeddings;
    m->chunk = opt && opt->chunk ? opt->chunk : 64;
    m->form = opt ? opt->form : 0;
    m->last_row = -1;
    const int ep_devices = opt ? opt->ep_devices : 0;
    int rc = ep_devices > 1 ? fast_check_cuda(cudaSetDevice(0), "cudaSetDevice(0)", __FILE__, __LINE__) : 0;
    if (rc == 0)
        rc = fast_context_init(&m->ctx, opt && opt->bf16, fast_stage_elems(c, m->chunk));
    if (rc == 0 && ep_devices > 1)                             /* before the upload: MoE layers go there */
        rc = fast_ep_model_open(&m->ep, &ref, ep_devices, opt->bf16, m->chunk);
    if (rc == 0)
        rc = fast_weights_upload(m, &ref);
    model_close(&ref);
    return rc;
}

int fast_model_open(FastModel *m, const char *dir, const FastOptions *opt)
{
    memset(m, 0, sizeof *m);
    int rc = open_device(m, dir, opt);
    if (rc == 0) {
        const ModelConfig *c = m->cfg;
        const size_t D = c->hidden_size, T = m->chunk, width = c->kv_lora_rank + c->qk_rope_head_dim;
        rc = fast_vec_upload(&m->inv_freq, m->rope.inv_freq, (size_t)m->rope.dim / 2) ||
                     alloc(&m->cache, (size_t)c->num_hidden_layers * m->max_context * width *
                                          kernel_dtype_size(m->ctx.wtype)) ||
                     alloc(&m->tokens, sizeof(int) * T) || alloc(&m->h, sizeof(float) * T * D) ||
                     alloc(&m->a, sizeof(float) * T * D) || alloc(&m->b, sizeof(float) * T * D) ||
                     alloc(&m->logits, sizeof(float) * T * c->vocab_size) || alloc(&m->next, sizeof(int)) ||
                     fast_scratch_init(&m->scratch, &m->ctx, c, m->chunk, m->max_context)
                 ? -1
                 : 0;
    }
    if (rc) {
        char saved[1024];
        snprintf(saved, sizeof saved, "%s", ds_last_error());
        fast_model_close(m);
        ds_error("%s", saved);
    }
    return rc;
}

void fast_model_close(FastModel *m)
{
    if (m->ctx.stream)
        cudaStreamSynchronize(m->ctx.stream);
    if (m->cfg)
        fast_weights_free(m);
    fast_scratch_free(&m->scratch);
    void *dev[] = {m->inv_freq, m->cache, m->tokens, m->h, m->a, m->b, m->logits, m->next};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    fast_context_free(&m->ctx);
    fast_ep_model_close(m->ep);
    memset(m, 0, sizeof *m);
}

void fast_model_reset(FastModel *m)
{
    m->pos = 0;
    m->last_row = -1;
}

// ANCHOR: fast_model_layer
/*
 * One decoder layer on T tokens. On entry h holds the residual stream and, for
 * l > 0, b the previous layer's FFN output not yet added: the add is fused into
 * this layer's first RMSNorm. On exit b holds this layer's FFN output.
 */
static int decoder_layer(FastModel *m, int l, int T)
{
    const ModelConfig *c = m->cfg;
    const FastLayer *L = &m->layers[l];
    FastContext *ctx = &m->ctx;
    const int D = c->hidden_size;
    const size_t width = (size_t)c->kv_lora_rank + c->qk_rope_head_dim;
    void *cache = (char *)m->cache + (size_t)l * m->max_context * width * kernel_dtype_size(ctx->wtype);
    /* the decode form by tokens per step: absorbed over the latent cache for one token, expanded for prompts */
    const bool absorbed = m->form == 2 || (m->form == 0 && T == 1);
    if (l == 0)
        CUDA_TRY(FAST_RMSNORM(m->a, m->h, L->attn_norm, T, D, c->rms_norm_eps, ctx->stream));
    else                                                       /* h ← h + FFN_{l−1}; a = RMSNorm(h) */
        CUDA_TRY(FAST_RMSNORM_RESIDUAL(m->a, m->h, m->b, L->attn_norm, T, D, c->rms_norm_eps, ctx->stream));
    if (fast_mla_forward(ctx, m->b, m->a, &L->attn, cache, c, &m->rope, m->inv_freq, m->pos, T, absorbed,
                         &m->scratch))
        return -1;
    CUDA_TRY(FAST_RMSNORM_RESIDUAL(m->a, m->h, m->b, L->ffn_norm, T, D, c->rms_norm_eps, ctx->stream));
    if (!L->is_moe)
        return fast_swiglu_forward(ctx, m->b, m->a, &L->dense, T, &m->scratch);
    return m->ep ? fast_ep_model_moe(m->ep, l, c, m->b, m->a, T, ctx->stream)   /* split over the group */
                 : fast_moe_forward(ctx, m->b, m->a, &L->moe, c, T, &m->scratch);
}
// ANCHOR_END: fast_model_layer

int fast_model_forward(FastModel *m, const int *tokens, int T, float *logits_host, bool all_positions)
{
    const ModelConfig *c = m->cfg;
    const int D = c->hidden_size, V = c->vocab_size;
    FastContext *ctx = &m->ctx;
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return ds_error("token id %d at position %d is outside the vocabulary [0, %d)", tokens[t], m->pos + t, V);
    if (T > m->max_context - m->pos)
        return ds_error("%d tokens after %d cached exceed the context of %d positions", T, m->pos, m->max_context);
    m->last_row = -1;
    for (int t0 = 0; t0 < T; t0 += m->chunk) {
        const int n = T - t0 < m->chunk ? T - t0 : m->chunk;
        CUDA_TRY(cudaMemcpyAsync(m->tokens, tokens + t0, sizeof(int) * n, cudaMemcpyHostToDevice, ctx->stream));
        CUDA_TRY(embed_forward_v2(m->h, m->tokens, m->embed.data, m->embed.dtype, n, D, ctx->stream));
        for (int l = 0; l < c->num_hidden_layers; l++)
            if (decoder_layer(m, l, n))
                return -1;
        m->pos += n;
        const int first = all_positions ? 0 : n - 1;
        if (!logits_host || (!all_positions && t0 + n < T))
            continue;
        /* h ← h + FFN_{L−1}; z = RMSNorm_final(h) on the rows that need logits */
        CUDA_TRY(FAST_RMSNORM_RESIDUAL(m->a, m->h, m->b, m->final_norm, n, D, c->rms_norm_eps, ctx->stream));
        if (fast_linear(ctx, m->logits, m->a + (size_t)first * D, &m->lm_head, n - first))
            return -1;
        float *dst = all_positions ? logits_host + (size_t)t0 * V : logits_host;
        CUDA_TRY(cudaMemcpyAsync(dst, m->logits, sizeof(float) * (size_t)(n - first) * V, cudaMemcpyDeviceToHost,
                                 ctx->stream));
        m->last_row = n - first - 1;
    }
    CUDA_TRY(cudaStreamSynchronize(ctx->stream));
    return 0;
}

int fast_model_argmax(FastModel *m, int *token)
{
    if (m->last_row < 0)
        return ds_error("fast_model_argmax: no logits yet (call fast_model_forward with a logits buffer)");
    const int V = m->cfg->vocab_size;
    CUDA_TRY(FAST_ARGMAX(m->next, m->logits + (size_t)m->last_row * V, V, m->ctx.stream));
    CUDA_TRY(cudaMemcpyAsync(token, m->next, sizeof(int), cudaMemcpyDeviceToHost, m->ctx.stream));
    CUDA_TRY(cudaStreamSynchronize(m->ctx.stream));
    return 0;
}
