/*
 * notebooks-c/expert_load.c: how evenly does the bundled model spread a passage over its experts?
 *
 * Run:  make notebook-expert_load
 *       build/notebooks/expert_load "Some other text to route."
 *
 * models/tiny-kjv has 4 layers; layers 1-3 are MoE layers with 16 routed experts in 8 groups
 * of 2, each token keeping its best 3 groups and taking 4 experts from them
 * (group_limited_greedy). It was trained with the expert-level balance loss alone, α₁ =
 * 0.003 (its README). This notebook tokenizes five verses of Genesis 1 (text the model saw
 * in training) with the model's own tokenizer, runs the model on them, and for each MoE
 * layer prints
 *
 *   - the load of each expert: its share of the T·K token→expert assignments (1/16 = 0.0625
 *     is perfectly even);
 *   - the three balance losses of the paper's §2.2.3 (ref/balance.h's balance_losses) on
 *     those routings, with the paper's weights α₁ = 0.003, α₂ = 0.05, α₃ = 0.02, taking the
 *     8 expert groups as the D = 8 devices and the group limit as M = 3. Each is also
 *     printed divided by its α. That bare Σ f·P is 1 when either the load or the mean
 *     affinity is uniform (the communication term only nearly: a token whose 4 experts
 *     fall in 2 groups reaches fewer than M devices), and rises above 1 when the busiest
 *     experts are also the ones the router scores highest on average, which is what the
 *     losses push against.
 *
 * How the routings are obtained. model_forward() runs the prompt as usual with a RouteLog
 * attached (ref/route_log.h): the model's Model.on_moe observer copies each MoE layer's
 * affinities s_{i,t} and chosen experts as the layer routes them. Nothing of the model is
 * re-implemented here, so what is measured is the model's own routing.
 *
 * Checked here (the program exits non-zero otherwise; tests/test_book.c runs it): every MoE
 * layer reported every token, the loads of each layer sum to 1, no token's experts span
 * more than 3 groups, and every loss is finite and ≥ 0.
 *
 * The load "with and without each loss term" takes models trained with each α set to zero:
 * that is notebooks-c/balance_ablation.c, on the small models of models/ablation/.
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

#define MODEL_DIR "models/tiny-kjv"

static const char PASSAGE[] = "In the beginning God created the heaven and the earth.\n"
                              "And the earth was without form, and void; and darkness was upon the face of the deep. "
                              "And the Spirit of God moved upon the face of the waters.\n"
                              "And God said, Let there be light: and there was light.\n"
                              "And God saw the light, that it was good: and God divided the light from the darkness.\n"
                              "And God called the light Day, and the darkness he called Night. "
                              "And the evening and the morning were the first day.\n";

enum { MAX_T = 512 };

/* The paper's balance-loss weights (§2.2.3 and §3.1.2: α₁ = 0.003, α₂ = 0.05, α₃ = 0.02). */
static const double ALPHA1 = 0.003, ALPHA2 = 0.05, ALPHA3 = 0.02;

int main(int argc, char **argv)
{
    const char *text = argc > 1 ? argv[1] : PASSAGE;
    Tokenizer *tok = tokenizer_load(MODEL_DIR);
    if (!tok) {
        fprintf(stderr, "cannot load the tokenizer of %s: %s\n", MODEL_DIR, ds_last_error());
        return 1;
    }
    int32_t ids[MAX_T];
    const long T = tokenizer_encode(tok, text, strlen(text), TOKENIZER_ADD_SPECIAL, ids, MAX_T);
    tokenizer_free(tok);
    if (T < 2 || T > MAX_T) {
        fprintf(stderr, "the passage must be 2..%d tokens (got %ld)\n", MAX_T, T);
        return 2;
    }

    Model m;
    const ModelOptions opt = { .max_context = (int)T, .chunk = (int)T };
    if (model_open(&m, MODEL_DIR, &opt) != 0) {
        fprintf(stderr, "%s\n", ds_last_error());
        return 1;
    }
    const ModelConfig *c = m.cfg;
    const int E = c->n_routed_experts, K = c->num_experts_per_tok, G = c->n_group;
    const int M = c->topk_group, V = c->vocab_size;
    int tokens[MAX_T];
    for (long t = 0; t < T; t++) tokens[t] = ids[t];

    /* The prompt through model_forward(), each MoE layer's routing logged by the observer. */
    RouteLog g;
    float *logits = malloc(sizeof *logits * (size_t)V);
    if (!logits) {
        perror("malloc");
        return 1;
    }
    if (route_log_attach(&g, &m, (int)T)) {
        fprintf(stderr, "%s\n", ds_last_error());
        return 1;
    }
    if (model_forward(&m, tokens, (int)T, logits, false) != 0) {
        fprintf(stderr, "%s\n", ds_last_error());
        return 1;
    }
    const float *scores = g.scores;
    const int *chosen = g.chosen;
    bool failed = !route_log_complete(&g);

    printf("Expert load of %s on %ld tokens (BOS + five verses of Genesis 1 unless a text is given)\n"
           "E = %d routed experts in %d groups of %d, K = %d per token, at most M = %d groups\n"
           "routings logged from model_forward through Model.on_moe\n\n",
           MODEL_DIR, T, E, G, E / G, K, M);

    printf("load = share of the %ld token->expert assignments (uniform = %.4f)\n", T * K, 1.0 / E);
    printf("layer");
    for (int e = 0; e < E; e++) {
        char name[16];
        snprintf(name, sizeof name, "e%d", e);
        printf(" %7s", name);
    }
    printf(" %6s %6s %4s\n", "min", "max", "sum");
    for (int i = 0; i < g.n_moe; i++) {
        const int l = g.layer[i], *idx = chosen + (size_t)i * T * K;
        long count[1024] = { 0 };
        for (long i = 0; i < T * K; i++) count[idx[i]]++;
        for (long t = 0; t < T; t++) { /* the group limit: at most M groups a token */
            bool on[1024] = { false };
            int groups = 0;
            for (int k = 0; k < K; k++)
                if (!on[idx[t * K + k] / (E / G)]) {
                    on[idx[t * K + k] / (E / G)] = true;
                    groups++;
                }
            if (groups > M) failed = true;
        }
        double sum = 0, lo = 1, hi = 0;
        printf("%5d", l);
        for (int e = 0; e < E; e++) {
            const double load = (double)count[e] / (double)(T * K);
            sum += load;
            lo = load < lo ? load : lo;
            hi = load > hi ? load : hi;
            printf(" %7.4f", load);
        }
        printf(" %6.4f %6.4f %4.2f\n", lo, hi, sum);
        if (fabs(sum - 1) > 1e-9) failed = true;
    }

    printf("\nbalance losses on these routings (devices = the %d groups, M = %d)\n", G, M);
    printf("%5s %12s %12s %12s   %9s %9s %9s\n", "layer", "L_ExpBal", "L_DevBal", "L_CommBal", "/alpha1", "/alpha2",
           "/alpha3");
    for (int i = 0; i < g.n_moe; i++) {
        const int l = g.layer[i];
        const BalanceSpec spec = {
            .E = E, .K = K, .D = G, .M = M, .alpha1 = ALPHA1, .alpha2 = ALPHA2, .alpha3 = ALPHA3
        };
        const BalanceLosses b =
            balance_losses(scores + (size_t)i * T * E, chosen + (size_t)i * T * K, (int)T, &spec, NULL);
        printf("%5d %12.6f %12.6f %12.6f   %9.4f %9.4f %9.4f\n", l, b.expert, b.device, b.comm, b.expert / ALPHA1,
               b.device / ALPHA2, b.comm / ALPHA3);
        const double v[3] = { b.expert, b.device, b.comm };
        for (int i = 0; i < 3; i++)
            if (!isfinite(v[i]) || v[i] < 0) failed = true;
    }
    printf("\nA /alpha column is 1 (the last one about 1) when the load or the mean affinity is uniform.\n");
    printf("%s\n", failed ? "FAILED: a layer missed tokens, its loads do not sum to 1, a token spans more "
                            "than M groups, or a loss is negative or not finite"
                          : "checks passed: every token logged, loads sum to 1 per layer, at most M groups "
                            "per token, losses finite and >= 0");
    route_log_free(&g, &m);
    free(logits);
    model_close(&m);
    return failed;
}
