/**
 * \file fuzz_chat.c
 * \brief libFuzzer target: the chat template. NUL bytes split the input into messages whose
 * first byte picks the role; the rendering must fit exactly the length it reports.
 */
#include "chat.h"
#include "fuzz_util.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const roles[] = { "system", "user", "assistant", "tool" };
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    ChatMessage msgs[64];
    size_t n = 0;
    for (char *p = copy; p < copy + size && n < 64; p += strlen(p) + 1)
        if (*p) msgs[n++] = (ChatMessage){ roles[(unsigned char)*p % 4], p + 1 };
    size_t need = chat_render(msgs, n, 1, "<bos>", "<eos>", NULL, 0);
    char *out = malloc(need + 1);
    if (chat_render(msgs, n, 1, "<bos>", "<eos>", out, need + 1) != need || strlen(out) != need) abort();
    free(out);
    free(copy);
    return 0;
}
