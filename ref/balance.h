/**
 * \file balance.h
 * \brief Device-limited routing, the auxiliary balance losses and token dropping
 *        (paper §2.2.2–2.2.4; docs/semantics.md §4).
 *
 * None of this changes what a trained model computes at inference. It is how DeepSeek-V2
 * was trained to spread tokens evenly over experts and devices, written so each formula
 * can be checked against PyTorch autograd and finite differences.
 *
 * Arrays are sized for at most 1024 experts and devices (ROUTER_MAX_EXPERTS).
 *
 * Notation (paper §2.2.3): a sequence of T tokens; N_r routed experts, K_r chosen per
 * token; s_{i,t} the softmax affinity of token t for expert i; experts split into D
 * contiguous device groups E_1..E_D of N_r/D experts; M the device limit.
 *   expert level:   L_ExpBal  = α₁ Σ_i f_i P_i,   f_i = N_r/(K_r T) Σ_t 1(t chose i),   P_i = (1/T) Σ_t s_{i,t}
 *   device level:   L_DevBal  = α₂ Σ_d f'_d P'_d, f'_d = mean_{i∈E_d} f_i,             P'_d = Σ_{i∈E_d} P_i
 *   communication:  L_CommBal = α₃ Σ_d f''_d P''_d, f''_d = D/(M T) Σ_t 1(t sent to d), P''_d = Σ_{i∈E_d} P_i
 * The frequencies f come from discrete choices and carry no gradient; the gradient flows
 * through P into the affinities and, through the softmax, into the router logits.
 */
#ifndef DSV2_BALANCE_H
#define DSV2_BALANCE_H

#include <stdbool.h>

/**
 * The paper's device-limited routing for one token: pick the M devices whose best expert
 * affinity is highest, then the K experts with the highest affinity on those devices.
 * s: [E] affinities; experts [d·E/D, (d+1)·E/D) live on device d. Writes the chosen
 * experts to idx[K] (best first); ties prefer the lower index. Written independently of
 * router_select(); the tests show it equals group_limited_greedy with n_group = D,
 * topk_group = M.
 */
void device_limited_route(int *idx, const float *s, int E, int K, int D, int M);

/** The three losses of one sequence and their gradients. */
typedef struct {
    double expert; /**< L_ExpBal (with α₁) */
    double device; /**< L_DevBal (with α₂) */
    double comm;   /**< L_CommBal (with α₃) */
} BalanceLosses;

/** Which losses to compute, their weights, and the device layout. */
typedef struct {
    int E;         /**< N_r, routed experts */
    int K;         /**< K_r, experts per token */
    int D;         /**< devices (expert groups); 1 for the expert-level loss alone */
    int M;         /**< device limit M (tokens reach at most M devices) */
    double alpha1; /**< α₁, expert level */
    double alpha2; /**< α₂, device level */
    double alpha3; /**< α₃, communication */
} BalanceSpec;

/**
 * The losses of one sequence of T tokens, and (when grad is not NULL) the gradient of
 * L_ExpBal + L_DevBal + L_CommBal with respect to the router logits g.
 * scores: [T, E] softmax affinities s_{i,t} = softmax(g_t)_i; idx: [T, K] chosen experts;
 * grad: [T, E] output. Computed in double.
 */
BalanceLosses balance_losses(const float *scores, const int *idx, int T, const BalanceSpec *b, double *grad);

/**
 * The released code's expert-level loss over a batch of B sequences of T tokens
 * (`MoEGate` with `aux_loss_alpha` = α): seq_aux true averages the per-sequence loss over
 * the batch; seq_aux false computes f and P over all B·T tokens at once. scores: [B, T, E],
 * idx: [B, T, K], grad: [B, T, E] (or NULL) w.r.t. the logits. Returns the loss.
 */
double expert_balance_loss_batch(const float *scores, const int *idx, int B, int T, int E, int K, double alpha,
                                 bool seq_aux, double *grad);

/**
 * Device-level token dropping (paper §2.2.4) for one batch of T tokens (each K
 * assignments, affinity weight[t·K + k]). Device d's budget is ceil(capacity_factor ·
 * T·K / D) assignments; on a device over budget the lowest-affinity assignments are
 * dropped until it fits, never those of tokens with exempt[t] (the ~10% of sequences the
 * paper never drops; exempt may be NULL). Ties drop the later token first.
 * keep: [T, K] output, true for kept assignments. Returns the number dropped.
 */
int drop_tokens(bool *keep, const int *idx, const float *weight, const bool *exempt, int T, int K, int E, int D,
                double capacity_factor);

#endif
