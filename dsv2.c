/**
 * \file dsv2.c
 * \brief The command-line program: generate text, dump logits, describe a checkpoint.
 *
 *     dsv2 generate -m DIR (--ids 1,2,3 | -p TEXT) [-n N] [-t T] [--top-p P] [--seed S]
 *     dsv2 logits   -m DIR --ids 1,2,3 -o FILE     float32 little-endian [T, vocab]
 *     dsv2 info     -m DIR                        sizes, parameters, KV cache per token
 *
 * Like llama2.c's run.c this file only wires the pieces together: the
 * model lives in ref/, and every failure is one line on stderr naming what
 * was wrong, with exit status 1 (2 for a malformed command line).
 */
#include "error.h"
#include "mla.h"
#include "model.h"
#include "sample.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    const char *backend;    /* --backend */
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

static int parse_args(int argc, char **argv, Args *a)
{
    *a = (Args){.n_tokens = 100, .temperature = 0, .top_p = 1, .seed = 0, .backend = "ref"};
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        static const char *const with_value[] = {"-m", "--ids", "-p", "-o", "-n", "-t",
                                                 "--top-p", "--seed", "--backend"};
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
        else if (!strcmp(f, "-n")) { if (parse_long(f, v, 0, INT_MAX, &a->n_tokens)) return 2; }
        else if (!strcmp(f, "-t")) { if (parse_double(f, v, 0, 100, &a->temperature)) return 2; }
        else if (!strcmp(f, "--top-p")) { if (parse_double(f, v, 0, 1, &a->top_p)) return 2; }
        else if (!strcmp(f, "--seed")) {
            if (parse_long(f, v, 0, LONG_MAX, &n)) return 2;
            a->seed = (unsigned long long)n;
        }
    }
    if (!a->model_dir) return usage_error("'%s' needs -m DIR (a model directory)%s", argv[1], "");
    if (strcmp(a->backend, "ref"))
        return usage_error("--backend %s: this build has only the 'ref' backend%s", a->backend, "");
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

/* The prompt's ids from --ids; -p (text) needs the tokenizer. */
static int prompt_ids(const Args *a, int **ids)
{
    if (a->ids && a->prompt) { fprintf(stderr, "dsv2: give --ids or -p, not both\n"); return -1; }
    if (!a->ids) {
        fprintf(stderr, "dsv2: %s\n", a->prompt ? "-p TEXT needs a tokenizer; use --ids"
                                                : "no prompt: give --ids 1,2,3");
        return -1;
    }
    int n = parse_ids(a->ids, ids);
    if (n == 0) { free(*ids); fprintf(stderr, "dsv2: --ids: the prompt is empty\n"); return -1; }
    return n;
}

static int open_model(Model *m, const char *dir)
{
    if (model_open(m, dir, NULL) == 0) return 0;
    fprintf(stderr, "dsv2: %s\n", ds_last_error());
    return -1;
}

/* ---- subcommands -------------------------------------------------------------------------- */

static int cmd_generate(const Args *a)
{
    int *ids = NULL, n = prompt_ids(a, &ids), rc = 1;
    if (n < 0) return 1;
    Model m;
    Sampler s = {0};
    if (open_model(&m, a->model_dir)) { free(ids); return 1; }
    const int V = m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * V);
    if (!logits || sampler_init(&s, V, (float)a->temperature, (float)a->top_p, a->seed)) {
        fprintf(stderr, "dsv2: out of memory\n");
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (model_forward(&m, ids, n, logits, false)) { fprintf(stderr, "dsv2: %s\n", ds_last_error()); goto out; }
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    long made = 0;
    for (; made < a->n_tokens; made++) {
        int next = sample_next(&s, logits);
        printf(",%d", next);
        fflush(stdout);
        if (next == m.cfg->eos_token_id) { made++; break; }
        if (made + 1 < a->n_tokens && model_forward(&m, &next, 1, logits, false)) {
            fprintf(stderr, "\ndsv2: %s\n", ds_last_error());
            goto out;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("\n");
    fprintf(stderr, "dsv2: %d prompt + %ld generated tokens in %.2f s\n", n, made, secs);
    rc = 0;
out:
    sampler_free(&s);
    free(logits);
    free(ids);
    model_close(&m);
    return rc;
}

/* Writes logits for every prompt position to a temporary file, renamed into place on success. */
static int cmd_logits(const Args *a)
{
    if (!a->output) { fprintf(stderr, "dsv2: logits needs -o FILE\n"); return 2; }
    int *ids = NULL, n = prompt_ids(a, &ids), rc = 1;
    if (n < 0) return 1;
    Model m;
    if (open_model(&m, a->model_dir)) { free(ids); return 1; }
    const size_t count = (size_t)n * m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * count);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", a->output);
    FILE *f = NULL;
    if (!logits) { fprintf(stderr, "dsv2: out of memory for %zu logits\n", count); goto out; }
    if (model_forward(&m, ids, n, logits, true)) { fprintf(stderr, "dsv2: %s\n", ds_last_error()); goto out; }
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
    model_close(&m);
    return rc;
}

/* Parameter counts from the config (SPEC §2's shapes), and the paper's Table 1 from the dims. */
static int cmd_info(const Args *a)
{
    Checkpoint ck;
    if (checkpoint_open(a->model_dir, &ck)) { fprintf(stderr, "dsv2: %s\n", ds_last_error()); return 1; }
    const ModelConfig *c = &ck.cfg;
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
    size_t tensors = ck.n_entries;
    printf("model        %s (%zu tensors in %d file%s)\n", a->model_dir, tensors, ck.n_files,
           ck.n_files == 1 ? "" : "s");
    printf("layers       %lld: %lld dense, %lld MoE (%lld routed experts, %lld per token, %d shared)\n",
           L, dense, moe, E, K, c->n_shared_experts);
    printf("parameters   %lld total, %lld active per token (%.1f%%)\n", total, active,
           100.0 * (double)active / (double)total);
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
    checkpoint_close(&ck);
    return 0;
}

static void usage(void)
{
    puts("usage:\n"
         "  dsv2 generate -m DIR --ids 1,2,3 [-n N] [-t TEMP] [--top-p P] [--seed S]\n"
         "  dsv2 logits   -m DIR --ids 1,2,3 -o FILE   (float32 little-endian [T, vocab])\n"
         "  dsv2 info     -m DIR\n"
         "Defaults: -n 100, -t 0 (greedy), --top-p 1, --seed 0, --backend ref.");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    static const struct { const char *name; int (*run)(const Args *); } commands[] = {
        {"generate", cmd_generate}, {"logits", cmd_logits}, {"info", cmd_info},
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
