/**
 * \file test_fast_batch.c
 * \brief Batched multi-sequence decode on the fast path (fast_model_prefill, fast_model_decode,
 *        fast_model_reset_slot) against the reference model run on each sequence alone.
 *
 * Sequences are built from each golden fixture's prompt: prefixes of different
 * lengths (the fixture prompt shortened by 5 tokens per sequence, down to half),
 * every id shifted by 37·i modulo the vocabulary and every other sequence
 * reversed. A model with B + 1 slots serves B rows at a time over B + 3 sequences: the first B
 * sequences are prefilled into slots taken from the top (so rows and slots
 * differ and one slot stays unused), then batched decode steps run with the
 * rows in a rotating order; each sequence decodes its own number of tokens
 * (4 to 10), and a finished sequence's slot is reset and refilled with the
 * next sequence's prompt, so slots finish and restart at different steps and
 * the batch shrinks at the end. Every prompt's last logits and every decode
 * row are compared with an independent ref/ Model run on that sequence alone
 * (prompt, then the reference's greedy tokens one at a time); the output buffer
 * is NaN-poisoned before each call.
 *
 * float32 mode: every row within 1e-4 max-abs of the reference (the limit
 * tests/test_fast_model.c uses for one sequence: the same float32 arithmetic in
 * another order) and the greedy token of every row identical. bf16 mode (lite
 * only, as the brief of this suite asks): finite everywhere and the reference's
 * top-1 token on ≥ 95 % of the rows, the figure test_fast_model.c asserts for
 * lite. The models hold 96 positions per slot, so the split decode's grid has
 * two 64-key splits and sequences shorter than 64 leave the second one idle.
 *
 * Error cases: slot out of range, duplicate slots, token outside the
 * vocabulary, a full context and a bad batch size, each one ds_error line naming
 * the slot or token, with nothing fed.
 *
 * On the simulated device this runs with race checking on (SIM_RACECHECK=1);
 * built for a real GPU (make fast-gpu) it skips when cudaGetDeviceCount finds none.
 */
#include "check.h"
#include "fast_test.h"
#include "golden.h"
#include "error.h"
#include "fast.h"
#include "model.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONTEXT 96 /* positions per slot: the longest sequence (longctx, 80 + 10) fits */
#define MAX_SEQ     8  /* sequences of one run */
#define MAX_PROMPT  128

/** One sequence: its prompt, the reference's greedy continuation and logits. */
typedef struct {
    int n_prompt; /* prompt length */
    int prompt[MAX_PROMPT];
    int n_decode;   /* decode steps */
    int tokens[16]; /* tokens[k]: fed at decode step k, = arg max of logits[k] */
    float *logits;  /* [(n_decode + 1), V]: after the prompt, then after each decode step */
} Sequence;

/* The fixture prompt's ids into *ids; returns its length and the vocabulary size in *V. */
static int fixture_prompt(const char *name, int *ids, int *V)
{
    Golden g;
    golden_load(&g, name);
    assert_true(g.T <= MAX_PROMPT);
    memcpy(ids, g.ids, sizeof(int) * (size_t)g.T);
    *V = g.V;
    golden_close(&g);
    return g.T;
}

/*
 * Sequence i: a prefix of the fixture prompt (T − 5·i mod T/2 tokens), ids shifted by 37·i mod V,
 * odd i reversed; 4 + 3·i mod 7 decode steps. Its reference logits come from ref Model m, reset first.
 */
static void build_sequence(Sequence *s, Model *m, const int *fixture, int T, int V, int i)
{
    s->n_prompt = T - (5 * i) % (T / 2);
    for (int t = 0; t < s->n_prompt; t++) s->prompt[t] = (fixture[i % 2 ? s->n_prompt - 1 - t : t] + 37 * i) % V;
    s->n_decode = 4 + (3 * i) % 7;
    s->logits = malloc(sizeof(float) * (size_t)(s->n_decode + 1) * V);
    model_reset(m);
    assert_int_equal(model_forward(m, s->prompt, s->n_prompt, s->logits, false), 0);
    for (int k = 0; k < s->n_decode; k++) {
        s->tokens[k] = golden_argmax(s->logits + (size_t)k * V, V);
        assert_int_equal(model_forward(m, &s->tokens[k], 1, s->logits + (size_t)(k + 1) * V, false), 0);
    }
}

/** Tallies of one run. */
typedef struct {
    bool bf16;
    int V;
    int rows, agree; /* rows compared, rows whose arg max is the reference's */
    double max_abs;  /* worst max-abs difference seen */
} Tally;

/* Compares one row of fast logits with the reference row; float32: ≤ 1e-4 and the same arg max. */
static void compare_row(Tally *ty, const char *what, const float *got, const float *want)
{
    const CheckStats st = check_stats(got, want, (size_t)ty->V);
    if (st.max_abs > ty->max_abs) ty->max_abs = st.max_abs;
    const bool same = golden_argmax(got, ty->V) == golden_argmax(want, ty->V);
    ty->rows++;
    ty->agree += same;
    if (ty->bf16) {
        check_close(what, got, want, (size_t)ty->V, -1, -1); /* finite */
    } else {
        check_close(what, got, want, (size_t)ty->V, 1e-4, -1);
        if (!same)
            fail_msg("%s: greedy token %d, the reference's %d", what, golden_argmax(got, ty->V),
                     golden_argmax(want, ty->V));
    }
}

/* Prefills sequence q into slot and compares its last logits. */
static void prefill(FastModel *fm, Tally *ty, const Sequence *s, int q, int slot, float *got)
{
    char what[64];
    poison(got, (size_t)ty->V);
    if (fast_model_prefill(fm, slot, s->prompt, s->n_prompt, got, false)) fail_msg("%s", ds_last_error());
    assert_int_equal(fm->pos[slot], s->n_prompt);
    snprintf(what, sizeof what, "sequence %d prompt (slot %d)", q, slot);
    compare_row(ty, what, got, s->logits);
}

/* B rows at a time over n_seq sequences, as the file comment describes. */
static void run_batch(const char *name, bool bf16, int B)
{
    int fixture[MAX_PROMPT], V;
    const int T = fixture_prompt(name, fixture, &V);
    const int n_seq = B + 3;
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    Model ref;
    if (model_open(&ref, dir, NULL)) fail_msg("%s", ds_last_error());
    Sequence seq[MAX_SEQ];
    for (int i = 0; i < n_seq; i++) build_sequence(&seq[i], &ref, fixture, T, V, i);
    model_close(&ref);

    FastModel fm;
    const FastOptions opt = { .bf16 = bf16, .chunk = 7, .max_context = MAX_CONTEXT, .max_batch = B + 1 };
    if (fast_model_open(&fm, dir, &opt)) fail_msg("%s", ds_last_error());
    Tally ty = { .bf16 = bf16, .V = V };
    float *got = malloc(sizeof(float) * (size_t)B * V);
    int slot_seq[MAX_SEQ + 1], step_of[MAX_SEQ] = { 0 }, next = 0, steps = 0;
    for (int s = 0; s <= B; s++) slot_seq[s] = -1;
    for (int s = B; s >= 1; s--) { /* slots from the top; slot 0 stays unused */
        slot_seq[s] = next;
        prefill(&fm, &ty, &seq[next], next, s, got);
        next++;
    }
    for (;;) {
        int live[MAX_SEQ + 1], n = 0;
        for (int s = 0; s <= B; s++)
            if (slot_seq[s] >= 0) live[n++] = s;
        if (n == 0) break;
        int slots[MAX_SEQ + 1], tokens[MAX_SEQ + 1];
        for (int r = 0; r < n; r++) { /* rows in a rotating order */
            slots[r] = live[(r + steps) % n];
            const int q = slot_seq[slots[r]];
            tokens[r] = seq[q].tokens[step_of[q]];
        }
        poison(got, (size_t)n * V);
        if (fast_model_decode(&fm, slots, tokens, n, got)) fail_msg("%s", ds_last_error());
        for (int r = 0; r < n; r++) {
            const int s = slots[r], q = slot_seq[s];
            char what[80];
            step_of[q]++;
            snprintf(what, sizeof what, "step %d row %d: sequence %d (slot %d) token %d", steps, r, q, s, step_of[q]);
            compare_row(&ty, what, got + (size_t)r * V, seq[q].logits + (size_t)step_of[q] * V);
            assert_int_equal(fm.pos[s], seq[q].n_prompt + step_of[q]);
            if (step_of[q] < seq[q].n_decode) continue;
            slot_seq[s] = -1; /* finished: the slot is reset, maybe refilled */
            assert_int_equal(fast_model_reset_slot(&fm, s), 0);
            if (next < n_seq) {
                slot_seq[s] = next;
                prefill(&fm, &ty, &seq[next], next, s, got + (size_t)r * V);
                next++;
            }
        }
        steps++;
    }
    assert_int_equal(next, n_seq);
    assert_true(steps >= 8);
    printf("%s %s B %d: %d sequences, %d steps, %d rows, top-1 %d/%d, max-abs %.3g\n", name, bf16 ? "bf16" : "float32",
           B, n_seq, steps, ty.rows, ty.agree, ty.rows, ty.max_abs);
    if (bf16) assert_true(ty.agree * 100 >= 95 * ty.rows);
    fast_model_close(&fm);
    free(got);
    for (int i = 0; i < n_seq; i++) free(seq[i].logits);
}

/** What one test runs: fixture, precision, rows per step. */
typedef struct {
    const char *name;
    bool bf16;
    int B;
} Case;

static void batch_matches_reference(void **state)
{
    need_device();
    const Case *c = *state;
    run_batch(c->name, c->bf16, c->B);
}

/* Fails unless the last call failed with an error line containing want. */
static void expect_error(int rc, const char *want)
{
    assert_int_equal(rc, -1);
    if (!strstr(ds_last_error(), want)) fail_msg("error '%s' does not name '%s'", ds_last_error(), want);
}

static void errors_name_the_slot_or_token(void **state)
{
    (void)state;
    need_device();
    FastModel fm;
    const FastOptions opt = { .chunk = 3, .max_context = 8, .max_batch = 3 };
    if (fast_model_open(&fm, GOLDEN_DIR "lite", &opt)) fail_msg("%s", ds_last_error());
    const int V = fm.cfg->vocab_size, prompt[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    float *got = malloc(sizeof(float) * 3 * (size_t)V);

    expect_error(fast_model_prefill(&fm, 3, prompt, 2, got, false), "slot 3");
    expect_error(fast_model_prefill(&fm, -1, prompt, 2, got, false), "slot -1");
    const int bad_prompt[2] = { 4, V };
    expect_error(fast_model_prefill(&fm, 1, bad_prompt, 2, got, false), "token id 512 at position 1 of slot 1");
    expect_error(fast_model_reset_slot(&fm, 3), "slot 3");
    assert_int_equal(fm.pos[1], 0);

    const int s01[2] = { 0, 1 }, s00[2] = { 0, 0 }, s05[2] = { 0, 5 }, s012[4] = { 0, 1, 2, 0 },
              tok[4] = { 1, 2, 3, 4 };
    expect_error(fast_model_decode(&fm, s00, tok, 2, got), "slot 0 appears twice");
    expect_error(fast_model_decode(&fm, s05, tok, 2, got), "slot 5");
    expect_error(fast_model_decode(&fm, s012, tok, 4, got), "4 sequences");
    expect_error(fast_model_decode(&fm, s01, tok, 0, got), "0 sequences");
    const int bad_tok[2] = { 1, -1 };
    expect_error(fast_model_decode(&fm, s01, bad_tok, 2, got), "token id -1 for slot 1");

    /* slot 1 full: the step is refused as a whole, slot 0 not fed; after a reset it goes on */
    if (fast_model_prefill(&fm, 1, prompt, 8, NULL, false)) fail_msg("%s", ds_last_error());
    expect_error(fast_model_decode(&fm, s01, tok, 2, got), "slot 1: the context of 8 positions is full");
    expect_error(fast_model_prefill(&fm, 1, prompt, 1, got, false), "slot 1");
    assert_int_equal(fm.pos[0], 0);
    assert_int_equal(fm.pos[1], 8);
    assert_int_equal(fast_model_reset_slot(&fm, 1), 0);
    poison(got, 2 * (size_t)V);
    if (fast_model_decode(&fm, s01, tok, 2, got)) fail_msg("%s", ds_last_error());
    check_close("after the reset", got, got, 2 * (size_t)V, -1, -1); /* both rows written, finite */
    assert_int_equal(fm.pos[0], 1);
    assert_int_equal(fm.pos[1], 1);
    fast_model_close(&fm);
    free(got);
}

#define CASE(label, ...)                                    \
    {                                                       \
        label, batch_matches_reference, NULL, NULL, &(Case) \
        {                                                   \
            __VA_ARGS__                                     \
        }                                                   \
    }

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0); /* every simulated launch under three thread orders */
    const struct CMUnitTest tests[] = {
        CASE("lite float32, B 1", "lite", false, 1),
        CASE("lite float32, B 3", "lite", false, 3),
        CASE("lite float32, B 5", "lite", false, 5),
        CASE("v2 float32, B 3", "v2", false, 3),
        CASE("longctx float32, B 5 (prompts across two 64-key splits)", "longctx", false, 5),
        CASE("lite bf16, B 1", "lite", true, 1),
        CASE("lite bf16, B 3", "lite", true, 3),
        CASE("lite bf16, B 5", "lite", true, 5),
        cmocka_unit_test(errors_name_the_slot_or_token),
    };
    return cmocka_run_group_tests_name("fast batch", tests, NULL, NULL);
}
