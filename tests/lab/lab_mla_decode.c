/**
 * \file lab_mla_decode.c
 * \brief Kernel lab, component `mla_decode`: lab_mla_decode against ref/mla.c's absorbed attention.
 *
 * The reference is mla_forward() in its absorbed form (MLA_ABSORBED) on a
 * layer built so that its per-head output is o^L itself: W^UV_h is the
 * identity (d_v = d_c), so o_{t,h} = W^UV_h o^L_{t,h} = o^L_{t,h} exactly.
 * Cache rows [0, pos0) are drawn at random (ĉ_j and k^R_j uniform in
 * [-1.7, 1.7), rounded to bfloat16 first when the cache is bf16); the T new
 * tokens' rows are the ones mla_forward() writes, zero here (W^DKV and W^KR
 * are zero), so the reference reads exactly the values the kernel reads in
 * both cache types. Queries: q from the layer's W^UQ/W^QR (q^R rotated at
 * pos0 + t) and q^L = W^UK_hᵀ q^N_h from linear_transposed_rows(), as the
 * reference computes them.
 *
 * Shapes (ctx = pos0 + T cached positions): tiny; odd head sizes with ctx
 * inside one 64-key split, across 2 and 3 splits, and T = 4 tokens straddling
 * a split boundary; DeepSeek-V2-Lite (16 heads, d_n 128, d_r 64, d_c 512,
 * YaRN) at ctx 64, 300 (float32) and 1000 (bf16 cache); DeepSeek-V2 (128
 * heads) at ctx 1000. Tolerance: relative L2 ≤ 1e-5 — an online softmax over
 * splits reorders float32 sums of at most ctx terms of a weighted average.
 */
#include "contract.h"
#include "dtype.h"
#include "lab.h"
#include "mla.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LAB_D 32 /* hidden width of the layer built for the reference (the kernel never sees it) */

/** One shape's device buffers, for the timed runs. */
typedef struct {
    float *o_lat, *q_lat, *q, *partial;
    void *cache;
    KernelDType cache_type;
    MlaDims dims;
    int pos0, T;
} DecodeRun;

static cudaError_t run_decode(void *ctx, bool project)
{
    const DecodeRun *r = ctx;
    return (project ? mla_decode_v2 : lab_mla_decode)(r->o_lat, r->q_lat, r->q, r->cache, r->cache_type, r->dims,
                                                      r->pos0, r->T, r->partial, 0);
}

static float *random_floats(size_t n, float a)
{
    float *x = malloc(sizeof(float) * n);
    test_rng_fill(&lab_rng, x, n, -a, a);
    return x;
}

static void shape(const char *kind, int nh, int dn, int dr, int dc, bool yarn, int pos0, int T, KernelDType ct)
{
    const int dq = dn + dr, width = dc + dr, ctx = pos0 + T;
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.hidden_size = LAB_D;
    c.num_attention_heads = nh;
    c.qk_nope_head_dim = dn;
    c.qk_rope_head_dim = dr;
    c.v_head_dim = dc; /* W^UV_h = I: the head's output is o^L */
    c.kv_lora_rank = dc;
    c.rms_norm_eps = 1e-6f;
    c.rope_theta = 10000.0f;
    c.rope_yarn = yarn;
    c.rope_factor = 40.0f;
    c.rope_original_max_position = 4096;
    c.rope_beta_fast = 32.0f;
    c.rope_beta_slow = 1.0f;
    c.rope_mscale = 0.707f;
    c.rope_mscale_all_dim = 0.707f;
    c.max_position_embeddings = 163840;
    Rope rope;
    rope_init(&rope, &c);

    /* The layer: W^UQ/W^QR random, W^DKV and W^KR zero, per head [W^UK_h random; W^UV_h = I], W^O zero. */
    float *q_proj = random_floats((size_t)nh * dq * LAB_D, 1.0f / sqrtf((float)LAB_D));
    float *kv_a = calloc((size_t)width * LAB_D, sizeof(float)), *ones = malloc(sizeof(float) * dc);
    float *o_proj = calloc((size_t)LAB_D * nh * dc, sizeof(float));
    uint16_t *kv_b = calloc((size_t)nh * (dn + dc) * dc, sizeof(uint16_t));
    for (int i = 0; i < dc; i++) ones[i] = 1.0f;
    for (int h = 0; h < nh; h++) {
        uint16_t *uk = kv_b + (size_t)h * (dn + dc) * dc, *uv = uk + (size_t)dn * dc;
        for (size_t i = 0; i < (size_t)dn * dc; i++)
            uk[i] = f32_to_bf16(test_rng_uniform(&lab_rng, -2.0f, 2.0f) / sqrtf((float)dn));
        for (int i = 0; i < dc; i++) uv[(size_t)i * dc + i] = f32_to_bf16(1.0f);
    }
    MlaWeights w;
    memset(&w, 0, sizeof w);
    w.q_proj = (Mat){ q_proj, DT_F32, nh * dq, LAB_D };
    w.kv_a_proj = (Mat){ kv_a, DT_F32, width, LAB_D };
    w.kv_a_norm = ones;
    w.kv_b_proj = (Mat){ kv_b, DT_BF16, nh * (dn + dc), dc };
    w.o_proj = (Mat){ o_proj, DT_F32, LAB_D, nh * dc };

    /* The cache: random rows before pos0 (bf16-exact for a bf16 cache); mla_forward writes the rest. */
    LatentCache lc;
    MlaScratch ms;
    latent_cache_init(&lc, &c, ctx);
    mla_scratch_init(&ms, &c, T, ctx);
    test_rng_fill(&lab_rng, lc.c_kv, (size_t)pos0 * dc, -1.7f, 1.7f);
    test_rng_fill(&lab_rng, lc.k_rope, (size_t)pos0 * dr, -1.7f, 1.7f);
    if (ct == KERNEL_BF16) {
        for (size_t i = 0; i < (size_t)pos0 * dc; i++) lc.c_kv[i] = bf16_to_f32(f32_to_bf16(lc.c_kv[i]));
        for (size_t i = 0; i < (size_t)pos0 * dr; i++) lc.k_rope[i] = bf16_to_f32(f32_to_bf16(lc.k_rope[i]));
    }
    float *a = random_floats((size_t)T * LAB_D, 2.0f), *out = malloc(sizeof(float) * T * LAB_D);
    mla_forward(out, a, &w, &lc, &c, &rope, pos0, T, MLA_ABSORBED, &ms);

    /* The kernel's inputs: q (rotated), q^L = W^UK_hᵀ q^N_h, and the cache rows [ĉ_j ; k^R_j]. */
    const size_t n_out = (size_t)T * nh * dc, esz = kernel_dtype_size(ct);
    float *q_lat = malloc(sizeof(float) * n_out), *got = malloc(sizeof(float) * n_out);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++)
            linear_transposed_rows(q_lat + ((size_t)t * nh + h) * dc, ms.q + ((size_t)t * nh + h) * dq, &w.kv_b_proj,
                                   h * (dn + dc), dn);
    void *cache = malloc((size_t)ctx * width * esz);
    for (int j = 0; j < ctx; j++)
        for (int i = 0; i < width; i++) {
            const float v = i < dc ? lc.c_kv[(size_t)j * dc + i] : lc.k_rope[(size_t)j * dr + i - dc];
            if (ct == KERNEL_F32)
                ((float *)cache)[(size_t)j * width + i] = v;
            else
                ((uint16_t *)cache)[(size_t)j * width + i] = f32_to_bf16(v);
        }

    lab_shape_begin("%-4s %3d heads, d_c %3d, d_r %2d, ctx %4d (pos0 %3d, T %d), %-4s cache", kind, nh, dc, dr, ctx,
                    pos0, T, ct == KERNEL_F32 ? "f32" : "bf16");
    const MlaDims dims = { nh, dn, dr, dc, dc, rope.softmax_scale };
    const size_t n_partial = lab_mla_decode_partial_floats(dims, ctx, T);
    DecodeRun r = { lab_device(NULL, sizeof(float) * n_out),
                    lab_device(q_lat, sizeof(float) * n_out),
                    lab_device(ms.q, sizeof(float) * T * nh * dq),
                    lab_device(NULL, sizeof(float) * n_partial),
                    lab_device(cache, (size_t)ctx * width * esz),
                    ct,
                    dims,
                    pos0,
                    T };
    const int d_out[3] = { T, nh, dc }, d_q[3] = { T, nh, dq }, d_cache[2] = { ctx, width },
              d_part[1] = { (int)n_partial };
    lab_arg("o_lat", r.o_lat, sizeof(float) * n_out, sizeof(float), "t, h, c", 3, d_out);
    lab_arg("q_lat", r.q_lat, sizeof(float) * n_out, sizeof(float), "t, h, c", 3, d_out);
    lab_arg("q", r.q, sizeof(float) * T * nh * dq, sizeof(float), "t, h, d", 3, d_q);
    lab_arg("cache", r.cache, (size_t)ctx * width * esz, esz, "j, i", 2, d_cache);
    lab_arg("partial", r.partial, sizeof(float) * n_partial, sizeof(float), "i", 1, d_part);
    if (lab_call(lab_mla_decode(r.o_lat, r.q_lat, r.q, r.cache, ct, dims, pos0, T, r.partial, 0)) && lab_sync()) {
        lab_host(got, r.o_lat, sizeof(float) * n_out);
        lab_compare("o_lat", got, ms.o, n_out, 1e-5);
        /* bytes: the cache once, q^L, q^R and o^L; flops: 2 multiply-adds per (query, key, latent dim) */
        const double bytes = (double)ctx * width * esz + 4.0 * (2.0 * n_out + (double)T * nh * dr);
        lab_time(run_decode, &r, bytes, 4.0 * T * nh * (double)ctx * width);
    }
    lab_shape_end();

    latent_cache_free(&lc);
    mla_scratch_free(&ms);
    free(q_proj);
    free(kv_a);
    free(ones);
    free(o_proj);
    free(kv_b);
    free(a);
    free(out);
    free(q_lat);
    free(got);
    free(cache);
}

static void run(void)
{
    shape("tiny", 1, 8, 4, 16, false, 2, 1, KERNEL_F32);
    shape("odd", 3, 10, 6, 40, false, 40, 1, KERNEL_F32);     /* one 64-key split */
    shape("odd", 3, 10, 6, 40, false, 99, 1, KERNEL_F32);     /* two */
    shape("odd", 5, 12, 2, 72, false, 130, 2, KERNEL_F32);    /* three */
    shape("odd", 3, 10, 6, 40, false, 62, 4, KERNEL_BF16);    /* 4 tokens across a boundary */
    shape("Lite", 16, 128, 64, 512, true, 63, 1, KERNEL_F32); /* exactly one full split */
    shape("Lite", 16, 128, 64, 512, true, 299, 1, KERNEL_F32);
    shape("Lite", 16, 128, 64, 512, true, 998, 2, KERNEL_BF16);
    shape("V2", 128, 128, 64, 512, true, 999, 1, KERNEL_BF16);
}

const LabComponent lab_component = { "mla_decode", "lab_mla_decode", run };
