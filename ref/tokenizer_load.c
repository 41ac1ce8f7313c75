/**
 * \file tokenizer_load.c
 * \brief Reading tokenizer.json (model, added tokens, normalizer,
 *        post-processor, decoder) and tokenizer_config.json (BOS, EOS, the
 *        chat template). The pre-tokenizer is read in tokenizer.c, next to
 *        the code that runs it.
 */
#include "error.h"
#include "jsonfile.h"
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Loading: JSON helpers                                                    */
/* ------------------------------------------------------------------------ */

int json_get_bool(const char *file, const char *where, json_t *obj, const char *key, bool dflt, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) return ds_error("%s: %s.%s: expected true or false", file, where, key);
    *out = json_is_true(v);
    return 0;
}

const char *pipeline_type(const char *file, const char *where, json_t *obj)
{
    if (!json_is_object(obj)) {
        ds_error("%s: %s: expected an object", file, where);
        return NULL;
    }
    const char *type = json_string_value(json_object_get(obj, "type"));
    if (!type) ds_error("%s: %s.type: missing", file, where);
    return type;
}

static char *dup_bytes(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ------------------------------------------------------------------------ */
/* Loading: the BPE model                                                   */
/* ------------------------------------------------------------------------ */

/* Splits one merge entry ("a b" or ["a", "b"]) into its two token strings. */
static int merge_parts(const char *file, size_t index, json_t *m, const char **a, size_t *na, const char **b,
                       size_t *nb)
{
    if (json_is_string(m)) {
        /* Byte-level tokens never contain a raw space (space is 'Ġ'), so the
         * one space separates the two tokens; anything else is malformed. */
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)) || sp == s || sp + 1 == s + n)
            return ds_error("%s: model.merges[%zu]: expected \"left right\"", file, index);
        *a = s;
        *na = (size_t)(sp - s);
        *b = sp + 1;
        *nb = n - *na - 1;
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *na = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *nb = json_string_length(json_array_get(m, 1));
        return 0;
    }
    return ds_error("%s: model.merges[%zu]: expected \"left right\" or [\"left\", \"right\"]", file, index);
}

static int load_model(Tokenizer *t, const char *file, json_t *root, int32_t max_added_id)
{
    json_t *model = json_object_get(root, "model");
    if (!model || json_is_null(model)) return ds_error("%s: model: missing", file);
    const char *type = pipeline_type(file, "model", model);
    if (!type) return -1;
    if (strcmp(type, "BPE") != 0) return ds_error("%s: model.type: unsupported '%s' (only BPE)", file, type);

    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
        return ds_error("%s: model.dropout: unsupported (encoding would be random)", file);
    if (json_string_value(json_object_get(model, "continuing_subword_prefix")) ||
        json_string_value(json_object_get(model, "end_of_word_suffix")))
        return ds_error("%s: model: continuing_subword_prefix/end_of_word_suffix unsupported", file);
    bool byte_fallback = false;
    if (json_get_bool(file, "model", model, "byte_fallback", false, &byte_fallback) ||
        json_get_bool(file, "model", model, "fuse_unk", false, &t->fuse_unk) ||
        json_get_bool(file, "model", model, "ignore_merges", false, &t->ignore_merges))
        return -1;
    if (byte_fallback) return ds_error("%s: model.byte_fallback: unsupported", file);

    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return ds_error("%s: model.vocab: missing or not an object", file);

    /* Ids: the largest id of the vocabulary and the added tokens bounds the table. */
    int32_t max_id = max_added_id;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
    {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= INT32_MAX / 2)
            return ds_error("%s: model.vocab: '%s': id must be an integer in [0, %d)", file, key, INT32_MAX / 2);
        if (id > max_id) max_id = (int32_t)id;
    }
    t->n_ids = max_id + 1;
    t->id_str = calloc((size_t)t->n_ids, sizeof *t->id_str);
    t->id_len = calloc((size_t)t->n_ids, sizeof *t->id_len);
    t->id_special = calloc((size_t)t->n_ids, sizeof *t->id_special);
    t->id_added = malloc((size_t)t->n_ids * sizeof *t->id_added);
    if (!t->id_str || !t->id_len || !t->id_special || !t->id_added || strmap_init(&t->vocab, json_object_size(vocab)))
        return ds_error("tokenizer: out of memory");
    json_object_foreach(vocab, key, v)
    {
        int32_t id = (int32_t)json_integer_value(v);
        size_t len = strlen(key); /* jansson object keys cannot hold NUL */
        if (t->id_str[id])
            return ds_error("%s: model.vocab: id %d used by both '%s' and '%s'", file, id, t->id_str[id], key);
        if (!(t->id_str[id] = dup_bytes(key, len))) return ds_error("tokenizer: out of memory");
        t->id_len[id] = (uint32_t)len;
        strmap_put(&t->vocab, t->id_str[id], len, id);
    }

    json_t *unk = json_object_get(model, "unk_token");
    t->unk_id = -1;
    if (json_is_string(unk)) {
        t->unk_id = strmap_get(&t->vocab, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0)
            return ds_error("%s: model.unk_token: '%s' is not in model.vocab", file, json_string_value(unk));
    }

    /* Merges: rank = position in the list; a later duplicate overwrites an
     * earlier one, as the library's map does. */
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) return ds_error("%s: model.merges: missing or not an array", file);
    size_t n = json_array_size(merges), cap = 16;
    while (cap < 2 * n + 1) cap *= 2;
    t->merges.e = malloc(cap * sizeof *t->merges.e);
    if (!t->merges.e) return ds_error("tokenizer: out of memory");
    for (size_t i = 0; i < cap; i++) t->merges.e[i].pair = UINT64_MAX;
    t->merges.mask = cap - 1;
    Bytes joined = { 0 };
    for (size_t i = 0; i < n; i++) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if (merge_parts(file, i, json_array_get(merges, i), &a, &na, &b, &nb)) goto fail;
        int32_t ia = strmap_get(&t->vocab, a, na), ib = strmap_get(&t->vocab, b, nb);
        if (ia < 0 || ib < 0) {
            const char *miss = ia < 0 ? a : b;
            int nmiss = (int)(ia < 0 ? na : nb);
            ds_error("%s: model.merges[%zu]: '%.*s' is not in model.vocab", file, i, nmiss, miss);
            goto fail;
        }
        joined.n = 0;
        if (bytes_append(&joined, a, na) || bytes_append(&joined, b, nb)) goto fail;
        int32_t im = strmap_get(&t->vocab, joined.p, joined.n);
        if (im < 0) {
            ds_error("%s: model.merges[%zu]: '%.*s' is not in model.vocab", file, i, (int)joined.n,
                     (const char *)joined.p);
            goto fail;
        }
        uint64_t pair = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        size_t s = merge_hash(pair) & t->merges.mask;
        while (t->merges.e[s].pair != UINT64_MAX && t->merges.e[s].pair != pair) s = (s + 1) & t->merges.mask;
        t->merges.e[s] = (MergeEntry){ pair, (int32_t)i, im };
    }
    free(joined.p);
    return 0;
fail:
    free(joined.p);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Loading: added tokens                                                    */
/* ------------------------------------------------------------------------ */

static int load_added_tokens(Tokenizer *t, const char *file, json_t *root, int32_t *max_id)
{
    json_t *list = json_object_get(root, "added_tokens");
    *max_id = -1;
    if (!list || json_is_null(list)) return 0;
    if (!json_is_array(list)) return ds_error("%s: added_tokens: expected an array", file);
    size_t n = json_array_size(list);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added || strmap_init(&t->added_map, n)) return ds_error("tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(list, i);
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        json_t *id = json_object_get(o, "id"), *content = json_object_get(o, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX / 2)
            return ds_error("%s: %s.id: missing or out of range", file, where);
        if (!json_is_string(content) || json_string_length(content) == 0)
            return ds_error("%s: %s.content: missing or empty", file, where);
        AddedToken *a = &t->added[t->n_added];
        if (json_get_bool(file, where, o, "single_word", false, &a->single_word) ||
            json_get_bool(file, where, o, "lstrip", false, &a->lstrip) ||
            json_get_bool(file, where, o, "rstrip", false, &a->rstrip) ||
            json_get_bool(file, where, o, "normalized", true, &a->normalized) ||
            json_get_bool(file, where, o, "special", false, &a->special))
            return -1;
        a->len = json_string_length(content);
        if (!(a->content = dup_bytes(json_string_value(content), a->len))) return ds_error("tokenizer: out of memory");
        a->id = (int32_t)json_integer_value(id);
        if (a->id > *max_id) *max_id = a->id;
        strmap_put(&t->added_map, a->content, a->len, a->id);
        t->n_added++;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Loading: normalizer                                                      */
/* ------------------------------------------------------------------------ */

/* DeepSeek files have no normalizer: null, or a Sequence of nothing. Any
 * real normalization would change the text, which this reader does not do,
 * so it is refused by name rather than silently skipped. */
static int check_normalizer(const char *file, const char *where, json_t *n)
{
    if (!n || json_is_null(n)) return 0;
    const char *type = pipeline_type(file, where, n);
    if (!type) return -1;
    if (strcmp(type, "Sequence") != 0) return ds_error("%s: %s.type: unsupported '%s'", file, where, type);
    json_t *list = json_object_get(n, "normalizers");
    if (!json_is_array(list)) return ds_error("%s: %s.normalizers: missing", file, where);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char sub[160];
        snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
        if (check_normalizer(file, sub, json_array_get(list, i))) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Loading: post-processor, decoder, tokenizer_config.json                  */
/* ------------------------------------------------------------------------ */

static int template_ids(Tokenizer *t, const char *file, const char *where, json_t *p)
{
    json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
    if (!json_is_array(single)) return ds_error("%s: %s.single: missing", file, where);
    bool seen_a = false;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *item = json_array_get(single, i);
        json_t *sp = json_object_get(item, "SpecialToken"), *seq = json_object_get(item, "Sequence");
        if (seq) {
            if (seen_a) return ds_error("%s: %s.single: two sequences", file, where);
            seen_a = true;
            continue;
        }
        const char *name = json_string_value(json_object_get(sp, "id"));
        json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
        if (!name || !json_is_array(ids))
            return ds_error("%s: %s.single[%zu]: special token not in special_tokens", file, where, i);
        for (size_t k = 0; k < json_array_size(ids); k++) {
            json_int_t id = json_integer_value(json_array_get(ids, k));
            size_t *n = seen_a ? &t->n_suffix : &t->n_prefix;
            int32_t *dst = seen_a ? t->suffix : t->prefix;
            if (id < 0 || id >= t->n_ids || *n == 8)
                return ds_error("%s: %s.special_tokens['%s']: bad id", file, where, name);
            dst[(*n)++] = (int32_t)id;
        }
    }
    if (!seen_a) return ds_error("%s: %s.single: no sequence $A", file, where);
    return 0;
}

static int load_post_processor(Tokenizer *t, const char *file, const char *where, json_t *p)
{
    if (!p || json_is_null(p)) return 0;
    const char *type = pipeline_type(file, where, p);
    if (!type) return -1;
    if (strcmp(type, "ByteLevel") == 0) return 0; /* only adjusts offsets */
    if (strcmp(type, "TemplateProcessing") == 0) return template_ids(t, file, where, p);
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(p, "processors");
        if (!json_is_array(list)) return ds_error("%s: %s.processors: missing", file, where);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char sub[160];
            snprintf(sub, sizeof sub, "%s.processors[%zu]", where, i);
            if (load_post_processor(t, file, sub, json_array_get(list, i))) return -1;
        }
        return 0;
    }
    return ds_error("%s: %s.type: unsupported '%s'", file, where, type);
}

static int load_decoder(Tokenizer *t, const char *file, json_t *d)
{
    if (!d || json_is_null(d)) return 0;
    const char *type = pipeline_type(file, "decoder", d);
    if (!type) return -1;
    if (strcmp(type, "ByteLevel") != 0) return ds_error("%s: decoder.type: unsupported '%s'", file, type);
    t->decode_byte_level = true;
    return 0;
}

/* A special-token entry of tokenizer_config.json: a string or {"content": ...}. */
static const char *config_token(json_t *v)
{
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_string_value(v);
}

static const char DEFAULT_BOS[] = "<\xEF\xBD\x9C"
                                  "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
static const char DEFAULT_EOS[] = "<\xEF\xBD\x9C"
                                  "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";

static int load_config(Tokenizer *t, const char *file)
{
    json_t *cfg = NULL;
    if (file) {
        cfg = json_read_file(file);
        if (!cfg) return -1;
        if (!json_is_object(cfg)) {
            json_decref(cfg);
            return ds_error("%s: expected a JSON object", file);
        }
    }
    const char *bos = config_token(json_object_get(cfg, "bos_token"));
    const char *eos = config_token(json_object_get(cfg, "eos_token"));
    if (!bos && tokenizer_token_id(t, DEFAULT_BOS) >= 0) bos = DEFAULT_BOS;
    if (!eos && tokenizer_token_id(t, DEFAULT_EOS) >= 0) eos = DEFAULT_EOS;
    t->bos_id = bos ? tokenizer_token_id(t, bos) : -1;
    t->eos_id = eos ? tokenizer_token_id(t, eos) : -1;
    if ((bos && !(t->bos_text = strdup(bos))) || (eos && !(t->eos_text = strdup(eos)))) {
        json_decref(cfg);
        return ds_error("tokenizer: out of memory");
    }

    json_t *tpl = json_object_get(cfg, "chat_template");
    if (json_is_array(tpl)) { /* a list of named templates: take "default" */
        json_t *chosen = NULL;
        for (size_t i = 0; i < json_array_size(tpl); i++) {
            json_t *e = json_array_get(tpl, i);
            const char *name = json_string_value(json_object_get(e, "name"));
            if (name && strcmp(name, "default") == 0) chosen = json_object_get(e, "template");
        }
        tpl = chosen;
    }
    if (json_is_string(tpl) && !(t->chat_template = strdup(json_string_value(tpl)))) {
        json_decref(cfg);
        return ds_error("tokenizer: out of memory");
    }

    /* transformers 4.x rebuilds a Llama-class tokenizer's post-processor from
     * add_bos_token / add_eos_token (see tokenizer_load()). */
    const char *cls = json_string_value(json_object_get(cfg, "tokenizer_class"));
    json_t *add_bos = json_object_get(cfg, "add_bos_token");
    int rc = 0;
    if (cls && (strcmp(cls, "LlamaTokenizerFast") == 0 || strcmp(cls, "LlamaTokenizer") == 0) &&
        json_is_boolean(add_bos)) {
        bool add_eos = json_is_true(json_object_get(cfg, "add_eos_token"));
        t->n_prefix = t->n_suffix = 0;
        if (json_is_true(add_bos)) {
            if (t->bos_id < 0)
                rc = ds_error("%s: add_bos_token: no BOS token", file);
            else
                t->prefix[t->n_prefix++] = t->bos_id;
        }
        if (add_eos) {
            if (t->eos_id < 0)
                rc = ds_error("%s: add_eos_token: no EOS token", file);
            else
                t->suffix[t->n_suffix++] = t->eos_id;
        }
    }
    json_decref(cfg);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Loading: the whole file                                                  */
/* ------------------------------------------------------------------------ */

/* Tables for finding added tokens quickly: id -> token, and the tokens
 * grouped by first byte so that the text scan only compares candidates
 * starting with the byte at hand. */
static int index_added_tokens(Tokenizer *t)
{
    for (int32_t i = 0; i < t->n_ids; i++) t->id_added[i] = -1;
    t->first_order = malloc((t->n_added ? t->n_added : 1) * sizeof *t->first_order);
    if (!t->first_order) return ds_error("tokenizer: out of memory");
    uint32_t count[256] = { 0 };
    bool single_word = false;
    for (size_t k = 0; k < t->n_added; k++) {
        t->id_added[t->added[k].id] = (int32_t)k;
        t->id_special[t->added[k].id] = t->added[k].special;
        count[(unsigned char)t->added[k].content[0]]++;
        single_word |= t->added[k].single_word;
    }
    t->by_first[0] = 0;
    for (int b = 0; b < 256; b++) t->by_first[b + 1] = t->by_first[b] + count[b];
    uint32_t fill[256];
    memcpy(fill, t->by_first, sizeof fill);
    for (size_t k = 0; k < t->n_added; k++) t->first_order[fill[(unsigned char)t->added[k].content[0]]++] = (uint32_t)k;
    if (single_word) {
        static const char pat[] = "[\\p{L}\\p{N}\\p{M}\\p{Pc}]";
        if (tokenizer_compile_regex("tokenizer", "single_word", pat, sizeof pat - 1,
                                    PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &t->word_re))
            return -1;
    }
    return 0;
}

Tokenizer *tokenizer_load_files(const char *path, const char *config_path)
{
    json_t *root = json_read_file(path); /* a FIFO or device is refused, never waited on */
    if (!root) return NULL;
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        ds_error("tokenizer: out of memory");
        return NULL;
    }
    int32_t max_added;
    int rc = -1;
    if (!json_is_object(root))
        ds_error("%s: expected a JSON object", path);
    else if (load_added_tokens(t, path, root, &max_added) == 0 && load_model(t, path, root, max_added) == 0 &&
             check_normalizer(path, "normalizer", json_object_get(root, "normalizer")) == 0 &&
             load_pre_tokenizer(t, path, "pre_tokenizer", json_object_get(root, "pre_tokenizer")) == 0 &&
             load_post_processor(t, path, "post_processor", json_object_get(root, "post_processor")) == 0 &&
             load_decoder(t, path, json_object_get(root, "decoder")) == 0)
        rc = 0;
    json_decref(root);
    if (rc == 0) rc = index_added_tokens(t);
    if (rc == 0) {
        byte_alphabet(t->byte_cp);
        for (int c = 0; c < 324; c++) t->cp_to_byte[c] = -1;
        for (int b = 0; b < 256; b++) {
            unsigned char u[4];
            size_t n = utf8_put(t->byte_cp[b], u);
            t->cp_to_byte[t->byte_cp[b]] = b;
            t->byte_id[b] = t->byte_level ? strmap_get(&t->vocab, u, n) : -1;
        }
        rc = load_config(t, config_path);
    }
    if (rc) {
        tokenizer_free(t);
        return NULL;
    }
    return t;
}

Tokenizer *tokenizer_load(const char *dir)
{
    size_t n = strlen(dir);
    char *json = malloc(n + 32), *cfg = malloc(n + 32);
    Tokenizer *t = NULL;
    if (!json || !cfg)
        ds_error("tokenizer: out of memory");
    else {
        snprintf(json, n + 32, "%s/tokenizer.json", dir);
        snprintf(cfg, n + 32, "%s/tokenizer_config.json", dir);
        /* present (whatever it is: json_read_file refuses what is not a regular file) */
        bool has_cfg = access(cfg, F_OK) == 0;
        t = tokenizer_load_files(json, has_cfg ? cfg : NULL);
    }
    free(json);
    free(cfg);
    return t;
}

void tokenizer_free(Tokenizer *t)
{
    if (!t) return;
    for (int32_t i = 0; t->id_str && i < t->n_ids; i++) free(t->id_str[i]);
    free(t->id_str);
    free(t->id_len);
    free(t->id_special);
    free(t->id_added);
    free(t->first_order);
    regex16_free(&t->word_re);
    free(t->vocab.e);
    free(t->merges.e);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->added_map.e);
    for (size_t i = 0; i < t->n_steps; i++) regex16_free(&t->steps[i].re);
    free(t->steps);
    free(t->bos_text);
    free(t->eos_text);
    free(t->chat_template);
    free(t);
}
