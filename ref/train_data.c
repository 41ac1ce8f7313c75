/**
 * \file train_data.c
 * \brief Tokenize, pack and shuffle a text file for training (see train_data.h).
 */
#include "train_data.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The whole of a regular file, NUL-terminated, in *out (*n bytes). */
static int read_text(const char *path, char **out, size_t *n)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return ds_error("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ds_error("%s: not a regular file", path);
    }
    const size_t size = (size_t)sb.st_size;
    size_t got = 0;
    char *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return ds_error("%s: out of memory for %zu bytes", path, size);
    }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        free(buf);
        return ds_error("%s: read %zu of %zu bytes", path, got, size);
    }
    buf[size] = 0;
    *out = buf;
    *n = size;
    return 0;
}

// ANCHOR: train_data_shuffle
/* SplitMix64: a 64-bit counter through a fixed mixing function (Steele, Lea, Flood 2014). */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Epoch e's order: Fisher–Yates over 0..S−1, the generator seeded from (seed, e). */
static void shuffle(TrainData *d)
{
    uint64_t state = d->seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(d->epoch + 1));
    for (size_t i = 0; i < d->n_seqs; i++) d->order[i] = i;
    for (size_t i = d->n_seqs; i > 1; i--) {
        const size_t j = (size_t)(splitmix64(&state) % i); /* uniform in [0, i) up to 2^-64·i bias */
        const size_t t = d->order[i - 1];
        d->order[i - 1] = d->order[j];
        d->order[j] = t;
    }
    d->next = 0;
}
// ANCHOR_END: train_data_shuffle

int train_data_open(TrainData *d, const char *path, const Tokenizer *tok, int seq_len, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    if (seq_len < 1) return ds_error("sequence length %d: must be at least 1", seq_len);
    char *text = NULL;
    size_t n = 0;
    if (read_text(path, &text, &n)) return -1;
    const size_t cap = 3 * n + 8; /* tokenizer_encode()'s bound: 3 ids a byte + BOS */
    d->ids = malloc(sizeof(int32_t) * cap);
    long got = d->ids ? tokenizer_encode(tok, text, n, TOKENIZER_ADD_SPECIAL, d->ids, cap) : -1;
    free(text);
    if (!d->ids) return ds_error("%s: out of memory for the token ids", path);
    if (got < 0) {
        char why[256]; /* the tokenizer's line, copied before reuse */
        snprintf(why, sizeof why, "%s", ds_last_error());
        train_data_close(d);
        return ds_error("%s: %s", path, why);
    }
    d->n_ids = (size_t)got;
    d->seq_len = seq_len;
    d->seed = seed;
    d->n_seqs = d->n_ids > 0 ? (d->n_ids - 1) / (size_t)seq_len : 0;
    if (d->n_seqs == 0) {
        const size_t have = d->n_ids;
        train_data_close(d);
        return ds_error("%s: %zu tokens, fewer than one sequence of %d + 1", path, have, seq_len);
    }
    d->order = malloc(sizeof(size_t) * d->n_seqs);
    if (!d->order) {
        const size_t S = d->n_seqs;
        train_data_close(d);
        return ds_error("%s: out of memory for %zu sequences", path, S);
    }
    shuffle(d);
    return 0;
}

void train_data_close(TrainData *d)
{
    free(d->ids);
    free(d->order);
    memset(d, 0, sizeof *d);
}

// ANCHOR: train_data_next
const int32_t *train_data_next(TrainData *d)
{
    if (d->next == d->n_seqs) { /* a new epoch, a new permutation */
        d->epoch++;
        shuffle(d);
    }
    return d->ids + d->order[d->next++] * (size_t)d->seq_len;
}
// ANCHOR_END: train_data_next
