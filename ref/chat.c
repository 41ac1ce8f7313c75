/**
 * \file chat.c
 * \brief DeepSeek-V2-Chat's chat template (see chat.h).
 */
#include "chat.h"

#include <string.h>

/* The template as DeepSeek-V2-Chat's tokenizer_config.json holds it. */
static const char DEEPSEEK_V2_TEMPLATE[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

/* An output cursor that counts every byte and stores what fits. */
typedef struct {
    char *out;
    size_t cap, n;
} Writer;

static void put(Writer *w, const char *s)
{
    if (!s) return;
    size_t len = strlen(s);
    if (w->n + 1 < w->cap) {
        size_t room = w->cap - 1 - w->n;
        memcpy(w->out + w->n, s, len < room ? len : room);
    }
    w->n += len;
}

// ANCHOR: chat_render
size_t chat_render(const ChatMessage *m, size_t n, int add_generation_prompt, const char *bos, const char *eos,
                   char *out, size_t cap)
{
    Writer w = { out, cap, 0 };
    put(&w, bos);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(m[i].role, "user") == 0) {
            put(&w, "User: ");
            put(&w, m[i].content);
            put(&w, "\n\n");
        } else if (strcmp(m[i].role, "assistant") == 0) {
            put(&w, "Assistant: ");
            put(&w, m[i].content);
            put(&w, eos);
        } else if (strcmp(m[i].role, "system") == 0) {
            put(&w, m[i].content);
            put(&w, "\n\n");
        }
    }
    if (add_generation_prompt) put(&w, "Assistant:");
    if (cap > 0) out[w.n < cap ? w.n : cap - 1] = '\0';
    return w.n;
}
// ANCHOR_END: chat_render

int chat_template_is_deepseek_v2(const char *chat_template)
{
    return chat_template && strcmp(chat_template, DEEPSEEK_V2_TEMPLATE) == 0;
}
