/**
 * \file fast_ep.h
 * \brief Expert parallelism on N devices in one process: routed experts sharded, tokens exchanged over NCCL
 *        (paper §2.2.2–2.2.4, §3.2; the reference counterpart is ref/ep.h, hence this name).
 *
 * Device d holds routed experts [d·E/N, (d+1)·E/N) and a replica of the router and the shared experts;
 * each device brings its own T tokens (data-parallel). One MoE layer, per device:
 *   1. route its tokens (the model's router; with n_group a multiple of N, a token's experts lie in at
 *      most topk_group groups, so on at most fast_ep_device_limit() devices);
 *   2. routing statistics (per-expert counts, affinity sums, tokens per device) summed over devices with
 *      ncclAllReduce; with a capacity factor, the routing all-gathered and token dropping decided;
 *   3. permute its (token, slot) pairs by expert and exchange the per-expert counts (ncclAllGather);
 *   4. dispatch: one ncclSend per (destination, expert) segment and one ncclRecv per (source, local expert),
 *      in one ncclGroupStart/End, so each local expert's rows arrive contiguous, in global token order;
 *   5. one GEMM per non-empty local expert (fused gate/up, SwiGLU, down);
 *   6. results sent back the same way; combine in slot order and add the replicated shared experts.
 * In float32 mode the result equals ref/moe.h's moe_forward on the concatenated tokens (a dropped
 * assignment contributes nothing, as in ref/ep.h's moe_forward_ep with drop_tokens' keep mask).
 */
#ifndef DSV2_FAST_EP_H
#define DSV2_FAST_EP_H

#include "balance.h"
#include "fast.h"

#include <nccl.h>

#define FAST_EP_MAX_DEVICES 8 /**< devices of one expert-parallel group */

/** Records "call failed: text at file:line" when r is not ncclSuccess. \return 0 or −1. */
int fast_check_nccl(ncclResult_t r, const char *call, const char *file, int line);

/** One device of an expert-parallel group: its context, communicator and working memory. */
typedef struct {
    FastContext ctx;     /**< stream, cuBLAS handle, precision (bound to this device) */
    ncclComm_t comm;     /**< rank d of the clique */
    float *logits;       /**< [max_T, E] router logits, then affinities s_{i,t} */
    int *idx;            /**< [max_T, K] chosen experts; E marks a dropped assignment */
    float *weight;       /**< [max_T, K] their weights */
    int *counts;         /**< [E + 1] kept rows per expert (+ the dropped bucket) */
    int *offsets;        /**< [E + 2] first permuted row of each expert (+ bucket) */
    int *slot_row;       /**< [max_T·K] permuted row of (t, k) */
    int *row_token;      /**< [max_T·K] token of each permuted row */
    int *counts_all;     /**< [N, E] every device's per-expert counts (ncclAllGather of counts) */
    int *stat_count;     /**< [E] assignments per expert, then summed over devices */
    float *stat_score;   /**< [E] Σ_t s_{i,t}, then summed over devices */
    int *stat_dev;       /**< [N] tokens reaching each device, then summed over devices */
    int *idx_all;        /**< [N·max_T, K] all-gathered routing (token dropping) */
    float *weight_all;   /**< [N·max_T, K] all-gathered weights (token dropping) */
    void *xp;            /**< [max_T·K, D] permuted inputs to send (wtype) */
    void *xr;            /**< [recv_cap, D] received rows, by local expert then global token (wtype) */
    float *gu;           /**< [max(recv_cap·2I, max_T·2I_s)] fused gate/up outputs */
    void *hidden;        /**< [max(recv_cap·I, max_T·I_s)] SwiGLU outputs (wtype) */
    float *yr;           /**< [recv_cap, D] local experts' outputs, sent back */
    float *expert_out;   /**< [max_T·K, D] outputs of this device's assignments, in permuted order */
    float *shared_out;   /**< [max_T, D] shared experts */
    int *offsets_host;   /**< [E + 2] offsets on the host */
    int *counts_host;    /**< [N, E] counts_all on the host */
} FastEpDevice;

/** What the last fast_ep_moe_forward() saw, summed over the devices (host). */
typedef struct {
    int T;               /**< tokens over all devices */
    int *expert_count;   /**< [E] assignments per expert (before dropping) */
    double *f;           /**< [E] f_i = E/(K·T) · expert_count_i */
    double *P;           /**< [E] P_i = (1/T) Σ_t s_{i,t} */
    int *device_tokens;  /**< [N] tokens with at least one expert on device d */
    int dropped;         /**< assignments dropped at dispatch */
    long long rows_sent; /**< rows dispatched to another device */
    long long bytes_sent; /**< their bytes (rows_sent · D · element size) */
    int max_devices;     /**< most devices one token's kept assignments reached */
} FastEpStats;

/** An expert-parallel group of N devices (ranks 0..N−1 are devices 0..N−1). */
typedef struct {
    int N;               /**< devices */
    int E;               /**< routed experts */
    int K;               /**< experts per token */
    int D;               /**< model width */
    int I;               /**< expert width */
    int I_s;             /**< fused shared-expert width N_s·I (0: none) */
    int max_T;           /**< tokens per device per call it was sized for */
    int recv_cap;        /**< rows one device can receive: N·max_T·min(K, E/N) */
    double capacity_factor; /**< > 0: device-level token dropping at dispatch (drop_tokens' rule) */
    FastEpDevice dev[FAST_EP_MAX_DEVICES]; /**< per device */
    int *keep_idx;       /**< [N·max_T·K] host: routing after dropping (E marks dropped) */
    float *weight_host;  /**< [N·max_T·K] host: all-gathered weights */
    bool *keep;          /**< [N·max_T·K] host: drop_tokens' mask */
    FastEpStats stats;   /**< the last call's statistics */
} FastEp;

/** One MoE layer sharded over a FastEp: device d's router, bias and shared experts, and its E/N experts. */
typedef struct {
    FastMoe dev[FAST_EP_MAX_DEVICES]; /**< gate_up/down hold experts [d·E/N, (d+1)·E/N) only */
} FastEpMoe;

/**
 * Opens an expert-parallel group over devices 0..N−1 for MoE layers of cfg: ncclCommInitAll, one context
 * and working memory per device for up to max_T tokens per device. N must divide n_routed_experts.
 * \return 0, or −1 with one error line (everything acquired released).
 */
int fast_ep_init(FastEp *ep, int N, bool bf16, const ModelConfig *cfg, int max_T);
/** Releases what fast_ep_init() acquired (safe on a zeroed group). */
void fast_ep_free(FastEp *ep);

/**
 * Uploads a reference MoE layer sharded over the group: every device gets the router (float32), the
 * bias and the shared experts; device d gets routed experts [d·E/N, (d+1)·E/N). \return 0 or −1.
 */
int fast_ep_upload_moe(FastEp *ep, FastEpMoe *out, const MoeWeights *w, const ModelConfig *cfg);
/** Frees an uploaded sharded layer. */
void fast_ep_free_moe(FastEp *ep, FastEpMoe *w);

/**
 * The MoE FFN over the group: x[d], y[d]: [T[d], D] float32 on device d, 0 ≤ T[d] ≤ max_T (a device with
 * no tokens still holds its experts and joins every exchange), at least one token in all. The tokens, in
 * device order, are one batch: statistics and token dropping see all Σ_d T[d] of them.
 * Fills ep->stats. \return 0, or −1 with one error line.
 */
int fast_ep_moe_forward(FastEp *ep, const FastEpMoe *w, const ModelConfig *cfg, float *const *y,
                        const float *const *x, const int *T);

/**
 * The expert-parallel part of a FastModel opened with FastOptions.ep_devices = N > 1: attention, dense
 * layers, embeddings and the LM head stay on device 0; every MoE layer is sharded over devices 0..N−1
 * and each of its calls splits the chunk's tokens into N contiguous shares, share d on device d.
 */
typedef struct FastEpModel {
    FastEp ep;                      /**< the group over devices 0..N−1, sized for ⌈chunk/N⌉ tokens per device */
    int n_layers;                   /**< entries of layers */
    FastEpMoe *layers;              /**< [n_layers]: MoE layer l sharded (zeroed for dense layers) */
    float *x[FAST_EP_MAX_DEVICES];  /**< device d ≥ 1: [⌈chunk/N⌉, D] its share of the MoE inputs */
    float *y[FAST_EP_MAX_DEVICES];  /**< device d ≥ 1: [⌈chunk/N⌉, D] the outputs of that share */
} FastEpModel;

/**
 * Opens the group of N devices for the reference model's MoE layers and uploads them sharded
 * (fast_ep_upload_moe()), plus each device's share buffers, for chunks of up to chunk tokens.
 * Leaves device 0 current. \return 0 with *out set, or −1 with one error line and *out NULL.
 */
int fast_ep_model_open(FastEpModel **out, const Model *ref, int N, bool bf16, int chunk);
/** Releases what fast_ep_model_open() acquired (NULL is a no-op); leaves device 0 current. */
void fast_ep_model_close(FastEpModel *em);
/**
 * MoE layer l on the T tokens x[T, D] of device 0 (written by work queued on stream): share d = rows
 * [Σ_{j<d} T_j, Σ_{j≤d} T_j) with T_d = ⌊T/N⌋ + (d < T mod N) goes to device d (peer copy), the group
 * runs fast_ep_moe_forward(), the shares come back into y[T, D] on device 0, queued on stream.
 * Leaves device 0 current. \return 0, or −1 with one error line.
 */
int fast_ep_model_moe(FastEpModel *em, int l, const ModelConfig *cfg, float *y, const float *x, int T,
                      cudaStream_t stream);

/**
 * Most devices one token's experts can lie on under cfg's routing over N devices (M of the paper):
 * group-limited routing keeps topk_group groups; a group lies on one device when N divides n_group, on
 * N/n_group devices when n_group divides N; never more than K or N.
 */
int fast_ep_device_limit(const ModelConfig *cfg, int N);

/**
 * The three balance losses (ref/balance.h's L_ExpBal, L_DevBal, L_CommBal) from the statistics of the
 * last call, summed over devices; b->E, K, D, M must describe that call's layout (D = N).
 */
BalanceLosses fast_ep_balance_losses(const FastEp *ep, const BalanceSpec *b);

#endif
