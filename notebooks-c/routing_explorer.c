/*
 * notebooks-c/routing_explorer.c: what does device-limited routing change?
 *
 * Run:  make notebook-routing_explorer
 *       build/notebooks/routing_explorer 5000     (fewer tokens)
 *
 * DeepSeek-V2 spreads its 160 routed experts over 8 devices (groups of 20) and lets each
 * token reach at most M = 3 of them: the groups whose best affinity is highest are kept,
 * the others masked, and the top 6 experts are taken from what remains (chapter 5). This
 * notebook draws random router logits, turns them into affinities with the reference's
 * router_scores(), and compares router_select() with topk_method = group_limited_greedy
 * for M = 1..8 against plain greedy top-6. For each M it prints:
 *
 *   - agreement: the fraction of tokens whose 6 chosen experts are exactly greedy's;
 *   - overlap: the mean number of greedy's 6 experts that the limited rule also picks;
 *   - devices: the mean number of devices (groups) a token's experts live on;
 *   - bytes dispatched: devices × d × 2, the bf16 hidden vectors a token sends out
 *     (one copy per device, however many of its experts live there; d = 5120);
 *   - load imbalance: the busiest expert's token count over the mean count.
 *
 * Random logits are not a trained router: real affinities are far from uniform, and the
 * balance losses of the paper's §2.2.3 shape them during training. Treat these as the
 * mechanics of the rule, not as measurements of DeepSeek-V2. So the notebook then asks the
 * same question of a trained router, the bundled model's: models/tiny-kjv (16 experts in 8
 * groups of 2, K = 4, d = 256, trained with M = 3) reads five verses of Genesis 1, and the
 * affinities of its last MoE layer (what the model's FfnScratch holds after model_forward)
 * are re-routed with M = 1..8 and compared with greedy top-4 in the same table.
 *
 * Two facts hold for any input and are checked here (the program fails otherwise;
 * tests/test_book.c runs it): devices ≤ M, and M = G (all groups kept) equals greedy for
 * every token. With NOTEBOOK_DATA set, both tables are also written to that file (one
 * gnuplot data block each) for notebooks-c/plots/routing_explorer.gp.
 */
#include "config.h"
#include "error.h"
#include "model.h"
#include "router.h"
#include "tokenizer.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_E = 160, MAX_G = 8, MAX_K = 6, MAX_T = 512 };

#define BUNDLED_DIR "models/tiny-kjv"

static const char GENESIS[] = "In the beginning God created the heaven and the earth.\n"
                              "And the earth was without form, and void; and darkness was upon the face of the deep. "
                              "And the Spirit of God moved upon the face of the waters.\n"
                              "And God said, Let there be light: and there was light.\n"
                              "And God saw the light, that it was good: and God divided the light from the darkness.\n"
                              "And God called the light Day, and the darkness he called Night. "
                              "And the evening and the morning were the first day.\n";

static unsigned long long rng = 0x853c49e6748fea9bull;

static double uniform01(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return ((double)((rng * 0x2545F4914F6CDD1Dull) >> 11) + 0.5) / 9007199254740992.0;
}

/* A standard normal draw (Box–Muller). */
static double normal(void)
{
    return sqrt(-2 * log(uniform01())) * cos(2 * M_PI * uniform01());
}

/* The routing shape being explored: E experts in G groups, K per token, hidden width d. */
typedef struct {
    int E, G, K, d;
} Shape;

static ModelConfig router_config(const Shape *sh, TopkMethod method, int kept_groups)
{
    ModelConfig c = { 0 };
    c.n_routed_experts = sh->E;
    c.num_experts_per_tok = sh->K;
    c.topk_method = method;
    c.n_group = method == TOPK_GREEDY ? 1 : sh->G;
    c.topk_group = method == TOPK_GREEDY ? 1 : kept_groups;
    c.norm_topk_prob = false;
    c.routed_scaling_factor = 1.0f;
    c.scoring_func = SCORING_SOFTMAX;
    return c;
}

/* Prints the table for `tokens` affinity rows s[t·E ..] (and appends it to data when not NULL):
 * M from the smallest that holds K experts (M·E/G ≥ K) up to G against greedy, then greedy
 * itself. Returns 1 if a token reached more than M devices or M = G differed from greedy. */
static int explore(const float *s, int tokens, const Shape *sh, FILE *data)
{
    const int E = sh->E, G = sh->G, K = sh->K;
    int(*greedy)[MAX_K] = malloc(sizeof *greedy * tokens);
    if (!greedy) {
        perror("malloc");
        return 1;
    }
    const ModelConfig plain = router_config(sh, TOPK_GREEDY, 1);
    for (int t = 0; t < tokens; t++) {
        float w[MAX_K];
        router_select(greedy[t], w, s + (size_t)t * E, NULL, &plain);
    }
    printf("%3s %10s %8s %8s %16s %15s\n", "M", "agreement", "overlap", "devices", "bytes/token", "load max/mean");
    if (data) fprintf(data, "# M agreement(%%) overlap devices bytes_per_token load_max_over_mean\n");
    int failed = 0;
    const int per_group = E / G;
    for (int M = (K + per_group - 1) / per_group; M <= G + 1; M++) {
        const bool is_greedy = M > G; /* the last row: greedy itself, for reference */
        const ModelConfig c = is_greedy ? plain : router_config(sh, TOPK_GROUP_LIMITED_GREEDY, M);
        long same = 0, overlap = 0, devices = 0, load[MAX_E] = { 0 };
        for (int t = 0; t < tokens; t++) {
            int idx[MAX_K];
            float w[MAX_K];
            router_select(idx, w, s + (size_t)t * E, NULL, &c);
            bool on[MAX_G] = { false }, chosen[MAX_E] = { false };
            int n_dev = 0, common = 0;
            for (int k = 0; k < K; k++) {
                chosen[idx[k]] = true;
                load[idx[k]]++;
                if (!on[idx[k] / per_group]) {
                    on[idx[k] / per_group] = true;
                    n_dev++;
                }
            }
            for (int k = 0; k < K; k++) common += chosen[greedy[t][k]];
            same += common == K;
            overlap += common;
            devices += n_dev;
            if (!is_greedy && n_dev > M) failed = 1;
        }
        long max_load = 0;
        for (int e = 0; e < E; e++)
            if (load[e] > max_load) max_load = load[e];
        const double mean_load = (double)tokens * K / E, mean_dev = (double)devices / tokens;
        if (M == G && same != tokens) failed = 1;
        printf("%3s %9.1f%% %8.2f %8.2f %16.0f %15.2f\n", is_greedy ? "all" : (char[4]){ '0' + M },
               100.0 * same / tokens, (double)overlap / tokens, mean_dev, mean_dev * sh->d * 2, max_load / mean_load);
        if (data && !is_greedy)
            fprintf(data, "%d %.3f %.4f %.4f %.1f %.4f\n", M, 100.0 * same / tokens, (double)overlap / tokens, mean_dev,
                    mean_dev * sh->d * 2, max_load / mean_load);
    }
    if (data) fprintf(data, "\n\n");
    free(greedy);
    return failed;
}

/* The affinities of the bundled model's last MoE layer on GENESIS: [T, E] into s (T ≤ MAX_T).
 * Returns T, or −1 with a message. */
static int bundled_affinities(float *s, Shape *sh)
{
    Tokenizer *tok = tokenizer_load(BUNDLED_DIR);
    if (!tok) {
        fprintf(stderr, "%s: %s\n", BUNDLED_DIR, ds_last_error());
        return -1;
    }
    int32_t ids[MAX_T];
    const long T = tokenizer_encode(tok, GENESIS, strlen(GENESIS), TOKENIZER_ADD_SPECIAL, ids, MAX_T);
    tokenizer_free(tok);
    if (T < 1 || T > MAX_T) {
        fprintf(stderr, "the passage is %ld tokens\n", T);
        return -1;
    }
    Model m;
    const ModelOptions opt = { .max_context = (int)T, .chunk = (int)T };
    if (model_open(&m, BUNDLED_DIR, &opt) != 0) {
        fprintf(stderr, "%s\n", ds_last_error());
        return -1;
    }
    const ModelConfig *c = m.cfg;
    *sh = (Shape){ c->n_routed_experts, c->n_group, c->num_experts_per_tok, c->hidden_size };
    int tokens[MAX_T];
    for (long t = 0; t < T; t++) tokens[t] = ids[t];
    float *logits = malloc(sizeof *logits * (size_t)c->vocab_size);
    int status = -1;
    if (!logits)
        perror("malloc");
    else if (!m.layers[c->num_hidden_layers - 1].is_moe || sh->E > MAX_E || sh->G > MAX_G || sh->K > MAX_K)
        fprintf(stderr, "%s: the last layer is not an MoE layer of at most %d experts\n", BUNDLED_DIR, MAX_E);
    else if (model_forward(&m, tokens, (int)T, logits, false) != 0)
        fprintf(stderr, "%s\n", ds_last_error());
    else {
        memcpy(s, m.ffn.scores, sizeof *s * (size_t)T * sh->E);
        status = (int)T;
    }
    free(logits);
    model_close(&m);
    return status;
}

int main(int argc, char **argv)
{
    const int tokens = argc > 1 ? atoi(argv[1]) : 20000;
    if (tokens < 1) {
        fprintf(stderr, "usage: %s [tokens]\n", argv[0]);
        return 2;
    }
    const double spread = 1.0; /* standard deviation of the logits */
    const Shape v2 = { 160, 8, 6, 5120 };
    float *s = malloc(sizeof *s * (size_t)tokens * v2.E);
    float *bundled = malloc(sizeof *bundled * (size_t)MAX_T * MAX_E);
    if (!s || !bundled) {
        perror("malloc");
        return 1;
    }
    for (int t = 0; t < tokens; t++) {
        float g[MAX_E];
        for (int e = 0; e < v2.E; e++) g[e] = (float)(spread * normal());
        router_scores(s + (size_t)t * v2.E, g, v2.E, SCORING_SOFTMAX);
    }
    const char *path = getenv("NOTEBOOK_DATA");
    FILE *data = path ? fopen(path, "w") : NULL;
    if (path && !data) {
        perror(path);
        return 1;
    }

    printf("Device-limited routing on %d tokens of random logits (N(0, %.1f)), E = %d experts in\n"
           "G = %d groups of %d, K = %d, d = %d; greedy = plain top-%d over all experts\n\n",
           tokens, spread, v2.E, v2.G, v2.E / v2.G, v2.K, v2.d, v2.K);
    int failed = explore(s, tokens, &v2, data);
    printf("\nWith M = 3, as in DeepSeek-V2, each token sends its hidden vector to at most 3\n"
           "devices; the agreement column shows how often that changes the chosen experts at all.\n");

    Shape tiny;
    const int T = bundled_affinities(bundled, &tiny);
    if (T < 0) return 1;
    printf("\nThe bundled model's router: %s, last MoE layer, %d tokens (BOS + Genesis 1:1-5),\n"
           "E = %d experts in G = %d groups of %d, K = %d, d = %d (trained with M = 3;\n"
           "M = 1 cannot hold K = 4 experts in groups of 2, so the table starts at M = 2)\n\n",
           BUNDLED_DIR, T, tiny.E, tiny.G, tiny.E / tiny.G, tiny.K, tiny.d);
    failed |= explore(bundled, T, &tiny, data);
    if (data && fclose(data) != 0) {
        perror(path);
        failed = 1;
    }
    printf("\n%s\n", failed ? "FAILED: a token reached more than M devices, or M = G differed from greedy"
                            : "checks passed: devices <= M for every token, and M = G equals greedy");
    free(s);
    free(bundled);
    return failed;
}
