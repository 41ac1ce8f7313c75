/*
 * notebooks-c/absorption.c: expanded versus absorbed MLA, one generated token at a time.
 *
 * Run:  make notebook-absorption            (contexts up to 4096)
 *       build/notebooks/absorption 1024     (contexts up to 1024)
 *
 * Chapter 2 shows that MLA's attention can be computed two ways. The expanded form
 * decompresses, for every cached token and every head, a key k^C = W^UK ĉ and a value
 * v^C = W^UV ĉ, then attends as ordinary multi-head attention. The absorbed form moves
 * W^UK onto the query (q^L = W^UKᵀ q^N) and W^UV after the weighted sum (o = W^UV o^L),
 * and attends directly over the cached latents. This notebook builds one attention layer
 * with DeepSeek-V2-Lite's shapes and random float32 weights, fills its latent cache with n
 * tokens, and decodes one more token both ways with the reference's mla_forward(). It
 * prints, for growing n:
 *
 *   - the multiply-adds each form spends on the part that differs (everything before the
 *     per-head attention and after it, the q/kv/o projections, is shared and left out):
 *       expanded:  n_h · n · (d_n + d_v) · d_c      decompress keys and values
 *                + n_h · n · (d_n + d_r)            scores
 *                + n_h · n · d_v                    weighted sum of values
 *       absorbed:  n_h · d_n · d_c                  q^L = W^UKᵀ q^N
 *                + n_h · n · (d_c + d_r)            scores against [ĉ; k^R]
 *                + n_h · n · d_c                    weighted sum of latents
 *                + n_h · d_v · d_c                  o = W^UV o^L
 *   - the bytes each form moves through memory on that part, counting 2 bytes an element
 *     (bf16, as the weights ship) and a form's intermediate results written once and read
 *     back once:
 *       expanded:  n · (d_c + d_r)                  read the latent cache [ĉ; k^R]
 *                + n_h · (d_n + d_v) · d_c          read W^UK and W^UV
 *                + 2 · n_h · n · (d_n + d_v)        write and re-read the decompressed k^C, v^C
 *       absorbed:  n · (d_c + d_r)                  read the latent cache
 *                + n_h · (d_n + d_v) · d_c          read W^UK and W^UV
 *     (the per-head scores, n_h · n, are the same in both and left out);
 *   - the measured time of one whole mla_forward() call in each form (the shared projections
 *     included), on this machine, one thread;
 *   - the relative L2 difference of the two outputs (the forms re-associate the same sums,
 *     so it stays at float32 rounding; the program fails if it exceeds 1e-5).
 *
 * Times depend on the machine and are not checked; the difference is (tests/test_book.c).
 * With NOTEBOOK_DATA set, the table is also written to that file as plain columns (FLOPs
 * are 2 per multiply-add) for notebooks-c/plots/absorption.gp.
 */
#include "config.h"
#include "mla.h"
#include "rope.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static unsigned long long rng = 0x9e3779b97f4a7c15ull;

static float uniform(float lo, float hi)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return lo + (hi - lo) * (float)((rng * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

/* A float32 matrix of the given shape with entries uniform in ±1/√cols (so outputs stay O(1)). */
static Mat random_mat(int rows, int cols)
{
    float *w = malloc(sizeof(float) * rows * cols);
    if (!w) {
        perror("malloc");
        exit(1);
    }
    const float r = 1.0f / sqrtf((float)cols);
    for (long i = 0; i < (long)rows * cols; i++) w[i] = uniform(-r, r);
    return (Mat){ w, DT_F32, rows, cols };
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Seconds per mla_forward() call for one token at position n − 1 (repeated until ≥ 50 ms). */
static double time_decode(float *out, const float *a, const MlaWeights *w, LatentCache *cache, const ModelConfig *c,
                          const Rope *rope, int n, MlaForm form, MlaScratch *s)
{
    int reps = 0;
    const double t0 = now();
    double t1;
    do {
        mla_forward(out, a, w, cache, c, rope, n - 1, 1, form, s);
        reps++;
        t1 = now();
    } while (t1 - t0 < 0.05);
    return (t1 - t0) / reps;
}

int main(int argc, char **argv)
{
    const int max_n = argc > 1 ? atoi(argv[1]) : 4096;
    if (max_n < 16) {
        fprintf(stderr, "usage: %s [max context >= 16]\n", argv[0]);
        return 2;
    }

    /* DeepSeek-V2-Lite's attention (docs/semantics.md §1.1): no query compression, 16 heads. */
    ModelConfig c = { 0 };
    c.hidden_size = 2048;
    c.num_hidden_layers = 1;
    c.num_attention_heads = 16;
    c.q_lora_rank = 0;
    c.kv_lora_rank = 512;
    c.qk_nope_head_dim = 128;
    c.qk_rope_head_dim = 64;
    c.v_head_dim = 128;
    c.rms_norm_eps = 1e-6f;
    c.max_position_embeddings = 163840;
    c.rope_theta = 10000;
    c.rope_yarn = true;
    c.rope_factor = 40;
    c.rope_original_max_position = 4096;
    c.rope_beta_fast = 32;
    c.rope_beta_slow = 1;
    c.rope_mscale = 0.707f;
    c.rope_mscale_all_dim = 0.707f;
    const long nh = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
    const long dv = c.v_head_dim, dc = c.kv_lora_rank, D = c.hidden_size;

    Rope rope;
    MlaWeights w = { 0 };
    LatentCache cache;
    MlaScratch s;
    float *norm = malloc(sizeof(float) * dc);
    for (long i = 0; i < dc; i++) norm[i] = 1.0f;
    w.q_proj = random_mat((int)(nh * (dn + dr)), (int)D);
    w.kv_a_proj = random_mat((int)(dc + dr), (int)D);
    w.kv_a_norm = norm;
    w.kv_b_proj = random_mat((int)(nh * (dn + dv)), (int)dc);
    w.o_proj = random_mat((int)D, (int)(nh * dv));
    if (rope_init(&rope, &c) || latent_cache_init(&cache, &c, max_n) || mla_scratch_init(&s, &c, 1, max_n)) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    /* The cache of earlier tokens: random normalised-looking latents and keys. What is in
     * it does not change the cost, and both forms read the same cache. */
    for (long i = 0; i < (long)max_n * dc; i++) cache.c_kv[i] = uniform(-1.5f, 1.5f);
    for (long i = 0; i < (long)max_n * dr; i++) cache.k_rope[i] = uniform(-1.5f, 1.5f);
    float *a = malloc(sizeof(float) * D), *out_e = malloc(sizeof(float) * D), *out_a = malloc(sizeof(float) * D);
    for (long i = 0; i < D; i++) a[i] = uniform(-1, 1);

    const char *path = getenv("NOTEBOOK_DATA");
    FILE *data = path ? fopen(path, "w") : NULL;
    if (path && !data) {
        perror(path);
        return 1;
    }
    if (data)
        fprintf(data, "# context expanded_flops absorbed_flops expanded_bytes absorbed_bytes "
                      "expanded_ms absorbed_ms\n");

    printf("One decoded token, one MLA layer with DeepSeek-V2-Lite's shapes (float32, one thread)\n\n");
    printf("%8s %14s %14s %7s %11s %11s %7s %11s %11s %8s %9s\n", "context", "expanded MACs", "absorbed MACs", "ratio",
           "expanded MB", "absorbed MB", "ratio", "expanded ms", "absorbed ms", "speedup", "rel diff");
    int failed = 0;
    for (int n = 16; n <= max_n; n *= 4) {
        const double mac_e = (double)nh * n * (dn + dv) * dc + (double)nh * n * (dn + dr) + (double)nh * n * dv;
        const double mac_a =
            (double)nh * dn * dc + (double)nh * n * (dc + dr) + (double)nh * n * dc + (double)nh * dv * dc;
        const double bytes_shared = 2.0 * ((double)n * (dc + dr) + (double)nh * (dn + dv) * dc);
        const double bytes_e = bytes_shared + 2.0 * 2 * nh * n * (dn + dv), bytes_a = bytes_shared;
        const double te = time_decode(out_e, a, &w, &cache, &c, &rope, n, MLA_EXPANDED, &s);
        const double ta = time_decode(out_a, a, &w, &cache, &c, &rope, n, MLA_ABSORBED, &s);
        double d2 = 0, r2 = 0;
        for (long i = 0; i < D; i++) {
            d2 += (double)(out_a[i] - out_e[i]) * (out_a[i] - out_e[i]);
            r2 += (double)out_e[i] * out_e[i];
        }
        const double rel = sqrt(d2 / r2);
        failed |= !(rel <= 1e-5);
        printf("%8d %14.0f %14.0f %7.1f %11.2f %11.2f %7.1f %11.3f %11.3f %8.1f %9.2e\n", n, mac_e, mac_a,
               mac_e / mac_a, bytes_e / 1e6, bytes_a / 1e6, bytes_e / bytes_a, 1e3 * te, 1e3 * ta, te / ta, rel);
        if (data)
            fprintf(data, "%d %.0f %.0f %.0f %.0f %.4f %.4f\n", n, 2 * mac_e, 2 * mac_a, bytes_e, bytes_a, 1e3 * te,
                    1e3 * ta);
        if (n < max_n && n * 4 > max_n) n = max_n / 4; /* end exactly at max_n */
    }
    printf("\nThe absorbed form does O(n_h d_n d_c) extra work per query but only O(d_c) per cached\n"
           "token and head; the expanded form pays O((d_n + d_v) d_c) per cached token and head.\n"
           "For one query the absorbed form wins from a context of two tokens on; for a prompt of T\n"
           "tokens the expanded form decompresses once and shares keys and values among T queries.\n");
    if (data && fclose(data) != 0) {
        perror(path);
        failed = 1;
    }
    printf("%s\n", failed ? "FAILED: the two forms differ by more than 1e-5"
                          : "both forms agree to within 1e-5 relative at every context");
    return failed;
}
