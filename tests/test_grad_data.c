/**
 * \file test_grad_data.c
 * \brief The training data loader (ref/train_data.c): packing, fixed-seed shuffling, errors.
 *
 * Evidence: the ids must be the tokenizer's encoding of the file (BOS first); one epoch must
 * visit every window i = ids[iT .. iT + T] exactly once, so every id after the first is a target
 * once; the next epoch is a different permutation; the same seed reproduces the order and another
 * seed changes it; over 1000 seeds each window is first about equally often (a wrong Fisher–Yates,
 * e.g. j drawn from [0, S) at every step, skews this); bad input gives one line naming the file.
 */
#include "check.h"
#include "error.h"
#include "tokenizer.h"
#include "train_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char TEXT[] = "In the beginning God created the heaven and the earth.\n"
                           "And the earth was without form, and void; and darkness was upon the face of the deep.\n"
                           "And the Spirit of God moved upon the face of the waters.\n"
                           "And God said, Let there be light: and there was light.\n"
                           "And God saw the light, that it was good: and God divided the light from the darkness.\n";

typedef struct {
    char dir[64];
    char path[96];
    Tokenizer *tok;
} Fixture;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    Fixture *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/dsv2_train_data_XXXXXX");
    if (!mkdtemp(fx->dir)) return -1;
    snprintf(fx->path, sizeof fx->path, "%s/corpus.txt", fx->dir);
    FILE *f = fopen(fx->path, "w");
    if (!f) return -1;
    fputs(TEXT, f);
    fclose(f);
    fx->tok = tokenizer_load("models/tiny-kjv");
    if (!fx->tok) {
        fprintf(stderr, "%s\n", ds_last_error());
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    Fixture *fx = *state;
    char p[128];
    snprintf(p, sizeof p, "%s/short.txt", fx->dir);
    unlink(p);
    unlink(fx->path);
    rmdir(fx->dir);
    tokenizer_free(fx->tok);
    free(fx);
    return 0;
}

enum { T = 8 };

/* One epoch's window indices, checked to be a permutation of 0..S−1. */
static void epoch(TrainData *d, size_t *idx)
{
    char *seen = calloc(d->n_seqs, 1);
    for (size_t k = 0; k < d->n_seqs; k++) {
        const int32_t *w = train_data_next(d);
        const size_t off = (size_t)(w - d->ids);
        assert_int_equal(off % T, 0);
        idx[k] = off / T;
        assert_true(idx[k] < d->n_seqs);
        assert_false(seen[idx[k]]);
        seen[idx[k]] = 1;
    }
    free(seen);
}

static void packing_visits_every_window_once(void **state)
{
    Fixture *fx = *state;
    int32_t want[512];
    const long n = tokenizer_encode(fx->tok, TEXT, strlen(TEXT), TOKENIZER_ADD_SPECIAL, want, 512);
    assert_true(n > 3 * T && n < 512);
    TrainData d;
    if (train_data_open(&d, fx->path, fx->tok, T, 7)) fail_msg("%s", ds_last_error());
    assert_int_equal(d.n_ids, n);
    assert_memory_equal(d.ids, want, sizeof(int32_t) * n);
    assert_int_equal(want[0], tokenizer_bos_id(fx->tok));
    assert_int_equal(d.n_seqs, (size_t)(n - 1) / T);
    size_t a[512], b[512];
    epoch(&d, a);
    epoch(&d, b); /* epoch 1: another permutation */
    assert_int_equal(d.epoch, 1);
    assert_true(memcmp(a, b, sizeof(size_t) * d.n_seqs) != 0);
    train_data_close(&d);
}

static void same_seed_same_order(void **state)
{
    Fixture *fx = *state;
    TrainData d1, d2, d3;
    if (train_data_open(&d1, fx->path, fx->tok, T, 1611) || train_data_open(&d2, fx->path, fx->tok, T, 1611) ||
        train_data_open(&d3, fx->path, fx->tok, T, 1612))
        fail_msg("%s", ds_last_error());
    int differs = 0;
    for (size_t k = 0; k < 3 * d1.n_seqs; k++) { /* three epochs */
        const int32_t *w1 = train_data_next(&d1), *w2 = train_data_next(&d2), *w3 = train_data_next(&d3);
        assert_int_equal(w1 - d1.ids, w2 - d2.ids);
        differs |= (w1 - d1.ids) != (w3 - d3.ids);
    }
    assert_true(differs);
    train_data_close(&d1);
    train_data_close(&d2);
    train_data_close(&d3);
}

static void first_window_is_uniform_over_seeds(void **state)
{
    Fixture *fx = *state;
    enum { SEEDS = 1000 };
    TrainData d;
    if (train_data_open(&d, fx->path, fx->tok, T, 0)) fail_msg("%s", ds_last_error());
    const size_t S = d.n_seqs;
    int count[512] = { 0 };
    for (int s = 0; s < SEEDS; s++) {
        train_data_close(&d);
        if (train_data_open(&d, fx->path, fx->tok, T, (uint64_t)s)) fail_msg("%s", ds_last_error());
        count[(train_data_next(&d) - d.ids) / T]++;
    }
    /* each count is Binomial(1000, 1/S): within 5 standard deviations of 1000/S */
    const double mean = (double)SEEDS / S, sd = sqrt(SEEDS * (1.0 / S) * (1 - 1.0 / S));
    for (size_t i = 0; i < S; i++)
        if (fabs(count[i] - mean) > 5 * sd)
            fail_msg("window %zu first %d times of %d (expected %.1f)", i, count[i], SEEDS, mean);
    train_data_close(&d);
}

static void bad_input_is_one_line(void **state)
{
    Fixture *fx = *state;
    TrainData d;
    char path[128], want[256];
    snprintf(path, sizeof path, "%s/missing.txt", fx->dir);
    assert_int_equal(train_data_open(&d, path, fx->tok, T, 1), -1);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    assert_string_equal(ds_last_error(), want);
    assert_int_equal(train_data_open(&d, fx->dir, fx->tok, T, 1), -1);
    snprintf(want, sizeof want, "%s: not a regular file", fx->dir);
    assert_string_equal(ds_last_error(), want);
    snprintf(path, sizeof path, "%s/short.txt", fx->dir);
    write_file(path, "In the");
    assert_int_equal(train_data_open(&d, path, fx->tok, T, 1), -1);
    assert_non_null(strstr(ds_last_error(), "tokens, fewer than one sequence of 8 + 1"));
    assert_int_equal(train_data_open(&d, fx->path, fx->tok, 0, 1), -1);
    assert_string_equal(ds_last_error(), "sequence length 0: must be at least 1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(packing_visits_every_window_once),
        cmocka_unit_test(same_seed_same_order),
        cmocka_unit_test(first_window_is_uniform_over_seeds),
        cmocka_unit_test(bad_input_is_one_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
