/**
 * \file sample.h
 * \brief Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus), a repetition
 * penalty, seeded.
 *
 * With temperature T > 0 the candidates are p_i = softmax(logits / T); top-k keeps the k most probable
 * of them, top-p then keeps the smallest prefix (most probable first) whose share of what top-k kept
 * reaches top_p, and the draw is in proportion to p_i over what is left (llama.cpp's order).
 */
#ifndef DSV2_SAMPLE_H
#define DSV2_SAMPLE_H

#include <stdint.h>

/** Sampling settings and state. */
typedef struct {
    float temperature; /**< 0 = greedy (argmax; the lowest id wins ties) */
    float top_p;       /**< keep the smallest set of tokens whose probability reaches top_p (1 = all) */
    int top_k;         /**< keep the top_k most probable tokens (0 = all); sampler_init() sets 0 */
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

/**
 * The repetition penalty of CTRL (Keskar et al., 2019) as llama.cpp applies it: for every distinct id
 * in recent[0..n), a positive logit is divided by penalty and any other multiplied by it, so penalty > 1
 * makes a token already seen less likely. logits [vocab] is changed in place; penalty 1 leaves it as it
 * was; ids outside [0, vocab) are ignored.
 */
void sample_repeat_penalty(float *logits, int vocab, const int *recent, int n, float penalty);

#endif
