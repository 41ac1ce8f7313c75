/* Exercise 05-routing-4: one token through a 4-expert router, logits g = (2, 0, 1.5, 1),
 * K = 2, routed_scaling_factor = 2; greedy, then two groups {0, 1}, {2, 3} with one kept. */
#include "router.h"

#include <stdio.h>

static void route(const char *name, TopkMethod method, const float *s)
{
    ModelConfig cfg = {.n_routed_experts = 4, .num_experts_per_tok = 2, .topk_method = method,
                       .n_group = 2, .topk_group = 1, .routed_scaling_factor = 2.0f};
    int idx[2];
    float w[2];
    router_select(idx, w, s, NULL, &cfg);
    printf("%-20s experts %d, %d  weights %.4f, %.4f\n", name, idx[0], idx[1], w[0], w[1]);
}

int main(void)
{
    const float g[4] = {2.0f, 0.0f, 1.5f, 1.0f};
    float s[4];
    router_scores(s, g, 4, SCORING_SOFTMAX);
    printf("affinities           %.4f %.4f %.4f %.4f\n", s[0], s[1], s[2], s[3]);
    route("greedy", TOPK_GREEDY, s);
    route("group_limited_greedy", TOPK_GROUP_LIMITED_GREEDY, s);
    return 0;
}
