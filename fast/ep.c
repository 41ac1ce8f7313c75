/**
 * \file ep.c
 * \brief Expert parallelism over N devices in one process: sharded upload, routing statistics reduced over
 *        devices, token dropping at dispatch, dispatch and combine through NCCL send/recv (see fast_ep.h);
 *        small steps plan on the devices and exchange fixed-capacity blocks, large ones follow the host's
 *        exact-size plan (fast/ep_plan.c).
 */
#include "ep_internal.h"

#include "error.h"
#include "router.h"

#include <stdlib.h>
#include <string.h>

int fast_check_nccl(ncclResult_t r, const char *call, const char *file, int line)
{
    if (r == ncclSuccess) return 0;
    return ds_error("%s failed: %s at %s:%d", call, ncclGetErrorString(r), file, line);
}

static int imin(int a, int b)
{
    return a < b ? a : b;
}
static size_t zmax(size_t a, size_t b)
{
    return a > b ? a : b;
}

int fast_ep_device_limit(const ModelConfig *cfg, int N)
{
    const int G = cfg->n_group;
    int m = imin(cfg->num_experts_per_tok, N);
    if (cfg->topk_method != TOPK_GREEDY && G > 1) { /* topk_group groups, each on `span` devices */
        const int span = G % N == 0 ? 1 : N % G == 0 ? N / G : N;
        m = imin(m, cfg->topk_group * span);
    }
    return m;
}

// ANCHOR: fast_ep_device_sizes
int fast_ep_device_sizes(const ModelConfig *cfg, KernelDType wtype, int N, int max_T,
                         size_t bytes[FAST_EP_DEVICE_BUFFERS])
{
    const int K = cfg->num_experts_per_tok, E = cfg->n_routed_experts;
    const size_t tokens = (size_t)max_T, top_k = K, experts = E, devices = N, hidden = cfg->hidden_size;
    const size_t inter = cfg->moe_intermediate_size; /* I and I_s: routed and shared expert widths */
    const size_t shared_inter = (size_t)cfg->n_shared_experts * cfg->moe_intermediate_size;
    const size_t recv_rows = devices * tokens;             /* rows one device can receive (recv_cap) */
    const size_t expert_rows = recv_rows * imin(K, E / N); /* received rows expanded to local experts */
    const size_t send_rows = tokens * imin(K, N);          /* own rows sent out, each token ≤ Kd times */
    const size_t block_rows = tokens * devices;            /* a host-free step's N blocks of ≤ max_T rows */
    const size_t part_slots = recv_rows * imin(K, E / N);  /* ≤ Kl local experts per received row */
    const size_t esz = kernel_dtype_size(wtype), psz = sizeof(float); /* payloads: float32 at most */
    /* elements and element size of each buffer, in FastEpDevice's field order (logits … shared_out) */
    const size_t n[FAST_EP_DEVICE_BUFFERS][2] = { { tokens * experts, 4 },
                                                  { tokens * top_k, 4 },
                                                  { tokens * top_k, 4 },
                                                  { experts, 4 },
                                                  { experts, 4 },
                                                  { devices, 4 },
                                                  { devices * tokens * top_k, 4 },
                                                  { devices * tokens * top_k, 4 },
                                                  { block_rows, 4 },
                                                  { expert_rows, 4 },
                                                  { part_slots, 4 },
                                                  { part_slots, 4 },
                                                  { send_rows, 4 },
                                                  { send_rows, 4 },
                                                  { devices * tokens * top_k, 4 },
                                                  { devices * tokens * top_k, 4 },
                                                  { experts / devices + 1, 4 },
                                                  { block_rows * hidden, psz },
                                                  { recv_rows * hidden, psz },
                                                  { expert_rows * hidden, 4 },
                                                  { wtype == KERNEL_BF16 ? expert_rows * hidden : 0, esz },
                                                  { zmax(expert_rows * 2 * inter, tokens * 2 * shared_inter), 4 },
                                                  { zmax(expert_rows * inter, tokens * shared_inter), esz },
                                                  { expert_rows * hidden, 4 },
                                                  { recv_rows * hidden, psz },
                                                  { block_rows * hidden, psz },
                                                  { tokens * hidden, 4 } };
    fast_buffer_bytes(n, FAST_EP_DEVICE_BUFFERS, bytes);
    return FAST_EP_DEVICE_BUFFERS;
}
// ANCHOR_END: fast_ep_device_sizes

size_t fast_ep_device_bytes(const ModelConfig *cfg, KernelDType wtype, int N, int max_T)
{
    size_t bytes[FAST_EP_DEVICE_BUFFERS], sum = 0;
    fast_ep_device_sizes(cfg, wtype, N, max_T, bytes);
    for (int i = 0; i < FAST_EP_DEVICE_BUFFERS; i++) sum += bytes[i];
    return sum;
}

size_t fast_ep_stage_elems(const ModelConfig *cfg, int max_T)
{
    return (size_t)max_T * cfg->hidden_size;
}

size_t fast_ep_moe_bytes(const ModelConfig *cfg, KernelDType wtype, int N)
{
    return fast_moe_bytes(cfg, wtype, cfg->n_routed_experts / N);
}

/* Device d's context, plan and working memory. */
static int init_device(FastEp *ep, int d, bool bf16, const ModelConfig *cfg)
{
    FastEpDevice *v = &ep->dev[d];
    FastEpPlan *pl = &v->plan;
    const size_t experts = ep->E, devices = ep->N;
    const size_t expert_rows = (size_t)ep->exp_cap;          /* received rows expanded to local experts */
    const size_t send_rows = (size_t)ep->max_T * ep->Kd;     /* own rows sent out, each token ≤ Kd times */
    const size_t part_slots = (size_t)ep->recv_cap * ep->Kl; /* ≤ Kl local experts per received row */
    CUDA_TRY(cudaSetDevice(d));
    if (fast_context_init(&v->ctx, bf16, fast_ep_stage_elems(cfg, ep->max_T))) /* stage: the shared experts' input */
        return -1;
    pl->send_token = malloc(sizeof(int) * send_rows);
    pl->recv_token = malloc(sizeof(int) * (size_t)ep->recv_cap);
    pl->expand_row = malloc(sizeof(int) * expert_rows);
    pl->expert_off = malloc(sizeof(int) * (experts / devices + 1));
    pl->part_slot = malloc(sizeof(int) * part_slots);
    pl->part_weight = malloc(sizeof(float) * part_slots);
    pl->comb_slot = malloc(sizeof(int) * send_rows);
    pl->comb_weight = malloc(sizeof(float) * send_rows);
    if (!pl->send_token || !pl->recv_token || !pl->expand_row || !pl->expert_off || !pl->part_slot ||
        !pl->part_weight || !pl->comb_slot || !pl->comb_weight)
        return ds_error("fast_ep_init: out of host memory");
    void **dst[FAST_EP_DEVICE_BUFFERS] = { (void **)&v->logits,
                                           (void **)&v->idx,
                                           (void **)&v->weight,
                                           (void **)&v->stat_count,
                                           (void **)&v->stat_score,
                                           (void **)&v->stat_dev,
                                           (void **)&v->idx_all,
                                           (void **)&v->weight_all,
                                           (void **)&v->send_token,
                                           (void **)&v->expand_row,
                                           (void **)&v->part_slot,
                                           (void **)&v->part_weight,
                                           (void **)&v->comb_slot,
                                           (void **)&v->comb_weight,
                                           (void **)&v->idx_kept,
                                           (void **)&v->slot,
                                           (void **)&v->expert_off,
                                           &v->xp,
                                           &v->xr,
                                           (void **)&v->xe,
                                           &v->xw,
                                           (void **)&v->gu,
                                           &v->hidden,
                                           (void **)&v->ye,
                                           &v->yr,
                                           &v->ret,
                                           (void **)&v->shared_out };
    size_t bytes[FAST_EP_DEVICE_BUFFERS];
    fast_ep_device_sizes(cfg, v->ctx.wtype, ep->N, ep->max_T, bytes);
    for (int i = 0; i < FAST_EP_DEVICE_BUFFERS; i++) CUDA_TRY(cudaMalloc(dst[i], bytes[i]));
    CUDA_TRY(cudaEventCreateWithFlags(&v->ready, cudaEventDisableTiming));
    CUDA_TRY(cudaEventCreateWithFlags(&v->done, cudaEventDisableTiming));
    return 0;
}

// ANCHOR: fast_ep_init
int fast_ep_init(FastEp *ep, int N, bool bf16, const ModelConfig *cfg, int max_T)
{
    memset(ep, 0, sizeof *ep);
    const int E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    if (N < 1 || N > FAST_EP_MAX_DEVICES || E < 1 || E % N != 0 || K < 1 || max_T < 1)
        return ds_error("fast_ep_init: %d devices cannot share %d routed experts (1..%d devices dividing them)", N, E,
                        FAST_EP_MAX_DEVICES);
    int present = 0;
    CUDA_TRY(cudaGetDeviceCount(&present));
    if (present < N) return ds_error("fast_ep_init: %d devices asked for, %d present", N, present);
    ep->N = N;
    ep->E = E;
    ep->K = K;
    ep->D = cfg->hidden_size;
    ep->I = cfg->moe_intermediate_size;
    ep->I_s = cfg->n_shared_experts * cfg->moe_intermediate_size;
    ep->max_T = max_T;
    ep->Kd = imin(K, N);
    ep->Kl = imin(K, E / N);
    ep->recv_cap = N * max_T;            /* a token's hidden state reaches a device at most once */
    ep->exp_cap = ep->recv_cap * ep->Kl; /* where it feeds at most min(K, E/N) experts */
    ep->host_free_max = FAST_EP_HOST_FREE_MAX;
    const size_t all = (size_t)N * max_T * K;
    ep->keep_idx = malloc(sizeof(int) * all);
    ep->weight_host = malloc(sizeof(float) * all);
    ep->keep = malloc(sizeof(bool) * all);
    ep->slot_row = malloc(sizeof(int) * (size_t)ep->recv_cap * K);
    ep->send_row = malloc(sizeof(int) * (size_t)max_T * N);
    ep->stats.expert_count = malloc(sizeof(int) * E);
    ep->stats.f = malloc(sizeof(double) * E);
    ep->stats.P = malloc(sizeof(double) * E);
    ep->stats.device_tokens = malloc(sizeof(int) * N);
    if (!ep->keep_idx || !ep->weight_host || !ep->keep || !ep->slot_row || !ep->send_row || !ep->stats.expert_count ||
        !ep->stats.f || !ep->stats.P || !ep->stats.device_tokens) {
        fast_ep_free(ep);
        return ds_error("fast_ep_init: out of host memory");
    }
    /* one communicator per device, rank d on device d */
    ncclComm_t comms[FAST_EP_MAX_DEVICES];
    int devices[FAST_EP_MAX_DEVICES];
    for (int d = 0; d < N; d++) devices[d] = d;
    if (fast_check_nccl(ncclCommInitAll(comms, N, devices), "ncclCommInitAll", __FILE__, __LINE__)) {
        fast_ep_free(ep);
        return -1;
    }
    for (int d = 0; d < N; d++) ep->dev[d].comm = comms[d];
    for (int d = 0; d < N; d++)
        if (init_device(ep, d, bf16, cfg)) {
            fast_ep_free(ep);
            return -1;
        }
    return 0;
}
// ANCHOR_END: fast_ep_init

int fast_ep_timing_create(FastEpTiming *tm, int N)
{
    memset(tm, 0, sizeof *tm);
    for (int d = 0; d < N; d++) {
        CUDA_TRY(cudaSetDevice(d));
        for (int p = 0; p < FAST_EP_PHASES; p++) {
            CUDA_TRY(cudaEventCreate(&tm->begin[p][d]));
            CUDA_TRY(cudaEventCreate(&tm->end[p][d]));
        }
    }
    return 0;
}

void fast_ep_timing_destroy(FastEpTiming *tm, int N)
{
    for (int d = 0; d < N; d++) {
        cudaSetDevice(d);
        for (int p = 0; p < FAST_EP_PHASES; p++) {
            if (tm->begin[p][d]) cudaEventDestroy(tm->begin[p][d]);
            if (tm->end[p][d]) cudaEventDestroy(tm->end[p][d]);
        }
    }
    memset(tm, 0, sizeof *tm);
}

int fast_ep_timing_ms(const FastEpTiming *tm, int N, float ms[FAST_EP_PHASES])
{
    for (int p = 0; p < FAST_EP_PHASES; p++) {
        ms[p] = 0;
        for (int d = 0; d < N; d++) {
            float t;
            CUDA_TRY(cudaSetDevice(d));
            CUDA_TRY(cudaEventElapsedTime(&t, tm->begin[p][d], tm->end[p][d]));
            ms[p] = t > ms[p] ? t : ms[p];
        }
    }
    return 0;
}

void fast_ep_free(FastEp *ep)
{
    for (int d = 0; d < ep->N; d++) {
        FastEpDevice *v = &ep->dev[d];
        FastEpPlan *pl = &v->plan;
        cudaSetDevice(d);
        void *mem[] = { v->logits,    v->idx,         v->weight,     v->stat_count, v->stat_score, v->stat_dev,
                        v->idx_all,   v->weight_all,  v->send_token, v->expand_row, v->part_slot,  v->part_weight,
                        v->comb_slot, v->comb_weight, v->idx_kept,   v->slot,       v->expert_off, v->xp,
                        v->xr,        v->xe,          v->xw,         v->gu,         v->hidden,     v->ye,
                        v->yr,        v->ret,         v->shared_out };
        for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++) cudaFree(mem[i]);
        if (v->ready) cudaEventDestroy(v->ready);
        if (v->done) cudaEventDestroy(v->done);
        fast_context_free(&v->ctx);
        if (v->comm) ncclCommDestroy(v->comm);
        void *host[] = { pl->send_token, pl->recv_token,  pl->expand_row, pl->expert_off,
                         pl->part_slot,  pl->part_weight, pl->comb_slot,  pl->comb_weight };
        for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    }
    void *host[] = { ep->keep_idx,           ep->weight_host, ep->keep,    ep->slot_row,           ep->send_row,
                     ep->stats.expert_count, ep->stats.f,     ep->stats.P, ep->stats.device_tokens };
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    memset(ep, 0, sizeof *ep);
}

// ANCHOR: fast_ep_upload_moe
int fast_ep_upload_moe(FastEp *ep, FastEpMoe *out, const MoeWeights *w, const ModelConfig *cfg)
{
    memset(out, 0, sizeof *out);
    const int per = ep->E / ep->N;
    MoeWeights local = *w; /* the full router, the shared experts, E/N routed experts */
    ModelConfig local_cfg = *cfg;
    local.bias = NULL;
    local_cfg.n_routed_experts = per;
    for (int d = 0; d < ep->N; d++) {
        local.experts = w->experts + (size_t)d * per;
        if (fast_check_cuda(cudaSetDevice(d), "cudaSetDevice", __FILE__, __LINE__) ||
            fast_upload_moe(&ep->dev[d].ctx, &out->dev[d], &local, &local_cfg) ||
            (w->bias && fast_vec_upload(&out->dev[d].bias, w->bias, (size_t)ep->E))) {
            fast_ep_free_moe(ep, out);
            return -1;
        }
    }
    return 0;
}
// ANCHOR_END: fast_ep_upload_moe

void fast_ep_free_moe(FastEp *ep, FastEpMoe *w)
{
    for (int d = 0; d < ep->N; d++) {
        cudaSetDevice(d);
        fast_free_moe(&w->dev[d]);
    }
    memset(w, 0, sizeof *w);
}

// ANCHOR: fast_ep_exchange
/* Where the rows of pair (source s, destination r) lie: n elements at s's offset here (xp, ret) and r's
 * offset there (xr, yr). Exact sizes follow the host's plan: s's rows for r after its rows for earlier
 * destinations, landing after the rows of earlier sources. Fixed capacity (a host-free step): block r of
 * s's T_s rows, landing at s's global tokens. */
static void pair_rows(const FastEp *ep, const EpBatch *b, int s, int r, size_t *n, size_t *here, size_t *there)
{
    const size_t Dm = (size_t)ep->D;
    if (ep->last_host_free) {
        *n = (size_t)b->T[s] * Dm;
        *here = (size_t)r * b->T[s] * Dm;
        *there = (size_t)b->first[s] * Dm;
    } else {
        *n = (size_t)ep->dev[s].plan.n_send[r] * Dm;
        *here = (size_t)ep_seg_start(ep->dev[s].plan.n_send, r) * Dm;
        *there = (size_t)ep_seg_start(ep->dev[r].plan.n_recv, s) * Dm;
    }
}

/* One group of point-to-point transfers, one send and one receive per (source s, destination r) pair with
 * rows (pair_rows()). back = false dispatches s's rows for r (xp) into r's xr; back = true returns r's
 * partials of those rows (yr) into s's ret, at the rows they were sent from. Payloads of
 * ep_payload_type(). A pair exchanges at most one message per group, so every send meets its receive
 * whatever the posting order. */
static int exchange(FastEp *ep, const EpBatch *b, bool back)
{
    const int N = ep->N;
    const KernelDType pt = ep_payload_type(ep);
    const size_t esz = kernel_dtype_size(pt);
    const ncclDataType_t xtype = pt == KERNEL_F32 ? ncclFloat32 : ncclBfloat16;
    int rc = fast_check_nccl(ncclGroupStart(), "ncclGroupStart", __FILE__, __LINE__);
    for (int s = 0; s < N && rc == 0; s++) {
        FastEpDevice *src = &ep->dev[s];
        for (int r = 0; r < N && rc == 0; r++) {
            FastEpDevice *dst = &ep->dev[r];
            size_t n, here, there;
            pair_rows(ep, b, s, r, &n, &here, &there);
            if (n == 0) continue;
            char *from = back ? (char *)dst->yr + there * esz : (char *)src->xp + here * esz;
            char *to = back ? (char *)src->ret + here * esz : (char *)dst->xr + there * esz;
            FastEpDevice *sender = back ? dst : src, *receiver = back ? src : dst;
            rc = fast_check_nccl(ncclSend(from, n, xtype, back ? s : r, sender->comm, sender->ctx.stream), "ncclSend",
                                 __FILE__, __LINE__) ||
                         fast_check_nccl(ncclRecv(to, n, xtype, back ? r : s, receiver->comm, receiver->ctx.stream),
                                         "ncclRecv", __FILE__, __LINE__)
                     ? -1
                     : 0;
        }
    }
    const int end = fast_check_nccl(ncclGroupEnd(), "ncclGroupEnd", __FILE__, __LINE__); /* always closed */
    return rc || end ? -1 : 0;
}
// ANCHOR_END: fast_ep_exchange

/* exchange(), bracketed by ep->timing's events on every device's stream when the caller asks for timing. */
static int timed_exchange(FastEp *ep, const EpBatch *b, bool back)
{
    FastEpTiming *tm = ep->timing;
    const int phase = back ? FAST_EP_COMBINE : FAST_EP_DISPATCH;
    for (int d = 0; tm && d < ep->N; d++) {
        CUDA_TRY(cudaSetDevice(d));
        CUDA_TRY(cudaEventRecord(tm->begin[phase][d], ep->dev[d].ctx.stream));
    }
    if (exchange(ep, b, back)) return -1;
    for (int d = 0; tm && d < ep->N; d++) {
        CUDA_TRY(cudaSetDevice(d));
        CUDA_TRY(cudaEventRecord(tm->end[phase][d], ep->dev[d].ctx.stream));
    }
    return 0;
}

/* The routing statistics summed over devices, and every device's first T routing rows gathered (T is the
 * most tokens any device holds; the rows past a device's own count are ignored). */
static int reduce_stats(FastEp *ep, int T)
{
    const int N = ep->N, E = ep->E, K = ep->K;
    int rc = fast_check_nccl(ncclGroupStart(), "ncclGroupStart", __FILE__, __LINE__);
    for (int d = 0; d < N && rc == 0; d++) {
        FastEpDevice *v = &ep->dev[d];
        cudaStream_t st = v->ctx.stream;
        rc =
            fast_check_nccl(ncclAllReduce(v->stat_count, v->stat_count, (size_t)E, ncclInt32, ncclSum, v->comm, st),
                            "ncclAllReduce(counts)", __FILE__, __LINE__) ||
                    fast_check_nccl(
                        ncclAllReduce(v->stat_score, v->stat_score, (size_t)E, ncclFloat32, ncclSum, v->comm, st),
                        "ncclAllReduce(affinities)", __FILE__, __LINE__) ||
                    fast_check_nccl(ncclAllReduce(v->stat_dev, v->stat_dev, (size_t)N, ncclInt32, ncclSum, v->comm, st),
                                    "ncclAllReduce(device tokens)", __FILE__, __LINE__) ||
                    fast_check_nccl(ncclAllGather(v->idx, v->idx_all, (size_t)T * K, ncclInt32, v->comm, st),
                                    "ncclAllGather(routing)", __FILE__, __LINE__) ||
                    fast_check_nccl(ncclAllGather(v->weight, v->weight_all, (size_t)T * K, ncclFloat32, v->comm, st),
                                    "ncclAllGather(weights)", __FILE__, __LINE__)
                ? -1
                : 0;
    }
    const int end = fast_check_nccl(ncclGroupEnd(), "ncclGroupEnd", __FILE__, __LINE__);
    return rc || end ? -1 : 0;
}

/* n bytes from the host to device memory (nothing when n = 0); plain cudaMemcpy on the legacy stream,
 * ordered after the device's earlier work on its blocking stream and before its later work. */
static int upload(void *dst, const void *src, size_t n)
{
    if (n) CUDA_TRY(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice));
    return 0;
}

int fast_ep_wait_inputs(FastEp *ep, int p, cudaStream_t producer, bool all)
{
    CUDA_TRY(cudaSetDevice(p));
    CUDA_TRY(cudaEventRecord(ep->dev[p].ready, producer));
    for (int d = 0; d < ep->N; d++)
        if (all || d == p) { /* each wait queued with its stream's device current */
            CUDA_TRY(cudaSetDevice(d));
            CUDA_TRY(cudaStreamWaitEvent(ep->dev[d].ctx.stream, ep->dev[p].ready, 0));
        }
    return 0;
}

int fast_ep_signal_outputs(FastEp *ep, int d, cudaStream_t consumer, int consumer_device)
{
    CUDA_TRY(cudaSetDevice(d));
    CUDA_TRY(cudaEventRecord(ep->dev[d].done, ep->dev[d].ctx.stream));
    CUDA_TRY(cudaSetDevice(consumer_device));
    CUDA_TRY(cudaStreamWaitEvent(consumer, ep->dev[d].done, 0));
    return 0;
}

// ANCHOR: fast_ep_phases
int ep_lay_out_tokens(const FastEp *ep, const int *T, EpBatch *b)
{
    b->T = T;
    b->first[0] = 0;
    b->T_max = 0;
    for (int d = 0; d < ep->N; d++) {
        if (T[d] < 0 || T[d] > ep->max_T)
            return ds_error("fast_ep_moe_forward: %d tokens on device %d, the group was sized for 0..%d", T[d], d,
                            ep->max_T);
        b->first[d + 1] = b->first[d] + T[d];
        b->T_max = T[d] > b->T_max ? T[d] : b->T_max;
    }
    if (b->first[ep->N] == 0) return ds_error("fast_ep_moe_forward: no tokens on any device");
    return 0;
}

/* Phase 1, every device: the shared experts on its tokens, their routing (idx, weight), its routing statistics. */
static int route_on_each_device(FastEp *ep, const FastEpMoe *w, const ModelConfig *cfg, const float *const *x,
                                const EpBatch *b)
{
    const int N = ep->N, E = ep->E, K = ep->K, Dm = ep->D;
    const RouterParams p = { E,
                             K,
                             cfg->n_group,
                             cfg->topk_group,
                             (int)cfg->topk_method,
                             (int)cfg->scoring_func,
                             cfg->norm_topk_prob,
                             cfg->routed_scaling_factor };
    for (int d = 0; d < N; d++) {
        FastEpDevice *v = &ep->dev[d];
        FastScratch s = { .gu = v->gu, .hidden = v->hidden }; /* what fast_swiglu_forward() uses */
        const int T = b->T[d];
        CUDA_TRY(cudaSetDevice(d));
        if (T > 0) { /* an idle device still joins every collective */
            if (w->dev[d].shared.down.data &&
                fast_swiglu_forward(&v->ctx, v->shared_out, x[d], &w->dev[d].shared, T, &s))
                return -1;
            if (fast_gemm(&v->ctx, v->logits, x[d], KERNEL_F32, Dm, w->dev[d].router, KERNEL_F32, E, Dm, T)) return -1;
            CUDA_TRY(FAST_ROUTER(v->idx, v->weight, v->logits, v->logits, w->dev[d].bias, p, T, v->ctx.stream));
        }
        CUDA_TRY(
            ep_route_stats_v1(v->stat_count, v->stat_score, v->stat_dev, v->idx, v->logits, T, K, E, N, v->ctx.stream));
    }
    return 0;
}

/* Phases 3–4 of a large step: the host's exact-size plan (statistics and routing brought to the host,
 * fast_ep_host_plan()), uploaded to every device, whose rows to send are gathered by destination into xp. */
static int plan_on_host(FastEp *ep, const float *const *x, const EpBatch *b)
{
    const int N = ep->N, per = ep->E / N, Kd = ep->Kd, Kl = ep->Kl;
    if (fast_ep_host_plan(ep)) return -1;
    for (int d = 0; d < N; d++) {
        FastEpDevice *v = &ep->dev[d];
        const FastEpPlan *pl = &v->plan;
        const size_t sent = (size_t)ep_seg_start(pl->n_send, N), recv = (size_t)ep_seg_start(pl->n_recv, N);
        CUDA_TRY(cudaSetDevice(d));
        if (upload(v->send_token, pl->send_token, sizeof(int) * sent) ||
            upload(v->expand_row, pl->expand_row, sizeof(int) * pl->expert_off[per]) ||
            upload(v->part_slot, pl->part_slot, sizeof(int) * recv * Kl) ||
            upload(v->part_weight, pl->part_weight, sizeof(float) * recv * Kl) ||
            upload(v->comb_slot, pl->comb_slot, sizeof(int) * b->T[d] * Kd) ||
            upload(v->comb_weight, pl->comb_weight, sizeof(float) * b->T[d] * Kd))
            return -1;
        if (sent)
            CUDA_TRY(moe_gather_v2(v->xp, ep_payload_type(ep), x[d], v->send_token, (int)sent, ep->D, v->ctx.stream));
    }
    return 0;
}

// ANCHOR: fast_ep_device_plan
/* Phases 3–4 of a small step, on every device and without the host: its plan from its gathered routing
 * (ep_plan_v1; token dropping included), then its N fixed-capacity blocks of T_d rows gathered into xp,
 * padding rows zero. */
static int plan_on_devices(FastEp *ep, const float *const *x, const EpBatch *b)
{
    EpLayout L = {
        .N = ep->N, .E = ep->E, .K = ep->K, .T_max = b->T_max, .budget = ep_drop_budget(ep, b->first[ep->N])
    };
    memcpy(L.first, b->first, sizeof(int) * (size_t)(ep->N + 1));
    for (int d = 0; d < ep->N; d++) {
        FastEpDevice *v = &ep->dev[d];
        const EpDevicePlan p = { v->idx_kept,    v->slot,       v->expert_off, v->expand_row, v->part_slot,
                                 v->part_weight, v->send_token, v->comb_slot,  v->comb_weight };
        CUDA_TRY(cudaSetDevice(d));
        CUDA_TRY(ep_plan_v1(p, v->idx_all, v->weight_all, L, d, v->ctx.stream));
        CUDA_TRY(ep_gather_v1(v->xp, ep_payload_type(ep), x[d], v->send_token, ep->N * b->T[d], ep->D, v->ctx.stream));
    }
    return 0;
}
// ANCHOR_END: fast_ep_device_plan

/* Phase 6 of a large step, every device: received rows expanded to its local experts, one GEMM per
 * non-empty expert (sizes from the host's plan), then each received row's slots combined into its
 * partial p_{r,t} (yr, payload type). */
static int experts_host_plan(FastEp *ep, const FastEpMoe *w)
{
    const int N = ep->N, Dm = ep->D, I = ep->I, per = ep->E / N, Kl = ep->Kl;
    const KernelDType pt = ep_payload_type(ep);
    for (int r = 0; r < N; r++) {
        FastEpDevice *v = &ep->dev[r];
        FastContext *ctx = &v->ctx;
        const int *off = v->plan.expert_off, rows = ep_seg_start(v->plan.n_recv, N);
        const size_t esz = kernel_dtype_size(ctx->wtype);
        CUDA_TRY(cudaSetDevice(r));
        if (rows == 0) continue;
        CUDA_TRY(embed_forward_v2(v->xe, v->expand_row, v->xr, pt, off[per], Dm, ctx->stream)); /* gather */
        const void *xin = v->xe;
        if (ctx->wtype != KERNEL_F32) { /* exact when the payload came as bf16 */
            CUDA_TRY(convert_forward_v2(v->xw, ctx->wtype, v->xe, (size_t)off[per] * Dm, ctx->stream));
            xin = v->xw;
        }
        for (int j = 0; j < per; j++) { /* local expert j = global r·E/N + j */
            const int n = off[j + 1] - off[j];
            if (n && fast_gemm(ctx, v->gu + (size_t)off[j] * 2 * I, (const char *)xin + (size_t)off[j] * Dm * esz,
                               ctx->wtype, Dm, (const char *)w->dev[r].gate_up.data + (size_t)j * 2 * I * Dm * esz,
                               ctx->wtype, 2 * I, Dm, n))
                return -1;
        }
        CUDA_TRY(swiglu_forward_v2(v->hidden, ctx->wtype, v->gu, off[per], I, ctx->stream));
        for (int j = 0; j < per; j++) {
            const int n = off[j + 1] - off[j];
            if (n && fast_gemm(ctx, v->ye + (size_t)off[j] * Dm, (const char *)v->hidden + (size_t)off[j] * I * esz,
                               ctx->wtype, I, (const char *)w->dev[r].down.data + (size_t)j * Dm * I * esz, ctx->wtype,
                               Dm, I, n))
                return -1;
        }
        /* p_{r,t} = Σ_{k on r, ascending} g_{k,t} FFN_{e_k}(u_t), one row per received row */
        CUDA_TRY(
            ep_combine_v1(v->yr, pt, v->ye, KERNEL_F32, v->part_slot, v->part_weight, NULL, rows, Kl, Dm, ctx->stream));
    }
    return 0;
}

/* Phase 6 of a small step, every device, sizes bounded on the host and read on the device: the received
 * rows (one per global token, padding included) expanded to the local experts by the device plan, the
 * local experts in one grouped launch pair (moe_experts_v3 on the device offsets), and one partial per
 * global token (zero for the tokens with nothing here, which go back as padding). */
static int experts_device_plan(FastEp *ep, const FastEpMoe *w, const EpBatch *b)
{
    const int N = ep->N, per = ep->E / N, total = b->first[N], bound = total * ep->Kl;
    const KernelDType pt = ep_payload_type(ep);
    for (int r = 0; r < N; r++) {
        FastEpDevice *v = &ep->dev[r];
        FastContext *ctx = &v->ctx;
        void *xin = ctx->wtype == KERNEL_F32 ? (void *)v->xe : v->xw;
        CUDA_TRY(cudaSetDevice(r));
        CUDA_TRY(
            ep_expand_v1(xin, ctx->wtype, v->xr, pt, v->expand_row, v->expert_off, per, bound, ep->D, ctx->stream));
        CUDA_TRY(moe_experts_v3(v->ye, v->hidden, xin, v->expert_off, w->dev[r].gate_up.data, w->dev[r].down.data,
                                ctx->wtype, bound, per, ep->D, ep->I, ctx->stream));
        CUDA_TRY(ep_combine_v1(v->yr, pt, v->ye, KERNEL_F32, v->part_slot, v->part_weight, NULL, total, ep->Kl, ep->D,
                               ctx->stream));
    }
    return 0;
}

/* Phase 7 after the partials came back, every device: y_t = Σ_r p_{r,t} over t's devices ascending (each
 * widened to float32), + shared. */
static int combine_at_sources(FastEp *ep, const FastEpMoe *w, float *const *y, const EpBatch *b)
{
    for (int d = 0; d < ep->N; d++) {
        FastEpDevice *v = &ep->dev[d];
        CUDA_TRY(cudaSetDevice(d));
        if (b->T[d] > 0)
            CUDA_TRY(ep_combine_v1(y[d], KERNEL_F32, v->ret, ep_payload_type(ep), v->comb_slot, v->comb_weight,
                                   w->dev[d].shared.down.data ? v->shared_out : NULL, b->T[d], ep->Kd, ep->D,
                                   v->ctx.stream));
    }
    return 0;
}
// ANCHOR_END: fast_ep_phases

// ANCHOR: fast_ep_moe_forward
int fast_ep_moe_forward(FastEp *ep, const FastEpMoe *w, const ModelConfig *cfg, float *const *y, const float *const *x,
                        const int *T)
{
    EpBatch b;
    if (ep_lay_out_tokens(ep, T, &b)) return -1;
    memcpy(ep->last_T, T, sizeof(int) * (size_t)ep->N);
    ep->last_host_free = (long long)b.first[ep->N] * ep->K <= ep->host_free_max;
    if (route_on_each_device(ep, w, cfg, x, &b) || /* 1. shared experts, routing, statistics per device */
        reduce_stats(ep, b.T_max))                 /* 2. statistics summed, routing all-gathered (NCCL) */
        return -1;
    if (ep->last_host_free ? plan_on_devices(ep, x, &b) /* 3-4. plans on the devices, fixed-capacity blocks */
                           : plan_on_host(ep, x, &b))   /* 3-4. the host's exact-size plan, uploaded */
        return -1;
    if (timed_exchange(ep, &b, false) || /* 5. dispatch: each token's row to each of its devices */
        (ep->last_host_free ? experts_device_plan(ep, w, &b)
                            : experts_host_plan(ep, w)) || /* 6. expand, experts, partial per row */
        timed_exchange(ep, &b, true) ||                    /* 7. partials back to their sources ... */
        combine_at_sources(ep, w, y, &b))                  /*    ... widened, summed with the shared experts */
        return -1;
    return 0;
}
// ANCHOR_END: fast_ep_moe_forward
