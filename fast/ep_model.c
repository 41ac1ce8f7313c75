/**
 * \file ep_model.c
 * \brief The whole model's MoE layers expert-parallel (fast_ep.h's FastEpModel): one group, every MoE
 *        layer sharded over it, each chunk's MoE tokens split into contiguous shares, one per device.
 *
 * The simplest honest layout for one sequence: attention needs every earlier position's latent, which
 * lives in device 0's cache, so attention (and the dense FFNs, the embedding and the LM head) run on
 * device 0 for the whole chunk; only the MoE layers are data-parallel over the tokens. Device d receives
 * its share of the normalised inputs by a peer copy, the group routes, dispatches and combines
 * (fast_ep_moe_forward()), and the outputs come back the same way. Events order the group's streams
 * after the model's and the model's after the group's, so a decode step never waits for the host.
 */
#include "fast_ep.h"

#include "error.h"

#include <stdlib.h>

size_t fast_ep_share_bytes(const ModelConfig *cfg, int max_T)
{
    return sizeof(float) * (size_t)max_T * cfg->hidden_size;
}

int fast_ep_model_open(FastEpModel **out, const Model *ref, int N, bool bf16, int chunk)
{
    const ModelConfig *c = ref->cfg;
    FastEpModel *em = calloc(1, sizeof *em);
    *out = NULL;
    if (!em) return ds_error("fast_ep_model_open: out of host memory");
    em->n_layers = c->num_hidden_layers;
    em->layers = calloc((size_t)em->n_layers, sizeof *em->layers);
    if (!em->layers) {
        fast_ep_model_close(em);
        return ds_error("fast_ep_model_open: out of host memory for %d layers", em->n_layers);
    }
    const int max_T = (chunk + N - 1) / N; /* the largest share of a chunk */
    const size_t bytes = fast_ep_share_bytes(c, max_T);
    int rc = fast_ep_init(&em->ep, N, bf16, c, max_T);
    for (int l = 0; rc == 0 && l < em->n_layers; l++)
        if (ref->layers[l].is_moe) rc = fast_ep_upload_moe(&em->ep, &em->layers[l], &ref->layers[l].moe, c);
    for (int d = 1; rc == 0 && d < N; d++) /* device 0's share stays in the model's rows */
        rc = fast_check_cuda(cudaSetDevice(d), "cudaSetDevice", __FILE__, __LINE__) ||
                     fast_check_cuda(cudaMalloc((void **)&em->x[d], bytes), "cudaMalloc(share in)", __FILE__,
                                     __LINE__) ||
                     fast_check_cuda(cudaMalloc((void **)&em->y[d], bytes), "cudaMalloc(share out)", __FILE__, __LINE__)
                 ? -1
                 : 0;
    if (rc == 0) rc = fast_check_cuda(cudaSetDevice(0), "cudaSetDevice(0)", __FILE__, __LINE__);
    if (rc) {
        fast_ep_model_close(em);
        return -1;
    }
    *out = em;
    return 0;
}

void fast_ep_model_close(FastEpModel *em)
{
    if (!em) return;
    for (int l = 0; em->layers && l < em->n_layers; l++) fast_ep_free_moe(&em->ep, &em->layers[l]);
    for (int d = 1; d < em->ep.N; d++) {
        cudaSetDevice(d);
        cudaFree(em->x[d]);
        cudaFree(em->y[d]);
    }
    fast_ep_free(&em->ep);
    free(em->layers);
    free(em);
    cudaSetDevice(0);
}

// ANCHOR: fast_ep_model_moe
int fast_ep_model_moe(FastEpModel *em, int l, const ModelConfig *cfg, float *y, const float *x, int T,
                      cudaStream_t stream)
{
    FastEp *ep = &em->ep;
    const int N = ep->N;
    const size_t D = (size_t)cfg->hidden_size;
    int n[FAST_EP_MAX_DEVICES], first[FAST_EP_MAX_DEVICES];
    const float *xs[FAST_EP_MAX_DEVICES] = { x };
    float *ys[FAST_EP_MAX_DEVICES] = { y };
    for (int d = 0, t = 0; d < N; t += n[d], d++) { /* contiguous shares, the larger ones first */
        n[d] = T / N + (d < T % N);
        first[d] = t;
    }
    for (int d = 1; d < N; d++) {
        xs[d] = em->x[d];
        ys[d] = em->y[d];
        if (n[d]) CUDA_TRY(cudaMemcpyPeerAsync(em->x[d], d, x + first[d] * D, 0, sizeof(float) * n[d] * D, stream));
    }
    /* ordered by events, not by the host: the group after the inputs, the model stream after the group */
    if (fast_ep_wait_inputs(ep, 0, stream, true) || fast_ep_moe_forward(ep, &em->layers[l], cfg, ys, xs, n)) return -1;
    for (int d = 0; d < N; d++)
        if (fast_ep_signal_outputs(ep, d, stream, 0)) return -1;
    CUDA_TRY(cudaSetDevice(0));
    for (int d = 1; d < N; d++) /* ordered before the model's next kernels */
        if (n[d]) CUDA_TRY(cudaMemcpyPeerAsync(y + first[d] * D, 0, em->y[d], d, sizeof(float) * n[d] * D, stream));
    return 0;
}
// ANCHOR_END: fast_ep_model_moe
