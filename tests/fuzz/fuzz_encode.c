/**
 * \file fuzz_encode.c
 * \brief libFuzzer target: prompt encoding with the DeepSeek-V2-configured test tokenizer.
 *
 * The first byte picks the flags; the rest is the prompt (any bytes, invalid UTF-8 included).
 * Valid UTF-8 must round-trip through encode and decode, and the streaming decoder must
 * emit exactly the decoded text.
 */
#include "fuzz_util.h"
#include "tokenizer.h"

#include <string.h>

static Tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tok = tokenizer_load("tests/golden/tokenizer/tiny");
    if (!tok) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const unsigned flags = data[0] & (TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL);
    const char *text = (const char *)data + 1;
    const size_t len = size - 1, cap = 3 * len + 8;
    int32_t *ids = malloc(sizeof *ids * cap);
    long n = tokenizer_encode(tok, text, len, flags, ids, cap);
    if (n < 0 || (size_t)n > cap) abort();
    long dl = tokenizer_decode(tok, ids, (size_t)n, TOKENIZER_SKIP_SPECIAL, NULL, 0);
    char *out = malloc((size_t)dl + 1), *streamed = malloc((size_t)dl + 1);
    tokenizer_decode(tok, ids, (size_t)n, TOKENIZER_SKIP_SPECIAL, out, (size_t)dl + 1);
    TokenStream ts;
    size_t at = 0, k;
    if (token_stream_init(&ts, tok, TOKENIZER_SKIP_SPECIAL)) abort();
    for (long i = 0; i <= n; i++) {
        const char *piece = i < n ? token_stream_push(&ts, ids[i], &k) : token_stream_flush(&ts, &k);
        if (piece) {
            if (at + k > (size_t)dl) abort();
            memcpy(streamed + at, piece, k);
            at += k;
        }
    }
    token_stream_free(&ts);
    if (at != (size_t)dl || memcmp(streamed, out, at)) abort();
    free(out);
    free(streamed);
    free(ids);
    return 0;
}
