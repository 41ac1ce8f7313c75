/**
 * \file dsv2_generate.c
 * \brief The commands that run the model: `dsv2 generate`, `dsv2 chat` and `dsv2 logits`, on either
 * backend, with the sampler's settings, --stop strings, the end of the context and chat's Ctrl-C.
 */
#include "chat.h"
#include "dsv2.h"
#include "error.h"
#include "fast.h"
#include "fast_shard.h"
#include "model.h"
#include "sample.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { REPEAT_WINDOW = 64 }; /* --repeat-penalty looks at the last 64 tokens, as llama.cpp */

/* ---- the two backends behind one interface ---------------------------------------------------------- */

/** The model behind the commands: the reference (ref/, the default) or the fast path
 *  (kernels/ + fast/: on a GPU in the build from `make dsv2-gpu`, else on the simulated device). */
typedef struct {
    bool is_fast;
    bool is_shard; /* --layout sharded: the fast path over --devices devices */
    Model ref;
    FastModel fast;
    FastShardModel shard;
    const ModelConfig *cfg;
    int max_context;
    int *pos; /* tokens in the latent cache; lowering it forgets the later ones */
} Engine;

static void engine_close(Engine *e);

/* Opens the model of a; returns the exit status (0, 1, or 2 for a --ctx beyond the model). */
static int engine_open(Engine *e, const Args *a)
{
    memset(e, 0, sizeof *e);
    e->is_fast = !strcmp(a->backend, "fast");
    e->is_shard = e->is_fast && a->layout && !strcmp(a->layout, "sharded");
    const bool tty = isatty(STDERR_FILENO);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
#ifdef DSV2_SIM_DEVICE
    if (e->is_fast)
        fprintf(stderr, "dsv2: --backend fast runs on the simulated device in this build (make dsv2-gpu builds "
                        "it for a GPU), about 100x slower than --backend ref\n");
#endif
    if (tty) fprintf(stderr, "dsv2: loading %s ...", a->model_dir);
    int rc;
    if (e->is_fast) {
        /* f32 widens the weights on upload, so greedy text equals --backend ref's */
        FastOptions fo = { .bf16 = !strcmp(a->dtype, "bf16"), .max_context = (int)a->ctx };
        rc = e->is_shard ? fast_shard_open(&e->shard, a->model_dir, a->devices ? (int)a->devices : 1, &fo)
                         : fast_model_open(&e->fast, a->model_dir, &fo);
        if (rc == 0 && e->is_shard) {
            if (!fo.bf16) fast_shard_set_wire(&e->shard, FAST_WIRE_F32); /* f32: float32 collectives too */
            e->cfg = e->shard.cfg;
            e->max_context = e->shard.max_context;
            e->pos = &e->shard.pos[0];
        } else if (rc == 0) {
            e->cfg = e->fast.cfg;
            e->max_context = e->fast.max_context;
            e->pos = &e->fast.pos[0];
        }
    } else {
        const ModelOptions mo = { .max_context = (int)a->ctx };
        rc = model_open(&e->ref, a->model_dir, &mo);
        if (rc == 0) {
            e->cfg = e->ref.cfg;
            e->max_context = e->ref.max_context;
            e->pos = &e->ref.pos;
        }
    }
    if (tty) fprintf(stderr, rc ? "\n" : " %.1f s\n", seconds_since(&t0));
    if (rc) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        return 1;
    }
    if (a->ctx > e->max_context) {
        usage_error(a, "--ctx %ld: more than the model's max_position_embeddings (%d)", a->ctx,
                    e->cfg->max_position_embeddings);
        engine_close(e);
        return 2;
    }
    return 0;
}

static int engine_forward(Engine *e, const int *ids, int n, float *logits, bool all_positions)
{
    static const int slot0[1] = { 0 };
    if (e->is_shard) /* a decode step queues everything; the logits copy is its one wait */
        return n == 1 ? fast_shard_decode(&e->shard, slot0, ids, 1, logits)
                      : fast_shard_prefill(&e->shard, 0, ids, n, logits, all_positions);
    if (e->is_fast && n == 1) /* a decode step: replayed from a CUDA graph (fast.h) */
        return fast_model_decode(&e->fast, slot0, ids, 1, logits);
    return e->is_fast ? fast_model_forward(&e->fast, ids, n, logits, all_positions)
                      : model_forward(&e->ref, ids, n, logits, all_positions);
}

static void engine_close(Engine *e)
{
    if (e->is_shard)
        fast_shard_close(&e->shard);
    else if (e->is_fast)
        fast_model_close(&e->fast);
    else
        model_close(&e->ref);
}

/* ---- printing what the model makes ------------------------------------------------------------------- */

/** Where generated tokens go: stdout as text through the streaming decoder (which holds back partial
 *  UTF-8 characters), or as ids when ts is NULL. Text that may be the start of a --stop string is held
 *  back until it is clear; a stop string ends the output before it. */
typedef struct {
    TokenStream *ts;
    const char *const *stop;
    int n_stop;
    char *held; /* text not printed yet */
    size_t n_held, cap;
    char *shown; /* everything printed (for chat's history) when keep_shown */
    size_t n_shown, cap_shown;
    bool keep_shown, stopped, first;
} Output;

static int grow_append(char **buf, size_t *n, size_t *cap, const char *s, size_t len)
{
    if (*n + len + 1 > *cap) {
        size_t want = (*n + len + 1) * 2;
        char *grown = realloc(*buf, want);
        if (!grown) {
            fprintf(stderr, "dsv2: out of memory\n");
            return -1;
        }
        *buf = grown;
        *cap = want;
    }
    memcpy(*buf + *n, s, len);
    *n += len;
    (*buf)[*n] = '\0';
    return 0;
}

static int show(Output *o, const char *s, size_t len)
{
    if (!len) return 0;
    fwrite(s, 1, len, stdout);
    return o->keep_shown ? grow_append(&o->shown, &o->n_shown, &o->cap_shown, s, len) : 0;
}

/* Prints what of the held text can no longer become a stop string. final: print all of it. */
static int release(Output *o, bool final)
{
    if (!o->n_held) return 0;
    size_t cut = o->n_held, keep = 0;
    for (int i = 0; i < o->n_stop; i++) {
        const char *at = memmem(o->held, o->n_held, o->stop[i], strlen(o->stop[i]));
        if (at && (size_t)(at - o->held) < cut) cut = (size_t)(at - o->held);
    }
    if (cut < o->n_held) { /* a stop string: the output ends before it */
        o->stopped = true;
        o->n_held = 0;
        return show(o, o->held, cut);
    }
    for (int i = 0; i < o->n_stop && !final; i++) { /* the longest tail that starts a stop string */
        const size_t len = strlen(o->stop[i]);
        for (size_t k = len - 1 < o->n_held ? len - 1 : o->n_held; k > keep; k--)
            if (!memcmp(o->held + o->n_held - k, o->stop[i], k)) {
                keep = k;
                break;
            }
    }
    const int rc = show(o, o->held, o->n_held - keep);
    memmove(o->held, o->held + o->n_held - keep, keep);
    o->n_held = keep;
    return rc;
}

/* One generated token to the output. Returns 0 or −1 after one line. */
static int output_token(Output *o, int id)
{
    if (!o->ts) {
        printf(o->first ? "%d" : ",%d", id);
        o->first = false;
        return 0;
    }
    size_t len;
    const char *text = token_stream_push(o->ts, id, &len);
    if (!text || !len) return 0;
    return grow_append(&o->held, &o->n_held, &o->cap, text, len) ? -1 : release(o, false);
}

/* The end of the output: what the decoder and the stop check held back. */
static int output_finish(Output *o)
{
    size_t len;
    const char *rest = o->ts ? token_stream_flush(o->ts, &len) : NULL;
    if (rest && len && !o->stopped && grow_append(&o->held, &o->n_held, &o->cap, rest, len)) return -1;
    return o->stopped ? 0 : release(o, true);
}

static void output_free(Output *o)
{
    free(o->held);
    free(o->shown);
}

/* ---- generation ---------------------------------------------------------------------------------------- */

/** Why a generation ended. */
typedef enum { END_LENGTH, END_CONTEXT, END_EOS, END_STOP, END_INTERRUPT } GenEnd;

/** One generation: the model, the sampler and its settings, where the tokens go, and what happened. */
typedef struct {
    Engine *m;
    Sampler *s;
    Output *o;
    float *logits; /* [vocab] */
    float repeat_penalty;
    int recent[REPEAT_WINDOW], n_recent;    /* the last tokens, for the repetition penalty */
    const volatile sig_atomic_t *interrupt; /* non-zero: stop (chat's Ctrl-C); NULL: never */
    int *made_ids;                          /* NULL, or room for the generated ids */
    long made;                              /* tokens generated */
    double prompt_s, gen_s;                 /* seconds in the prompt, in the generation */
    GenEnd end;
} Gen;

static void remember(Gen *g, int id)
{
    if (g->n_recent == REPEAT_WINDOW)
        memmove(g->recent, g->recent + 1, sizeof(int) * (REPEAT_WINDOW - 1));
    else
        g->n_recent++;
    g->recent[g->n_recent - 1] = id;
}

/* Feeds ids[from..n) (the cache holds ids[0..from)), then samples up to max_new tokens, printing each
 * as it comes; stops at EOS, a --stop string, the end of the context or an interrupt. Returns 0, or −1
 * after one line. */
static int gen_run(Gen *g, const int *ids, int n, int from, long max_new)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    g->made = 0;
    g->gen_s = 0;
    g->end = END_LENGTH;
    for (int i = n > REPEAT_WINDOW ? n - REPEAT_WINDOW : 0; i < n; i++) remember(g, ids[i]);
    /* each sampled token but the last is fed back: room for max_context − n + 1 of them */
    const long room = (long)g->m->max_context - n + 1;
    if (max_new > room) max_new = room;
    if (engine_forward(g->m, ids + from, n - from, g->logits, false)) goto failed;
    g->prompt_s = seconds_since(&t0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (g->made < max_new) {
        if (g->interrupt && *g->interrupt) {
            g->end = END_INTERRUPT;
            break;
        }
        if (g->repeat_penalty != 1)
            sample_repeat_penalty(g->logits, g->m->cfg->vocab_size, g->recent, g->n_recent, g->repeat_penalty);
        const int next = sample_next(g->s, g->logits);
        if (next == g->m->cfg->eos_token_id) {
            g->end = END_EOS;
            break;
        }
        if (g->made_ids) g->made_ids[g->made] = next;
        g->made++;
        remember(g, next);
        if (output_token(g->o, next) || flush_stdout()) return -1;
        if (g->o->stopped) {
            g->end = END_STOP;
            break;
        }
        if (g->made < max_new && engine_forward(g->m, &next, 1, g->logits, false)) goto failed;
    }
    if (g->end == END_LENGTH && max_new == room) g->end = END_CONTEXT;
    g->gen_s = seconds_since(&t0);
    return 0;
failed:
    fprintf(stderr, "dsv2: %s\n", ds_last_error());
    return -1;
}

/* The sampler of a: temperature, top-p, top-k; a random seed when none was given and it samples. */
static int sampler_open(Sampler *s, Args *a, int vocab)
{
    if (!(a->given & O_SEED) && a->temperature > 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        /* the clock's nanoseconds spread by Knuth's multiplicative hash, the seconds and the pid */
        a->seed = ((unsigned long long)now.tv_nsec * 2654435761u ^ (unsigned long long)now.tv_sec ^
                   (unsigned long long)getpid() << 20) %
                  LONG_MAX;
        fprintf(stderr, "dsv2: --seed %llu (pass it to repeat this run)\n", a->seed);
    }
    if (sampler_init(s, vocab, (float)a->temperature, (float)a->top_p, a->seed)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        return -1;
    }
    s->top_k = (int)a->top_k;
    return 0;
}

int cmd_generate(Args *a)
{
    Tokenizer *tok = NULL;
    int *ids, n, rc = read_prompt_ids(a, &tok, &ids, &n);
    if (rc) return rc;
    Engine m = { 0 };
    Sampler s = { 0 };
    TokenStream ts;
    Output o = { .stop = a->stop, .n_stop = a->n_stop, .first = true };
    float *logits = NULL;
    if ((rc = engine_open(&m, a))) {
        free(ids);
        tokenizer_free(tok);
        return rc;
    }
    rc = 1;
    if (check_vocab(ids, n, m.cfg->vocab_size)) goto out;
    if (n > m.max_context) {
        fprintf(stderr, "dsv2: the prompt of %d tokens does not fit the context of %d tokens (--ctx)\n", n,
                m.max_context);
        goto out;
    }
    if (tok && token_stream_init(&ts, tok, TOKENIZER_SKIP_SPECIAL)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        goto out;
    }
    o.ts = tok ? &ts : NULL;
    if (!(logits = malloc(sizeof(float) * m.cfg->vocab_size))) fprintf(stderr, "dsv2: out of memory\n");
    if (!logits || sampler_open(&s, a, m.cfg->vocab_size)) goto out;
    if (tok)
        fputs(a->prompt, stdout);
    else
        for (int i = 0; i < n; i++) output_token(&o, ids[i]);
    Gen g = { .m = &m, .s = &s, .o = &o, .logits = logits, .repeat_penalty = (float)a->repeat_penalty };
    if (flush_stdout() || gen_run(&g, ids, n, 0, a->n_tokens) || output_finish(&o)) goto out;
    printf("\n");
    if (flush_stdout()) goto out;
    if (g.end == END_CONTEXT)
        fprintf(stderr, "dsv2: stopped after %ld tokens: the context of %d tokens is full (--ctx)\n", g.made,
                m.max_context);
    fprintf(stderr, "dsv2: prompt %d tokens in %.2f s (%.1f tok/s), generated %ld tokens in %.2f s (%.1f tok/s)\n", n,
            g.prompt_s, g.prompt_s > 0 ? n / g.prompt_s : 0, g.made, g.gen_s, g.gen_s > 0 ? g.made / g.gen_s : 0);
    rc = 0;
out:
    if (o.ts) token_stream_free(&ts);
    output_free(&o);
    sampler_free(&s);
    free(logits);
    free(ids);
    tokenizer_free(tok);
    engine_close(&m);
    return rc;
}

/* ---- chat ---------------------------------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted; /* Ctrl-C during a reply: stop it */
static volatile sig_atomic_t at_prompt;   /* waiting for a line: Ctrl-C quits, at once */

static void on_sigint(int sig)
{
    (void)sig;
    if (at_prompt) { /* async-signal-safe calls only */
        const ssize_t w = write(STDERR_FILENO, "\n", 1);
        (void)w;
        _exit(0);
    }
    interrupted = 1;
}

/* Appends a message to the history; the content is copied. */
static int add_message(ChatMessage **msgs, size_t *n, const char *role, const char *content)
{
    ChatMessage *grown = realloc(*msgs, sizeof **msgs * (*n + 1));
    char *copy = strdup(content);
    if (grown) *msgs = grown;
    if (!grown || !copy) {
        free(copy);
        fprintf(stderr, "dsv2: out of memory\n");
        return -1;
    }
    (*msgs)[(*n)++] = (ChatMessage){ role, copy };
    return 0;
}

/* Forgets messages [keep, n). */
static void drop_messages(ChatMessage *msgs, size_t *n, size_t keep)
{
    while (*n > keep) free((char *)msgs[--*n].content);
}

/* Renders the whole conversation with the chat template, then encodes it (BOS is in the text). */
static int render_and_encode(const Tokenizer *tok, const ChatMessage *msgs, size_t n, int **ids)
{
    const char *bos = tokenizer_bos_text(tok), *eos = tokenizer_eos_text(tok);
    size_t need = chat_render(msgs, n, 1, bos, eos, NULL, 0);
    char *text = malloc(need + 1);
    if (!text) {
        fprintf(stderr, "dsv2: out of memory\n");
        return -1;
    }
    chat_render(msgs, n, 1, bos, eos, text, need + 1);
    int count = encode_text(tok, text, TOKENIZER_PARSE_SPECIAL, ids);
    free(text);
    return count;
}

/* One user turn: the conversation (with the new user message last) rendered, the tokens past the
 * longest prefix the cache already holds fed, the reply printed and added to the history. Returns 0,
 * or −1 after one line. */
static int chat_turn(Gen *g, const Args *a, const Tokenizer *tok, ChatMessage **msgs, size_t *n_msgs, int *cached)
{
    Engine *m = g->m;
    int *ids, n = render_and_encode(tok, *msgs, *n_msgs, &ids);
    if (n < 0) return -1;
    if (n >= m->max_context) { /* no room for a reply: the turn is dropped, the chat goes on */
        fprintf(stderr,
                "dsv2: the conversation is %d tokens and does not fit the context of %d tokens "
                "(--ctx); /reset starts a new one\n",
                n, m->max_context);
        drop_messages(*msgs, n_msgs, *n_msgs - 1);
        free(ids);
        return 0;
    }
    int common = 0; /* cache rows [0, common) depend only on tokens [0, common): keep them */
    while (common < *m->pos && common < n - 1 && cached[common] == ids[common]) common++;
    *m->pos = common;
    memcpy(cached, ids, sizeof(int) * n);
    TokenStream ts;
    if (token_stream_init(&ts, tok, TOKENIZER_SKIP_SPECIAL)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        free(ids);
        return -1;
    }
    Output o = { .ts = &ts, .stop = a->stop, .n_stop = a->n_stop, .keep_shown = true };
    g->o = &o;
    int rc = gen_run(g, ids, n, common, a->n_tokens) || output_finish(&o) ? -1 : 0;
    free(ids);
    token_stream_free(&ts);
    if (rc == 0) {
        printf("\n");
        rc = flush_stdout();
    }
    if (rc == 0) {
        memcpy(cached + n, g->made_ids, sizeof(int) * (size_t)(*m->pos - n));
        if (g->end == END_INTERRUPT) fprintf(stderr, "dsv2: reply stopped (Ctrl-C)\n");
        if (g->end == END_CONTEXT)
            fprintf(stderr,
                    "dsv2: reply stopped: the context of %d tokens is full; /reset starts a new "
                    "conversation\n",
                    m->max_context);
        /* the reply joins the history as the text shown, as the template expects */
        rc = add_message(msgs, n_msgs, "assistant", o.shown ? o.shown : "");
    }
    output_free(&o);
    return rc;
}

/* Interactive chat: a line per user turn; the whole conversation is rendered with DeepSeek-V2-Chat's
 * template each turn. A reply stops where the context ends; /reset forgets the conversation. */
int cmd_chat(Args *a)
{
    Tokenizer *tok = load_tokenizer(a->model_dir);
    if (!tok) return 1;
    Engine m;
    int rc = engine_open(&m, a);
    if (rc) {
        tokenizer_free(tok);
        return rc;
    }
    Sampler s = { 0 };
    ChatMessage *msgs = NULL;
    size_t n_msgs = 0, first = a->system ? 1 : 0, line_cap = 0;
    char *line = NULL;
    float *logits = malloc(sizeof(float) * m.cfg->vocab_size);
    int *cached = malloc(sizeof(int) * m.max_context), *reply = malloc(sizeof(int) * m.max_context);
    rc = 1;
    if (!logits || !cached || !reply) fprintf(stderr, "dsv2: out of memory\n");
    if (!logits || !cached || !reply || sampler_open(&s, a, m.cfg->vocab_size)) goto out;
    if (a->system && add_message(&msgs, &n_msgs, "system", a->system)) goto out;
    struct sigaction sa = { .sa_handler = on_sigint, .sa_flags = SA_RESTART };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    Gen g = { .m = &m,
              .s = &s,
              .logits = logits,
              .repeat_penalty = (float)a->repeat_penalty,
              .interrupt = &interrupted,
              .made_ids = reply };
    fprintf(stderr,
            "dsv2 chat: %d-token context; /reset starts over; an empty line, end of input or Ctrl-C "
            "quits\n",
            m.max_context);
    for (;;) {
        at_prompt = 1;
        fprintf(stderr, "> ");
        const ssize_t len = getline(&line, &line_cap, stdin);
        at_prompt = 0;
        interrupted = 0;
        if (len < 0) {
            if (feof(stdin))
                fprintf(stderr, "\n");
            else {
                fprintf(stderr, "dsv2: reading standard input: %s\n", strerror(errno));
                goto out;
            }
            break;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (!*line) break;
        if (!strcmp(line, "/reset")) {
            drop_messages(msgs, &n_msgs, first);
            *m.pos = 0;
            fprintf(stderr, "dsv2: a new conversation\n");
            continue;
        }
        if (add_message(&msgs, &n_msgs, "user", line) || chat_turn(&g, a, tok, &msgs, &n_msgs, cached)) goto out;
    }
    rc = 0;
out:
    drop_messages(msgs, &n_msgs, 0);
    free(msgs);
    free(line);
    free(cached);
    free(reply);
    free(logits);
    sampler_free(&s);
    tokenizer_free(tok);
    engine_close(&m);
    return rc;
}

/* ---- the other commands ---------------------------------------------------------------------------------- */

/* Writes the logits of every prompt position: a regular file (or a new one) through a temporary
 * file renamed into place when complete; anything else (/dev/stdout, a pipe) directly. */
int cmd_logits(Args *a)
{
    int *ids, n, rc = read_prompt_ids(a, NULL, &ids, &n);
    if (rc) return rc;
    Engine m;
    if ((rc = engine_open(&m, a))) {
        free(ids);
        return rc;
    }
    rc = 1;
    const size_t count = (size_t)n * m.cfg->vocab_size;
    float *logits = NULL;
    struct stat sb;
    const bool via_tmp = lstat(a->output, &sb) != 0 ? errno == ENOENT : S_ISREG(sb.st_mode);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s%s", a->output, via_tmp ? ".partial" : "");
    FILE *f = NULL;
    if (check_vocab(ids, n, m.cfg->vocab_size)) goto out;
    if (n > m.max_context) {
        fprintf(stderr, "dsv2: the prompt of %d tokens does not fit the context of %d tokens (--ctx)\n", n,
                m.max_context);
        goto out;
    }
    if (!(logits = malloc(sizeof(float) * count))) {
        fprintf(stderr, "dsv2: out of memory for %zu logits\n", count);
        goto out;
    }
    if (engine_forward(&m, ids, n, logits, true)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        goto out;
    }
    if (!(f = fopen(tmp, "wb"))) {
        fprintf(stderr, "dsv2: %s: %s\n", tmp, strerror(errno));
        goto out;
    }
    /* float32, little-endian: the in-memory layout on every machine this builds for */
    int ok = fwrite(logits, sizeof(float), count, f) == count;
    ok = (fclose(f) == 0) && ok;
    if (!ok || (via_tmp && rename(tmp, a->output) != 0)) {
        fprintf(stderr, "dsv2: %s: %s\n", a->output, strerror(errno));
        if (via_tmp) remove(tmp);
        goto out;
    }
    rc = 0;
out:
    free(logits);
    free(ids);
    engine_close(&m);
    return rc;
}
