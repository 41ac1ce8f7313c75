/**
 * \file model.c
 * \brief Model assembly: weights from the checkpoint, the decoder loop (see model.h).
 */
#include "model.h"

#include "error.h"
#include "rmsnorm.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- binding checkpoint tensors to the weight structs ---------------------------------- */

typedef struct {
    Model *m;
    float *norm_next; /* next free float in m->norms */
} Binder;

/* rows and cols are products of config keys, formed in int64_t; config_load() bounds each key and
 * the shared-expert width so they fit Mat's int extents, which this checks once more. */
static int bind_mat(Binder *b, Mat *out, int64_t rows, int64_t cols, const char *fmt, int l, int e)
{
    char name[256];
    snprintf(name, sizeof name, fmt, l, e);
    if (rows > INT_MAX || cols > INT_MAX)
        return ds_error("%s: tensor '%s': the config implies [%lld, %lld], beyond a matrix's int "
                        "extents",
                        b->m->ck.dir, name, (long long)rows, (long long)cols);
    const int64_t shape[2] = { rows, cols };
    const StTensor *t = checkpoint_tensor(&b->m->ck, name, 2, shape);
    if (!t) return -1;
    *out = (Mat){ t->data, t->dtype, (int)rows, (int)cols };
    return 0;
}

/* A vector (norm weight, bias) widened once into m->norms. */
static int bind_vec(Binder *b, const float **out, int n, const char *fmt, int l)
{
    char name[256];
    snprintf(name, sizeof name, fmt, l);
    const int64_t shape[1] = { n };
    const StTensor *t = checkpoint_tensor(&b->m->ck, name, 1, shape);
    if (!t) return -1;
    dtype_widen(b->norm_next, t->data, t->dtype, 0, (size_t)n);
    *out = b->norm_next;
    b->norm_next += n;
    return 0;
}

static int bind_swiglu(Binder *b, SwigluWeights *w, int64_t I, const char *prefix, int l, int e)
{
    const int D = b->m->cfg->hidden_size;
    char fmt[160];
    const char *dot = *prefix ? "." : ""; /* dense: mlp.gate_proj; experts: mlp.experts.%d.gate_proj */
    snprintf(fmt, sizeof fmt, "model.layers.%%d.mlp.%s%sgate_proj.weight", prefix, dot);
    if (bind_mat(b, &w->gate, I, D, fmt, l, e)) return -1;
    snprintf(fmt, sizeof fmt, "model.layers.%%d.mlp.%s%sup_proj.weight", prefix, dot);
    if (bind_mat(b, &w->up, I, D, fmt, l, e)) return -1;
    snprintf(fmt, sizeof fmt, "model.layers.%%d.mlp.%s%sdown_proj.weight", prefix, dot);
    return bind_mat(b, &w->down, D, I, fmt, l, e);
}

/* Standard attention's four projections (attention_type mha / gqa / mqa; trained, not run here). */
static int bind_std_attention(Binder *b, StdAttnWeights *w, int l)
{
    const ModelConfig *c = b->m->cfg;
    const int64_t D = c->hidden_size, nh = c->num_attention_heads, ng = c->num_key_value_heads;
    const int64_t dh = config_qk_head_dim(c), dv = c->v_head_dim;
    return bind_mat(b, &w->q_proj, nh * dh, D, "model.layers.%d.self_attn.q_proj.weight", l, 0) ||
                   bind_mat(b, &w->k_proj, ng * dh, D, "model.layers.%d.self_attn.k_proj.weight", l, 0) ||
                   bind_mat(b, &w->v_proj, ng * dv, D, "model.layers.%d.self_attn.v_proj.weight", l, 0) ||
                   bind_mat(b, &w->o_proj, D, nh * dv, "model.layers.%d.self_attn.o_proj.weight", l, 0)
               ? -1
               : 0;
}

static int bind_attention(Binder *b, MlaWeights *w, int l)
{
    const ModelConfig *c = b->m->cfg;
    const int64_t D = c->hidden_size, nh = c->num_attention_heads, dq = config_qk_head_dim(c);
    const int64_t dc = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    if (c->attention_type != ATTN_MLA) return bind_std_attention(b, &b->m->layers[l].std, l);
    if (c->q_lora_rank) {
        if (bind_mat(b, &w->q_a_proj, c->q_lora_rank, D, "model.layers.%d.self_attn.q_a_proj.weight", l, 0) ||
            bind_vec(b, &w->q_a_norm, c->q_lora_rank, "model.layers.%d.self_attn.q_a_layernorm.weight", l) ||
            bind_mat(b, &w->q_b_proj, nh * dq, c->q_lora_rank, "model.layers.%d.self_attn.q_b_proj.weight", l, 0))
            return -1;
    } else if (bind_mat(b, &w->q_proj, nh * dq, D, "model.layers.%d.self_attn.q_proj.weight", l, 0)) {
        return -1;
    }
    return bind_mat(b, &w->kv_a_proj, dc + dr, D, "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", l, 0) ||
                   bind_vec(b, &w->kv_a_norm, dc, "model.layers.%d.self_attn.kv_a_layernorm.weight", l) ||
                   bind_mat(b, &w->kv_b_proj, nh * (c->qk_nope_head_dim + c->v_head_dim), dc,
                            "model.layers.%d.self_attn.kv_b_proj.weight", l, 0) ||
                   bind_mat(b, &w->o_proj, D, nh * c->v_head_dim, "model.layers.%d.self_attn.o_proj.weight", l, 0)
               ? -1
               : 0;
}

static int bind_layer(Binder *b, int l, SwigluWeights *experts)
{
    const ModelConfig *c = b->m->cfg;
    LayerWeights *L = &b->m->layers[l];
    const int D = c->hidden_size, E = c->n_routed_experts;
    if (bind_vec(b, &L->attn_norm, D, "model.layers.%d.input_layernorm.weight", l) || bind_attention(b, &L->attn, l) ||
        bind_vec(b, &L->ffn_norm, D, "model.layers.%d.post_attention_layernorm.weight", l))
        return -1;
    L->is_moe = config_layer_is_moe(c, l);
    if (!L->is_moe) return bind_swiglu(b, &L->dense, c->intermediate_size, "", l, 0);
    MoeWeights *moe = &L->moe;
    moe->experts = experts;
    if (bind_mat(b, &moe->router, E, D, "model.layers.%d.mlp.gate.weight", l, 0)) return -1;
    if (c->topk_method == TOPK_NOAUX_TC &&
        bind_vec(b, &moe->bias, E, "model.layers.%d.mlp.gate.e_score_correction_bias", l))
        return -1;
    for (int e = 0; e < E; e++)
        if (bind_swiglu(b, &experts[e], c->moe_intermediate_size, "experts.%d", l, e)) return -1;
    if (c->n_shared_experts > 0 &&
        bind_swiglu(b, &moe->shared, (int64_t)c->n_shared_experts * c->moe_intermediate_size, "shared_experts", l, 0))
        return -1;
    return 0;
}

static int bind_weights(Model *m)
{
    const ModelConfig *c = m->cfg;
    const int L = c->num_hidden_layers, D = c->hidden_size, E = c->n_routed_experts;
    size_t n_norm = (size_t)D * (2 * (size_t)L + 1) + (size_t)L * ((size_t)c->kv_lora_rank + c->q_lora_rank + E);
    m->norms = malloc(sizeof(float) * n_norm);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    m->experts = calloc((size_t)L * (E ? E : 1), sizeof *m->experts);
    if (!m->norms || !m->layers || !m->experts) return ds_error("%s: out of memory", m->ck.dir);
    Binder b = { m, m->norms };
    if (bind_mat(&b, &m->embed, c->vocab_size, D, "model.embed_tokens.weight", 0, 0) ||
        bind_mat(&b, &m->lm_head, c->vocab_size, D, "lm_head.weight", 0, 0) ||
        bind_vec(&b, &m->final_norm, D, "model.norm.weight", 0))
        return -1;
    for (int l = 0; l < L; l++)
        if (bind_layer(&b, l, m->experts + (size_t)l * E)) return -1;
    return 0;
}

/* ---- open / close ---------------------------------------------------------------------- */

int model_context_size(const ModelConfig *cfg, int requested)
{
    const int want = requested > 0 ? requested : MODEL_DEFAULT_CONTEXT;
    return want < cfg->max_position_embeddings ? want : cfg->max_position_embeddings;
}

int model_open(Model *m, const char *dir, const ModelOptions *opt)
{
    memset(m, 0, sizeof *m);
    if (checkpoint_open(dir, &m->ck)) return -1;
    m->cfg = &m->ck.cfg;
    const ModelConfig *c = m->cfg;
    if (!(opt && opt->for_training) && config_require_mla(c, "inference (generate, chat, logits, fast/)")) {
        checkpoint_close(&m->ck);
        return ds_error("%s: %s", dir, ds_last_error());
    }
    m->max_context = model_context_size(c, opt ? opt->max_context : 0);
    m->chunk = opt && opt->chunk ? opt->chunk : MODEL_DEFAULT_CHUNK;
    m->form = opt ? opt->form : 0;
    const size_t D = c->hidden_size;
    int rc = rope_init(&m->rope, c) || bind_weights(m) ? -1 : 0;
    if (rc == 0) {
        m->cache = calloc((size_t)c->num_hidden_layers, sizeof *m->cache);
        m->h = malloc(sizeof(float) * m->chunk * D);
        m->a = malloc(sizeof(float) * m->chunk * D);
        m->b = malloc(sizeof(float) * m->chunk * D);
        if (!m->cache || !m->h || !m->a || !m->b) rc = ds_error("%s: out of memory", dir);
    }
    for (int l = 0; rc == 0 && l < c->num_hidden_layers; l++) rc = latent_cache_init(&m->cache[l], c, m->max_context);
    if (rc == 0) rc = mla_scratch_init(&m->mla, c, m->chunk, m->max_context);
    if (rc == 0) rc = ffn_scratch_init(&m->ffn, c, m->chunk);
    if (rc) model_close(m); /* releases what was opened; the error line stays */
    return rc;
}

void model_close(Model *m)
{
    if (m->cache)
        for (int l = 0; l < m->ck.cfg.num_hidden_layers; l++) latent_cache_free(&m->cache[l]);
    free(m->cache);
    mla_scratch_free(&m->mla);
    ffn_scratch_free(&m->ffn);
    free(m->h);
    free(m->a);
    free(m->b);
    free(m->layers);
    free(m->experts);
    free(m->norms);
    checkpoint_close(&m->ck);
    memset(m, 0, sizeof *m);
}

void model_reset(Model *m)
{
    m->pos = 0;
}

/* ---- the forward pass ------------------------------------------------------------------ */

// ANCHOR: model_layer
/* One decoder layer on T tokens of the residual stream h (pre-norm, two residual adds). */
static void decoder_layer(Model *m, int l, int T)
{
    const ModelConfig *c = m->cfg;
    const LayerWeights *L = &m->layers[l];
    const size_t n = (size_t)T * c->hidden_size;
    const MlaForm form = m->form == 1   ? MLA_EXPANDED
                         : m->form == 2 ? MLA_ABSORBED
                         : T > 1        ? MLA_EXPANDED
                                        : MLA_ABSORBED;
    rmsnorm_forward(m->a, m->h, L->attn_norm, T, c->hidden_size, c->rms_norm_eps);
    mla_forward(m->b, m->a, &L->attn, &m->cache[l], c, &m->rope, m->pos, T, form, &m->mla);
    for (size_t i = 0; i < n; i++) m->h[i] += m->b[i]; /* h' = h + MLA(RMSNorm(h)) */
    rmsnorm_forward(m->a, m->h, L->ffn_norm, T, c->hidden_size, c->rms_norm_eps);
    if (L->is_moe) {
        moe_forward(m->b, m->a, &L->moe, c, T, &m->ffn);
        if (m->on_moe) m->on_moe(m->on_moe_ctx, l, T, &m->ffn); /* who went where, for dsv2 route-stats */
    } else {
        swiglu_forward(m->b, m->a, &L->dense, T, m->ffn.hidden);
    }
    for (size_t i = 0; i < n; i++) m->h[i] += m->b[i]; /* h'' = h' + FFN(RMSNorm(h')) */
}
// ANCHOR_END: model_layer

// ANCHOR: model_forward
int model_forward(Model *m, const int *tokens, int T, float *logits, bool all_positions)
{
    const ModelConfig *c = m->cfg;
    const int D = c->hidden_size, V = c->vocab_size;
    if (T < 0) return ds_error("a negative token count (%d)", T);
    if (config_require_mla(c, "inference (ref/model.c)")) return -1;
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return ds_error("token id %d at position %d is outside the vocabulary [0, %d)", tokens[t], m->pos + t, V);
    if (T > m->max_context - m->pos)
        return ds_error("%d new tokens at positions %d.. do not fit the context of %d positions (max_context)", T,
                        m->pos, m->max_context);
    for (int t0 = 0; t0 < T; t0 += m->chunk) {
        const int n = T - t0 < m->chunk ? T - t0 : m->chunk;
        for (int t = 0; t < n; t++) /* h⁰_t = embed[token_t] */
            dtype_widen(m->h + (size_t)t * D, m->embed.data, m->embed.dtype, (size_t)tokens[t0 + t] * D, (size_t)D);
        for (int l = 0; l < c->num_hidden_layers; l++) decoder_layer(m, l, n);
        m->pos += n;
        if (!logits) continue;
        const int first = all_positions ? 0 : n - 1;
        if (!all_positions && t0 + n < T) continue;
        rmsnorm_forward(m->a, m->h + (size_t)first * D, m->final_norm, n - first, D, c->rms_norm_eps);
        linear(all_positions ? logits + (size_t)t0 * V : logits, m->a, &m->lm_head, n - first);
    }
    return 0;
}
// ANCHOR_END: model_forward
