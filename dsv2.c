/**
 * \file dsv2.c
 * \brief The command-line program: generate text, chat, dump logits, tokenize, describe a checkpoint,
 * report the routing of a prompt. `dsv2 --help` lists the commands, `dsv2 COMMAND --help` their options.
 *
 * Like llama2.c's run.c this file only wires the pieces together: the model lives in ref/ (and
 * fast/ for --backend fast), route-stats in dsv2_route_stats.c. Exit status: 0 on success, 1 for a
 * failure while running (one line on stderr naming what was wrong), 2 for a malformed command line
 * (one line on stderr ending with where to find the command's help).
 */
#include "dsv2.h"
#include "dsv2_route_stats.h"
#include "error.h"
#include "fast_plan.h"
#include "mla.h"
#include "model.h"
#include "router.h"
#include "tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the commands and their options ------------------------------------------------------------ */

static const struct {
    const char *name;
    unsigned long long bit;
} OPTIONS[] = {
    { "-m", O_M },
    { "--ids", O_IDS },
    { "-p", O_P },
    { "-f", O_F },
    { "-o", O_O },
    { "-n", O_N },
    { "-t", O_T },
    { "--top-p", O_TOP_P },
    { "--top-k", O_TOP_K },
    { "--repeat-penalty", O_REPEAT },
    { "--seed", O_SEED },
    { "--backend", O_BACKEND },
    { "--dtype", O_DTYPE },
    { "--ctx", O_CTX },
    { "--system", O_SYSTEM },
    { "--stop", O_STOP },
    { "--devices", O_DEVICES },
    { "--limit", O_LIMIT },
    { "--alpha", O_ALPHA },
    { "--plot", O_PLOT },
    { "-c", O_CONFIG },
    { "--data", O_DATA },
    { "--steps", O_STEPS },
    { "--batch", O_BATCH },
    { "--seq", O_SEQ },
    { "--lr", O_LR },
    { "--warmup", O_WARMUP },
    { "--capacity", O_CAPACITY },
    { "--resume", O_RESUME },
    { "--eval-every", O_EVAL },
    { "--tokenizer", O_TOKENIZER },
    { "--device-limit", O_LIMIT },
    { "--stop-after", O_STOP_AFTER },
    { "--plan", O_PLAN },
    { "--layout", O_LAYOUT },
};

#define SAMPLING_HELP                                                                                     \
    "  -n N              generate at most N tokens (default 100); the context's end also stops\n"         \
    "  -t T              temperature (default 0: greedy, the most probable token)\n"                      \
    "  --top-k K         sample among the K most probable tokens only (default 0: all)\n"                 \
    "  --top-p P         then among the most probable whose probability adds up to P (default 1)\n"       \
    "  --repeat-penalty R  divide positive logits of the last 64 tokens by R, multiply negative ones\n"   \
    "                    (default 1: none)\n"                                                             \
    "  --seed S          seed of the sampler (default: drawn at random when -t > 0, printed on stderr)\n" \
    "  --stop STR        stop when the text contains STR (not printed); repeatable, up to 8\n"
#define MODEL_HELP                                                                                      \
    "  -m DIR            the checkpoint directory (config.json, safetensors, tokenizer.json)\n"         \
    "  --ctx N           context size in tokens (default: max_position_embeddings, at most 4096)\n"     \
    "  --backend B       ref (default: ref/, plain C) or fast (kernels/ + fast/: a GPU in the build\n"  \
    "                    of make dsv2-gpu, else the simulated device, about 100x slower than ref)\n"    \
    "  --dtype D         --backend fast only: f32 (default; the text equals ref's) or bf16\n"           \
    "  --layout sharded  --backend fast over --devices N (1..8): attention by heads, latent cache by\n" \
    "                    position, experts by expert (chapter 15)\n"                                    \
    "  --devices N       devices of --layout sharded (default 1)\n"
#define PROMPT_HELP                                                                            \
    "  -p TEXT           the prompt (-p - reads it from stdin)\n"                              \
    "  -f FILE           the prompt from a file (one trailing newline dropped, as for -p -)\n" \
    "  --ids 1,2,3       the prompt as token ids\n"

/** One command: its options, what it runs and its --help. */
typedef struct {
    const char *name;
    unsigned long long takes;
    int (*run)(Args *);
    const char *help;
} Command;

static int cmd_tokenize(Args *a);
static int cmd_detokenize(Args *a);
static int cmd_info(Args *a);
static int cmd_route_stats(Args *a);

#define SAMPLING (O_N | O_T | O_TOP_P | O_TOP_K | O_REPEAT | O_SEED | O_STOP)
#define MODEL    (O_M | O_CTX | O_BACKEND | O_DTYPE | O_LAYOUT | O_DEVICES)
#define PROMPT   (O_P | O_F | O_IDS)

static const Command COMMANDS[] = {
    { "generate", MODEL | PROMPT | SAMPLING, cmd_generate,
      "usage: dsv2 generate -m DIR (-p TEXT | -f FILE | --ids 1,2,3) [options]\n"
      "Continues the prompt, printing it and then each token as it comes (ids for --ids). A summary\n"
      "(tokens and tokens per second of the prompt and of the generation) goes to stderr.\n" MODEL_HELP PROMPT_HELP
          SAMPLING_HELP },
    { "chat", MODEL | SAMPLING | O_SYSTEM, cmd_chat,
      "usage: dsv2 chat -m DIR [options]\n"
      "A conversation in DeepSeek-V2-Chat's template, one line per user turn from stdin. /reset starts\n"
      "over; an empty line, end of input or Ctrl-C at the prompt quits; Ctrl-C during a reply stops it.\n"
      "A reply stops early when the context is full (say /reset then).\n" MODEL_HELP
      "  --system TEXT     a system message before the first turn\n" SAMPLING_HELP },
    { "logits", MODEL | PROMPT | O_O, cmd_logits,
      "usage: dsv2 logits -m DIR (-p TEXT | -f FILE | --ids 1,2,3) -o FILE [options]\n"
      "Writes the logits of every prompt position, float32 little-endian [T, vocab], to FILE (a regular\n"
      "file appears only when complete).\n" MODEL_HELP PROMPT_HELP
      "  -o FILE           where the logits go (/dev/stdout, a pipe: written directly)\n" },
    { "tokenize", O_M | O_P | O_F, cmd_tokenize,
      "usage: dsv2 tokenize -m DIR (-p TEXT | -f FILE)\n"
      "Prints the ids of the text (BOS as the tokenizer files say) on one line, space-separated.\n"
      "  -m DIR            the checkpoint directory\n"
      "  -p TEXT           the text (-p - reads it from stdin)\n"
      "  -f FILE           the text from a file (one trailing newline dropped)\n" },
    { "detokenize", O_M | O_IDS, cmd_detokenize,
      "usage: dsv2 detokenize -m DIR --ids 1,2,3\n"
      "Prints the text of the ids (special tokens written out).\n" },
    { "info", O_M | O_PLAN | O_CTX | O_BATCH | O_LAYOUT | O_DTYPE, cmd_info,
      "usage: dsv2 info -m DIR [--plan DEVICES[:GB] [--ctx N] [--batch B] [--layout L] [--dtype T]]\n"
      "Prints layers, parameters (total and active per token) and the KV cache per token of MHA, GQA,\n"
      "MQA and MLA at the model's dimensions (the paper's Table 1); needs only config.json.\n"
      "  --plan D[:GB]     the fast backend's device memory on D devices (weights, latent cache, scratch,\n"
      "                    staging), and whether each fits GB gigabytes (10^9 bytes; default 80)\n"
      "  --ctx N           positions per sequence (default: the fast backend's, min(model's, 4096))\n"
      "  --batch B         sequence slots (default 1)\n"
      "  --layout L        single (default for 1 device), ep (MoE layers expert-parallel, default for\n"
      "                    more), dp (attention data-parallel, MoE layers expert-parallel), or sharded\n"
      "                    (attention by heads, latent cache by position, experts by expert)\n"
      "  --dtype T         bf16 (default) or f32 weights and cache\n" },
    { "route-stats", O_M | O_CTX | PROMPT | O_DEVICES | O_LIMIT | O_ALPHA | O_PLOT, cmd_route_stats,
      "usage: dsv2 route-stats -m DIR (-p TEXT | -f FILE | --ids 1,2,3) [options]\n"
      "Runs the prompt through the reference model and prints, per MoE layer, tokens per expert and per\n"
      "device (device d holds experts [d E/D, (d+1) E/D)), then for three routings (top-K with no device\n"
      "limit; the model's own; device-limited to M devices) the bytes dispatched (hidden_size x 2 bytes\n"
      "per token and device holding one of its experts) and L_ExpBal, L_DevBal, L_CommBal.\n"
      "  -m DIR, --ctx N, -p TEXT, -f FILE, --ids 1,2,3   as for generate\n"
      "  --devices D       devices (default: n_group when > 1, else 8, lowered to divide E)\n"
      "  --limit M         M of the device-limited routing (default: what the model's routing implies)\n"
      "  --alpha A1,A2,A3  the balance-loss weights (default 0.003,0.05,0.02, the paper's)\n"
      "  --plot FILE.png   draw tokens per expert and layer (needs gnuplot)\n" },
    { "train",
      O_CONFIG | O_DATA | O_O | O_STEPS | O_BATCH | O_SEQ | O_LR | O_WARMUP | O_ALPHA | O_CAPACITY | O_LIMIT |
          O_DEVICES | O_SEED | O_RESUME | O_EVAL | O_TOKENIZER | O_STOP_AFTER,
      cmd_train, TRAIN_HELP },
};

static const char USAGE[] = "usage: dsv2 COMMAND [options]     (dsv2 COMMAND --help lists a command's options)\n"
                            "  generate     continue a prompt\n"
                            "  chat         a conversation on stdin, with history\n"
                            "  logits       write the logits of every prompt position to a file\n"
                            "  tokenize     text to token ids\n"
                            "  detokenize   token ids to text\n"
                            "  info         parameters and KV cache per token of a checkpoint\n"
                            "  route-stats  where the router sends a prompt's tokens, and what that costs\n"
                            "  train        train a model from a config on a text file\n"
                            "Exit status: 0 success, 1 a failure while running, 2 a malformed command line.\n";

/* One line on stderr for a malformed command line; returns the exit status 2. */
int usage_error(const Args *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dsv2 %s: ", a->cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see dsv2 %s --help)\n", a->cmd);
    va_end(ap);
    return 2;
}

static int parse_long(const Args *a, const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return usage_error(a, "%s: '%s' is not an integer in [%ld, %ld]", flag, s, lo, hi);
    *out = v;
    return 0;
}

static int parse_double(const Args *a, const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return usage_error(a, "%s: '%s' is not a number in [%g, %g]", flag, s, lo, hi);
    *out = v;
    return 0;
}

/* "A1,A2,A3" → alpha[3], each a finite number ≥ 0. */
static int parse_alphas(const Args *a, const char *s, double alpha[3])
{
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        char *end;
        errno = 0;
        const double v = strtod(p, &end);
        if (errno || end == p || !(v >= 0 && v <= 1e6) || *end != (i < 2 ? ',' : '\0'))
            return usage_error(a, "--alpha: '%s' is not three numbers in [0, 1e6] separated by commas", s);
        alpha[i] = v;
        p = end + 1;
    }
    return 0;
}

/* "1,2,3" → ids; every id a non-negative integer. Returns the count, −1 for a malformed list (*bad
 * gets the 1-based character), −2 when out of memory. */
static int split_ids(const char *s, int **out, long *bad)
{
    int cap = 16, n = 0;
    int *ids = malloc(sizeof(int) * cap);
    const char *p = s;
    while (ids) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT_MAX || (*end && *end != ',')) {
            *bad = (long)(p - s) + 1;
            free(ids);
            return -1;
        }
        int *grown = n == cap ? realloc(ids, sizeof(int) * (cap *= 2)) : ids;
        if (!grown) break;
        ids = grown;
        ids[n++] = (int)v;
        if (!*end) {
            *out = ids;
            return n;
        }
        p = end + 1;
    }
    free(ids);
    return -2;
}

/* --ids as ids (a usage error already refused a malformed list). Returns the count or −1. */
static int parse_ids(const char *s, int **out)
{
    long bad;
    const int n = split_ids(s, out, &bad);
    if (n < 0) fprintf(stderr, "dsv2: out of memory for the ids\n");
    return n;
}

/* Parses argv[2..] into a for command c. Returns 0, or the exit status (2, or −1 for --help: print it). */
static int parse_args(int argc, char **argv, const Command *c, Args *a)
{
    /* --alpha's default: the paper's balance-loss weights (§2.2.3, §3.1.2) */
    *a = (Args){ .cmd = c->name,
                 .n_tokens = 100,
                 .top_p = 1,
                 .repeat_penalty = 1,
                 .backend = "ref",
                 .dtype = "f32",
                 .alpha = { 0.003, 0.05, 0.02 },
                 .tokenizer = "models/tiny-kjv",
                 .steps = 100,
                 .batch = 8,
                 .seq = 64,
                 .lr = 1e-3,
                 .warmup = 10 };
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return -1;
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        unsigned long long bit = 0;
        for (size_t k = 0; k < sizeof OPTIONS / sizeof *OPTIONS; k++)
            if (!strcmp(f, OPTIONS[k].name)) bit = OPTIONS[k].bit;
        if (!bit) return usage_error(a, "unknown option %s", f);
        if (!(c->takes & bit)) return usage_error(a, "%s does not take %s", c->name, f);
        if (bit == O_RESUME) {
            a->given |= bit;
            continue;
        } /* the one flag without a value */
        if (i + 1 >= argc) return usage_error(a, "%s needs a value", f);
        const char *v = argv[++i];
        a->given |= bit;
        long n;
        int rc = 0;
        switch (bit) {
        case O_M: a->model_dir = v; break;
        case O_IDS: a->ids = v; break;
        case O_P: a->prompt = v; break;
        case O_F: a->prompt_file = v; break;
        case O_O: a->output = v; break;
        case O_BACKEND: a->backend = v; break;
        case O_DTYPE: a->dtype = v; break;
        case O_SYSTEM: a->system = v; break;
        case O_PLOT: a->plot = v; break;
        case O_CONFIG: a->config = v; break;
        case O_DATA: a->data = v; break;
        case O_TOKENIZER: a->tokenizer = v; break;
        case O_PLAN: a->plan = v; break;
        case O_LAYOUT: a->layout = v; break;
        case O_STEPS: rc = parse_long(a, f, v, 1, INT_MAX, &a->steps); break;
        case O_STOP_AFTER: rc = parse_long(a, f, v, 1, INT_MAX, &a->stop_after); break;
        case O_BATCH: rc = parse_long(a, f, v, 1, 1 << 20, &a->batch); break;
        case O_SEQ: rc = parse_long(a, f, v, 1, 1 << 20, &a->seq); break;
        case O_WARMUP: rc = parse_long(a, f, v, 0, INT_MAX, &a->warmup); break;
        case O_EVAL: rc = parse_long(a, f, v, 0, INT_MAX, &a->eval_every); break;
        case O_LR: rc = parse_double(a, f, v, 1e-12, 1e6, &a->lr); break;
        case O_CAPACITY: rc = parse_double(a, f, v, 0, 1e6, &a->capacity); break;
        case O_STOP:
            if (a->n_stop == MAX_STOP) return usage_error(a, "more than %d --stop strings", MAX_STOP);
            if (!*v) return usage_error(a, "--stop: the string is empty");
            a->stop[a->n_stop++] = v;
            break;
        case O_DEVICES: rc = parse_long(a, f, v, 1, ROUTER_MAX_EXPERTS, &a->devices); break;
        case O_LIMIT: rc = parse_long(a, f, v, 1, ROUTER_MAX_EXPERTS, &a->limit); break;
        case O_ALPHA: rc = parse_alphas(a, v, a->alpha); break;
        case O_N: rc = parse_long(a, f, v, 0, INT_MAX, &a->n_tokens); break;
        case O_CTX: rc = parse_long(a, f, v, 1, INT_MAX, &a->ctx); break;
        case O_TOP_K: rc = parse_long(a, f, v, 0, INT_MAX, &a->top_k); break;
        case O_T: rc = parse_double(a, f, v, 0, 100, &a->temperature); break;
        case O_TOP_P: rc = parse_double(a, f, v, 0, 1, &a->top_p); break;
        case O_REPEAT: rc = parse_double(a, f, v, 0.01, 100, &a->repeat_penalty); break;
        case O_SEED:
            rc = parse_long(a, f, v, 0, LONG_MAX, &n);
            a->seed = (unsigned long long)n;
            break;
        }
        if (rc) return 2;
    }
    if (c->takes & O_CONFIG) { /* train: a config, not a model directory */
        if (!a->config) return usage_error(a, "-c CONFIG.json is missing");
        if (!a->data) return usage_error(a, "--data FILE (the training text) is missing");
        if (!a->output) return usage_error(a, "-o DIR (where the checkpoint goes) is missing");
        return 0;
    }
    if (!a->model_dir) return usage_error(a, "-m DIR (a model directory) is missing");
    const int sources = !!a->prompt + !!a->prompt_file + !!a->ids;
    const bool text_only = !(c->takes & O_IDS), needs = c->takes & (O_P | O_IDS);
    if (sources > 1) return usage_error(a, "give only one of -p, -f and --ids");
    if (needs && !sources)
        return usage_error(a, text_only          ? "no text: give -p TEXT or -f FILE"
                              : (c->takes & O_P) ? "no prompt: give -p TEXT, -f FILE or --ids 1,2,3"
                                                 : "--ids is missing");
    if (a->prompt && !*a->prompt) return usage_error(a, "-p: the prompt is empty");
    int *ids = NULL;
    long bad;
    const int n_ids = a->ids ? split_ids(a->ids, &ids, &bad) : 0;
    free(ids);
    if (n_ids == -1 || (a->ids && !*a->ids))
        return usage_error(a, "--ids: '%s' is not a comma-separated list of token ids (problem at character %ld)",
                           a->ids, *a->ids ? bad : 1L);
    if ((c->takes & O_O) && !a->output) return usage_error(a, "-o FILE is missing");
    if (strcmp(a->backend, "ref") && strcmp(a->backend, "fast"))
        return usage_error(a, "--backend %s: expected ref or fast", a->backend);
    if (strcmp(a->dtype, "f32") && strcmp(a->dtype, "bf16"))
        return usage_error(a, "--dtype %s: expected f32 or bf16", a->dtype);
    if (!strcmp(a->dtype, "bf16") && strcmp(a->backend, "fast"))
        return usage_error(a, "--dtype bf16 needs --backend fast (the reference computes in float32)");
    if (a->n_stop && a->ids)
        return usage_error(a, "--stop needs a text prompt (-p or -f): with --ids the output is ids");
    if ((c->takes & O_BACKEND) && (a->given & O_LAYOUT) && strcmp(a->layout, "sharded"))
        return usage_error(a, "--layout %s: expected sharded", a->layout);
    if ((c->takes & O_BACKEND) && (a->given & O_LAYOUT) && strcmp(a->backend, "fast"))
        return usage_error(a, "--layout sharded needs --backend fast");
    if ((c->takes & O_BACKEND) && (a->given & O_DEVICES) && !(a->given & O_LAYOUT))
        return usage_error(a, "--devices goes with --layout sharded");
    return 0;
}

/* Reads -f FILE, or stdin for -p -, into a->prompt (one trailing newline dropped). Returns 0 or the
 * exit status after one line. */
int read_prompt(Args *a)
{
    const bool from_stdin = a->prompt && !strcmp(a->prompt, "-");
    if (!a->prompt_file && !from_stdin) return 0;
    const char *flag = from_stdin ? "-p" : "-f", *name = from_stdin ? "-" : a->prompt_file;
    FILE *f = from_stdin ? stdin : fopen(a->prompt_file, "rb");
    struct stat sb;
    if (f && !from_stdin && (fstat(fileno(f), &sb) != 0 || S_ISDIR(sb.st_mode))) {
        fclose(f);
        errno = EISDIR;
        f = NULL;
    }
    if (!f) {
        fprintf(stderr, "dsv2: -f %s: %s\n", name, strerror(errno));
        return 1;
    }
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - 1 - len, f)) > 0;) {
        len += got;
        char *grown = len + 1 == cap ? realloc(buf, cap *= 2) : buf;
        if (!grown) free(buf);
        buf = grown;
    }
    const int failed = ferror(f);
    if (!from_stdin) fclose(f);
    if (!buf || failed) {
        fprintf(stderr, "dsv2: %s %s: %s\n", flag, name, buf ? strerror(errno) : "out of memory");
        free(buf);
        return 1;
    }
    buf[len] = '\0';
    if (len && buf[len - 1] == '\n') buf[--len] = '\0';
    if (len && buf[len - 1] == '\r') buf[--len] = '\0';
    a->prompt = a->prompt_buf = buf; /* freed by main() */
    if (memchr(buf, '\0', len)) {
        fprintf(stderr, "dsv2: %s %s: the text holds a NUL byte\n", flag, name);
        return 1;
    }
    if (!len) return usage_error(a, "%s %s: the prompt is empty", flag, name);
    return 0;
}

/* ---- tokens in, tokens out ------------------------------------------------------------------------ */

Tokenizer *load_tokenizer(const char *dir)
{
    Tokenizer *tok = tokenizer_load(dir);
    if (!tok) fprintf(stderr, "dsv2: %s\n", ds_last_error());
    return tok;
}

/* Encodes text; the id count, or −1 after printing the error. */
int encode_text(const Tokenizer *tok, const char *text, unsigned flags, int **ids)
{
    size_t len = strlen(text), cap = 3 * len + 8; /* a byte-level BPE never exceeds this */
    int32_t *buf = malloc(sizeof(int32_t) * cap);
    long n = buf ? tokenizer_encode(tok, text, len, flags, buf, cap) : -1;
    if (n < 0) {
        fprintf(stderr, "dsv2: %s\n", buf ? ds_last_error() : "out of memory");
        free(buf);
        return -1;
    }
    *ids = (int *)buf; /* int32_t and int are the same here */
    return (int)n;
}

/* The prompt's ids: --ids as given, or the text through the model's tokenizer (BOS as the tokenizer
 * files say, special tokens recognised — what transformers' tokenizer(text) does). tok may be NULL
 * for --ids. Returns the count (> 0) or −1 after one line. */
int prompt_ids(const Args *a, const Tokenizer *tok, int **ids)
{
    int n = a->ids ? parse_ids(a->ids, ids)
                   : encode_text(tok, a->prompt, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, ids);
    if (n == 0) {
        free(*ids);
        *ids = NULL;
        fprintf(stderr, "dsv2: the prompt has no tokens\n");
        return -1;
    }
    return n;
}

/* The prologue of generate, logits and route-stats: read_prompt(), the model's tokenizer for a text
 * prompt, prompt_ids(). Returns 0 with *ids (malloc'd) and *n set, or the exit status after one line.
 * The tokenizer (NULL for --ids) goes to *tok when tok is not NULL, else it is freed here. */
int read_prompt_ids(Args *a, Tokenizer **tok, int **ids, int *n)
{
    Tokenizer *t = NULL;
    int rc = read_prompt(a);
    if (rc) return rc;
    if (a->prompt && !(t = load_tokenizer(a->model_dir))) return 1;
    *ids = NULL;
    *n = prompt_ids(a, t, ids);
    if (*n > 0 && tok)
        *tok = t;
    else
        tokenizer_free(t);
    return *n > 0 ? 0 : 1;
}

/* 0, or −1 after one line naming the first id outside the vocabulary. */
int check_vocab(const int *ids, int n, int vocab)
{
    for (int t = 0; t < n; t++)
        if (ids[t] >= vocab) {
            fprintf(stderr, "dsv2: token id %d at position %d is outside the vocabulary [0, %d)\n", ids[t], t, vocab);
            return -1;
        }
    return 0;
}

/* Whatever went to stdout so far reached it: 0, or −1 after one line (a full disk, a closed pipe). */
int flush_stdout(void)
{
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
    fprintf(stderr, "dsv2: writing to standard output: %s\n", errno ? strerror(errno) : "write error");
    return -1;
}

double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + 1e-9 * (double)(now.tv_nsec - t0->tv_nsec);
}

/* Prints the ids of the text on one line, space-separated (BOS per the tokenizer files). */
static int cmd_tokenize(Args *a)
{
    int rc = read_prompt(a);
    if (rc) return rc;
    Tokenizer *tok = load_tokenizer(a->model_dir);
    int *ids = NULL, n = tok ? encode_text(tok, a->prompt, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, &ids) : -1;
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    if (n >= 0) printf("\n");
    free(ids);
    tokenizer_free(tok);
    return n < 0;
}

/* Prints the text of --ids (special tokens included, as written in the vocabulary). */
static int cmd_detokenize(Args *a)
{
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
/* info --plan DEVICES[:GB]: fast_plan_memory() for the options into *p and the device size into *gb; refused
 * before info prints anything. \return 0 or the exit status after one line. */
static int make_plan(const Args *a, const ModelConfig *c, FastPlan *p, double *gb, FastLayout *layout, bool *bf16)
{
    char *end;
    const long devices = strtol(a->plan, &end, 10);
    *gb = *end == ':' ? strtod(end + 1, &end) : 80.0;
    if (end == a->plan || *end || devices < 1 || devices > FAST_PLAN_MAX_DEVICES || !(*gb > 0))
        return usage_error(a, "--plan %s: expected DEVICES[:GB], 1..%d devices and GB > 0", a->plan,
                           FAST_PLAN_MAX_DEVICES);
    *layout = devices > 1 ? FAST_LAYOUT_EP : FAST_LAYOUT_SINGLE;
    if (a->layout && fast_layout_parse(a->layout, layout)) return usage_error(a, "%s", ds_last_error());
    if (strcmp(a->dtype, "f32") && strcmp(a->dtype, "bf16"))
        return usage_error(a, "--dtype %s: expected f32 or bf16", a->dtype);
    *bf16 = !(a->given & O_DTYPE) || !strcmp(a->dtype, "bf16");
    const int batch = a->given & O_BATCH ? (int)a->batch : 1;
    if (fast_plan_memory(p, c, (int)devices, *layout, (int)a->ctx, batch, *bf16, 0)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        return 1;
    }
    return 0;
}

/* The plan per device and whether each device fits gb. */
static void print_plan(const FastPlan *p, double gb, FastLayout layout, bool bf16)
{
    printf("plan         %s layout, %d device%s of %.1f GB, %d positions x %d sequence%s, %s\n",
           fast_layout_names[layout], p->devices, p->devices == 1 ? "" : "s", gb, p->context, p->batch,
           p->batch == 1 ? "" : "s", bf16 ? "bf16" : "f32");
    bool fits = true;
    for (int d = 0; d < p->devices; d++) {
        const FastPlanDevice *v = &p->dev[d];
        const bool ok = (double)v->total <= gb * 1e9;
        fits = fits && ok;
        printf("  device %d   weights %8.3f GB  cache %8.3f GB  scratch %8.3f GB  staging %6.3f GB  "
               "total %8.3f GB  %s\n",
               d, v->weights / 1e9, v->cache / 1e9, v->scratch / 1e9, v->staging / 1e9, v->total / 1e9,
               ok ? "fits" : "does not fit");
    }
    printf("  %s\n", fits ? "fits on every device" : "does not fit");
}

/* Parameter counts from the config (docs/semantics.md §2's shapes), and the paper's Table 1 from the dims. */
static int cmd_info(Args *a)
{
    /* everything below follows from config.json; the weights, if present, are only counted */
    char path[4096];
    ModelConfig cfg;
    if (!a->plan && (a->given & (O_CTX | O_BATCH | O_LAYOUT | O_DTYPE)))
        return usage_error(a, "--ctx, --batch, --layout and --dtype go with --plan");
    if (access(a->model_dir, F_OK) != 0) {
        fprintf(stderr, "dsv2: %s: no such model directory\n", a->model_dir);
        return 1;
    }
    snprintf(path, sizeof path, "%s/config.json", a->model_dir);
    if (config_load(path, &cfg)) {
        fprintf(stderr, "dsv2: %s\n", ds_last_error());
        return 1;
    }
    const ModelConfig *c = &cfg;
    if (config_require_mla(c, "dsv2 info (its counts are MLA's)")) {
        fprintf(stderr, "dsv2: %s: %s\n", path, ds_last_error());
        return 1;
    }
    FastPlan plan;
    FastLayout layout = FAST_LAYOUT_SINGLE;
    double gb = 0;
    bool bf16 = true;
    const int plan_rc = a->plan ? make_plan(a, c, &plan, &gb, &layout, &bf16) : 0;
    if (plan_rc) return plan_rc;
    const long long D = c->hidden_size, nh = c->num_attention_heads, L = c->num_hidden_layers;
    const long long dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    const long long dc = c->kv_lora_rank, dcq = c->q_lora_rank, E = c->n_routed_experts;
    const long long K = c->num_experts_per_tok, Ie = c->moe_intermediate_size;
    long long attn = (dcq ? dcq * D + dcq + nh * (dn + dr) * dcq : nh * (dn + dr) * D) + (dc + dr) * D + dc +
                     nh * (dn + dv) * dc + D * nh * dv + 2 * D;
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
    printf("layers       %lld: %lld dense, %lld MoE (%lld routed experts, %lld per token, %d shared)\n", L, dense, moe,
           E, K, c->n_shared_experts);
    const long long embed = (long long)c->vocab_size * D; /* a lookup, not a product */
    printf("parameters   %lld total, %lld active per token (%.1f%%); %lld without the embedding "
           "lookup, as the paper counts\n",
           total, active, 100.0 * (double)active / (double)total, active - embed);
    printf("attention    MLA: %lld heads, d_c %lld, d_c' %lld, d_n %lld, d_r %lld, d_v %lld\n", nh, dc, dcq, dn, dr,
           dv);
    /* KV cache per token, in elements, at these dims (paper Table 1, d_h = d_n) */
    const long long dh = dn, groups = nh < 8 ? nh : 8;
    printf("KV cache per token (all %lld layers; bf16 bytes = 2 x elements):\n", L);
    printf("  MHA          2 n_h d_h l  = %10lld elements\n", 2 * nh * dh * L);
    printf("  GQA (%lld groups) 2 n_g d_h l = %10lld elements\n", groups, 2 * groups * dh * L);
    printf("  MQA          2 d_h l      = %10lld elements\n", 2 * dh * L);
    printf("  MLA          (d_c + d_r) l = %10lld elements = %zu bytes in bf16\n", (dc + dr) * L,
           mla_cache_bytes_per_token(c, 2));
    if (a->plan) print_plan(&plan, gb, layout, bf16);
    return 0;
}

/* The prompt's routing statistics per MoE layer (dsv2_route_stats.c). */
static int cmd_route_stats(Args *a)
{
    int *ids, n, rc = read_prompt_ids(a, NULL, &ids, &n);
    if (rc) return rc;
    const RouteStatsArgs r = { a->model_dir, ids, n, (int)a->ctx, a->devices, a->limit, a->alpha, a->plot };
    rc = route_stats_run(&r);
    free(ids);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "dsv2: no command (see dsv2 --help)\n");
        return 2;
    }
    const bool help = !strcmp(argv[1], "help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help");
    const char *name = help && argc > 2 ? argv[2] : argv[1];
    if (help && argc == 2) {
        fputs(USAGE, stdout);
        return flush_stdout() ? 1 : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++) {
        const Command *c = &COMMANDS[i];
        if (strcmp(name, c->name)) continue;
        Args a;
        int rc = help ? -1 : parse_args(argc, argv, c, &a);
        if (rc == -1) {
            fputs(c->help, stdout);
            return flush_stdout() ? 1 : 0;
        }
        if (rc == 0) rc = c->run(&a);
        free(a.prompt_buf);
        return rc == 0 && flush_stdout() ? 1 : rc;
    }
    fprintf(stderr, "dsv2: unknown command '%s' (see dsv2 --help)\n", name);
    return 2;
}
