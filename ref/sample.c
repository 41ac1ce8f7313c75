/**
 * \file sample.c
 * \brief Token sampling (see sample.h).
 */
#include "sample.h"

#include "error.h"

#include <math.h>
#include <stdlib.h>

int sampler_init(Sampler *s, int vocab, float temperature, float top_p, uint64_t seed)
{
    s->temperature = temperature;
    s->top_p = top_p;
    s->top_k = 0;
    s->rng = seed ? seed : 0x853c49e6748fea9bull;
    s->vocab = vocab;
    s->order = malloc(sizeof(int) * vocab);
    s->prob = malloc(sizeof(float) * vocab);
    if (!s->order || !s->prob) {
        sampler_free(s);
        return ds_error("out of memory for a sampler over %d tokens", vocab);
    }
    return 0;
}

void sampler_free(Sampler *s)
{
    free(s->order);
    free(s->prob);
    s->order = NULL;
    s->prob = NULL;
}

int sample_argmax(const float *logits, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* Uniform in [0, 1) with 24 random bits (xorshift64*). */
static float uniform(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (float)((*state * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int by_prob_desc(const void *a, const void *b, void *prob)
{
    float x = ((const float *)prob)[*(const int *)a], y = ((const float *)prob)[*(const int *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const int *)a - *(const int *)b;
}

// ANCHOR: sample_next
int sample_next(Sampler *s, const float *logits)
{
    const int V = s->vocab;
    if (s->temperature <= 0) return sample_argmax(logits, V);
    /* p_i = softmax(logits / T) */
    float max = logits[sample_argmax(logits, V)], sum = 0;
    for (int i = 0; i < V; i++) {
        s->prob[i] = expf((logits[i] - max) / s->temperature);
        sum += s->prob[i];
    }
    for (int i = 0; i < V; i++) s->prob[i] /= sum;
    for (int i = 0; i < V; i++) s->order[i] = i;
    int n = V;
    float mass = 1;
    const int k = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    if (k < V || s->top_p < 1) {
        qsort_r(s->order, V, sizeof(int), by_prob_desc, s->prob);
        float kept = 0; /* top-k: the k most probable, their mass */
        for (int i = 0; i < k; i++) kept += s->prob[s->order[i]];
        /* nucleus: the most probable of those until their share of it reaches top_p */
        for (n = 0, mass = 0; n < k && (n == 0 || mass < s->top_p * kept);) mass += s->prob[s->order[n++]];
    }
    float r = uniform(&s->rng) * mass, acc = 0;
    for (int k = 0; k < n; k++) {
        acc += s->prob[s->order[k]];
        if (r < acc) return s->order[k];
    }
    return s->order[n - 1];
}
// ANCHOR_END: sample_next

// ANCHOR: repeat_penalty
void sample_repeat_penalty(float *logits, int vocab, const int *recent, int n, float penalty)
{
    for (int i = 0; i < n; i++) {
        const int id = recent[i];
        int seen = id < 0 || id >= vocab; /* out of range, or penalised already */
        for (int j = 0; j < i && !seen; j++) seen = recent[j] == id;
        if (!seen) logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
    }
}
// ANCHOR_END: repeat_penalty
