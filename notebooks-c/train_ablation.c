/*
 * notebooks-c/train_ablation.c: three of the paper's training-time choices, in miniature.
 *
 * Run:  make notebook-train_ablation
 *       build/notebooks/train_ablation [DIR]      (default DIR: models/train-ablations)
 *       NOTEBOOK_DATA=ab.dat build/notebooks/train_ablation   (also writes the plot's data)
 *
 * Reads the train_log.jsonl files of the `dsv2 train` runs made by tools/train_ablations.sh:
 * the 0.5M-parameter models/train-demo/config.json (MLA, a dense layer, two MoE layers of
 * E = 8 routed experts in 4 groups of 2 plus one shared expert, K = 2) trained for 300 steps
 * of 8 windows of 64 tokens on the book of Genesis (KJV), all from seed 1611, each run
 * differing from the run "all" in one option. For each table it prints, from the logs alone:
 *
 *   held-out   the cross-entropy on the held-out windows at step 300 (nats per token);
 *   train      the mean training cross-entropy over steps 251..300;
 *   exp max/mean  the busiest routed expert's (token, expert) pairs over the mean, per step
 *              and MoE layer, averaged over steps 251..300 and both layers (1.00 is even);
 *   dev max/mean  the same for the 4 devices (expert groups), which is what sets the time of
 *              the all-to-all: the busiest device receives the most;
 *   busiest KiB   hidden vectors (48 bf16 values, 96 bytes each) received by the busiest
 *              device per step and MoE layer, one per kept (token, expert) pair, averaged over
 *              steps 251..300; a token sending one vector per device instead of per expert
 *              sends at most min(M, K) copies, a bound the log cannot tighten (it holds
 *              per-expert counts, not which tokens reached which devices);
 *   dropped    the share of (token, expert) pairs token dropping removed over steps 251..300.
 *
 * (a) attention: MHA, GQA and MQA (models/train-ablations/attention-{mha,gqa,mqa}/config.json:
 *     the demo config with standard attention, RoPE on the whole head) against MLA (the run
 *     "all"), each from three seeds (1611; 2718 and 31415 in the attention-*-s2 and -s3 runs),
 *     which differ in the initial weights and the window order. Head counts and
 *     widths are chosen so that the attention weights of a layer stay within 2% of MLA's; the
 *     table prints them and the KV cache a token costs per layer (elements, and bytes in
 *     bf16), both computed from the config each second-seed run saved (DIR/run/config.json):
 *     MHA / GQA / MQA n_g·(d_h + d_v), MLA d_c + d_r;
 * (b) the balance losses: none, each alone at the paper's weight, all three;
 * (c) device-limited routing with D = 4 devices, M = 1, 2, 4 (with K = 2, M = 3 and M = 4
 *     choose what M = 2 does from the same scores: the two best experts lie in the two groups
 *     with the best maxima; the runs still part, because L_CommBal divides by M);
 * (d) token dropping at capacity factor 1.0, 1.25 and none (infinite).
 *
 * Checked here (the program exits non-zero otherwise; tests/test_book.c runs it and also
 * re-runs a prefix of two runs with dsv2 train): every log holds steps 1..300 in order with
 * finite losses; every step's kept pairs plus its dropped pairs equal B·T·K per MoE layer;
 * runs without a capacity factor drop nothing.
 */
#include <jansson.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STEPS = 300, LAST = 50, LAYERS = 2, E = 8, DEVICES = 4, PAIRS = 8 * 64 * 2, HIDDEN = 48 };

typedef struct {
    double held_out, train, exp_ratio, dev_ratio, busiest_bytes, dropped;
    double exp_step[STEPS], dev_step[STEPS], drop_step[STEPS]; /* per step, for the plot */
} Summary;

static int bad(const char *path, int step, const char *what)
{
    fprintf(stderr, "train_ablation: %s: step %d: %s\n", path, step, what);
    return -1;
}

/* Reads DIR/run/train_log.jsonl into s. */
static int summarize(const char *dir, const char *run, Summary *s)
{
    char path[1024], line[4096];
    snprintf(path, sizeof path, "%s/%s/train_log.jsonl", dir, run);
    FILE *f = fopen(path, "r");
    if (!f) return bad(path, 0, "cannot open");
    memset(s, 0, sizeof *s);
    s->held_out = NAN;
    long kept_all = 0, dropped_all = 0;
    int step = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        if (!j) {
            fclose(f);
            return bad(path, step + 1, "not JSON");
        }
        step++;
        const double ce = json_number_value(json_object_get(j, "ce"));
        const long dropped = (long)json_integer_value(json_object_get(j, "dropped"));
        json_t *load = json_object_get(j, "load"), *eval = json_object_get(j, "eval_loss");
        int ok = step <= STEPS && json_integer_value(json_object_get(j, "step")) == step && isfinite(ce) &&
                 json_object_size(load) == LAYERS;
        if (ok && eval) s->held_out = json_number_value(eval);
        long kept = 0;
        const char *layer;
        json_t *counts;
        json_object_foreach(load, layer, counts)
        {
            long dev[DEVICES] = { 0 }, sum = 0, max = 0;
            for (int e = 0; ok && e < E; e++) {
                const long n = (long)json_integer_value(json_array_get(counts, (size_t)e));
                dev[e / (E / DEVICES)] += n;
                sum += n;
                if (n > max) max = n;
            }
            long dmax = 0;
            for (int d = 0; d < DEVICES; d++)
                if (dev[d] > dmax) dmax = dev[d];
            kept += sum;
            if (ok && sum > 0) {
                s->exp_step[step - 1] += max / (sum / (double)E) / LAYERS;
                s->dev_step[step - 1] += dmax / (sum / (double)DEVICES) / LAYERS;
            }
            if (ok && step > STEPS - LAST && sum > 0) {
                s->exp_ratio += max / (sum / (double)E) / (LAST * LAYERS);
                s->dev_ratio += dmax / (sum / (double)DEVICES) / (LAST * LAYERS);
                s->busiest_bytes += dmax * HIDDEN * 2.0 / 1024 / (LAST * LAYERS);
            }
        }
        json_decref(j);
        if (!ok) {
            fclose(f);
            return bad(path, step, "out of order, non-finite or not 2 MoE layers");
        }
        if (kept + dropped != (long)PAIRS * LAYERS) {
            fclose(f);
            return bad(path, step, "kept + dropped pairs differ from B*T*K per MoE layer");
        }
        s->drop_step[step - 1] = dropped / (double)(PAIRS * LAYERS);
        if (step > STEPS - LAST) {
            s->train += ce / LAST;
            kept_all += kept;
            dropped_all += dropped;
        }
    }
    fclose(f);
    if (step != STEPS || !isfinite(s->held_out)) return bad(path, step, "fewer steps or no held-out loss");
    s->dropped = dropped_all / (double)(kept_all + dropped_all);
    return 0;
}

typedef struct {
    const char *run, *label;
} Row;

/* ---- (a) attention variants ---------------------------------------------------------------- */

/* What a config says about one layer's attention. */
typedef struct {
    int heads, kv_heads, head_dim; /* n_h; n_g (0 for MLA); d_h = d_n + d_r of a query/key head */
    long kv_elems;                 /* cached per token and layer */
    long params;                   /* attention weights per layer (norm weights included) */
} AttnShape;

static long key(const json_t *j, const char *k)
{
    return (long)json_integer_value(json_object_get(j, k));
}

static int attention_shape(const char *path, AttnShape *a)
{
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) return bad(path, 0, "cannot read the config");
    const json_t *type = json_object_get(j, "attention_type");
    const bool mla = !json_is_string(type) || !strcmp(json_string_value(type), "mla");
    const long D = key(j, "hidden_size"), nh = key(j, "num_attention_heads"), dn = key(j, "qk_nope_head_dim");
    const long dr = key(j, "qk_rope_head_dim"), dv = key(j, "v_head_dim"), dq = dn + dr;
    a->heads = (int)nh;
    a->head_dim = (int)dq;
    if (mla) { /* W^DQ, its norm, W^UQ;W^QR, W^DKV;W^KR, its norm, W^UK;W^UV, W^O */
        const long dc = key(j, "kv_lora_rank"), dcq = key(j, "q_lora_rank");
        a->kv_heads = 0;
        a->kv_elems = dc + dr;
        a->params = (dcq ? dcq * D + dcq + nh * dq * dcq : nh * dq * D) + (dc + dr) * D + dc + nh * (dn + dv) * dc +
                    D * nh * dv;
    } else { /* W^Q, W^K, W^V, W^O */
        const long ng = key(j, "num_key_value_heads");
        a->kv_heads = (int)ng;
        a->kv_elems = ng * (dq + dv);
        a->params = nh * dq * D + ng * dq * D + ng * dv * D + D * nh * dv;
    }
    json_decref(j);
    return 0;
}

enum { SEEDS = 3 };

typedef struct {
    const char *label, *run[SEEDS]; /* the config is read from DIR/run[1]/config.json */
    AttnShape shape;
    Summary s[SEEDS];
    double mean; /* of the held-out losses */
} AttnRow;

/* Table (a): held-out loss of each variant and seed, with what its cache and weights cost. */
static int attention_table(const char *dir, AttnRow *rows, int n)
{
    printf("(a) attention at equal budget (RoPE on the whole head for MHA / GQA / MQA; all losses on)\n"
           "%-9s %3s %3s %3s %8s %8s %7s %9s %9s %9s %9s\n",
           "attention", "n_h", "n_g", "d_h", "KV elems", "KV bytes", "weights", "s 1611", "s 2718", "s 31415", "mean");
    for (int i = 0; i < n; i++) {
        AttnRow *r = &rows[i];
        char path[1024], ng[8] = "-";
        snprintf(path, sizeof path, "%s/%s/config.json", dir, r->run[1]);
        if (attention_shape(path, &r->shape)) return -1;
        if (r->shape.kv_heads) snprintf(ng, sizeof ng, "%d", r->shape.kv_heads);
        printf("%-9s %3d %3s %3d %8ld %8ld %7ld", r->label, r->shape.heads, ng, r->shape.head_dim, r->shape.kv_elems,
               2 * r->shape.kv_elems, r->shape.params);
        r->mean = 0;
        for (int k = 0; k < SEEDS; k++) {
            if (summarize(dir, r->run[k], &r->s[k])) return -1;
            printf(" %9.4f", r->s[k].held_out);
            r->mean += r->s[k].held_out / SEEDS;
        }
        printf(" %9.4f\n", r->mean);
    }
    printf("(KV: per token and layer, bytes in bf16; weights: attention per layer; held-out at step 300\n"
           "of seed s)\n\n");
    return 0;
}

static int table(const char *dir, const char *title, const char *column, const Row *rows, int n, Summary *out)
{
    printf("%s\n%-12s %9s %9s %9s %9s %11s %8s\n", title, column, "held-out", "train", "exp max", "dev max",
           "busiest KiB", "dropped");
    for (int i = 0; i < n; i++) {
        Summary *s = &out[i];
        if (summarize(dir, rows[i].run, s)) return -1;
        printf("%-12s %9.4f %9.4f %9.2f %9.2f %11.2f %8.4f\n", rows[i].label, s->held_out, s->train, s->exp_ratio,
               s->dev_ratio, s->busiest_bytes, s->dropped);
    }
    printf("\n");
    return 0;
}

/* The mean of x over the 20 steps ending at step t (fewer at the start). */
static double trailing_mean(const double *x, int t)
{
    const int from = t >= 19 ? t - 19 : 0;
    double sum = 0;
    for (int i = from; i <= t; i++) sum += x[i];
    return sum / (t - from + 1);
}

/* For notebooks-c/plots/train_ablation.gp: three blocks (b) expert max/mean, (c) device
 * max/mean, (d) dropped share, per step as 20-step trailing means, one column per run. */
static int write_plot_data(const char *path, const Summary *b, const Summary *c, const Summary *d, const AttnRow *a,
                           int n_a)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "step none ExpBal DevBal CommBal \"all three\"\n");
    for (int t = 0; t < STEPS; t++) {
        fprintf(f, "%d", t + 1);
        for (int i = 0; i < 5; i++) fprintf(f, " %.4f", trailing_mean(b[i].exp_step, t));
        fprintf(f, "\n");
    }
    fprintf(f, "\n\nstep \"M = 1\" \"M = 2\" \"M = 4\"\n");
    for (int t = 0; t < STEPS; t++) {
        fprintf(f, "%d", t + 1);
        for (int i = 0; i < 3; i++) fprintf(f, " %.4f", trailing_mean(c[i].dev_step, t));
        fprintf(f, "\n");
    }
    fprintf(f, "\n\nstep \"CF = 1.0\" \"CF = 1.25\" \"CF = inf\"\n");
    for (int t = 0; t < STEPS; t++) {
        fprintf(f, "%d", t + 1);
        for (int i = 0; i < 3; i++) fprintf(f, " %.5f", trailing_mean(d[i].drop_step, t));
        fprintf(f, "\n");
    }
    fprintf(f, "\n\nattention \"KV bytes\" \"seed 1611\" \"seed 2718\" \"seed 31415\" mean\n");
    for (int i = 0; i < n_a; i++) {
        fprintf(f, "%s %ld", a[i].label, 2 * a[i].shape.kv_elems);
        for (int k = 0; k < SEEDS; k++) fprintf(f, " %.4f", a[i].s[k].held_out);
        fprintf(f, " %.4f\n", a[i].mean);
    }
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "models/train-ablations";
    static Summary b[5], c[3], d[3];
    static const Row B[] = { { "none", "none" },
                             { "expbal", "ExpBal" },
                             { "devbal", "DevBal" },
                             { "commbal", "CommBal" },
                             { "all", "all three" } };
    static const Row C[] = { { "m1", "M = 1" }, { "all", "M = 2" }, { "m4", "M = 4" } };
    static const Row D[] = { { "cf1", "CF = 1.0" }, { "cf1.25", "CF = 1.25" }, { "all", "CF = inf" } };
    static AttnRow A[] = {
        { .label = "MHA", .run = { "attention-mha", "attention-mha-s2", "attention-mha-s3" } },
        { .label = "GQA", .run = { "attention-gqa", "attention-gqa-s2", "attention-gqa-s3" } },
        { .label = "MQA", .run = { "attention-mqa", "attention-mqa-s2", "attention-mqa-s3" } },
        { .label = "MLA", .run = { "all", "attention-mla-s2", "attention-mla-s3" } },
    };
    printf("dsv2 train on Genesis, 300 steps of 8 x 64 tokens, seed 1611 (and 2718, 31415 in (a));\n"
           "(b) to (d) train models/train-demo/config.json\n"
           "(max columns: busiest over mean, steps 251..300; KiB: busiest device per step and layer)\n\n");
    if (attention_table(dir, A, 4) ||
        table(dir, "(b) balance losses (alpha 0.003 / 0.05 / 0.02 when on; M = 2)", "losses", B, 5, b) ||
        table(dir, "(c) device-limited routing, D = 4 (all three losses on)", "limit", C, 3, c) ||
        table(dir, "(d) token dropping, capacity per device (all three losses on)", "capacity", D, 3, d))
        return 1;
    for (int i = 0; i < 5; i++)
        if (b[i].dropped != 0) return bad(B[i].run, 0, "dropped pairs without a capacity factor"), 1;
    for (int i = 0; i < 3; i++)
        if (c[i].dropped != 0) return bad(C[i].run, 0, "dropped pairs without a capacity factor"), 1;
    const char *data = getenv("NOTEBOOK_DATA");
    if (data && write_plot_data(data, b, c, d, A, 4)) return bad(data, 0, "cannot write the plot data"), 1;
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < SEEDS; k++)
            if (A[i].s[k].dropped != 0) return bad(A[i].run[k], 0, "dropped pairs without a capacity factor"), 1;
    printf("checks passed: 300 steps per log, kept + dropped = B*T*K per layer, no drops without a capacity\n");
    return 0;
}
