/**
 * \file ep_plan.c
 * \brief Expert parallelism's plan derived on the host (fast_ep.h): the exact-size plan of large steps,
 *        the statistics of every step, and the independent derivation the device plan is held to.
 */
#include "ep_internal.h"

#include "error.h"
#include "router.h"

#include <math.h>
#include <stdlib.h>

int ep_drop_budget(const FastEp *ep, int total)
{
    const int n = total * ep->K; /* as drop_tokens computes it */
    return ep->capacity_factor > 0 ? (int)ceil(ep->capacity_factor * n / ep->N) : -1;
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
 * token there, and combines those slots into one partial row. Exact sizes: no padding rows. */
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
            for (; j < Kd; j++) { /* padding: skipped by the combine */
                pl->comb_slot[t * Kd + j] = -1;
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
                if (token_on(ep, g, r)) pl->recv_token[rows++] = g;
        }
        int n = 0; /* the local permutation: by local expert */
        for (int j = 0; j < per; j++) {
            pl->expert_off[j] = n;
            for (int i = 0; i < rows; i++)
                for (int k = 0; k < K; k++)
                    if (ep->keep_idx[(size_t)pl->recv_token[i] * K + k] == r * per + j) {
                        ep->slot_row[i * K + k] = n;
                        pl->expand_row[n++] = i;
                    }
        }
        pl->expert_off[per] = n;
        for (int i = 0; i < rows; i++) { /* partial: its local slots, k ascending */
            int j = 0;
            for (int k = 0; k < K; k++) {
                const size_t a = (size_t)pl->recv_token[i] * K + k;
                if (ep->keep_idx[a] < E && ep->keep_idx[a] / per == r) {
                    pl->part_slot[i * Kl + j] = ep->slot_row[i * K + k];
                    pl->part_weight[i * Kl + j++] = ep->weight_host[a];
                }
            }
            for (; j < Kl; j++) {
                pl->part_slot[i * Kl + j] = -1;
                pl->part_weight[i * Kl + j] = 0.0f;
            }
        }
    }
    const long long xsz = (long long)kernel_dtype_size(ep_payload_type(ep));
    st->bytes_sent = st->rows_sent * ep->D * xsz;
    st->max_token_dispatch_bytes = st->max_devices * ep->D * xsz;
    st->max_token_combine_bytes = st->max_devices * ep->D * xsz;
}
// ANCHOR_END: fast_ep_plan

int fast_ep_host_plan(FastEp *ep)
{
    const int N = ep->N, E = ep->E, K = ep->K;
    EpBatch b;
    if (ep_lay_out_tokens(ep, ep->last_T, &b)) return -1;
    const int total = b.first[N];
    const size_t TK = (size_t)b.T_max * K;
    FastEpStats *st = &ep->stats;
    float score_sum[ROUTER_MAX_EXPERTS];
    CUDA_TRY(cudaSetDevice(0)); /* device 0's copies of the sums and the gathered routing */
    CUDA_TRY(cudaMemcpy(st->expert_count, ep->dev[0].stat_count, sizeof(int) * E, cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaMemcpy(score_sum, ep->dev[0].stat_score, sizeof(float) * E, cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaMemcpy(st->device_tokens, ep->dev[0].stat_dev, sizeof(int) * N, cudaMemcpyDeviceToHost));
    st->T = total;
    for (int i = 0; i < E; i++) {
        st->f[i] = (double)E / ((double)K * total) * st->expert_count[i];
        st->P[i] = (double)score_sum[i] / total;
    }
    for (int d = 0; d < N; d++) {
        const size_t n = (size_t)b.T[d] * K, at = (size_t)b.first[d] * K;
        CUDA_TRY(cudaMemcpy(ep->keep_idx + at, ep->dev[0].idx_all + d * TK, sizeof(int) * n, cudaMemcpyDeviceToHost));
        CUDA_TRY(cudaMemcpy(ep->weight_host + at, ep->dev[0].weight_all + d * TK, sizeof(float) * n,
                            cudaMemcpyDeviceToHost));
    }
    st->dropped = 0;
    if (ep->capacity_factor > 0) {
        st->dropped = drop_tokens(ep->keep, ep->keep_idx, ep->weight_host, NULL, total, K, E, N, ep->capacity_factor);
        for (size_t a = 0; a < (size_t)total * K; a++)
            if (!ep->keep[a]) ep->keep_idx[a] = E; /* dropped: on no device */
    }
    plan_dispatch(ep, b.first);
    return 0;
}

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
