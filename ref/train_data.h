/**
 * \file train_data.h
 * \brief Training sequences from a text file: tokenize, pack, shuffle with a fixed seed.
 *
 * The whole file is encoded once with the model's tokenizer (BOS first, as the tokenizer adds it)
 * into one stream of N ids. Packing cuts the stream into S = ⌊(N − 1) / T⌋ windows of T + 1 ids,
 * window i = ids[i·T .. i·T + T]: its first T ids are the inputs, its last T the targets, and
 * consecutive windows share one id, so every id after the first is a target exactly once per epoch
 * (the last (N − 1) mod T ids are left out). Each epoch visits the windows in a Fisher–Yates
 * permutation drawn from SplitMix64 seeded with (seed, epoch): the same seed gives the same
 * sequences in the same order on every machine.
 */
#ifndef DSV2_TRAIN_DATA_H
#define DSV2_TRAIN_DATA_H

#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/** A packed, shuffled token stream. */
typedef struct {
    int32_t *ids;  /**< [n_ids] the tokenized file */
    size_t n_ids;  /**< N */
    int seq_len;   /**< T: inputs per sequence (a window holds T + 1 ids) */
    size_t n_seqs; /**< S, windows per epoch */
    size_t *order; /**< [n_seqs] this epoch's window order */
    uint64_t seed; /**< the shuffle seed */
    int epoch;     /**< epochs started (the first is 0) */
    size_t next;   /**< next position in order */
} TrainData;

/**
 * Reads and tokenizes the text file at path, packs windows of seq_len + 1 ids and shuffles
 * epoch 0. \return 0, or −1 with one error line naming the file (unreadable, not a regular file,
 * too short for one window) or the argument (seq_len < 1).
 */
int train_data_open(TrainData *d, const char *path, const Tokenizer *tok, int seq_len, uint64_t seed);

/** Frees what train_data_open() allocated. */
void train_data_close(TrainData *d);

/**
 * The next window: seq_len + 1 ids (inputs = w[0..T), targets = w[1..T]), valid until
 * train_data_close(). After the last window of an epoch the next epoch is shuffled and begins.
 */
const int32_t *train_data_next(TrainData *d);

#endif
