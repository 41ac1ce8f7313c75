/**
 * \file train_model.h
 * \brief The whole model's loss and parameter gradients, in float32 (training, phase 1).
 *
 * A TrainModel holds its own float32 copy of every weight of an open Model in one flat array,
 * `params`, and a gradient array `grads` of the same length and layout, so an optimizer can treat
 * both as plain vectors. One call runs a sequence forward keeping each layer's residual-stream
 * input, computes the loss
 *
 *     L = (1/T) Σ_t −log softmax(logits_t)[target_t]  +  Σ_{MoE layers} (L_ExpBal + L_DevBal + L_CommBal)
 *
 * and backpropagates it into every parameter: embedding, per layer the two RMSNorm weights, the
 * attention (mla_backward(), or attn_std_backward() for the MHA / GQA / MQA baselines), the dense FFN or the MoE (router, routed and shared experts), the
 * final norm and the LM head. Routing is a fixed mask in the backward; when capacity_factor > 0,
 * token dropping (drop_tokens(), devices = the config's n_group) removes (token, expert) pairs
 * from both passes.
 */
#ifndef DSV2_TRAIN_MODEL_H
#define DSV2_TRAIN_MODEL_H

#include "model.h"

#include <stddef.h>

/** What the training loss contains besides cross-entropy. */
typedef struct {
    double alpha1;          /**< α₁, expert-level balance loss weight (0: off) */
    double alpha2;          /**< α₂, device-level (devices = n_group, device limit M = topk_group) */
    double alpha3;          /**< α₃, communication balance */
    double capacity_factor; /**< token dropping's capacity factor per device (0: no dropping) */
} TrainOptions;

/** A model's float32 parameters and their gradients. */
typedef struct {
    ModelConfig cfg;         /**< copied from the Model */
    Rope rope;               /**< RoPE tables and σ */
    TrainOptions opt;        /**< loss options */
    size_t n_params;         /**< floats in params (and in grads) */
    float *params;           /**< every weight, in one array (embedding first) */
    float *grads;            /**< ∂L/∂params, same layout */
    Mat embed;               /**< [V, D] view into params (DT_F32) */
    Mat lm_head;             /**< [V, D] view into params (DT_F32) */
    const float *final_norm; /**< [D] into params */
    LayerWeights *layers;    /**< [layers], every Mat and norm a view into params */
    SwigluWeights *experts;  /**< [layers · E] the routed experts' views */
    long *load;              /**< NULL, or [layers · E]: each call adds the (token, expert) pairs
                                   it kept per layer and expert (the caller owns and zeroes it) */
} TrainModel;

/** Per-call loss figures. */
typedef struct {
    double loss;     /**< the total L */
    double ce;       /**< the mean cross-entropy */
    double balance;  /**< Σ over MoE layers of the three balance losses */
    int dropped;     /**< (token, expert) pairs dropped, all layers */
    double exp_bal;  /**< Σ over MoE layers of α₁ L_ExpBal */
    double dev_bal;  /**< Σ over MoE layers of α₂ L_DevBal */
    double comm_bal; /**< Σ over MoE layers of α₃ L_CommBal */
} TrainLoss;

/**
 * Copies m's weights (widened to float32) into tm; m may be closed afterwards.
 * \return 0, or −1 with one error line
 * (out of memory; a negative option; balance losses asked of a sigmoid-scored router, which they
 * are not defined for).
 */
int train_model_init(TrainModel *tm, const Model *m, const TrainOptions *opt);

/** Frees what train_model_init() allocated. */
void train_model_free(TrainModel *tm);

/** The gradient array matching a parameter array p (a pointer into tm->params). */
float *train_grad(const TrainModel *tm, const void *p);

/**
 * The parameter array of the weight with checkpoint name `name` (e.g.
 * "model.layers.1.mlp.experts.3.up_proj.weight"), a pointer into tm->params; its gradient is
 * train_grad(tm, p). \return NULL with one error line when no such weight exists in this model.
 */
float *train_param(const TrainModel *tm, const char *name);

/**
 * Sets tm->grads to ∂L/∂params for one sequence: tokens [T] at positions [0, T), targets [T]
 * (the next tokens). Zeroes the gradients, then train_accumulate() with scale 1. Fills *out. \return 0, or −1 with one error line (an id outside the
 * vocabulary, T < 1, out of memory).
 */
int train_forward_backward(TrainModel *tm, const int *tokens, const int *targets, int T, TrainLoss *out);

/**
 * Adds scale · ∂L/∂params of one sequence to tm->grads (every parameter gradient accumulates), for
 * batches: B sequences with scale 1/B give the gradient of the batch's mean loss, each sequence
 * with its own balance losses (the paper's per-sequence f_i, P_i). Fills *out with this sequence's
 * loss figures. \return 0, or −1 with one error line, as train_forward_backward().
 */
int train_accumulate(TrainModel *tm, const int *tokens, const int *targets, int T, double scale, TrainLoss *out);

/** Called once per weight by train_params_each(): its checkpoint name, its array in tm->params,
 *  and its shape (rows × cols for a matrix; rows and cols = 0 for a vector). */
typedef void (*TrainParamFn)(void *ctx, const char *name, const float *p, int rows, int cols);

/** Visits every weight, in the order of tm->params (which they tile exactly). */
void train_params_each(const TrainModel *tm, TrainParamFn fn, void *ctx);

/** Embedding backward: dE[tokens[t]] += dh_t for t < T. dE: [vocab, D], dh: [T, D]. */
void embedding_backward(float *dE, const float *dh, const int *tokens, int T, int D);

/**
 * Mean cross-entropy of T rows of logits [T, V] against targets [T], in double:
 * L = (1/T) Σ_t (log Σ_v e^{z_{t,v}} − z_{t,target_t}); writes dlogits [T, V] =
 * (softmax(z_t) − onehot(target_t)) / T. Returns L.
 */
double cross_entropy(float *dlogits, const float *logits, const int *targets, int T, int V);

#endif
