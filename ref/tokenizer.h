/**
 * \file tokenizer.h
 * \brief Text to token ids and back: a reader for Hugging Face `tokenizer.json`
 *        files as the DeepSeek-V2 family ships them (byte-level BPE).
 *
 * A tokenizer.json describes a pipeline, and this reader runs it in the
 * library's order:
 *
 *  1. **Added tokens** (`added_tokens`) are cut out of the raw text first,
 *     leftmost-longest, honouring `lstrip`, `rstrip`, `single_word` and
 *     `normalized`. Tokens marked `special` are recognised only when the
 *     caller passes ::TOKENIZER_PARSE_SPECIAL (the library always recognises
 *     them; keeping it opt-in stops a user's prompt from injecting control
 *     tokens).
 *  2. **Normalizer**: DeepSeek files have none (`null` or an empty
 *     `Sequence`); any other normalizer is refused by name at load time.
 *  3. **Pre-tokenizer**: a `Sequence` of `Split` (regexes read from the file
 *     and compiled at run time with PCRE2 in UTF + UCP mode, their general
 *     categories such as `\p{L}` given the Unicode 16 sets the library
 *     uses; see tokenizer_unicode.c), `Digits` and `ByteLevel` steps. Each step applies to every piece the previous step
 *     produced, never to the whole string again.
 *  4. **Model**: BPE over the byte-level alphabet, merges applied lowest
 *     rank first, leftmost first among equal ranks.
 *  5. **Post-processor**: BOS (and EOS) around the sequence when the caller
 *     passes ::TOKENIZER_ADD_SPECIAL; see tokenizer_load() for how BOS is
 *     decided from the two files.
 *
 * decode() runs the `ByteLevel` decoder; a ::TokenStream does the same one
 * token at a time without ever emitting half of a UTF-8 character.
 *
 * Invalid UTF-8 in the input is first replaced the way Rust's
 * `String::from_utf8_lossy` and Python's `bytes.decode("utf-8", "replace")`
 * do (each maximal ill-formed subpart becomes one U+FFFD), then tokenized:
 * the `tokenizers` library only accepts valid strings, and that is what an
 * application built on it (transformers, a server reading bytes) hands it.
 *
 * A loaded ::Tokenizer is read-only: several threads may encode and decode
 * with one tokenizer at the same time.
 */
#ifndef DSV2_TOKENIZER_H
#define DSV2_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/** A loaded tokenizer (opaque). */
typedef struct Tokenizer Tokenizer;

/** encode() flag: add what the post-processor adds (BOS for DeepSeek). */
#define TOKENIZER_ADD_SPECIAL   1u
/** encode() flag: recognise special added tokens written in the text. */
#define TOKENIZER_PARSE_SPECIAL 2u
/** decode() / ::TokenStream flag: leave special added tokens out of the text. */
#define TOKENIZER_SKIP_SPECIAL  4u

/**
 * Loads `DIR/tokenizer.json` and, when present, `DIR/tokenizer_config.json`.
 *
 * BOS policy (which ids TOKENIZER_ADD_SPECIAL adds). The file's
 * `post_processor` says it for DeepSeek-V2 (a `TemplateProcessing` that puts
 * BOS first). DeepSeek-V3 files instead have a bare `ByteLevel`
 * post-processor and say `"add_bos_token": true` with `"tokenizer_class":
 * "LlamaTokenizerFast"` in tokenizer_config.json; transformers 4.x rebuilds
 * the post-processor from those flags for that class, so its encodings start
 * with BOS. This reader follows transformers 4.x: when tokenizer_config.json
 * names `LlamaTokenizerFast` (or `LlamaTokenizer`) and has a boolean
 * `add_bos_token`, BOS (and EOS per `add_eos_token`) come from those flags;
 * otherwise the post-processor decides. (transformers 5 ignores
 * `add_bos_token` whenever tokenizer.json exists, which drops the BOS that
 * V3 was trained with; for V2 files and for the files made by
 * tools/tokenizer_spec.py all these rules agree.)
 *
 * Returns NULL on failure with one line in ds_last_error() naming the file
 * and JSON key, e.g. `DIR/tokenizer.json: model: missing`. Either file
 * being something other than a regular file (a FIFO, a directory) is
 * refused at once, never waited on.
 */
Tokenizer *tokenizer_load(const char *model_dir);

/**
 * Loads a tokenizer from an explicit `tokenizer.json` path and an optional
 * `tokenizer_config.json` path (NULL: none). Same rules as tokenizer_load().
 */
Tokenizer *tokenizer_load_files(const char *tokenizer_json, const char *tokenizer_config_json);

/** Frees a tokenizer (NULL is fine). */
void tokenizer_free(Tokenizer *tok);

/**
 * Encodes `len` bytes of `text` (need not be NUL-terminated nor valid UTF-8)
 * into token ids.
 *
 * flags: any of ::TOKENIZER_ADD_SPECIAL, ::TOKENIZER_PARSE_SPECIAL.
 * ids: [cap] (int32) receives the first min(count, cap) ids.
 * Returns the total number of ids (like snprintf: call again with a larger
 * buffer when it exceeds cap). A BPE piece never yields more tokens than
 * bytes, and an invalid input byte becomes U+FFFD (3 bytes), so 3 * len plus
 * the post-processor's ids (one BOS for DeepSeek) always suffices;
 * -1 with ds_last_error() set (a regex hit its match limit, out of memory).
 */
long tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, unsigned flags, int32_t *ids, size_t cap);

/**
 * Decodes ids into UTF-8 text, as the library's `decode`: each token's
 * string, then the `ByteLevel` decoder, then invalid UTF-8 (a sequence cut
 * between tokens, say) replaced by U+FFFD.
 *
 * flags: ::TOKENIZER_SKIP_SPECIAL or 0.
 * out: [cap] bytes receives the text, NUL-terminated when cap > 0 (truncated
 * to cap-1 bytes if needed).
 * Returns the full text length in bytes (without the NUL), or -1 when an id
 * is out of range (ds_last_error() names it).
 */
long tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n, unsigned flags, char *out, size_t cap);

/** Number of ids: one more than the largest id of the vocabulary and added tokens. */
int32_t tokenizer_vocab_size(const Tokenizer *tok);

/**
 * The string of token `id` as stored in the file (byte-level alphabet for
 * BPE tokens, e.g. "Ġthe"), with its length in *len; NULL when no token
 * has that id.
 */
const char *tokenizer_token_string(const Tokenizer *tok, int32_t id, size_t *len);

/** The id of a token given by its stored string (vocabulary or added token), or -1. */
int32_t tokenizer_token_id(const Tokenizer *tok, const char *token);

/** BOS id (tokenizer_config.json's `bos_token`, else `<｜begin▁of▁sentence｜>`), or -1 when absent. */
int32_t tokenizer_bos_id(const Tokenizer *tok);

/** EOS id (tokenizer_config.json's `eos_token`, else `<｜end▁of▁sentence｜>`), or -1 when absent. */
int32_t tokenizer_eos_id(const Tokenizer *tok);

/** BOS as text (what a chat template writes for `bos_token`), or NULL when absent. */
const char *tokenizer_bos_text(const Tokenizer *tok);

/** EOS as text (what a chat template writes for `eos_token`), or NULL when absent. */
const char *tokenizer_eos_text(const Tokenizer *tok);

/** tokenizer_config.json's `chat_template` string, or NULL when there is none. */
const char *tokenizer_chat_template(const Tokenizer *tok);

/** Whether TOKENIZER_ADD_SPECIAL puts BOS first (see tokenizer_load()). */
int tokenizer_adds_bos(const Tokenizer *tok);

/**
 * Streaming decoder: feed ids one at a time, get text that is always whole
 * UTF-8 characters. Bytes of a character split across tokens are held until
 * the character is complete; bytes that can never become valid are replaced
 * by U+FFFD exactly where tokenizer_decode() would put it, so the
 * concatenated output of push() calls and flush() equals tokenizer_decode()
 * of all the ids.
 */
typedef struct {
    const Tokenizer *tok;  /**< the tokenizer the ids come from */
    unsigned flags;        /**< ::TOKENIZER_SKIP_SPECIAL or 0 */
    unsigned char held[4]; /**< start of an incomplete UTF-8 character */
    size_t n_held;         /**< bytes in held */
    char *out;             /**< output buffer, owned */
    size_t cap;            /**< capacity of out */
    int started;           /**< whether a token was emitted (for decoders that join with spaces) */
} TokenStream;

/** Prepares a stream (allocates its output buffer). Returns 0, or -1 on allocation failure. */
int token_stream_init(TokenStream *s, const Tokenizer *tok, unsigned flags);

/**
 * Feeds one id. Returns the text that became complete, in the stream's own
 * buffer (valid until the next call), its byte length in *len (may be 0);
 * NULL with ds_last_error() set when the id is out of range.
 */
const char *token_stream_push(TokenStream *s, int32_t id, size_t *len);

/** Ends the stream: held bytes (an unfinished character) become U+FFFD. Same return as push. */
const char *token_stream_flush(TokenStream *s, size_t *len);

/** Frees the stream's buffer. */
void token_stream_free(TokenStream *s);

#endif
