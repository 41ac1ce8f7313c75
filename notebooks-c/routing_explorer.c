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
 * mechanics of the rule, not as measurements of DeepSeek-V2. Two facts hold for any
 * input and are checked here (the program fails otherwise; tests/test_book.c runs it):
 * devices ≤ M, and M = 8 (all groups kept) equals greedy for every token.
 */
#include "config.h"
#include "router.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

enum { E = 160, G = 8, K = 6, D = 5120 };

static unsigned long long rng = 0x853c49e6748fea9bull;

static double uniform01(void)
{
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return ((double)((rng * 0x2545F4914F6CDD1Dull) >> 11) + 0.5) / 9007199254740992.0;
}

/* A standard normal draw (Box–Muller). */
static double normal(void)
{
    return sqrt(-2 * log(uniform01())) * cos(2 * M_PI * uniform01());
}

static ModelConfig router_config(TopkMethod method, int kept_groups)
{
    ModelConfig c = {0};
    c.n_routed_experts = E;
    c.num_experts_per_tok = K;
    c.topk_method = method;
    c.n_group = method == TOPK_GREEDY ? 1 : G;
    c.topk_group = method == TOPK_GREEDY ? 1 : kept_groups;
    c.norm_topk_prob = false;
    c.routed_scaling_factor = 16.0f;
    c.scoring_func = SCORING_SOFTMAX;
    return c;
}

int main(int argc, char **argv)
{
    const int tokens = argc > 1 ? atoi(argv[1]) : 20000;
    if (tokens < 1) { fprintf(stderr, "usage: %s [tokens]\n", argv[0]); return 2; }
    const double spread = 1.0;   /* standard deviation of the logits */
    float (*s)[E] = malloc(sizeof *s * tokens);
    int (*greedy)[K] = malloc(sizeof *greedy * tokens);
    if (!s || !greedy) { perror("malloc"); return 1; }

    const ModelConfig plain = router_config(TOPK_GREEDY, 1);
    for (int t = 0; t < tokens; t++) {
        float g[E], w[K];
        for (int e = 0; e < E; e++) g[e] = (float)(spread * normal());
        router_scores(s[t], g, E, SCORING_SOFTMAX);
        router_select(greedy[t], w, s[t], NULL, &plain);
    }

    printf("Device-limited routing on %d tokens of random logits (N(0, %.1f)), E = %d experts in\n"
           "G = %d groups of %d, K = %d; greedy = plain top-%d over all experts\n\n",
           tokens, spread, E, G, E / G, K, K);
    printf("%3s %10s %8s %8s %16s %15s\n", "M", "agreement", "overlap", "devices", "bytes/token",
           "load max/mean");
    int failed = 0;
    for (int M = 1; M <= G + 1; M++) {
        const bool is_greedy = M > G;   /* the last row: greedy itself, for reference */
        const ModelConfig c = is_greedy ? plain : router_config(TOPK_GROUP_LIMITED_GREEDY, M);
        long same = 0, overlap = 0, devices = 0, load[E] = {0};
        for (int t = 0; t < tokens; t++) {
            int idx[K];
            float w[K];
            router_select(idx, w, s[t], NULL, &c);
            bool on[G] = {false}, chosen[E] = {false};
            int n_dev = 0, common = 0;
            for (int k = 0; k < K; k++) {
                chosen[idx[k]] = true;
                load[idx[k]]++;
                if (!on[idx[k] / (E / G)]) { on[idx[k] / (E / G)] = true; n_dev++; }
            }
            for (int k = 0; k < K; k++) common += chosen[greedy[t][k]];
            same += common == K;
            overlap += common;
            devices += n_dev;
            if (!is_greedy && n_dev > M) failed = 1;
        }
        long max_load = 0;
        for (int e = 0; e < E; e++) if (load[e] > max_load) max_load = load[e];
        const double mean_load = (double)tokens * K / E, mean_dev = (double)devices / tokens;
        if (M == G && same != tokens) failed = 1;
        printf("%3s %9.1f%% %8.2f %8.2f %16.0f %15.2f\n", is_greedy ? "all" : (char[4]){'0' + M},
               100.0 * same / tokens, (double)overlap / tokens, mean_dev, mean_dev * D * 2,
               max_load / mean_load);
    }
    printf("\nWith M = 3, as in DeepSeek-V2, each token sends its hidden vector to at most 3\n"
           "devices; the agreement column shows how often that changes the chosen experts at all.\n");
    printf("%s\n", failed ? "FAILED: a token reached more than M devices, or M = 8 differed from greedy"
                          : "checks passed: devices <= M for every token, and M = 8 equals greedy");
    free(s);
    free(greedy);
    return failed;
}
