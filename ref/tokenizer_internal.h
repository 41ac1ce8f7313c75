/**
 * \file tokenizer_internal.h
 * \brief What the tokenizer's source files share: the ::Tokenizer structure,
 *        UTF-8 helpers, the growable byte buffer and the two hash maps.
 *
 * Not part of the public API (that is tokenizer.h). The files, in reading
 * order: tokenizer_utf8.c (UTF-8, byte buffer), tokenizer_maps.c (the
 * byte-level alphabet, hash maps), tokenizer_load.c (tokenizer.json and
 * tokenizer_config.json), tokenizer.c (the pre-tokenizer and BPE: encoding),
 * tokenizer_unicode.c (Unicode 16 properties for the pre-tokenizer's
 * regexes), tokenizer_decode.c (decoding and queries). Its declarations
 * are documented in the source, not in the API pages.
 */
#ifndef DSV2_TOKENIZER_INTERNAL_H
#define DSV2_TOKENIZER_INTERNAL_H
/** \cond INTERNAL */

#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* UTF-8 and the byte buffer (tokenizer_utf8.c)                             */
/* ------------------------------------------------------------------------ */

/* What utf8_scan() found at the start of a byte string. */
typedef enum {
    UTF8_CHAR,       /* a well-formed character */
    UTF8_ILL_FORMED, /* a maximal ill-formed subpart: one U+FFFD replaces it */
    UTF8_TRUNCATED,  /* a well-formed prefix cut short by the end of the bytes */
} Utf8Scan;

Utf8Scan utf8_scan(const unsigned char *s, size_t n, size_t *len);

/* Writes code point cp as UTF-8 into out (room for 4); returns the length. */
size_t utf8_put(unsigned cp, unsigned char *out);

/* The code point of the well-formed character of length len at s. */
unsigned utf8_get(const unsigned char *s, size_t len);

/* A growable byte string. */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} Bytes;

int bytes_reserve(Bytes *b, size_t extra);
int bytes_append(Bytes *b, const void *src, size_t n);

/* Appends src[0..n) with ill-formed subparts replaced by U+FFFD; with
 * final false, a truncated character at the end is left unconsumed and its
 * length returned. -1 when out of memory. */
long utf8_lossy_append(Bytes *out, const unsigned char *src, size_t n, bool final);

/* ------------------------------------------------------------------------ */
/* The byte-level alphabet and the hash maps (tokenizer_maps.c)             */
/* ------------------------------------------------------------------------ */

/* GPT-2's bytes_to_unicode: the code point standing for each byte. */
void byte_alphabet(unsigned byte_to_cp[256]);

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

int strmap_init(StrMap *m, size_t expected);
int32_t strmap_get(const StrMap *m, const void *key, size_t len);
void strmap_put(StrMap *m, const char *key, size_t len, int32_t value);

/* What a merge rule says: its priority and the token it produces. */
typedef struct {
    uint64_t pair;  /* left id << 32 | right id; UINT64_MAX: empty slot */
    int32_t rank;   /* position in model.merges: lower merges first */
    int32_t merged; /* id of the concatenation */
} MergeEntry;

/* Open-addressing map from a pair of token ids to its merge rule. */
typedef struct {
    MergeEntry *e;
    size_t mask;
} MergeMap;

size_t merge_hash(uint64_t pair);
const MergeEntry *mergemap_get(const MergeMap *m, int32_t left, int32_t right);

/* ------------------------------------------------------------------------ */
/* The tokenizer                                                            */
/* ------------------------------------------------------------------------ */

/* How a Split step turns its matches into pieces (the file's `behavior`). */
typedef enum {
    SPLIT_REMOVED,              /* matches are dropped */
    SPLIT_ISOLATED,             /* every match is a piece of its own */
    SPLIT_MERGED_WITH_PREVIOUS, /* a match is glued to the end of the piece before it */
    SPLIT_MERGED_WITH_NEXT,     /* a match is glued to the start of the piece after it */
    SPLIT_CONTIGUOUS,           /* runs of matches, and runs of non-matches, form pieces */
} SplitBehavior;

/*
 * A regex of the pre-tokenizer in two compilations (tokenizer_unicode.c):
 * with Unicode 16 general categories, and as PCRE2 compiles it with its own
 * Unicode 14 tables, which matches the same on text without a character
 * that changed category in between and skips the widened classes' extra
 * ranges. plain is NULL when the pattern has nothing to widen.
 */
typedef struct {
    pcre2_code *wide;
    pcre2_code *plain;
} Regex16;

/* One regex step of the pre-tokenizer. */
typedef struct {
    Regex16 re;
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
    StrMap vocab;     /* token string -> id */
    MergeMap merges;  /* (left, right) -> rank, merged */
    char **id_str;    /* [n_ids] stored string of each id (NULL: no such id) */
    uint32_t *id_len; /* [n_ids] */
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
    StrMap added_map;       /* content -> id */
    int32_t *id_added;      /* [n_ids] index into added of the id's added token, or -1 */
    bool *id_special;       /* [n_ids] the id is a special added token */
    uint32_t by_first[257]; /* added tokens sorted by first byte: by_first[b]..by_first[b+1] */
    uint32_t *first_order;  /* [n_added] indices into added, grouped by first byte */
    Regex16 word_re;        /* \w at the start of a subject, for single_word tokens */
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
/* Shared between the loading files                                         */
/* ------------------------------------------------------------------------ */

/* Reads a JSON boolean member; absent or null gives dflt; other types are errors. */
int json_get_bool(const char *file, const char *where, json_t *obj, const char *key, bool dflt, bool *out);

/* The `type` string of a pipeline object, or NULL after setting the error. */
const char *pipeline_type(const char *file, const char *where, json_t *obj);

/* Reads the `pre_tokenizer` object p (tokenizer.c). */
int load_pre_tokenizer(Tokenizer *t, const char *file, const char *where, json_t *p);

/*
 * Compiles a regex of the pre-tokenizer with PCRE2, with its general
 * category escapes (\p{L}, \P{N}, ...) given their Unicode 16 sets
 * (tokenizer_unicode.c). Returns 0, or -1 after one error line naming file
 * and where.
 */
int tokenizer_compile_regex(const char *file, const char *where, const char *pattern, size_t len, uint32_t options,
                            Regex16 *out);

/* Frees both compilations. */
void regex16_free(Regex16 *r);

/* Whether s[0..n) (valid UTF-8) holds a character whose general category
 * differs between Unicode 14 and 16: then only Regex16.wide is exact. */
bool unicode16_changed_in(const unsigned char *s, size_t n);

/* The compilation to run on a subject for which unicode16_changed_in() said changed. */
static inline const pcre2_code *regex16_for(const Regex16 *r, bool changed)
{
    return changed || !r->plain ? r->wide : r->plain;
}

/** \endcond */
#endif
