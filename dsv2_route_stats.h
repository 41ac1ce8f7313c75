/**
 * \file dsv2_route_stats.h
 * \brief `dsv2 route-stats`: a prompt's routing per MoE layer — tokens per expert and per device,
 * the bytes dispatched and the balance losses L_ExpBal, L_DevBal, L_CommBal (paper §2.2.3) — under
 * three routings: top-K with no device limit, the model's own, and device-limited to M devices.
 */
#ifndef DSV2_ROUTE_STATS_H
#define DSV2_ROUTE_STATS_H

/** What route_stats_run() reports on. */
typedef struct {
    const char *model_dir; /**< the checkpoint directory */
    const int *ids;        /**< [T] the prompt's token ids */
    int T;                 /**< tokens */
    int ctx;               /**< context in positions (0: the model's default) */
    long devices;          /**< D (0: the default, n_group when > 1, else 8, lowered to divide E) */
    long limit;            /**< M of the device-limited routing (0: what the model's routing implies) */
    const double *alpha;   /**< [3] the balance-loss weights α₁, α₂, α₃ */
    const char *plot;      /**< NULL, or a PNG file for the heat map (needs gnuplot on PATH) */
} RouteStatsArgs;

/**
 * Runs the prompt through the reference model and prints the report on stdout. Every failure is
 * one line on stderr. \return the exit status: 0, 1 (a runtime failure) or 2 (--devices or --limit
 * do not fit the model).
 */
int route_stats_run(const RouteStatsArgs *a);

#endif
