/**
 * \file test_bundled.c
 * \brief The bundled model (models/tiny-kjv) end to end: tokenizer, reference logits,
 *        greedy text, and `dsv2 chat`.
 *
 * Expected values come from transformers running the same files in float32
 * (tests/golden/tiny, made by tools/make_tiny_golden.py): the prompt's ids, the
 * logits at every prompt position (held to 1e-4 max-abs, as the golden fixtures:
 * summation order and libm ulps only) and a 32-token greedy continuation made
 * with transformers' KV cache, which the reference must reproduce exactly
 * through its own latent cache.
 */
#include "check.h"
#include "error.h"
#include "model.h"
#include "safetensors.h"
#include "sample.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL  "models/tiny-kjv"
#define PROMPT "And God said unto Moses,"

typedef struct {
    StFile f;
    int ids[64], T, n_greedy, V;
    const float *logits;
} Expected;

static void load_expected(Expected *x)
{
    if (st_open("tests/golden/tiny/tiny.safetensors", &x->f)) fail_msg("%s", ds_last_error());
    const StTensor *p = st_find(&x->f, "prompt_ids"), *g = st_find(&x->f, "greedy_ids");
    const StTensor *l = st_find(&x->f, "logits");
    assert_true(p && g && l);
    x->T = (int)p->shape[0];
    x->n_greedy = (int)g->shape[0];
    x->V = (int)l->shape[1];
    assert_true(x->T + x->n_greedy <= 64);
    for (int i = 0; i < x->T; i++) x->ids[i] = (int)((const float *)p->data)[i];
    for (int i = 0; i < x->n_greedy; i++) x->ids[x->T + i] = (int)((const float *)g->data)[i];
    x->logits = l->data;
}

/* The C tokenizer gives transformers' ids for the prompt (BOS included). */
static void tokenizer_matches(void **state)
{
    (void)state;
    Expected x;
    load_expected(&x);
    Tokenizer *tok = tokenizer_load(MODEL);
    if (!tok) fail_msg("%s", ds_last_error());
    int32_t ids[64];
    long n = tokenizer_encode(tok, PROMPT, strlen(PROMPT), TOKENIZER_ADD_SPECIAL, ids, 64);
    assert_int_equal(n, x.T);
    for (int i = 0; i < x.T; i++) assert_int_equal(ids[i], x.ids[i]);
    tokenizer_free(tok);
    st_close(&x.f);
}

/* Logits at every prompt position, then 32 greedy tokens through the latent cache. */
static void reference_matches_transformers(void **state)
{
    (void)state;
    Expected x;
    load_expected(&x);
    Model m;
    if (model_open(&m, MODEL, NULL)) fail_msg("%s", ds_last_error());
    assert_int_equal(m.cfg->vocab_size, x.V);
    float *logits = malloc(sizeof(float) * (size_t)x.T * x.V);
    poison(logits, (size_t)x.T * x.V);
    assert_int_equal(model_forward(&m, x.ids, x.T, logits, true), 0);
    check_close("tiny-kjv logits", logits, x.logits, (size_t)x.T * x.V, 1e-4, -1);
    int next = sample_argmax(logits + (size_t)(x.T - 1) * x.V, x.V);
    for (int i = 0; i < x.n_greedy; i++) {
        assert_int_equal(next, x.ids[x.T + i]);
        poison(logits, x.V);
        assert_int_equal(model_forward(&m, &next, 1, logits, false), 0);
        next = sample_argmax(logits, x.V);
    }
    free(logits);
    model_close(&m);
    st_close(&x.f);
}

/* Runs a shell command, returns its exit status and stdout+stderr. */
static int shell(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `dsv2 chat` answers two turns with history; a reply that reaches the end of the context stops there. */
static void chat_two_turns_and_context_guard(void **state)
{
    (void)state;
    static char out[1 << 16];
    int rc = shell("printf 'Who made the heaven?\\nAnd the earth?\\n' | build/dsv2 chat -m " MODEL
                   " -n 12 -t 0.8 --seed 7 2>&1",
                   out, sizeof out);
    if (rc != 0) fail_msg("dsv2 chat exited %d:\n%s", rc, out);
    int prompts = 0;
    for (const char *p = out; (p = strstr(p, "> ")); p += 2) prompts++;
    assert_int_equal(prompts, 3); /* two turns, then the quit prompt */
    rc = shell("printf 'Hello\\n' | build/dsv2 chat -m " MODEL " -n 2000 2>&1", out, sizeof out);
    assert_int_equal(rc, 0); /* the reply stops, the chat goes on */
    if (!strstr(out, "reply stopped: the context of 1024 tokens is full; /reset starts a new conversation"))
        fail_msg("no context-guard message in:\n%s", out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tokenizer_matches),
        cmocka_unit_test(reference_matches_transformers),
        cmocka_unit_test(chat_two_turns_and_context_guard),
    };
    return cmocka_run_group_tests_name("bundled model", tests, NULL, NULL);
}
