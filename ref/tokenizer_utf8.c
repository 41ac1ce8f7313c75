/**
 * \file tokenizer_utf8.c
 * \brief UTF-8 for the tokenizer: classifying bytes (Unicode's Table 3-7),
 *        writing and reading code points, and the lossy repair that turns
 *        each ill-formed subpart into one U+FFFD (see tokenizer.h).
 */
#include "error.h"
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */
/* ------------------------------------------------------------------------ */

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
Utf8Scan utf8_scan(const unsigned char *s, size_t n, size_t *len)
{
    unsigned char b = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b < 0x80) {
        *len = 1;
        return UTF8_CHAR;
    }
    if (b >= 0xC2 && b <= 0xDF)
        need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        *len = 1;
        return UTF8_ILL_FORMED;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *len = i;
            return UTF8_TRUNCATED;
        }
        unsigned char c = s[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (c < l || c > h) {
            *len = i;
            return UTF8_ILL_FORMED;
        }
    }
    *len = need;
    return UTF8_CHAR;
}

size_t utf8_put(unsigned cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
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

unsigned utf8_get(const unsigned char *s, size_t len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return (unsigned)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    case 3: return (unsigned)(s[0] & 0x0F) << 12 | (unsigned)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    default:
        return (unsigned)(s[0] & 0x07) << 18 | (unsigned)(s[1] & 0x3F) << 12 | (unsigned)(s[2] & 0x3F) << 6 |
               (s[3] & 0x3F);
    }
}

/* ------------------------------------------------------------------------ */
/* Growable byte buffer                                                     */
/* ------------------------------------------------------------------------ */

int bytes_reserve(Bytes *b, size_t extra)
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

int bytes_append(Bytes *b, const void *src, size_t n)
{
    if (n == 0) return 0;
    if (bytes_reserve(b, n)) return -1;
    memcpy(b->p + b->n, src, n);
    b->n += n;
    return 0;
}

static const unsigned char REPLACEMENT[3] = { 0xEF, 0xBF, 0xBD }; /* U+FFFD */

/*
 * Appends src[0..n) to out with every ill-formed subpart replaced by
 * U+FFFD. A truncated sequence at the very end is replaced too when
 * final is true; otherwise it is left unconsumed and its length returned
 * (the streaming decoder keeps those bytes for the next token).
 */
long utf8_lossy_append(Bytes *out, const unsigned char *src, size_t n, bool final)
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
