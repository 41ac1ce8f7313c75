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
    if (r == ncclSuccess)
        return 0;
    return ds_error("%s failed: %s at %s:%d", call, ncclGetErrorString(r), file, line);
}

static int imin(int a, int b) { return a < b ? a : b; }
static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

int fast_ep_device_limit(const ModelConfig *cfg, int N)
{
    const int G = cfg->n_group;
    int m = imin(cfg->num_experts_per_tok, N);
    if (cfg->topk_method != TOPK_GREEDY && G > 1) {              /* topk_group groups, each on `span` devices */
        const int span = G % N == 0 ? 1 : N % G == 0 ? N / G : N;
        m = imin(m, cfg->topk_group * span);
    }
    return m;
}

/* cudaMalloc of n elements of size esz into *p (at least one element), recording the error. */
static int dev_alloc(void *p, size_t n, size_t esz)
{
    CUDA_TRY(cudaMalloc((void **)p, (n ? n : 1) * esz));
    return 0;
}

/* Device d's context and working memory. */
static int init_device(FastEp *ep, int d, bool bf16)
{
    FastEpDevice *v = &ep->dev[d];
    const size_t T = (size_t)ep->max_T, K = ep->K, E = ep->E, N = ep->N, D = ep->D, I = ep->I, Is = ep->I_s;
    const size_t R = (size_t)ep->recv_cap;
    CUDA_TRY(cudaSetDevice(d));
    if (fast_context_init(&v->ctx, bf16, T * D))                 /* stage: the shared experts' GEMM input */
        return -1;
    const size_t esz = kernel_dtype_size(v->ctx.wtype);
    v->offsets_host = malloc(sizeof(int) * (E + 2));
    v->counts_host = malloc(sizeof(int) * N * E);
    if (!v->offsets_host || !v->counts_host)
        return ds_error("fast_ep_init: out of host memory");
    if (dev_alloc(&v->logits, T * E, 4) || dev_alloc(&v->idx, T * K, 4) || dev_alloc(&v->weight, T * K, 4) ||
        dev_alloc(&v->counts, E + 1, 4) || dev_alloc(&v->offsets, E + 2, 4) || dev_alloc(&v->slot_row, T * K, 4) ||
        dev_alloc(&v->row_token, T * K, 4) || dev_alloc(&v->counts_all, N * E, 4) ||
        dev_alloc(&v->stat_count, E, 4) || dev_alloc(&v->stat_score, E, 4) || dev_alloc(&v->stat_dev, N, 4) ||
        dev_alloc(&v->idx_all, N * T * K, 4) || dev_alloc(&v->weight_all, N * T * K, 4) ||
        dev_alloc(&v->xp, T * K * D, esz) || dev_alloc(&v->xr, R * D, esz) ||
        dev_alloc(&v->gu, zmax(R * 2 * I, T * 2 * Is), 4) || dev_alloc(&v->hidden, zmax(R * I, T * Is), esz) ||
        dev_alloc(&v->yr, R * D, 4) || dev_alloc(&v->expert_out, T * K * D, 4) ||
        dev_alloc(&v->shared_out, T * D, 4))
        return -1;
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
    if (present < N)
        return ds_error("fast_ep_init: %d devices asked for, %d present", N, present);
    ep->N = N;
    ep->E = E;
    ep->K = K;
    ep->D = cfg->hidden_size;
    ep->I = cfg->moe_intermediate_size;
    ep->I_s = cfg->n_shared_experts * cfg->moe_intermediate_size;
    ep->max_T = max_T;
    ep->recv_cap = N * max_T * imin(K, E / N);   /* a token sends device d at most one row per expert there */
    const size_t all = (size_t)N * max_T * K;
    ep->keep_idx = malloc(sizeof(int) * all);
    ep->weight_host = malloc(sizeof(float) * all);
    ep->keep = malloc(sizeof(bool) * all);
    ep->stats.expert_count = malloc(sizeof(int) * E);
    ep->stats.f = malloc(sizeof(double) * E);
    ep->stats.P = malloc(sizeof(double) * E);
    ep->stats.device_tokens = malloc(sizeof(int) * N);
    if (!ep->keep_idx || !ep->weight_host || !ep->keep || !ep->stats.expert_count || !ep->stats.f || !ep->stats.P ||
        !ep->stats.device_tokens) {
        fast_ep_free(ep);
        return ds_error("fast_ep_init: out of host memory");
    }
    /* one communicator per device, rank d on device d */
    ncclComm_t comms[FAST_EP_MAX_DEVICES];
    int devices[FAST_EP_MAX_DEVICES];
    for (int d = 0; d < N; d++)
        devices[d] = d;
    if (fast_check_nccl(ncclCommInitAll(comms, N, devices), "ncclCommInitAll", __FILE__, __LINE__)) {
        fast_ep_free(ep);
        return -1;
    }
    for (int d = 0; d < N; d++)
        ep->dev[d].comm = comms[d];
    for (int d = 0; d < N; d++)
        if (init_device(ep, d, bf16)) {
            fast_ep_free(ep);
            return -1;
        }
    return 0;
}
// ANCHOR_END: fast_ep_init

void fast_ep_free(FastEp *ep)
{
    for (int d = 0; d < ep->N; d++) {
        FastEpDevice *v = &ep->dev[d];
        cudaSetDevice(d);
        void *mem[] = {v->logits, v->idx, v->weight, v->counts, v->offsets, v->slot_row, v->row_token,
                       v->counts_all, v->stat_count, v->stat_score, v->stat_dev, v->idx_all, v->weight_all, v->xp,
                       v->xr, v->gu, v->hidden, v->yr, v->expert_out, v->shared_out};
        for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++)
            cudaFree(mem[i]);
        fast_context_free(&v->ctx);
        if (v->comm)
            ncclCommDestroy(v->comm);
        free(v->offsets_host);
        free(v->counts_host);
    }
    free(ep->keep_idx);
    free(ep->weight_host);
    free(ep->keep);
    free(ep->stats.expert_count);
    free(ep->stats.f);
    free(ep->stats.P);
    free(ep->stats.device_tokens);
    memset(ep, 0, sizeof *ep);
}

// ANCHOR: fast_ep_upload_moe
int fast_ep_upload_moe(FastEp *ep, FastEpMoe *out, const MoeWeights *w, const ModelConfig *cfg)
{
    memset(out, 0, sizeof *out);
    const int per = ep->E / ep->N;
    MoeWeights local = *w;                   /* the full router, the shared experts, E/N routed experts */
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

/* Where the rows of source s for expert e start on e's device: that device's earlier experts first, then
 * earlier sources for e (so each expert's rows are contiguous, in global token order). */
static size_t recv_row(const FastEp *ep, int s, int e)
{
    const int per = ep->E / ep->N, r = e / per;
    const int *C = ep->dev[r].counts_host;                        /* [N, E] as device r received them */
    size_t at = 0;
    for (int e2 = r * per; e2 < e; e2++)
        for (int s2 = 0; s2 < ep->N; s2++)
            at += (size_t)C[s2 * ep->E + e2];
    for (int s2 = 0; s2 < s; s2++)
        at += (size_t)C[s2 * ep->E + e];
    return at;
}

// ANCHOR: fast_ep_exchange
/* One group of point-to-point transfers between every pair of devices, one per (source, expert) segment.
 * back = false dispatches: source s sends its permuted inputs of expert e (rows offsets[e]..) to e's device,
 * which receives them at recv_row(s, e) of xr. back = true returns the expert outputs the same way (yr to
 * expert_out). The j-th send from a to b pairs with the j-th receive of b from a: both are posted in
 * expert order. Empty segments are not posted (both sides know the counts). */
static int exchange(FastEp *ep, bool back, long long *rows_sent)
{
    const int N = ep->N, E = ep->E, per = E / N, Dm = ep->D;
    const KernelDType wt = ep->dev[0].ctx.wtype;
    const size_t esz = kernel_dtype_size(wt);
    const ncclDataType_t xtype = wt == KERNEL_F32 ? ncclFloat32 : ncclBfloat16;
    int rc = fast_check_nccl(ncclGroupStart(), "ncclGroupStart", __FILE__, __LINE__);
    for (int s = 0; s < N && rc == 0; s++) {
        FastEpDevice *src = &ep->dev[s];
        for (int e = 0; e < E && rc == 0; e++) {
            const int r = e / per;
            FastEpDevice *dst = &ep->dev[r];
            const size_t n_send = (size_t)(src->offsets_host[e + 1] - src->offsets_host[e]);   /* s's own count */
            const size_t n_recv = (size_t)dst->counts_host[s * E + e];                           /* as r received it */
            const size_t here = (size_t)src->offsets_host[e], there = recv_row(ep, s, e);
            if (!back) {
                if (n_send)
                    rc = fast_check_nccl(ncclSend((const char *)src->xp + here * Dm * esz, n_send * Dm, xtype, r,
                                                  src->comm, src->ctx.stream), "ncclSend", __FILE__, __LINE__);
                if (rc == 0 && n_recv)
                    rc = fast_check_nccl(ncclRecv((char *)dst->xr + there * Dm * esz, n_recv * Dm, xtype, s,
                                                  dst->comm, dst->ctx.stream), "ncclRecv", __FILE__, __LINE__);
                if (rows_sent && r != s)
                    *rows_sent += (long long)n_send;
            } else {
                if (n_recv)
                    rc = fast_check_nccl(ncclSend(dst->yr + there * Dm, n_recv * Dm, ncclFloat32, s, dst->comm,
                                                  dst->ctx.stream), "ncclSend", __FILE__, __LINE__);
                if (rc == 0 && n_send)
                    rc = fast_check_nccl(ncclRecv(src->expert_out + here * Dm, n_send * Dm, ncclFloat32, r, src->comm,
                                                  src->ctx.stream), "ncclRecv", __FILE__, __LINE__);
            }
        }
    }
    const int end = fast_check_nccl(ncclGroupEnd(), "ncclGroupEnd", __FILE__, __LINE__);   /* always closed */
    return rc || end ? -1 : 0;
}
// ANCHOR_END: fast_ep_exchange

/* The routing statistics summed over devices (and, when dropping, every device's first T routing rows
 * gathered: T is the most tokens any device holds, the others' rows past their own count are ignored). */
static int reduce_stats(FastEp *ep, int T, bool gather)
{
    const int N = ep->N, E = ep->E, K = ep->K;
    int rc = fast_check_nccl(ncclGroupStart(), "ncclGroupStart", __FILE__, __LINE__);
    for (int d = 0; d < N && rc == 0; d++) {
        FastEpDevice *v = &ep->dev[d];
        cudaStream_t st = v->ctx.stream;
        rc = fast_check_nccl(ncclAllReduce(v->stat_count, v->stat_count, (size_t)E, ncclInt32, ncclSum, v->comm, st),
                             "ncclAllReduce(counts)", __FILE__, __LINE__) ||
             fast_check_nccl(ncclAllReduce(v->stat_score, v->stat_score, (size_t)E, ncclFloat32, ncclSum, v->comm,
                                           st), "ncclAllReduce(affinities)", __FILE__, __LINE__) ||
             fast_check_nccl(ncclAllReduce(v->stat_dev, v->stat_dev, (size_t)N, ncclInt32, ncclSum, v->comm, st),
                             "ncclAllReduce(device tokens)", __FILE__, __LINE__) ||
             (gather && (fast_check_nccl(ncclAllGather(v->idx, v->idx_all, (size_t)T * K, ncclInt32, v->comm, st),
                                         "ncclAllGather(routing)", __FILE__, __LINE__) ||
                         fast_check_nccl(ncclAllGather(v->weight, v->weight_all, (size_t)T * K, ncclFloat32, v->comm,
                                                       st), "ncclAllGather(weights)", __FILE__, __LINE__)))
                 ? -1
                 : 0;
    }
    const int end = fast_check_nccl(ncclGroupEnd(), "ncclGroupEnd", __FILE__, __LINE__);
    return rc || end ? -1 : 0;
}

// ANCHOR: fast_ep_moe_forward
int fast_ep_moe_forward(FastEp *ep, const FastEpMoe *w, const ModelConfig *cfg, float *const *y,
                        const float *const *x, const int *T)
{
    const int N = ep->N, E = ep->E, K = ep->K, Dm = ep->D, I = ep->I, per = E / N;
    const bool drop = ep->capacity_factor > 0;
    int first[FAST_EP_MAX_DEVICES + 1] = {0}, T_max = 0;          /* device d's tokens are [first[d], first[d+1]) */
    for (int d = 0; d < N; d++) {
        if (T[d] < 0 || T[d] > ep->max_T)
            return ds_error("fast_ep_moe_forward: %d tokens on device %d, the group was sized for 0..%d", T[d], d,
                            ep->max_T);
        first[d + 1] = first[d] + T[d];
        T_max = T[d] > T_max ? T[d] : T_max;
    }
    if (first[N] == 0)
        return ds_error("fast_ep_moe_forward: no tokens on any device");
    const RouterParams p = {E, K, cfg->n_group, cfg->topk_group, (int)cfg->topk_method, (int)cfg->scoring_func,
                            cfg->norm_topk_prob, cfg->routed_scaling_factor};
    FastEpStats *st = &ep->stats;

    /* 1. every device: shared experts on its tokens, route them, count its routing statistics */
    for (int d = 0; d < N; d++) {
        FastEpDevice *v = &ep->dev[d];
        FastScratch s = {.gu = v->gu, .hidden = v->hidden};      /* what fast_swiglu_forward() uses */
        CUDA_TRY(cudaSetDevice(d));
        if (T[d] > 0) {                                            /* an idle device still joins every collective */
            if (w->dev[d].shared.down.data &&
                fast_swiglu_forward(&v->ctx, v->shared_out, x[d], &w->dev[d].shared, T[d], &s))
                return -1;
            if (fast_gemm(&v->ctx, v->logits, x[d], KERNEL_F32, Dm, w->dev[d].router, KERNEL_F32, E, Dm, T[d]))
                return -1;
            CUDA_TRY(FAST_ROUTER(v->idx, v->weight, v->logits, v->logits, w->dev[d].bias, p, T[d], v->ctx.stream));
        }
        CUDA_TRY(ep_route_stats_v1(v->stat_count, v->stat_score, v->stat_dev, v->idx, v->logits, T[d], K, E, N,
                                   v->ctx.stream));
    }

    /* 2. statistics summed over devices: f_i, P_i of all Σ_d T[d] tokens (every rank holds the same sums) */
    if (reduce_stats(ep, T_max, drop))
        return -1;
    float score_sum[ROUTER_MAX_EXPERTS];
    CUDA_TRY(cudaSetDevice(0));
    CUDA_TRY(cudaMemcpy(st->expert_count, ep->dev[0].stat_count, sizeof(int) * E, cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaMemcpy(score_sum, ep->dev[0].stat_score, sizeof(float) * E, cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaMemcpy(st->device_tokens, ep->dev[0].stat_dev, sizeof(int) * N, cudaMemcpyDeviceToHost));
    st->T = first[N];
    for (int i = 0; i < E; i++) {
        st->f[i] = (double)E / ((double)K * st->T) * st->expert_count[i];
        st->P[i] = (double)score_sum[i] / st->T;
    }

    /* 3. token dropping: the rule needs every token's routing, all-gathered above (T_max rows per device,
     *    the first T[d] of them real); each rank would decide the same mask from it — in one process the
     *    host decides once, from rank 0's copy, on the tokens in device order */
    st->dropped = 0;
    if (drop) {
        const size_t TK = (size_t)T_max * K;
        for (int d = 0; d < N; d++) {
            const size_t n = (size_t)T[d] * K, at = (size_t)first[d] * K;
            CUDA_TRY(cudaMemcpy(ep->keep_idx + at, ep->dev[0].idx_all + d * TK, sizeof(int) * n,
                                cudaMemcpyDeviceToHost));
            CUDA_TRY(cudaMemcpy(ep->weight_host + at, ep->dev[0].weight_all + d * TK, sizeof(float) * n,
                                cudaMemcpyDeviceToHost));
        }
        st->dropped = drop_tokens(ep->keep, ep->keep_idx, ep->weight_host, NULL, first[N], K, E, N,
                                  ep->capacity_factor);
        for (size_t a = 0; a < (size_t)first[N] * K; a++)
            if (!ep->keep[a])
                ep->keep_idx[a] = E;                              /* the dropped bucket, after every expert */
        for (int d = 0; d < N; d++) {
            CUDA_TRY(cudaSetDevice(d));
            CUDA_TRY(cudaMemcpy(ep->dev[d].idx, ep->keep_idx + (size_t)first[d] * K, sizeof(int) * T[d] * K,
                                cudaMemcpyHostToDevice));
        }
    }

    /* 4. permute by expert (dropped rows last), exchange the per-expert counts */
    int rc = 0;
    for (int d = 0; d < N; d++) {
        FastEpDevice *v = &ep->dev[d];
        CUDA_TRY(cudaSetDevice(d));
        CUDA_TRY(moe_permute_v2(v->counts, v->offsets, v->slot_row, v->row_token, v->idx, T[d], K, E + 1,
                                v->ctx.stream));
    }
    rc = fast_check_nccl(ncclGroupStart(), "ncclGroupStart", __FILE__, __LINE__);
    for (int d = 0; d < N && rc == 0; d++)
        rc = fast_check_nccl(ncclAllGather(ep->dev[d].counts, ep->dev[d].counts_all, (size_t)E, ncclInt32,
                                           ep->dev[d].comm, ep->dev[d].ctx.stream), "ncclAllGather(counts)", __FILE__,
                             __LINE__);
    if (fast_check_nccl(ncclGroupEnd(), "ncclGroupEnd", __FILE__, __LINE__) || rc)
        return -1;
    for (int d = 0; d < N; d++) {
        FastEpDevice *v = &ep->dev[d];
        CUDA_TRY(cudaSetDevice(d));
        CUDA_TRY(cudaMemcpyAsync(v->offsets_host, v->offsets, sizeof(int) * (E + 2), cudaMemcpyDeviceToHost,
                                 v->ctx.stream));
        CUDA_TRY(cudaMemcpyAsync(v->counts_host, v->counts_all, sizeof(int) * N * E, cudaMemcpyDeviceToHost,
                                 v->ctx.stream));
        CUDA_TRY(cudaStreamSynchronize(v->ctx.stream));
        if (!drop)
            CUDA_TRY(cudaMemcpy(ep->keep_idx + (size_t)first[d] * K, v->idx, sizeof(int) * T[d] * K,
                                cudaMemcpyDeviceToHost));
        if (v->offsets_host[E] > 0)                                /* kept rows only */
            CUDA_TRY(moe_gather_v2(v->xp, v->ctx.wtype, x[d], v->row_token, v->offsets_host[E], Dm, v->ctx.stream));
    }

    /* 5. dispatch: each (source, expert) segment to the expert's device, all in one group */
    st->rows_sent = 0;
    if (exchange(ep, false, &st->rows_sent))
        return -1;
    st->bytes_sent = st->rows_sent * Dm * (long long)kernel_dtype_size(ep->dev[0].ctx.wtype);

    /* 6. every device: one GEMM per non-empty local expert on its contiguous rows */
    for (int r = 0; r < N; r++) {
        FastEpDevice *v = &ep->dev[r];
        FastContext *ctx = &v->ctx;
        const size_t esz = kernel_dtype_size(ctx->wtype);
        CUDA_TRY(cudaSetDevice(r));
        size_t row0[ROUTER_MAX_EXPERTS + 1];              /* first received row of each local expert */
        row0[0] = 0;
        for (int j = 0; j < per; j++) {                         /* local expert j = global r·per + j */
            size_t n = 0;
            for (int s = 0; s < N; s++)
                n += (size_t)v->counts_host[s * E + r * per + j];
            row0[j + 1] = row0[j] + n;
        }
        const int rows = (int)row0[per];
        for (int j = 0; j < per; j++) {
            const int n = (int)(row0[j + 1] - row0[j]);
            if (n && fast_gemm(ctx, v->gu + row0[j] * 2 * I, (const char *)v->xr + row0[j] * Dm * esz, ctx->wtype,
                               Dm, (const char *)w->dev[r].gate_up.data + (size_t)j * 2 * I * Dm * esz, ctx->wtype,
                               2 * I, Dm, n))
                return -1;
        }
        if (rows)
            CUDA_TRY(swiglu_forward_v2(v->hidden, ctx->wtype, v->gu, rows, I, ctx->stream));
        for (int j = 0; j < per; j++) {
            const int n = (int)(row0[j + 1] - row0[j]);
            if (n && fast_gemm(ctx, v->yr + row0[j] * Dm, (const char *)v->hidden + row0[j] * I * esz, ctx->wtype,
                               I, (const char *)w->dev[r].down.data + (size_t)j * Dm * I * esz, ctx->wtype, Dm, I, n))
                return -1;
        }
    }

    /* 7. results back to their sources, then y_t = Σ_k g_{k,t} FFN_{e_k}(x_t) in slot order + shared */
    if (exchange(ep, true, NULL))
        return -1;
    for (int d = 0; d < N; d++) {
        FastEpDevice *v = &ep->dev[d];
        const int kept = v->offsets_host[E], all = v->offsets_host[E + 1];
        CUDA_TRY(cudaSetDevice(d));
        if (all > kept)                                            /* a dropped assignment adds g · 0 */
            CUDA_TRY(cudaMemsetAsync(v->expert_out + (size_t)kept * Dm, 0, sizeof(float) * (all - kept) * Dm,
                                     v->ctx.stream));
        if (T[d] > 0)
            CUDA_TRY(moe_combine_v2(y[d], v->expert_out, v->slot_row, v->weight,
                                    w->dev[d].shared.down.data ? v->shared_out : NULL, T[d], K, Dm, v->ctx.stream));
    }

    /* how many devices each token's kept assignments reached */
    st->max_devices = 0;
    for (int t = 0; t < first[N]; t++) {
        bool on[FAST_EP_MAX_DEVICES] = {false};
        int n = 0;
        for (int k = 0; k < K; k++) {
            const int e = ep->keep_idx[(size_t)t * K + k];
            if (e < E && !on[e / per]) {
                on[e / per] = true;
                n++;
            }
        }
        if (n > st->max_devices)
            st->max_devices = n;
    }
    return rc;
}
// ANCHOR_END: fast_ep_moe_forward

BalanceLosses fast_ep_balance_losses(const FastEp *ep, const BalanceSpec *b)
{
    const FastEpStats *st = &ep->stats;
    const int E = ep->E, N = ep->N, per = E / N;
    BalanceLosses L = {0, 0, 0};
    for (int i = 0; i < E; i++)
        L.expert += b->alpha1 * st->f[i] * st->P[i];                /* α₁ Σ_i f_i P_i */
    for (int d = 0; d < N; d++) {
        double f_dev = 0, P_dev = 0;
        for (int i = d * per; i < (d + 1) * per; i++) {
            f_dev += st->f[i] / per;                                /* f'_d: mean over the device's experts */
            P_dev += st->P[i];                                      /* P'_d = P''_d: their sum */
        }
        const double f_comm = (double)N / ((double)b->M * st->T) * st->device_tokens[d];
        L.device += b->alpha2 * f_dev * P_dev;
        L.comm += b->alpha3 * f_comm * P_dev;
    }
    return L;
}
