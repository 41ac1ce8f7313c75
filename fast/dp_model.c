/**
 * \file dp_model.c
 * \brief Attention data-parallel over N devices, MoE layers expert-parallel over the same devices
 *        (fast_dp.h's FastDpModel).
 *
 * Each device runs fast/model.c's layer halves on its own FastModel — its own tokens, positions and
 * latent cache — so attention never leaves the device; the MoE layers are the one place the devices
 * meet: device d's FFN inputs (its FastModel's a rows) are x[d] of fast_ep_moe_forward(), and the
 * outputs land in its b rows, where the next layer's fused norm adds them to the residual stream.
 */
#include "fast_dp.h"

#include "error.h"

#include <stdio.h>
#include <stdlib.h>

/* Uploads every MoE layer of the reference model sharded over the group. */
static int upload_layers(FastDpModel *dp, const Model *ref)
{
    dp->n_layers = ref->cfg->num_hidden_layers;
    dp->layers = calloc((size_t)dp->n_layers, sizeof *dp->layers);
    if (!dp->layers) return ds_error("fast_dp_model_open: out of host memory for %d layers", dp->n_layers);
    for (int l = 0; l < dp->n_layers; l++)
        if (ref->layers[l].is_moe && fast_ep_upload_moe(&dp->ep, &dp->layers[l], &ref->layers[l].moe, ref->cfg))
            return -1;
    return 0;
}

int fast_dp_model_open(FastDpModel **out, const char *dir, int N, const FastOptions *opt)
{
    *out = NULL;
    int present = 0;
    if (N < 1 || N > FAST_EP_MAX_DEVICES)
        return ds_error("fast_dp_model_open: %d devices (1..%d)", N, FAST_EP_MAX_DEVICES);
    CUDA_TRY(cudaGetDeviceCount(&present));
    if (present < N) return ds_error("fast_dp_model_open: %d devices asked for, %d present", N, present);
    Model ref;
    const ModelOptions ref_opt = { .max_context = 1, .chunk = 1 };
    if (model_open(&ref, dir, &ref_opt)) return -1;
    const int E = ref.cfg->n_routed_experts;
    if (E < 1 || E % N != 0) {
        model_close(&ref);
        return ds_error("fast_dp_model_open: %d devices cannot share the %d routed experts of %s", N, E, dir);
    }
    FastDpModel *dp = calloc(1, sizeof *dp);
    if (!dp) {
        model_close(&ref);
        return ds_error("fast_dp_model_open: out of host memory");
    }
    FastOptions local = opt ? *opt : (FastOptions){ 0 };
    local.ep_devices = 0;
    local.moe_elsewhere = true; /* the group holds them */
    int rc = 0;
    for (int d = 0; rc == 0 && d < N; d++) {
        rc = fast_check_cuda(cudaSetDevice(d), "cudaSetDevice", __FILE__, __LINE__) ||
                     fast_model_open(&dp->dev[d], dir, &local)
                 ? -1
                 : 0;
        dp->N = rc == 0 ? d + 1 : d; /* the models open so far */
    }
    if (rc == 0)
        rc = fast_ep_init(&dp->ep, N, local.bf16, ref.cfg, dp->dev[0].chunk) || upload_layers(dp, &ref) ? -1 : 0;
    model_close(&ref);
    if (rc) {
        char saved[1024];
        snprintf(saved, sizeof saved, "%s", ds_last_error());
        fast_dp_model_close(dp);
        return ds_error("%s", saved);
    }
    CUDA_TRY(cudaSetDevice(0));
    *out = dp;
    return 0;
}

void fast_dp_model_close(FastDpModel *dp)
{
    if (!dp) return;
    for (int l = 0; dp->layers && l < dp->n_layers; l++) fast_ep_free_moe(&dp->ep, &dp->layers[l]);
    free(dp->layers);
    fast_ep_free(&dp->ep);
    for (int d = 0; d < dp->N; d++) {
        cudaSetDevice(d);
        fast_model_close(&dp->dev[d]);
    }
    free(dp);
    cudaSetDevice(0);
}

void fast_dp_model_reset(FastDpModel *dp)
{
    for (int d = 0; d < dp->N; d++) fast_model_reset(&dp->dev[d]);
}

/* Records the last error again, prefixed with the device it happened on. \return −1. */
static int on_device(int d)
{
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", ds_last_error());
    return ds_error("fast_dp_model_forward: device %d: %s", d, saved);
}

// ANCHOR: fast_dp_moe
/* MoE layer l over the group: device d's n[d] rows of a (its FastModel's FFN input) in, b out; each device's
 * group stream waits for its model stream and the model stream for the group (events, no host wait). */
static int moe_layer(FastDpModel *dp, int l, const int *n)
{
    const float *x[FAST_EP_MAX_DEVICES];
    float *y[FAST_EP_MAX_DEVICES];
    for (int d = 0; d < dp->N; d++) { /* inputs written on the model's stream */
        x[d] = dp->dev[d].a;
        y[d] = dp->dev[d].b;
        if (fast_ep_wait_inputs(&dp->ep, d, dp->dev[d].ctx.stream, false)) return -1;
    }
    if (fast_ep_moe_forward(&dp->ep, &dp->layers[l], dp->dev[0].cfg, y, x, n)) return -1;
    for (int d = 0; d < dp->N; d++) /* outputs in place before the next layer */
        if (fast_ep_signal_outputs(&dp->ep, d, dp->dev[d].ctx.stream, d)) return -1;
    return 0;
}
// ANCHOR_END: fast_dp_moe

// ANCHOR: fast_dp_model_forward
int fast_dp_model_forward(FastDpModel *dp, const int *const *tokens, const int *T, float *const *logits,
                          bool all_positions)
{
    const int N = dp->N, chunk = dp->dev[0].chunk, V = dp->dev[0].cfg->vocab_size;
    int done[FAST_EP_MAX_DEVICES] = { 0 }, total = 0;
    for (int d = 0; d < N; d++) {
        if (T[d] < 0) return ds_error("fast_dp_model_forward: %d tokens on device %d", T[d], d);
        total += T[d];
    }
    if (total == 0) return ds_error("fast_dp_model_forward: no tokens on any device");
    for (;;) { /* one chunk per device per round */
        int n[FAST_EP_MAX_DEVICES], active = 0;
        for (int d = 0; d < N; d++) {
            n[d] = T[d] - done[d] < chunk ? T[d] - done[d] : chunk;
            active += n[d] > 0;
        }
        if (active == 0) break;
        for (int d = 0; d < N; d++) {
            CUDA_TRY(cudaSetDevice(d));
            if (n[d] && fast_model_step_begin(&dp->dev[d], 0, tokens[d] + done[d], n[d]))
                return on_device(d); /* a token or the context: name the device */
        }
        for (int l = 0; l < dp->n_layers; l++) {
            for (int d = 0; d < N; d++) { /* attention: each device, its own cache */
                CUDA_TRY(cudaSetDevice(d));
                if (n[d] && fast_model_layer_attention(&dp->dev[d], l, n[d])) return -1;
            }
            if (dp->dev[0].layers[l].is_moe) { /* every device meets in the exchange */
                if (moe_layer(dp, l, n)) return -1;
                continue;
            }
            for (int d = 0; d < N; d++) {
                CUDA_TRY(cudaSetDevice(d));
                if (n[d] && fast_model_layer_ffn(&dp->dev[d], l, n[d])) return -1;
            }
        }
        for (int d = 0; d < N; d++) { /* logits of the rows asked for */
            const bool last = done[d] + n[d] == T[d];
            float *dst = !logits[d] || !(all_positions || last) ? NULL
                         : all_positions                        ? logits[d] + (size_t)done[d] * V
                                                                : logits[d];
            CUDA_TRY(cudaSetDevice(d));
            if (n[d] && fast_model_step_end(&dp->dev[d], 0, n[d], all_positions ? 0 : n[d] - 1, dst)) return -1;
            done[d] += n[d];
        }
    }
    for (int d = 0; d < N; d++) {
        CUDA_TRY(cudaSetDevice(d));
        CUDA_TRY(cudaStreamSynchronize(dp->dev[d].ctx.stream));
    }
    CUDA_TRY(cudaSetDevice(0));
    return 0;
}
// ANCHOR_END: fast_dp_model_forward
