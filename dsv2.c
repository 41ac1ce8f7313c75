/**
 * \file dsv2.c
 * \brief The command-line program: generate text, dump logits, describe a checkpoint.
 *
 *     dsv2 generate   -m DIR (--ids 1,2,3 | -p TEXT) [-n N] [-t T] [--top-p P] [--seed S]
 *     dsv2 chat       -m DIR [-n N] [-t T] [--top-p P] [--seed S]   interactive, with history
 *     dsv2 logits     -m DIR --ids 1,2,3 -o FILE   float32 little-endian [T, vocab]
 *     dsv2 tokenize   -m DIR -p TEXT              ids on one line, space-separated
 *     dsv2 detokenize -m DIR --ids 1,2,3          the text
 *     dsv2 info       -m DIR                      sizes, parameters, KV cache per token
 *     dsv2 route-stats -m DIR -p TEXT [--devices D] [--limit M] [--alpha A1,A2,A3] [--plot FILE.png]
 *                                                 expert and device load, dispatch bytes, balance losses
 *
 * Like llama2.c's run.c this file only wires the pieces together: the
 * model lives in ref/, and every failure is one line on stderr naming what
 * was wrong, with exit status 1 (2 for a malformed command line).
 */
#include "balance.h"
#include "chat.h"
#include "error.h"
#include "fast.h"
#include "fast_ep.h"
#include "mla.h"
#include "model.h"
#include "route_log.h"
#include "router.h"
#include "sample.h"
#include "tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- command-line parsing ----------------------------------------------------------------- */

/** Everything any subcommand accepts; each subcommand checks which it needs. */
typedef struct {
    const char *model_dir;  /* -m */
    const char *ids;        /* --ids 1,2,3 */
    const char *prompt;     /* -p */
    const char *output;     /* -o */
    long n_tokens;          /* -n */
    double temperature;     /* -t */
    double top_p;           /* --top-p */
    unsigned long long seed; /* --seed */
    const char *backend;    /* --backend ref | fast */
    const char *dtype;      /* --dtype f32 | bf16 (fast backend) */
    long devices;           /* --devices D (route-stats; 0: the default) */
    long limit;             /* --limit M (route-stats; 0: what the model's routing implies) */
    const char *plot;       /* --plot FILE.png (route-stats) */
    double alpha[3];        /* --alpha A1,A2,A3 (route-stats): the balance-loss weights α₁, α₂, α₃ */
} Args;

static int usage_error(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "dsv2: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n(run 'dsv2 help' for usage)\n");
    return 2;
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        char range[64];
        snprintf(range, sizeof range, "an integer in [%ld, %ld]", lo, hi);
        fprintf(stderr, "dsv2: %s: '%s' is not %s\n", flag, s, range);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "dsv2: %s: '%s' is not a number in [%g, %g]\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* "A1,A2,A3" → alpha[3], each a finite number ≥ 0. Returns 0 or −1 (one error line). */
static int parse_alphas(const char *s, double alpha[3])
{
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        char *end;
        errno = 0;
        const double v = strtod(p, &end);
        if (errno || end == p || !(v >= 0 && v <= 1e6) || *end != (i < 2 ? ',' : '\0')) {
            fprintf(stderr, "dsv2: --alpha: '%s' is not three numbers in [0, 1e6] separated by commas "
                    "(alpha1,alpha2,alpha3)\n", s);
            return -1;
        }
        alpha[i] = v;
        p = end + 1;
    }
    return 0;
}

/* "1,2,3" → ids; every id a non-negative integer. Returns the count or −1. */
static int parse_ids(const char *s, int **out)
{
    int cap = 16, n = 0;
    int *ids = malloc(sizeof(int) * cap);
    const char *p = s;
    while (ids) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT_MAX || (*end && *end != ',')) {
            fprintf(stderr, "dsv2: --ids: '%s' is not a comma-separated list of token ids "
                    "(problem at character %ld)\n", s, (long)(p - s) + 1);
            free(ids);
            return -1;
        }
        if (n == cap && !(ids = realloc(ids, sizeof(int) * (cap *= 2)))) break;
        ids[n++] = (int)v;
        if (!*end) { *out = ids; return n; }
        p = end + 1;
    }
    fprintf(stderr, "dsv2: out of memory\n");
    return -1;
}

static int parse_args(int argc, char **argv, Args *a)
{
    /* --alpha's default: the paper's balance-loss weights (§2.2.3, §3.1.2) */
    *a = (Args){.n_tokens = 100, .temperature = 0, .top_p = 1, .seed = 0, .backend = "ref", .dtype = "f32",
                .alpha = {0.003, 0.05, 0.02}};
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        static const char *const with_value[] = {"-m", "--ids", "-p", "-o", "-n", "-t", "--top-p", "--seed",
                                                 "--backend", "--dtype", "--devices", "--limit", "--plot",
                                                 "--alpha"};
        int known = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= !strcmp(f, with_value[k]);
        if (!known) return usage_error("unknown option '%s' for '%s'", f, argv[1]);
        if (i + 1 >= argc) return usage_error("option '%s' needs a value%s", f, "");
        const char *v = argv[++i];
        long n;
        if (!strcmp(f, "-m")) a->model_dir = v;
        else if (!strcmp(f, "--ids")) a->ids = v;
        else if (!strcmp(f, "-p")) a->prompt = v;
        else if (!strcmp(f, "-o")) a->output = v;
        else if (!strcmp(f, "--backend")) a->backend = v;
        else if (!strcmp(f, "--dtype")) a->dtype = v;
        else if (!strcmp(f, "--plot")) a->plot = v;
        else if (!strcmp(f, "--devices")) { if (parse_long(f, v, 1, ROUTER_MAX_EXPERTS, &a->devices)) return 2; }
        else if (!strcmp(f, "--limit")) { if (parse_long(f, v, 1, ROUTER_MAX_EXPERTS, &a->limit)) return 2; }
        else if (!strcmp(f, "--alpha")) { if (parse_alphas(v, a->alpha)) return 2; }
        else if (!strcmp(f, "-n")) { if (parse_long(f, v, 0, INT_MAX, &a->n_tokens)) return 2; }
        else if (!strcmp(f, "-t")) { if (parse_double(f, v, 0, 100, &a->temperature)) return 2; }
        else if (!strcmp(f, "--top-p")) { if (parse_double(f, v, 0, 1, &a->top_p)) return 2; }
        else if (!strcmp(f, "--seed")) {
            if (parse_long(f, v, 0, LONG_MAX, &n)) return 2;
            a->seed = (unsigned long long)n;
        }
    }
    if (!a->model_dir) return usage_error("'%s' needs -m DIR (a model directory)%s", argv[1], "");
    int *ids = NULL;                                  /* a malformed --ids is a usage error too */
    if (a->ids && parse_ids(a->ids, &ids) < 0) return 2;
    free(ids);
    if (strcmp(a->backend, "ref") && strcmp(a->backend, "fast"))
        return usage_error("--backend %s: expected 'ref' or 'fast'%s", a->backend, "");
    if (strcmp(a->dtype, "f32") && strcmp(a->dtype, "bf16"))
        return usage_error("--dtype %s: expected 'f32' or 'bf16'%s", a->dtype, "");
    return 0;
}

static Tokenizer *load_tokenizer(const char *dir)
{
    Tokenizer *tok = tokenizer_load(dir);
    if (!tok) fprintf(stderr, "dsv2: %s\n", ds_last_error());
    return tok;
}

/* Encodes text; the id count, or −1 after printing the error. */
static int encode_text(const Tokenizer *tok, const char *text, unsigned flags, int **ids)
{
    size_t len = strlen(text), cap = 3 * len + 8;     /* a byte-level BPE never exceeds this */
    int32_t *buf = malloc(sizeof(int32_t) * cap);
    long n = buf ? tokenizer_encode(tok, text, len, flags, buf, cap) : -1;
    if (n < 0) {
        fprintf(stderr, "dsv2: %s\n", buf ? ds_last_error() : "out of memory");
        free(buf);
        return -1;
    }
    *ids = (int *)buf;                                /* int32_t and int are the same here */
    return (int)n;
}

/* The prompt's ids: --ids as given, or -p TEXT through the model's tokenizer (BOS as the
 * tokenizer files say, special tokens recognised — what transformers' tokenizer(text) does). */
static int prompt_ids(const Args *a, const Tokenizer *tok, int **ids)
{
    if (a->ids && a->prompt) { fprintf(stderr, "dsv2: give --ids or -p, not both\n"); return -1; }
    if (!a->ids && !a->prompt) { fprintf(stderr, "dsv2: no prompt: give -p TEXT or --ids 1,2,3\n"); return -1; }
    if (a->prompt && !*a->prompt) { fprintf(stderr, "dsv2: -p: the prompt is empty\n"); return -1; }
    int n = a->ids ? parse_ids(a->ids, ids)
                   : encode_text(tok, a->prompt, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, ids);
    if (n == 0) { free(*ids); fprintf(stderr, "dsv2: the prompt is empty\n"); return -1; }
    return n;
}

/* ---- the two backends behind one interface -------------------------------------------------- */

/** The model behind the commands: the reference (ref/, the default) or the fast path
 *  (kernels/ + fast/: on a GPU in the build from `make dsv2-gpu`, else on the simulated device). */
typedef struct {
    bool is_fast;
    Model ref;
    FastModel fast;
    const ModelConfig *cfg;
    int max_context;
    int *pos;               /* tokens in the latent cache; lowering it forgets the later ones */
} Engine;

static int engine_open(Engine *e, const Args *a)
{
    memset(e, 0, sizeof *e);
    e->is_fast = !strcmp(a->backend, "fast");
    int rc;
    if (e->is_fast) {
        /* f32 widens the weights on upload, so greedy text equals --backend ref's */
        FastOptions fo = {.bf16 = !strcmp(a->dtype, "bf16")};
        rc = fast_model_open(&e->fast, a->model_dir, &fo);
        if (rc == 0) { e->cfg = e->fast.cfg; e->max_context = e->fast.max_context; e->pos = &e->fast.pos[0]; }
    } else {
        rc = model_open(&e->ref, a->model_dir, NULL);
        if (rc == 0) { e->cfg = e->ref.cfg; e->max_context = e->ref.max_context; e->pos = &e->ref.pos; }
    }
    if (rc) fprintf(stderr, "dsv2: %s\n", ds_last_error());
    return rc;
}

static int engine_forward(Engine *e, const int *ids, int n, float *logits, bool all_positions)
{
    static const int slot0[1] = {0};
    if (e->is_fast && n == 1)                 /* a decode step: replayed from a CUDA graph (fast.h) */
        return fast_model_decode(&e->fast, slot0, ids, 1, logits);
    return e->is_fast ? fast_model_forward(&e->fast, ids, n, logits, all_positions)
                      : model_forward(&e->ref, ids, n, logits, all_positions);
}

static void engine_close(Engine *e)
{
    if (e->is_fast) fast_model_close(&e->fast);
    else model_close(&e->ref);
}

/* ---- subcommands -------------------------------------------------------------------------- */

/* Prints one generated token: its text through the streaming decoder (which holds back
 * partial UTF-8 characters), or its id when there is no tokenizer. */
static void emit(TokenStream *ts, int id, int first)
{
    if (!ts) { printf(first ? "%d" : ",%d", id); return; }
    size_t len;
    const char *text = token_stream_push(ts, id, &len);
    if (text) fwrite(text, 1, len, stdout);
}

/* Feeds the prompt, then samples up to max_new tokens (stopping at EOS), printing each as it
 * comes. The generated ids (EOS excluded) go to out[] when out is not NULL. */
static int generate(Engine *m, Sampler *s, TokenStream *ts, const int *ids, int n, long max_new,
                    float *logits, int *out, long *made)
{
    if (engine_forward(m, ids, n, logits, false)) return -1;
    for (*made = 0; *made < max_new;) {
        int next = sample_next(s, logits);
        if (next == m->cfg->eos_token_id) break;
        if (out) out[*made] = next;
        (*made)++;
        emit(ts, next, 0);
        fflush(stdout);
        if (*made < max_new && engine_forward(m, &next, 1, logits, false)) return -1;
    }
    return 0;
}

static int cmd_generate(const Args *a)
{
    Tokenizer *tok = NULL;
    if (a->prompt && !(tok = load_tokenizer(a->model_dir))) return 1;
    int *ids = NULL, n = prompt_ids(a, tok, &ids), rc = 1;
    if (n < 0) { tokenizer_free(tok); return 1; }
    Engine m;
    Sampler s = {0};
    TokenStream ts;
    float *logits = NULL;
    int have_stream = tok && token_stream_init(&ts, tok, TOKENIZER_SKIP_SPECIAL) == 0;
    if (engine_open(&m, a)) {
        if (have_stream) token_stream_free(&ts);
        free(ids);
        tokenizer_free(tok);
        return 1;
    }
    const int V = m.cfg->vocab_size;
    if (!(logits = malloc(sizeof(float) * V)) ||
        sampler_init(&s, V, (float)a->temperature, (float)a->top_p, a->seed)) {
        fprintf(stderr, "dsv2: out of memory\n");
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (tok) fputs(a->prompt, stdout);
    else for (int i = 0; i < n; i++) emit(NULL, ids[i], i == 0);
    long made = 0;
    if (generate(&m, &s, have_stream ? &ts : NULL, ids, n, a->n_tokens, logits, NULL, &made)) {
        fprintf(stderr, "\ndsv2: %s\n", ds_last_error());
        goto out;
    }
    if (have_stream) {
        size_t len;
        const char *rest = token_stream_flush(&ts, &len);
        if (rest) fwrite(rest, 1, len, stdout);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "dsv2: %d prompt + %ld generated tokens in %.2f s (%.1f tok/s)\n", n, made, secs,
            (double)(n + made) / secs);
    rc = 0;
out:
    if (have_stream) token_stream_free(&ts);
    sampler_free(&s);
    free(logits);
    free(ids);
    tokenizer_free(tok);
    engine_close(&m);
    return rc;
}

/* Appends a message to the history; the content is copied. */
static int add_message(ChatMessage **msgs, size_t *n, const char *role, const char *content)
{
    ChatMessage *grown = realloc(*msgs, sizeof **msgs * (*n + 1));
    char *copy = strdup(content);
    if (grown) *msgs = grown;
    if (!grown || !copy) { free(copy); fprintf(stderr, "dsv2: out of memory\n"); return -1; }
    (*msgs)[(*n)++] = (ChatMessage){role, copy};
    return 0;
}

/* Renders the whole conversation with the chat template, then encodes it (BOS is in the text). */
static int render_and_encode(const Tokenizer *tok, const ChatMessage *msgs, size_t n, int **ids)
{
    const char *bos = tokenizer_bos_text(tok), *eos = tokenizer_eos_text(tok);
    size_t need = chat_render(msgs, n, 1, bos, eos, NULL, 0);
    char *text = malloc(need + 1);
    if (!text) { fprintf(stderr, "dsv2: out of memory\n"); return -1; }
    chat_render(msgs, n, 1, bos, eos, text, need + 1);
    int count = encode_text(tok, text, TOKENIZER_PARSE_SPECIAL, ids);
    free(text);
    return count;
}

/* Interactive chat: each user line joins the history, the whole conversation is rendered
 * with DeepSeek-V2-Chat's template, and only the tokens past the longest prefix the cache
 * already holds are fed. A conversation that would not fit the context is refused, never
 * truncated. */
static int cmd_chat(const Args *a)
{
    Tokenizer *tok = load_tokenizer(a->model_dir);
    if (!tok) return 1;
    Engine m;
    if (engine_open(&m, a)) { tokenizer_free(tok); return 1; }
    Sampler s = {0};
    ChatMessage *msgs = NULL;
    size_t n_msgs = 0;
    char line[8192];
    float *logits = malloc(sizeof(float) * m.cfg->vocab_size);
    int *cached = malloc(sizeof(int) * m.max_context), *reply = malloc(sizeof(int) * (a->n_tokens + 1));
    int rc = 1;
    if (!logits || !cached || !reply ||
        sampler_init(&s, m.cfg->vocab_size, (float)a->temperature, (float)a->top_p, a->seed)) {
        fprintf(stderr, "dsv2: out of memory\n");
        goto out;
    }
    fprintf(stderr, "dsv2 chat: %d-token context; an empty line or end of input quits\n", m.max_context);
    for (;;) {
        fprintf(stderr, "> ");
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\r\n")] = '\0';
        if (!*line) break;
        int *ids, n;
        if (add_message(&msgs, &n_msgs, "user", line) || (n = render_and_encode(tok, msgs, n_msgs, &ids)) < 0)
            goto out;
        if (n + a->n_tokens > m.max_context) {
            fprintf(stderr, "dsv2: the conversation is %d tokens; with up to %ld more for the reply "
                    "it would exceed the context of %d positions. Start a new chat.\n", n,
                    a->n_tokens, m.max_context);
            free(ids);
            goto out;
        }
        int common = 0;     /* cache rows [0, common) depend only on tokens [0, common): keep them */
        while (common < *m.pos && common < n - 1 && cached[common] == ids[common]) common++;
        *m.pos = common;
        memcpy(cached, ids, sizeof(int) * n);
        TokenStream ts;
        long made = 0;
        if (token_stream_init(&ts, tok, TOKENIZER_SKIP_SPECIAL)) {
            fprintf(stderr, "dsv2: %s\n", ds_last_error());
            free(ids);
            goto out;
        }
        int failed = generate(&m, &s, &ts, ids + common, n - common, a->n_tokens, logits, reply, &made);
        size_t len;
        const char *rest = token_stream_flush(&ts, &len);
        if (rest) fwrite(rest, 1, len, stdout);
        printf("\n");
        token_stream_free(&ts);
        free(ids);
        if (failed) { fprintf(stderr, "dsv2: %s\n", ds_last_error()); goto out; }
        memcpy(cached + n, reply, sizeof(int) * (size_t)(*m.pos - n));
        /* the reply joins the history as text, as the template expects */
        long text_len = tokenizer_decode(tok, (const int32_t *)reply, (size_t)made, TOKENIZER_SKIP_SPECIAL, NULL, 0);
        char *text = text_len >= 0 ? malloc((size_t)text_len + 1) : NULL;
        if (!text) { fprintf(stderr, "dsv2: cannot decode the reply\n"); goto out; }
        tokenizer_decode(tok, (const int32_t *)reply, (size_t)made, TOKENIZER_SKIP_SPECIAL, text, (size_t)text_len + 1);
        int added = add_message(&msgs, &n_msgs, "assistant", text);
        free(text);
        if (added) goto out;
    }
    rc = 0;
out:
    for (size_t i = 0; i < n_msgs; i++) free((char *)msgs[i].content);
    free(msgs);
    free(cached);
    free(reply);
    free(logits);
    sampler_free(&s);
    tokenizer_free(tok);
    engine_close(&m);
    return rc;
}

/* Prints the ids of -p TEXT on one line, space-separated (BOS per the tokenizer files). */
static int cmd_tokenize(const Args *a)
{
    if (!a->prompt) { fprintf(stderr, "dsv2: tokenize needs -p TEXT\n"); return 2; }
    Tokenizer *tok = load_tokenizer(a->model_dir);
    int *ids = NULL, n = tok ? encode_text(tok, a->prompt, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, &ids) : -1;
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    if (n >= 0) printf("\n");
    free(ids);
    tokenizer_free(tok);
    return n < 0;
}

/* Prints the text of --ids (special tokens included, as written in the vocabulary). */
static int cmd_detokenize(const Args *a)
{
    if (!a->ids) { fprintf(stderr, "dsv2: detokenize needs --ids 1,2,3\n"); return 2; }
    Tokenizer *tok = load_tokenizer(a->model_dir);
    int *ids = NULL, n = tok ? parse_ids(a->ids, &ids) : -1, rc = 1;
    long len = n >= 0 ? tokenizer_decode(tok, (const int32_t *)ids, (size_t)n, 0, NULL, 0) : -1;
    char *text = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (n >= 0 && len < 0) fprintf(stderr, "dsv2: %s\n", ds_last_error());
    if (text) {
        tokenizer_decode(tok, (const int32_t *)ids, (size_t)n, 0, text, (size_t)len + 1);
        fwrite(text, 1, (size_t)len, stdout);
        printf("\n");
        rc = 0;
    }
    free(text);
    free(ids);
    tokenizer_free(tok);
    return rc;
}

/* Writes logits for every prompt position to a temporary file, renamed into place on success. */
static int cmd_logits(const Args *a)
{
    if (!a->output) { fprintf(stderr, "dsv2: logits needs -o FILE\n"); return 2; }
    int *ids = NULL, n = prompt_ids(a, NULL, &ids), rc = 1;
    if (n < 0) return 1;
    Engine m;
    if (engine_open(&m, a)) { free(ids); return 1; }
    const size_t count = (size_t)n * m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * count);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", a->output);
    FILE *f = NULL;
    if (!logits) { fprintf(stderr, "dsv2: out of memory for %zu logits\n", count); goto out; }
    if (engine_forward(&m, ids, n, logits, true)) { fprintf(stderr, "dsv2: %s\n", ds_last_error()); goto out; }
    if (!(f = fopen(tmp, "wb"))) { fprintf(stderr, "dsv2: %s: %s\n", tmp, strerror(errno)); goto out; }
    /* float32, little-endian: the in-memory layout on every machine this builds for */
    int ok = fwrite(logits, sizeof(float), count, f) == count;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, a->output) != 0) {
        fprintf(stderr, "dsv2: %s: %s\n", a->output, strerror(errno));
        remove(tmp);
        goto out;
    }
    rc = 0;
out:
    free(logits);
    free(ids);
    engine_close(&m);
    return rc;
}

/* Parameter counts from the config (SPEC §2's shapes), and the paper's Table 1 from the dims. */
static int cmd_info(const Args *a)
{
    /* everything below follows from config.json; the weights, if present, are only counted */
    char path[4096];
    ModelConfig cfg;
    if (access(a->model_dir, F_OK) != 0) {
        fprintf(stderr, "dsv2: %s: no such model directory\n", a->model_dir);
        return 1;
    }
    snprintf(path, sizeof path, "%s/config.json", a->model_dir);
    if (config_load(path, &cfg)) { fprintf(stderr, "dsv2: %s\n", ds_last_error()); return 1; }
    const ModelConfig *c = &cfg;
    const long long D = c->hidden_size, nh = c->num_attention_heads, L = c->num_hidden_layers;
    const long long dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    const long long dc = c->kv_lora_rank, dcq = c->q_lora_rank, E = c->n_routed_experts;
    const long long K = c->num_experts_per_tok, Ie = c->moe_intermediate_size;
    long long attn = (dcq ? dcq * D + dcq + nh * (dn + dr) * dcq : nh * (dn + dr) * D) +
                     (dc + dr) * D + dc + nh * (dn + dv) * dc + D * nh * dv + 2 * D;
    long long total = 2LL * c->vocab_size * D + D, active = total, dense = 0, moe = 0;
    for (int l = 0; l < L; l++) {
        total += attn;
        active += attn;
        if (!config_layer_is_moe(c, l)) {
            dense++;
            total += 3 * D * c->intermediate_size;
            active += 3 * D * c->intermediate_size;
        } else {
            moe++;
            long long shared = 3 * D * Ie * c->n_shared_experts, expert = 3 * D * Ie;
            total += E * D + E * expert + shared;
            active += E * D + K * expert + shared;
        }
    }
    Checkpoint ck;
    if (checkpoint_open(a->model_dir, &ck) == 0) {
        printf("model        %s (%zu tensors in %d file%s)\n", a->model_dir, ck.n_entries, ck.n_files,
               ck.n_files == 1 ? "" : "s");
        checkpoint_close(&ck);
    } else {
        printf("model        %s (config only: %s)\n", a->model_dir, ds_last_error());
    }
    printf("layers       %lld: %lld dense, %lld MoE (%lld routed experts, %lld per token, %d shared)\n",
           L, dense, moe, E, K, c->n_shared_experts);
    const long long embed = (long long)c->vocab_size * D;    /* a lookup, not a product */
    printf("parameters   %lld total, %lld active per token (%.1f%%); %lld without the embedding "
           "lookup, as the paper counts\n", total, active, 100.0 * (double)active / (double)total,
           active - embed);
    printf("attention    MLA: %lld heads, d_c %lld, d_c' %lld, d_n %lld, d_r %lld, d_v %lld\n", nh, dc,
           dcq, dn, dr, dv);
    /* KV cache per token, in elements, at these dims (paper Table 1, d_h = d_n) */
    const long long dh = dn, groups = nh < 8 ? nh : 8;
    printf("KV cache per token (all %lld layers; bf16 bytes = 2 x elements):\n", L);
    printf("  MHA          2 n_h d_h l  = %10lld elements\n", 2 * nh * dh * L);
    printf("  GQA (%lld groups) 2 n_g d_h l = %10lld elements\n", groups, 2 * groups * dh * L);
    printf("  MQA          2 d_h l      = %10lld elements\n", 2 * dh * L);
    printf("  MLA          (d_c + d_r) l = %10lld elements = %zu bytes in bf16\n", (dc + dr) * L,
           mla_cache_bytes_per_token(c, 2));
    return 0;
}

/* ---- route-stats: where the router sends the tokens, and what that costs ---------------------- */

/** What one routing of T tokens costs over b->D devices of E/D contiguous experts each. */
typedef struct {
    long long pairs;     /* (token, device) pairs: devices each token's experts lie on, summed */
    int devices_max;     /* most devices one token reached */
    BalanceLosses loss;  /* L_ExpBal, L_DevBal, L_CommBal with b's α's and M */
} RouteCost;

static RouteCost route_cost(const float *scores, const int *idx, int T, const BalanceSpec *b)
{
    RouteCost c = {0, 0, balance_losses(scores, idx, T, b, NULL)};
    const int per = b->E / b->D;
    for (int t = 0; t < T; t++) {
        bool on[ROUTER_MAX_EXPERTS] = {false};
        int n = 0;
        for (int k = 0; k < b->K; k++) {
            const int d = idx[t * b->K + k] / per;
            n += !on[d];
            on[d] = true;
        }
        c.pairs += n;
        c.devices_max = n > c.devices_max ? n : c.devices_max;
    }
    return c;
}

/* The default device count: the config's expert groups when it has several, else 8; lowered until
 * it divides the routed experts. */
static int default_devices(const ModelConfig *c)
{
    int D = c->n_group > 1 ? c->n_group : 8;
    if (D > c->n_routed_experts) D = c->n_routed_experts;
    while (c->n_routed_experts % D) D--;
    return D;
}

/* True when an executable named name is in one of $PATH's directories. */
static bool on_path(const char *name)
{
    const char *path = getenv("PATH");
    char file[4096];
    while (path && *path) {
        const size_t len = strcspn(path, ":");
        snprintf(file, sizeof file, "%.*s/%s", (int)len, path, name);
        if (len && access(file, X_OK) == 0) return true;
        path += len + (path[len] == ':');
    }
    return false;
}

/* Writes s as a gnuplot single-quoted string (a quote inside is doubled). */
static void gnuplot_string(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

/* The plot's working files: data, script and gnuplot's messages in a temporary directory. */
typedef struct {
    char dir[4096], data[4160], script[4160], log[4160];
} PlotFiles;

/* Runs gnuplot on the script, its output to the log. Returns 0, or −1 after printing one line. */
static int run_gnuplot(const char *png, const PlotFiles *p)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, p->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {"gnuplot", (char *)p->script, NULL};
    pid_t pid;
    const int err = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        fprintf(stderr, "dsv2: --plot %s: cannot run gnuplot: %s\n", png, strerror(err));
        return -1;
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char first[512] = "";
        FILE *f = fopen(p->log, "r");
        if (f && fgets(first, sizeof first, f)) first[strcspn(first, "\n")] = '\0';
        if (f) fclose(f);
        fprintf(stderr, "dsv2: --plot %s: gnuplot failed%s%s\n", png, *first ? ": " : "", first);
        return -1;
    }
    return 0;
}

/* --plot: tokens per expert of every MoE layer as a heat map (expert across, layer up). The data and
 * the script go to a temporary directory; gnuplot draws into a temporary file beside png, which is
 * renamed into place only when complete. counts: [n_moe, E]; layer: [n_moe] the layer numbers.
 * Returns 0, or −1 after printing one line (no file left behind). */
static int write_plot(const char *png, const char *title, const int *counts, const int *layer, int n_moe, int E)
{
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    PlotFiles p;
    char out[4200];
    snprintf(p.dir, sizeof p.dir, "%s/dsv2-plot-XXXXXX", tmp);
    snprintf(out, sizeof out, "%s.XXXXXX", png);
    if (!mkdtemp(p.dir)) { fprintf(stderr, "dsv2: --plot: %s: %s\n", p.dir, strerror(errno)); return -1; }
    snprintf(p.data, sizeof p.data, "%s/load.dat", p.dir);
    snprintf(p.script, sizeof p.script, "%s/load.gp", p.dir);
    snprintf(p.log, sizeof p.log, "%s/gnuplot.log", p.dir);
    int rc = -1, fd = mkstemp(out);
    if (fd < 0) { fprintf(stderr, "dsv2: --plot %s: %s\n", png, strerror(errno)); goto out; }
    const mode_t mask = umask(0);                         /* the picture gets the usual 0666 & ~umask */
    umask(mask);
    const int chmod_failed = fchmod(fd, 0666 & ~mask);
    close(fd);
    if (chmod_failed) { fprintf(stderr, "dsv2: --plot %s: %s\n", png, strerror(errno)); goto out; }
    FILE *f = fopen(p.data, "w");
    if (!f) { fprintf(stderr, "dsv2: --plot: %s: %s\n", p.data, strerror(errno)); goto out; }
    for (int r = 0; r < n_moe; r++)                       /* one line per cell: expert, row, tokens */
        for (int e = 0; e < E; e++) fprintf(f, "%d %d %d\n", e, r, counts[(size_t)r * E + e]);
    int ok = fclose(f) == 0;
    if (!ok || !(f = fopen(p.script, "w"))) { fprintf(stderr, "dsv2: --plot: %s: %s\n", p.data, strerror(errno)); goto out; }
    fprintf(f, "set terminal pngcairo size 1000,%d\nset output ", 200 + 24 * (n_moe < 40 ? n_moe : 40));
    gnuplot_string(f, out);
    fprintf(f, "\nset title ");
    gnuplot_string(f, title);
    fprintf(f, " noenhanced\nset xlabel 'routed expert'\nset ylabel 'layer'\nset cblabel 'tokens'\n"
               "set palette defined (0 '#f7fbff', 0.5 '#6baed6', 1 '#08306b')\nset cbrange [0:*]\nset xrange [-0.5:%g]\nset yrange [-0.5:%g]\n"
               "set ytics (", E - 0.5, n_moe - 0.5);
    const int step = n_moe <= 32 ? 1 : (n_moe + 15) / 16;     /* at most about 16 layer labels */
    for (int r = 0; r < n_moe; r += step) fprintf(f, "%s\"%d\" %d", r ? ", " : "", layer[r], r);
    fprintf(f, ")\nplot ");
    gnuplot_string(f, p.data);
    fprintf(f, " using 1:2:(0.5):(0.5):3 with boxxyerror fillcolor palette fillstyle solid noborder notitle\n");
    ok = fclose(f) == 0;
    if (!ok) { fprintf(stderr, "dsv2: --plot: %s: %s\n", p.script, strerror(errno)); goto out; }
    if (run_gnuplot(png, &p)) goto out;
    if (rename(out, png) != 0) { fprintf(stderr, "dsv2: --plot %s: %s\n", png, strerror(errno)); goto out; }
    rc = 0;
out:
    if (rc) remove(out);
    remove(p.data);
    remove(p.script);
    remove(p.log);
    rmdir(p.dir);
    return rc;
}

static const char *topk_method_name(TopkMethod t)
{
    return t == TOPK_GREEDY ? "greedy" : t == TOPK_GROUP_LIMITED_GREEDY ? "group_limited_greedy" : "noaux_tc";
}

/** What every layer's report shares. */
typedef struct {
    const ModelConfig *cfg;
    int T;          /* tokens */
    int D;          /* devices */
    int M;          /* the device limit of the "limited" routing */
    int M_model;    /* most devices the model's own routing can reach over D devices */
    const double *alpha; /* [3] α₁, α₂, α₃ */
} RouteSetup;

/* Prints the values of v[0..n) after a label, space-separated. */
static void print_row(const char *label, const long long *v, int n)
{
    printf("  %-22s", label);
    for (int i = 0; i < n; i++) printf(" %lld", v[i]);
    printf("\n");
}

/* Prints "max X, mean Y, max/mean Z" of v[0..n). */
static void print_load(const char *label, const long long *v, int n, const char *unit)
{
    long long max = 0, sum = 0;
    for (int i = 0; i < n; i++) {
        sum += v[i];
        max = v[i] > max ? v[i] : max;
    }
    const double mean = (double)sum / n;
    printf("  %-22s max %lld, mean %.2f, max/mean %.3f (%s)\n", label, max, mean, mean > 0 ? max / mean : 0, unit);
}

/* One MoE layer's report: tokens per expert and per device under the model's routing, then three
 * routings side by side — top-K with no device limit (router_select's greedy rule), the model's own,
 * and device_limited_route() to M devices — with their bytes and balance losses. counts: [E] output,
 * tokens per expert; work: [2, T, K] for the two recomputed routings. Adds each
 * routing's bytes to bytes[3]. */
static void report_layer(const RouteSetup *r, int l, const float *scores, const int *chosen, long long *counts,
                         int *work, long long bytes[3])
{
    const ModelConfig *c = r->cfg;
    const int E = c->n_routed_experts, K = c->num_experts_per_tok, T = r->T, D = r->D, per = E / D;
    int *unlimited = work, *limited = work + (size_t)T * K;
    float weight[ROUTER_MAX_EXPERTS];                     /* router_select's weights, not reported */
    ModelConfig greedy = *c;
    greedy.topk_method = TOPK_GREEDY;
    for (int t = 0; t < T; t++) {
        router_select(unlimited + t * K, weight, scores + (size_t)t * E, NULL, &greedy);
        device_limited_route(limited + t * K, scores + (size_t)t * E, E, K, D, r->M);
    }
    long long tokens[ROUTER_MAX_EXPERTS] = {0}, assigned[ROUTER_MAX_EXPERTS] = {0};
    memset(counts, 0, sizeof *counts * E);
    for (int t = 0; t < T; t++) {
        bool on[ROUTER_MAX_EXPERTS] = {false};
        for (int k = 0; k < K; k++) {
            const int e = chosen[t * K + k], d = e / per;
            counts[e]++;
            assigned[d]++;
            tokens[d] += !on[d];
            on[d] = true;
        }
    }
    printf("\nlayer %d\n", l);
    print_row("tokens per expert", counts, E);
    print_load("expert load", counts, E, "tokens");
    print_row("tokens per device", tokens, D);
    print_row("assignments per device", assigned, D);
    print_load("device load", assigned, D, "assignments");
    printf("  %-10s %3s %14s %4s %14s %11s %11s %11s\n", "routing", "M", "devices/token", "max", "bytes", "L_ExpBal",
           "L_DevBal", "L_CommBal");
    const char *name[3] = {"unlimited", "model", "limited"};
    const int *idx[3] = {unlimited, chosen, limited}, M[3] = {K < D ? K : D, r->M_model, r->M};
    for (int i = 0; i < 3; i++) {
        const BalanceSpec b = {E, K, D, M[i], r->alpha[0], r->alpha[1], r->alpha[2]};
        const RouteCost cost = route_cost(scores, idx[i], T, &b);
        const long long n = cost.pairs * c->hidden_size * 2;   /* bf16 hidden states */
        printf("  %-10s %3d %14.3f %4d %14lld %11.6g %11.6g %11.6g\n", name[i], M[i], (double)cost.pairs / T,
               cost.devices_max, n, cost.loss.expert, cost.loss.device, cost.loss.comm);
        bytes[i] += n;
    }
}

/* Prints the prompt's routing statistics per MoE layer (see usage()); --plot draws tokens per expert. */
static int cmd_route_stats(const Args *a)
{
    if (strcmp(a->backend, "ref")) {
        fprintf(stderr, "dsv2: --backend %s: route-stats reads the routing of the reference model (--backend ref)\n",
                a->backend);
        return 2;
    }
    if (a->plot && !on_path("gnuplot")) {
        fprintf(stderr, "dsv2: --plot %s: gnuplot is not on PATH (Debian: apt-get install gnuplot-nox)\n", a->plot);
        return 1;
    }
    Model m;
    if (model_open(&m, a->model_dir, NULL)) { fprintf(stderr, "dsv2: %s\n", ds_last_error()); return 1; }
    const ModelConfig *c = m.cfg;
    const int E = c->n_routed_experts, K = c->num_experts_per_tok, L = c->num_hidden_layers;
    int n_moe = 0;
    for (int l = 0; l < L; l++) n_moe += config_layer_is_moe(c, l);
    if (E == 0 || n_moe == 0) {
        fprintf(stderr, "dsv2: %s: no MoE layers to report on\n", a->model_dir);
        model_close(&m);
        return 1;
    }
    const int D = a->devices ? (int)a->devices : default_devices(c);
    const int M_model = fast_ep_device_limit(c, D), M = a->limit ? (int)a->limit : M_model;
    const char *bad = NULL;
    char why[160];
    if (E % D) {
        bad = "--devices";
        snprintf(why, sizeof why, "does not divide the %d routed experts", E);
    } else if (M > D) {
        bad = "--limit";
        snprintf(why, sizeof why, "more than the %d devices", D);
    } else if (M * (E / D) < K) {
        bad = "--limit";
        snprintf(why, sizeof why, "%d device%s hold%s %d experts, fewer than the %d a token chooses", M,
                 M == 1 ? "" : "s", M == 1 ? "s" : "", M * (E / D), K);
    }
    if (bad) {
        fprintf(stderr, "dsv2: %s %ld: %s\n", bad, !strcmp(bad, "--devices") ? (long)D : (long)M, why);
        model_close(&m);
        return 2;
    }
    Tokenizer *tok = NULL;
    int *ids = NULL, T = -1, rc = 1;
    if (!a->prompt || (tok = load_tokenizer(a->model_dir))) T = prompt_ids(a, tok, &ids);
    tokenizer_free(tok);
    RouteLog g = {0};
    long long *counts = NULL;
    int *work = NULL, *plot_counts = NULL;
    if (T < 0) goto out;
    if (T > m.max_context) {
        fprintf(stderr, "dsv2: the prompt is %d tokens, more than the context of %d positions\n", T, m.max_context);
        goto out;
    }
    counts = malloc(sizeof *counts * E);
    work = malloc(sizeof(int) * 2 * (size_t)T * K);
    plot_counts = malloc(sizeof(int) * n_moe * (size_t)E);
    if (!counts || !work || !plot_counts) {
        fprintf(stderr, "dsv2: out of memory for the routing of %d tokens\n", T);
        goto out;
    }
    if (route_log_attach(&g, &m, T)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        goto out;
    }
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double shown = 0;
    for (int done = 0, n; done < T; done += n) {          /* chunk by chunk, for the progress line */
        n = m.chunk < T - done ? m.chunk : T - done;
        if (model_forward(&m, ids + done, n, NULL, false)) {
            fprintf(stderr, "dsv2: %s\n", ds_last_error());
            goto out;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        const double secs = (double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec);
        if (secs - shown >= 2) {                           /* progress only when it is slow */
            fprintf(stderr, "dsv2 route-stats: %d of %d tokens through the model (%.0f s)\n", done + n, T, secs);
            shown = secs;
        }
    }
    const RouteSetup setup = {c, T, D, M, M_model, a->alpha};
    printf("route-stats  %s: %d tokens, %d MoE layer%s of %d\n", a->model_dir, T, n_moe, n_moe == 1 ? "" : "s", L);
    printf("routing      %s: K = %d of E = %d routed experts", topk_method_name(c->topk_method), K, E);
    if (c->topk_method != TOPK_GREEDY && c->n_group > 1) printf(", best %d of %d groups", c->topk_group, c->n_group);
    printf("\ndevices      D = %d of %d experts each (device d: [%dd, %dd + %d)); the model's routing reaches at "
           "most %d\n", D, E / D, E / D, E / D, E / D, M_model);
    printf("bytes        %d x 2 (bf16) per (token, device) pair, for each device holding one of the token's "
           "experts\n", c->hidden_size);
    printf("routings     unlimited: top-%d of all experts; model: as the model ran; limited: device-limited "
           "routing, M = %d\n", K, M);
    const bool paper = a->alpha[0] == 0.003 && a->alpha[1] == 0.05 && a->alpha[2] == 0.02;
    printf("losses       alpha1 %g, alpha2 %g, alpha3 %g (%s); L_CommBal with each routing's M\n", a->alpha[0],
           a->alpha[1], a->alpha[2], paper ? "paper §2.2.3" : "--alpha");
    long long bytes[3] = {0, 0, 0};
    for (int i = 0; i < n_moe; i++) {
        report_layer(&setup, g.layer[i], g.scores + (size_t)i * T * E, g.chosen + (size_t)i * T * K, counts, work,
                     bytes);
        for (int e = 0; e < E; e++) plot_counts[(size_t)i * E + e] = (int)counts[e];
    }
    printf("\nall layers   bytes: unlimited %lld, model %lld, limited %lld\n", bytes[0], bytes[1], bytes[2]);
    fflush(stdout);
    char title[4200];
    snprintf(title, sizeof title, "%s: tokens per routed expert, %d tokens", a->model_dir, T);
    rc = a->plot && write_plot(a->plot, title, plot_counts, g.layer, n_moe, E) ? 1 : 0;
out:
    route_log_free(&g, &m);
    free(counts);
    free(work);
    free(plot_counts);
    free(ids);
    model_close(&m);
    return rc;
}

static void usage(void)
{
    puts("usage:\n"
         "  dsv2 generate   -m DIR (-p TEXT | --ids 1,2,3) [-n N] [-t TEMP] [--top-p P] [--seed S]\n"
         "  dsv2 chat       -m DIR [-n N] [-t TEMP] [--top-p P] [--seed S]\n"
         "  dsv2 logits     -m DIR --ids 1,2,3 -o FILE   (float32 little-endian [T, vocab])\n"
         "  dsv2 tokenize   -m DIR -p TEXT\n"
         "  dsv2 detokenize -m DIR --ids 1,2,3\n"
         "  dsv2 info       -m DIR\n"
         "  dsv2 route-stats -m DIR (-p TEXT | --ids 1,2,3) [--devices D] [--limit M] [--alpha A1,A2,A3]\n"
         "                   [--plot FILE.png]\n"
         "generate, chat and logits also take --backend ref|fast (fast: kernels/ + fast/, on the\n"
         "simulated device unless built with make dsv2-gpu) and, for fast, --dtype f32|bf16.\n"
         "Defaults: -n 100, -t 0 (greedy), --top-p 1, --seed 0, --backend ref, --dtype f32.\n"
         "route-stats runs the prompt through the reference model and prints, per MoE layer, tokens per\n"
         "expert and per device (D devices, device d holding experts [d E/D, (d+1) E/D); D defaults to\n"
         "n_group when > 1, else 8, lowered to divide E), then for three routings (top-K with no device\n"
         "limit; the model's own, which reaches at most the M its config implies; device-limited to M\n"
         "devices, M = --limit or that implied M) the bytes dispatched, L_ExpBal, L_DevBal and L_CommBal\n"
         "(weighted by --alpha, default 0.003,0.05,0.02, the paper's). Bytes: a token sends its hidden\n"
         "state once to each distinct device holding one of its experts, hidden_size x 2 bytes (bf16) per\n"
         "(token, device) pair; no device is the token's home, so none is free. --plot FILE.png draws\n"
         "tokens per expert and layer with gnuplot.");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    static const struct { const char *name; int (*run)(const Args *); } commands[] = {
        {"generate", cmd_generate}, {"chat", cmd_chat},         {"logits", cmd_logits},
        {"tokenize", cmd_tokenize}, {"detokenize", cmd_detokenize}, {"info", cmd_info},
        {"route-stats", cmd_route_stats},
    };
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(argv[1], commands[i].name)) continue;
        Args a;
        int rc = parse_args(argc, argv, &a);
        return rc ? rc : commands[i].run(&a);
    }
    fprintf(stderr, "dsv2: unknown command '%s' (run 'dsv2 help' for usage)\n", argv[1]);
    return 2;
}
