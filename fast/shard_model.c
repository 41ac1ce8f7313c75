/**
 * \file shard_model.c
 * \brief The decoder in the sharded layout over D devices (fast_shard.h): every device runs every step on
 *        the same replicated tokens, and the devices meet only in NCCL collectives.
 *
 *     h⁰ = embed[tokens]               each device its V/D rows of the table, all-reduced
 *     per layer l:  a = RMSNorm(h);  [c^KV; k^R] = W^DKV/W^KR a              (every device, replicated)
 *                   ĉ_t, k^R_t into the cache on the device owning pos_t    (p mod D)
 *                   q = W^UQ c^Q for this device's heads; q^L = W^UKᵀ q^N; all-gather [q^L; q^R]
 *                   partial softmax of every head over this device's rows   → (o^L, l, m)
 *                   all-reduce MAX m; rescale; reduce-scatter SUM [o^L, l] by heads; o^L / l
 *                   b = W^O_r (W^UV o^L) for this device's heads; all-reduce SUM b;  h += b
 *                   a = RMSNorm(h); b = routed experts of this device + its shared/dense units;
 *                   all-reduce SUM b;  h += b                               (fused into the next norm)
 *     logits = lm_head RMSNorm(h)      each device its V/D rows of the vocabulary, all-gathered
 *
 * Decode steps run from CUDA graphs: at the first step of B sequences every device's stream captures the
 * step from the embedding to the logits' all-gather, collectives included (each device's graph holds its
 * rank's side of each), and later steps upload the staged ids and positions and replay the D graphs.
 *
 * Nothing in a step waits for the host: the step's ids and positions are copied from pageable host memory
 * (cudaMemcpyAsync returns once it has copied the source, so the next step may rewrite it), the experts run
 * in the grouped kernel that reads its offsets on the device, and every exchange is a collective queued on
 * the devices' streams. A decode step without a logits copy returns with all of it queued.
 */
#include "fast_shard.h"

#include "error.h"
#include "fast_ep.h"
#include "mla_shard.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCCL_TRY(call)                                                     \
    do {                                                                   \
        if (fast_check_nccl((call), #call, __FILE__, __LINE__)) return -1; \
    } while (0)

/* Allocates device r's buffers (device r current). */
static int alloc_buffers(FastShardModel *m, int r)
{
    FastShardDevice *v = &m->dev[r];
    size_t bytes[FAST_SHARD_BUFFERS];
    fast_shard_buffer_sizes(m->cfg, v->ctx.wtype, m->D, m->max_batch, m->max_context, m->rows, bytes);
    void **dst[FAST_SHARD_BUFFERS] = { &v->cache,
                                       (void **)&v->step,
                                       (void **)&v->h,
                                       (void **)&v->a,
                                       (void **)&v->b,
                                       (void **)&v->logits_loc,
                                       (void **)&v->logits,
                                       (void **)&v->kv,
                                       &v->lat,
                                       (void **)&v->c_q,
                                       (void **)&v->q,
                                       (void **)&v->qp,
                                       (void **)&v->q_all,
                                       (void **)&v->m_loc,
                                       (void **)&v->m_all,
                                       (void **)&v->part,
                                       (void **)&v->ol_sum,
                                       &v->ol,
                                       (void **)&v->o,
                                       (void **)&v->rlogits,
                                       (void **)&v->idx,
                                       (void **)&v->weight,
                                       (void **)&v->counts,
                                       (void **)&v->offsets,
                                       (void **)&v->slot_row,
                                       (void **)&v->row_token,
                                       (void **)&v->gu,
                                       &v->hidden,
                                       (void **)&v->expert_out,
                                       (void **)&v->shared_out };
    for (int i = 0; i < FAST_SHARD_BUFFERS; i++) CUDA_TRY(cudaMalloc(dst[i], bytes[i]));
    v->wire_send = v->logits; /* both free while the wire uses them (fast_shard_buffer_sizes makes room) */
    v->wire_recv = v->q_all;
    return 0;
}

static void free_buffers(FastShardDevice *v)
{
    void *p[] = { v->cache,    v->step,      v->h,  v->a,       v->b,          v->logits_loc, v->logits, v->kv,
                  v->lat,      v->c_q,       v->q,  v->qp,      v->q_all,      v->m_loc,      v->m_all,  v->part,
                  v->ol_sum,   v->ol,        v->o,  v->rlogits, v->idx,        v->weight,     v->counts, v->offsets,
                  v->slot_row, v->row_token, v->gu, v->hidden,  v->expert_out, v->shared_out };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) cudaFree(p[i]);
}

/* Records the last error again, prefixed with what failed to open. \return −1. */
static int open_failed(FastShardModel *m)
{
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", ds_last_error());
    fast_shard_close(m);
    return ds_error("%s", saved);
}

/* Every device's context, communicator, weights and buffers. */
static int open_devices(FastShardModel *m, const Model *ref, bool bf16)
{
    int ids[FAST_SHARD_MAX_DEVICES];
    ncclComm_t comms[FAST_SHARD_MAX_DEVICES];
    for (int r = 0; r < m->D; r++) ids[r] = r;
    for (int r = 0; r < m->D; r++) {
        CUDA_TRY(cudaSetDevice(r));
        if (fast_context_init(&m->dev[r].ctx, bf16, fast_shard_stage_elems(m->cfg, m->D, m->rows))) return -1;
    }
    NCCL_TRY(ncclCommInitAll(comms, m->D, ids));
    for (int r = 0; r < m->D; r++) m->dev[r].comm = comms[r];
    for (int r = 0; r < m->D; r++) {
        CUDA_TRY(cudaSetDevice(r));
        if (fast_shard_upload(m, r, ref) || alloc_buffers(m, r)) return -1;
    }
    CUDA_TRY(cudaSetDevice(0));
    return 0;
}

int fast_shard_open(FastShardModel *m, const char *dir, int D, const FastOptions *opt)
{
    memset(m, 0, sizeof *m);
    int present = 0;
    if (D < 1 || D > FAST_SHARD_MAX_DEVICES)
        return ds_error("fast_shard_open: %d devices (1..%d)", D, FAST_SHARD_MAX_DEVICES);
    CUDA_TRY(cudaGetDeviceCount(&present));
    if (present < D) return ds_error("fast_shard_open: %d devices asked for, %d present", D, present);
    Model ref;
    const ModelOptions ref_opt = { .max_context = 1, .chunk = 1 };
    if (model_open(&ref, dir, &ref_opt)) return -1;
    m->config = ref.ck.cfg;
    m->cfg = &m->config;
    m->rope = ref.rope;
    m->D = D;
    m->hl = m->cfg->num_attention_heads / D;
    m->max_context = model_context_size(m->cfg, opt ? opt->max_context : 0);
    m->cap = (m->max_context + D - 1) / D;
    m->chunk = opt && opt->chunk ? opt->chunk : MODEL_DEFAULT_CHUNK;
    m->max_batch = opt && opt->max_batch ? opt->max_batch : 1;
    m->rows = m->chunk > m->max_batch ? m->chunk : m->max_batch;
    int rc = fast_shard_check(m->cfg, D);
    if (rc == 0 && (m->max_batch < 1 || m->chunk < 1))
        rc = ds_error("fast_shard_open: max_batch %d and chunk %d must be at least 1", m->max_batch, m->chunk);
    if (rc == 0) {
        m->pos = calloc((size_t)m->max_batch, sizeof *m->pos);
        m->step_host = malloc(sizeof(int) * 5 * (size_t)m->rows * D);
        m->gathered = malloc(sizeof(float) * (size_t)m->rows * m->cfg->vocab_size);
        if (!(opt && opt->graph < 0)) m->graphs = calloc((size_t)m->max_batch * D, sizeof *m->graphs);
        if (!m->pos || !m->step_host || !m->gathered || (!(opt && opt->graph < 0) && !m->graphs))
            rc = ds_error("fast_shard_open: out of host memory");
    }
    if (rc == 0) rc = open_devices(m, &ref, opt && opt->bf16);
    model_close(&ref);
    return rc ? open_failed(m) : 0;
}

void fast_shard_close(FastShardModel *m)
{
    for (int i = 0; m->graphs && i < m->max_batch * m->D; i++)
        if (m->graphs[i]) cudaGraphExecDestroy(m->graphs[i]);
    free(m->graphs);
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        cudaSetDevice(r);
        if (v->ctx.stream) cudaStreamSynchronize(v->ctx.stream);
        if (v->comm) ncclCommDestroy(v->comm);
        fast_shard_free_weights(v, m->cfg ? m->cfg->num_hidden_layers : 0);
        free_buffers(v);
        fast_context_free(&v->ctx);
    }
    free(m->pos);
    free(m->step_host);
    free(m->gathered);
    memset(m, 0, sizeof *m);
    cudaSetDevice(0);
}

void fast_shard_set_wire(FastShardModel *m, FastShardWire wire)
{
    for (int i = 0; m->graphs && i < m->max_batch * m->D; i++) {
        if (m->graphs[i]) cudaGraphExecDestroy(m->graphs[i]);
        m->graphs[i] = NULL;
    }
    m->wire = wire;
}

void fast_shard_reset(FastShardModel *m)
{
    for (int s = 0; s < m->max_batch; s++) m->pos[s] = 0;
    m->last_rows = 0;
}

/* ---- one step ------------------------------------------------------------------------------- */

static int gemm_heads(FastContext *ctx, cublasOperation_t opA, int rows, int n, int k, const void *A, int lda,
                      long long strideA, const void *B, int ldb, long long strideB, float *C, int ldc,
                      long long strideC, int heads)
{
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType t = ctx->wtype == KERNEL_F32 ? CUDA_R_32F : CUDA_R_16BF;
    BLAS_TRY(cublasGemmStridedBatchedEx(ctx->blas, opA, CUBLAS_OP_N, rows, n, k, &one, A, t, lda, strideA, B, t, ldb,
                                        strideB, &zero, C, CUDA_R_32F, ldc, strideC, heads, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* x in the weights' type: x itself in float32 mode, else its copy in ctx->stage. */
static const void *staged(FastContext *ctx, const float *x, size_t n)
{
    if (ctx->wtype == KERNEL_F32) return x;
    if (fast_check_cuda(convert_forward_v2(ctx->stage, ctx->wtype, x, n, ctx->stream), "convert_forward_v2", __FILE__,
                        __LINE__))
        return NULL;
    return ctx->stage;
}

static MlaDims dims_of(const FastShardModel *m)
{
    const ModelConfig *c = m->cfg;
    return (MlaDims){ c->num_attention_heads, c->qk_nope_head_dim, c->qk_rope_head_dim,
                      c->v_head_dim,          c->kv_lora_rank,     m->rope.softmax_scale };
}

// ANCHOR: shard_attention_local
/* Device r, before the exchanges: the norm, the latent row into the owner's cache, its heads' [q^L; q^R]. */
static int attention_local(FastShardModel *m, int r, int l, int T)
{
    const ModelConfig *c = m->cfg;
    FastShardDevice *v = &m->dev[r];
    const FastShardLayer *L = &v->layers[l];
    FastContext *ctx = &v->ctx;
    const MlaDims dims = dims_of(m);
    const int Dm = c->hidden_size, dn = dims.d_n, dq = dn + dims.d_r, dc = dims.d_c, w = dc + dims.d_r, hl = m->hl;
    const int R = m->rows, *pos = v->step + R, *base = v->step + 2 * R, *lrow = v->step + 3 * R;
    const size_t esz = kernel_dtype_size(ctx->wtype);
    void *cache = (char *)v->cache + (size_t)l * m->cap * w * esz;
    if (l == 0)
        CUDA_TRY(FAST_RMSNORM(v->a, v->h, L->attn_norm, T, Dm, c->rms_norm_eps, ctx->stream));
    else /* h ← h + FFN_{l−1} (b, already summed over the devices); a = RMSNorm(h) */
        CUDA_TRY(FAST_RMSNORM_RESIDUAL(v->a, v->h, v->b, L->attn_norm, T, Dm, c->rms_norm_eps, ctx->stream));
    /* [ĉ_t; k^R_t] for every token into lat row t (lrow[t] + pos[t] = t), then to the owner's cache row */
    if (fast_linear(ctx, v->kv, v->a, &L->kv_a_proj, T)) return -1;
    CUDA_TRY(FAST_WRITE_LATENTS(v->lat, ctx->wtype, v->kv, L->kv_a_norm, v->inv_freq, m->rope.cos_sin_scale, dims, pos,
                                lrow, T, LATENT_NORM_EPS, ctx->stream));
    const MlaShard sh = { m->D, r, hl };
    CUDA_TRY(mla_shard_store_v1(cache, v->lat, ctx->wtype, w, pos, base, T, sh, ctx->stream));
    /* this device's heads' queries, q^R rotated */
    if (c->q_lora_rank) {
        if (fast_linear(ctx, v->c_q, v->a, &L->q_a_proj, T)) return -1;
        CUDA_TRY(FAST_RMSNORM(v->c_q, v->c_q, L->q_a_norm, T, c->q_lora_rank, LATENT_NORM_EPS, ctx->stream));
        if (fast_linear(ctx, v->q, v->c_q, &L->q_b_proj, T)) return -1;
    } else if (fast_linear(ctx, v->q, v->a, &L->q_proj, T)) {
        return -1;
    }
    CUDA_TRY(FAST_ROPE(v->q + dn, v->inv_freq, m->rope.cos_sin_scale, dims.d_r, T, hl, hl * dq, dq, pos, ctx->stream));
    /* q^L_{t,h} = W^UK_hᵀ q^N_{t,h} into qp's [q^L; q^R] rows, then q^R behind it */
    const void *q_in = staged(ctx, v->q, (size_t)T * hl * dq);
    if (!q_in || gemm_heads(ctx, CUBLAS_OP_N, dc, T, dn, L->kv_b_proj.data, dc, (long long)(dn + dims.d_v) * dc, q_in,
                            hl * dq, dq, v->qp, hl * w, w, hl))
        return -1;
    CUDA_TRY(mla_shard_pack_v1(v->qp, v->q, dims, T, hl, ctx->stream));
    return 0;
}
// ANCHOR_END: shard_attention_local

/* Queues one collective per device in one group: kind 0 all-gather, 1 all-reduce (op), 2 reduce-scatter SUM.
 * send/recv: byte offsets of FastShardDevice's pointer fields; count: elements each rank receives (all-gather:
 * sends). */
typedef enum { ALL_GATHER, ALL_REDUCE, REDUCE_SCATTER } Collective;

static int collective(FastShardModel *m, Collective kind, size_t send_off, size_t recv_off, size_t count,
                      ncclRedOp_t op)
{
    NCCL_TRY(ncclGroupStart());
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        const void *send = *(void **)((char *)v + send_off);
        void *recv = *(void **)((char *)v + recv_off);
        ncclResult_t rc = kind == ALL_GATHER ? ncclAllGather(send, recv, count, ncclFloat32, v->comm, v->ctx.stream)
                          : kind == ALL_REDUCE
                              ? ncclAllReduce(send, recv, count, ncclFloat32, op, v->comm, v->ctx.stream)
                              : ncclReduceScatter(send, recv, count, ncclFloat32, ncclSum, v->comm, v->ctx.stream);
        if (rc != ncclSuccess) {
            ncclGroupEnd();
            return fast_check_nccl(rc, "ncclAllGather/AllReduce/ReduceScatter", __FILE__, __LINE__);
        }
    }
    NCCL_TRY(ncclGroupEnd());
    return 0;
}

#define FIELD(f) offsetof(FastShardDevice, f)

/* The bf16 wire. Device r's float32 field at off, n elements, narrowed into its wire_send. */
static int narrow(FastShardModel *m, size_t off, size_t n)
{
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(convert_forward_v2(v->wire_send, KERNEL_BF16, *(float **)((char *)v + off), n, v->ctx.stream));
    }
    return 0;
}

/* Device r sends slice q (s elements) of its wire_send to device q and receives q's slice r into slice q of
 * its wire_recv: in bf16, point to point, so nothing is added on the way. */
static int exchange(FastShardModel *m, size_t s)
{
    NCCL_TRY(ncclGroupStart());
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        for (int q = 0; q < m->D; q++) {
            if (q == r) continue;
            ncclResult_t rc = ncclSend((uint16_t *)v->wire_send + q * s, s, ncclBfloat16, q, v->comm, v->ctx.stream);
            if (rc == ncclSuccess)
                rc = ncclRecv((uint16_t *)v->wire_recv + q * s, s, ncclBfloat16, q, v->comm, v->ctx.stream);
            if (rc != ncclSuccess) {
                ncclGroupEnd();
                return fast_check_nccl(rc, "ncclSend/ncclRecv (bf16)", __FILE__, __LINE__);
            }
        }
    }
    NCCL_TRY(ncclGroupEnd());
    return 0;
}

/* out (device r's field at out_off, or its wire_send slice r when out_off is 0) = Σ_q slice q, in float32 in
 * device order, widened from the bf16 slices (its own from wire_send). */
static int sum_slices(FastShardModel *m, size_t out_off, size_t s)
{
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        uint16_t *own = (uint16_t *)v->wire_send + r * s;
        void *out = out_off ? *(void **)((char *)v + out_off) : (void *)own;
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(
            shard_wire_sum_v1(out, out_off ? KERNEL_F32 : KERNEL_BF16, v->wire_recv, own, r, m->D, s, v->ctx.stream));
    }
    return 0;
}

/* Every device's bf16 at src (wire_send or wire_recv, n elements) widened into its float32 field at off. */
static int widen(FastShardModel *m, bool from_recv, size_t off, size_t n)
{
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(shard_wire_sum_v1(*(void **)((char *)v + off), KERNEL_F32, NULL,
                                   from_recv ? v->wire_recv : v->wire_send, 0, 1, n, v->ctx.stream));
    }
    return 0;
}

/* One bf16 collective per device in one group, on the wire buffers: all-gather of s elements from slice r of
 * wire_send into wire_send (in place), or all-reduce MAX of s elements from wire_send into wire_recv. */
static int wire_collective(FastShardModel *m, bool gather, size_t s)
{
    NCCL_TRY(ncclGroupStart());
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        uint16_t *w = v->wire_send;
        const ncclResult_t rc = gather
                                    ? ncclAllGather(w + r * s, w, s, ncclBfloat16, v->comm, v->ctx.stream)
                                    : ncclAllReduce(w, v->wire_recv, s, ncclBfloat16, ncclMax, v->comm, v->ctx.stream);
        if (rc != ncclSuccess) {
            ncclGroupEnd();
            return fast_check_nccl(rc, "ncclAllGather/AllReduce (bf16)", __FILE__, __LINE__);
        }
    }
    NCCL_TRY(ncclGroupEnd());
    return 0;
}

// ANCHOR: shard_wire
/* All-reduce SUM of the float32 field at off (n elements) on every device. bf16 wire (n a multiple of D): each
 * device narrows its partial, sends slice q to device q, adds the D slices it holds in float32 in device order,
 * narrows that sum and all-gathers it, then widens — 2(D−1)·n/D bf16 elements sent per device where the float32
 * ring sends 2(D−1)·n/D float32 ones, and every device ends with the same values. */
static int reduce_sum(FastShardModel *m, size_t off, size_t n)
{
    if (m->wire == FAST_WIRE_F32 || m->D == 1 || n % m->D) return collective(m, ALL_REDUCE, off, off, n, ncclSum);
    const size_t s = n / m->D;
    return narrow(m, off, n) || exchange(m, s) || sum_slices(m, 0, s) || wire_collective(m, true, s) ||
                   widen(m, false, off, n)
               ? -1
               : 0;
}

// ANCHOR_END: shard_wire

/* Reduce-scatter SUM: device r receives, at recv_off, block r (s elements) of every device's send_off field,
 * summed. bf16 wire: the blocks exchanged in bf16 and summed in float32 in device order. */
static int reduce_scatter_sum(FastShardModel *m, size_t send_off, size_t recv_off, size_t s)
{
    if (m->wire == FAST_WIRE_F32 || m->D == 1) return collective(m, REDUCE_SCATTER, send_off, recv_off, s, ncclSum);
    return narrow(m, send_off, s * m->D) || exchange(m, s) || sum_slices(m, recv_off, s) ? -1 : 0;
}

/* All-reduce MAX of the running maxima m: any value shared by every device serves as the softmax's shift (it
 * cancels in o^L / l), so the bf16-rounded maximum does, and MAX adds no rounding on the way. */
static int reduce_max(FastShardModel *m, size_t send_off, size_t recv_off, size_t n)
{
    if (m->wire == FAST_WIRE_F32 || m->D == 1) return collective(m, ALL_REDUCE, send_off, recv_off, n, ncclMax);
    return narrow(m, send_off, n) || wire_collective(m, false, n) || widen(m, true, recv_off, n) ? -1 : 0;
}

// ANCHOR: shard_attention
/* The attention half of layer l over the group: on exit every device's a is the FFN input. */
static int attention(FastShardModel *m, int l, int T)
{
    const ModelConfig *c = m->cfg;
    const MlaDims dims = dims_of(m);
    const int nh = dims.n_h, dc = dims.d_c, dv = dims.d_v, dn = dims.d_n, hl = m->hl, R = m->rows;
    for (int r = 0; r < m->D; r++) {
        CUDA_TRY(cudaSetDevice(r));
        if (attention_local(m, r, l, T)) return -1;
    }
    /* every head's absorbed queries on every device */
    if (collective(m, ALL_GATHER, FIELD(qp), FIELD(q_all), (size_t)T * hl * (dc + dims.d_r), ncclSum)) return -1;
    for (int r = 0; r < m->D; r++) { /* each device: every head over its own rows */
        FastShardDevice *v = &m->dev[r];
        const void *cache = (char *)v->cache + (size_t)l * m->cap * (dc + dims.d_r) * kernel_dtype_size(v->ctx.wtype);
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(FAST_SHARD_PARTIAL(v->part, v->m_loc, v->q_all, cache, v->ctx.wtype, dims, v->step + R,
                                    v->step + 2 * R, T, (MlaShard){ m->D, r, hl }, v->ctx.stream));
    }
    if (reduce_max(m, FIELD(m_loc), FIELD(m_all), (size_t)T * nh)) return -1;
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(
            mla_shard_rescale_v1(v->part, v->m_loc, v->m_all, nh, dc, T, (MlaShard){ m->D, r, hl }, v->ctx.stream));
    }
    /* each device receives its heads' [o^L, l] summed over every device's rows */
    if (reduce_scatter_sum(m, FIELD(part), FIELD(ol_sum), (size_t)T * hl * (dc + 1))) return -1;
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        const FastShardLayer *L = &v->layers[l];
        FastContext *ctx = &v->ctx;
        const size_t esz = kernel_dtype_size(ctx->wtype);
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(mla_shard_normalise_v1(v->ol, ctx->wtype, v->ol_sum, dc, T, hl, ctx->stream));
        /* o_{t,h} = W^UV_h o^L_{t,h}, then this device's columns of W^O: a partial of the output */
        if (gemm_heads(ctx, CUBLAS_OP_T, dv, T, dc, (const char *)L->kv_b_proj.data + (size_t)dn * dc * esz, dc,
                       (long long)(dn + dv) * dc, v->ol, hl * dc, dc, v->o, hl * dv, dv, hl) ||
            fast_linear(ctx, v->b, v->o, &L->o_proj, T))
            return -1;
    }
    if (reduce_sum(m, FIELD(b), (size_t)T * c->hidden_size)) return -1;
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(FAST_RMSNORM_RESIDUAL(v->a, v->h, v->b, v->layers[l].ffn_norm, T, c->hidden_size, c->rms_norm_eps,
                                       v->ctx.stream));
    }
    return 0;
}
// ANCHOR_END: shard_attention

// ANCHOR: shard_ffn
/* Device r's part of FFN layer l: its hidden units of a dense FFN, or its routed experts (the router runs on
 * every token, identically everywhere) plus its units of the shared experts. b: the partial. */
static int ffn_local(FastShardModel *m, int r, int l, int T)
{
    const ModelConfig *c = m->cfg;
    FastShardDevice *v = &m->dev[r];
    const FastShardLayer *L = &v->layers[l];
    FastContext *ctx = &v->ctx;
    const int Dm = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok, El = E / m->D;
    const int Ie = c->moe_intermediate_size;
    if (!L->is_moe) {
        const int Id = L->dense.down.cols;
        if (fast_linear(ctx, v->gu, v->a, &L->dense.gate_up, T)) return -1;
        CUDA_TRY(swiglu_forward_v2(v->hidden, ctx->wtype, v->gu, T, Id, ctx->stream));
        return fast_gemm(ctx, v->b, v->hidden, ctx->wtype, Id, L->dense.down.data, ctx->wtype, Dm, Id, T);
    }
    const RouterParams p = { E,
                             K,
                             c->n_group,
                             c->topk_group,
                             (int)c->topk_method,
                             (int)c->scoring_func,
                             c->norm_topk_prob,
                             c->routed_scaling_factor };
    const int Is = L->shared.down.data ? L->shared.down.cols : 0;
    if (fast_gemm(ctx, v->rlogits, v->a, KERNEL_F32, Dm, L->router, KERNEL_F32, E, Dm, T)) return -1;
    CUDA_TRY(FAST_ROUTER(v->idx, v->weight, v->rlogits, v->rlogits, L->bias, p, T, ctx->stream));
    CUDA_TRY(moe_permute_v2(v->counts, v->offsets, v->slot_row, v->row_token, v->idx, T, K, E, ctx->stream));
    /* rows of other devices' experts stay zero, so the combine in slot order adds only this device's */
    CUDA_TRY(cudaMemsetAsync(v->expert_out, 0, sizeof(float) * (size_t)T * K * Dm, ctx->stream));
    void *shared_hidden = (char *)v->hidden + (size_t)T * K * Ie * kernel_dtype_size(ctx->wtype);
    /* version 3's contract (offsets of the E/D experts from r·E/D, every expert's block scanned): version 4
     * takes moe_route_v4's active-expert list, which a device's share of the experts does not have */
    CUDA_TRY(moe_ffn_grouped_v3(v->expert_out, v->shared_out, v->hidden, shared_hidden, v->a, v->row_token,
                                v->offsets + (size_t)r * El, L->gate_up.data, L->down.data,
                                Is ? L->shared.gate_up.data : NULL, Is ? L->shared.down.data : NULL, ctx->wtype, T,
                                T * K, El, Dm, Ie, Is, ctx->stream));
    CUDA_TRY(
        moe_combine_v2(v->b, v->expert_out, v->slot_row, v->weight, Is ? v->shared_out : NULL, T, K, Dm, ctx->stream));
    return 0;
}

static int ffn(FastShardModel *m, int l, int T)
{
    for (int r = 0; r < m->D; r++) {
        CUDA_TRY(cudaSetDevice(r));
        if (ffn_local(m, r, l, T)) return -1;
    }
    return reduce_sum(m, FIELD(b), (size_t)T * m->cfg->hidden_size);
}
// ANCHOR_END: shard_ffn

/* Uploads each device's staged step (ids, positions, cache rows) to its m->dev[r].step. */
static int step_upload(FastShardModel *m)
{
    const size_t n = 5 * (size_t)m->rows;
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(
            cudaMemcpyAsync(v->step, m->step_host + r * n, sizeof(int) * n, cudaMemcpyHostToDevice, v->ctx.stream));
    }
    return 0;
}

/* Embeds the T uploaded tokens: each device its vocabulary slice's rows (the zero row for the others' tokens),
 * summed over the devices into the same h everywhere. */
static int step_embed(FastShardModel *m, int T)
{
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(embed_forward_v2(v->h, v->step + 4 * m->rows, v->embed.data, v->embed.dtype, T, m->cfg->hidden_size,
                                  v->ctx.stream));
    }
    return reduce_sum(m, FIELD(h), (size_t)T * m->cfg->hidden_size);
}

static int step_begin(FastShardModel *m, int T)
{
    return step_upload(m) || step_embed(m, T) ? -1 : 0;
}

/* Every layer, then the logits of rows [first, T): each device its vocabulary slice, all-gathered. */
static int step_run(FastShardModel *m, int T, int first)
{
    const int Dm = m->cfg->hidden_size;
    for (int l = 0; l < m->cfg->num_hidden_layers; l++)
        if (attention(m, l, T) || ffn(m, l, T)) return -1;
    for (int r = 0; r < m->D; r++) {
        FastShardDevice *v = &m->dev[r];
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(FAST_RMSNORM_RESIDUAL(v->a, v->h, v->b, v->final_norm, T, Dm, m->cfg->rms_norm_eps, v->ctx.stream));
        if (fast_linear(&v->ctx, v->logits_loc, v->a + (size_t)first * Dm, &v->lm_head, T - first)) return -1;
    }
    m->last_rows = T - first;
    return collective(m, ALL_GATHER, FIELD(logits_loc), FIELD(logits),
                      (size_t)(T - first) * (m->cfg->vocab_size / m->D), ncclSum);
}

/* Row t of the step on every device: token, position, its slot's cache base, t − position (the latent row),
 * and the token's row in that device's embedding slice (V/D, the zero row, when another device holds it). */
static void stage_row(FastShardModel *m, int t, int token, int slot, int p)
{
    const int R = m->rows, Vl = m->cfg->vocab_size / m->D;
    for (int r = 0; r < m->D; r++) {
        int *s = m->step_host + (size_t)r * 5 * R;
        s[t] = token;
        s[R + t] = p;
        s[2 * R + t] = slot * m->cfg->num_hidden_layers * m->cap;
        s[3 * R + t] = t - p;
        s[4 * R + t] = token / Vl == r ? token % Vl : Vl;
    }
}

static int check_slot(const FastShardModel *m, const char *who, int slot, const int *tokens, int T)
{
    return fast_check_tokens(who, slot, m->max_batch, m->pos, m->max_context, m->cfg->vocab_size, tokens, T);
}

int fast_shard_logits(FastShardModel *m, float *logits_host)
{
    FastShardDevice *v = &m->dev[0];
    const int n = m->last_rows, V = m->cfg->vocab_size, Vl = V / m->D;
    CUDA_TRY(cudaSetDevice(0));
    CUDA_TRY(
        cudaMemcpyAsync(m->gathered, v->logits, sizeof(float) * (size_t)n * V, cudaMemcpyDeviceToHost, v->ctx.stream));
    CUDA_TRY(cudaStreamSynchronize(v->ctx.stream));
    for (int r = 0; r < m->D; r++) /* [D][n][V/D] as gathered → [n][V] */
        for (int t = 0; t < n; t++)
            memcpy(logits_host + (size_t)t * V + (size_t)r * Vl, m->gathered + ((size_t)r * n + t) * Vl,
                   sizeof(float) * Vl);
    return 0;
}

int fast_shard_prefill(FastShardModel *m, int slot, const int *tokens, int T, float *logits_host, bool all_positions)
{
    if (T < 1) return ds_error("fast_shard_prefill: %d tokens", T);
    if (check_slot(m, "fast_shard_prefill", slot, tokens, T)) return -1;
    const int V = m->cfg->vocab_size;
    for (int t0 = 0; t0 < T; t0 += m->chunk) {
        const int n = T - t0 < m->chunk ? T - t0 : m->chunk, last = t0 + n == T;
        for (int t = 0; t < n; t++) stage_row(m, t, tokens[t0 + t], slot, m->pos[slot] + t);
        if (step_begin(m, n) || step_run(m, n, all_positions ? 0 : n - 1)) return -1;
        m->pos[slot] += n;
        if (logits_host && (all_positions || last) &&
            fast_shard_logits(m, all_positions ? logits_host + (size_t)t0 * V : logits_host))
            return -1;
    }
    return 0;
}

// ANCHOR: shard_graph
/*
 * The decode step of B sequences from D CUDA graphs, one per device: at the first such step every device's
 * stream captures, and the step's launches and collectives are queued as in an eager step; each ncclGroupEnd
 * records its rank's side of the collective into each device's graph. A replay on device r runs its launches
 * and meets the other devices' replays at every collective, as the eager calls meet. The uploaded m->dev[r].step
 * carries everything that changes between steps.
 */
static int decode_graph(FastShardModel *m, int B)
{
    cudaGraphExec_t *exec = m->graphs + (size_t)(B - 1) * m->D;
    if (!exec[0]) {
        int begun = 0, rc = 0;
        for (; begun < m->D && rc == 0; begun++) {
            CUDA_TRY(cudaSetDevice(begun));
            rc = fast_check_cuda(cudaStreamBeginCapture(m->dev[begun].ctx.stream, cudaStreamCaptureModeGlobal),
                                 "cudaStreamBeginCapture", __FILE__, __LINE__);
        }
        if (rc == 0) rc = step_embed(m, B) || step_run(m, B, 0);
        for (int r = 0; r < begun; r++) {
            cudaGraph_t graph = NULL;
            cudaSetDevice(r);
            const cudaError_t end = cudaStreamEndCapture(m->dev[r].ctx.stream, &graph);
            if (rc == 0) rc = fast_check_cuda(end, "cudaStreamEndCapture", __FILE__, __LINE__);
            if (rc == 0)
                rc = fast_check_cuda(cudaGraphInstantiate(&exec[r], graph, 0), "cudaGraphInstantiate", __FILE__,
                                     __LINE__);
            if (graph) cudaGraphDestroy(graph);
        }
        if (rc) {
            for (int r = 0; r < m->D; r++) {
                if (exec[r]) cudaGraphExecDestroy(exec[r]);
                exec[r] = NULL;
            }
            return -1;
        }
    }
    for (int r = 0; r < m->D; r++) {
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(cudaGraphLaunch(exec[r], m->dev[r].ctx.stream));
    }
    m->last_rows = B;
    return 0;
}
// ANCHOR_END: shard_graph

int fast_shard_decode(FastShardModel *m, const int *slots, const int *tokens, int B, float *logits_host)
{
    if (B < 1 || B > m->max_batch)
        return ds_error("fast_shard_decode: %d sequences, the model has %d slots", B, m->max_batch);
    for (int i = 0; i < B; i++) {
        if (check_slot(m, "fast_shard_decode", slots[i], &tokens[i], 1)) return -1;
        for (int j = 0; j < i; j++)
            if (slots[j] == slots[i])
                return ds_error("fast_shard_decode: slot %d appears twice (rows %d and %d)", slots[i], j, i);
    }
    for (int i = 0; i < B; i++) stage_row(m, i, tokens[i], slots[i], m->pos[slots[i]]);
    if (m->graphs ? step_upload(m) || decode_graph(m, B) : step_begin(m, B) || step_run(m, B, 0)) return -1;
    for (int i = 0; i < B; i++) m->pos[slots[i]]++;
    return logits_host ? fast_shard_logits(m, logits_host) : 0;
}
