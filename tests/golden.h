/**
 * \file golden.h
 * \brief The golden fixtures (tests/golden/, made by tools/make_golden.py) as the suites read them.
 *
 * Each fixture directory holds a checkpoint and expected.safetensors with transformers' prompt ids,
 * logits at every prompt position and a greedy continuation (ids stored as F32, exact below 2^24).
 * Every function fails the calling CMocka test with the reader's error line instead of returning one.
 */
#ifndef DSV2_TESTS_GOLDEN_H
#define DSV2_TESTS_GOLDEN_H

#include "safetensors.h"

#include <stddef.h>

#define GOLDEN_DIR     "tests/golden/" /**< relative to the repository root, where make test runs */
#define GOLDEN_MAX_IDS 256             /**< prompt + continuation tokens a Golden holds */

/** One fixture's expected values. */
typedef struct {
    StFile expected;         /**< expected.safetensors, open until golden_close() */
    const StTensor *logits;  /**< [T, V] transformers' float32 logits at every prompt position */
    int T;                   /**< prompt tokens */
    int n_greedy;            /**< tokens of the greedy continuation */
    int V;                   /**< vocabulary size */
    int ids[GOLDEN_MAX_IDS]; /**< the prompt, then the greedy continuation */
} Golden;

/** Opens fixture name's expected values into g. */
void golden_load(Golden *g, const char *name);
/** Closes what golden_load() opened. */
void golden_close(Golden *g);
/** The fixture's directory, GOLDEN_DIR name, into dir[n]. */
void golden_dir(char *dir, size_t n, const char *name);
/** The C reference's logits [n, V] for ids[0..n) of fixture name in one pass (all positions); free() them. */
float *golden_ref_logits(const char *name, const int *ids, int n, int V);
/** The first index of the largest of x[0..n) (the greedy token, lowest id on ties). */
int golden_argmax(const float *x, int n);

#endif
