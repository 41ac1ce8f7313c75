/**
 * \file test_golden.c
 * \brief The reference model against transformers' DeepSeek-V2 (tests/golden/, made by tools/make_golden.py).
 *
 * For every fixture: logits at every prompt position within 1e-4 max-abs of
 * transformers (float32 on the same bf16 weights; the two differ only by
 * summation order and libm ulps, ~1e-6 relative per op, so 1e-4 on logits
 * of magnitude ≤ 10 leaves two orders of margin while still catching any
 * semantic slip, e.g. a missing m² moves logits by > 0.1), the 16-token
 * greedy continuation identical, incremental decode over the latent cache
 * equal to one full pass (≤ 1e-5 relative), and the expanded and absorbed
 * attention forms equal (≤ 1e-5 relative).
 */
#include "check.h"
#include "error.h"
#include "golden.h"
#include "model.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_GREEDY 16

static void open_model(Model *m, const char *name, int form)
{
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    ModelOptions opt = { .form = form, .chunk = 7 }; /* an odd chunk: prompts span several chunks */
    if (model_open(m, dir, &opt)) fail_msg("%s", ds_last_error());
}

/* Logits at every prompt position, and the greedy continuation, against transformers. */
static void matches_transformers(void **state)
{
    const char *name = *state;
    Golden g;
    golden_load(&g, name);
    Model m;
    open_model(&m, name, 0);
    assert_int_equal(g.V, m.cfg->vocab_size);
    float *logits = malloc(sizeof(float) * (size_t)g.T * g.V);
    poison(logits, (size_t)g.T * g.V);
    assert_int_equal(model_forward(&m, g.ids, g.T, logits, true), 0);
    check_close(name, logits, g.logits->data, (size_t)g.T * g.V, 1e-4, -1);

    int next = golden_argmax(logits + (size_t)(g.T - 1) * g.V, g.V);
    for (int i = 0; i < N_GREEDY; i++) {
        assert_int_equal(next, g.ids[g.T + i]);
        poison(logits, g.V);
        assert_int_equal(model_forward(&m, &next, 1, logits, false), 0);
        next = golden_argmax(logits, g.V);
    }
    free(logits);
    model_close(&m);
    golden_close(&g);
}

/* Runs prompt + continuation in one pass, or prompt then one token at a time. */
static float *run_logits(const char *name, const Golden *g, int form, bool incremental)
{
    const int n = g->T + N_GREEDY;
    Model m;
    open_model(&m, name, form);
    float *logits = malloc(sizeof(float) * (size_t)n * g->V);
    poison(logits, (size_t)n * g->V);
    if (!incremental) {
        assert_int_equal(model_forward(&m, g->ids, n, logits, true), 0);
    } else {
        assert_int_equal(model_forward(&m, g->ids, g->T, logits, true), 0);
        for (int t = g->T; t < n; t++)
            assert_int_equal(model_forward(&m, &g->ids[t], 1, logits + (size_t)t * g->V, false), 0);
    }
    model_close(&m);
    return logits;
}

/* The latent cache carries the past exactly: decode step by step = one full pass. */
static void incremental_equals_full(void **state)
{
    const char *name = *state;
    Golden g;
    golden_load(&g, name);
    const size_t n = (size_t)(g.T + N_GREEDY) * g.V;
    float *full = run_logits(name, &g, 1, false), *inc = run_logits(name, &g, 0, true);
    check_close("incremental vs full", inc, full, n, -1, 1e-5);
    free(full);
    free(inc);
    golden_close(&g);
}

/* Weight absorption changes the order of operations, not the function. */
static void absorbed_equals_expanded(void **state)
{
    const char *name = *state;
    Golden g;
    golden_load(&g, name);
    const size_t n = (size_t)(g.T + N_GREEDY) * g.V;
    float *expanded = run_logits(name, &g, 1, false), *absorbed = run_logits(name, &g, 2, false);
    check_close("absorbed vs expanded", absorbed, expanded, n, -1, 1e-5);
    free(expanded);
    free(absorbed);
    golden_close(&g);
}

/* Three tests per fixture, named "<fixture>: <test>"; the fixture name is the test's state. */
#define FIXTURE_TESTS(name)                                                                          \
    { name ": matches transformers", matches_transformers, NULL, NULL, name },                       \
        { name ": incremental decode equals full pass", incremental_equals_full, NULL, NULL, name }, \
    {                                                                                                \
        name ": absorbed equals expanded", absorbed_equals_expanded, NULL, NULL, name                \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TESTS("lite"),    FIXTURE_TESTS("v2"),  FIXTURE_TESTS("norope"),
        FIXTURE_TESTS("longctx"), FIXTURE_TESTS("eps"),
    };
    return cmocka_run_group_tests_name("golden", tests, NULL, NULL);
}
