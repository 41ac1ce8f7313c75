/**
 * \file test_fast_mla.c
 * \brief The device MLA against ref/mla.c's mla_forward: fast_mla_forward in both forms (the prompt form
 *        through the tiled prompt kernel of fast/prefill.c; absorbed through the split-sequence decode), the latent
 *        cache it writes (mla_write_latents v1 and v2), and the reference-loop kernel mla_attend_v1.
 *
 * fast_mla_forward takes every token's position and cache row from device arrays (the _at
 * launchers). The kernels' launchers with a host pos0 (the lab's contracts) and the _at versions
 * of version 1 are both checked; the _at ones write and read a second cache whose sequence starts
 * at row 5 (base[t] = 5), so a wrong base shows up as wrong rows or wrong attention.
 *
 * A sequence runs in phases over one cache: a prompt (expanded), one decode
 * step (absorbed), a chunk at pos0 > 0 (expanded) and chunks of 2 and 16 tokens in
 * the absorbed form (the three-launch decode path), each against the reference on the same inputs. Weights are random
 * bf16; float32 mode: relative L2 ≤ 1e-5; bf16 mode (bf16 weights, bf16
 * latent cache, bf16 GEMM activations): ≤ 2e-2.
 *
 * Shapes: DeepSeek-V2-Lite's real attention (D 2048, 16 heads, d_n 128,
 * d_r 64, d_v 128, d_c 512, no query compression, YaRN); V2's head dims with
 * query compression (d_c' 1536) on 4 heads at D 256; odd sizes with plain RoPE
 * and a 130-token prompt so the decode spans three 64-key splits (version 2) and three of at least 64
 * (version 3, which fast_mla_forward runs).
 *
 * The decode kernels alone (mla_decode_at_v2, mla_decode_at_v3, mla_decode_v3) are checked against a
 * double-precision o^L on random cache rows: 20 heads (two head groups, the second partial) over 700
 * positions with 576-wide rows (16-byte loads), and 3 heads with 46-wide rows (element loads). The expanded
 * form's version-2 steps chapter 12 teaches (mla_expand_v2, mla_causal_softmax_v2) against host loops.
 */
#include "check.h"
#include "fast_test.h"
#include "dtype.h"
#include "error.h"
#include "fast.h"
#include "mla.h"
#include "yarn_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static TestRng rng;

#define AT_BASE 5 /* cache row where the _at launchers' sequence starts */

static Mat random_mat(int rows, int cols)
{
    const size_t n = (size_t)rows * cols;
    const float a = 1.0f / sqrtf((float)cols);
    uint16_t *d = malloc(2 * n);
    for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(test_rng_uniform(&rng, -a, a));
    return (Mat){ d, DT_BF16, rows, cols };
}

static float *random_norm(int n)
{
    float *w = malloc(sizeof(float) * n);
    test_rng_fill(&rng, w, (size_t)n, 0.5f, 1.5f);
    return w;
}

static ModelConfig mla_config(int D, int nh, int dn, int dr, int dv, int dc, int q_lora, bool yarn)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.hidden_size = D;
    c.num_attention_heads = nh;
    c.qk_nope_head_dim = dn;
    c.qk_rope_head_dim = dr;
    c.v_head_dim = dv;
    c.kv_lora_rank = dc;
    c.q_lora_rank = q_lora;
    c.rms_norm_eps = 1e-6f;
    test_v2_rope(&c, yarn);
    c.max_position_embeddings = 4096;
    return c;
}

static MlaWeights random_mla(const ModelConfig *c)
{
    const int D = c->hidden_size, nh = c->num_attention_heads, dq = c->qk_nope_head_dim + c->qk_rope_head_dim;
    MlaWeights w;
    memset(&w, 0, sizeof w);
    if (c->q_lora_rank) {
        w.q_a_proj = random_mat(c->q_lora_rank, D);
        w.q_a_norm = random_norm(c->q_lora_rank);
        w.q_b_proj = random_mat(nh * dq, c->q_lora_rank);
    } else {
        w.q_proj = random_mat(nh * dq, D);
    }
    w.kv_a_proj = random_mat(c->kv_lora_rank + c->qk_rope_head_dim, D);
    w.kv_a_norm = random_norm(c->kv_lora_rank);
    w.kv_b_proj = random_mat(nh * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank);
    w.o_proj = random_mat(D, nh * c->v_head_dim);
    return w;
}

static void free_mla(MlaWeights *w)
{
    const void *p[] = { w->q_proj.data,    w->q_a_proj.data, w->q_a_norm,       w->q_b_proj.data,
                        w->kv_a_proj.data, w->kv_a_norm,     w->kv_b_proj.data, w->o_proj.data };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free((void *)p[i]);
}

static void report(const char *what, const float *got, const float *want, size_t n, double tol)
{
    const CheckStats st = check_stats(got, want, n);
    printf("  %-34s rel-L2 %.3g, max-abs %.3g\n", what, st.rel_l2, st.max_abs);
    check_close(what, got, want, n, -1, tol);
}

/* Copies cache rows [r0, r1) to the host as float32 [ĉ ; k^R] rows. */
static void cache_rows(float *out, const void *cache, KernelDType t, int width, int r0, int r1)
{
    const size_t n = (size_t)(r1 - r0) * width, esz = kernel_dtype_size(t);
    void *host = malloc(n * esz);
    assert_int_equal(cudaMemcpy(host, (const char *)cache + (size_t)r0 * width * esz, n * esz, cudaMemcpyDeviceToHost),
                     cudaSuccess);
    if (t == KERNEL_F32)
        memcpy(out, host, n * 4);
    else
        for (size_t i = 0; i < n; i++) out[i] = bf16_to_f32(((const uint16_t *)host)[i]);
    free(host);
}

/* The reference cache rows [r0, r1) as [ĉ ; k^R]. */
static void ref_rows(float *out, const LatentCache *lc, int dc, int dr, int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        memcpy(out + (size_t)(r - r0) * (dc + dr), lc->c_kv + (size_t)r * dc, sizeof(float) * dc);
        memcpy(out + (size_t)(r - r0) * (dc + dr) + dc, lc->k_rope + (size_t)r * dr, sizeof(float) * dr);
    }
}

static void check_mla(const ModelConfig *c, int prompt)
{
    const int D = c->hidden_size, nh = c->num_attention_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    const int dv = c->v_head_dim, dc = c->kv_lora_rank, width = dc + dr;
    /* phases: (T, form): prompt expanded, one absorbed step, 3 expanded at pos0 > 0, 2 absorbed, then 16
     * absorbed (the decode path's largest call, FAST_DECODE_MAX_T) */
    enum { PHASES = 5 };
    const int phase_T[PHASES] = { prompt, 1, 3, 2, FAST_DECODE_MAX_T };
    const MlaForm phase_form[PHASES] = { MLA_EXPANDED, MLA_ABSORBED, MLA_EXPANDED, MLA_ABSORBED, MLA_ABSORBED };
    const int ctx = prompt + 6 + FAST_DECODE_MAX_T, max_T = prompt > FAST_DECODE_MAX_T ? prompt : FAST_DECODE_MAX_T;
    MlaWeights w = random_mla(c);
    Rope rope;
    assert_int_equal(rope_init(&rope, c), 0);
    float *a = malloc(sizeof(float) * (size_t)ctx * D);
    test_rng_fill(&rng, a, (size_t)ctx * D, -2.0f, 2.0f);

    for (int mode = 0; mode < 2; mode++) {
        const bool bf16 = mode == 1;
        const double tol = bf16 ? 2e-2 : 1e-5;
        printf(" %s, %d heads, d_c %d, D %d, prompt %d:\n", bf16 ? "bf16" : "float32", nh, dc, D, prompt);
        LatentCache lc;
        MlaScratch ms;
        assert_int_equal(latent_cache_init(&lc, c, ctx), 0);
        assert_int_equal(mla_scratch_init(&ms, c, max_T, ctx), 0);
        FastContext fc;
        FastMla fw;
        FastScratch s;
        memset(&fw, 0, sizeof fw);
        if (fast_context_init(&fc, bf16, fast_stage_elems(c, max_T)) || fast_upload_mla(&fc, &fw, &w, c) ||
            fast_scratch_init(&s, &fc, c, max_T, ctx))
            fail_msg("%s", ds_last_error());
        const size_t esz = kernel_dtype_size(fc.wtype);
        void *cache, *cache_v1, *cache_at;
        float *inv_freq, *da, *dout, *o_v1, *scratch_v1;
        int *dpos, *dbase;
        assert_int_equal(cudaMalloc(&cache, (size_t)ctx * width * esz), cudaSuccess);
        assert_int_equal(cudaMalloc(&cache_v1, (size_t)ctx * width * esz), cudaSuccess);
        assert_int_equal(cudaMalloc(&cache_at, (size_t)(AT_BASE + ctx) * width * esz), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&dpos, sizeof(int) * (size_t)max_T), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&dbase, sizeof(int) * (size_t)max_T), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&inv_freq, sizeof(float) * dr / 2), cudaSuccess);
        assert_int_equal(cudaMemcpy(inv_freq, rope.inv_freq, sizeof(float) * dr / 2, cudaMemcpyHostToDevice),
                         cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&da, sizeof(float) * (size_t)ctx * D), cudaSuccess);
        assert_int_equal(cudaMemcpy(da, a, sizeof(float) * (size_t)ctx * D, cudaMemcpyHostToDevice), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&dout, sizeof(float) * (size_t)max_T * D), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&o_v1, sizeof(float) * (size_t)max_T * nh * dv), cudaSuccess);
        float *want = malloc(sizeof(float) * (size_t)max_T * D), *got = malloc(sizeof(float) * (size_t)max_T * D);
        float *rows_got = malloc(sizeof(float) * (size_t)ctx * width),
              *rows_want = malloc(sizeof(float) * (size_t)ctx * width);
        float *o_got = malloc(sizeof(float) * (size_t)max_T * nh * dv);
        int *hpos = malloc(sizeof(int) * (size_t)max_T), *hbase = malloc(sizeof(int) * (size_t)max_T);
        const MlaDims dims = { nh, dn, dr, dv, dc, rope.softmax_scale };
        assert_int_equal(
            cudaMalloc((void **)&scratch_v1, sizeof(float) * (size_t)max_T * nh * MLA_V1_SCRATCH(dims, ctx)),
            cudaSuccess);

        int pos0 = 0;
        for (int ph = 0; ph < PHASES; ph++) {
            const int T = phase_T[ph];
            const bool absorbed = phase_form[ph] == MLA_ABSORBED;
            char what[64];
            mla_forward(want, a + (size_t)pos0 * D, &w, &lc, c, &rope, pos0, T, phase_form[ph], &ms);
            assert_int_equal(cudaMemset(dout, 0xff, sizeof(float) * (size_t)T * D), cudaSuccess);
            for (int t = 0; t < T; t++) {
                hpos[t] = pos0 + t;
                hbase[t] = 0;
            }
            assert_int_equal(cudaMemcpy(dpos, hpos, sizeof(int) * (size_t)T, cudaMemcpyHostToDevice), cudaSuccess);
            assert_int_equal(cudaMemcpy(dbase, hbase, sizeof(int) * (size_t)T, cudaMemcpyHostToDevice), cudaSuccess);
            const FastPositions at = { dpos, dbase, pos0, 0, ctx };
            if (fast_mla_forward(&fc, dout, da + (size_t)pos0 * D, &fw, cache, c, &rope, inv_freq, &at, T, absorbed, &s,
                                 NULL))
                fail_msg("%s", ds_last_error());
            assert_int_equal(cudaStreamSynchronize(fc.stream), cudaSuccess);
            assert_int_equal(cudaMemcpy(got, dout, sizeof(float) * (size_t)T * D, cudaMemcpyDeviceToHost), cudaSuccess);
            snprintf(what, sizeof what, "fast %s, T %d at %d", absorbed ? "absorbed" : "expanded", T, pos0);
            report(what, got, want, (size_t)T * D, tol);

            /* the latent cache rows this phase wrote (v2), and v1 writing the same rows from the same kv */
            ref_rows(rows_want, &lc, dc, dr, pos0, pos0 + T);
            cache_rows(rows_got, cache, fc.wtype, width, pos0, pos0 + T);
            report("  cache rows (v2)", rows_got, rows_want, (size_t)T * width, bf16 ? 1e-2 : 1e-5);
            assert_int_equal(mla_write_latents_v1(cache_v1, fc.wtype, s.kv, fw.kv_a_norm, inv_freq, rope.cos_sin_scale,
                                                  dims, pos0, T, c->rms_norm_eps, fc.stream),
                             cudaSuccess);
            assert_int_equal(cudaStreamSynchronize(fc.stream), cudaSuccess);
            cache_rows(rows_got, cache_v1, fc.wtype, width, pos0, pos0 + T);
            report("  cache rows (v1)", rows_got, rows_want, (size_t)T * width, bf16 ? 1e-2 : 1e-5);
            for (int t = 0; t < T; t++) hbase[t] = AT_BASE;
            assert_int_equal(cudaMemcpy(dbase, hbase, sizeof(int) * (size_t)T, cudaMemcpyHostToDevice), cudaSuccess);
            assert_int_equal(mla_write_latents_at_v1(cache_at, fc.wtype, s.kv, fw.kv_a_norm, inv_freq,
                                                     rope.cos_sin_scale, dims, dpos, dbase, T, c->rms_norm_eps,
                                                     fc.stream),
                             cudaSuccess);
            assert_int_equal(cudaStreamSynchronize(fc.stream), cudaSuccess);
            cache_rows(rows_got, cache_at, fc.wtype, width, AT_BASE + pos0, AT_BASE + pos0 + T);
            report("  cache rows (v1 at, base 5)", rows_got, rows_want, (size_t)T * width, bf16 ? 1e-2 : 1e-5);

            /* v1 attention on the fast path's rotated queries and cache, against the reference's o */
            assert_int_equal(cudaMemset(o_v1, 0xff, sizeof(float) * (size_t)T * nh * dv), cudaSuccess);
            assert_int_equal(mla_attend_v1(o_v1, s.q, fw.kv_b_proj.data, fw.kv_b_proj.dtype, cache, fc.wtype, dims,
                                           pos0, T, absorbed, scratch_v1, fc.stream),
                             cudaSuccess);
            assert_int_equal(cudaStreamSynchronize(fc.stream), cudaSuccess);
            assert_int_equal(cudaMemcpy(o_got, o_v1, sizeof(float) * (size_t)T * nh * dv, cudaMemcpyDeviceToHost),
                             cudaSuccess);
            snprintf(what, sizeof what, "  attend v1 %s (o)", absorbed ? "absorbed" : "expanded");
            report(what, o_got, ms.o, (size_t)T * nh * dv, tol);
            assert_int_equal(cudaMemset(o_v1, 0xff, sizeof(float) * (size_t)T * nh * dv), cudaSuccess);
            assert_int_equal(mla_attend_at_v1(o_v1, s.q, fw.kv_b_proj.data, fw.kv_b_proj.dtype, cache_at, fc.wtype,
                                              dims, dpos, dbase, T, ctx, absorbed, scratch_v1, fc.stream),
                             cudaSuccess);
            assert_int_equal(cudaStreamSynchronize(fc.stream), cudaSuccess);
            assert_int_equal(cudaMemcpy(o_got, o_v1, sizeof(float) * (size_t)T * nh * dv, cudaMemcpyDeviceToHost),
                             cudaSuccess);
            snprintf(what, sizeof what, "  attend v1 at %s (o, base 5)", absorbed ? "absorbed" : "expanded");
            report(what, o_got, ms.o, (size_t)T * nh * dv, tol);
            pos0 += T;
        }
        cudaFree(cache);
        cudaFree(cache_v1);
        cudaFree(inv_freq);
        cudaFree(da);
        cudaFree(dout);
        cudaFree(o_v1);
        cudaFree(scratch_v1);
        cudaFree(cache_at);
        cudaFree(dpos);
        cudaFree(dbase);
        free(want);
        free(got);
        free(rows_got);
        free(rows_want);
        free(o_got);
        free(hpos);
        free(hbase);
        fast_scratch_free(&s);
        fast_free_mla(&fw);
        fast_context_free(&fc);
        latent_cache_free(&lc);
        mla_scratch_free(&ms);
    }
    free_mla(&w);
    free(a);
}

/* o^L_{t,h} = Σ_{j ≤ pos_t} softmax_j(σ(q^L·ĉ_j + q^R·k^R_j)) ĉ_j in double, rows [base_t + j] of the host cache
 * (ref/mla.c's absorbed form before W^UV, written out here so the decode kernels have an independent check). */
static void ref_decode(double *o_lat, const float *cache, const float *q_lat, const float *q, MlaDims d, const int *pos,
                       const int *base, int T)
{
    const int width = d.d_c + d.d_r, dq = d.d_n + d.d_r;
    double *p = malloc(sizeof(double) * (size_t)(pos[0] + 1));
    for (int t = 0; t < T; t++)
        for (int h = 0; h < d.n_h; h++) {
            const float *ql = q_lat + ((size_t)t * d.n_h + h) * d.d_c, *qr = q + ((size_t)t * d.n_h + h) * dq + d.d_n;
            double max = -INFINITY, sum = 0.0;
            p = realloc(p, sizeof(double) * (size_t)(pos[t] + 1));
            for (int j = 0; j <= pos[t]; j++) {
                const float *row = cache + (size_t)(base[t] + j) * width;
                double s = 0.0;
                for (int c = 0; c < d.d_c; c++) s += (double)ql[c] * row[c];
                for (int c = 0; c < d.d_r; c++) s += (double)qr[c] * row[d.d_c + c];
                p[j] = d.scale * s;
                max = p[j] > max ? p[j] : max;
            }
            for (int j = 0; j <= pos[t]; j++) sum += p[j] = exp(p[j] - max);
            double *o = o_lat + ((size_t)t * d.n_h + h) * d.d_c;
            for (int c = 0; c < d.d_c; c++) o[c] = 0.0;
            for (int j = 0; j <= pos[t]; j++)
                for (int c = 0; c < d.d_c; c++) o[c] += p[j] / sum * cache[(size_t)(base[t] + j) * width + c];
        }
    free(p);
}

/*
 * The absorbed decode kernels on their own: random cache rows (rounded to bf16 first in bf16 mode, so the
 * reference sees the stored values), random q^L and q^R, token t at position pos[t] = ctx − 1 − 97·t of a
 * sequence starting at cache row AT_BASE + t. mla_decode_at_v2 and _v3 against ref_decode, NaN-poisoned
 * outputs; then mla_decode_v3 with a host pos0 (tokens at ctx − T .. ctx − 1, base 0), storing o^L as the
 * cache's type. Everything is computed in float32 from the same stored values: relative L2 ≤ 1e-5, except
 * the bf16-stored o^L (one rounding to 8 significant bits): ≤ 2e-2.
 */
static void check_decode(int nh, int dc, int dr, int ctx, int T, bool bf16)
{
    const MlaDims d = { nh, 3, dr, 5, dc, 1.0f / sqrtf((float)(3 + dr)) };
    const int width = dc + dr, dq = d.d_n + dr, rows = AT_BASE + T + ctx;
    const KernelDType type = bf16 ? KERNEL_BF16 : KERNEL_F32;
    const size_t esz = kernel_dtype_size(type), n_lat = (size_t)T * nh * dc;
    float *cache = malloc(sizeof(float) * (size_t)rows * width), *q_lat = malloc(sizeof(float) * n_lat);
    float *q = malloc(sizeof(float) * (size_t)T * nh * dq), *got = malloc(sizeof(float) * n_lat);
    double *want_d = malloc(sizeof(double) * n_lat);
    float *want = malloc(sizeof(float) * n_lat);
    void *stored = malloc((size_t)rows * width * esz);
    test_rng_fill(&rng, cache, (size_t)rows * width, -1.0f, 1.0f);
    test_rng_fill(&rng, q_lat, n_lat, -1.0f, 1.0f);
    test_rng_fill(&rng, q, (size_t)T * nh * dq, -1.0f, 1.0f);
    for (size_t i = 0; i < (size_t)rows * width; i++) {
        if (bf16) {
            ((uint16_t *)stored)[i] = f32_to_bf16(cache[i]);
            cache[i] = bf16_to_f32(((uint16_t *)stored)[i]);
        } else {
            ((float *)stored)[i] = cache[i];
        }
    }
    int pos[8], base[8];
    assert_true(T <= 8);
    for (int t = 0; t < T; t++) {
        pos[t] = ctx - 1 - 97 * t;
        base[t] = AT_BASE + t;
        assert_true(pos[t] >= 0);
    }
    void *dcache;
    float *dq_lat, *dqv, *do_lat, *partial, *partial_v3;
    int *dpos, *dbase, *counters;
    const size_t n_part_v2 = (size_t)T * nh * mla_decode_splits(ctx) * (dc + 2);
    const size_t n_part_v3 = mla_decode_v3_partial_floats(d, T, ctx);
    assert_int_equal(cudaMalloc(&dcache, (size_t)rows * width * esz), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dq_lat, sizeof(float) * n_lat), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dqv, sizeof(float) * (size_t)T * nh * dq), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&do_lat, sizeof(float) * n_lat), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&partial, sizeof(float) * n_part_v2), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&partial_v3, sizeof(float) * n_part_v3), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&counters, sizeof(int) * mla_decode_v3_counters(nh, T)), cudaSuccess);
    assert_int_equal(cudaMemset(counters, 0, sizeof(int) * mla_decode_v3_counters(nh, T)), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dpos, sizeof pos), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dbase, sizeof base), cudaSuccess);
    assert_int_equal(cudaMemcpy(dcache, stored, (size_t)rows * width * esz, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dq_lat, q_lat, sizeof(float) * n_lat, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dqv, q, sizeof(float) * (size_t)T * nh * dq, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dpos, pos, sizeof pos, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(dbase, base, sizeof base, cudaMemcpyHostToDevice), cudaSuccess);
    printf(" decode %s, %d heads, d_c %d, d_r %d, ctx %d, T %d (v3: %d splits, %s loads):\n", bf16 ? "bf16" : "float32",
           nh, dc, dr, ctx, T, mla_decode_v3_splits(nh, T, ctx), width % 8 == 0 ? "16-byte" : "element");
    ref_decode(want_d, cache, q_lat, q, d, pos, base, T);
    for (size_t i = 0; i < n_lat; i++) want[i] = (float)want_d[i];
    for (int v = 2; v <= 4; v++) {
        assert_int_equal(cudaMemset(do_lat, 0xff, sizeof(float) * n_lat), cudaSuccess);
        struct timespec t0, t1; /* simulator seconds, printed, never checked */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (v == 2)
            assert_int_equal(mla_decode_at_v2(do_lat, dq_lat, dqv, dcache, type, d, dpos, dbase, T, ctx, partial, 0),
                             cudaSuccess);
        else if (v == 3)
            assert_int_equal(mla_decode_at_v3(do_lat, KERNEL_F32, dq_lat, dqv, dcache, type, d, dpos, dbase, T, ctx,
                                              partial_v3, counters, 0),
                             cudaSuccess);
        else
            assert_int_equal(
                mla_decode_v3(do_lat, type, dq_lat, dqv, dcache, type, d, ctx - T, T, partial_v3, counters, 0),
                cudaSuccess); /* o^L stored as the cache's type */
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("    (simulated in %.3f s)\n",
               (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
        assert_int_equal(cudaMemcpy(got, do_lat, sizeof(float) * n_lat, cudaMemcpyDeviceToHost), cudaSuccess);
        if (v == 4 && bf16) /* bf16 o^L: widen the n_lat values in place */
            for (size_t i = n_lat; i-- > 0;) got[i] = bf16_to_f32(((const uint16_t *)got)[i]);
        if (v == 4) { /* the host-pos0 launcher: tokens ctx − T + t, base 0 */
            for (int t = 0; t < T; t++) {
                pos[t] = ctx - T + t;
                base[t] = 0;
            }
            ref_decode(want_d, cache, q_lat, q, d, pos, base, T);
            for (size_t i = 0; i < n_lat; i++) want[i] = (float)want_d[i];
        }
        report(v == 2   ? "  mla_decode_at_v2 (o^L)"
               : v == 3 ? "  mla_decode_at_v3 (o^L)"
                        : "  mla_decode_v3 (o^L as cache)",
               got, want, n_lat, v == 4 && bf16 ? 2e-2 : 1e-5);
    }
    int left[8 * 2]; /* every launch leaves its counters zero */
    const size_t n_count = mla_decode_v3_counters(nh, T);
    assert_true(n_count <= sizeof left / sizeof left[0]);
    assert_int_equal(cudaMemcpy(left, counters, sizeof(int) * n_count, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < n_count; i++) assert_int_equal(left[i], 0);
    cudaFree(dcache);
    cudaFree(dq_lat);
    cudaFree(dqv);
    cudaFree(do_lat);
    cudaFree(partial);
    cudaFree(dpos);
    cudaFree(dbase);
    cudaFree(partial_v3);
    cudaFree(counters);
    free(cache);
    free(q_lat);
    free(q);
    free(got);
    free(want_d);
    free(want);
    free(stored);
}

static void decode_kernels_two_head_groups(void **state)
{
    (void)state;
    need_device();
    check_decode(20, 512, 64, 700, 3, false); /* 2 groups (16 + 4 heads), 6 splits, wide rows */
    check_decode(20, 512, 64, 700, 3, true);
}

static void decode_kernels_odd_rows(void **state)
{
    (void)state;
    need_device();
    check_decode(3, 40, 6, 300, 2, false); /* rows of 46: element loads, 3 splits */
    check_decode(3, 40, 6, 300, 2, true);
}

static void lite_real_dims(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = mla_config(2048, 16, 128, 64, 128, 512, 0, true);
    check_mla(&c, 5);
}

static void v2_heads_with_query_compression(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = mla_config(256, 4, 128, 64, 128, 512, 1536, true);
    check_mla(&c, 4);
}

static void odd_sizes_three_splits(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = mla_config(33, 3, 10, 6, 7, 40, 24, false);
    check_mla(&c, 130);
}

/*
 * The expanded form's version-2 steps that chapter 12 teaches beside the prompt kernel: mla_expand_v2 builds
 * per-head K = [k^N ; k^R] and V from u = kv_b·ĉ and the cached k^R, mla_causal_softmax_v2 the masked
 * softmax of σ·s. Both against host loops on random inputs (odd sizes, a chunk at pos0 = 5): K and V are
 * copies (exact); the softmax within 1e-6 relative L2 of a double-precision one (float32 exp and sums).
 */
static void expanded_v2_steps(void **state)
{
    (void)state;
    need_device();
    const MlaDims d = { 3, 5, 4, 6, 7, 0.37f };
    const int ctx = 11, T = 4, pos0 = 5, w = d.d_c + d.d_r, dq = d.d_n + d.d_r;
    const size_t nu = (size_t)ctx * d.n_h * (d.d_n + d.d_v), nc = (size_t)ctx * w;
    const size_t nk = (size_t)ctx * d.n_h * dq, nv = (size_t)ctx * d.n_h * d.d_v, ns = (size_t)d.n_h * T * ctx;
    float *u = malloc(sizeof(float) * nu), *c = malloc(sizeof(float) * nc), *sc = malloc(sizeof(float) * ns);
    float *k = malloc(sizeof(float) * nk), *v = malloc(sizeof(float) * nv), *p = malloc(sizeof(float) * ns);
    float *want_k = malloc(sizeof(float) * nk), *want_v = malloc(sizeof(float) * nv);
    float *want_p = malloc(sizeof(float) * ns);
    test_rng_fill(&rng, u, nu, -1, 1);
    test_rng_fill(&rng, c, nc, -1, 1);
    test_rng_fill(&rng, sc, ns, -3, 3);
    for (int j = 0; j < ctx; j++)
        for (int h = 0; h < d.n_h; h++) {
            const float *u_jh = u + ((size_t)j * d.n_h + h) * (d.d_n + d.d_v);
            for (int i = 0; i < dq; i++)
                want_k[((size_t)j * d.n_h + h) * dq + i] = i < d.d_n ? u_jh[i] : c[(size_t)j * w + d.d_c + i - d.d_n];
            for (int i = 0; i < d.d_v; i++) want_v[((size_t)j * d.n_h + h) * d.d_v + i] = u_jh[d.d_n + i];
        }
    for (int h = 0; h < d.n_h; h++)
        for (int t = 0; t < T; t++) {
            const float *row = sc + ((size_t)h * T + t) * ctx;
            double m = -INFINITY, sum = 0;
            for (int j = 0; j <= pos0 + t; j++) m = fmax(m, (double)d.scale * row[j]);
            for (int j = 0; j <= pos0 + t; j++) sum += exp((double)d.scale * row[j] - m);
            for (int j = 0; j < ctx; j++)
                want_p[((size_t)h * T + t) * ctx + j] =
                    j <= pos0 + t ? (float)(exp((double)d.scale * row[j] - m) / sum) : 0;
        }
    float *d_u, *d_c, *d_k, *d_v, *d_s, *d_p;
    assert_int_equal(cudaMalloc((void **)&d_u, sizeof(float) * nu), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_c, sizeof(float) * nc), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_k, sizeof(float) * nk), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_v, sizeof(float) * nv), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_s, sizeof(float) * ns), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_p, sizeof(float) * ns), cudaSuccess);
    poison(k, nk);
    poison(p, ns);
    poison(v, nv);
    cudaMemcpy(d_u, u, sizeof(float) * nu, cudaMemcpyHostToDevice);
    cudaMemcpy(d_c, c, sizeof(float) * nc, cudaMemcpyHostToDevice);
    cudaMemcpy(d_k, k, sizeof(float) * nk, cudaMemcpyHostToDevice);
    cudaMemcpy(d_v, v, sizeof(float) * nv, cudaMemcpyHostToDevice);
    cudaMemcpy(d_s, sc, sizeof(float) * ns, cudaMemcpyHostToDevice);
    cudaMemcpy(d_p, p, sizeof(float) * ns, cudaMemcpyHostToDevice);
    assert_int_equal(mla_expand_v2(d_k, d_v, d_u, d_c, KERNEL_F32, d, ctx, NULL), cudaSuccess);
    assert_int_equal(mla_causal_softmax_v2(d_p, d_s, d.scale, d.n_h, T, ctx, pos0, NULL), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(k, d_k, sizeof(float) * nk, cudaMemcpyDeviceToHost);
    cudaMemcpy(v, d_v, sizeof(float) * nv, cudaMemcpyDeviceToHost);
    cudaMemcpy(p, d_p, sizeof(float) * ns, cudaMemcpyDeviceToHost);
    check_close("mla_expand_v2 K", k, want_k, nk, 0, 0);
    check_close("mla_expand_v2 V", v, want_v, nv, 0, 0);
    check_close("mla_causal_softmax_v2", p, want_p, ns, -1, 1e-6);
    void *dev[] = { d_u, d_c, d_k, d_v, d_s, d_p };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    void *host[] = { u, c, sc, k, v, p, want_k, want_v, want_p };
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0);
    test_rng_seed(&rng, "fast mla");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lite_real_dims),          cmocka_unit_test(v2_heads_with_query_compression),
        cmocka_unit_test(odd_sizes_three_splits),  cmocka_unit_test(decode_kernels_two_head_groups),
        cmocka_unit_test(decode_kernels_odd_rows), cmocka_unit_test(expanded_v2_steps),
    };
    return cmocka_run_group_tests_name("fast mla", tests, NULL, NULL);
}
