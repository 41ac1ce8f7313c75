/**
 * \file fast_dp.h
 * \brief Attention data-parallel, experts expert-parallel: N devices, each advancing its own sequence
 *        (paper §3.2's deployment layout for one process; fast/dp_model.c).
 *
 * Device d holds a replica of everything but the routed experts — embedding, attention, dense FFNs,
 * norms, LM head, the router and the shared experts — and its own latent cache, plus routed experts
 * [d·E/N, (d+1)·E/N). One call advances every device's sequence by its own T_d tokens (0: idle):
 * attention runs on each device over its own cache, every MoE layer runs once over the group through
 * fast_ep_moe_forward() with x[d] = device d's rows (an idle device still joins the exchange), and
 * each device's LM head gives its sequence's logits. The per-layer code is fast/model.c's
 * (fast_model_step_begin(), fast_model_layer_attention(), fast_model_layer_ffn(),
 * fast_model_step_end()), driven layer by layer over N FastModels opened with
 * FastOptions.moe_elsewhere.
 */
#ifndef DSV2_FAST_DP_H
#define DSV2_FAST_DP_H

#include "fast.h"
#include "fast_ep.h"

/** N devices, each with its own sequence; MoE layers shared over the group. */
typedef struct {
    int N;                              /**< devices */
    int n_layers;                       /**< decoder layers */
    FastModel dev[FAST_EP_MAX_DEVICES]; /**< device d's replica and latent cache (MoE layers not uploaded) */
    FastEp ep;                          /**< the group over devices 0..N−1, sized for one chunk per device */
    FastEpMoe *layers;                  /**< [n_layers]: MoE layer l sharded (zeroed for dense layers) */
} FastDpModel;

/**
 * Opens the checkpoint in dir over devices 0..N−1: one FastModel per device (opt as for
 * fast_model_open(), ep_devices ignored) and the expert-parallel group with every MoE layer sharded.
 * N must divide n_routed_experts and at most the devices present may be asked for.
 * \return 0 with *out set, or −1 with one error line naming the argument, *out NULL, nothing held.
 */
int fast_dp_model_open(FastDpModel **out, const char *dir, int N, const FastOptions *opt);
/** Releases what fast_dp_model_open() acquired (NULL is a no-op); leaves device 0 current. */
void fast_dp_model_close(FastDpModel *dp);
/** Forgets every device's cached past. */
void fast_dp_model_reset(FastDpModel *dp);
/**
 * Advances device d's sequence by the T[d] tokens tokens[d] (T[d] = 0: idle this call; at least one
 * token in all), in chunks of at most the model's chunk per device, every MoE layer one exchange over
 * the group per chunk. logits[d]: NULL, or device d's logits — [T[d], vocab] when all_positions, else
 * [vocab] for its last token (left untouched when T[d] = 0). Leaves device 0 current.
 * \return 0, or −1 with one error line naming the device.
 */
int fast_dp_model_forward(FastDpModel *dp, const int *const *tokens, const int *T, float *const *logits,
                          bool all_positions);

#endif
