/**
 * \file tokenizer_maps.c
 * \brief The byte-level alphabet and the tokenizer's two hash maps:
 *        token string -> id, and (left id, right id) -> merge rule.
 */
#include "error.h"
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

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
void byte_alphabet(unsigned byte_to_cp[256])
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

int strmap_init(StrMap *m, size_t expected)
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

int32_t strmap_get(const StrMap *m, const void *key, size_t len)
{
    if (!m->e) return -1;
    StrEntry *e = strmap_slot(m, key, len);
    return e->key ? e->value : -1;
}

/* Inserts or overwrites; the map never fills past half (sized at init). */
void strmap_put(StrMap *m, const char *key, size_t len, int32_t value)
{
    StrEntry *e = strmap_slot(m, key, len);
    if (!e->key) {
        e->key = key;
        e->len = (uint32_t)len;
        m->n++;
    }
    e->value = value;
}

size_t merge_hash(uint64_t pair)
{
    pair *= 0x9E3779B97F4A7C15ull;
    return (size_t)(pair ^ (pair >> 31));
}

const MergeEntry *mergemap_get(const MergeMap *m, int32_t left, int32_t right)
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
