/**
 * \file fuzz_tokenizer.c
 * \brief libFuzzer target: tokenizer.json (tokenizer_load_files), then a round trip through what loaded.
 */
#include "fuzz_util.h"
#include "tokenizer.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Tokenizer *tok = tokenizer_load_files(fuzz_file("tokenizer.json", data, size), NULL);
    if (!tok) return 0;
    static const char text[] = "Hello, world! 12345 \xe4\xbd\xa0\xe5\xa5\xbd\r\n\t  x";
    int32_t ids[256];
    long n = tokenizer_encode(tok, text, sizeof text - 1, TOKENIZER_ADD_SPECIAL, ids, 256);
    if (n > 0 && n <= 256) {
        char out[1024];
        tokenizer_decode(tok, ids, (size_t)n, 0, out, sizeof out);
    }
    tokenizer_free(tok);
    return 0;
}
