/**
 * \file tokenizer.c
 * \brief Encoding (see tokenizer.h): the pre-tokenizer, read from
 *        tokenizer.json and run as PCRE2 regex splits, then byte-pair
 *        encoding of each piece, with added tokens cut out first.
 *
 * Reading order for the book: how a Split step is compiled, the
 * pre-tokenizer's steps, then encoding in pipeline order (BPE of one piece,
 * splits, added tokens, tokenizer_encode()). The rest of the tokenizer is
 * listed in tokenizer_internal.h.
 */
#include "error.h"
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Loading: the pre-tokenizer                                               */
/* ------------------------------------------------------------------------ */

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
 * UCP: \s and \p{..} use Unicode properties, as Oniguruma (the library's
 *      regex engine) does, so "\s" matches U+3000 too; the general
 *      categories get their Unicode 16 sets (tokenizer_compile_regex() in
 *      tokenizer_unicode.c), as in the library.
 * MULTILINE: the library compiles with Oniguruma's Ruby syntax, where `$`
 *      matches before any "\n" as well as at the end; PCRE2 does the same
 *      with MULTILINE (and "\n" as the only newline). DeepSeek-V2's
 *      `\s+$` depends on this only for pieces that contain "\n", and its
 *      first step already isolated every "\n".
 * LITERAL: for the `String` form of a pattern.
 */
static int add_split(Tokenizer *t, const char *file, const char *where, const char *pattern, size_t len, bool literal,
                     SplitBehavior behavior, bool invert)
{
    uint32_t opts = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    Regex16 re;
    if (tokenizer_compile_regex(file, where, pattern, len, opts, &re)) return -1;
    SplitStep *s = realloc(t->steps, (t->n_steps + 1) * sizeof *s);
    if (!s) {
        regex16_free(&re);
        return ds_error("tokenizer: out of memory");
    }
    t->steps = s;
    t->steps[t->n_steps++] = (SplitStep){ re, behavior, invert };
    return 0;
}
// ANCHOR_END: tokenizer_add_split

/* GPT-2's split, used by a ByteLevel pre-tokenizer with use_regex true
 * (DeepSeek sets use_regex false: its own Splits come first). */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int load_pre_tokenizer(Tokenizer *t, const char *file, const char *where, json_t *p)
{
    if (!p || json_is_null(p)) return 0;
    const char *type = pipeline_type(file, where, p);
    if (!type) return -1;
    if (t->byte_level) return ds_error("%s: %s: steps after ByteLevel are unsupported", file, where);
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
        static const char *const names[] = { "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                             "Contiguous" };
        const char *b = json_string_value(json_object_get(p, "behavior"));
        int behavior = -1;
        for (int i = 0; b && i < 5; i++)
            if (strcmp(b, names[i]) == 0) behavior = i;
        if (behavior < 0) return ds_error("%s: %s.behavior: unsupported '%s'", file, where, b ? b : "(missing)");
        bool invert = false;
        if (json_get_bool(file, where, p, "invert", false, &invert)) return -1;
        json_t *pat = json_object_get(p, "pattern");
        json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        json_t *s = json_is_string(re) ? re : lit;
        if (!json_is_string(s))
            return ds_error("%s: %s.pattern: expected {\"Regex\": ...} or {\"String\": ...}", file, where);
        snprintf(sub, sizeof sub, "%s.pattern.%s", where, s == re ? "Regex" : "String");
        return add_split(t, file, sub, json_string_value(s), json_string_length(s), s == lit, (SplitBehavior)behavior,
                         invert);
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
        return add_split(t, file, sub, individual ? "\\p{N}" : "\\p{N}+", individual ? 5 : 6, false, SPLIT_ISOLATED,
                         false);
    }
    // ANCHOR_END: tokenizer_digits
    if (strcmp(type, "ByteLevel") == 0) {
        bool prefix_space = false, use_regex = false;
        if (json_get_bool(file, where, p, "add_prefix_space", true, &prefix_space) ||
            json_get_bool(file, where, p, "use_regex", true, &use_regex))
            return -1;
        if (prefix_space) return ds_error("%s: %s.add_prefix_space: true is unsupported", file, where);
        if (use_regex) {
            snprintf(sub, sizeof sub, "%s.use_regex", where);
            if (add_split(t, file, sub, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, false, SPLIT_ISOLATED, false)) return -1;
        }
        t->byte_level = true;
        return 0;
    }
    return ds_error("%s: %s.type: unsupported '%s'", file, where, type);
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
    l->v[l->n++] = (Span){ start, end };
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
    if (m) heap_push(e->heap, nh, (Candidate){ m->rank, pos, m->merged });
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
        if (id >= 0) {
            emit(e, id);
            return 0;
        }
    } else if (t->ignore_merges) {
        int32_t id = strmap_get(&t->vocab, s, n);
        if (id >= 0) {
            emit(e, id);
            return 0;
        }
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
        if (t->byte_level)
            id = t->byte_id[s[i]];
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
        e->sym[ns] = (Symbol){ id, ns - 1, -1, false };
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
    e->seg[e->n_seg++] = (Segment){ start, end, match };
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
    /* PCRE2's own compilation unless this piece (the whole subject) needs Unicode 16 */
    const pcre2_code *re = regex16_for(&st->re, st->re.plain && unicode16_changed_in(subj, len));
    while (pos <= len) {
        int rc = pcre2_match(re, subj, len, pos, PCRE2_NO_UTF_CHECK, e->md, e->mc);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ds_error("tokenizer: regex step %zu: %s", (size_t)(st - e->t->steps), (const char *)msg);
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
            if (g.match && !prev_match && out->n > first)
                out->v[out->n - 1].end = g.end;
            else if (spans_push(out, g.start, g.end))
                return -1;
            prev_match = g.match;
        }
        break;
    case SPLIT_MERGED_WITH_NEXT:
        for (size_t i = e->n_seg; i-- > 0;) { /* right to left, then reversed */
            Segment g = e->seg[i];
            if (g.match && !prev_match && out->n > first)
                out->v[out->n - 1].start = g.start;
            else if (spans_push(out, g.start, g.end))
                return -1;
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
            if (g.match == prev_match && out->n > first)
                out->v[out->n - 1].end = g.end;
            else if (spans_push(out, g.start, g.end))
                return -1;
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
              (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
    return ws ? len : 0;
}

/* Whether the character at s[0..n) starts with a word character (\\w:
 * letters, numbers, marks, connector punctuation), for single_word tokens.
 * No DeepSeek token is single_word. */
static bool is_word_char(Encoder *e, const unsigned char *s, size_t n)
{
    return pcre2_match(e->t->word_re.wide, s, n, 0, PCRE2_NO_UTF_CHECK, e->md, NULL) >= 0;
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
    if (done < end) return pass == 0 ? encode_added(e, done, end, 1, flags) : encode_plain(e, done, end);
    return 0;
}

// ANCHOR: tokenizer_encode
long tokenizer_encode(const Tokenizer *t, const char *text, size_t len, unsigned flags, int32_t *ids, size_t cap)
{
    Encoder e = { .t = t, .ids = ids, .cap = cap };
    Bytes clean = { 0 };
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
