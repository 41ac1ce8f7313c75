/**
 * \file test_mla.c
 * \brief Multi-head Latent Attention (docs/semantics.md §3.4, §5): the expanded and absorbed forms against
 * each other and against a naive double-precision MLA written here, the contents of the
 * latent cache, and the cache size per token.
 *
 * Dimensions are small and odd (so no accidental symmetry or vector-width multiple hides a
 * mistake), with and without query compression; YaRN's original context is 8 positions, so
 * the 12-token sequences run past it.
 */
#include "check.h"
#include "mla.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static TestRng g_rng;

static int group_setup(void **state)
{
    (void)state;
    test_rng_seed(&g_rng, "mla");
    return 0;
}

enum { T_MAX = 12 };

static ModelConfig mla_config(int q_lora_rank)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.hidden_size = 23;
    c.num_hidden_layers = 1;
    c.num_attention_heads = 3;
    c.q_lora_rank = q_lora_rank;
    c.kv_lora_rank = 11;
    c.qk_nope_head_dim = 5;
    c.qk_rope_head_dim = 6;
    c.v_head_dim = 7;
    c.rms_norm_eps = 1e-6f;
    c.rope_theta = 10000;
    c.rope_yarn = true;
    c.rope_factor = 4;
    c.rope_original_max_position = 8;
    c.rope_beta_fast = 32;
    c.rope_beta_slow = 1;
    c.rope_mscale = 0.707f;
    c.rope_mscale_all_dim = 0.707f;
    return c;
}

/* Random float32 weights (owned by the test) for cfg. */
typedef struct {
    MlaWeights w;
    float *buf[8];
} TestWeights;

static Mat mat(TestWeights *tw, int slot, int rows, int cols)
{
    float *p = malloc(sizeof(float) * rows * cols);
    assert_non_null(p);
    test_rng_fill(&g_rng, p, (size_t)rows * cols, -1.7f / sqrtf((float)cols), 1.7f / sqrtf((float)cols));
    tw->buf[slot] = p;
    return (Mat){ p, DT_F32, rows, cols };
}

static const float *norm_weight(TestWeights *tw, int slot, int n)
{
    float *p = malloc(sizeof(float) * n);
    assert_non_null(p);
    test_rng_fill(&g_rng, p, n, 0.5f, 1.5f);
    tw->buf[slot] = p;
    return p;
}

static void make_weights(TestWeights *tw, const ModelConfig *c)
{
    const int D = c->hidden_size, nh = c->num_attention_heads, dq = config_qk_head_dim(c);
    const int dc = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    memset(tw, 0, sizeof *tw);
    if (c->q_lora_rank) {
        tw->w.q_a_proj = mat(tw, 0, c->q_lora_rank, D);
        tw->w.q_a_norm = norm_weight(tw, 1, c->q_lora_rank);
        tw->w.q_b_proj = mat(tw, 2, nh * dq, c->q_lora_rank);
    } else {
        tw->w.q_proj = mat(tw, 0, nh * dq, D);
    }
    tw->w.kv_a_proj = mat(tw, 3, dc + dr, D);
    tw->w.kv_a_norm = norm_weight(tw, 4, dc);
    tw->w.kv_b_proj = mat(tw, 5, nh * (c->qk_nope_head_dim + c->v_head_dim), dc);
    tw->w.o_proj = mat(tw, 6, D, nh * c->v_head_dim);
}

static void free_weights(TestWeights *tw)
{
    for (int i = 0; i < 8; i++) free(tw->buf[i]);
}

/* ---- the naive double-precision reference ---------------------------------------------- */

static double mat_at(const Mat *m, int r, int c)
{
    return ((const float *)m->data)[(size_t)r * m->cols + c];
}

/* y = W x (rows [r0, r0 + n)), double. */
static void matvec(double *y, const Mat *W, int r0, int n, const double *x)
{
    for (int r = 0; r < n; r++) {
        y[r] = 0;
        for (int k = 0; k < W->cols; k++) y[r] += mat_at(W, r0 + r, k) * x[k];
    }
}

static void rmsnorm_d(double *x, const float *w, int n, double eps)
{
    double ms = 0;
    for (int i = 0; i < n; i++) ms += x[i] * x[i];
    const double inv = 1 / sqrt(ms / n + eps);
    for (int i = 0; i < n; i++) x[i] = w[i] * x[i] * inv;
}

/* Interleaved pairs (2i, 2i+1) rotated by pos · θ_i. */
static void rope_d(double *x, const Rope *r, int pos)
{
    for (int i = 0; i < r->dim / 2; i++) {
        const double phi = (double)pos * r->inv_freq[i];
        const double c = cos(phi) * r->cos_sin_scale, s = sin(phi) * r->cos_sin_scale;
        const double x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = x0 * c - x1 * s;
        x[2 * i + 1] = x0 * s + x1 * c;
    }
}

/*
 * docs/semantics.md §3.4 literally, for T tokens at positions 0..T−1: per token the latent ĉ (normed) and
 * the rotated shared key k^R; per head k^N = W^UK ĉ, v = W^UV ĉ, full d_q-wide query·key dot,
 * σ, causal softmax, o = Σ p v, then o_proj. Also returns ĉ [T, d_c] and k^R [T, d_r].
 */
static void mla_naive(float *out, float *c_hat, float *k_rope, const float *a, const MlaWeights *w,
                      const ModelConfig *c, const Rope *rope, int T)
{
    const int D = c->hidden_size, nh = c->num_attention_heads, dn = c->qk_nope_head_dim;
    const int dr = c->qk_rope_head_dim, dv = c->v_head_dim, dc = c->kv_lora_rank, dq = dn + dr;
    double lat[T_MAX][64], kr[T_MAX][64], q[T_MAX][256], x[64], kv[64], cq[64];
    double k[T_MAX][64], v[T_MAX][64], o[256], y[64];
    for (int t = 0; t < T; t++) {
        for (int d = 0; d < D; d++) x[d] = a[t * D + d];
        matvec(kv, &w->kv_a_proj, 0, dc + dr, x);
        memcpy(lat[t], kv, sizeof(double) * dc);
        rmsnorm_d(lat[t], w->kv_a_norm, dc, c->rms_norm_eps);
        memcpy(kr[t], kv + dc, sizeof(double) * dr);
        rope_d(kr[t], rope, t);
        if (c->q_lora_rank) {
            matvec(cq, &w->q_a_proj, 0, c->q_lora_rank, x);
            rmsnorm_d(cq, w->q_a_norm, c->q_lora_rank, c->rms_norm_eps);
            matvec(q[t], &w->q_b_proj, 0, nh * dq, cq);
        } else {
            matvec(q[t], &w->q_proj, 0, nh * dq, x);
        }
        for (int h = 0; h < nh; h++) rope_d(q[t] + h * dq + dn, rope, t);
        for (int i = 0; i < dc; i++) c_hat[t * dc + i] = (float)lat[t][i];
        for (int i = 0; i < dr; i++) k_rope[t * dr + i] = (float)kr[t][i];
    }
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < nh; h++) {
            double s[T_MAX], max = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++) {
                double key[256]; /* K_{j,h} = [k^N_{j,h}; k^R_j] */
                matvec(k[j], &w->kv_b_proj, h * (dn + dv), dn, lat[j]);
                matvec(v[j], &w->kv_b_proj, h * (dn + dv) + dn, dv, lat[j]);
                memcpy(key, k[j], sizeof(double) * dn);
                memcpy(key + dn, kr[j], sizeof(double) * dr);
                s[j] = 0;
                for (int i = 0; i < dq; i++) s[j] += q[t][h * dq + i] * key[i];
                s[j] *= rope->softmax_scale;
                max = fmax(max, s[j]);
            }
            for (int j = 0; j <= t; j++) sum += s[j] = exp(s[j] - max);
            for (int d = 0; d < dv; d++) {
                o[h * dv + d] = 0;
                for (int j = 0; j <= t; j++) o[h * dv + d] += s[j] / sum * v[j][d];
            }
        }
        matvec(y, &w->o_proj, 0, D, o);
        for (int d = 0; d < D; d++) out[t * D + d] = (float)y[d];
    }
}

/* ---- running mla_forward ---------------------------------------------------------------- */

/* mla_forward over a [T, D] in the given chunks (sizes summing to T), fresh cache; the cache
 * is returned for inspection (the caller frees it). */
static void run_chunks(float *out, LatentCache *cache, const float *a, const MlaWeights *w, const ModelConfig *c,
                       const Rope *rope, const int *chunks, MlaForm form)
{
    const int D = c->hidden_size;
    MlaScratch s;
    assert_int_equal(latent_cache_init(cache, c, T_MAX), 0);
    assert_int_equal(mla_scratch_init(&s, c, T_MAX, T_MAX), 0);
    poison(cache->c_kv, (size_t)T_MAX * c->kv_lora_rank);
    poison(cache->k_rope, (size_t)T_MAX * c->qk_rope_head_dim);
    poison(out, (size_t)T_MAX * D);
    int pos = 0;
    for (const int *n = chunks; *n; n++) {
        mla_forward(out + pos * D, a + pos * D, w, cache, c, rope, pos, *n, form, &s);
        pos += *n;
    }
    assert_int_equal(pos, T_MAX);
    mla_scratch_free(&s);
}

/* Chunkings of T_MAX = 12 tokens (zero-terminated). */
static const int kSplits[][T_MAX + 1] = {
    { 12 }, { 3, 4, 5 }, { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }, { 7, 1, 2, 2 }, { 1, 11 },
};

static void forms_agree_and_match_naive(int q_lora_rank)
{
    const ModelConfig c = mla_config(q_lora_rank);
    const int D = c.hidden_size, dc = c.kv_lora_rank, dr = c.qk_rope_head_dim;
    Rope rope;
    assert_int_equal(rope_init(&rope, &c), 0);
    TestWeights tw;
    make_weights(&tw, &c);
    float a[T_MAX * 23], want[T_MAX * 23], c_hat[T_MAX * 11], k_rope[T_MAX * 6];
    float expanded[T_MAX * 23], got[T_MAX * 23];
    test_rng_fill(&g_rng, a, (size_t)T_MAX * D, -2, 2);
    mla_naive(want, c_hat, k_rope, a, &tw.w, &c, &rope, T_MAX);
    LatentCache cache;
    run_chunks(expanded, &cache, a, &tw.w, &c, &rope, kSplits[0], MLA_EXPANDED);
    latent_cache_free(&cache);
    for (size_t sp = 0; sp < sizeof kSplits / sizeof *kSplits; sp++) {
        for (int form = 0; form < 2; form++) {
            run_chunks(got, &cache, a, &tw.w, &c, &rope, kSplits[sp], form ? MLA_ABSORBED : MLA_EXPANDED);
            /* float32 vs double over sums of ≤ 24 terms: well inside 1e-5 relative */
            check_close("mla_forward vs naive double", got, want, (size_t)T_MAX * D, -1, 1e-5);
            /* the two forms re-associate the same sums (issue 2: ≤ 1e-5 relative) */
            check_close("absorbed/split vs expanded", got, expanded, (size_t)T_MAX * D, -1, 1e-5);
            /* the cache holds RMSNorm'd latents and post-RoPE shared keys, nothing else */
            check_close("cache: normalised latent", cache.c_kv, c_hat, (size_t)T_MAX * dc, 1e-5, 1e-6);
            check_close("cache: rotated k^R", cache.k_rope, k_rope, (size_t)T_MAX * dr, 1e-5, 1e-6);
            latent_cache_free(&cache);
        }
    }
    free_weights(&tw);
}

static void without_query_compression(void **state)
{
    (void)state;
    forms_agree_and_match_naive(0);
}

static void with_query_compression(void **state)
{
    (void)state;
    forms_agree_and_match_naive(9);
}

static void cache_bytes_per_token(void **state)
{
    (void)state;
    ModelConfig c = mla_config(0);
    c.num_hidden_layers = 5;
    assert_int_equal(mla_cache_bytes_per_token(&c, 4), (11 + 6) * 5 * 4);
    c.kv_lora_rank = 512;
    c.qk_rope_head_dim = 64;
    c.num_hidden_layers = 60; /* DeepSeek-V2: 576 × 60 elements, bf16 */
    assert_int_equal(mla_cache_bytes_per_token(&c, 2), 69120);
    c.num_hidden_layers = 27; /* DeepSeek-V2-Lite */
    assert_int_equal(mla_cache_bytes_per_token(&c, 2), 31104);
    assert_int_equal(mla_cache_bytes_per_token(&c, 4), 62208);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(without_query_compression),
        cmocka_unit_test(with_query_compression),
        cmocka_unit_test(cache_bytes_per_token),
    };
    return cmocka_run_group_tests_name("mla", tests, group_setup, NULL);
}
