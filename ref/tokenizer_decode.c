/**
 * \file tokenizer_decode.c
 * \brief Ids back to text: the ByteLevel decoder, the streaming decoder
 *        that never emits half a character, and the lookup queries.
 */
#include "error.h"
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

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

long tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char *out, size_t cap)
{
    Bytes raw = { 0 }, text = { 0 };
    long result = -1;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        bool emitted;
        size_t mark = raw.n;
        if (!t->decode_byte_level && !first && bytes_append(&raw, " ", 1)) goto out;
        if (token_bytes(t, ids[i], flags, &raw, &emitted)) goto out;
        if (emitted)
            first = false;
        else
            raw.n = mark;
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
    *s = (TokenStream){ .tok = t, .flags = flags };
    /* worst case: held bytes + a token + a space, every byte becoming U+FFFD */
    s->cap = 3 * (longest + 8);
    s->out = malloc(s->cap);
    return s->out ? 0 : ds_error("tokenizer: out of memory");
}

/* Lossy-decodes held + new bytes into s->out, keeping an unfinished character held. */
static const char *stream_emit(TokenStream *s, const unsigned char *p, size_t n, bool final, size_t *len)
{
    Bytes in = { 0 }, out = { s->out ? (unsigned char *)s->out : NULL, 0, s->cap };
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
    Bytes tok = { 0 };
    bool emitted;
    if (!s->tok->decode_byte_level && s->started && bytes_append(&tok, " ", 1)) return NULL;
    if (token_bytes(s->tok, id, s->flags, &tok, &emitted)) {
        free(tok.p);
        return NULL;
    }
    if (emitted)
        s->started = 1;
    else
        tok.n = 0;
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

int32_t tokenizer_vocab_size(const Tokenizer *t)
{
    return t->n_ids;
}

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

int32_t tokenizer_bos_id(const Tokenizer *t)
{
    return t->bos_id;
}
int32_t tokenizer_eos_id(const Tokenizer *t)
{
    return t->eos_id;
}
const char *tokenizer_bos_text(const Tokenizer *t)
{
    return t->bos_text;
}
const char *tokenizer_eos_text(const Tokenizer *t)
{
    return t->eos_text;
}
const char *tokenizer_chat_template(const Tokenizer *t)
{
    return t->chat_template;
}

int tokenizer_adds_bos(const Tokenizer *t)
{
    return t->bos_id >= 0 && t->n_prefix > 0 && t->prefix[0] == t->bos_id;
}
