/**
 * \file test_tokenizer_unicode.c
 * \brief The pre-tokenizer's Unicode 16 regexes (ref/tokenizer_unicode.c)
 *        against the system PCRE2 on text without post-Unicode-14
 *        characters, where both must agree, and the escapes it refuses.
 *
 * The ids for characters added in Unicode 15 and 16 are checked against
 * the tokenizers library in test_tokenizer (unicode16_golden); this suite
 * checks that widening the classes changed nothing else.
 */
#include "check.h"
#include "error.h"
#include "tokenizer_internal.h"
#include "unicode_tables.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The regexes of the pre-tokenizers in use: DeepSeek-V4's (the same as V3's)
 * three Splits, DeepSeek-V2's (tools/tokenizer_spec.py) with the Digits step,
 * and GPT-2's ByteLevel split. */
static const char *const PATTERNS[] = {
    "\\p{N}{1,3}",
    "[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F\xE3\x82\xA0-\xE3\x83\xBF]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    "[\r\n]",
    "\\s?[!-/:-~\xEF\xBC\x81-\xEF\xBC\x8F\xEF\xBC\x9A-\xEF\xBD\x9E\xE2\x80\x98-\xE2\x80\x9F"
    "\xE3\x80\x80-\xE3\x80\x82]+",
    "\\s+$",
    "\\p{N}",
    "\\p{N}+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
    "\\P{L}+",
    "[\\p{Lu}\\p{Ll}\\p{Nd}\\p{Po}\\p{So}\\p{Mc}]+",
};

/* Whether cp is in the same general category under Unicode 14 and 16: in
 * none of the tables' additions (every newly assigned character is in the
 * additions of its major category or of Cf; U+1171E in those of Mc). */
static int unchanged(uint32_t cp)
{
    for (size_t i = 0; i < UNICODE16_N_CATEGORIES; i++)
        for (size_t k = 0; k < UNICODE16_CATEGORIES[i].n_added; k++)
            if (cp >= UNICODE16_CATEGORIES[i].added[k].first && cp <= UNICODE16_CATEGORIES[i].added[k].last) return 0;
    return 1;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull; /* fixed seed */

static uint32_t rng_below(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* A code point from a mix of scripts, spaces and symbols, never a
 * surrogate, never one whose category changed after Unicode 14. */
static uint32_t random_code_point(void)
{
    static const uint32_t blocks[][2] = {
        { 0x20, 0x7E },       { 0x20, 0x20 },       { 0x09, 0x0D },       { 0x30, 0x39 },     { 0xA0, 0x24F },
        { 0x300, 0x36F },     { 0x370, 0x52F },     { 0x590, 0x6FF },     { 0x900, 0x97F },   { 0xE00, 0xE7F },
        { 0x1100, 0x11FF },   { 0x1E00, 0x1FFF },   { 0x2000, 0x206F },   { 0x20A0, 0x21FF }, { 0x2460, 0x27BF },
        { 0x3000, 0x30FF },   { 0x4E00, 0x9FFF },   { 0xAC00, 0xD7A3 },   { 0xFF00, 0xFFEF }, { 0x10000, 0x1D7FF },
        { 0x1F000, 0x1FAFF }, { 0x20000, 0x2FFFF }, { 0xE0000, 0xE01EF }, { 0x0, 0x10FFFF },
    };
    for (;;) {
        const uint32_t *b = blocks[rng_below(sizeof blocks / sizeof blocks[0])];
        uint32_t cp = b[0] + rng_below(b[1] - b[0] + 1);
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF) || !unchanged(cp)) continue;
        return cp;
    }
}

/* Every match of re over s[0..n), as the splitter finds them, into m[] as
 * start/end pairs; returns how many (at most cap). */
static size_t all_matches(const pcre2_code *re, pcre2_match_data *md, const unsigned char *s, size_t n, size_t *m,
                          size_t cap)
{
    size_t pos = 0, k = 0;
    while (pos <= n && k < cap) {
        int rc = pcre2_match(re, s, n, pos, 0, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        assert_true(rc > 0);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        m[2 * k] = ov[0];
        m[2 * k + 1] = ov[1];
        k++;
        if (ov[1] > ov[0])
            pos = ov[1];
        else {
            if (ov[0] >= n) break;
            size_t len;
            utf8_scan(s + ov[0], n - ov[0], &len);
            pos = ov[0] + len;
        }
    }
    return k;
}

/* On 4000 random strings per pattern (fixed seed) of characters whose
 * category Unicode 16 did not change, the widened regex matches exactly
 * where PCRE2's own does: same starts, same ends. */
static void widened_matches_pcre2_on_old_characters(void **state)
{
    (void)state;
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    const uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    size_t compared = 0;
    for (size_t p = 0; p < sizeof PATTERNS / sizeof PATTERNS[0]; p++) {
        int code;
        PCRE2_SIZE off;
        pcre2_code *stock = pcre2_compile((PCRE2_SPTR)PATTERNS[p], PCRE2_ZERO_TERMINATED, opts, &code, &off, cc);
        Regex16 re;
        if (!stock || tokenizer_compile_regex("test", "pattern", PATTERNS[p], strlen(PATTERNS[p]), opts, &re))
            fail_msg("pattern %zu: %s", p, ds_last_error());
        const pcre2_code *wide = re.wide;
        for (int trial = 0; trial < 4000; trial++) {
            unsigned char s[24 * 4];
            size_t n = 0, len = 1 + rng_below(24);
            for (size_t i = 0; i < len; i++) n += utf8_put(random_code_point(), s + n);
            size_t a[2 * 64], b[2 * 64];
            size_t na = all_matches(stock, md, s, n, a, 64);
            size_t nb = all_matches(wide, md, s, n, b, 64);
            if (na != nb || memcmp(a, b, 2 * na * sizeof a[0]) != 0) {
                char hex[2 * sizeof s + 1];
                for (size_t i = 0; i < n; i++) sprintf(hex + 2 * i, "%02x", s[i]);
                fail_msg("pattern %zu, text %s: %zu matches, widened %zu", p, hex, na, nb);
            }
            compared++;
        }
        pcre2_code_free(stock);
        regex16_free(&re);
    }
    print_message("  %zu strings, same matches\n", compared);
    pcre2_compile_context_free(cc);
    pcre2_match_data_free(md);
}

/* Whether the widened \p{name} matches code point cp. */
static int widened_has(const char *name, uint32_t cp)
{
    char pat[32];
    unsigned char s[4];
    snprintf(pat, sizeof pat, "\\p{%s}", name);
    Regex16 re;
    if (tokenizer_compile_regex("test", "pattern", pat, strlen(pat), PCRE2_UTF | PCRE2_UCP, &re))
        fail_msg("%s", ds_last_error());
    size_t n = utf8_put(cp, s);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = pcre2_match(regex16_for(&re, unicode16_changed_in(s, n)), s, n, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    regex16_free(&re);
    return rc > 0;
}

/* Characters the Unicode code charts list as added in 15.0, 15.1 and 16.0. */
static void widened_classes_hold_new_characters(void **state)
{
    (void)state;
    assert_true(widened_has("S", 0x1FAE8));  /* SHAKING FACE, So, 15.0 */
    assert_true(widened_has("So", 0x1FA89)); /* HARP, So, 16.0 */
    assert_true(widened_has("L", 0x2EBF0));  /* CJK ideograph, extension I, 15.1 */
    assert_true(widened_has("Lo", 0x1E5D0)); /* OL ONAL LETTER O, 16.0 */
    assert_true(widened_has("N", 0x11F50));  /* KAWI DIGIT ZERO, Nd, 15.0 */
    assert_true(widened_has("Nd", 0x10D40)); /* GARAY DIGIT ZERO, 16.0 */
    assert_true(widened_has("M", 0x11F00));  /* KAWI SIGN CANDRABINDU, Mn, 15.0 */
    assert_true(widened_has("Mc", 0x1171E)); /* AHOM CONSONANT SIGN MEDIAL RA: Mn in 14, Mc in 16 */
    assert_false(widened_has("L", 0x1FAE8));
    assert_false(widened_has("S", 0x2EBF0));
    assert_false(widened_has("L", 0x0378)); /* unassigned in 16 too */
}

/* The encoder runs PCRE2's own compilation unless the text has a code point
 * whose category changed; that check must see every one of them. */
static void changed_characters_found(void **state)
{
    (void)state;
    unsigned char s[16];
    assert_true(UNICODE16_CHANGED[0].first > 0x7FF); /* the scan skips 1- and 2-byte characters */
    for (size_t i = 0; i < UNICODE16_N_CHANGED; i++) {
        const uint32_t ends[] = { UNICODE16_CHANGED[i].first, UNICODE16_CHANGED[i].last };
        for (int k = 0; k < 2; k++) {
            size_t n = 0;
            memcpy(s, "ab\xC3\xA9 ", 5); /* "abé " then the character, then "x" */
            n = 5 + utf8_put(ends[k], s + 5);
            s[n++] = 'x';
            if (!unicode16_changed_in(s, n)) fail_msg("U+%04X not found", (unsigned)ends[k]);
        }
        uint32_t after = UNICODE16_CHANGED[i].last + 1;
        size_t n = utf8_put(after, s);
        if (after < 0x110000 && (after < 0xD800 || after > 0xDFFF) && unchanged(after) && unicode16_changed_in(s, n))
            fail_msg("U+%04X reported changed", (unsigned)after);
    }
    const char *old = "Hello, \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80 \xCE\xA9";
    assert_false(unicode16_changed_in((const unsigned char *)old, strlen(old)));
    assert_true(unicode16_changed_in((const unsigned char *)" \xF0\x9F\xAB\xA8", 5)); /* U+1FAE8 */
}

static void expect_refused(const char *pattern, const char *want)
{
    ds_error_clear();
    Regex16 re;
    if (tokenizer_compile_regex("F", "K", pattern, strlen(pattern), PCRE2_UTF | PCRE2_UCP, &re) == 0) {
        regex16_free(&re);
        fail_msg("/%s/ compiled, expected: %s", pattern, want);
    }
    char line[256];
    snprintf(line, sizeof line, "F: K: %s", want);
    assert_string_equal(ds_last_error(), line);
}

/* What the widening cannot make exact is refused with one line, never run
 * with PCRE2's Unicode 14 meaning. */
static void refused_escapes(void **state)
{
    (void)state;
    expect_refused("\\p{Han}+", "\\p{Han} is unsupported (only general categories have Unicode 16 sets here)");
    expect_refused("[\\p{Cn}]", "\\p{Cn} is unsupported (its Unicode 16 set is not Unicode 14's "
                                "plus additions)");
    expect_refused("\\PC", "\\P{C} is unsupported (its Unicode 16 set is not Unicode 14's plus "
                           "additions)");
    expect_refused("a\\p{Mn}", "\\p{Mn} is unsupported (its Unicode 16 set is not Unicode 14's "
                               "plus additions)");
    expect_refused("[^\\P{L}]", "\\P{L} inside [...] is unsupported");
    expect_refused("\\w+", "\\w is unsupported (PCRE2 would give it Unicode 14 properties)");
    expect_refused("x\\b", "\\b is unsupported (PCRE2 would give it Unicode 14 properties)");
    expect_refused("[[:alpha:]]", "POSIX classes ([:name:]) are unsupported (PCRE2 would give "
                                  "them Unicode 14 properties)");
    expect_refused("a(?i)b", "(?i) is unsupported (PCRE2's case folding is Unicode 14's)");
    expect_refused("(?mi:b)", "(?i) is unsupported (PCRE2's case folding is Unicode 14's)");
    expect_refused("[z-a]", "PCRE2 rejects /[z-a]/ at offset 3: range out of order in character "
                            "class");

    /* accepted: escaped, quoted or unchanged forms */
    const char *ok[] = { "\\\\w",   "\\Q\\w[:alpha:]\\E", "\\p{Zs}+", "[\\]\\p{L}]", "[]\\p{N}]",
                         "\\p{^L}", "\\s+(?!\\S)",        "(?-i:x)",  "(?:i)",       "[(?i)]",
                         "\\(?i" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        Regex16 re;
        if (tokenizer_compile_regex("F", "K", ok[i], strlen(ok[i]), PCRE2_UTF | PCRE2_UCP, &re))
            fail_msg("/%s/: %s", ok[i], ds_last_error());
        regex16_free(&re);
    }
}

/* Through tokenizer.json: the line names the file and the step's key. */
static void refused_in_file(void **state)
{
    (void)state;
    char path[] = "/tmp/dsv2-tok-unicode-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
          "\"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
          "[{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d+\"}, \"behavior\": \"Isolated\"}]}}",
          f);
    fclose(f);
    ds_error_clear();
    Tokenizer *t = tokenizer_load_files(path, NULL);
    unlink(path);
    if (t) {
        tokenizer_free(t);
        fail_msg("\\d loaded");
    }
    char want[256];
    snprintf(want, sizeof want,
             "%s: pre_tokenizer.pretokenizers[0].pattern.Regex: \\d is unsupported (PCRE2 would "
             "give it Unicode 14 properties)",
             path);
    assert_string_equal(ds_last_error(), want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(widened_matches_pcre2_on_old_characters),
        cmocka_unit_test(widened_classes_hold_new_characters),
        cmocka_unit_test(changed_characters_found),
        cmocka_unit_test(refused_escapes),
        cmocka_unit_test(refused_in_file),
    };
    return cmocka_run_group_tests_name("tokenizer_unicode", tests, NULL, NULL);
}
