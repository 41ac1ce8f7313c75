/**
 * \file train_optim.h
 * \brief AdamW with a learning-rate schedule and gradient clipping by global norm (training).
 *
 * The optimizer works on one flat float32 parameter vector and its gradient (TrainModel's
 * params and grads). One step, for step number t = 1, 2, … with learning rate η_t:
 *     g ← g · min(1, c / (‖g‖₂ + 1e-6))            (clipping, when c > 0)
 *     θ ← θ − η_t λ θ                               (decoupled weight decay)
 *     m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
 *     θ ← θ − η_t (m / (1 − β₁^t)) / (√(v / (1 − β₂^t)) + ε)
 * Everything is computed in a fixed order in double per element and stored as float32, so the
 * same inputs give bit-identical parameters.
 *
 * Schedules: linear warmup over the first W steps, then either a cosine decay to min_lr at
 * total_steps (the default: smooth, and it needs only the run's length) or the paper's step
 * schedule (§3.2.1: the rate is multiplied by 0.316 after 60% and again after 90% of training).
 */
#ifndef DSV2_TRAIN_OPTIM_H
#define DSV2_TRAIN_OPTIM_H

#include <stddef.h>

/** Which decay follows the warmup. */
typedef enum {
    LR_COSINE, /**< η_min + (η − η_min) · ½ (1 + cos(π p)), p = progress after warmup in [0, 1] */
    LR_STEP,   /**< η, then η·0.316 from 60% of total_steps, η·0.316² from 90% (paper §3.2.1) */
} LrSchedule;

/** Optimizer hyper-parameters. */
typedef struct {
    double lr;           /**< η, the peak learning rate */
    double min_lr;       /**< η_min, the cosine schedule's floor */
    double beta1;        /**< β₁ */
    double beta2;        /**< β₂ */
    double eps;          /**< ε */
    double weight_decay; /**< λ (decoupled) */
    double clip_norm;    /**< c, the global-norm clip (0: no clipping) */
    int warmup_steps;    /**< W: η_t = η · t / W for t ≤ W */
    int total_steps;     /**< the run's length, for the decay */
    LrSchedule schedule; /**< the decay after warmup */
} AdamWConfig;

/** Optimizer state: the two moment vectors and the step count. */
typedef struct {
    AdamWConfig cfg; /**< hyper-parameters */
    size_t n;        /**< parameters */
    float *m;        /**< [n] first moment */
    float *v;        /**< [n] second moment */
    int step;        /**< steps taken */
} AdamW;

/** Zeroed moments for n parameters. \return 0, or −1 with one error line (out of memory, or a
 *  hyper-parameter out of range, named). */
int adamw_init(AdamW *opt, const AdamWConfig *cfg, size_t n);

/** Frees what adamw_init() allocated. */
void adamw_free(AdamW *opt);

/** η_t, the learning rate of step t (1-based) under cfg's warmup and schedule. */
double lr_at(const AdamWConfig *cfg, int t);

/** Scales g [n] in place so that ‖g‖₂ ≤ max_norm (as coefficient max_norm / (‖g‖₂ + 1e-6) when
 *  that is below 1). Returns ‖g‖₂ before clipping (summed in double). */
double clip_grad_norm(float *g, size_t n, double max_norm);

/** One step: clips grads in place (when clip_norm > 0), then updates params [n] with the step's
 *  rate. Returns the gradient norm before clipping. */
double adamw_step(AdamW *opt, float *params, float *grads);

#endif
