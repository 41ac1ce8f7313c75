/**
 * \file test_fast_prefill.c
 * \brief Prompt chunks on the device: the tiled MLA prompt kernel (mla_prefill v1, v2) and the grouped
 *        expert GEMM (moe_experts_v4) against double-precision references on fresh random inputs; whole
 *        prompts in chunks of 1, 7, 64, 100 and 300 tokens against the reference model's logits; the
 *        scratch's independence from the context; the chunk limit.
 *
 * Kernels: outputs are NaN-poisoned before every launch. Attention: random q^L, q^R and cache rows,
 * tokens at positions that start mid-sequence (pos0 > 0) and tokens of two sequences interleaved in
 * one launch (different cache bases in one block); V2's row width (d_c 512 + d_r 64, 16-byte loads)
 * on 20 heads (a full head group and a partial one) and odd sizes (3 heads, d_c 40, d_r 6: element
 * loads, several tokens per block). Experts: several tiles per expert, empty experts, D and I
 * multiples of 8 (16-byte loads) and not. Tolerances: float32 outputs relative L2 ≤ 1e-5 (float32
 * sums in another order than the double reference); a bf16 output ≤ 2e-2 (one rounding to 8 bits of
 * mantissa, 2^-9 relative, plus the float32 sums); the reference reads the same stored (bf16 or
 * float32) inputs. Whole prompts in float32 mode: logits within 1e-4 max-abs of ref/model.c's, the
 * tolerance tests/test_fast_model.c holds the fast model to.
 */
#include "check.h"
#include "fast_test.h"
#include "golden.h"
#include "dtype.h"
#include "error.h"
#include "fast.h"

#include <math.h>
#include <stdio.h>
#if __has_include("sim_counters.h")
#include "sim_counters.h"
#define HAVE_SIM_COUNTERS 1
#else
#define HAVE_SIM_COUNTERS 0
#endif
#include <stdlib.h>
#include <string.h>

static TestRng rng;

/* Uploads n floats stored as type (bf16: rounded), and rounds host in place to what was stored. */
static void *upload(float *host, size_t n, KernelDType type)
{
    void *dev = NULL;
    if (type == KERNEL_BF16) {
        uint16_t *b = malloc(2 * n);
        for (size_t i = 0; i < n; i++) {
            b[i] = f32_to_bf16(host[i]);
            host[i] = bf16_to_f32(b[i]);
        }
        assert_int_equal(cudaMalloc(&dev, 2 * n), cudaSuccess);
        assert_int_equal(cudaMemcpy(dev, b, 2 * n, cudaMemcpyHostToDevice), cudaSuccess);
        free(b);
    } else {
        assert_int_equal(cudaMalloc(&dev, 4 * n), cudaSuccess);
        assert_int_equal(cudaMemcpy(dev, host, 4 * n, cudaMemcpyHostToDevice), cudaSuccess);
    }
    return dev;
}

/* n elements of type from the device as floats. */
static void download(float *host, const void *dev, size_t n, KernelDType type)
{
    if (type == KERNEL_BF16) {
        uint16_t *b = malloc(2 * n);
        assert_int_equal(cudaMemcpy(b, dev, 2 * n, cudaMemcpyDeviceToHost), cudaSuccess);
        for (size_t i = 0; i < n; i++) host[i] = bf16_to_f32(b[i]);
        free(b);
    } else {
        assert_int_equal(cudaMemcpy(host, dev, 4 * n, cudaMemcpyDeviceToHost), cudaSuccess);
    }
}

/* A device buffer of n elements of type filled with NaN (poisoned output). */
static void *poisoned(size_t n, KernelDType type)
{
    void *dev = NULL;
    const size_t bytes = n * kernel_dtype_size(type);
    assert_int_equal(cudaMalloc(&dev, bytes), cudaSuccess);
    assert_int_equal(cudaMemset(dev, 0xff, bytes), cudaSuccess); /* NaN in float32 and bf16 */
    return dev;
}

/* o^L_{t,h} = Σ_j softmax_j(σ (q^L·ĉ_j + q^R·k^R_j)) ĉ_j over j ≤ pos[t] at rows base[t] + j, in double. */
static void prefill_reference(float *o, const float *q_lat, const float *q, const float *cache, MlaDims d,
                              const int *pos, const int *base, int T)
{
    const int width = d.d_c + d.d_r, dq = d.d_n + d.d_r;
    int keys = 0;
    for (int t = 0; t < T; t++) keys = pos[t] + 1 > keys ? pos[t] + 1 : keys;
    double *s = malloc(sizeof(double) * (size_t)keys);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < d.n_h; h++) {
            const float *ql = q_lat + ((size_t)t * d.n_h + h) * d.d_c, *qr = q + ((size_t)t * d.n_h + h) * dq + d.d_n;
            double max = -INFINITY, sum = 0.0;
            for (int j = 0; j <= pos[t]; j++) {
                const float *row = cache + ((size_t)base[t] + j) * width;
                double v = 0.0;
                for (int c = 0; c < d.d_c; c++) v += (double)ql[c] * row[c];
                for (int i = 0; i < d.d_r; i++) v += (double)qr[i] * row[d.d_c + i];
                s[j] = d.scale * v;
                max = s[j] > max ? s[j] : max;
            }
            for (int j = 0; j <= pos[t]; j++) sum += (s[j] = exp(s[j] - max));
            for (int c = 0; c < d.d_c; c++) {
                double v = 0.0;
                for (int j = 0; j <= pos[t]; j++) v += s[j] * cache[((size_t)base[t] + j) * width + c];
                o[((size_t)t * d.n_h + h) * d.d_c + c] = (float)(v / sum);
            }
        }
    free(s);
}

/*
 * One attention case: T tokens; token t of sequence t % seqs (base seq·rows_per_seq) at position
 * pos0 + t / seqs; cache of cache_type. Versions 1 and 2 (float32 and bf16 output) against the reference.
 */
static void prefill_case(MlaDims d, int T, int pos0, int seqs, KernelDType cache_type)
{
    const int width = d.d_c + d.d_r, dq = d.d_n + d.d_r, per_seq = pos0 + T + 3;
    const size_t n_cache = (size_t)seqs * per_seq * width, n_ql = (size_t)T * d.n_h * d.d_c;
    const size_t n_q = (size_t)T * d.n_h * dq;
    float *cache = malloc(sizeof(float) * n_cache), *ql = malloc(sizeof(float) * n_ql),
          *q = malloc(sizeof(float) * n_q);
    float *want = malloc(sizeof(float) * n_ql), *got = malloc(sizeof(float) * n_ql);
    int pos[64], base[64];
    assert_true(T <= 64);
    for (int t = 0; t < T; t++) {
        pos[t] = pos0 + t / seqs;
        base[t] = (t % seqs) * per_seq;
    }
    test_rng_fill(&rng, cache, n_cache, -1.0f, 1.0f);
    test_rng_fill(&rng, ql, n_ql, -0.5f, 0.5f);
    test_rng_fill(&rng, q, n_q, -0.5f, 0.5f);
    void *cache_d = upload(cache, n_cache, cache_type), *ql_d = upload(ql, n_ql, KERNEL_F32);
    void *q_d = upload(q, n_q, KERNEL_F32);
    int *pos_d = NULL, *base_d = NULL;
    assert_int_equal(cudaMalloc((void **)&pos_d, sizeof(int) * T), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&base_d, sizeof(int) * T), cudaSuccess);
    assert_int_equal(cudaMemcpy(pos_d, pos, sizeof(int) * T, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(base_d, base, sizeof(int) * T, cudaMemcpyHostToDevice), cudaSuccess);
    prefill_reference(want, ql, q, cache, d, pos, base, T);
    printf(" %d heads, d_c %d, d_r %d, T %d from position %d, %d sequence(s), %s cache:\n", d.n_h, d.d_c, d.d_r, T,
           pos0, seqs, cache_type == KERNEL_BF16 ? "bf16" : "float32");
    for (int v = 1; v <= 3; v++) { /* v1; v2 float32 out; v2 bf16 out */
        const KernelDType o_type = v == 3 ? KERNEL_BF16 : KERNEL_F32;
        void *o_d = poisoned(n_ql, o_type);
        const cudaError_t err =
            v == 1 ? mla_prefill_v1(o_d, ql_d, q_d, cache_d, cache_type, d, pos_d, base_d, T, NULL)
                   : mla_prefill_v2(o_d, o_type, ql_d, q_d, cache_d, cache_type, d, pos_d, base_d, T, NULL);
        assert_int_equal(err, cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        download(got, o_d, n_ql, o_type);
        const char *what = v == 1 ? "mla_prefill_v1" : v == 2 ? "mla_prefill_v2" : "mla_prefill_v2 (bf16 o^L)";
        const CheckStats st = check_stats(got, want, n_ql);
        printf("    %-28s rel-L2 %.3g, max-abs %.3g\n", what, st.rel_l2, st.max_abs);
        check_close(what, got, want, n_ql, -1, v == 3 ? 2e-2 : 1e-5);
        cudaFree(o_d);
    }
    cudaFree(cache_d);
    cudaFree(ql_d);
    cudaFree(q_d);
    cudaFree(pos_d);
    cudaFree(base_d);
    free(cache);
    free(ql);
    free(q);
    free(want);
    free(got);
}

static void prefill_kernels_v2_width(void **state)
{
    (void)state;
    need_device();
    const MlaDims d = { 20, 128, 64, 128, 512, 0.07f };
    prefill_case(d, 3, 37, 1, KERNEL_BF16); /* mid-sequence chunk, 16-byte loads, two head groups */
    prefill_case(d, 4, 20, 2, KERNEL_F32);  /* two sequences interleaved */
}

static void prefill_kernels_odd(void **state)
{
    (void)state;
    need_device();
    const MlaDims d = { 3, 5, 6, 7, 40, 0.3f };
    prefill_case(d, 23, 0, 1, KERNEL_F32);   /* a prompt from position 0, 10 tokens per block, element loads */
    prefill_case(d, 17, 41, 3, KERNEL_BF16); /* three sequences, mid-sequence, tiles cut at 16 rows */
}

/* out[r] = W_down,e (silu(W_gate,e x_r) ⊙ W_up,e x_r), hidden rounded to w_type as the kernels do; double sums. */
static void experts_reference(float *out, const float *xp, const int *offsets, const float *gate_up, const float *down,
                              KernelDType w_type, int E, int D, int I)
{
    float *hid = malloc(sizeof(float) * I);
    for (int e = 0; e < E; e++)
        for (int r = offsets[e]; r < offsets[e + 1]; r++) {
            for (int i = 0; i < I; i++) {
                double g = 0.0, u = 0.0;
                for (int k = 0; k < D; k++) {
                    g += (double)gate_up[((size_t)e * 2 * I + i) * D + k] * xp[(size_t)r * D + k];
                    u += (double)gate_up[((size_t)e * 2 * I + I + i) * D + k] * xp[(size_t)r * D + k];
                }
                const float h = (float)(g / (1.0 + exp(-g)) * u);
                hid[i] = w_type == KERNEL_BF16 ? bf16_to_f32(f32_to_bf16(h)) : h;
            }
            for (int k = 0; k < D; k++) {
                double v = 0.0;
                for (int i = 0; i < I; i++) v += (double)down[((size_t)e * D + k) * I + i] * hid[i];
                out[(size_t)r * D + k] = (float)v;
            }
        }
    free(hid);
}

/* counts[e] rows per expert; moe_experts_v4 and v1 against the reference. */
static void experts_case(const int *counts, int E, int D, int I, KernelDType w_type)
{
    int offsets[17];
    offsets[0] = 0;
    for (int e = 0; e < E; e++) offsets[e + 1] = offsets[e] + counts[e];
    const int rows = offsets[E];
    const size_t n_x = (size_t)rows * D, n_gu = (size_t)E * 2 * I * D, n_dn = (size_t)E * D * I;
    float *xp = malloc(sizeof(float) * n_x), *gu = malloc(sizeof(float) * n_gu), *dn = malloc(sizeof(float) * n_dn);
    float *want = malloc(sizeof(float) * n_x), *got = malloc(sizeof(float) * n_x);
    test_rng_fill(&rng, xp, n_x, -1.0f, 1.0f);
    test_rng_fill(&rng, gu, n_gu, -1.0f / sqrtf((float)D), 1.0f / sqrtf((float)D));
    test_rng_fill(&rng, dn, n_dn, -1.0f / sqrtf((float)I), 1.0f / sqrtf((float)I));
    void *xp_d = upload(xp, n_x, w_type), *gu_d = upload(gu, n_gu, w_type), *dn_d = upload(dn, n_dn, w_type);
    int *off_d = NULL;
    assert_int_equal(cudaMalloc((void **)&off_d, sizeof(int) * (E + 1)), cudaSuccess);
    assert_int_equal(cudaMemcpy(off_d, offsets, sizeof(int) * (E + 1), cudaMemcpyHostToDevice), cudaSuccess);
    experts_reference(want, xp, offsets, gu, dn, w_type, E, D, I);
    printf(" experts: %d rows over %d experts, D %d, I %d, %s:\n", rows, E, D, I,
           w_type == KERNEL_BF16 ? "bf16" : "float32");
    for (int v = 1; v <= 4; v += 3) {
        float *out_d = poisoned(n_x, KERNEL_F32);
        void *hid_d = poisoned((size_t)rows * I, w_type);
        const cudaError_t err =
            v == 1 ? moe_experts_v1(out_d, hid_d, xp_d, off_d, gu_d, dn_d, w_type, rows, E, D, I, NULL)
                   : moe_experts_v4(out_d, hid_d, xp_d, off_d, gu_d, dn_d, w_type, rows, E, D, I, NULL);
        assert_int_equal(err, cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        download(got, out_d, n_x, KERNEL_F32);
        const char *what = v == 1 ? "moe_experts_v1" : "moe_experts_v4";
        const CheckStats st = check_stats(got, want, n_x);
        printf("    %-16s rel-L2 %.3g, max-abs %.3g\n", what, st.rel_l2, st.max_abs);
        /* bf16: the hidden layer's rounding may land on the other side of a tie for a few units */
        check_close(what, got, want, n_x, -1, w_type == KERNEL_BF16 ? 2e-2 : 1e-5);
        cudaFree(out_d);
        cudaFree(hid_d);
    }
    cudaFree(xp_d);
    cudaFree(gu_d);
    cudaFree(dn_d);
    cudaFree(off_d);
    free(xp);
    free(gu);
    free(dn);
    free(want);
    free(got);
}

static void grouped_gemm_experts(void **state)
{
    (void)state;
    need_device();
    const int counts_a[6] = { 130, 0, 1, 64, 0, 65 }; /* three tiles, none, a lone row, exactly one, one + 1 */
    experts_case(counts_a, 6, 48, 72, KERNEL_BF16);   /* 16-byte loads; I spans two gate/up column blocks */
    experts_case(counts_a, 6, 48, 72, KERNEL_F32);
    const int counts_b[5] = { 3, 70, 0, 0, 9 };
    experts_case(counts_b, 5, 37, 19, KERNEL_F32); /* element loads */
    experts_case(counts_b, 5, 37, 19, KERNEL_BF16);
}

/* A 300-token prompt (the fixture's, extended) in chunks of `chunk`, float32, against the reference. */
static void long_prompt_matches_reference(void **state)
{
    (void)state;
    need_device();
    const char *name = "v2";
    const int T = 300, chunks[] = { 1, 7, 64, 100, 300 };
    Golden g;
    golden_load(&g, name);
    int *ids = malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) ids[t] = t < g.T ? g.ids[t] : (t * 7919 + 11) % g.V;
    float *want = golden_ref_logits(name, ids, T, g.V);
    float *got = malloc(sizeof(float) * (size_t)T * g.V);
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        FastModel m;
        const FastOptions opt = { .chunk = chunks[i], .max_context = T + 4 };
        if (fast_model_open(&m, dir, &opt)) fail_msg("%s", ds_last_error());
        poison(got, (size_t)T * g.V);
        if (fast_model_forward(&m, ids, T, got, true)) fail_msg("%s", ds_last_error());
        const CheckStats st = check_stats(got, want, (size_t)T * g.V);
        printf("%s, %d tokens in chunks of %d (%d MoE rows per chunk): logits max-abs %.3g, rel-L2 %.3g\n", name, T,
               chunks[i], chunks[i] * m.cfg->num_experts_per_tok, st.max_abs, st.rel_l2);
        check_close("long prompt", got, want, (size_t)T * g.V, 1e-4, -1);
        fast_model_close(&m);
    }
    free(ids);
    free(got);
    free(want);
    golden_close(&g);
}

/*
 * A 300-token prompt in three chunks of 100 (300 MoE rows each: the grouped GEMM) waits for the device
 * once, at its end: no copy of the expert offsets, no synchronisation between chunks (counted by the
 * simulated device; on a GPU there is no such counter and the test says so).
 */
static void prompt_chunks_never_wait_for_the_host(void **state)
{
    (void)state;
    need_device();
#if HAVE_SIM_COUNTERS
    char dir[256];
    golden_dir(dir, sizeof dir, "v2");
    FastModel m;
    const FastOptions opt = { .chunk = 100, .max_context = 304 };
    if (fast_model_open(&m, dir, &opt)) fail_msg("%s", ds_last_error());
    int ids[300];
    for (int t = 0; t < 300; t++) ids[t] = (t * 31 + 7) % m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * m.cfg->vocab_size);
    SimStepCounters c;
    sim_counters_start();
    const int rc = fast_model_prefill(&m, 0, ids, 300, logits, false);
    sim_counters_stop(&c);
    if (rc) fail_msg("%s", ds_last_error());
    printf("300 tokens in chunks of 100: %llu host synchronisations, %llu kernels, %llu GEMMs, %llu copies\n",
           c.host_syncs, c.kernels, c.gemms, c.copies);
    assert_true(c.host_syncs == 1); /* fast_model_prefill's final cudaStreamSynchronize */
    free(logits);
    fast_model_close(&m);
#else
    printf("host synchronisations are counted by the simulated device only\n");
    skip();
#endif
}

/* Every scratch buffer is the same at two contexts: nothing the prompt path holds grows with the context. */
static void scratch_independent_of_context(void **state)
{
    (void)state;
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.hidden_size = 2048;
    c.num_attention_heads = 16;
    c.qk_nope_head_dim = 128;
    c.qk_rope_head_dim = 64;
    c.v_head_dim = 128;
    c.kv_lora_rank = 512;
    c.intermediate_size = 10944;
    c.moe_intermediate_size = 1408;
    c.n_routed_experts = 64;
    c.n_shared_experts = 2;
    c.num_experts_per_tok = 6;
    size_t a[FAST_SCRATCH_BUFFERS], b[FAST_SCRATCH_BUFFERS];
    assert_int_equal(fast_scratch_sizes(&c, KERNEL_BF16, 2048, 4096, a), FAST_SCRATCH_BUFFERS);
    assert_int_equal(fast_scratch_sizes(&c, KERNEL_BF16, 2048, 131072, b), FAST_SCRATCH_BUFFERS);
    for (int i = 0; i < FAST_SCRATCH_BUFFERS; i++) assert_true(a[i] == b[i]);
    const size_t at_4k = fast_scratch_bytes(&c, KERNEL_BF16, 2048, 4096);
    assert_true(at_4k == fast_scratch_bytes(&c, KERNEL_BF16, 2048, 131072));
    printf("V2-Lite-shaped scratch, chunk 2048, bf16: %zu bytes at contexts 4096 and 131072\n", at_4k);
}

/* A chunk above FAST_MAX_CHUNK is refused with one line naming the option. */
static void chunk_limit_refused(void **state)
{
    (void)state;
    need_device();
    char dir[256];
    golden_dir(dir, sizeof dir, "lite");
    FastModel m;
    const FastOptions opt = { .chunk = FAST_MAX_CHUNK + 1 };
    assert_int_equal(fast_model_open(&m, dir, &opt), -1);
    printf("chunk %d: %s\n", FAST_MAX_CHUNK + 1, ds_last_error());
    assert_non_null(strstr(ds_last_error(), "FastOptions.chunk"));
}

int main(void)
{
    test_rng_seed(&rng, "fast prefill");
    setenv("SIM_RACECHECK", "1", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prefill_kernels_v2_width),
        cmocka_unit_test(prefill_kernels_odd),
        cmocka_unit_test(grouped_gemm_experts),
        cmocka_unit_test(long_prompt_matches_reference),
        cmocka_unit_test(prompt_chunks_never_wait_for_the_host),
        cmocka_unit_test(scratch_independent_of_context),
        cmocka_unit_test(chunk_limit_refused),
    };
    return cmocka_run_group_tests_name("fast prefill", tests, NULL, NULL);
}
