/**
 * \file config.c
 * \brief config.json reader and validator (see config.h).
 */
#include "config.h"

#include "error.h"
#include "rope.h"   /* ROPE_MAX_DIM: RoPE's pair buffer bounds qk_rope_head_dim */
#include "router.h" /* ROUTER_MAX_EXPERTS: the router's stack buffers bound n_routed_experts */

#include "jsonfile.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each reader returns 0, or −1 after recording "<file>: key '<key>': <what>". */

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* An integer in [lo, hi]. A missing key is an error unless def is given (has_def). */
static int read_int(const char *file, const json_t *obj, const char *key, int lo, int hi, int has_def, int def,
                    int *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (has_def) {
            *out = def;
            return 0;
        }
        return ds_error("%s: key '%s' is missing", file, key);
    }
    if (!json_is_integer(v)) return ds_error("%s: key '%s': expected an integer, got %s", file, key, json_kind(v));
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return ds_error("%s: key '%s': %lld is out of range [%d, %d]", file, key, (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

/* An integer, or null meaning 0 (q_lora_rank, n_routed_experts, n_group, ...). */
static int read_int_or_null(const char *file, const json_t *obj, const char *key, int lo, int hi, int has_def, int def,
                            int *out)
{
    const json_t *v = json_object_get(obj, key);
    if (v && json_is_null(v)) {
        *out = 0;
        return 0;
    }
    return read_int(file, obj, key, lo, hi, has_def, def, out);
}

static int read_float(const char *file, const json_t *obj, const char *key, double lo, double hi, int has_def,
                      double def, float *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (has_def) {
            *out = (float)def;
            return 0;
        }
        return ds_error("%s: key '%s' is missing", file, key);
    }
    if (!json_is_number(v)) return ds_error("%s: key '%s': expected a number, got %s", file, key, json_kind(v));
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return ds_error("%s: key '%s': %g is out of range [%g, %g]", file, key, x, lo, hi);
    *out = (float)x;
    return 0;
}

static int read_bool(const char *file, const json_t *obj, const char *key, bool def, bool *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) return ds_error("%s: key '%s': expected a boolean, got %s", file, key, json_kind(v));
    *out = json_is_true(v);
    return 0;
}

/* A string that must be one of names[0..n); the index goes to *out. */
static int read_choice(const char *file, const json_t *obj, const char *key, const char *def, const char *const *names,
                       int n, int *out)
{
    const json_t *v = json_object_get(obj, key);
    const char *s = def;
    if (v) {
        if (!json_is_string(v)) return ds_error("%s: key '%s': expected a string, got %s", file, key, json_kind(v));
        s = json_string_value(v);
    } else if (!def) {
        return ds_error("%s: key '%s' is missing", file, key);
    }
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return ds_error("%s: key '%s': unknown value \"%s\"", file, key, s);
}

/* A key whose other values select a variant this code does not implement: absent, null where
 * null_is_default (transformers then takes the implemented value), or equal to that value
 * (numbers by value, so 1 = 1.0; anything else by JSON equality, so 0 is not false). `prefix`
 * qualifies keys inside rope_scaling. Takes the reference to `allowed`. */
static int require_value(const char *file, const json_t *obj, const char *prefix, const char *key, bool null_is_default,
                         json_t *allowed)
{
    const json_t *v = json_object_get(obj, key);
    const int ok = !v || (null_is_default && json_is_null(v)) ||
                   (json_is_number(v) && json_is_number(allowed) ? json_number_value(v) == json_number_value(allowed)
                                                                 : json_equal(v, allowed));
    int rc = 0;
    if (!ok) {
        char *got = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        char *want = json_dumps(allowed, JSON_ENCODE_ANY | JSON_COMPACT);
        rc = ds_error("%s: key '%s%s': %s is not implemented; the only supported value is %s", file, prefix, key,
                      got ? got : "(unprintable)", want ? want : "(unprintable)");
        free(got);
        free(want);
    }
    json_decref(allowed);
    return rc;
}

/* YaRN parameters from rope_scaling (released files) or rope_parameters (transformers ≥ 5). */
static int read_rope(const char *file, const json_t *root, ModelConfig *c)
{
    const char *key = "rope_scaling";
    const json_t *rs = json_object_get(root, key);
    if (!rs || json_is_null(rs)) {
        key = "rope_parameters";
        rs = json_object_get(root, key);
    }
    c->rope_yarn = false;
    if (read_float(file, root, "rope_theta", 1, 1e12, 1, 10000, &c->rope_theta)) return -1;
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return ds_error("%s: key '%s': expected an object, got %s", file, key, json_kind(rs));
    if (json_object_get(rs, "rope_theta") && read_float(file, rs, "rope_theta", 1, 1e12, 0, 0, &c->rope_theta))
        return -1;
    const char *tkey = json_object_get(rs, "type") ? "type" : "rope_type";
    static const char *const types[] = { "default", "yarn" };
    int type = ATTN_MLA;
    char full[64];
    snprintf(full, sizeof full, "%s.%s", key, tkey);
    if (read_choice(file, rs, tkey, NULL, types, 2, &type)) {
        /* re-issue the error with the qualified key name */
        const json_t *v = json_object_get(rs, tkey);
        if (v && json_is_string(v))
            return ds_error("%s: key '%s': unknown value \"%s\"", file, full, json_string_value(v));
        return ds_error("%s: key '%s' is missing or not a string", file, full);
    }
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s.", key);
    if (require_value(file, rs, prefix, "partial_rotary_factor", false, json_integer(1))) return -1;
    if (type == 0) return 0;
    /* YaRN's m comes from mscale/mscale_all_dim, and its ramp ends are rounded (truncate; null
     * would read as false in transformers) */
    if (require_value(file, rs, prefix, "attention_factor", true, json_null()) ||
        require_value(file, rs, prefix, "truncate", false, json_true()))
        return -1;
    c->rope_yarn = true;
    if (read_float(file, rs, "factor", 1, 1e6, 0, 0, &c->rope_factor) ||
        read_int(file, rs, "original_max_position_embeddings", 1, 1 << 30, 1, 4096, &c->rope_original_max_position) ||
        read_float(file, rs, "beta_fast", 0, 1e6, 1, 32, &c->rope_beta_fast) ||
        read_float(file, rs, "beta_slow", 0, 1e6, 1, 1, &c->rope_beta_slow) ||
        read_float(file, rs, "mscale", 0, 1e6, 1, 1, &c->rope_mscale) ||
        read_float(file, rs, "mscale_all_dim", 0, 1e6, 1, 0, &c->rope_mscale_all_dim))
        return ds_error("%s (in '%s')", ds_last_error(), key);
    return 0;
}

/* a × b, the width of one weight matrix, must fit the int a matrix's rows and columns are held in. */
static int check_width(const char *file, const char *key_a, int a, const char *key_b, int b)
{
    const int64_t w = (int64_t)a * b;
    if (w > INT_MAX)
        return ds_error("%s: keys '%s' x '%s': %d x %d = %lld exceeds %d, the widest weight matrix "
                        "the code can address",
                        file, key_a, key_b, a, b, (long long)w, INT_MAX);
    return 0;
}

/* Keys that select an architecture variant this code does not implement (see config.h). */
static int read_unsupported(const char *file, const json_t *root, const ModelConfig *c)
{
    /* null: no bias, and as many key/value heads as heads; a null activation or factor fails in transformers */
    return require_value(file, root, "", "hidden_act", false, json_string("silu")) ||
                   require_value(file, root, "", "attention_bias", true, json_false()) ||
                   require_value(file, root, "", "mlp_bias", true, json_false()) ||
                   (c->attention_type == ATTN_MLA &&
                    require_value(file, root, "", "num_key_value_heads", true, json_integer(c->num_attention_heads))) ||
                   require_value(file, root, "", "partial_rotary_factor", false, json_integer(1))
               ? -1
               : 0;
}

static const char *const ATTENTION_NAMES[] = { "mla", "mha", "gqa", "mqa" };

const char *config_attention_name(AttentionType t)
{
    return ATTENTION_NAMES[t];
}

int config_require_mla(const ModelConfig *cfg, const char *what)
{
    if (cfg->attention_type == ATTN_MLA) return 0;
    return ds_error("key 'attention_type': \"%s\" (standard attention) is implemented by dsv2 train only, not by %s",
                    ATTENTION_NAMES[cfg->attention_type], what);
}

/* attention_type and what goes with it: the latent widths for MLA; for the standard baselines,
 * no latents and n_g key/value heads (num_key_value_heads). */
static int read_attention(const char *file, const json_t *root, ModelConfig *c)
{
    int type = ATTN_MLA;
    if (read_choice(file, root, "attention_type", "mla", ATTENTION_NAMES, 4, &type)) return -1;
    c->attention_type = (AttentionType)type;
    const int nh = c->num_attention_heads;
    c->num_key_value_heads = nh;
    if (type == ATTN_MLA) return read_int(file, root, "kv_lora_rank", 1, 1 << 24, 0, 0, &c->kv_lora_rank);
    static const char *const latents[] = { "q_lora_rank", "kv_lora_rank" };
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(root, latents[i]);
        if (v && !json_is_null(v))
            return ds_error("%s: key '%s': attention_type \"%s\" has no latent; it must be null or absent", file,
                            latents[i], ATTENTION_NAMES[type]);
    }
    c->q_lora_rank = c->kv_lora_rank = 0;
    const int has_def = type != ATTN_GQA, def = type == ATTN_MQA ? 1 : nh;
    if (read_int_or_null(file, root, "num_key_value_heads", 1, nh, has_def, def, &c->num_key_value_heads)) return -1;
    if (json_is_null(json_object_get(root, "num_key_value_heads"))) c->num_key_value_heads = def;
    const int ng = c->num_key_value_heads;
    if ((type == ATTN_MHA && ng != nh) || (type == ATTN_MQA && ng != 1) || nh % ng)
        return ds_error("%s: key 'num_key_value_heads': %d does not fit attention_type \"%s\" with %d heads (%s)", file,
                        ng, ATTENTION_NAMES[type], nh,
                        type == ATTN_MHA   ? "MHA has one per head"
                        : type == ATTN_MQA ? "MQA has one"
                                           : "GQA needs a divisor of num_attention_heads");
    return 0;
}

static int read_all(const char *file, const json_t *root, ModelConfig *c)
{
    const int big = 1 << 24;
    memset(c, 0, sizeof *c);
    if (read_int(file, root, "vocab_size", 1, big, 0, 0, &c->vocab_size) ||
        read_int(file, root, "hidden_size", 1, big, 0, 0, &c->hidden_size) ||
        read_int(file, root, "num_hidden_layers", 1, 4096, 0, 0, &c->num_hidden_layers) ||
        read_int(file, root, "num_attention_heads", 1, 4096, 0, 0, &c->num_attention_heads) ||
        read_attention(file, root, c) ||
        (c->attention_type == ATTN_MLA && read_int_or_null(file, root, "q_lora_rank", 1, big, 0, 0, &c->q_lora_rank)) ||
        read_int(file, root, "qk_nope_head_dim", 0, 65536, 0, 0, &c->qk_nope_head_dim) ||
        read_int(file, root, "qk_rope_head_dim", 2, ROPE_MAX_DIM, 0, 0, &c->qk_rope_head_dim) ||
        read_int(file, root, "v_head_dim", 1, 65536, 0, 0, &c->v_head_dim) ||
        read_int(file, root, "intermediate_size", 1, big, 0, 0, &c->intermediate_size) ||
        read_int(file, root, "max_position_embeddings", 2, 1 << 30, 0, 0, &c->max_position_embeddings) ||
        read_float(file, root, "rms_norm_eps", 0, 1, 0, 0, &c->rms_norm_eps) ||
        read_int_or_null(file, root, "n_routed_experts", 1, ROUTER_MAX_EXPERTS, 1, 0, &c->n_routed_experts))
        return -1;
    if (c->qk_rope_head_dim % 2)
        return ds_error("%s: key 'qk_rope_head_dim': %d is odd; RoPE rotates pairs", file, c->qk_rope_head_dim);
    static const char *const methods[] = { "greedy", "group_limited_greedy", "noaux_tc" };
    static const char *const scorings[] = { "softmax", "sigmoid" };
    int method = 0, scoring = 0;
    c->moe_layer_freq = 1;
    c->n_group = c->topk_group = 1;
    c->routed_scaling_factor = 1;
    c->first_k_dense_replace = c->num_hidden_layers;
    if (c->n_routed_experts > 0) {
        const int E = c->n_routed_experts;
        if (read_int(file, root, "moe_intermediate_size", 1, big, 0, 0, &c->moe_intermediate_size) ||
            read_int_or_null(file, root, "n_shared_experts", 0, 65536, 0, 0, &c->n_shared_experts) ||
            read_int(file, root, "num_experts_per_tok", 1, E, 0, 0, &c->num_experts_per_tok) ||
            read_int(file, root, "first_k_dense_replace", 0, c->num_hidden_layers, 0, 0, &c->first_k_dense_replace) ||
            read_int(file, root, "moe_layer_freq", 1, 4096, 1, 1, &c->moe_layer_freq) ||
            read_choice(file, root, "topk_method", NULL, methods, 3, &method) ||
            read_choice(file, root, "scoring_func", "softmax", scorings, 2, &scoring) ||
            read_int_or_null(file, root, "n_group", 1, E, 1, 1, &c->n_group) ||
            read_bool(file, root, "norm_topk_prob", false, &c->norm_topk_prob) ||
            read_float(file, root, "routed_scaling_factor", 0, 1e6, 1, 1, &c->routed_scaling_factor))
            return -1;
        if (check_width(file, "n_shared_experts", c->n_shared_experts, "moe_intermediate_size",
                        c->moe_intermediate_size))
            return -1;
        if (c->n_group == 0) c->n_group = 1;
        if (E % c->n_group)
            return ds_error("%s: key 'n_group': %d does not divide n_routed_experts %d", file, c->n_group, E);
        if (read_int_or_null(file, root, "topk_group", 1, c->n_group, 1, 1, &c->topk_group)) return -1;
        if (c->topk_group == 0) c->topk_group = 1;
        c->topk_method = (TopkMethod)method;
        c->scoring_func = (ScoringFunc)scoring;
        if (c->topk_method != TOPK_GREEDY && c->num_experts_per_tok > c->topk_group * (E / c->n_group))
            return ds_error("%s: key 'num_experts_per_tok': %d exceeds the %d experts in "
                            "topk_group %d groups",
                            file, c->num_experts_per_tok, c->topk_group * (E / c->n_group), c->topk_group);
        if ((c->topk_method == TOPK_NOAUX_TC) != (c->scoring_func == SCORING_SIGMOID))
            return ds_error("%s: key 'scoring_func': \"%s\" does not go with topk_method \"%s\"", file,
                            scorings[scoring], methods[method]);
    }
    bool tied = false;
    if (read_bool(file, root, "tie_word_embeddings", false, &tied)) return -1;
    if (tied) return ds_error("%s: key 'tie_word_embeddings': true is not a DeepSeek-V2 layout", file);
    if (read_int_or_null(file, root, "bos_token_id", 0, big, 1, -1, &c->bos_token_id) ||
        read_int_or_null(file, root, "eos_token_id", 0, big, 1, -1, &c->eos_token_id))
        return -1;
    if (json_is_null(json_object_get(root, "bos_token_id"))) c->bos_token_id = -1;
    if (json_is_null(json_object_get(root, "eos_token_id"))) c->eos_token_id = -1;
    if (c->bos_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size)
        return ds_error("%s: key '%s': %d is outside the vocabulary [0, %d) of key 'vocab_size'", file,
                        c->bos_token_id >= c->vocab_size ? "bos_token_id" : "eos_token_id",
                        c->bos_token_id >= c->vocab_size ? c->bos_token_id : c->eos_token_id, c->vocab_size);
    return read_unsupported(file, root, c) || read_rope(file, root, c) ? -1 : 0;
}

int config_load(const char *path, ModelConfig *cfg)
{
    json_t *root = json_read_file(path); /* a FIFO or directory is refused, never waited on */
    if (!root) return -1;
    int rc = json_is_object(root) ? read_all(path, root, cfg)
                                  : ds_error("%s: expected a JSON object at the top level", path);
    json_decref(root);
    return rc;
}

// ANCHOR: config_layer_is_moe
bool config_layer_is_moe(const ModelConfig *cfg, int l)
{
    return cfg->n_routed_experts > 0 && l >= cfg->first_k_dense_replace && l % cfg->moe_layer_freq == 0;
}
// ANCHOR_END: config_layer_is_moe

int config_qk_head_dim(const ModelConfig *cfg)
{
    return cfg->qk_nope_head_dim + cfg->qk_rope_head_dim;
}
