/**
 * \file golden.c
 * \brief Reading the golden fixtures for the suites (see golden.h).
 */
#include "golden.h"

#include "check.h"
#include "error.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>

void golden_dir(char *dir, size_t n, const char *name)
{
    snprintf(dir, n, GOLDEN_DIR "%s", name);
}

void golden_load(Golden *g, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, GOLDEN_DIR "%s/expected.safetensors", name);
    if (st_open(path, &g->expected)) fail_msg("%s", ds_last_error());
    const StTensor *prompt = st_find(&g->expected, "prompt_ids"), *greedy = st_find(&g->expected, "greedy_ids");
    g->logits = st_find(&g->expected, "logits");
    if (!prompt || !greedy || !g->logits)
        fail_msg("%s: prompt_ids, logits or greedy_ids missing; rerun tools/make_golden.py", path);
    g->T = (int)prompt->shape[0];
    g->n_greedy = (int)greedy->shape[0];
    g->V = (int)g->logits->shape[1];
    if (g->T + g->n_greedy > GOLDEN_MAX_IDS)
        fail_msg("%s: %d prompt + %d greedy ids exceed %d", path, g->T, g->n_greedy, GOLDEN_MAX_IDS);
    for (int t = 0; t < g->T; t++) g->ids[t] = (int)((const float *)prompt->data)[t];
    for (int t = 0; t < g->n_greedy; t++) g->ids[g->T + t] = (int)((const float *)greedy->data)[t];
}

void golden_close(Golden *g)
{
    st_close(&g->expected);
}

float *golden_ref_logits(const char *name, const int *ids, int n, int V)
{
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    Model m;
    if (model_open(&m, dir, NULL)) fail_msg("%s", ds_last_error());
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    assert_non_null(logits);
    assert_int_equal(model_forward(&m, ids, n, logits, true), 0);
    model_close(&m);
    return logits;
}

int golden_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}
