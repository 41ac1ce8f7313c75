/**
 * \file balance.c
 * \brief Device-limited routing, balance losses with gradients, token dropping (see balance.h).
 */
#include "balance.h"

#include <math.h>
#include <stdlib.h>

// ANCHOR: device_limited_route
void device_limited_route(int *idx, const float *s, int E, int K, int D, int M)
{
    const int per_device = E / D;
    bool device_used[1024] = { false }, expert_taken[1024] = { false };
    for (int m = 0; m < M; m++) { /* 1. the M devices with the best top affinity */
        int best_dev = -1;
        float best = -INFINITY;
        for (int d = 0; d < D; d++) {
            if (device_used[d]) continue;
            float top = -INFINITY;
            for (int i = d * per_device; i < (d + 1) * per_device; i++) top = fmaxf(top, s[i]);
            if (best_dev < 0 || top > best) {
                best = top;
                best_dev = d;
            }
        }
        device_used[best_dev] = true;
    }
    for (int k = 0; k < K; k++) { /* 2. top-K among the experts on those devices */
        int pick = -1;
        for (int i = 0; i < E; i++) {
            if (expert_taken[i] || !device_used[i / per_device]) continue;
            if (pick < 0 || s[i] > s[pick]) pick = i;
        }
        idx[k] = pick;
        expert_taken[pick] = true;
    }
}
// ANCHOR_END: device_limited_route

// ANCHOR: balance_losses
BalanceLosses balance_losses(const float *scores, const int *idx, int T, const BalanceSpec *b, double *grad)
{
    const int E = b->E, K = b->K, D = b->D, per_device = E / D;
    double f[1024] = { 0 }, P[1024] = { 0 }, f_dev[1024] = { 0 }, P_dev[1024] = { 0 }, f_comm[1024] = { 0 };
    for (int t = 0; t < T; t++) {
        bool sent[1024] = { false };
        for (int k = 0; k < K; k++) {
            const int i = idx[t * K + k];
            f[i] += 1;
            sent[i / per_device] = true;
        }
        for (int d = 0; d < D; d++) f_comm[d] += sent[d];
        for (int i = 0; i < E; i++) P[i] += scores[(size_t)t * E + i];
    }
    for (int i = 0; i < E; i++) {
        f[i] *= (double)E / ((double)K * T);        /* f_i = N_r/(K_r T) · count_i */
        P[i] /= T;                                  /* P_i = mean_t s_{i,t} */
        f_dev[i / per_device] += f[i] / per_device; /* f'_d = mean over the device's experts */
        P_dev[i / per_device] += P[i];              /* P'_d = P''_d = sum over them */
    }
    for (int d = 0; d < D; d++) f_comm[d] *= (double)D / ((double)b->M * T);
    BalanceLosses L = { 0, 0, 0 };
    for (int i = 0; i < E; i++) L.expert += b->alpha1 * f[i] * P[i];
    for (int d = 0; d < D; d++) {
        L.device += b->alpha2 * f_dev[d] * P_dev[d];
        L.comm += b->alpha3 * f_comm[d] * P_dev[d];
    }
    if (!grad) return L;
    /* L = Σ_i c_i P_i with c_i = α₁ f_i + α₂ f'_{d(i)} + α₃ f''_{d(i)}, so ∂L/∂s_{i,t} = c_i / T;
     * through the softmax: ∂L/∂g_{j,t} = s_{j,t} (c_j − Σ_i s_{i,t} c_i) / T */
    double c[1024];
    for (int i = 0; i < E; i++)
        c[i] = b->alpha1 * f[i] + b->alpha2 * f_dev[i / per_device] + b->alpha3 * f_comm[i / per_device];
    for (int t = 0; t < T; t++) {
        const float *s = scores + (size_t)t * E;
        double mean_c = 0;
        for (int i = 0; i < E; i++) mean_c += s[i] * c[i];
        for (int j = 0; j < E; j++) grad[(size_t)t * E + j] = s[j] * (c[j] - mean_c) / T;
    }
    return L;
}
// ANCHOR_END: balance_losses

double expert_balance_loss_batch(const float *scores, const int *idx, int B, int T, int E, int K, double alpha,
                                 bool seq_aux, double *grad)
{
    const BalanceSpec spec = { .E = E, .K = K, .D = 1, .M = 1, .alpha1 = alpha };
    if (!seq_aux) /* one "sequence" of all B·T tokens */
        return balance_losses(scores, idx, B * T, &spec, grad).expert;
    double loss = 0;
    for (int b = 0; b < B; b++) { /* mean over sequences of the per-sequence loss */
        double *g = grad ? grad + (size_t)b * T * E : NULL;
        loss += balance_losses(scores + (size_t)b * T * E, idx + (size_t)b * T * K, T, &spec, g).expert / B;
        if (g)
            for (size_t i = 0; i < (size_t)T * E; i++) g[i] /= B;
    }
    return loss;
}

// ANCHOR: drop_tokens
int drop_tokens(bool *keep, const int *idx, const float *weight, const bool *exempt, int T, int K, int E, int D,
                double capacity_factor)
{
    const int per_device = E / D, n = T * K;
    const int budget = (int)ceil(capacity_factor * n / D);
    int dropped = 0;
    for (int a = 0; a < n; a++) keep[a] = true;
    for (int d = 0; d < D; d++) {
        int load = 0;
        for (int a = 0; a < n; a++) load += idx[a] / per_device == d;
        while (load > budget) { /* drop the lowest-affinity droppable assignment */
            int worst = -1;
            for (int a = 0; a < n; a++) {
                if (!keep[a] || idx[a] / per_device != d || (exempt && exempt[a / K])) continue;
                if (worst < 0 || weight[a] <= weight[worst]) worst = a;
            }
            if (worst < 0) break; /* only exempt tokens left */
            keep[worst] = false;
            load--;
            dropped++;
        }
    }
    return dropped;
}
// ANCHOR_END: drop_tokens
