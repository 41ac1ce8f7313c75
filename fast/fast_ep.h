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
 *      ncclAllReduce, and the routing (experts and weights) all-gathered; with a capacity factor, token
 *      dropping decided from it;
 *   3. the dispatch plan from the gathered routing (every rank derives the same one: on the devices for a
 *      small step, on the host for a large one, see below): a token goes to each device holding one of its
 *      kept experts once;
 *   4. dispatch: one ncclSend per (source, destination) pair with rows, one ncclRecv on the other side, in
 *      one ncclGroupStart/End; a token's hidden state crosses to each distinct device at most once
 *      (paper §2.2.3: at most M devices per token);
 *   5. the receiver expands its received rows to its local experts (a local permutation: a row feeds
 *      each of its token's experts there), runs one GEMM per non-empty local expert (fused gate/up,
 *      SwiGLU, down), and combines locally: one partial row per received row,
 *      p_{r,t} = Σ over t's kept slots k on device r, k ascending, of g_{k,t}·FFN_{e_k}(u_t);
 *   6. the partials go back the same way (one row per (token, device)), and the source sums them in
 *      ascending device order, then adds the replicated shared experts:
 *      y_t = ((p_{r₁,t} + p_{r₂,t}) + …) + shared_t with r₁ < r₂ < … .
 * Small steps (Σ_d T[d]·K ≤ FastEp.host_free_max: decode) never wait for the host: steps 3–6 run on the
 * devices (kernels/ep_plan.cu). Every rank derives the same plan from the same gathered routing (token
 * dropping included, drop_tokens' rule), so the counts every receiver needs are already on it: they came
 * over NCCL inside the gathered routing. NCCL needs sizes on the host, so the exchange moves
 * fixed-capacity blocks: source s sends every device a block of T[s] rows (a token reaches a device at
 * most once), the real rows marked by the plan, the others zero; the receiver indexes its rows by global
 * token. The partials return the same way. The price is padding: Σ_s N·T[s] rows each way instead of the
 * distinct (token, device) pairs. Larger steps (prompts) keep the exact-size plan the host derives:
 * D2H of the statistics and routing, the plan built on the host and uploaded, messages of exact sizes.
 * Payloads (dispatched rows and returned partials) are in the activations' type: bf16 in bf16 mode, the
 * partials rounded to bf16 on the receiver and widened to float32 where the source sums them;
 * FastEp.f32_payload keeps both directions in float32.
 * In float32 mode the result equals ref/moe.h's moe_forward on the concatenated tokens up to rounding: the
 * terms g_{k,t}·FFN_{e_k}(u_t) are the same, only their sum is grouped by device before it runs over the
 * slots (a dropped assignment contributes nothing, as in ref/ep.h's moe_forward_ep with drop_tokens'
 * keep mask).
 */
#ifndef DSV2_FAST_EP_H
#define DSV2_FAST_EP_H

#include "balance.h"
#include "fast.h"

#include <nccl.h>

#define FAST_EP_MAX_DEVICES 8 /**< devices of one expert-parallel group */

/** Records "call failed: text at file:line" when r is not ncclSuccess. \return 0 or −1. */
int fast_check_nccl(ncclResult_t r, const char *call, const char *file, int line);

/** One device's part of a call's dispatch plan (host), derived from the all-gathered routing. */
typedef struct {
    int n_send[FAST_EP_MAX_DEVICES]; /**< rows it sends each destination: its tokens with a kept expert there */
    int n_recv[FAST_EP_MAX_DEVICES]; /**< rows it receives from each source (that source's n_send to it) */
    int *send_token;                 /**< [max_T·Kd] local token of each row sent, by destination, then token */
    int *recv_token;                 /**< [recv_cap] global token of each received row, by source, then token */
    int *expand_row;    /**< [exp_cap] received row feeding each expanded row, by local expert, then received row */
    int *expert_off;    /**< [E/N + 1] first expanded row of each local expert */
    int *part_slot;     /**< [recv_cap·Kl] per received row: expanded rows of its kept local slots, k ascending,
                              then −1 */
    float *part_weight; /**< [recv_cap·Kl] their g_{k,t} (0 for padding) */
    int *comb_slot;     /**< [max_T·Kd] per own token: rows of its returned partials, devices ascending, then −1 */
    float *comb_weight; /**< [max_T·Kd] 1 for a partial, 0 for padding */
} FastEpPlan;

/** One device of an expert-parallel group: its context, communicator, plan and working memory. */
typedef struct {
    FastContext ctx;    /**< stream, cuBLAS handle, precision (bound to this device) */
    ncclComm_t comm;    /**< rank d of the clique */
    FastEpPlan plan;    /**< the last call's plan for this device (host) */
    float *logits;      /**< [max_T, E] router logits, then affinities s_{i,t} */
    int *idx;           /**< [max_T, K] chosen experts (before dropping) */
    float *weight;      /**< [max_T, K] their weights g_{k,t} */
    float *stat_score;  /**< [E] Σ_t s_{i,t}, then summed over devices */
    int *stat_count;    /**< [E] assignments per expert, then summed over devices */
    int *stat_dev;      /**< [N] tokens reaching each device, then summed over devices */
    int *idx_all;       /**< [N·max_T, K] all-gathered routing */
    float *weight_all;  /**< [N·max_T, K] all-gathered weights */
    int *send_token;    /**< plan.send_token on the device; a host-free step's [N·T] dispatch rows (−1: padding) */
    int *expand_row;    /**< plan.expand_row on the device (a host-free step: global tokens) */
    int *part_slot;     /**< plan.part_slot on the device (a host-free step: per global token) */
    float *part_weight; /**< plan.part_weight on the device */
    int *comb_slot;     /**< plan.comb_slot on the device (a host-free step: returned rows q·T + t) */
    float *comb_weight; /**< plan.comb_weight on the device */
    int *idx_kept;      /**< [N·max_T·K] a host-free step: every token's experts, E where dropped (ep_plan_v1) */
    int *slot;          /**< [N·max_T·K] a host-free step: expanded row of each assignment kept here */
    int *expert_off;    /**< [E/N + 1] a host-free step: first expanded row of each local expert */
    void *xp;           /**< [N·max_T, D] rows to send, by destination then token (payload type) */
    void *xr;           /**< [recv_cap, D] received rows, by source then token (payload type) */
    float *xe;          /**< [exp_cap, D] received rows expanded to local experts, widened to float32 */
    void *xw;           /**< [exp_cap, D] expanded rows in bf16 for the experts (bf16 mode; float32 mode uses xe) */
    float *gu;          /**< [max(exp_cap·2I, max_T·2I_s)] fused gate/up outputs */
    void *hidden;       /**< [max(exp_cap·I, max_T·I_s)] SwiGLU outputs (wtype) */
    float *ye;          /**< [exp_cap, D] local experts' outputs */
    void *yr;           /**< [recv_cap, D] partial combines of the received rows, sent back (payload type) */
    void *ret;          /**< [N·max_T, D] partials returned to this source (payload type) */
    float *shared_out;  /**< [max_T, D] shared experts */
    cudaEvent_t ready;  /**< recorded on a producer's stream of this device (fast_ep_wait_inputs) */
    cudaEvent_t done;   /**< recorded on ctx.stream after this device's outputs (fast_ep_signal_outputs) */
} FastEpDevice;

/** Steps with at most this many assignments (Σ_d T[d]·K) plan on the devices (as fast/layers.c's grouped path). */
#define FAST_EP_HOST_FREE_MAX 256

/** What the last fast_ep_moe_forward() saw, summed over the devices (host; fast_ep_host_plan() after a host-free step). */
typedef struct {
    int T;                              /**< tokens over all devices */
    int *expert_count;                  /**< [E] assignments per expert (before dropping) */
    double *f;                          /**< [E] f_i = E/(K·T) · expert_count_i */
    double *P;                          /**< [E] P_i = (1/T) Σ_t s_{i,t} */
    int *device_tokens;                 /**< [N] tokens with at least one expert on device d */
    int dropped;                        /**< assignments dropped at dispatch */
    long long rows_dispatched;          /**< rows dispatched: distinct (token, device) pairs of kept assignments */
    long long rows_sent;                /**< those going to another device than the token's own */
    long long bytes_sent;               /**< their bytes (rows_sent · D · element size of the payload) */
    long long max_token_dispatch_bytes; /**< most bytes one token's hidden state was dispatched with, its own
                                             device's row included (devices · D · element size) */
    long long max_token_combine_bytes;  /**< most bytes of partials one token got back (devices · D · element size
                                             of the payload) */
    int max_devices;                    /**< most devices one token's kept assignments reached */
} FastEpStats;

/** The two exchanges of fast_ep_moe_forward() that FastEpTiming brackets. */
enum { FAST_EP_DISPATCH, FAST_EP_COMBINE, FAST_EP_PHASES };

/**
 * Optional timing of the exchanges (make bench-fast): when FastEp.timing points at one, fast_ep_moe_forward()
 * records begin[p][d] on device d's stream just before phase p's ncclGroupStart and end[p][d] just after its
 * ncclGroupEnd. The caller creates the events (fast_ep_timing_create), and after synchronizing the streams
 * reads the phase times with fast_ep_timing_ms.
 */
typedef struct {
    cudaEvent_t begin[FAST_EP_PHASES][FAST_EP_MAX_DEVICES]; /**< recorded before the phase's group */
    cudaEvent_t end[FAST_EP_PHASES][FAST_EP_MAX_DEVICES];   /**< recorded after it */
} FastEpTiming;

/** Creates every event of tm for devices 0..N−1, each with its device current. \return 0, or −1 (error line set). */
int fast_ep_timing_create(FastEpTiming *tm, int N);
/** Destroys what fast_ep_timing_create() made for devices 0..N−1 (safe on a zeroed tm). */
void fast_ep_timing_destroy(FastEpTiming *tm, int N);
/**
 * The times of the exchanges tm recorded over devices 0..N−1, read once their streams are synchronized:
 * ms[p] = max over d of cudaEventElapsedTime(begin[p][d], end[p][d]), a phase lasting until its slowest device
 * is done. \return 0, or −1 (error line set) when an event is unrecorded or incomplete.
 */
int fast_ep_timing_ms(const FastEpTiming *tm, int N, float ms[FAST_EP_PHASES]);

/** An expert-parallel group of N devices (ranks 0..N−1 are devices 0..N−1). */
typedef struct {
    int N;                  /**< devices */
    int E;                  /**< routed experts */
    int K;                  /**< experts per token */
    int D;                  /**< model width */
    int I;                  /**< expert width */
    int I_s;                /**< fused shared-expert width N_s·I (0: none) */
    int max_T;              /**< tokens per device per call it was sized for */
    int Kd;                 /**< most devices one token is sent to: min(K, N) */
    int Kl;                 /**< most experts of one token on one device: min(K, E/N) */
    int recv_cap;           /**< rows one device can receive: N·max_T (a token reaches a device once) */
    int exp_cap;            /**< expanded rows one device can hold: recv_cap·Kl */
    double capacity_factor; /**< > 0: device-level token dropping at dispatch (drop_tokens' rule) */
    int host_free_max; /**< steps of Σ T·K ≤ this plan on the devices (FAST_EP_HOST_FREE_MAX; 0: always the host) */
    bool f32_payload;  /**< false: payloads in the activations' type (bf16 in bf16 mode); true: float32 */
    bool last_host_free;                   /**< whether the last call planned on the devices */
    int last_T[FAST_EP_MAX_DEVICES];       /**< the last call's tokens per device */
    FastEpDevice dev[FAST_EP_MAX_DEVICES]; /**< per device */
    int *keep_idx;        /**< [N·max_T·K] host: every token's experts in device order, E where dropped */
    float *weight_host;   /**< [N·max_T·K] host: their weights */
    bool *keep;           /**< [N·max_T·K] host: drop_tokens' mask */
    int *slot_row;        /**< [recv_cap·K] host, while planning: expanded row of each received row's slot */
    int *send_row;        /**< [max_T·N] host, while planning: sent row of each (token, destination) */
    FastEpStats stats;    /**< the last call's statistics */
    FastEpTiming *timing; /**< NULL, or events to record around the exchanges (set after fast_ep_init) */
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
 * A step of Σ_d T[d]·K ≤ ep->host_free_max assignments plans on the devices and returns without waiting for
 * any of them (ep->stats and the host plans are then filled only by fast_ep_host_plan()); a larger one
 * plans on the host and fills ep->stats. \return 0, or −1 with one error line.
 */
int fast_ep_moe_forward(FastEp *ep, const FastEpMoe *w, const ModelConfig *cfg, float *const *y, const float *const *x,
                        const int *T);

/**
 * The host's derivation of the last call's plan from device 0's gathered routing (an independent
 * derivation from the kernels' one): waits for the devices, fills ep->keep_idx, weight_host, keep, every
 * device's FastEpPlan and ep->stats, uploads nothing. \return 0, or −1 with one error line.
 */
int fast_ep_host_plan(FastEp *ep);

/**
 * Orders the group after a producer without the host: records ep->dev[p].ready on producer (a stream of
 * device p) and makes device p's group stream wait for it, or every device's when all. \return 0 or −1.
 */
int fast_ep_wait_inputs(FastEp *ep, int p, cudaStream_t producer, bool all);
/**
 * Orders a consumer (a stream of consumer_device) after device d's part of the last call: records
 * ep->dev[d].done on d's group stream, and consumer waits for it. Leaves consumer_device current.
 * \return 0 or −1.
 */
int fast_ep_signal_outputs(FastEp *ep, int d, cudaStream_t consumer, int consumer_device);

/**
 * The expert-parallel part of a FastModel opened with FastOptions.ep_devices = N > 1: attention, dense
 * layers, embeddings and the LM head stay on device 0; every MoE layer is sharded over devices 0..N−1
 * and each of its calls splits the chunk's tokens into N contiguous shares, share d on device d.
 */
typedef struct FastEpModel {
    FastEp ep;                     /**< the group over devices 0..N−1, sized for ⌈chunk/N⌉ tokens per device */
    int n_layers;                  /**< entries of layers */
    FastEpMoe *layers;             /**< [n_layers]: MoE layer l sharded (zeroed for dense layers) */
    float *x[FAST_EP_MAX_DEVICES]; /**< device d ≥ 1: [⌈chunk/N⌉, D] its share of the MoE inputs */
    float *y[FAST_EP_MAX_DEVICES]; /**< device d ≥ 1: [⌈chunk/N⌉, D] the outputs of that share */
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

/** Device buffers of a FastEpDevice (its pointer fields logits … shared_out, in order). */
#define FAST_EP_DEVICE_BUFFERS 27
/**
 * The bytes fast_ep_init() allocates on each device of a group of N for shares of max_T tokens, per
 * buffer in FastEpDevice's field order, activations of type wtype, payloads sized for float32 (so
 * FastEp.f32_payload may be set after fast_ep_init): the one definition of those sizes.
 * \return FAST_EP_DEVICE_BUFFERS.
 */
int fast_ep_device_sizes(const ModelConfig *cfg, KernelDType wtype, int N, int max_T,
                         size_t bytes[FAST_EP_DEVICE_BUFFERS]);
/** Their sum: one device's working memory in the group. */
size_t fast_ep_device_bytes(const ModelConfig *cfg, KernelDType wtype, int N, int max_T);
/** Staging elements of each device's FastContext in the group (the shared experts' GEMM input). */
size_t fast_ep_stage_elems(const ModelConfig *cfg, int max_T);
/** Device bytes of one MoE layer's share on each device (fast_ep_upload_moe(): E/N experts, router and bias whole). */
size_t fast_ep_moe_bytes(const ModelConfig *cfg, KernelDType wtype, int N);
/** Bytes of one of the share buffers fast_ep_model_open() gives devices 1..N−1 (max_T rows of D floats). */
size_t fast_ep_share_bytes(const ModelConfig *cfg, int max_T);

#endif
