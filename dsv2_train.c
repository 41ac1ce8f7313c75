/**
 * \file dsv2_train.c
 * \brief dsv2 train: trains a DeepSeek-V2 from a config on a text file, in float32 on one core, and
 * writes a checkpoint directory that every other command loads.
 *
 * The pieces live in ref/: train_data (tokenize, pack, shuffle), train_model (loss and gradients),
 * train_optim (AdamW, warmup + cosine), train_save (safetensors). This file wires them: a fresh
 * start writes randomly initialised weights (normal with the config's initializer_range, norms at
 * 1) as DIR/model.safetensors and opens them like any checkpoint; each step accumulates the mean
 * loss of --batch windows and takes one AdamW step. DIR/optimizer.bin keeps what --resume needs
 * to continue bit-identically: the step, the moments m and v, the windows consumed, and the run's
 * settings (a resumed run with different settings is refused).
 */
#include "dsv2.h"
#include "error.h"
#include "model.h"
#include "router.h"
#include "train_data.h"
#include "train_model.h"
#include "train_optim.h"
#include "train_save.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char TRAIN_HELP[] =
    "usage: dsv2 train -c CONFIG.json --data FILE -o DIR [options]\n"
    "Trains the model CONFIG.json describes on the text in FILE (float32, one core) and writes a\n"
    "checkpoint directory DIR (config.json, model.safetensors, the tokenizer files) that generate,\n"
    "chat and logits load, DIR/optimizer.bin for --resume, and DIR/train_log.jsonl (one JSON line a\n"
    "step: loss, lr, gradient norm, the three balance losses, routed-expert load per MoE layer).\n"
    "Progress goes to stderr. AdamW (beta 0.9/0.95, weight decay 0.1), clipping at norm 1, linear\n"
    "warmup then cosine decay to lr/10.\n"
    "  -c CONFIG.json    the architecture (DeepSeek-V2's config.json layout; \"attention_type\":\n"
    "                    \"mha\", \"gqa\" or \"mqa\" trains a standard-attention baseline, which\n"
    "                    the inference commands refuse)\n"
    "  --data FILE       the training text (tokenized, packed into windows of --seq + 1 tokens)\n"
    "  -o DIR            the checkpoint directory (created; a fresh run replaces its files)\n"
    "  --steps N         optimizer steps (default 100)\n"
    "  --batch B         windows per step (default 8)\n"
    "  --seq T           tokens per window (default 64; at most max_position_embeddings)\n"
    "  --lr LR           peak learning rate (default 1e-3)\n"
    "  --warmup N        warmup steps (default 10)\n"
    "  --alpha A1,A2,A3  balance-loss weights alpha1..3 (default 0.003,0.05,0.02; 0,0,0: none)\n"
    "  --capacity CF     token dropping's capacity factor per device (default 0: no dropping)\n"
    "  --devices D       devices = expert groups (sets n_group in DIR/config.json)\n"
    "  --device-limit M  route each token to experts on at most M devices (sets topk_group and\n"
    "                    topk_method group_limited_greedy in DIR/config.json)\n"
    "  --seed S          seed of the initial weights and of the window order (default 0)\n"
    "  --eval-every K    every K steps: held-out loss (every 10th window is held out) and a save\n"
    "                    (default 0: no held-out windows, one save at the end)\n"
    "  --stop-after N    save and stop after step N (--resume continues to --steps)\n"
    "  --resume          continue the run saved in DIR (same options as the run that wrote it)\n"
    "  --tokenizer DIR   where tokenizer.json and tokenizer_config.json are (default models/tiny-kjv)\n";

enum { HOLDOUT = 10, EVAL_WINDOWS = 8 }; /* window i is held out when i % 10 == 9 */

static const char OPT_MAGIC[8] = { 'D', 'S', 'V', '2', 'O', 'P', 'T', '1' };

/* What a resumed run must agree on, in optimizer.bin's order. */
typedef struct {
    double steps, batch, seq, lr, warmup, alpha[3], capacity, seed, eval_every;
} RunSettings;

static const char *const SETTING_NAMES[] = { "--steps", "--batch", "--seq",      "--lr",   "--warmup",    "--alpha",
                                             "--alpha", "--alpha", "--capacity", "--seed", "--eval-every" };

/* Everything one run holds. */
typedef struct {
    const Args *a;
    char path[4096]; /* scratch for DIR/name */
    RunSettings set;
    TrainModel tm;
    AdamW opt;
    TrainData data;
    Tokenizer *tok;
    uint64_t consumed; /* windows taken from data, held-out ones included */
    long *load;        /* [layers · E] this step's kept pairs */
    FILE *log;
} Run;

static const char *in_dir(Run *r, const char *name)
{
    snprintf(r->path, sizeof r->path, "%s/%s", r->a->output, name);
    return r->path;
}

static int fail(const char *what)
{
    fprintf(stderr, "dsv2: %s\n", what ? what : ds_last_error());
    return 1;
}

/* ---- the checkpoint directory: config, tokenizer files, initial weights --------------------- */

/* CONFIG.json with --devices / --device-limit applied, as the text DIR/config.json holds. */
static char *config_text(const Args *a)
{
    json_error_t err;
    json_t *j = json_load_file(a->config, 0, &err);
    if (!j) return NULL; /* config_load() read it a moment ago */
    if (a->given & O_DEVICES) json_object_set_new(j, "n_group", json_integer(a->devices));
    if (a->given & O_LIMIT) {
        json_object_set_new(j, "topk_group", json_integer(a->limit));
        json_object_set_new(j, "topk_method", json_string("group_limited_greedy"));
    }
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    return text;
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, n, f) == n;
    if (f) ok = fclose(f) == 0 && ok;
    if (!ok) fprintf(stderr, "dsv2: %s: cannot write: %s\n", path, strerror(errno));
    return ok ? 0 : 1;
}

static int copy_file(const char *from, const char *to)
{
    size_t len;
    FILE *f = fopen(from, "rb");
    if (!f) {
        fprintf(stderr, "dsv2: %s: %s\n", from, strerror(errno));
        return 1;
    }
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (len = (size_t)ftell(f), fseek(f, 0, SEEK_SET) == 0)) buf = malloc(len + 1);
    const int ok = buf && fread(buf, 1, len, f) == len;
    fclose(f);
    const int rc = ok ? write_file(to, buf, len) : (fprintf(stderr, "dsv2: %s: cannot read\n", from), 1);
    free(buf);
    return rc;
}

/* One tensor of the checkpoint: its name and shape (cols 0: a vector, filled with ones). */
typedef void (*TensorFn)(void *ctx, const char *name, int rows, int cols);

static void each_swiglu(TensorFn fn, void *ctx, const char *prefix, int I, int D)
{
    char name[320];
    snprintf(name, sizeof name, "%s.gate_proj.weight", prefix);
    fn(ctx, name, I, D);
    snprintf(name, sizeof name, "%s.up_proj.weight", prefix);
    fn(ctx, name, I, D);
    snprintf(name, sizeof name, "%s.down_proj.weight", prefix);
    fn(ctx, name, D, I);
}

/* Every tensor a checkpoint of c holds (the names and shapes model_open() binds). */
static void each_tensor(const ModelConfig *c, TensorFn fn, void *ctx)
{
    const int D = c->hidden_size, nh = c->num_attention_heads, dr = c->qk_rope_head_dim;
    const int dq = c->qk_nope_head_dim + dr, dc = c->kv_lora_rank, Ie = c->moe_intermediate_size;
    char name[256], p[128];
    fn(ctx, "model.embed_tokens.weight", c->vocab_size, D);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        snprintf(p, sizeof p, "model.layers.%d", l);
#define T2(suffix, r, k) (snprintf(name, sizeof name, "%s.%s", p, suffix), fn(ctx, name, r, k))
        T2("input_layernorm.weight", D, 0);
        if (c->attention_type != ATTN_MLA) { /* standard attention: n_g key/value heads */
            T2("self_attn.q_proj.weight", nh * dq, D);
            T2("self_attn.k_proj.weight", c->num_key_value_heads * dq, D);
            T2("self_attn.v_proj.weight", c->num_key_value_heads * c->v_head_dim, D);
            T2("self_attn.o_proj.weight", D, nh * c->v_head_dim);
        } else if (c->q_lora_rank) {
            T2("self_attn.q_a_proj.weight", c->q_lora_rank, D);
            T2("self_attn.q_a_layernorm.weight", c->q_lora_rank, 0);
            T2("self_attn.q_b_proj.weight", nh * dq, c->q_lora_rank);
        } else {
            T2("self_attn.q_proj.weight", nh * dq, D);
        }
        if (c->attention_type == ATTN_MLA) {
            T2("self_attn.kv_a_proj_with_mqa.weight", dc + dr, D);
            T2("self_attn.kv_a_layernorm.weight", dc, 0);
            T2("self_attn.kv_b_proj.weight", nh * (c->qk_nope_head_dim + c->v_head_dim), dc);
            T2("self_attn.o_proj.weight", D, nh * c->v_head_dim);
        }
        T2("post_attention_layernorm.weight", D, 0);
        if (!config_layer_is_moe(c, l)) {
            snprintf(name, sizeof name, "%s.mlp", p);
            each_swiglu(fn, ctx, name, c->intermediate_size, D);
            continue;
        }
        T2("mlp.gate.weight", c->n_routed_experts, D);
#undef T2
        for (int e = 0; e < c->n_routed_experts; e++) {
            snprintf(name, sizeof name, "%s.mlp.experts.%d", p, e);
            each_swiglu(fn, ctx, name, Ie, D);
        }
        snprintf(name, sizeof name, "%s.mlp.shared_experts", p);
        if (c->n_shared_experts > 0) each_swiglu(fn, ctx, name, c->n_shared_experts * Ie, D);
    }
    fn(ctx, "model.norm.weight", D, 0);
    fn(ctx, "lm_head.weight", c->vocab_size, D);
}

/* Writes the initial weights as a safetensors file, streaming: first the header, then the data. */
typedef struct {
    json_t *header;
    size_t offset;
    FILE *f;      /* NULL while the header is built */
    uint64_t rng; /* SplitMix64 state */
    double std;   /* initializer_range */
    int ok;
} InitWriter;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A standard normal draw (Box–Muller on two 53-bit uniforms in (0, 1]). */
static double normal(uint64_t *s)
{
    const double u1 = ((splitmix64(s) >> 11) + 1.0) / 9007199254740992.0;
    const double u2 = ((splitmix64(s) >> 11) + 1.0) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static void init_tensor(void *ctx, const char *name, int rows, int cols)
{
    InitWriter *w = ctx;
    const size_t n = (size_t)rows * (cols ? cols : 1);
    if (!w->f) {
        json_t *shape = cols ? json_pack("[ii]", rows, cols) : json_pack("[i]", rows);
        json_object_set_new(w->header, name,
                            json_pack("{s:s, s:o, s:[II]}", "dtype", "F32", "shape", shape, "data_offsets",
                                      (json_int_t)w->offset, (json_int_t)(w->offset + 4 * n)));
        w->offset += 4 * n;
        return;
    }
    for (size_t i = 0; i < n && w->ok; i++) { /* matrices ~ N(0, std²), norm weights 1 */
        const float v = cols ? (float)(w->std * normal(&w->rng)) : 1.0f;
        w->ok = fwrite(&v, sizeof v, 1, w->f) == 1;
    }
}

static int write_initial_weights(Run *r, const ModelConfig *c, double std)
{
    InitWriter w = { json_object(), 0, NULL, r->a->seed ^ 0x5EEDull, std, 1 };
    each_tensor(c, init_tensor, &w);
    char *text = json_dumps(w.header, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(w.header);
    const char *path = in_dir(r, "model.safetensors");
    w.f = text ? fopen(path, "wb") : NULL;
    if (!w.f) {
        free(text);
        fprintf(stderr, "dsv2: %s: cannot create: %s\n", path, strerror(errno));
        return 1;
    }
    size_t len = strlen(text);
    const size_t padded = (len + 7) / 8 * 8;
    unsigned char n8[8];
    for (int i = 0; i < 8; i++) n8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    w.ok = fwrite(n8, 1, 8, w.f) == 8 && fwrite(text, 1, len, w.f) == len;
    for (; w.ok && len < padded; len++) w.ok = fputc(' ', w.f) != EOF;
    free(text);
    each_tensor(c, init_tensor, &w);
    w.ok = fclose(w.f) == 0 && w.ok;
    if (!w.ok) fprintf(stderr, "dsv2: %s: write failed\n", path);
    return !w.ok;
}

/* ---- optimizer.bin: step, windows consumed, settings, m, v ---------------------------------- */

static int save_state(Run *r)
{
    if (train_model_save(&r->tm, in_dir(r, "model.safetensors"))) return fail(NULL);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", in_dir(r, "optimizer.bin"));
    FILE *f = fopen(tmp, "wb");
    const uint64_t n = r->opt.n;
    const int32_t step = r->opt.step;
    int ok = f && fwrite(OPT_MAGIC, 1, 8, f) == 8 && fwrite(&n, sizeof n, 1, f) == 1 &&
             fwrite(&step, sizeof step, 1, f) == 1 && fwrite(&r->consumed, sizeof r->consumed, 1, f) == 1 &&
             fwrite(&r->set, sizeof r->set, 1, f) == 1 && fwrite(r->opt.m, sizeof(float), n, f) == n &&
             fwrite(r->opt.v, sizeof(float), n, f) == n;
    if (f) ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, r->path) != 0) {
        fprintf(stderr, "dsv2: %s: write failed: %s\n", r->path, strerror(errno));
        remove(tmp);
        return 1;
    }
    return 0;
}

static int load_state(Run *r)
{
    const char *path = in_dir(r, "optimizer.bin");
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "dsv2: --resume: %s: %s\n", path, strerror(errno));
        return 1;
    }
    char magic[8];
    uint64_t n = 0;
    int32_t step = 0;
    RunSettings was;
    int ok = fread(magic, 1, 8, f) == 8 && !memcmp(magic, OPT_MAGIC, 8) && fread(&n, sizeof n, 1, f) == 1 &&
             n == r->opt.n && fread(&step, sizeof step, 1, f) == 1 &&
             fread(&r->consumed, sizeof r->consumed, 1, f) == 1 && fread(&was, sizeof was, 1, f) == 1 &&
             fread(r->opt.m, sizeof(float), n, f) == n && fread(r->opt.v, sizeof(float), n, f) == n && fgetc(f) == EOF;
    fclose(f);
    if (!ok) {
        fprintf(stderr, "dsv2: --resume: %s: not the optimizer state of this model\n", path);
        return 1;
    }
    const double *w = &was.steps, *now = &r->set.steps;
    for (size_t i = 0; i < sizeof was / sizeof(double); i++)
        if (w[i] != now[i]) {
            fprintf(stderr, "dsv2: --resume: %s was written with %s %g, not %g\n", path, SETTING_NAMES[i], w[i],
                    now[i]);
            return 1;
        }
    r->opt.step = step;
    return 0;
}

/* ---- the loop ----------------------------------------------------------------------------------- */

/* The next training window (held-out ones skipped when there is an evaluation). */
static const int32_t *next_window(Run *r)
{
    for (;;) {
        const int32_t *w = train_data_next(&r->data);
        r->consumed++;
        const size_t i = (size_t)(w - r->data.ids) / (size_t)r->data.seq_len;
        if (!r->a->eval_every || i % HOLDOUT != HOLDOUT - 1) return w;
    }
}

/* Mean cross-entropy over the first EVAL_WINDOWS held-out windows (their gradients discarded). */
static int held_out_loss(Run *r, double *ce)
{
    const int T = r->data.seq_len;
    int n = 0;
    double sum = 0;
    r->tm.load = NULL;
    for (size_t i = HOLDOUT - 1; i < r->data.n_seqs && n < EVAL_WINDOWS; i += HOLDOUT, n++) {
        const int32_t *w = r->data.ids + i * (size_t)T;
        TrainLoss L;
        if (train_accumulate(&r->tm, w, w + 1, T, 0.0, &L)) return fail(NULL);
        sum += L.ce;
    }
    r->tm.load = r->load;
    *ce = sum / n;
    return 0;
}

static void log_step(Run *r, int step, double lr, double norm, const TrainLoss *m, double eval)
{
    const ModelConfig *c = &r->tm.cfg;
    const int E = c->n_routed_experts;
    fprintf(r->log,
            "{\"step\":%d,\"loss\":%.9g,\"ce\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
            "\"exp_bal\":%.9g,\"dev_bal\":%.9g,\"comm_bal\":%.9g,\"dropped\":%d",
            step, m->loss, m->ce, lr, norm, m->exp_bal, m->dev_bal, m->comm_bal, m->dropped);
    if (eval >= 0) fprintf(r->log, ",\"eval_loss\":%.9g", eval);
    fprintf(r->log, ",\"load\":{");
    int first = 1;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (!config_layer_is_moe(c, l)) continue;
        fprintf(r->log, "%s\"%d\":[", first ? "" : ",", l);
        for (int e = 0; e < E; e++) fprintf(r->log, e ? ",%ld" : "%ld", r->load[(size_t)l * E + e]);
        fprintf(r->log, "]");
        first = 0;
    }
    fprintf(r->log, "}}\n");
    fflush(r->log);
}

static int train_loop(Run *r)
{
    const Args *a = r->a;
    const int B = (int)a->batch, T = (int)a->seq, E = r->tm.cfg.n_routed_experts;
    const int last = a->stop_after && a->stop_after < a->steps ? (int)a->stop_after : (int)a->steps;
    const size_t n_load = (size_t)r->tm.cfg.num_hidden_layers * (E ? E : 1);
    const int start = r->opt.step;
    int saved = start;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int step = start + 1; step <= last; step++) {
        memset(r->tm.grads, 0, sizeof(float) * r->tm.n_params);
        memset(r->load, 0, sizeof(long) * n_load);
        TrainLoss mean = { 0 };
        for (int b = 0; b < B; b++) {
            const int32_t *w = next_window(r);
            TrainLoss L;
            if (train_accumulate(&r->tm, w, w + 1, T, 1.0 / B, &L)) return fail(NULL);
            mean.loss += L.loss / B;
            mean.ce += L.ce / B;
            mean.exp_bal += L.exp_bal / B;
            mean.dev_bal += L.dev_bal / B;
            mean.comm_bal += L.comm_bal / B;
            mean.dropped += L.dropped;
        }
        const double lr = lr_at(&r->opt.cfg, step);
        if (!isfinite(mean.loss)) {
            fprintf(stderr, "dsv2: step %d: the loss is not finite; stopped (%s keeps the checkpoint of step %d)\n",
                    step, a->output, saved);
            return 1;
        }
        const double norm = adamw_step(&r->opt, r->tm.params, r->tm.grads);
        const int eval_now = a->eval_every && (step % a->eval_every == 0 || step == last);
        double eval = -1;
        if (eval_now && held_out_loss(r, &eval)) return 1;
        log_step(r, step, lr, norm, &mean, eval);
        const double secs = seconds_since(&t0), done = step - start, tps = done * B * T / secs;
        const double eta = secs / done * (last - step);
        fprintf(stderr, "step %d/%ld  loss %.4f (ce %.4f)  lr %.3g  |g| %.3g", step, a->steps, mean.loss, mean.ce, lr,
                norm);
        if (eval >= 0) fprintf(stderr, "  held-out %.4f", eval);
        fprintf(stderr, "  %.0f tok/s  ETA %dm%02ds\n", tps, (int)eta / 60, (int)eta % 60);
        if (eval_now || step == last) {
            if (save_state(r)) return 1;
            saved = step;
        }
    }
    fprintf(stderr, "dsv2 train: %s holds step %d of %ld\n", a->output, saved, a->steps);
    return 0;
}

/* ---- setup ---------------------------------------------------------------------------------------- */

/* Checks the data file and CONFIG against what the trainer implements, before anything is written. */
static int check_inputs(Run *r, ModelConfig *c, double *std)
{
    const Args *a = r->a;
    struct stat sb;
    if (stat(a->data, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fprintf(stderr, "dsv2: --data %s: %s\n", a->data,
                errno && !S_ISDIR(sb.st_mode) ? strerror(errno) : "not a regular file");
        return 1;
    }
    if (sb.st_size == 0) {
        fprintf(stderr, "dsv2: --data %s: the file is empty\n", a->data);
        return 1;
    }
    if (config_load(a->config, c)) return fail(NULL);
    if (c->topk_method == TOPK_NOAUX_TC) {
        fprintf(stderr, "dsv2: %s: topk_method noaux_tc: its bias update is not part of dsv2 train\n", a->config);
        return 1;
    }
    if (a->seq > c->max_position_embeddings) {
        fprintf(stderr, "dsv2: --seq %ld is longer than the context (max_position_embeddings %d in %s)\n", a->seq,
                c->max_position_embeddings, a->config);
        return 1;
    }
    const int E = c->n_routed_experts, D = a->given & O_DEVICES ? (int)a->devices : c->n_group;
    if ((a->given & O_DEVICES) && (E == 0 || E % D)) {
        fprintf(stderr, "dsv2: --devices %d does not divide n_routed_experts %d\n", D, E);
        return 1;
    }
    if ((a->given & O_LIMIT) && a->limit > D) {
        fprintf(stderr, "dsv2: --device-limit %ld exceeds the %d devices\n", a->limit, D);
        return 1;
    }
    json_error_t err;
    json_t *j = json_load_file(a->config, 0, &err), *range = j ? json_object_get(j, "initializer_range") : NULL;
    *std = json_is_number(range) ? json_number_value(range) : 0.02;
    json_decref(j);
    if (a->given & O_DEVICES) c->n_group = D;
    return 0;
}

/* Tokenizes the data (the tokenizer of --tokenizer, or of DIR for --resume) and packs it. */
static int open_data(Run *r)
{
    const Args *a = r->a;
    if (!(r->tok = tokenizer_load(a->given & O_RESUME ? a->output : a->tokenizer))) return fail(NULL);
    if (train_data_open(&r->data, a->data, r->tok, (int)a->seq, a->seed)) return fail(NULL);
    if (a->eval_every && r->data.n_seqs < HOLDOUT) {
        fprintf(stderr,
                "dsv2: --eval-every: %s has %zu windows of %ld + 1 tokens, fewer than the %d needed to hold one out\n",
                a->data, r->data.n_seqs, a->seq, HOLDOUT);
        return 1;
    }
    return 0;
}

/* Writes DIR's config and tokenizer files (a fresh run) or checks the config (--resume). */
static int write_dir(Run *r)
{
    const Args *a = r->a;
    char *text = config_text(a);
    if (!text) return fail("out of memory for the config");
    int rc = 0;
    const char *cfg_path = in_dir(r, "config.json");
    if (a->given & O_RESUME) {
        size_t len;
        char *have = NULL;
        FILE *f = fopen(cfg_path, "rb");
        if (f && fseek(f, 0, SEEK_END) == 0 && (len = (size_t)ftell(f), fseek(f, 0, SEEK_SET) == 0) &&
            (have = calloc(len + 1, 1)) && fread(have, 1, len, f) != len)
            have[0] = 0;
        if (f) fclose(f);
        if (!have || strcmp(have, text)) {
            fprintf(stderr, "dsv2: --resume: %s %s\n", cfg_path,
                    have ? "differs from the config (with --devices/--device-limit) of this run" : "cannot be read");
            rc = 1;
        }
        free(have);
    } else if (mkdir(a->output, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "dsv2: -o %s: %s\n", a->output, strerror(errno));
        rc = 1;
    } else {
        char from[4200];
        rc = write_file(cfg_path, text, strlen(text));
        snprintf(from, sizeof from, "%s/tokenizer.json", a->tokenizer);
        rc = rc || copy_file(from, in_dir(r, "tokenizer.json"));
        snprintf(from, sizeof from, "%s/tokenizer_config.json", a->tokenizer);
        rc = rc || copy_file(from, in_dir(r, "tokenizer_config.json"));
        remove(in_dir(r, "optimizer.bin"));
        remove(in_dir(r, "train_log.jsonl"));
    }
    free(text);
    return rc;
}

int cmd_train(Args *a)
{
    Run r = { .a = a };
    r.set = (RunSettings){ (double)a->steps,     (double)a->batch,
                           (double)a->seq,       a->lr,
                           (double)a->warmup,    { a->alpha[0], a->alpha[1], a->alpha[2] },
                           a->capacity,          (double)a->seed,
                           (double)a->eval_every };
    ModelConfig c;
    double std;
    if (check_inputs(&r, &c, &std)) return 1;
    const bool resume = a->given & O_RESUME;
    Model m;
    const ModelOptions mo = { .max_context = (int)a->seq, .for_training = true };
    if (open_data(&r) || write_dir(&r) || (!resume && write_initial_weights(&r, &c, std)) ||
        (model_open(&m, a->output, &mo) && fail(NULL))) {
        train_data_close(&r.data);
        tokenizer_free(r.tok);
        return 1;
    }
    const TrainOptions topt = { a->alpha[0], a->alpha[1], a->alpha[2], a->capacity };
    const AdamWConfig acfg = { .lr = a->lr,
                               .min_lr = a->lr / 10,
                               .beta1 = 0.9,
                               .beta2 = 0.95,
                               .eps = 1e-8,
                               .weight_decay = 0.1,
                               .clip_norm = 1.0,
                               .warmup_steps = (int)a->warmup,
                               .total_steps = (int)a->steps,
                               .schedule = LR_COSINE };
    int rc = train_model_init(&r.tm, &m, &topt) ? fail(NULL) : 0;
    model_close(&m);
    if (rc) {
        train_data_close(&r.data);
        tokenizer_free(r.tok);
        return 1;
    }
    const size_t n_load = (size_t)c.num_hidden_layers * (c.n_routed_experts ? c.n_routed_experts : 1);
    r.load = calloc(n_load, sizeof(long));
    r.tm.load = r.load;
    rc = !r.load ? fail("out of memory") : adamw_init(&r.opt, &acfg, r.tm.n_params) ? fail(NULL) : 0;
    if (rc == 0 && resume) {
        rc = load_state(&r);
        for (uint64_t i = 0; rc == 0 && i < r.consumed; i++) train_data_next(&r.data); /* same position */
    }
    if (rc == 0 && !(r.log = fopen(in_dir(&r, "train_log.jsonl"), "a")))
        rc = (fprintf(stderr, "dsv2: %s: %s\n", r.path, strerror(errno)), 1);
    if (rc == 0) {
        fprintf(stderr, "dsv2 train: %zu parameters, %zu windows of %ld tokens in %s, %s step %d\n", r.tm.n_params,
                r.data.n_seqs, a->seq, a->data, resume ? "resuming after" : "from", r.opt.step);
        rc = train_loop(&r);
    }
    if (r.log) fclose(r.log);
    train_data_close(&r.data);
    tokenizer_free(r.tok);
    adamw_free(&r.opt);
    train_model_free(&r.tm);
    free(r.load);
    return rc;
}
