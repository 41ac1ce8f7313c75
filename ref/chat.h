/**
 * \file chat.h
 * \brief DeepSeek-V2-Chat's conversation format: the chat template, rendered in C.
 *
 * DeepSeek-V2-Chat (and DeepSeek-Coder-V2-Instruct) ship this Jinja
 * template in tokenizer_config.json (whitespace as in the file):
 *
 *     {% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}
 *     {{ bos_token }}{% for message in messages %}
 *     {% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}
 *     {% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}
 *     {% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}
 *     {% endif %}{% endfor %}
 *     {% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}
 *
 * so system, user, assistant, user renders as
 * `<｜begin▁of▁sentence｜>SYS\n\nUser: Hi\n\nAssistant: Yo<｜end▁of▁sentence｜>User: Q2\n\nAssistant:`.
 * Two details change ids: the generation prompt is `Assistant:` with no
 * trailing space (the model's reply token carries its own leading space),
 * and there is no "\n\n" after an assistant turn, only EOS. Messages with
 * any other role are skipped, as the template's if/elif skips them.
 *
 * The rendered text starts with BOS written out; encode it with
 * ::TOKENIZER_PARSE_SPECIAL and without ::TOKENIZER_ADD_SPECIAL (as
 * transformers' apply_chat_template does), or BOS would appear twice.
 */
#ifndef DSV2_CHAT_H
#define DSV2_CHAT_H

#include <stddef.h>

/** One turn of a conversation. */
typedef struct {
    const char *role;    /**< "system", "user" or "assistant" (others are skipped) */
    const char *content; /**< the text, UTF-8 */
} ChatMessage;

/**
 * Renders messages[0..n) with DeepSeek-V2-Chat's template.
 *
 * bos, eos: the special tokens as text (tokenizer_bos_text(),
 * tokenizer_eos_text()); NULL renders as nothing.
 * add_generation_prompt: non-zero appends `Assistant:` for the model to
 * continue.
 * out: [cap] bytes receives the text, NUL-terminated when cap > 0
 * (truncated to cap-1 bytes if needed).
 * Returns the full length in bytes without the NUL (like snprintf).
 */
size_t chat_render(const ChatMessage *messages, size_t n, int add_generation_prompt, const char *bos, const char *eos,
                   char *out, size_t cap);

/**
 * Whether a tokenizer_config.json `chat_template` is the DeepSeek-V2-Chat
 * template that chat_render() implements (exact text comparison).
 * NULL gives 0.
 */
int chat_template_is_deepseek_v2(const char *chat_template);

#endif
