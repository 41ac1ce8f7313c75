/**
 * \file train_model.c
 * \brief Whole-model loss and gradients over float32 parameters (see train_model.h).
 */
#include "train_model.h"

#include "balance.h"
#include "error.h"
#include "rmsnorm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters: one flat float32 array ------------------------------------------------ */

/* Walks every weight in a fixed order, advancing *off; when params is not NULL, widens the
 * source into params + *off and points dst there. */
typedef struct {
    float *params;
    size_t off;
} Layout;

static void take_mat(Layout *L, Mat *dst, const Mat *src)
{
    const size_t n = (size_t)src->rows * src->cols;
    if (L->params) {
        dtype_widen(L->params + L->off, src->data, src->dtype, 0, n);
        *dst = (Mat){ L->params + L->off, DT_F32, src->rows, src->cols };
    }
    L->off += n;
}

static void take_vec(Layout *L, const float **dst, const float *src, int n)
{
    if (L->params) {
        memcpy(L->params + L->off, src, sizeof(float) * n);
        *dst = L->params + L->off;
    }
    L->off += n;
}

static void take_swiglu(Layout *L, SwigluWeights *dst, const SwigluWeights *src)
{
    take_mat(L, &dst->gate, &src->gate);
    take_mat(L, &dst->up, &src->up);
    take_mat(L, &dst->down, &src->down);
}

static void take_all(Layout *L, TrainModel *tm, const Model *m)
{
    const ModelConfig *c = m->cfg;
    const int E = c->n_routed_experts;
    take_mat(L, &tm->embed, &m->embed);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const LayerWeights *s = &m->layers[l];
        LayerWeights *d = &tm->layers[l];
        take_vec(L, &d->attn_norm, s->attn_norm, c->hidden_size);
        if (c->attention_type != ATTN_MLA) { /* W^Q, W^K, W^V, W^O of standard attention */
            take_mat(L, &d->std.q_proj, &s->std.q_proj);
            take_mat(L, &d->std.k_proj, &s->std.k_proj);
            take_mat(L, &d->std.v_proj, &s->std.v_proj);
            take_mat(L, &d->std.o_proj, &s->std.o_proj);
        } else if (c->q_lora_rank) {
            take_mat(L, &d->attn.q_a_proj, &s->attn.q_a_proj);
            take_vec(L, &d->attn.q_a_norm, s->attn.q_a_norm, c->q_lora_rank);
            take_mat(L, &d->attn.q_b_proj, &s->attn.q_b_proj);
        } else {
            take_mat(L, &d->attn.q_proj, &s->attn.q_proj);
        }
        if (c->attention_type == ATTN_MLA) {
            take_mat(L, &d->attn.kv_a_proj, &s->attn.kv_a_proj);
            take_vec(L, &d->attn.kv_a_norm, s->attn.kv_a_norm, c->kv_lora_rank);
            take_mat(L, &d->attn.kv_b_proj, &s->attn.kv_b_proj);
            take_mat(L, &d->attn.o_proj, &s->attn.o_proj);
        }
        take_vec(L, &d->ffn_norm, s->ffn_norm, c->hidden_size);
        d->is_moe = s->is_moe;
        if (!s->is_moe) {
            take_swiglu(L, &d->dense, &s->dense);
            continue;
        }
        take_mat(L, &d->moe.router, &s->moe.router);
        if (s->moe.bias) take_vec(L, &d->moe.bias, s->moe.bias, E);
        d->moe.experts = tm->experts + (size_t)l * E;
        for (int e = 0; e < E; e++) take_swiglu(L, &d->moe.experts[e], &s->moe.experts[e]);
        if (c->n_shared_experts > 0) take_swiglu(L, &d->moe.shared, &s->moe.shared);
    }
    take_vec(L, &tm->final_norm, m->final_norm, c->hidden_size);
    take_mat(L, &tm->lm_head, &m->lm_head);
}

int train_model_init(TrainModel *tm, const Model *m, const TrainOptions *opt)
{
    memset(tm, 0, sizeof *tm);
    tm->cfg = *m->cfg;
    tm->rope = m->rope;
    if (opt) tm->opt = *opt;
    const ModelConfig *c = &tm->cfg;
    if (c->scoring_func == SCORING_SIGMOID && (tm->opt.alpha1 || tm->opt.alpha2 || tm->opt.alpha3))
        return ds_error("scoring_func sigmoid: the balance losses are defined for softmax affinities only");
    if (tm->opt.alpha1 < 0 || tm->opt.alpha2 < 0 || tm->opt.alpha3 < 0 || tm->opt.capacity_factor < 0)
        return ds_error("training options: alpha1/alpha2/alpha3/capacity_factor must be ≥ 0");
    const int E = c->n_routed_experts;
    tm->layers = calloc((size_t)c->num_hidden_layers, sizeof *tm->layers);
    tm->experts = calloc((size_t)c->num_hidden_layers * (E ? E : 1), sizeof *tm->experts);
    Layout count = { NULL, 0 };
    if (tm->layers && tm->experts) take_all(&count, tm, m);
    tm->n_params = count.off;
    tm->params = malloc(sizeof(float) * (count.off ? count.off : 1));
    tm->grads = calloc(count.off ? count.off : 1, sizeof(float));
    if (!tm->layers || !tm->experts || !tm->params || !tm->grads) {
        train_model_free(tm);
        return ds_error("out of memory for the training copy of the weights");
    }
    Layout fill = { tm->params, 0 };
    take_all(&fill, tm, m);
    return 0;
}

void train_model_free(TrainModel *tm)
{
    free(tm->params);
    free(tm->grads);
    free(tm->layers);
    free(tm->experts);
    memset(tm, 0, sizeof *tm);
}

float *train_grad(const TrainModel *tm, const void *p)
{
    return tm->grads + ((const float *)p - tm->params);
}

/* ---- loss pieces ----------------------------------------------------------------------- */

// ANCHOR: embedding_backward
void embedding_backward(float *dE, const float *dh, const int *tokens, int T, int D)
{
    for (int t = 0; t < T; t++) /* h⁰_t = E[token_t]: a row lookup, so a scatter-add */
        for (int d = 0; d < D; d++) dE[(size_t)tokens[t] * D + d] += dh[(size_t)t * D + d];
}
// ANCHOR_END: embedding_backward

// ANCHOR: cross_entropy
double cross_entropy(float *dlogits, const float *logits, const int *targets, int T, int V)
{
    double loss = 0, *e = malloc(sizeof(double) * (size_t)V); /* e^{z_v − max}, kept for dz (else recomputed) */
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * V;
        float *dz = dlogits + (size_t)t * V;
        double max = z[0], sum = 0;
        for (int v = 1; v < V; v++) max = z[v] > max ? z[v] : max;
        for (int v = 0; v < V; v++) {
            const double ev = exp(z[v] - max);
            if (e) e[v] = ev;
            sum += ev;
        }
        loss += log(sum) + max - z[targets[t]]; /* log Σ e^z − z_target */
        for (int v = 0; v < V; v++) dz[v] = (float)((e ? e[v] : exp(z[v] - max)) / sum / T);
        dz[targets[t]] -= 1.0f / (float)T;
    }
    free(e);
    return loss / T;
}
// ANCHOR_END: cross_entropy

/* ---- forward keeping the residual stream, then backward -------------------------------- */

/* Working memory of one train_accumulate() call. */
typedef struct {
    float *h_in;                 /* [L + 1, T, D] residual stream entering layer l (row L: after the last) */
    float *h_mid;                /* [L, T, D] after layer l's attention */
    float *a, *b, *da, *dx, *dh; /* [T, D] */
    float *logits;               /* [T, V] */
    float *dlogits;              /* [T, V] */
    bool *keep;                  /* [L, T, K] pairs that survive token dropping */
    float *aux;                  /* [L, T, E] the balance losses' ∂/∂(router logits) */
    double *aux_d;               /* [T, E] balance_losses() output */
    SwigluGrads *expert_grads;   /* [E] */
    double scale;                /* the weight of this sequence's loss in the accumulated gradient */
    LatentCache cache;
    MlaScratch mla;
    FfnScratch ffn;
} Work;

static void work_free(Work *w)
{
    free(w->h_in);
    free(w->h_mid);
    free(w->a);
    free(w->b);
    free(w->da);
    free(w->dx);
    free(w->dh);
    free(w->logits);
    free(w->dlogits);
    free(w->keep);
    free(w->aux);
    free(w->aux_d);
    free(w->expert_grads);
    latent_cache_free(&w->cache);
    mla_scratch_free(&w->mla);
    ffn_scratch_free(&w->ffn);
}

static int work_init(Work *w, const ModelConfig *c, int T)
{
    const size_t L = c->num_hidden_layers, D = c->hidden_size, V = c->vocab_size, n = (size_t)T * D;
    const size_t E = c->n_routed_experts ? c->n_routed_experts : 1;
    const size_t K = c->num_experts_per_tok ? c->num_experts_per_tok : 1;
    memset(w, 0, sizeof *w);
    w->h_in = malloc(sizeof(float) * (L + 1) * n);
    w->h_mid = malloc(sizeof(float) * L * n);
    w->a = malloc(sizeof(float) * n);
    w->b = malloc(sizeof(float) * n);
    w->da = malloc(sizeof(float) * n);
    w->dx = malloc(sizeof(float) * n);
    w->dh = malloc(sizeof(float) * n);
    w->logits = malloc(sizeof(float) * T * V);
    w->dlogits = malloc(sizeof(float) * T * V);
    w->keep = malloc(sizeof(bool) * L * T * K);
    w->aux = calloc(L * T * E, sizeof(float));
    w->aux_d = malloc(sizeof(double) * T * E);
    w->expert_grads = malloc(sizeof(SwigluGrads) * E);
    if (!w->h_in || !w->h_mid || !w->a || !w->b || !w->da || !w->dx || !w->dh || !w->logits || !w->dlogits ||
        !w->keep || !w->aux || !w->aux_d || !w->expert_grads || latent_cache_init(&w->cache, c, T) ||
        mla_scratch_init(&w->mla, c, T, T) || ffn_scratch_init(&w->ffn, c, T)) {
        work_free(w);
        return ds_error("out of memory for training on %d tokens", T);
    }
    return 0;
}

/* The MoE layer's forward for training: route, drop, balance losses (their logit gradient kept
 * for the backward), then the experts on the kept pairs. Returns the layer's balance loss. */
static double moe_layer_forward(TrainModel *tm, Work *w, int l, int T, TrainLoss *out)
{
    const ModelConfig *c = &tm->cfg;
    const LayerWeights *L = &tm->layers[l];
    const int E = c->n_routed_experts, K = c->num_experts_per_tok;
    bool *keep = w->keep + (size_t)l * T * K;
    moe_route(w->a, &L->moe, c, T, &w->ffn);
    for (int r = 0; r < T * K; r++) keep[r] = true;
    if (tm->opt.capacity_factor > 0)
        out->dropped +=
            drop_tokens(keep, w->ffn.expert, w->ffn.weight, NULL, T, K, E, c->n_group, tm->opt.capacity_factor);
    if (tm->load)
        for (int r = 0; r < T * K; r++) tm->load[(size_t)l * E + w->ffn.expert[r]] += keep[r];
    double loss = 0;
    if (tm->opt.alpha1 || tm->opt.alpha2 || tm->opt.alpha3) {
        const BalanceSpec spec = { .E = E,
                                   .K = K,
                                   .D = c->n_group,
                                   .M = c->topk_group,
                                   .alpha1 = tm->opt.alpha1,
                                   .alpha2 = tm->opt.alpha2,
                                   .alpha3 = tm->opt.alpha3 };
        BalanceLosses bl = balance_losses(w->ffn.scores, w->ffn.expert, T, &spec, w->aux_d);
        loss = bl.expert + bl.device + bl.comm;
        out->exp_bal += bl.expert;
        out->dev_bal += bl.device;
        out->comm_bal += bl.comm;
        float *aux = w->aux + (size_t)l * T * E;
        for (size_t i = 0; i < (size_t)T * E; i++) aux[i] = (float)(w->scale * w->aux_d[i]);
    }
    moe_forward_kept(w->b, w->a, &L->moe, c, T, keep, &w->ffn);
    return loss;
}

static int forward(TrainModel *tm, Work *w, const int *tokens, int T, TrainLoss *out)
{
    const ModelConfig *c = &tm->cfg;
    const int D = c->hidden_size;
    const size_t n = (size_t)T * D;
    for (int t = 0; t < T; t++) /* h⁰_t = embed[token_t] */
        memcpy(w->h_in + (size_t)t * D, (const float *)tm->embed.data + (size_t)tokens[t] * D, sizeof(float) * D);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const LayerWeights *L = &tm->layers[l];
        float *h = w->h_in + l * n, *h_mid = w->h_mid + l * n, *h_next = w->h_in + (l + 1) * n;
        rmsnorm_forward(w->a, h, L->attn_norm, T, D, c->rms_norm_eps);
        if (c->attention_type != ATTN_MLA) {
            if (attn_std_forward(w->b, w->a, &L->std, c, &tm->rope, T)) return -1;
        } else {
            mla_forward(w->b, w->a, &L->attn, &w->cache, c, &tm->rope, 0, T, MLA_EXPANDED, &w->mla);
        }
        for (size_t i = 0; i < n; i++) h_mid[i] = h[i] + w->b[i];
        rmsnorm_forward(w->a, h_mid, L->ffn_norm, T, D, c->rms_norm_eps);
        if (L->is_moe)
            out->balance += moe_layer_forward(tm, w, l, T, out);
        else
            swiglu_forward(w->b, w->a, &L->dense, T, w->ffn.hidden);
        for (size_t i = 0; i < n; i++) h_next[i] = h_mid[i] + w->b[i];
    }
    rmsnorm_forward(w->a, w->h_in + c->num_hidden_layers * n, tm->final_norm, T, D, c->rms_norm_eps);
    linear(w->logits, w->a, &tm->lm_head, T);
    return 0;
}

static MlaGrads mla_grads(const TrainModel *tm, const MlaWeights *a)
{
    MlaGrads g = { 0 };
    if (tm->cfg.q_lora_rank) {
        g.q_a_proj = train_grad(tm, a->q_a_proj.data);
        g.q_a_norm = train_grad(tm, a->q_a_norm);
        g.q_b_proj = train_grad(tm, a->q_b_proj.data);
    } else {
        g.q_proj = train_grad(tm, a->q_proj.data);
    }
    g.kv_a_proj = train_grad(tm, a->kv_a_proj.data);
    g.kv_a_norm = train_grad(tm, a->kv_a_norm);
    g.kv_b_proj = train_grad(tm, a->kv_b_proj.data);
    g.o_proj = train_grad(tm, a->o_proj.data);
    return g;
}

static SwigluGrads swiglu_grads(const TrainModel *tm, const SwigluWeights *s)
{
    return (SwigluGrads){ train_grad(tm, s->gate.data), train_grad(tm, s->up.data), train_grad(tm, s->down.data) };
}

/* Backward through FFN_l(RMSNorm(h_mid)): dh += ∂/∂h_mid, given dh = ∂L/∂(layer output). */
static int ffn_backward(TrainModel *tm, Work *w, int l, int T)
{
    const ModelConfig *c = &tm->cfg;
    const LayerWeights *L = &tm->layers[l];
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok;
    const size_t n = (size_t)T * D;
    const float *h_mid = w->h_mid + l * n;
    rmsnorm_forward(w->a, h_mid, L->ffn_norm, T, D, c->rms_norm_eps);
    int rc;
    if (L->is_moe) {
        MoeGrads g = { train_grad(tm, L->moe.router.data), w->expert_grads, { 0 } };
        for (int e = 0; e < E; e++) w->expert_grads[e] = swiglu_grads(tm, &L->moe.experts[e]);
        if (c->n_shared_experts > 0) g.shared = swiglu_grads(tm, &L->moe.shared);
        const bool any_aux = tm->opt.alpha1 || tm->opt.alpha2 || tm->opt.alpha3;
        rc = moe_backward(w->da, &g, w->dh, w->a, &L->moe, c, T, w->keep + (size_t)l * T * K,
                          any_aux ? w->aux + (size_t)l * T * E : NULL);
    } else {
        SwigluGrads g = swiglu_grads(tm, &L->dense);
        rc = swiglu_backward(w->da, &g, w->dh, w->a, &L->dense, T);
    }
    if (rc) return rc;
    rmsnorm_backward(w->dx, train_grad(tm, L->ffn_norm), w->da, h_mid, L->ffn_norm, T, D, c->rms_norm_eps);
    for (size_t i = 0; i < n; i++) w->dh[i] += w->dx[i]; /* the residual path adds dh itself */
    return 0;
}

/* Backward through MLA(RMSNorm(h_in)), or standard attention: dh += ∂/∂h_in. */
static int attn_backward(TrainModel *tm, Work *w, int l, int T)
{
    const ModelConfig *c = &tm->cfg;
    const LayerWeights *L = &tm->layers[l];
    const int D = c->hidden_size;
    const size_t n = (size_t)T * D;
    const float *h = w->h_in + l * n;
    rmsnorm_forward(w->a, h, L->attn_norm, T, D, c->rms_norm_eps);
    if (c->attention_type != ATTN_MLA) {
        const StdAttnWeights *s = &L->std;
        const StdAttnGrads g = { train_grad(tm, s->q_proj.data), train_grad(tm, s->k_proj.data),
                                 train_grad(tm, s->v_proj.data), train_grad(tm, s->o_proj.data) };
        if (attn_std_backward(w->da, &g, w->dh, w->a, s, c, &tm->rope, T)) return -1;
    } else {
        MlaGrads g = mla_grads(tm, &L->attn);
        if (mla_backward(w->da, &g, w->dh, w->a, &L->attn, c, &tm->rope, T)) return -1;
    }
    rmsnorm_backward(w->dx, train_grad(tm, L->attn_norm), w->da, h, L->attn_norm, T, D, c->rms_norm_eps);
    for (size_t i = 0; i < n; i++) w->dh[i] += w->dx[i];
    return 0;
}

// ANCHOR: train_accumulate
int train_accumulate(TrainModel *tm, const int *tokens, const int *targets, int T, double scale, TrainLoss *out)
{
    const ModelConfig *c = &tm->cfg;
    const int D = c->hidden_size, V = c->vocab_size, nl = c->num_hidden_layers;
    if (T < 1) return ds_error("training needs at least one token (got %d)", T);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V || targets[t] < 0 || targets[t] >= V)
            return ds_error("training token %d: id %d → target %d outside the vocabulary [0, %d)", t, tokens[t],
                            targets[t], V);
    Work w;
    if (work_init(&w, c, T)) return -1;
    w.scale = scale;
    *out = (TrainLoss){ 0 };
    if (forward(tm, &w, tokens, T, out)) {
        work_free(&w);
        return -1;
    }
    out->ce = cross_entropy(w.dlogits, w.logits, targets, T, V);
    out->loss = out->ce + out->balance;
    for (size_t i = 0; i < (size_t)T * V; i++) w.dlogits[i] = (float)(scale * w.dlogits[i]);
    /* logits = W_head RMSNorm(h^L) */
    const float *h_last = w.h_in + (size_t)nl * T * D;
    rmsnorm_forward(w.a, h_last, tm->final_norm, T, D, c->rms_norm_eps);
    linear_backward(w.da, train_grad(tm, tm->lm_head.data), w.dlogits, w.a, &tm->lm_head, T);
    rmsnorm_backward(w.dh, train_grad(tm, tm->final_norm), w.da, h_last, tm->final_norm, T, D, c->rms_norm_eps);
    int rc = 0;
    for (int l = nl - 1; l >= 0 && rc == 0; l--) /* h'' = h' + FFN(·), h' = h + MLA(·), reversed */
        rc = ffn_backward(tm, &w, l, T) || attn_backward(tm, &w, l, T) ? -1 : 0;
    if (rc == 0) embedding_backward(train_grad(tm, tm->embed.data), w.dh, tokens, T, D);
    work_free(&w);
    return rc;
}
// ANCHOR_END: train_accumulate

// ANCHOR: train_forward_backward
int train_forward_backward(TrainModel *tm, const int *tokens, const int *targets, int T, TrainLoss *out)
{
    memset(tm->grads, 0, sizeof(float) * tm->n_params);
    return train_accumulate(tm, tokens, targets, T, 1.0, out);
}
// ANCHOR_END: train_forward_backward

/* ---- parameters by checkpoint name ---------------------------------------------------- */

typedef struct {
    const char *name;
    const float *found;
} Lookup;

static void match(void *ctx, const char *name, const float *p, int rows, int cols)
{
    Lookup *k = ctx;
    (void)rows;
    (void)cols;
    if (!strcmp(name, k->name)) k->found = p;
}

float *train_param(const TrainModel *tm, const char *name)
{
    Lookup k = { name, NULL };
    train_params_each(tm, match, &k);
    if (!k.found) {
        ds_error("no training parameter named '%s'", name);
        return NULL;
    }
    return tm->params + (k.found - tm->params);
}

// ANCHOR: train_params_each
static void each_swiglu(const SwigluWeights *w, const char *prefix, TrainParamFn fn, void *ctx)
{
    char name[192];
    snprintf(name, sizeof name, "%sgate_proj.weight", prefix);
    fn(ctx, name, w->gate.data, w->gate.rows, w->gate.cols);
    snprintf(name, sizeof name, "%sup_proj.weight", prefix);
    fn(ctx, name, w->up.data, w->up.rows, w->up.cols);
    snprintf(name, sizeof name, "%sdown_proj.weight", prefix);
    fn(ctx, name, w->down.data, w->down.rows, w->down.cols);
}

void train_params_each(const TrainModel *tm, TrainParamFn fn, void *ctx)
{
    const ModelConfig *c = &tm->cfg;
    const int D = c->hidden_size;
    char name[192], pre[96];
    fn(ctx, "model.embed_tokens.weight", tm->embed.data, tm->embed.rows, tm->embed.cols);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const LayerWeights *L = &tm->layers[l];
        const MlaWeights *a = &L->attn;
        const StdAttnWeights *sa = &L->std;
        const struct {
            const char *suffix;
            const void *p;
            int rows, cols;
        } t[] = {
            { "input_layernorm.weight", L->attn_norm, D, 0 },
            { "self_attn.q_proj.weight", a->q_proj.data, a->q_proj.rows, a->q_proj.cols },
            { "self_attn.q_a_proj.weight", a->q_a_proj.data, a->q_a_proj.rows, a->q_a_proj.cols },
            { "self_attn.q_a_layernorm.weight", a->q_a_norm, c->q_lora_rank, 0 },
            { "self_attn.q_b_proj.weight", a->q_b_proj.data, a->q_b_proj.rows, a->q_b_proj.cols },
            { "self_attn.kv_a_proj_with_mqa.weight", a->kv_a_proj.data, a->kv_a_proj.rows, a->kv_a_proj.cols },
            { "self_attn.kv_a_layernorm.weight", a->kv_a_norm, c->kv_lora_rank, 0 },
            { "self_attn.kv_b_proj.weight", a->kv_b_proj.data, a->kv_b_proj.rows, a->kv_b_proj.cols },
            { "self_attn.o_proj.weight", a->o_proj.data, a->o_proj.rows, a->o_proj.cols },
            { "self_attn.q_proj.weight", sa->q_proj.data, sa->q_proj.rows, sa->q_proj.cols },
            { "self_attn.k_proj.weight", sa->k_proj.data, sa->k_proj.rows, sa->k_proj.cols },
            { "self_attn.v_proj.weight", sa->v_proj.data, sa->v_proj.rows, sa->v_proj.cols },
            { "self_attn.o_proj.weight", sa->o_proj.data, sa->o_proj.rows, sa->o_proj.cols },
            { "post_attention_layernorm.weight", L->ffn_norm, D, 0 },
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            if (!t[i].p) continue; /* q_proj or the q_a/q_b pair, not both; MLA or standard attention */
            snprintf(name, sizeof name, "model.layers.%d.%s", l, t[i].suffix);
            fn(ctx, name, t[i].p, t[i].rows, t[i].cols);
        }
        if (!L->is_moe) {
            snprintf(pre, sizeof pre, "model.layers.%d.mlp.", l);
            each_swiglu(&L->dense, pre, fn, ctx);
            continue;
        }
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate.weight", l);
        fn(ctx, name, L->moe.router.data, L->moe.router.rows, L->moe.router.cols);
        if (L->moe.bias) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
            fn(ctx, name, L->moe.bias, c->n_routed_experts, 0);
        }
        for (int e = 0; e < c->n_routed_experts; e++) {
            snprintf(pre, sizeof pre, "model.layers.%d.mlp.experts.%d.", l, e);
            each_swiglu(&L->moe.experts[e], pre, fn, ctx);
        }
        if (c->n_shared_experts > 0) {
            snprintf(pre, sizeof pre, "model.layers.%d.mlp.shared_experts.", l);
            each_swiglu(&L->moe.shared, pre, fn, ctx);
        }
    }
    fn(ctx, "model.norm.weight", tm->final_norm, D, 0);
    fn(ctx, "lm_head.weight", tm->lm_head.data, tm->lm_head.rows, tm->lm_head.cols);
}
// ANCHOR_END: train_params_each
