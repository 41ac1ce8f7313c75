/**
 * \file tokenizer.c
 * \brief The tokenizer.json reader and the encode/decode pipeline (see tokenizer.h).
 *
 * Reading order for the book: the byte-level alphabet (bytes_to_unicode),
 * the two hash maps, loading (model, added tokens, pre-tokenizer,
 * post-processor), then encoding in pipeline order (added tokens, splits,
 * BPE) and decoding.
 */
#include "tokenizer.h"

#include "error.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */
/* ------------------------------------------------------------------------ */

/* What utf8_scan() found at the start of a byte string. */
typedef enum {
    UTF8_CHAR,       /* a well-formed character */
    UTF8_ILL_FORMED, /* a maximal ill-formed subpart: one U+FFFD replaces it */
    UTF8_TRUNCATED,  /* a well-formed prefix cut short by the end of the bytes */
} Utf8Scan;

/*
 * Classifies the bytes at s[0..n), n >= 1, and stores in *len how many bytes
 * that covers. The rules are Unicode's Table 3-7 (well-formed byte
 * sequences): the second byte's range depends on the first (E0 needs A0..BF
 * to rule out overlong forms, ED needs 80..9F to rule out surrogates, F0
 * and F4 bound the code space). An ill-formed subpart is the longest prefix
 * of a well-formed sequence that is followed by a wrong byte, or one bad
 * byte; replacing each with one U+FFFD is the "maximal subpart" practice
 * that Rust's from_utf8_lossy and Python's "replace" handler both follow.
 */
static Utf8Scan utf8_scan(const unsigned char *s, size_t n, size_t *len)
{
    unsigned char b = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b < 0x80) { *len = 1; return UTF8_CHAR; }
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else { *len = 1; return UTF8_ILL_FORMED; }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) { *len = i; return UTF8_TRUNCATED; }
        unsigned char c = s[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (c < l || c > h) { *len = i; return UTF8_ILL_FORMED; }
    }
    *len = need;
    return UTF8_CHAR;
}

/* Writes code point cp as UTF-8 into out (room for 4); returns the length. */
static size_t utf8_put(unsigned cp, unsigned char *out)
{
    if (cp < 0x80) { out[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The code point of the well-formed character of length len at s. */
static unsigned utf8_get(const unsigned char *s, size_t len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return (unsigned)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    case 3: return (unsigned)(s[0] & 0x0F) << 12 | (unsigned)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    default:
        return (unsigned)(s[0] & 0x07) << 18 | (unsigned)(s[1] & 0x3F) << 12 |
               (unsigned)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    }
}

/* ------------------------------------------------------------------------ */
/* Growable byte buffer                                                     */
/* ------------------------------------------------------------------------ */

/* A growable byte string. */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} Bytes;

static int bytes_reserve(Bytes *b, size_t extra)
{
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) return ds_error("tokenizer: out of memory");
    b->p = p;
    b->cap = cap;
    return 0;
}

static int bytes_append(Bytes *b, const void *src, size_t n)
{
    if (n == 0) return 0;
    if (bytes_reserve(b, n)) return -1;
    memcpy(b->p + b->n, src, n);
    b->n += n;
    return 0;
}

static const unsigned char REPLACEMENT[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */

/*
 * Appends src[0..n) to out with every ill-formed subpart replaced by
 * U+FFFD. A truncated sequence at the very end is replaced too when
 * final is true; otherwise it is left unconsumed and its length returned
 * (the streaming decoder keeps those bytes for the next token).
 */
static long utf8_lossy_append(Bytes *out, const unsigned char *src, size_t n, bool final)
{
    size_t i = 0;
    while (i < n) {
        size_t len;
        Utf8Scan k = utf8_scan(src + i, n - i, &len);
        if (k == UTF8_CHAR) {
            size_t j = i + len; /* copy a run of good characters at once */
            while (j < n && src[j] < 0x80) j++;
            if (bytes_append(out, src + i, j - i)) return -1;
            i = j;
            continue;
        }
        if (k == UTF8_TRUNCATED && !final) return (long)(n - i);
        if (bytes_append(out, REPLACEMENT, 3)) return -1;
        i += len;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The byte-level alphabet                                                  */
/* ------------------------------------------------------------------------ */

/*
 * GPT-2's bytes_to_unicode, which every byte-level BPE inherits: so that a
 * vocabulary entry is always printable text, byte b is written as the
 * character U+00b itself when b is a printable Latin-1 character ('!'..'~',
 * '¡'..'¬', '®'..'ÿ'), and the 68 other bytes (controls, space, NBSP, soft
 * hyphen) are given the code points 256, 257, ... in byte order. Space
 * (0x20) becomes U+0120 'Ġ', newline U+010A 'Ċ'.
 */
static void byte_alphabet(unsigned byte_to_cp[256])
{
    unsigned next = 256;
    for (unsigned b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        byte_to_cp[b] = printable ? b : next++;
    }
}

/* ------------------------------------------------------------------------ */
/* Hash maps                                                                */
/* ------------------------------------------------------------------------ */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* An entry of StrMap: a string stored elsewhere, and its value. */
typedef struct {
    const char *key; /* NULL: empty slot */
    uint32_t len;
    int32_t value;
} StrEntry;

/* Open-addressing map from byte strings to int32 (keys not owned). */
typedef struct {
    StrEntry *e;
    size_t mask; /* capacity - 1, capacity a power of two */
    size_t n;
} StrMap;

static int strmap_init(StrMap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < 2 * expected + 1) cap *= 2;
    m->e = calloc(cap, sizeof *m->e);
    if (!m->e) return ds_error("tokenizer: out of memory");
    m->mask = cap - 1;
    m->n = 0;
    return 0;
}

/* The slot holding key, or the empty slot where it would go. */
static StrEntry *strmap_slot(const StrMap *m, const void *key, size_t len)
{
    size_t i = (size_t)hash_bytes(key, len) & m->mask;
    for (;;) {
        StrEntry *e = &m->e[i];
        if (!e->key || (e->len == len && memcmp(e->key, key, len) == 0)) return e;
        i = (i + 1) & m->mask;
    }
}

static int32_t strmap_get(const StrMap *m, const void *key, size_t len)
{
    if (!m->e) return -1;
    StrEntry *e = strmap_slot(m, key, len);
    return e->key ? e->value : -1;
}

/* Inserts or overwrites; the map never fills past half (sized at init). */
static void strmap_put(StrMap *m, const char *key, size_t len, int32_t value)
{
    StrEntry *e = strmap_slot(m, key, len);
    if (!e->key) {
        e->key = key;
        e->len = (uint32_t)len;
        m->n++;
    }
    e->value = value;
}

/* What a merge rule says: its priority and the token it produces. */
typedef struct {
    uint64_t pair; /* left id << 32 | right id; UINT64_MAX: empty slot */
    int32_t rank;  /* position in model.merges: lower merges first */
    int32_t merged;/* id of the concatenation */
} MergeEntry;

/* Open-addressing map from a pair of token ids to its merge rule. */
typedef struct {
    MergeEntry *e;
    size_t mask;
} MergeMap;

static size_t merge_hash(uint64_t pair)
{
    pair *= 0x9E3779B97F4A7C15ull;
    return (size_t)(pair ^ (pair >> 31));
}

static const MergeEntry *mergemap_get(const MergeMap *m, int32_t left, int32_t right)
{
    uint64_t pair = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = merge_hash(pair) & m->mask;
    for (;;) {
        const MergeEntry *e = &m->e[i];
        if (e->pair == pair) return e;
        if (e->pair == UINT64_MAX) return NULL;
        i = (i + 1) & m->mask;
    }
}

/* ------------------------------------------------------------------------ */
/* The tokenizer                                                            */
/* ------------------------------------------------------------------------ */

/* How a Split step turns its matches into pieces (the file's `behavior`). */
typedef enum {
    SPLIT_REMOVED,             /* matches are dropped */
    SPLIT_ISOLATED,            /* every match is a piece of its own */
    SPLIT_MERGED_WITH_PREVIOUS,/* a match is glued to the end of the piece before it */
    SPLIT_MERGED_WITH_NEXT,    /* a match is glued to the start of the piece after it */
    SPLIT_CONTIGUOUS,          /* runs of matches, and runs of non-matches, form pieces */
} SplitBehavior;

/* One regex step of the pre-tokenizer. */
typedef struct {
    pcre2_code *re;
    SplitBehavior behavior;
    bool invert; /* pieces are what does *not* match */
} SplitStep;

/* An entry of `added_tokens`. */
typedef struct {
    char *content;
    size_t len;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} AddedToken;

struct Tokenizer {
    /* model: BPE */
    StrMap vocab;          /* token string -> id */
    MergeMap merges;       /* (left, right) -> rank, merged */
    char **id_str;         /* [n_ids] stored string of each id (NULL: no such id) */
    uint32_t *id_len;      /* [n_ids] */
    int32_t n_ids;
    bool byte_level;       /* a ByteLevel pre-tokenizer maps bytes to the alphabet */
    unsigned byte_cp[256]; /* the alphabet: code point standing for each byte */
    int32_t byte_id[256];  /* id of the one-byte token of each byte (-1: none) */
    bool ignore_merges;    /* a whole word found in the vocabulary is one token */
    int32_t unk_id;        /* -1: unknown symbols are dropped, as the library does */
    bool fuse_unk;
    /* added tokens */
    AddedToken *added;
    size_t n_added;
    StrMap added_map;      /* content -> id */
    int32_t *id_added;     /* [n_ids] index into added of the id's added token, or -1 */
    bool *id_special;      /* [n_ids] the id is a special added token */
    uint32_t by_first[257];/* added tokens sorted by first byte: by_first[b]..by_first[b+1] */
    uint32_t *first_order; /* [n_added] indices into added, grouped by first byte */
    pcre2_code *word_re;   /* \w at the start of a subject, for single_word tokens */
    /* pre-tokenizer */
    SplitStep *steps;
    size_t n_steps;
    /* post-processor: ids around the sequence when TOKENIZER_ADD_SPECIAL */
    int32_t prefix[8], suffix[8];
    size_t n_prefix, n_suffix;
    /* decoder */
    bool decode_byte_level; /* ByteLevel decoder; false: tokens joined by spaces */
    int cp_to_byte[324];    /* inverse of the byte alphabet (-1: not in it) */
    /* tokenizer_config.json */
    char *bos_text, *eos_text, *chat_template;
    int32_t bos_id, eos_id;
};

/* ------------------------------------------------------------------------ */
/* Loading: JSON helpers                                                    */
/* ------------------------------------------------------------------------ */

/* Reads a JSON boolean member; absent or null gives dflt; other types are errors. */
static int json_get_bool(const char *file, const char *where, json_t *obj, const char *key,
                         bool dflt, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) { *out = dflt; return 0; }
    if (!json_is_boolean(v)) return ds_error("%s: %s.%s: expected true or false", file, where, key);
    *out = json_is_true(v);
    return 0;
}

/* The `type` string of a pipeline object, or NULL after setting the error. */
static const char *pipeline_type(const char *file, const char *where, json_t *obj)
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
static int merge_parts(const char *file, size_t index, json_t *m, const char **a, size_t *na,
                       const char **b, size_t *nb)
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
    return ds_error("%s: model.merges[%zu]: expected \"left right\" or [\"left\", \"right\"]", file,
                    index);
}

static int load_model(Tokenizer *t, const char *file, json_t *root, int32_t max_added_id)
{
    json_t *model = json_object_get(root, "model");
    if (!model || json_is_null(model)) return ds_error("%s: model: missing", file);
    const char *type = pipeline_type(file, "model", model);
    if (!type) return -1;
    if (strcmp(type, "BPE") != 0)
        return ds_error("%s: model.type: unsupported '%s' (only BPE)", file, type);

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
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= INT32_MAX / 2)
            return ds_error("%s: model.vocab: '%s': id must be an integer in [0, %d)", file, key,
                            INT32_MAX / 2);
        if (id > max_id) max_id = (int32_t)id;
    }
    t->n_ids = max_id + 1;
    t->id_str = calloc((size_t)t->n_ids, sizeof *t->id_str);
    t->id_len = calloc((size_t)t->n_ids, sizeof *t->id_len);
    t->id_special = calloc((size_t)t->n_ids, sizeof *t->id_special);
    t->id_added = malloc((size_t)t->n_ids * sizeof *t->id_added);
    if (!t->id_str || !t->id_len || !t->id_special || !t->id_added ||
        strmap_init(&t->vocab, json_object_size(vocab)))
        return ds_error("tokenizer: out of memory");
    json_object_foreach(vocab, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        size_t len = strlen(key); /* jansson object keys cannot hold NUL */
        if (t->id_str[id])
            return ds_error("%s: model.vocab: id %d used by both '%s' and '%s'", file, id,
                            t->id_str[id], key);
        if (!(t->id_str[id] = dup_bytes(key, len))) return ds_error("tokenizer: out of memory");
        t->id_len[id] = (uint32_t)len;
        strmap_put(&t->vocab, t->id_str[id], len, id);
    }

    json_t *unk = json_object_get(model, "unk_token");
    t->unk_id = -1;
    if (json_is_string(unk)) {
        t->unk_id = strmap_get(&t->vocab, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0)
            return ds_error("%s: model.unk_token: '%s' is not in model.vocab", file,
                            json_string_value(unk));
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
    Bytes joined = {0};
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
            ds_error("%s: model.merges[%zu]: '%.*s' is not in model.vocab", file, i,
                     (int)joined.n, (const char *)joined.p);
            goto fail;
        }
        uint64_t pair = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        size_t s = merge_hash(pair) & t->merges.mask;
        while (t->merges.e[s].pair != UINT64_MAX && t->merges.e[s].pair != pair)
            s = (s + 1) & t->merges.mask;
        t->merges.e[s] = (MergeEntry){pair, (int32_t)i, im};
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
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= INT32_MAX / 2)
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
        if (!(a->content = dup_bytes(json_string_value(content), a->len)))
            return ds_error("tokenizer: out of memory");
        a->id = (int32_t)json_integer_value(id);
        if (a->id > *max_id) *max_id = a->id;
        strmap_put(&t->added_map, a->content, a->len, a->id);
        t->n_added++;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Loading: normalizer and pre-tokenizer                                    */
/* ------------------------------------------------------------------------ */

/* DeepSeek files have no normalizer: null, or a Sequence of nothing. Any
 * real normalization would change the text, which this reader does not do,
 * so it is refused by name rather than silently skipped. */
static int check_normalizer(const char *file, const char *where, json_t *n)
{
    if (!n || json_is_null(n)) return 0;
    const char *type = pipeline_type(file, where, n);
    if (!type) return -1;
    if (strcmp(type, "Sequence") != 0)
        return ds_error("%s: %s.type: unsupported '%s'", file, where, type);
    json_t *list = json_object_get(n, "normalizers");
    if (!json_is_array(list)) return ds_error("%s: %s.normalizers: missing", file, where);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char sub[160];
        snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
        if (check_normalizer(file, sub, json_array_get(list, i))) return -1;
    }
    return 0;
}

// ANCHOR: tokenizer_add_split
/*
 * Compiles one pattern with PCRE2 and appends it as a step.
 *
 * The pattern is used byte for byte as the file has it. DeepSeek-V2's
 * letter class has range ends such as U+1F7D and U+212A whose Unicode
 * normalization (NFC) is a different code point (U+03CE, U+004B): a copy
 * that went through an editor or a normalizing tool has descending ranges,
 * which PCRE2 rejects ("range out of order") and which would match other
 * text. Reading the regex from the checkpoint at run time avoids the trap.
 *
 * UTF: the subject is UTF-8 and the pattern's characters are code points.
 * UCP: \s, \w, \d and POSIX classes use Unicode properties, as Oniguruma
 *      (the library's regex engine) does, so "\s" matches U+3000 too.
 * MULTILINE: the library compiles with Oniguruma's Ruby syntax, where `$`
 *      matches before any "\n" as well as at the end; PCRE2 does the same
 *      with MULTILINE (and "\n" as the only newline). DeepSeek-V2's
 *      `\s+$` depends on this only for pieces that contain "\n", and its
 *      first step already isolated every "\n".
 * LITERAL: for the `String` form of a pattern.
 */
static int add_split(Tokenizer *t, const char *file, const char *where, const char *pattern,
                     size_t len, bool literal, SplitBehavior behavior, bool invert)
{
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) return ds_error("tokenizer: out of memory");
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int code;
    PCRE2_SIZE offset;
    uint32_t opts = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &code, &offset, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return ds_error("%s: %s: PCRE2 rejects /%.*s/ at offset %zu: %s", file, where, (int)len,
                        pattern, (size_t)offset, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if absent */
    SplitStep *s = realloc(t->steps, (t->n_steps + 1) * sizeof *s);
    if (!s) {
        pcre2_code_free(re);
        return ds_error("tokenizer: out of memory");
    }
    t->steps = s;
    t->steps[t->n_steps++] = (SplitStep){re, behavior, invert};
    return 0;
}
// ANCHOR_END: tokenizer_add_split

/* GPT-2's split, used by a ByteLevel pre-tokenizer with use_regex true
 * (DeepSeek sets use_regex false: its own Splits come first). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pre_tokenizer(Tokenizer *t, const char *file, const char *where, json_t *p)
{
    if (!p || json_is_null(p)) return 0;
    const char *type = pipeline_type(file, where, p);
    if (!type) return -1;
    if (t->byte_level)
        return ds_error("%s: %s: steps after ByteLevel are unsupported", file, where);
    char sub[160];
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list)) return ds_error("%s: %s.pretokenizers: missing", file, where);
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
            if (load_pre_tokenizer(t, file, sub, json_array_get(list, i))) return -1;
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                            "MergedWithNext", "Contiguous"};
        const char *b = json_string_value(json_object_get(p, "behavior"));
        int behavior = -1;
        for (int i = 0; b && i < 5; i++)
            if (strcmp(b, names[i]) == 0) behavior = i;
        if (behavior < 0)
            return ds_error("%s: %s.behavior: unsupported '%s'", file, where, b ? b : "(missing)");
        bool invert = false;
        if (json_get_bool(file, where, p, "invert", false, &invert)) return -1;
        json_t *pat = json_object_get(p, "pattern");
        json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        json_t *s = json_is_string(re) ? re : lit;
        if (!json_is_string(s))
            return ds_error("%s: %s.pattern: expected {\"Regex\": ...} or {\"String\": ...}", file,
                            where);
        snprintf(sub, sizeof sub, "%s.pattern.%s", where, s == re ? "Regex" : "String");
        return add_split(t, file, sub, json_string_value(s), json_string_length(s), s == lit,
                         (SplitBehavior)behavior, invert);
    }
// ANCHOR: tokenizer_digits
    if (strcmp(type, "Digits") == 0) {
        /* The library tests Rust's char::is_numeric, i.e. general category
         * N (Nd, Nl, No): PCRE2's \p{N}. individual_digits puts every digit
         * in a piece of its own ("2024" -> 2 0 2 4) whatever merges the
         * vocabulary has; otherwise a run of digits stays one piece.
         * Copying the regex "\p{N}+" from elsewhere instead of reading this
         * step gives other ids as soon as a vocabulary holds a "12" token. */
        bool individual = false;
        if (json_get_bool(file, where, p, "individual_digits", false, &individual)) return -1;
        snprintf(sub, sizeof sub, "%s.individual_digits", where);
        return add_split(t, file, sub, individual ? "\\p{N}" : "\\p{N}+",
                         individual ? 5 : 6, false, SPLIT_ISOLATED, false);
    }
// ANCHOR_END: tokenizer_digits
    if (strcmp(type, "ByteLevel") == 0) {
        bool prefix_space = false, use_regex = false;
        if (json_get_bool(file, where, p, "add_prefix_space", true, &prefix_space) ||
            json_get_bool(file, where, p, "use_regex", true, &use_regex))
            return -1;
        if (prefix_space)
            return ds_error("%s: %s.add_prefix_space: true is unsupported", file, where);
        if (use_regex) {
            snprintf(sub, sizeof sub, "%s.use_regex", where);
            if (add_split(t, file, sub, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, false,
                          SPLIT_ISOLATED, false))
                return -1;
        }
        t->byte_level = true;
        return 0;
    }
    return ds_error("%s: %s.type: unsupported '%s'", file, where, type);
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
            return ds_error("%s: %s.single[%zu]: special token not in special_tokens", file, where,
                            i);
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
    if (strcmp(type, "ByteLevel") != 0)
        return ds_error("%s: decoder.type: unsupported '%s'", file, type);
    t->decode_byte_level = true;
    return 0;
}

/* A special-token entry of tokenizer_config.json: a string or {"content": ...}. */
static const char *config_token(json_t *v)
{
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_string_value(v);
}

static const char DEFAULT_BOS[] = "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
static const char DEFAULT_EOS[] = "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";

static int load_config(Tokenizer *t, const char *file)
{
    json_t *cfg = NULL;
    if (file) {
        json_error_t err;
        cfg = json_load_file(file, JSON_REJECT_DUPLICATES, &err);
        if (!cfg) return ds_error("%s: line %d: %s", file, err.line, err.text);
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
            if (t->bos_id < 0) rc = ds_error("%s: add_bos_token: no BOS token", file);
            else t->prefix[t->n_prefix++] = t->bos_id;
        }
        if (add_eos) {
            if (t->eos_id < 0) rc = ds_error("%s: add_eos_token: no EOS token", file);
            else t->suffix[t->n_suffix++] = t->eos_id;
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
    uint32_t count[256] = {0};
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
    for (size_t k = 0; k < t->n_added; k++)
        t->first_order[fill[(unsigned char)t->added[k].content[0]]++] = (uint32_t)k;
    if (single_word) {
        static const char pat[] = "[\\p{L}\\p{N}\\p{M}\\p{Pc}]";
        int code;
        PCRE2_SIZE off;
        t->word_re = pcre2_compile((PCRE2_SPTR)pat, sizeof pat - 1,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &code, &off, NULL);
        if (!t->word_re) return ds_error("tokenizer: out of memory");
    }
    return 0;
}

Tokenizer *tokenizer_load_files(const char *path, const char *config_path)
{
    json_error_t err;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        ds_error("%s: line %d: %s", path, err.line, err.text);
        return NULL;
    }
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        ds_error("tokenizer: out of memory");
        return NULL;
    }
    int32_t max_added;
    int rc = -1;
    if (!json_is_object(root)) ds_error("%s: expected a JSON object", path);
    else if (load_added_tokens(t, path, root, &max_added) == 0 &&
             load_model(t, path, root, max_added) == 0 &&
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
    if (!json || !cfg) ds_error("tokenizer: out of memory");
    else {
        snprintf(json, n + 32, "%s/tokenizer.json", dir);
        snprintf(cfg, n + 32, "%s/tokenizer_config.json", dir);
        FILE *f = fopen(cfg, "rb");
        if (f) fclose(f);
        t = tokenizer_load_files(json, f ? cfg : NULL);
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
    pcre2_code_free(t->word_re);
    free(t->vocab.e);
    free(t->merges.e);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->added_map.e);
    for (size_t i = 0; i < t->n_steps; i++) pcre2_code_free(t->steps[i].re);
    free(t->steps);
    free(t->bos_text);
    free(t->eos_text);
    free(t->chat_template);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Encoding: scratch state of one call                                      */
/* ------------------------------------------------------------------------ */

/* A byte range [start, end) of the text being encoded. */
typedef struct {
    size_t start, end;
} Span;

/* A growable list of spans. */
typedef struct {
    Span *v;
    size_t n, cap;
} SpanList;

static int spans_push(SpanList *l, size_t start, size_t end)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        Span *v = realloc(l->v, cap * sizeof *v);
        if (!v) return ds_error("tokenizer: out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (Span){start, end};
    return 0;
}

/* A segment of a split: a range and whether the regex matched it. */
typedef struct {
    size_t start, end;
    bool match;
} Segment;

/* One symbol of a word during BPE: a token id in a doubly linked list. */
typedef struct {
    int32_t id;
    int32_t prev, next; /* indices, -1 at the ends */
    bool gone;          /* merged into its left neighbour */
} Symbol;

/* A pending merge: the pair starting at symbol pos, by rank then position. */
typedef struct {
    int32_t rank, pos, merged;
} Candidate;

/* Everything one encode() call allocates, reused from piece to piece. */
typedef struct {
    const Tokenizer *t;
    const unsigned char *text;
    int32_t *ids;
    size_t cap, n;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *jit;
    SpanList a, b;
    Segment *seg;
    size_t n_seg, cap_seg;
    Symbol *sym;
    Candidate *heap;
    size_t cap_sym;
    Bytes word;
} Encoder;

static void emit(Encoder *e, int32_t id)
{
    if (e->n < e->cap) e->ids[e->n] = id;
    e->n++;
}

/* ------------------------------------------------------------------------ */
/* Encoding: BPE                                                            */
/* ------------------------------------------------------------------------ */

static bool candidate_less(Candidate x, Candidate y)
{
    return x.rank != y.rank ? x.rank < y.rank : x.pos < y.pos;
}

static void heap_push(Candidate *h, size_t *n, Candidate c)
{
    size_t i = (*n)++;
    while (i > 0 && candidate_less(c, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static Candidate heap_pop(Candidate *h, size_t *n)
{
    Candidate top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && candidate_less(h[c + 1], h[c])) c++;
        if (!candidate_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Queues the merge of symbol pos with its right neighbour, if a rule exists. */
static void queue_pair(const Tokenizer *t, Encoder *e, size_t *nh, int32_t pos)
{
    int32_t next = e->sym[pos].next;
    if (next < 0) return;
    const MergeEntry *m = mergemap_get(&t->merges, e->sym[pos].id, e->sym[next].id);
    if (m) heap_push(e->heap, nh, (Candidate){m->rank, pos, m->merged});
}

/*
 * Byte-pair encoding of one piece.
 *
 * The piece starts as one symbol per unit (a byte in the byte-level
 * alphabet, else a character). Then, repeatedly, the adjacent pair with the
 * lowest merge rank is replaced by its merged token; among equal ranks the
 * leftmost goes first. A min-heap of candidate pairs keyed (rank, position)
 * makes this O(n log n): after a merge only the two new neighbouring pairs
 * are queued, and stale candidates (a symbol since merged away, or a pair
 * that no longer merges into the same token) are skipped when popped.
 */
static int bpe_piece(Encoder *e, size_t start, size_t end)
{
    const Tokenizer *t = e->t;
    const unsigned char *s = e->text + start;
    size_t n = end - start;

    if (t->byte_level && t->ignore_merges) { /* whole word in the vocabulary? */
        e->word.n = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char u[4];
            if (bytes_append(&e->word, u, utf8_put(t->byte_cp[s[i]], u))) return -1;
        }
        int32_t id = strmap_get(&t->vocab, e->word.p, e->word.n);
        if (id >= 0) { emit(e, id); return 0; }
    } else if (t->ignore_merges) {
        int32_t id = strmap_get(&t->vocab, s, n);
        if (id >= 0) { emit(e, id); return 0; }
    }

    if (n > e->cap_sym) {
        size_t cap = e->cap_sym ? e->cap_sym : 64;
        while (cap < n) cap *= 2;
        Symbol *sym = realloc(e->sym, cap * sizeof *sym);
        if (sym) e->sym = sym;
        Candidate *heap = realloc(e->heap, 2 * cap * sizeof *heap);
        if (heap) e->heap = heap;
        if (!sym || !heap) return ds_error("tokenizer: out of memory");
        e->cap_sym = cap;
    }
    /* Initial symbols. A unit missing from the vocabulary becomes unk_token
     * (consecutive ones fused when fuse_unk) or, with no unk_token, is
     * dropped: that is what the library does. */
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        int32_t id;
        if (t->byte_level) id = t->byte_id[s[i]];
        else {
            utf8_scan(s + i, n - i, &len);
            id = strmap_get(&t->vocab, s + i, len);
        }
        i += len;
        if (id < 0) {
            if (t->unk_id < 0) continue;
            if (t->fuse_unk && ns > 0 && e->sym[ns - 1].id == t->unk_id) continue;
            id = t->unk_id;
        }
        e->sym[ns] = (Symbol){id, ns - 1, -1, false};
        if (ns > 0) e->sym[ns - 1].next = ns;
        ns++;
    }

    size_t nh = 0;
    for (int32_t i = 0; i + 1 < ns; i++) queue_pair(t, e, &nh, i);
    while (nh > 0) {
        Candidate c = heap_pop(e->heap, &nh);
        Symbol *left = &e->sym[c.pos];
        if (left->gone || left->next < 0) continue;
        const MergeEntry *m = mergemap_get(&t->merges, left->id, e->sym[left->next].id);
        if (!m || m->merged != c.merged) continue; /* stale candidate */
        int32_t right = left->next;
        left->id = c.merged;
        e->sym[right].gone = true;
        left->next = e->sym[right].next;
        if (left->next >= 0) e->sym[left->next].prev = c.pos;
        if (left->prev >= 0) queue_pair(t, e, &nh, left->prev);
        queue_pair(t, e, &nh, c.pos);
    }
    for (int32_t i = ns > 0 ? 0 : -1; i >= 0; i = e->sym[i].next) emit(e, e->sym[i].id);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Encoding: pre-tokenizer splits                                           */
/* ------------------------------------------------------------------------ */

static int segment_push(Encoder *e, size_t start, size_t end, bool match)
{
    if (e->n_seg == e->cap_seg) {
        size_t cap = e->cap_seg ? 2 * e->cap_seg : 64;
        Segment *v = realloc(e->seg, cap * sizeof *v);
        if (!v) return ds_error("tokenizer: out of memory");
        e->seg = v;
        e->cap_seg = cap;
    }
    e->seg[e->n_seg++] = (Segment){start, end, match};
    return 0;
}

/*
 * Splits one piece with one regex step, appending the resulting pieces to
 * out. As in the library, the piece is the whole subject (so `$` is the end
 * of the piece, not of the text), the matches and the gaps between them
 * cover it, `invert` swaps which is which, and then the behaviour decides
 * what becomes a piece. Empty pieces are dropped.
 */
static int split_piece(Encoder *e, const SplitStep *st, size_t start, size_t end, SpanList *out)
{
    const unsigned char *subj = e->text + start;
    size_t len = end - start, pos = 0, prev_end = 0;
    bool any = false;
    e->n_seg = 0;
    while (pos <= len) {
        int rc = pcre2_match(st->re, subj, len, pos, PCRE2_NO_UTF_CHECK, e->md, e->mc);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ds_error("tokenizer: regex step %zu: %s", (size_t)(st - e->t->steps),
                            (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me) {
            /* An empty match right after the previous match is not a match
             * (the iterator rule of the library's engines); either way the
             * search moves on by one character. */
            if (!(any && ms == prev_end)) {
                if (ms > prev_end && segment_push(e, start + prev_end, start + ms, false)) return -1;
                if (segment_push(e, start + ms, start + ms, true)) return -1;
                prev_end = ms;
                any = true;
            }
            if (ms == len) break;
            size_t clen;
            utf8_scan(subj + ms, len - ms, &clen);
            pos = ms + clen;
            continue;
        }
        if (ms > prev_end && segment_push(e, start + prev_end, start + ms, false)) return -1;
        if (segment_push(e, start + ms, start + me, true)) return -1;
        prev_end = pos = me;
        any = true;
    }
    if (prev_end < len || len == 0) {
        if (segment_push(e, start + prev_end, end, false)) return -1;
    }
    if (st->invert)
        for (size_t i = 0; i < e->n_seg; i++) e->seg[i].match = !e->seg[i].match;

    size_t first = out->n;
    bool prev_match = false;
    switch (st->behavior) {
    case SPLIT_REMOVED:
        for (size_t i = 0; i < e->n_seg; i++)
            if (!e->seg[i].match && spans_push(out, e->seg[i].start, e->seg[i].end)) return -1;
        break;
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < e->n_seg; i++)
            if (spans_push(out, e->seg[i].start, e->seg[i].end)) return -1;
        break;
    case SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < e->n_seg; i++) {
            Segment g = e->seg[i];
            if (g.match && !prev_match && out->n > first) out->v[out->n - 1].end = g.end;
            else if (spans_push(out, g.start, g.end)) return -1;
            prev_match = g.match;
        }
        break;
    case SPLIT_MERGED_WITH_NEXT:
        for (size_t i = e->n_seg; i-- > 0;) { /* right to left, then reversed */
            Segment g = e->seg[i];
            if (g.match && !prev_match && out->n > first) out->v[out->n - 1].start = g.start;
            else if (spans_push(out, g.start, g.end)) return -1;
            prev_match = g.match;
        }
        for (size_t i = first, j = out->n; i + 1 < j; i++, j--) {
            Span tmp = out->v[i];
            out->v[i] = out->v[j - 1];
            out->v[j - 1] = tmp;
        }
        break;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < e->n_seg; i++) {
            Segment g = e->seg[i];
            if (g.match == prev_match && out->n > first) out->v[out->n - 1].end = g.end;
            else if (spans_push(out, g.start, g.end)) return -1;
            prev_match = g.match;
        }
        break;
    }
    /* drop empty pieces */
    size_t k = first;
    for (size_t i = first; i < out->n; i++)
        if (out->v[i].end > out->v[i].start) out->v[k++] = out->v[i];
    out->n = k;
    return 0;
}

/* Pre-tokenizes the text range [start, end) (no added tokens in it) and BPE-encodes each piece. */
static int encode_plain(Encoder *e, size_t start, size_t end)
{
    const Tokenizer *t = e->t;
    e->a.n = 0;
    if (start == end) return 0;
    if (spans_push(&e->a, start, end)) return -1;
    for (size_t s = 0; s < t->n_steps; s++) {
        e->b.n = 0;
        for (size_t i = 0; i < e->a.n; i++)
            if (split_piece(e, &t->steps[s], e->a.v[i].start, e->a.v[i].end, &e->b)) return -1;
        SpanList tmp = e->a;
        e->a = e->b;
        e->b = tmp;
    }
    for (size_t i = 0; i < e->a.n; i++)
        if (bpe_piece(e, e->a.v[i].start, e->a.v[i].end)) return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Encoding: added tokens                                                   */
/* ------------------------------------------------------------------------ */

/* Unicode White_Space (what Rust's \s and char::is_whitespace accept), for
 * lstrip / rstrip. Returns the byte length of a whitespace character at s,
 * or 0. */
static size_t whitespace_len(const unsigned char *s, size_t n)
{
    size_t len;
    if (utf8_scan(s, n, &len) != UTF8_CHAR) return 0;
    unsigned c = utf8_get(s, len);
    bool ws = (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
              (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
              c == 0x205F || c == 0x3000;
    return ws ? len : 0;
}

/* Whether the character at s[0..n) starts with a word character (\\w:
 * letters, numbers, marks, connector punctuation), for single_word tokens.
 * No DeepSeek token is single_word. */
static bool is_word_char(Encoder *e, const unsigned char *s, size_t n)
{
    return pcre2_match(e->t->word_re, s, n, 0, PCRE2_NO_UTF_CHECK, e->md, NULL) >= 0;
}

/* Start of the last character of s[0..n), n > 0 (s is valid UTF-8). */
static size_t last_char_start(const unsigned char *s, size_t n)
{
    size_t i = n - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    return i;
}

/*
 * Finds the added tokens of one kind (normalized or not) in [start, end)
 * the way the library's Aho-Corasick automaton does (leftmost match, longest
 * among those starting there, non-overlapping), then widens a match over
 * whitespace for lstrip / rstrip. Gaps go to encode_plain, or, in the first
 * pass, to a second pass for the normalized kind.
 */
static int encode_added(Encoder *e, size_t start, size_t end, int pass, unsigned flags)
{
    const Tokenizer *t = e->t;
    const unsigned char *s = e->text;
    bool want_normalized = pass == 1;
    size_t done = start, i = start;
    while (i < end) {
        const AddedToken *best = NULL;
        for (; i < end && !best; i++) {
            for (uint32_t f = t->by_first[s[i]]; f < t->by_first[s[i] + 1]; f++) {
                const AddedToken *a = &t->added[t->first_order[f]];
                if (a->normalized != want_normalized) continue;
                if (a->special && !(flags & TOKENIZER_PARSE_SPECIAL)) continue;
                if (a->len > end - i) continue;
                if (memcmp(a->content, s + i, a->len) != 0) continue;
                if (!best || a->len > best->len) best = a;
            }
        }
        if (!best) break;
        size_t ms = i - 1, me = ms + best->len;
        i = me; /* the automaton resumes after the match, kept or not */
        if (best->single_word) {
            size_t c = ms > start ? start + last_char_start(s + start, ms - start) : start;
            bool left_ok = ms == start || !is_word_char(e, s + c, ms - c);
            bool right_ok = me == end || !is_word_char(e, s + me, end - me);
            if (!left_ok || !right_ok) continue;
        }
        if (best->lstrip) {
            while (ms > done) {
                size_t c = last_char_start(s + done, ms - done) + done;
                if (!whitespace_len(s + c, ms - c)) break;
                ms = c;
            }
        }
        if (best->rstrip) {
            size_t w;
            while (me < end && (w = whitespace_len(s + me, end - me))) me += w;
            i = me;
        }
        if (ms > done) {
            int rc = pass == 0 ? encode_added(e, done, ms, 1, flags) : encode_plain(e, done, ms);
            if (rc) return -1;
        }
        emit(e, best->id);
        done = me;
    }
    if (done < end)
        return pass == 0 ? encode_added(e, done, end, 1, flags) : encode_plain(e, done, end);
    return 0;
}

// ANCHOR: tokenizer_encode
long tokenizer_encode(const Tokenizer *t, const char *text, size_t len, unsigned flags,
                      int32_t *ids, size_t cap)
{
    Encoder e = {.t = t, .ids = ids, .cap = cap};
    Bytes clean = {0};
    long result = -1;

    /* Invalid UTF-8 becomes U+FFFD first (see tokenizer.h). */
    const unsigned char *src = (const unsigned char *)text;
    size_t i = 0, clen;
    while (i < len && utf8_scan(src + i, len - i, &clen) == UTF8_CHAR) i += clen;
    if (i < len) {
        if (utf8_lossy_append(&clean, src, len, true)) goto out;
        src = clean.p;
        len = clean.n;
    }
    e.text = src ? src : (const unsigned char *)"";

    e.md = pcre2_match_data_create(4, NULL);
    e.mc = pcre2_match_context_create(NULL);
    e.jit = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!e.md || !e.mc || !e.jit) {
        ds_error("tokenizer: out of memory");
        goto out;
    }
    pcre2_jit_stack_assign(e.mc, NULL, e.jit);
    pcre2_set_match_limit(e.mc, 10000000); /* a pathological pattern fails instead of hanging */

    if (flags & TOKENIZER_ADD_SPECIAL)
        for (size_t k = 0; k < t->n_prefix; k++) emit(&e, t->prefix[k]);
    if (encode_added(&e, 0, len, 0, flags)) goto out;
    if (flags & TOKENIZER_ADD_SPECIAL)
        for (size_t k = 0; k < t->n_suffix; k++) emit(&e, t->suffix[k]);
    result = (long)e.n;
out:
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mc);
    pcre2_jit_stack_free(e.jit);
    free(e.a.v);
    free(e.b.v);
    free(e.seg);
    free(e.sym);
    free(e.heap);
    free(e.word.p);
    free(clean.p);
    return result;
}
// ANCHOR_END: tokenizer_encode

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */
/* ------------------------------------------------------------------------ */

/* The stored string of an id: an added token's content first, then the vocabulary's. */
static const char *id_string(const Tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids) return NULL;
    if (t->id_added[id] >= 0) {
        *len = t->added[t->id_added[id]].len;
        return t->added[t->id_added[id]].content;
    }
    *len = t->id_len[id];
    return t->id_str[id];
}

/*
 * Appends the bytes of one token, as the ByteLevel decoder sees it: every
 * character mapped back through the byte alphabet, or, when a character is
 * outside the alphabet (BOS's "｜", say), the token's own UTF-8 unchanged.
 */
static int token_bytes(const Tokenizer *t, int32_t id, unsigned flags, Bytes *out, bool *emitted)
{
    size_t len;
    const char *s = id_string(t, id, &len);
    *emitted = false;
    if (!s) return ds_error("tokenizer: id %d is not in the vocabulary", id);
    if ((flags & TOKENIZER_SKIP_SPECIAL) && t->id_special[id]) return 0;
    *emitted = true;
    if (!t->decode_byte_level) return bytes_append(out, s, len);
    size_t mark = out->n;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t cl;
        unsigned cp = utf8_get(u + i, (utf8_scan(u + i, len - i, &cl), cl));
        if (cp >= 324 || t->cp_to_byte[cp] < 0) {
            out->n = mark;
            return bytes_append(out, s, len);
        }
        unsigned char b = (unsigned char)t->cp_to_byte[cp];
        if (bytes_append(out, &b, 1)) return -1;
        i += cl;
    }
    return 0;
}

long tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char *out,
                      size_t cap)
{
    Bytes raw = {0}, text = {0};
    long result = -1;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        bool emitted;
        size_t mark = raw.n;
        if (!t->decode_byte_level && !first && bytes_append(&raw, " ", 1)) goto out;
        if (token_bytes(t, ids[i], flags, &raw, &emitted)) goto out;
        if (emitted) first = false;
        else raw.n = mark;
    }
    if (utf8_lossy_append(&text, raw.p, raw.n, true)) goto out;
    if (cap > 0) {
        size_t k = text.n < cap - 1 ? text.n : cap - 1;
        if (k) memcpy(out, text.p, k);
        out[k] = '\0';
    }
    result = (long)text.n;
out:
    free(raw.p);
    free(text.p);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Streaming decoder                                                        */
/* ------------------------------------------------------------------------ */

int token_stream_init(TokenStream *s, const Tokenizer *t, unsigned flags)
{
    size_t longest = 0;
    for (int32_t i = 0; i < t->n_ids; i++)
        if (t->id_len[i] > longest) longest = t->id_len[i];
    for (size_t k = 0; k < t->n_added; k++)
        if (t->added[k].len > longest) longest = t->added[k].len;
    *s = (TokenStream){.tok = t, .flags = flags};
    /* worst case: held bytes + a token + a space, every byte becoming U+FFFD */
    s->cap = 3 * (longest + 8);
    s->out = malloc(s->cap);
    return s->out ? 0 : ds_error("tokenizer: out of memory");
}

/* Lossy-decodes held + new bytes into s->out, keeping an unfinished character held. */
static const char *stream_emit(TokenStream *s, const unsigned char *p, size_t n, bool final,
                               size_t *len)
{
    Bytes in = {0}, out = {s->out ? (unsigned char *)s->out : NULL, 0, s->cap};
    if (bytes_append(&in, s->held, s->n_held) || bytes_append(&in, p, n)) {
        free(in.p);
        return NULL;
    }
    long keep = utf8_lossy_append(&out, in.p, in.n, final);
    if (keep < 0) {
        free(in.p);
        return NULL;
    }
    s->out = (char *)out.p;
    s->cap = out.cap;
    s->n_held = (size_t)keep;
    if (s->n_held) memcpy(s->held, in.p + in.n - s->n_held, s->n_held);
    free(in.p);
    *len = out.n;
    return s->out;
}

const char *token_stream_push(TokenStream *s, int32_t id, size_t *len)
{
    Bytes tok = {0};
    bool emitted;
    if (!s->tok->decode_byte_level && s->started && bytes_append(&tok, " ", 1)) return NULL;
    if (token_bytes(s->tok, id, s->flags, &tok, &emitted)) {
        free(tok.p);
        return NULL;
    }
    if (emitted) s->started = 1;
    else tok.n = 0;
    const char *r = stream_emit(s, tok.p, tok.n, false, len);
    free(tok.p);
    return r;
}

const char *token_stream_flush(TokenStream *s, size_t *len)
{
    return stream_emit(s, NULL, 0, true, len);
}

void token_stream_free(TokenStream *s)
{
    free(s->out);
    s->out = NULL;
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                  */
/* ------------------------------------------------------------------------ */

int32_t tokenizer_vocab_size(const Tokenizer *t) { return t->n_ids; }

const char *tokenizer_token_string(const Tokenizer *t, int32_t id, size_t *len)
{
    size_t n = 0;
    const char *s = id_string(t, id, &n);
    if (len) *len = n;
    return s;
}

int32_t tokenizer_token_id(const Tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    int32_t id = strmap_get(&t->added_map, token, n);
    return id >= 0 ? id : strmap_get(&t->vocab, token, n);
}

int32_t tokenizer_bos_id(const Tokenizer *t) { return t->bos_id; }
int32_t tokenizer_eos_id(const Tokenizer *t) { return t->eos_id; }
const char *tokenizer_bos_text(const Tokenizer *t) { return t->bos_text; }
const char *tokenizer_eos_text(const Tokenizer *t) { return t->eos_text; }
const char *tokenizer_chat_template(const Tokenizer *t) { return t->chat_template; }

int tokenizer_adds_bos(const Tokenizer *t)
{
    return t->bos_id >= 0 && t->n_prefix > 0 && t->prefix[0] == t->bos_id;
}
