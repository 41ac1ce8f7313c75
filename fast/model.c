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
 *
 * Sequence slots: slot s has its own latent cache region ([layers][max_context][d_c + d_r] from row
 * s·layers·max_context) and position m->pos[s]. A step (one prompt chunk of one slot, or one token of
 * each of B slots) stages its token ids, positions and cache bases in one pinned array and uploads it
 * once; the kernels read positions and rows from the device copy.
 *
 * Decode steps of B sequences run from a CUDA graph captured at the first such step (decode_graph):
 * the upload before it and the copy of the logits after it stay outside.
 */
#include "fast.h"

#include "error.h"
#include "fast_ep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows of m->logits: a decode step's B ≤ max_batch at once, a prompt's all-position logits in pieces. */
static size_t fast_logit_rows(int max_batch, int rows)
{
    const int cap = max_batch > FAST_LOGIT_ROWS ? max_batch : FAST_LOGIT_ROWS;
    return (size_t)(rows < cap ? rows : cap);
}

// ANCHOR: fast_model_buffer_sizes
int fast_model_buffer_sizes(const ModelConfig *c, KernelDType wtype, int max_batch, int max_context, int rows,
                            size_t bytes[FAST_MODEL_BUFFERS])
{
    const size_t D = c->hidden_size, T = rows, width = (size_t)c->kv_lora_rank + c->qk_rope_head_dim;
    const size_t n[FAST_MODEL_BUFFERS] = {
        sizeof(float) * (size_t)(c->qk_rope_head_dim / 2), /* inv_freq (none when d_r = 0) */
        (size_t)max_batch * c->num_hidden_layers * max_context * width * kernel_dtype_size(wtype), /* cache */
        sizeof(int) * 3 * T,
        sizeof(float) * T * D,
        sizeof(float) * T * D,
        sizeof(float) * T * D, /* step, h, a, b */
        sizeof(float) * fast_logit_rows(max_batch, rows) * c->vocab_size,
        sizeof(int)
    }; /* logits, next */
    for (int i = 0; i < FAST_MODEL_BUFFERS; i++)
        bytes[i] = i == 0 || n[i] ? n[i] : 1; /* cudaMalloc(0) would give NULL */
    return FAST_MODEL_BUFFERS;
}
// ANCHOR_END: fast_model_buffer_sizes

/* Opens the reference model just long enough to borrow its bound weights, then uploads them. */
static int open_device(FastModel *m, const char *dir, const FastOptions *opt)
{
    Model ref;
    const ModelOptions ref_opt = { .max_context = 1, .chunk = 1 };
    if (model_open(&ref, dir, &ref_opt)) return -1;
    m->config = ref.ck.cfg;
    m->cfg = &m->config;
    m->rope = ref.rope;
    const ModelConfig *c = m->cfg;
    m->max_context = model_context_size(c, opt ? opt->max_context : 0);
    m->chunk = opt && opt->chunk ? opt->chunk : FAST_DEFAULT_CHUNK;
    m->form = opt ? opt->form : 0;
    m->moe_elsewhere = opt && opt->moe_elsewhere;
    m->max_batch = opt && opt->max_batch ? opt->max_batch : 1;
    m->rows = m->chunk > m->max_batch ? m->chunk : m->max_batch;
    m->last_row = -1;
    if (m->max_batch < 1 || m->chunk < 1) {
        model_close(&ref);
        return ds_error("fast_model_open: max_batch %d and chunk %d must be at least 1", m->max_batch, m->chunk);
    }
    if (m->chunk > FAST_MAX_CHUNK) {
        model_close(&ref);
        return ds_error("fast_model_open: chunk %d exceeds the fast path's %d tokens per step (FastOptions.chunk)",
                        m->chunk, FAST_MAX_CHUNK);
    }
    const int ep_devices = opt ? opt->ep_devices : 0;
    int rc = ep_devices > 1 ? fast_check_cuda(cudaSetDevice(0), "cudaSetDevice(0)", __FILE__, __LINE__) : 0;
    if (rc == 0) rc = fast_context_init(&m->ctx, opt && opt->bf16, fast_stage_elems(c, m->rows));
    if (rc == 0 && ep_devices > 1) /* before the upload: MoE layers go there */
        rc = fast_ep_model_open(&m->ep, &ref, ep_devices, opt->bf16, m->rows);
    if (rc == 0) rc = fast_weights_upload(m, &ref);
    model_close(&ref);
    return rc;
}

int fast_model_open(FastModel *m, const char *dir, const FastOptions *opt)
{
    memset(m, 0, sizeof *m);
    int rc = open_device(m, dir, opt);
    if (rc == 0) {
        const ModelConfig *c = m->cfg;
        const size_t T = m->rows;
        m->step_regions = (m->max_context + m->chunk - 1) / m->chunk + 1;
        m->pos = calloc((size_t)m->max_batch, sizeof(int));
        rc = !m->pos ? ds_error("fast_model_open: out of host memory for %d slots", m->max_batch) : 0;
        /* decode graphs on one device (an expert-parallel step spans every device's streams and is run eagerly) */
        if (rc == 0 && !(opt && opt->graph < 0) && !m->ep &&
            (!(m->graphs = calloc((size_t)m->max_batch, sizeof *m->graphs)) ||
             !(m->greedy_graphs = calloc((size_t)m->max_batch, sizeof *m->greedy_graphs))))
            rc = ds_error("fast_model_open: out of host memory for %d decode graphs", m->max_batch);
        size_t bytes[FAST_MODEL_BUFFERS];
        fast_model_buffer_sizes(c, m->ctx.wtype, m->max_batch, m->max_context, m->rows, bytes);
        void **dst[FAST_MODEL_BUFFERS] = {
            (void **)&m->inv_freq, &m->cache,      (void **)&m->step,   (void **)&m->h,
            (void **)&m->a,        (void **)&m->b, (void **)&m->logits, (void **)&m->next
        };
        for (int i = 1; rc == 0 && i < FAST_MODEL_BUFFERS; i++)
            rc = fast_check_cuda(cudaMalloc(dst[i], bytes[i]), "cudaMalloc(model buffer)", __FILE__, __LINE__);
        if (rc == 0)
            rc = fast_vec_upload(&m->inv_freq, m->rope.inv_freq, bytes[0] / sizeof(float)) ||
                         fast_check_cuda(
                             cudaMallocHost((void **)&m->step_pinned, sizeof(int) * (size_t)m->step_regions * 3 * T),
                             "cudaMallocHost(step)", __FILE__, __LINE__) ||
                         fast_scratch_init(&m->scratch, &m->ctx, c, m->rows, m->max_context)
                     ? -1
                     : 0;
        m->step_host = m->step_pinned;
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
    if (m->ctx.stream) cudaStreamSynchronize(m->ctx.stream);
    if (m->cfg) fast_weights_free(m);
    fast_scratch_free(&m->scratch);
    void *dev[] = { m->inv_freq, m->cache, m->step, m->h, m->a, m->b, m->logits, m->next };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    cudaFreeHost(m->step_pinned);
    cudaFreeHost(m->greedy_host);
    free(m->pos);
    for (int b = 0; b < m->max_batch; b++) {
        if (m->graphs && m->graphs[b]) cudaGraphExecDestroy(m->graphs[b]);
        if (m->greedy_graphs && m->greedy_graphs[b]) cudaGraphExecDestroy(m->greedy_graphs[b]);
    }
    free(m->graphs);
    free(m->greedy_graphs);
    fast_context_free(&m->ctx);
    fast_ep_model_close(m->ep);
    memset(m, 0, sizeof *m);
}

void fast_model_reset(FastModel *m)
{
    for (int s = 0; s < m->max_batch; s++) m->pos[s] = 0;
    m->last_row = -1;
}

int fast_model_reset_slot(FastModel *m, int slot)
{
    if (slot < 0 || slot >= m->max_batch)
        return ds_error("fast_model_reset_slot: slot %d is outside [0, %d)", slot, m->max_batch);
    m->pos[slot] = 0;
    return 0;
}

// ANCHOR: fast_model_layer
/*
 * One decoder layer on T tokens, in two halves. On entry h holds the residual stream and, for l > 0,
 * b the previous layer's FFN output, still to be added: the add is fused into this layer's first RMSNorm.
 * After the attention half a holds the FFN input; on exit b holds this layer's FFN output.
 */
int fast_model_layer_attention(FastModel *m, int l, int T)
{
    const ModelConfig *c = m->cfg;
    const FastLayer *L = &m->layers[l];
    FastContext *ctx = &m->ctx;
    const int D = c->hidden_size;
    const size_t width = (size_t)c->kv_lora_rank + c->qk_rope_head_dim;
    void *cache = (char *)m->cache + (size_t)l * m->max_context * width * kernel_dtype_size(ctx->wtype);
    /* the attention kernel by tokens per step: the split decode for one token (or one token of each of
     * several sequences), the tiled prompt kernel (fast/prefill.c) for prompt chunks; both absorbed */
    const bool absorbed = m->at.pos0 < 0 || m->form == 2 || (m->form == 0 && T == 1);
    if (m->a_ready) /* the previous FFN's fused tail wrote h and a */
        m->a_ready = false;
    else if (l == 0)
        CUDA_TRY(FAST_RMSNORM(m->a, m->h, L->attn_norm, T, D, c->rms_norm_eps, ctx->stream));
    else /* h ← h + FFN_{l−1}; a = RMSNorm(h) */
        CUDA_TRY(FAST_RMSNORM_RESIDUAL(m->a, m->h, m->b, L->attn_norm, T, D, c->rms_norm_eps, ctx->stream));
    /* h ← h + MLA(a); a = RMSNorm(h), the FFN input: fused into attention's last launch */
    const FastResidualNorm tail = { m->h, m->a, L->ffn_norm, c->rms_norm_eps };
    return fast_mla_forward(ctx, m->b, m->a, &L->attn, cache, c, &m->rope, m->inv_freq, &m->at, T, absorbed,
                            &m->scratch, &tail);
}

int fast_model_layer_ffn(FastModel *m, int l, int T)
{
    const ModelConfig *c = m->cfg;
    const FastLayer *L = &m->layers[l];
    FastContext *ctx = &m->ctx;
    if (L->is_moe && !m->ep && m->moe_elsewhere)
        return ds_error("fast model: MoE layer %d is not on this device (FastOptions.moe_elsewhere)", l);
    if (!L->is_moe) return fast_swiglu_forward(ctx, m->b, m->a, &L->dense, T, &m->scratch);
    if (m->ep) /* split over the group */
        return fast_ep_model_moe(m->ep, l, c, m->b, m->a, T, ctx->stream);
    /* a decode step (positions on the device) runs the grouped kernel whatever its rows, so it never
     * waits for the host and can be captured; prompt chunks choose by rows (FAST_MOE_GROUPED_MAX_ROWS) */
    if (m->at.pos0 >= 0)
        return fast_moe_forward_experts(ctx, m->b, m->a, &L->moe, c, T, &m->scratch, FAST_MOE_AUTO, NULL);
    /* a decode step also fuses h ← h + FFN(b) and the next norm (layer l + 1's, or the final one) into
     * the MoE's combine: a then holds the next sub-layer's input */
    const FastResidualNorm tail = { m->h, m->a,
                                    l + 1 < c->num_hidden_layers ? m->layers[l + 1].attn_norm : m->final_norm,
                                    c->rms_norm_eps };
    if (fast_moe_forward_experts(ctx, m->b, m->a, &L->moe, c, T, &m->scratch, FAST_MOE_GROUPED, &tail)) return -1;
    m->a_ready = true;
    return 0;
}

static int decoder_layer(FastModel *m, int l, int T)
{
    return fast_model_layer_attention(m, l, T) || fast_model_layer_ffn(m, l, T) ? -1 : 0;
}
// ANCHOR_END: fast_model_layer

// ANCHOR: fast_model_stage_row
/* Row t of the step being staged: token id, position and cache base (slot·layers·max_context). */
static void stage_row(FastModel *m, int t, int token, int slot)
{
    m->step_host[t] = token;
    m->step_host[m->rows + t] = m->pos[slot];
    m->step_host[2 * m->rows + t] = slot * m->cfg->num_hidden_layers * m->max_context;
}
// ANCHOR_END: fast_model_stage_row

// ANCHOR: fast_model_step
/*
 * Runs the n rows staged in m->step_host through the embedding and every layer: one upload of ids,
 * positions and bases (upload_step), then only device work whose launches do not depend on the
 * positions (step_layers: step_embed, every_layer). On exit h + b is the last layer's output (the add
 * still to be done).
 */
static int upload_step(FastModel *m)
{
    CUDA_TRY(cudaMemcpyAsync(m->step, m->step_host, sizeof(int) * 3 * m->rows, cudaMemcpyHostToDevice, m->ctx.stream));
    m->step_unsynced++;
    return 0;
}

static int step_embed(FastModel *m, int n)
{
    m->a_ready = false; /* h is the embedding: nothing normalised yet */
    CUDA_TRY(embed_forward_v2(m->h, m->step, m->embed.data, m->embed.dtype, n, m->cfg->hidden_size, m->ctx.stream));
    return 0;
}

static int every_layer(FastModel *m, int n)
{
    for (int l = 0; l < m->cfg->num_hidden_layers; l++)
        if (decoder_layer(m, l, n)) return -1;
    return 0;
}

static int step_layers(FastModel *m, int n)
{
    return step_embed(m, n) || every_layer(m, n) ? -1 : 0;
}
// ANCHOR_END: fast_model_step

/* The n rows' final norm: h ← h + FFN_{L−1}; z = RMSNorm_final(h) into a. */
static int final_norm(FastModel *m, int n)
{
    const ModelConfig *c = m->cfg;
    if (m->a_ready) /* the last FFN's fused tail normalised with final_norm */
        m->a_ready = false;
    else
        CUDA_TRY(
            FAST_RMSNORM_RESIDUAL(m->a, m->h, m->b, m->final_norm, n, c->hidden_size, c->rms_norm_eps, m->ctx.stream));
    return 0;
}

/* lm_head z for rows [first, n) into m->logits (n − first ≤ its rows, fast_logit_rows). */
static int head_rows(FastModel *m, int first, int n)
{
    const int D = m->cfg->hidden_size, rows = n - first;
    const Gemv head = { .W = m->lm_head.data,
                        .w_type = m->lm_head.dtype,
                        .rows = m->lm_head.rows,
                        .cols = D,
                        .group = m->lm_head.rows,
                        .x = m->a + (size_t)first * D,
                        .x_type = KERNEL_F32,
                        .ldx = D,
                        .y = m->logits,
                        .ldy = m->lm_head.rows,
                        .split = m->lm_head.rows,
                        .T = rows };
    if (rows > FAST_DECODE_MAX_T || !gemv_v2_supports(&head) ||                    /* prompt chunks: one cuBLAS GEMM */
        (size_t)rows * D * kernel_dtype_size(m->lm_head.dtype) > GEMV_STAGE_BYTES) /* no second pass over the head */
        return fast_linear(&m->ctx, m->logits, m->a + (size_t)first * D, &m->lm_head, rows);
    /* a few rows: the matrix–vector kernel reads the LM head once, no conversion launch */
    CUDA_TRY(gemv_forward_v2(head, (GemvTail){ .kind = GEMV_TAIL_NONE }, m->ctx.stream));
    return 0;
}

/* logits of rows [first, n) into m->logits: the final norm, then the LM head. */
static int step_head(FastModel *m, int first, int n)
{
    return final_norm(m, n) || head_rows(m, first, n) ? -1 : 0;
}

/* The n − first logits rows of the step to dst (host); they become fast_model_argmax's. */
static int copy_logits(FastModel *m, int first, int n, float *dst)
{
    CUDA_TRY(cudaMemcpyAsync(dst, m->logits, sizeof(float) * (size_t)(n - first) * m->cfg->vocab_size,
                             cudaMemcpyDeviceToHost, m->ctx.stream));
    m->last_row = n - first - 1;
    return 0;
}

// ANCHOR: fast_model_graph
/*
 * A step of B sequences from a CUDA graph: `record` queues its launches at the first use (the capture),
 * later uses replay them. Every launch of the step (embedding, each layer, final norm, LM head) reads
 * device buffers whose addresses never change, with shapes that depend on B only: positions and cache
 * rows come from m->step (uploaded before the launch), attention blocks read each row's length there
 * (the grid does not depend on it), and the MoE runs the grouped kernels, so nothing in the step waits
 * for the host. A synchronisation inside would invalidate the capture (cudaStreamEndCapture fails), on
 * the simulated device as on a GPU.
 */
static int replay(FastModel *m, cudaGraphExec_t *exec, int (*record)(FastModel *, int), int B)
{
    if (!*exec) {
        cudaGraph_t graph = NULL;
        CUDA_TRY(cudaStreamBeginCapture(m->ctx.stream, cudaStreamCaptureModeGlobal));
        const int rc = record(m, B);
        const cudaError_t end = cudaStreamEndCapture(m->ctx.stream, &graph);
        if (rc || fast_check_cuda(end, "cudaStreamEndCapture", __FILE__, __LINE__)) {
            if (graph) cudaGraphDestroy(graph);
            return -1;
        }
        const cudaError_t made = cudaGraphInstantiate(exec, graph, 0);
        cudaGraphDestroy(graph);
        CUDA_TRY(made);
    }
    CUDA_TRY(cudaGraphLaunch(*exec, m->ctx.stream));
    return 0;
}

/* The decode step's launches: embedding, every layer, final norm and LM head. */
static int decode_step(FastModel *m, int B)
{
    return step_layers(m, B) || step_head(m, 0, B) ? -1 : 0;
}

static int decode_graph(FastModel *m, int B)
{
    return replay(m, &m->graphs[B - 1], decode_step, B);
}
// ANCHOR_END: fast_model_graph

/* Waits for the stream; every staged step has been uploaded, so staging starts again at region 0. */
static int wait_device(FastModel *m)
{
    CUDA_TRY(cudaStreamSynchronize(m->ctx.stream));
    m->step_unsynced = 0;
    m->step_host = m->step_pinned;
    return 0;
}

int fast_check_tokens(const char *who, int slot, int slots, const int *pos, int max_context, int vocab,
                      const int *tokens, int T)
{
    if (slot < 0 || slot >= slots) return ds_error("%s: slot %d is outside [0, %d)", who, slot, slots);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= vocab)
            return ds_error("token id %d at position %d of slot %d is outside the vocabulary [0, %d)", tokens[t],
                            pos[slot] + t, slot, vocab);
    if (T > max_context - pos[slot])
        return ds_error("slot %d: %d new tokens at positions %d.. do not fit the context of %d positions (max_context)",
                        slot, T, pos[slot], max_context);
    return 0;
}

static int check_tokens(const FastModel *m, const char *who, int slot, const int *tokens, int T)
{
    return fast_check_tokens(who, slot, m->max_batch, m->pos, m->max_context, m->cfg->vocab_size, tokens, T);
}

int fast_model_step_begin(FastModel *m, int slot, const int *tokens, int T)
{
    if (T < 1 || T > m->chunk)
        return ds_error("fast_model_step_begin: %d tokens in one step, the model's chunk is %d", T, m->chunk);
    if (check_tokens(m, "fast_model_step_begin", slot, tokens, T)) return -1;
    m->last_row = -1;
    /* stage in a region of the pinned array no queued upload reads: a prompt's chunks each take the next
     * one (there are enough for max_context tokens), so the host never waits between them */
    if (m->step_unsynced == m->step_regions && wait_device(m)) return -1;
    m->step_host = m->step_pinned + (size_t)m->step_unsynced * 3 * m->rows;
    for (int t = 0; t < T; t++) {
        stage_row(m, t, tokens[t], slot);
        m->step_host[m->rows + t] += t;
    }
    m->at = (FastPositions){ m->step + m->rows, m->step + 2 * m->rows, m->pos[slot], m->step_host[2 * m->rows],
                             m->max_context };
    return upload_step(m) || step_embed(m, T) ? -1 : 0;
}

int fast_model_step_end(FastModel *m, int slot, int T, int first, float *logits_host)
{
    m->pos[slot] += T;
    if (!logits_host) return 0;
    /* the LM head a piece of m->logits' rows at a time, each piece's copy queued before the next GEMM
     * overwrites them (stream order), so the device holds FAST_LOGIT_ROWS rows of logits, not a chunk's */
    const int cap = (int)fast_logit_rows(m->max_batch, m->rows);
    if (final_norm(m, T)) return -1;
    for (int r = first; r < T; r += cap) {
        const int end = T - r < cap ? T : r + cap;
        if (head_rows(m, r, end) || copy_logits(m, r, end, logits_host + (size_t)(r - first) * m->cfg->vocab_size))
            return -1;
    }
    return 0;
}

int fast_model_forward(FastModel *m, const int *tokens, int T, float *logits_host, bool all_positions)
{
    return fast_model_prefill(m, 0, tokens, T, logits_host, all_positions);
}

int fast_model_prefill(FastModel *m, int slot, const int *tokens, int T, float *logits_host, bool all_positions)
{
    if (check_tokens(m, "fast_model_prefill", slot, tokens, T)) return -1;
    const int V = m->cfg->vocab_size;
    m->last_row = -1;
    for (int t0 = 0; t0 < T; t0 += m->chunk) {
        const int n = T - t0 < m->chunk ? T - t0 : m->chunk;
        float *dst = !logits_host || !(all_positions || t0 + n == T) ? NULL
                     : all_positions                                 ? logits_host + (size_t)t0 * V
                                                                     : logits_host;
        if (fast_model_step_begin(m, slot, tokens + t0, n) || every_layer(m, n) ||
            fast_model_step_end(m, slot, n, all_positions ? 0 : n - 1, dst))
            return -1;
    }
    return wait_device(m);
}

/* Checks B rows of a decode of `steps` steps: distinct slots in range, ids in the vocabulary, room for every step. */
static int check_decode(const FastModel *m, const char *who, const int *slots, const int *tokens, int B, int steps)
{
    const int V = m->cfg->vocab_size;
    if (B < 1 || B > m->max_batch) return ds_error("%s: %d sequences, the model has %d slots", who, B, m->max_batch);
    for (int i = 0; i < B; i++) {
        const int s = slots[i];
        if (s < 0 || s >= m->max_batch)
            return ds_error("%s: slot %d (row %d) is outside [0, %d)", who, s, i, m->max_batch);
        for (int j = 0; j < i; j++)
            if (slots[j] == s) return ds_error("%s: slot %d appears twice (rows %d and %d)", who, s, j, i);
        if (tokens[i] < 0 || tokens[i] >= V)
            return ds_error("token id %d for slot %d is outside the vocabulary [0, %d)", tokens[i], s, V);
        if (m->pos[s] >= m->max_context)
            return ds_error("slot %d: the context of %d positions is full", s, m->max_context);
        if (steps > m->max_context - m->pos[s])
            return ds_error("slot %d: %d steps at position %d do not fit the context of %d positions", s, steps,
                            m->pos[s], m->max_context);
    }
    return 0;
}

/* Stages and uploads the B rows (token, position, cache base) of a decode step; positions as m->pos. */
static int begin_decode(FastModel *m, const int *slots, const int *tokens, int B)
{
    m->last_row = -1;
    if (wait_device(m)) return -1; /* the previous step's upload has left step_host */
    for (int i = 0; i < B; i++) stage_row(m, i, tokens[i], slots[i]);
    m->at = (FastPositions){ m->step + m->rows, m->step + 2 * m->rows, -1, -1, m->max_context };
    return upload_step(m);
}

int fast_model_decode(FastModel *m, const int *slots, const int *tokens, int B, float *logits_host)
{
    if (check_decode(m, "fast_model_decode", slots, tokens, B, 1) || begin_decode(m, slots, tokens, B)) return -1;
    const int run = m->graphs ? decode_graph(m, B) : decode_step(m, B);
    if (run || (logits_host && copy_logits(m, 0, B, logits_host))) return -1;
    for (int i = 0; i < B; i++) m->pos[slots[i]]++;
    CUDA_TRY(cudaStreamSynchronize(m->ctx.stream));
    return 0;
}

// ANCHOR: fast_model_greedy
/*
 * One greedy step that needs nothing from the host: the layers, the LM head, then the arg-max of each
 * row written over the step's token ids with its position advanced (sample_argmax_advance_v2), so the
 * next step reads its inputs where this one left them. Captured once per B in m->greedy_graphs.
 */
static int greedy_step(FastModel *m, int B)
{
    if (step_layers(m, B) || step_head(m, 0, B)) return -1;
    CUDA_TRY(sample_argmax_advance_v2(m->step, m->step + m->rows, m->logits, B, m->cfg->vocab_size, m->ctx.stream));
    return 0;
}

static int greedy_graph(FastModel *m, int B)
{
    return replay(m, &m->greedy_graphs[B - 1], greedy_step, B);
}

int fast_model_decode_greedy(FastModel *m, const int *slots, const int *tokens, int B, int steps, int *out)
{
    if (steps < 1) return ds_error("fast_model_decode_greedy: %d steps (at least 1)", steps);
    if (check_decode(m, "fast_model_decode_greedy", slots, tokens, B, steps)) return -1;
    const size_t n = (size_t)steps * B;
    if (n > m->greedy_cap) { /* pinned, so the copies after each step stay asynchronous; kept for later calls */
        cudaFreeHost(m->greedy_host);
        m->greedy_host = NULL;
        m->greedy_cap = 0;
        CUDA_TRY(cudaMallocHost((void **)&m->greedy_host, sizeof(int) * n));
        m->greedy_cap = n;
    }
    int *hist = m->greedy_host;
    int rc = begin_decode(m, slots, tokens, B);
    for (int i = 0; rc == 0 && i < steps; i++) {
        rc = m->greedy_graphs ? greedy_graph(m, B) : greedy_step(m, B);
        if (rc == 0)
            rc = fast_check_cuda(
                cudaMemcpyAsync(hist + (size_t)i * B, m->step, sizeof(int) * B, cudaMemcpyDeviceToHost, m->ctx.stream),
                "cudaMemcpyAsync(tokens)", __FILE__, __LINE__);
    }
    if (rc == 0)
        rc = fast_check_cuda(cudaStreamSynchronize(m->ctx.stream), "cudaStreamSynchronize", __FILE__, __LINE__);
    if (rc == 0) {
        memcpy(out, hist, sizeof(int) * n);
        for (int i = 0; i < B; i++) m->pos[slots[i]] += steps;
    }
    return rc;
}
// ANCHOR_END: fast_model_greedy

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
