/*
 * notebooks-c/balance_ablation.c: what does each balance loss do to the expert load?
 *
 * Run:  make notebook-balance_ablation
 *       build/notebooks/balance_ablation "Some other text to route."
 *       NOTEBOOK_DATA=load.dat build/notebooks/balance_ablation    (also writes plot data)
 *
 * The paper trains DeepSeek-V2 with three auxiliary losses (§2.2.3, chapter 6): expert
 * level (α₁), device level (α₂) and communication (α₃). models/ablation/ holds five small
 * models trained by tools/train_tiny.py on the King James Bible with the same data, seed,
 * architecture and steps, differing only in which of the three losses were on:
 *
 *   all          α₁ = 0.003, α₂ = 0.05, α₃ = 0.02 (the paper's weights)
 *   no-expbal    α₁ = 0                  no-devbal    α₂ = 0
 *   no-commbal   α₃ = 0                  none         no balance loss at all
 *
 * Each has 3 layers (a dense one, then 2 MoE layers) of width 48, 16 routed experts on D = 4
 * devices (expert groups of 4), K = 4 experts per token, at most M = 2 devices per token
 * (group_limited_greedy, n_group = 4, topk_group = 2), and tiny-kjv's tokenizer.
 *
 * The notebook routes eight verses of Genesis 50 (a chapter held out of training), or the
 * text given as its argument, through each model with the C reference and prints, for every MoE layer:
 *
 *   - the number of the T·K token→expert assignments each expert received;
 *   - each expert's mean affinity P_i = (1/T) Σ_t s_{i,t};
 *   - how many of the T tokens each device received (a token counts once per device);
 *   - the busiest expert over the mean (max/mean) and the coefficient of variation of
 *     the per-expert counts (CV = population standard deviation / mean; 0 is even);
 *   - each device's share of the assignments;
 *   - L_ExpBal, L_DevBal and L_CommBal of ref/balance.h on this passage, all weighted with
 *     the paper's α₁, α₂, α₃ (for every model, whether or not it was trained with them), so
 *     the columns compare across models.
 *
 * With NOTEBOOK_DATA set, it also writes each layer's expert shares, sorted from the
 * busiest expert down, one column per model, for notebooks-c/plots/balance_ablation.gp.
 *
 * The routings are collected as in expert_load.c: model_forward() runs the passage with a
 * RouteLog attached (ref/route_log.h), which copies each MoE layer's affinities and choices
 * as the layer routes them. The program fails if a layer misses tokens, if a token
 * reaches more than M devices, or if a loss is negative or not finite. tests/test_book.c
 * recomputes every derived column from the printed counts and affinities, and re-routes the
 * last MoE layer itself.
 */
#include "balance.h"
#include "error.h"
#include "model.h"
#include "route_log.h"
#include "tokenizer.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENIZER_DIR "models/tiny-kjv"

static const char PASSAGE[] =
    "And Joseph fell upon his father's face, and wept upon him, and kissed him.\n"
    "And Joseph commanded his servants the physicians to embalm his father: and the physicians "
    "embalmed Israel.\n"
    "And forty days were fulfilled for him; for so are fulfilled the days of those which are "
    "embalmed: and the Egyptians mourned for him threescore and ten days.\n"
    "And when the days of his mourning were past, Joseph spake unto the house of Pharaoh, "
    "saying, If now I have found grace in your eyes, speak, I pray you, in the ears of Pharaoh, "
    "saying,\n"
    "My father made me swear, saying, Lo, I die: in my grave which I have digged for me in the "
    "land of Canaan, there shalt thou bury me. Now therefore let me go up, I pray thee, and bury "
    "my father, and I will come again.\n"
    "And Pharaoh said, Go up, and bury thy father, according as he made thee swear.\n"
    "And Joseph went up to bury his father: and with him went up all the servants of Pharaoh, "
    "the elders of his house, and all the elders of the land of Egypt,\n"
    "And all the house of Joseph, and his brethren, and his father's house: only their little "
    "ones, and their flocks, and their herds, they left in the land of Goshen.\n";

/* One trained model: its directory under models/ablation/ and the weights it was trained with. */
typedef struct {
    const char *name;
    double alpha1, alpha2, alpha3;
} Variant;

static const Variant VARIANTS[] = {
    { "all", 0.003, 0.05, 0.02 },
    { "no-expbal", 0, 0.05, 0.02 },
    { "no-devbal", 0.003, 0, 0.02 },
    { "no-commbal", 0.003, 0.05, 0 },
    { "none", 0, 0, 0 },
};
enum { N_VARIANTS = sizeof VARIANTS / sizeof *VARIANTS };

/* The shapes every ablation model shares (checked against each config.json). */
enum { E = 16, K = 4, DEV = 4, M = 2, MOE_LAYERS = 2, MAX_T = 512 };

/* The paper's weights (§2.2.3), used to report every model's losses on one scale. */
static const double ALPHA1 = 0.003, ALPHA2 = 0.05, ALPHA3 = 0.02;

/* What the notebook measures on one MoE layer of one model. */
typedef struct {
    long count[E];      /* assignments per expert */
    double P[E];        /* mean affinity per expert */
    long reach[DEV];    /* tokens sent to each device */
    BalanceLosses loss; /* with the paper's α */
} LayerLoad;

/* Counts, mean affinities, device reach and losses of one layer's routing; false if a token
 * reaches more than M devices. */
static bool measure(LayerLoad *out, const float *scores, const int *chosen, int T)
{
    bool ok = true;
    memset(out, 0, sizeof *out);
    for (int t = 0; t < T; t++) {
        bool on[DEV] = { false };
        int devices = 0;
        for (int k = 0; k < K; k++) {
            const int e = chosen[t * K + k];
            out->count[e]++;
            if (!on[e / (E / DEV)]) {
                on[e / (E / DEV)] = true;
                devices++;
            }
        }
        for (int d = 0; d < DEV; d++) out->reach[d] += on[d];
        for (int e = 0; e < E; e++) out->P[e] += scores[(size_t)t * E + e];
        ok &= devices <= M;
    }
    for (int e = 0; e < E; e++) out->P[e] /= T;
    const BalanceSpec spec = { .E = E, .K = K, .D = DEV, .M = M, .alpha1 = ALPHA1, .alpha2 = ALPHA2, .alpha3 = ALPHA3 };
    out->loss = balance_losses(scores, chosen, T, &spec, NULL);
    const double v[3] = { out->loss.expert, out->loss.device, out->loss.comm };
    for (int i = 0; i < 3; i++) ok &= isfinite(v[i]) && v[i] >= 0;
    return ok;
}

/* Routes the T tokens through models/ablation/<name>, filling one LayerLoad per MoE layer.
 * Returns 0, 1 when a check fails, or −1 when the model cannot be run. */
static int route_variant(LayerLoad load[MOE_LAYERS], const char *name, const int *tokens, int T)
{
    char dir[256];
    snprintf(dir, sizeof dir, "models/ablation/%s", name);
    Model m;
    const ModelOptions opt = { .max_context = T, .chunk = T };
    if (model_open(&m, dir, &opt) != 0) {
        fprintf(stderr, "%s\n", ds_last_error());
        return -1;
    }
    const ModelConfig *c = m.cfg;
    if (c->n_routed_experts != E || c->num_experts_per_tok != K || c->n_group != DEV || c->topk_group != M ||
        c->num_hidden_layers != MOE_LAYERS + 1 || c->first_k_dense_replace != 1) {
        fprintf(stderr, "%s: not the ablation shape (E %d, K %d, D %d, M %d, 1 dense + %d MoE layers)\n", dir, E, K,
                DEV, M, MOE_LAYERS);
        model_close(&m);
        return -1;
    }
    RouteLog g = { 0 };
    float *logits = malloc(sizeof *logits * (size_t)c->vocab_size);
    int status = -1;
    if (!logits) {
        perror("malloc");
        goto done;
    }
    if (route_log_attach(&g, &m, T) || model_forward(&m, tokens, T, logits, false) != 0) {
        fprintf(stderr, "%s\n", ds_last_error());
        goto done;
    }
    bool ok = route_log_complete(&g);
    for (int j = 0; j < MOE_LAYERS; j++)
        ok &= measure(&load[j], g.scores + (size_t)j * T * E, g.chosen + (size_t)j * T * K, T);
    status = ok ? 0 : 1;
done:
    route_log_free(&g, &m);
    free(logits);
    model_close(&m);
    return status;
}

/* Population standard deviation over mean of the per-expert counts. */
static double coefficient_of_variation(const long count[E])
{
    double mean = 0, var = 0;
    for (int e = 0; e < E; e++) mean += (double)count[e] / E;
    for (int e = 0; e < E; e++) var += ((double)count[e] - mean) * ((double)count[e] - mean) / E;
    return sqrt(var) / mean;
}

static int by_count_descending(const void *a, const void *b)
{
    const long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

/* For the plot: per layer, each model's expert shares sorted from the busiest down. */
static int write_plot_data(const char *path, LayerLoad load[][MOE_LAYERS], int T)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return -1;
    }
    for (int j = 0; j < MOE_LAYERS; j++) {
        long sorted[N_VARIANTS][E];
        for (int v = 0; v < N_VARIANTS; v++) {
            memcpy(sorted[v], load[v][j].count, sizeof sorted[v]);
            qsort(sorted[v], E, sizeof sorted[v][0], by_count_descending);
        }
        fprintf(f, "# MoE layer %d: expert rank, then each model's share of the %d assignments\nrank", j + 1, T * K);
        for (int v = 0; v < N_VARIANTS; v++) fprintf(f, " %s", VARIANTS[v].name);
        fprintf(f, "\n");
        for (int r = 0; r < E; r++) {
            fprintf(f, "%d", r + 1);
            for (int v = 0; v < N_VARIANTS; v++) fprintf(f, " %.6f", (double)sorted[v][r] / (T * K));
            fprintf(f, "\n");
        }
        fprintf(f, "\n\n");
    }
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *text = argc > 1 ? argv[1] : PASSAGE;
    Tokenizer *tok = tokenizer_load(TOKENIZER_DIR);
    if (!tok) {
        fprintf(stderr, "cannot load the tokenizer of %s: %s\n", TOKENIZER_DIR, ds_last_error());
        return 1;
    }
    int32_t ids[MAX_T];
    const long T = tokenizer_encode(tok, text, strlen(text), TOKENIZER_ADD_SPECIAL, ids, MAX_T);
    tokenizer_free(tok);
    if (T < 2 || T > MAX_T) {
        fprintf(stderr, "the passage must be 2..%d tokens (got %ld)\n", MAX_T, T);
        return 1;
    }
    int tokens[MAX_T];
    for (long t = 0; t < T; t++) tokens[t] = ids[t];

    static LayerLoad load[N_VARIANTS][MOE_LAYERS];
    bool failed = false;
    for (int v = 0; v < N_VARIANTS; v++) {
        const int status = route_variant(load[v], VARIANTS[v].name, tokens, (int)T);
        if (status < 0) return 1;
        failed |= status != 0;
    }

    printf("Balance-loss ablation: models/ablation/* routing %ld tokens (%s)\n"
           "E = %d routed experts on D = %d devices of %d, K = %d per token, at most M = %d devices\n\n",
           T, argc > 1 ? "BOS + the given text" : "BOS + Genesis 50:1-8, held out in training", E, DEV, E / DEV, K, M);
    printf("%-11s %7s %7s %7s   %s\n", "model", "alpha1", "alpha2", "alpha3",
           "trained with; routings logged from model_forward through Model.on_moe");
    for (int v = 0; v < N_VARIANTS; v++)
        printf("%-11s %7.3f %7.3f %7.3f\n", VARIANTS[v].name, VARIANTS[v].alpha1, VARIANTS[v].alpha2,
               VARIANTS[v].alpha3);

    printf("\nassignments per expert (of T*K = %ld; even = %.2f each)\n%-11s %5s", T * K, (double)(T * K) / E, "model",
           "layer");
    for (int e = 0; e < E; e++) printf(" %4s%-2d", "e", e);
    printf("\n");
    for (int v = 0; v < N_VARIANTS; v++)
        for (int j = 0; j < MOE_LAYERS; j++) {
            printf("%-11s %5d", VARIANTS[v].name, j + 1);
            for (int e = 0; e < E; e++) printf(" %6ld", load[v][j].count[e]);
            printf("\n");
        }

    printf("\nmean affinity P_i per expert (even = %.4f)\n%-11s %5s", 1.0 / E, "model", "layer");
    for (int e = 0; e < E; e++) printf(" %4s%-2d", "e", e);
    printf("\n");
    for (int v = 0; v < N_VARIANTS; v++)
        for (int j = 0; j < MOE_LAYERS; j++) {
            printf("%-11s %5d", VARIANTS[v].name, j + 1);
            for (int e = 0; e < E; e++) printf(" %6.4f", load[v][j].P[e]);
            printf("\n");
        }

    printf("\ntokens sent to each device (of T = %ld), the experts' max/mean and CV, each device's\n"
           "share of the assignments, and the three losses with alpha = %.3f, %.3f, %.3f\n",
           T, ALPHA1, ALPHA2, ALPHA3);
    printf("%-11s %5s %4s %4s %4s %4s %8s %6s %6s %6s %6s %6s %9s %9s %9s\n", "model", "layer", "d0", "d1", "d2", "d3",
           "max/mean", "CV", "sh0", "sh1", "sh2", "sh3", "L_ExpBal", "L_DevBal", "L_CommBal");
    for (int v = 0; v < N_VARIANTS; v++)
        for (int j = 0; j < MOE_LAYERS; j++) {
            const LayerLoad *x = &load[v][j];
            long top = 0;
            for (int e = 0; e < E; e++) top = x->count[e] > top ? x->count[e] : top;
            printf("%-11s %5d", VARIANTS[v].name, j + 1);
            for (int d = 0; d < DEV; d++) printf(" %4ld", x->reach[d]);
            printf(" %8.3f %6.3f", (double)top * E / (double)(T * K), coefficient_of_variation(x->count));
            for (int d = 0; d < DEV; d++) {
                long on_d = 0;
                for (int e = d * (E / DEV); e < (d + 1) * (E / DEV); e++) on_d += x->count[e];
                printf(" %6.3f", (double)on_d / (double)(T * K));
            }
            printf(" %9.6f %9.6f %9.6f\n", x->loss.expert, x->loss.device, x->loss.comm);
        }

    const char *data = getenv("NOTEBOOK_DATA");
    if (data && write_plot_data(data, load, (int)T) != 0) failed = true;
    printf("\n%s\n", failed ? "FAILED: a model's layer missed tokens, a token reaches more than M devices, "
                              "a loss is negative or not finite, or the plot data could not be written"
                            : "checks passed: every token logged, at most M devices per token, losses "
                              "finite and >= 0");
    return failed;
}
