/**
 * \file route_log.h
 * \brief Every MoE layer's routing of a run of tokens, logged from model_forward() through
 *        Model.on_moe: the affinities s_{i,t} and the K experts chosen per token and layer.
 *
 * What `dsv2 route-stats` and the load notebooks measure. Attach a log to an open model, run
 * the tokens through model_forward() (in as many chunks as it likes), then read layer i's rows.
 * Nothing of the decoder is re-run: the rows are the model's own routing.
 */
#ifndef DSV2_ROUTE_LOG_H
#define DSV2_ROUTE_LOG_H

#include "model.h"

#include <stdbool.h>

/** The routing of T tokens through each of a model's MoE layers. */
typedef struct {
    int E;         /**< routed experts */
    int K;         /**< experts chosen per token */
    int T;         /**< tokens the log holds */
    int n_moe;     /**< MoE layers */
    int *layer;    /**< [n_moe] the decoder layer of MoE layer i */
    int *slot;     /**< [num_hidden_layers] the layer's index among the MoE layers, −1 when dense */
    int *rows;     /**< [n_moe] tokens logged so far (T + 1 once more than T arrived) */
    float *scores; /**< [n_moe, T, E] affinities s_{i,t}, MoE layer i's rows from i·T */
    int *chosen;   /**< [n_moe, T, K] the chosen experts, best first, MoE layer i's rows from i·T */
} RouteLog;

/**
 * Makes a log of T tokens for m's MoE layers and sets m->on_moe to fill it; the next T tokens
 * through model_forward() are logged in order. \return 0, or −1 with one error line (nothing
 * left allocated, m unchanged).
 */
int route_log_attach(RouteLog *g, Model *m, int T);

/** True when every MoE layer has logged exactly T tokens. */
bool route_log_complete(const RouteLog *g);

/** Detaches the log from m (m may be NULL when it is already closed) and frees it. */
void route_log_free(RouteLog *g, Model *m);

#endif
