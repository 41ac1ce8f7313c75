/**
 * \file sample.h
 * \brief Choosing the next token from logits: greedy, temperature, top-p (nucleus), seeded.
 */
#ifndef DSV2_SAMPLE_H
#define DSV2_SAMPLE_H

#include <stdint.h>

/** Sampling settings and state. */
typedef struct {
    float temperature; /**< 0 = greedy (argmax; the lowest id wins ties) */
    float top_p;       /**< keep the smallest set of tokens whose probability reaches top_p (1 = all) */
    uint64_t rng;      /**< xorshift64* state, from the seed */
    int vocab;         /**< vocabulary size */
    int *order;        /**< [vocab] working memory: candidate ids */
    float *prob;       /**< [vocab] working memory: probabilities */
} Sampler;

/** Prepares a sampler. seed 0 is replaced by a fixed non-zero constant. \return 0 or −1. */
int sampler_init(Sampler *s, int vocab, float temperature, float top_p, uint64_t seed);
/** Frees what sampler_init() allocated. */
void sampler_free(Sampler *s);

/** The index of the largest logit (lowest index on ties). */
int sample_argmax(const float *logits, int n);

/** Draws the next token from logits [vocab] (not modified). */
int sample_next(Sampler *s, const float *logits);

#endif
