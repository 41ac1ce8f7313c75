/**
 * \file ep.c
 * \brief Expert parallelism over N devices in one process: sharded upload, routing statistics reduced over
 *        devices, token dropping at dispatch, dispatch and combine through NCCL send/recv (see fast_ep.h).
 */
#include "fast_ep.h"

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
    const size_t part_slots = recv_rows * imin(K, E / N);  /* ≤ Kl local experts per received row */
    const size_t esz = kernel_dtype_size(wtype);
    /* elements and element size of each buffer, in FastEpDevice's field order (logits … shared_out) */
    const size_t n[FAST_EP_DEVICE_BUFFERS][2] = { { tokens * experts, 4 },
                                                  { tokens * top_k, 4 },
                                                  { tokens * top_k, 4 },
                                                  { experts, 4 },
                                                  { experts, 4 },
                                                  { devices, 4 },
                                                  { devices * tokens * top_k, 4 },
                                                  { devices * tokens * top_k, 4 },
                                                  { send_rows, 4 },
                                                  { expert_rows, 4 },
                                                  { part_slots, 4 },
                                                  { part_slots, 4 },
                                                  { send_rows, 4 },
                                                  { send_rows, 4 },
                                                  { send_rows * hidden, esz },
                                                  { recv_rows * hidden, esz },
                                                  { expert_rows * hidden, 4 },
                                                  { wtype == KERNEL_BF16 ? expert_rows * hidden : 0, esz },
                                                  { zmax(expert_rows * 2 * inter, tokens * 2 * shared_inter), 4 },
                                                  { zmax(expert_rows * inter, tokens * shared_inter), esz },
                                                  { (expert_rows + 1) * hidden, 4 },
                                                  { recv_rows * hidden, 4 },
                                                  { (send_rows + 1) * hidden, 4 },
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
    const size_t experts = ep->E, devices = ep->N, hidden = ep->D;
    const size_t expert_rows = (size_t)ep->exp_cap;          /* received rows expanded to local experts */
    const size_t send_rows = (size_t)ep->max_T * ep->Kd;     /* own rows sent out, each token ≤ Kd times */
    const size_t part_slots = (size_t)ep->recv_cap * ep->Kl; /* ≤ Kl local experts per received row */
    CUDA_TRY(cudaSetDevice(d));
    if (fast_context_init(&v->ctx, bf16, fast_ep_stage_elems(cfg, ep->max_T))) /* stage: the shared experts' input */
        return -1;
    pl->send_token = malloc(sizeof(int) * send_rows);
    pl->expand_row = malloc(sizeof(int) * expert_rows);
    pl->expert_off = malloc(sizeof(int) * (experts / devices + 1));
    pl->part_slot = malloc(sizeof(int) * part_slots);
    pl->part_weight = malloc(sizeof(float) * part_slots);
    pl->comb_slot = malloc(sizeof(int) * send_rows);
    pl->comb_weight = malloc(sizeof(float) * send_rows);
    if (!pl->send_token || !pl->expand_row || !pl->expert_off || !pl->part_slot || !pl->part_weight || !pl->comb_slot ||
        !pl->comb_weight)
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
                                           &v->xp,
                                           &v->xr,
                                           (void **)&v->xe,
                                           &v->xw,
                                           (void **)&v->gu,
                                           &v->hidden,
                                           (void **)&v->ye,
                                           (void **)&v->yr,
                                           (void **)&v->ret,
                                           (void **)&v->shared_out };
    size_t bytes[FAST_EP_DEVICE_BUFFERS];
    fast_ep_device_sizes(cfg, v->ctx.wtype, ep->N, ep->max_T, bytes);
    for (int i = 0; i < FAST_EP_DEVICE_BUFFERS; i++) CUDA_TRY(cudaMalloc(dst[i], bytes[i]));
    /* the zero rows that padding slots of both combines point at (never written afterwards) */
    CUDA_TRY(cudaMemset(v->ye + expert_rows * hidden, 0, sizeof(float) * hidden));
    CUDA_TRY(cudaMemset(v->ret + send_rows * hidden, 0, sizeof(float) * hidden));
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
    const size_t all = (size_t)N * max_T * K;
    ep->keep_idx = malloc(sizeof(int) * all);
    ep->weight_host = malloc(sizeof(float) * all);
    ep->keep = malloc(sizeof(bool) * all);
    ep->recv_token = malloc(sizeof(int) * (size_t)ep->recv_cap);
    ep->slot_row = malloc(sizeof(int) * (size_t)ep->recv_cap * K);
    ep->send_row = malloc(sizeof(int) * (size_t)max_T * N);
    ep->stats.expert_count = malloc(sizeof(int) * E);
    ep->stats.f = malloc(sizeof(double) * E);
    ep->stats.P = malloc(sizeof(double) * E);
    ep->stats.device_tokens = malloc(sizeof(int) * N);
    if (!ep->keep_idx || !ep->weight_host || !ep->keep || !ep->recv_token || !ep->slot_row || !ep->send_row ||
        !ep->stats.expert_count || !ep->stats.f || !ep->stats.P || !ep->stats.device_tokens) {
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
                        v->comb_slot, v->comb_weight, v->xp,         v->xr,         v->xe,         v->xw,
                        v->gu,        v->hidden,      v->ye,         v->yr,         v->ret,        v->shared_out };
        for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++) cudaFree(mem[i]);
        fast_context_free(&v->ctx);
        if (v->comm) ncclCommDestroy(v->comm);
        void *host[] = { pl->send_token,  pl->expand_row, pl->expert_off, pl->part_slot,
                         pl->part_weight, pl->comb_slot,  pl->comb_weight };
        for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    }
    void *host[] = { ep->keep_idx, ep->weight_host,        ep->keep,    ep->recv_token, ep->slot_row,
                     ep->send_row, ep->stats.expert_count, ep->stats.f, ep->stats.P,    ep->stats.device_tokens };
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

/* First row of segment j when segments of n[0], n[1], … rows lie back to back. */
static int seg_start(const int *n, int j)
{
    int at = 0;
    for (int i = 0; i < j; i++) at += n[i];
    return at;
}

/* Whether global token g has a kept expert on device r (keep_idx holds E where an assignment was dropped). */
static bool token_on(const FastEp *ep, int g, int r)
{
    const int per = ep->E / ep->N;
    for (int k = 0; k < ep->K; k++) {
        const int e = ep->keep_idx[(size_t)g * ep->K + k];
        if (e < ep->E && e / per == r) return true;
    }
    return false;
}

// ANCHOR: fast_ep_plan
/* Every device's dispatch plan from the gathered routing of the tokens in device order (device d's are
 * [first[d], first[d+1])), and the dispatch statistics. A source sends each of its tokens once to each
 * device holding one of its kept experts; a receiver expands each received row to the experts of its
 * token there, and combines those slots into one partial row. */
static void plan_dispatch(FastEp *ep, const int *first)
{
    const int N = ep->N, E = ep->E, K = ep->K, per = E / N, Kd = ep->Kd, Kl = ep->Kl;
    FastEpStats *st = &ep->stats;
    st->rows_dispatched = st->rows_sent = 0;
    st->max_devices = 0;
    for (int s = 0; s < N; s++) { /* sources: by destination, then token */
        FastEpPlan *pl = &ep->dev[s].plan;
        const int T = first[s + 1] - first[s];
        int row = 0;
        for (int r = 0; r < N; r++) {
            pl->n_send[r] = 0;
            for (int t = 0; t < T; t++)
                if (token_on(ep, first[s] + t, r)) {
                    ep->send_row[t * N + r] = row;
                    pl->send_token[row++] = t;
                    pl->n_send[r]++;
                }
            st->rows_dispatched += pl->n_send[r];
            st->rows_sent += r != s ? pl->n_send[r] : 0;
        }
        for (int t = 0; t < T; t++) { /* its partials come back to the same rows */
            int j = 0;
            for (int r = 0; r < N; r++)
                if (token_on(ep, first[s] + t, r)) {
                    pl->comb_slot[t * Kd + j] = ep->send_row[t * N + r];
                    pl->comb_weight[t * Kd + j++] = 1.0f;
                }
            st->max_devices = j > st->max_devices ? j : st->max_devices;
            for (; j < Kd; j++) {
                pl->comb_slot[t * Kd + j] = ep->max_T * Kd; /* the zero row */
                pl->comb_weight[t * Kd + j] = 0.0f;
            }
        }
    }
    for (int r = 0; r < N; r++) { /* receivers */
        FastEpPlan *pl = &ep->dev[r].plan;
        int rows = 0;
        for (int s = 0; s < N; s++) { /* received rows: by source, then token */
            pl->n_recv[s] = ep->dev[s].plan.n_send[r];
            for (int g = first[s]; g < first[s + 1]; g++)
                if (token_on(ep, g, r)) ep->recv_token[rows++] = g;
        }
        int n = 0; /* the local permutation: by local expert */
        for (int j = 0; j < per; j++) {
            pl->expert_off[j] = n;
            for (int i = 0; i < rows; i++)
                for (int k = 0; k < K; k++)
                    if (ep->keep_idx[(size_t)ep->recv_token[i] * K + k] == r * per + j) {
                        ep->slot_row[i * K + k] = n;
                        pl->expand_row[n++] = i;
                    }
        }
        pl->expert_off[per] = n;
        for (int i = 0; i < rows; i++) { /* partial: its local slots, k ascending */
            int j = 0;
            for (int k = 0; k < K; k++) {
                const size_t a = (size_t)ep->recv_token[i] * K + k;
                if (ep->keep_idx[a] < E && ep->keep_idx[a] / per == r) {
                    pl->part_slot[i * Kl + j] = ep->slot_row[i * K + k];
                    pl->part_weight[i * Kl + j++] = ep->weight_host[a];
                }
            }
            for (; j < Kl; j++) {
                pl->part_slot[i * Kl + j] = ep->exp_cap; /* the zero row */
                pl->part_weight[i * Kl + j] = 0.0f;
            }
        }
    }
    const long long xsz = (long long)kernel_dtype_size(ep->dev[0].ctx.wtype);
    st->bytes_sent = st->rows_sent * ep->D * xsz;
    st->max_token_dispatch_bytes = st->max_devices * ep->D * xsz;
    st->max_token_combine_bytes = st->max_devices * ep->D * (long long)sizeof(float);
}
// ANCHOR_END: fast_ep_plan

// ANCHOR: fast_ep_exchange
/* One group of point-to-point transfers, one send and one receive per (source s, destination r) pair with
 * rows. back = false dispatches: s's rows for r (xp, after its rows for earlier destinations) land in r's
 * xr after the rows of earlier sources. back = true returns r's partials of those rows (yr) into s's ret,
 * at the rows they were sent from. A pair exchanges at most one message per group, so every send meets
 * its receive whatever the posting order. */
static int exchange(FastEp *ep, bool back)
{
    const int N = ep->N;
    const size_t Dm = (size_t)ep->D;
    const KernelDType wt = ep->dev[0].ctx.wtype;
    const size_t esz = kernel_dtype_size(wt);
    const ncclDataType_t xtype = wt == KERNEL_F32 ? ncclFloat32 : ncclBfloat16;
    int rc = fast_check_nccl(ncclGroupStart(), "ncclGroupStart", __FILE__, __LINE__);
    for (int s = 0; s < N && rc == 0; s++) {
        FastEpDevice *src = &ep->dev[s];
        for (int r = 0; r < N && rc == 0; r++) {
            FastEpDevice *dst = &ep->dev[r];
            const size_t n = (size_t)src->plan.n_send[r] * Dm;
            const size_t here = (size_t)seg_start(src->plan.n_send, r) * Dm;  /* in s's xp and ret */
            const size_t there = (size_t)seg_start(dst->plan.n_recv, s) * Dm; /* in r's xr and yr */
            if (n == 0) continue;
            if (!back)
                rc = fast_check_nccl(
                         ncclSend((const char *)src->xp + here * esz, n, xtype, r, src->comm, src->ctx.stream),
                         "ncclSend", __FILE__, __LINE__) ||
                             fast_check_nccl(
                                 ncclRecv((char *)dst->xr + there * esz, n, xtype, s, dst->comm, dst->ctx.stream),
                                 "ncclRecv", __FILE__, __LINE__)
                         ? -1
                         : 0;
            else
                rc = fast_check_nccl(ncclSend(dst->yr + there, n, ncclFloat32, s, dst->comm, dst->ctx.stream),
                                     "ncclSend", __FILE__, __LINE__) ||
                             fast_check_nccl(ncclRecv(src->ret + here, n, ncclFloat32, r, src->comm, src->ctx.stream),
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
static int timed_exchange(FastEp *ep, bool back)
{
    FastEpTiming *tm = ep->timing;
    const int phase = back ? FAST_EP_COMBINE : FAST_EP_DISPATCH;
    for (int d = 0; tm && d < ep->N; d++) {
        CUDA_TRY(cudaSetDevice(d));
        CUDA_TRY(cudaEventRecord(tm->begin[phase][d], ep->dev[d].ctx.stream));
    }
    if (exchange(ep, back)) return -1;
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

// ANCHOR: fast_ep_phases
/** One call's tokens: device d holds T[d] of them, rows [first[d], first[d+1]) in device order. */
typedef struct {
    const int *T;                       /**< tokens per device */
    int first[FAST_EP_MAX_DEVICES + 1]; /**< first global row of each device's tokens; first[N] in all */
    int T_max;                          /**< the most tokens on one device (rows gathered per device) */
} EpBatch;

/* The layout of T[0..N) tokens, refused when a device holds more than the group was sized for or none holds any. */
static int lay_out_tokens(const FastEp *ep, const int *T, EpBatch *b)
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

/* Phase 2: the statistics summed over devices, f_i and P_i of all Σ_d T[d] tokens (every rank holds the same
 * sums), and the routing all-gathered (T_max rows per device, the first T[d] of them real). */
static int sum_statistics(FastEp *ep, const EpBatch *b)
{
    const int N = ep->N, E = ep->E, K = ep->K;
    FastEpStats *st = &ep->stats;
    if (reduce_stats(ep, b->T_max)) return -1;
    float score_sum[ROUTER_MAX_EXPERTS];
    CUDA_TRY(cudaSetDevice(0));
    CUDA_TRY(cudaMemcpy(st->expert_count, ep->dev[0].stat_count, sizeof(int) * E, cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaMemcpy(score_sum, ep->dev[0].stat_score, sizeof(float) * E, cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaMemcpy(st->device_tokens, ep->dev[0].stat_dev, sizeof(int) * N, cudaMemcpyDeviceToHost));
    st->T = b->first[N];
    for (int i = 0; i < E; i++) {
        st->f[i] = (double)E / ((double)K * st->T) * st->expert_count[i];
        st->P[i] = (double)score_sum[i] / st->T;
    }
    return 0;
}

/* Phase 3: every rank would plan from its gathered copy of the routing; in one process the host plans once,
 * from rank 0's, on the tokens in device order — token dropping first, when asked for. */
static int plan_from_gathered_routing(FastEp *ep, const EpBatch *b)
{
    const int N = ep->N, E = ep->E, K = ep->K, total = b->first[N];
    const size_t TK = (size_t)b->T_max * K;
    for (int d = 0; d < N; d++) {
        const size_t n = (size_t)b->T[d] * K, at = (size_t)b->first[d] * K;
        CUDA_TRY(cudaMemcpy(ep->keep_idx + at, ep->dev[0].idx_all + d * TK, sizeof(int) * n, cudaMemcpyDeviceToHost));
        CUDA_TRY(cudaMemcpy(ep->weight_host + at, ep->dev[0].weight_all + d * TK, sizeof(float) * n,
                            cudaMemcpyDeviceToHost));
    }
    ep->stats.dropped = 0;
    if (ep->capacity_factor > 0) {
        ep->stats.dropped =
            drop_tokens(ep->keep, ep->keep_idx, ep->weight_host, NULL, total, K, E, N, ep->capacity_factor);
        for (size_t a = 0; a < (size_t)total * K; a++)
            if (!ep->keep[a]) ep->keep_idx[a] = E; /* dropped: on no device */
    }
    plan_dispatch(ep, b->first);
    return 0;
}

/* Phase 4, every device: its plan uploaded, its rows to send gathered by destination into xp. */
static int upload_plans_and_gather(FastEp *ep, const float *const *x, const EpBatch *b)
{
    const int N = ep->N, per = ep->E / N, Kd = ep->Kd, Kl = ep->Kl;
    for (int d = 0; d < N; d++) {
        FastEpDevice *v = &ep->dev[d];
        const FastEpPlan *pl = &v->plan;
        const size_t sent = (size_t)seg_start(pl->n_send, N), recv = (size_t)seg_start(pl->n_recv, N);
        CUDA_TRY(cudaSetDevice(d));
        if (upload(v->send_token, pl->send_token, sizeof(int) * sent) ||
            upload(v->expand_row, pl->expand_row, sizeof(int) * pl->expert_off[per]) ||
            upload(v->part_slot, pl->part_slot, sizeof(int) * recv * Kl) ||
            upload(v->part_weight, pl->part_weight, sizeof(float) * recv * Kl) ||
            upload(v->comb_slot, pl->comb_slot, sizeof(int) * b->T[d] * Kd) ||
            upload(v->comb_weight, pl->comb_weight, sizeof(float) * b->T[d] * Kd))
            return -1;
        if (sent) CUDA_TRY(moe_gather_v2(v->xp, v->ctx.wtype, x[d], v->send_token, (int)sent, ep->D, v->ctx.stream));
    }
    return 0;
}

/* Phase 6, every device: received rows expanded to its local experts, one GEMM per non-empty expert, then
 * each received row's slots combined into its partial p_{r,t} (yr). */
static int run_local_experts(FastEp *ep, const FastEpMoe *w)
{
    const int N = ep->N, Dm = ep->D, I = ep->I, per = ep->E / N, Kl = ep->Kl;
    for (int r = 0; r < N; r++) {
        FastEpDevice *v = &ep->dev[r];
        FastContext *ctx = &v->ctx;
        const int *off = v->plan.expert_off, rows = seg_start(v->plan.n_recv, N);
        const size_t esz = kernel_dtype_size(ctx->wtype);
        CUDA_TRY(cudaSetDevice(r));
        if (rows == 0) continue;
        CUDA_TRY(embed_forward_v2(v->xe, v->expand_row, v->xr, ctx->wtype, off[per], Dm, ctx->stream)); /* gather */
        const void *xin = v->xe;
        if (ctx->wtype != KERNEL_F32) { /* exact: the values came as bf16 */
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
        CUDA_TRY(moe_combine_v2(v->yr, v->ye, v->part_slot, v->part_weight, NULL, rows, Kl, Dm, ctx->stream));
    }
    return 0;
}

/* Phase 7 after the partials came back, every device: y_t = Σ_r p_{r,t} over t's devices ascending, + shared. */
static int combine_at_sources(FastEp *ep, const FastEpMoe *w, float *const *y, const EpBatch *b)
{
    for (int d = 0; d < ep->N; d++) {
        FastEpDevice *v = &ep->dev[d];
        CUDA_TRY(cudaSetDevice(d));
        if (b->T[d] > 0)
            CUDA_TRY(moe_combine_v2(y[d], v->ret, v->comb_slot, v->comb_weight,
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
    if (lay_out_tokens(ep, T, &b) ||
        route_on_each_device(ep, w, cfg, x, &b) || /* 1. shared experts, routing, statistics per device */
        sum_statistics(ep, &b) ||                  /* 2. f_i, P_i over all devices; routing all-gathered */
        plan_from_gathered_routing(ep, &b) ||      /* 3. token dropping, then every device's plan */
        upload_plans_and_gather(ep, x, &b) ||      /* 4. plans uploaded, rows gathered by destination */
        timed_exchange(ep, false) ||               /* 5. dispatch: each token's row to each of its devices */
        run_local_experts(ep, w) ||                /* 6. expand, expert GEMMs, partial combine per row */
        timed_exchange(ep, true) ||                /* 7. partials back to their sources ... */
        combine_at_sources(ep, w, y, &b))          /*    ... summed with the shared experts' output */
        return -1;
    return 0;
}
// ANCHOR_END: fast_ep_moe_forward

BalanceLosses fast_ep_balance_losses(const FastEp *ep, const BalanceSpec *b)
{
    const FastEpStats *st = &ep->stats;
    const int E = ep->E, N = ep->N, per = E / N;
    BalanceLosses L = { 0, 0, 0 };
    for (int i = 0; i < E; i++) L.expert += b->alpha1 * st->f[i] * st->P[i]; /* α₁ Σ_i f_i P_i */
    for (int d = 0; d < N; d++) {
        double f_dev = 0, P_dev = 0;
        for (int i = d * per; i < (d + 1) * per; i++) {
            f_dev += st->f[i] / per; /* f'_d: mean over the device's experts */
            P_dev += st->P[i];       /* P'_d = P''_d: their sum */
        }
        const double f_comm = (double)N / ((double)b->M * st->T) * st->device_tokens[d];
        L.device += b->alpha2 * f_dev * P_dev;
        L.comm += b->alpha3 * f_comm * P_dev;
    }
    return L;
}
