/**
 * \file test_fast_shard.c
 * \brief The sharded layout (fast/shard_model.c: attention by heads, latent cache by position, experts by
 *        expert, NCCL collectives only) against the C reference model.
 *
 * Fixtures: tests/golden/v2 (query compression, group-limited routing), lite (no query compression),
 * longctx (an 80-token prompt), over N = 1, 2 and 4 simulated devices (their 4 heads cannot be split 8
 * ways), and "heads8", written here from tests/golden/norope with 8 heads (the 4 extra heads' rows of
 * W^UQ/W^QR and [W^UK; W^UV] and W^O's columns are the original ones in reverse order with every other
 * sign flipped, so every head differs), over N = 8 and 2. For each, two sequences in two slots: the fixture's
 * prompt in slot 0 and a shifted, shorter one in slot 1 (chunks of 5 tokens, so prompts span chunks and
 * positions land on every device), then 4 decode steps of both slots together (batch 2) and one of slot 1
 * alone, each fed the reference's greedy token. Checks:
 *   - float32 mode: logits at every prompt position and after every decode step within 1e-5 relative L2
 *     (and 1e-4 max-abs, the fixtures' tolerance) of ref/model.h's model_forward on that sequence alone —
 *     the softmax is split over devices and the expert and W^O sums are grouped by device, a few float32
 *     roundings of values of order 1; greedy tokens equal;
 *   - bf16 mode (bf16 weights, cache and GEMM operands): within 2e-2 relative L2 of the single-device fast
 *     model in bf16 with the absorbed form (the same roundings; bf16 alone moves these fixtures' logits by
 *     up to 7e-2 from the float32 reference, printed with the top-1 agreement);
 *   - 0 host synchronisations in every decode step (sim_counters.h; the logits are fetched after it);
 *   - refused with one line: vocabulary, heads or experts not divisible by the devices, more devices than
 *     present, a token outside the vocabulary, a slot twice in one step. Outputs are NaN-poisoned first;
 *     every simulated launch runs under the race check (SIM_RACECHECK=1);
 *   - the partial attention kernels (kernels/mla_shard.cu), versions 1 and 2, against a double-precision
 *     host loop on random queries and float32 or bf16 cache rows, a token with no rows on the device
 *     included, to 1e-5 relative L2;
 *   - every cudaMalloc of opening lite over 2 devices made to fail in turn (tests/fault_sweep.h): one error
 *     line naming cudaMalloc, no device allocation left.
 */
#include "check.h"
#include "cli_run.h"
#include "error.h"
#include "fast_shard.h"
#include "fast_test.h"
#include "fault_sweep.h"
#include "golden.h"
#include "mla_shard.h"
#include "model.h"
#include "safetensors.h"
#include "st_writer.h"

#if __has_include("sim_counters.h")
#include "sim.h"
#include "sim_counters.h"
#define HAVE_SIM_COUNTERS 1
#else
#define HAVE_SIM_COUNTERS 0
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHUNK 5
#define STEPS 5 /* the last one with slot 1 alone */
#define SHIFT 31
#define CUT   3

/* One sequence: its prompt and greedy continuation, and the reference's logits. */
typedef struct {
    int ids[128];       /* prompt, then the token fed in each step */
    int T;              /* prompt length */
    float *prompt;      /* [T, V] */
    float *step[STEPS]; /* [V] after the token of step k (NULL: idle in step k) */
    int token[STEPS];   /* token fed in step k */
} Sequence;

static bool active(int seq, int k)
{
    return seq == 1 || k < STEPS - 1;
}

static void reference(Model *ref, Sequence *s, int which)
{
    const int V = ref->cfg->vocab_size;
    model_reset(ref);
    s->prompt = malloc(sizeof(float) * (size_t)s->T * V);
    assert_int_equal(model_forward(ref, s->ids, s->T, s->prompt, true), 0);
    const float *last = s->prompt + (size_t)(s->T - 1) * V;
    for (int k = 0; k < STEPS; k++) {
        s->step[k] = NULL;
        if (!active(which, k)) continue;
        s->token[k] = golden_argmax(last, V);
        s->step[k] = malloc(sizeof(float) * V);
        assert_int_equal(model_forward(ref, &s->token[k], 1, s->step[k], false), 0);
        last = s->step[k];
    }
}

/* float32: got within 1e-5 relative L2 and 1e-4 max-abs of the reference; the worst figure kept. */
static void compare(const char *what, const float *got, const float *want, size_t n, double *worst)
{
    const CheckStats cs = check_stats(got, want, n);
    *worst = cs.rel_l2 > *worst ? cs.rel_l2 : *worst;
    check_close(what, got, want, n, 1e-4, 1e-5);
}

/*
 * bf16: the single-device fast model in bf16 (absorbed form throughout, as the sharded layout runs it) holds
 * the same bf16 weights, cache and GEMM operands, so the two agree within 2e-2 relative L2; against the
 * float32 reference bf16 rounding alone reaches several percent on these fixtures (test_fast_model.c checks
 * bf16 by top-1 agreement for that reason), so that is printed, with the top-1 agreement.
 */
typedef struct {
    FastModel fm;
    double worst_ref, worst_fast;
    int agree, rows;
} Bf16Check;

static void compare_bf16(const char *what, Bf16Check *b, const float *got, const float *fast, const float *want,
                         int rows, int V)
{
    for (int i = 0; i < rows; i++) {
        const size_t o = (size_t)i * V;
        const CheckStats r = check_stats(got + o, want + o, (size_t)V), f = check_stats(got + o, fast + o, (size_t)V);
        b->worst_ref = r.rel_l2 > b->worst_ref ? r.rel_l2 : b->worst_ref;
        b->worst_fast = f.rel_l2 > b->worst_fast ? f.rel_l2 : b->worst_fast;
        b->agree += golden_argmax(got + o, V) == golden_argmax(want + o, V);
        b->rows++;
        check_close(what, got + o, fast + o, (size_t)V, -1, 2e-2);
    }
}

/* wire: the collectives' payload; bf16 weights run with float32 collectives (the single-device model's
 * roundings), float32 weights with either: bf16 collectives are held to 2e-2 of the reference. */
/* bf16 collectives over float32 weights: each row within 2e-2 relative L2 of the reference (bf16's 2^-9
 * relative rounding of each exchanged partial, a few per layer). */
static void compare_wire(const char *what, const float *got, const float *want, int rows, int V, double *worst)
{
    for (int i = 0; i < rows; i++) {
        const CheckStats cs = check_stats(got + (size_t)i * V, want + (size_t)i * V, (size_t)V);
        *worst = cs.rel_l2 > *worst ? cs.rel_l2 : *worst;
        check_close(what, got + (size_t)i * V, want + (size_t)i * V, (size_t)V, -1, 2e-2);
    }
}

static void shard_fixture(const char *dir, const int *prompt, int Tp, int N, bool bf16, FastShardWire wire)
{
    need_devices(N);
    Model ref;
    if (model_open(&ref, dir, NULL)) fail_msg("%s", ds_last_error());
    const int V = ref.cfg->vocab_size;
    Sequence seq[2];
    memset(seq, 0, sizeof seq);
    seq[0].T = Tp;
    seq[1].T = Tp - CUT;
    for (int t = 0; t < Tp; t++) {
        seq[0].ids[t] = prompt[t];
        seq[1].ids[t] = (prompt[t] + SHIFT) % V;
    }
    for (int i = 0; i < 2; i++) reference(&ref, &seq[i], i);

    FastShardModel m;
    const FastOptions opt = { .bf16 = bf16, .chunk = CHUNK, .max_batch = 2, .max_context = 96, .form = 2 };
    if (fast_shard_open(&m, dir, N, &opt)) fail_msg("%s", ds_last_error());
    assert_int_equal(m.wire, FAST_WIRE_BF16); /* the default */
    fast_shard_set_wire(&m, wire);
    const bool loose = !bf16 && wire == FAST_WIRE_BF16;
    Bf16Check b = { 0 };
    if (bf16 && fast_model_open(&b.fm, dir, &opt)) fail_msg("%s", ds_last_error());
    double worst = 0;
    for (int i = 0; i < 2; i++) { /* prompts, logits at every position */
        const size_t n = (size_t)seq[i].T * V;
        float *got = malloc(sizeof(float) * n), *fast = malloc(sizeof(float) * n);
        poison(got, n);
        if (fast_shard_prefill(&m, i, seq[i].ids, seq[i].T, got, true)) fail_msg("%s", ds_last_error());
        if (loose)
            compare_wire(dir, got, seq[i].prompt, seq[i].T, V, &worst);
        else if (!bf16)
            compare(dir, got, seq[i].prompt, n, &worst);
        else if (fast_model_prefill(&b.fm, i, seq[i].ids, seq[i].T, fast, true))
            fail_msg("%s", ds_last_error());
        else
            compare_bf16(dir, &b, got, fast, seq[i].prompt, seq[i].T, V);
        free(got);
        free(fast);
    }
    float got[2 * 512], fast[2 * 512];
    assert_true(V <= 512);
    for (int k = 0; k < STEPS; k++) { /* both slots, then slot 1 alone */
        const int B = active(0, k) ? 2 : 1;
        const int slots[2] = { B == 2 ? 0 : 1, 1 }, tokens[2] = { seq[slots[0]].token[k], seq[1].token[k] };
        poison(got, 2 * (size_t)V);
#if HAVE_SIM_COUNTERS
        SimStepCounters c;
        sim_counters_start();
#endif
        if (fast_shard_decode(&m, slots, tokens, B, NULL)) fail_msg("%s", ds_last_error());
#if HAVE_SIM_COUNTERS
        sim_counters_stop(&c);
        assert_int_equal(c.host_syncs, 0);
#endif
        if (fast_shard_logits(&m, got)) fail_msg("%s", ds_last_error());
        if (bf16 && fast_model_decode(&b.fm, slots, tokens, B, fast)) fail_msg("%s", ds_last_error());
        for (int i = 0; i < B; i++) {
            const float *want = seq[slots[i]].step[k];
            if (bf16) {
                compare_bf16(dir, &b, got + (size_t)i * V, fast + (size_t)i * V, want, 1, V);
                continue;
            }
            if (loose) {
                compare_wire(dir, got + (size_t)i * V, want, 1, V, &worst);
                continue;
            }
            compare(dir, got + (size_t)i * V, want, (size_t)V, &worst);
            assert_int_equal(golden_argmax(got + (size_t)i * V, V), golden_argmax(want, V));
        }
    }
    if (bf16)
        printf("%s N=%d bf16: rel-L2 <= %.3g vs the single-device fast model in bf16, %.3g vs the float32 "
               "reference, top-1 equal on %d of %d rows; 0 host syncs per decode step\n",
               dir, N, b.worst_fast, b.worst_ref, b.agree, b.rows);
    else if (loose)
        printf("%s N=%d f32, bf16 collectives: logits rel-L2 <= %.3g vs the reference\n", dir, N, worst);
    else
        printf("%s N=%d f32: prompts of %d and %d tokens, %d decode steps: logits rel-L2 <= %.3g vs the "
               "reference, 0 host syncs per decode step\n",
               dir, N, seq[0].T, seq[1].T, STEPS, worst);
    if (bf16) fast_model_close(&b.fm);
    fast_shard_close(&m);
    for (int i = 0; i < 2; i++) {
        free(seq[i].prompt);
        for (int k = 0; k < STEPS; k++) free(seq[i].step[k]);
    }
    model_close(&ref);
}

static void golden_fixture(const char *name, int N, bool bf16, FastShardWire wire)
{
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    Golden g;
    golden_load(&g, name);
    int ids[128];
    const int T = g.T < 80 ? g.T : 80;
    memcpy(ids, g.ids, sizeof(int) * (size_t)T);
    golden_close(&g);
    shard_fixture(dir, ids, T, N, bf16, wire);
}

/* ---- the partial attention kernels ---------------------------------------------------------- */

/* Versions 1 and 2 of the partial kernel against a double-precision loop on the host over random queries and
 * cache rows (bf16 or float32; the host uses the same rounded values): the rows of device rank of D, tokens at
 * positions pos with their own bases; a token whose positions all live elsewhere gets m = −∞, l = 0, o^L = 0. */
static void partial_case(MlaDims dims, int T, const int *pos, const int *base, int rows, MlaShard sh, KernelDType ct)
{
    TestRng rng;
    test_rng_seed(&rng, "fast_shard partial");
    const int w = dims.d_c + dims.d_r, nh = dims.n_h, blocks = nh / sh.hl;
    const size_t nq = (size_t)blocks * T * sh.hl * w, nc = (size_t)rows * w, np = (size_t)nh * T * (dims.d_c + 1);
    float *q = malloc(sizeof(float) * nq), *c = malloc(sizeof(float) * nc), *want = malloc(sizeof(float) * np);
    float *want_m = malloc(sizeof(float) * T * nh), *got = malloc(sizeof(float) * np),
          *got_m = malloc(sizeof(float) * T * nh);
    uint16_t *c16 = malloc(sizeof(uint16_t) * nc);
    test_rng_fill(&rng, q, nq, -1, 1);
    test_rng_fill(&rng, c, nc, -1, 1);
    for (size_t i = 0; ct == KERNEL_BF16 && i < nc; i++) c[i] = bf16_to_f32(c16[i] = f32_to_bf16(c[i]));
    for (int t = 0; t < T; t++) /* the reference: two passes in double over the device's rows */
        for (int h = 0; h < nh; h++) {
            const float *ql = q + (((size_t)(h / sh.hl) * T + t) * sh.hl + h % sh.hl) * w;
            float *o = want + (((size_t)(h / sh.hl) * T + t) * sh.hl + h % sh.hl) * (dims.d_c + 1);
            double m = -INFINITY, l = 0, acc[512] = { 0 };
            for (int pass = 0; pass < 2; pass++)
                for (int p = sh.rank; p <= pos[t]; p += sh.devices) {
                    const float *row = c + ((size_t)base[t] + p / sh.devices) * w;
                    double sc = 0;
                    for (int i = 0; i < w; i++) sc += (double)ql[i] * row[i];
                    sc *= dims.scale;
                    if (pass == 0) m = sc > m ? sc : m;
                    if (pass == 0) continue;
                    l += exp(sc - m);
                    for (int i = 0; i < dims.d_c; i++) acc[i] += exp(sc - m) * row[i];
                }
            for (int i = 0; i < dims.d_c; i++) o[i] = (float)acc[i];
            o[dims.d_c] = (float)l;
            want_m[t * nh + h] = (float)m;
        }
    float *d_q, *d_part, *d_m;
    void *d_c;
    int *d_pos, *d_base;
    const size_t csz = kernel_dtype_size(ct);
    assert_int_equal(cudaMalloc((void **)&d_q, sizeof(float) * nq), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_c, csz * nc), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_part, sizeof(float) * np), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_m, sizeof(float) * T * nh), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_pos, sizeof(int) * T), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_base, sizeof(int) * T), cudaSuccess);
    cudaMemcpy(d_q, q, sizeof(float) * nq, cudaMemcpyHostToDevice);
    cudaMemcpy(d_c, ct == KERNEL_BF16 ? (void *)c16 : (void *)c, csz * nc, cudaMemcpyHostToDevice);
    cudaMemcpy(d_pos, pos, sizeof(int) * T, cudaMemcpyHostToDevice);
    cudaMemcpy(d_base, base, sizeof(int) * T, cudaMemcpyHostToDevice);
    for (int v = 1; v <= 2; v++) {
        poison(got, np);
        cudaMemcpy(d_part, got, sizeof(float) * np, cudaMemcpyHostToDevice);
        const cudaError_t e = (v == 1 ? mla_shard_partial_v1 : mla_shard_partial_v2)(d_part, d_m, d_q, d_c, ct, dims,
                                                                                     d_pos, d_base, T, sh, NULL);
        assert_int_equal(e, cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        cudaMemcpy(got, d_part, sizeof(float) * np, cudaMemcpyDeviceToHost);
        cudaMemcpy(got_m, d_m, sizeof(float) * T * nh, cudaMemcpyDeviceToHost);
        char what[64];
        snprintf(what, sizeof what, "mla_shard_partial_v%d d_c %d", v, dims.d_c);
        check_close(what, got, want, np, -1, 1e-5);
        /* m is the largest score, a 576-term dot product of O(1) terms: its float32 rounding follows the terms'
         * size, not the sum's, which can cancel to near 0 — so the bound is relative to max(|m|, 1) */
        for (int i = 0; i < T * nh; i++)
            if (!(got_m[i] == want_m[i] || fabsf(got_m[i] - want_m[i]) <= 1e-5f * fmaxf(fabsf(want_m[i]), 1.0f)))
                fail_msg("%s: m[%d] = %g, want %g", what, i, got_m[i], want_m[i]);
    }
    void *dev[] = { d_q, d_c, d_part, d_m, d_pos, d_base };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    free(q);
    free(c);
    free(c16);
    free(want);
    free(want_m);
    free(got);
    free(got_m);
}

/* shard_wire_sum_v1 against a host loop: D = 3 bf16 slices (rank 1's own elsewhere) added in float32 in device
 * order, into float32 (equal: the same additions in the same order) and into bf16 (the float32 sum rounded). */
static void wire_sum_kernel(void)
{
    TestRng rng;
    test_rng_seed(&rng, "fast_shard wire sum");
    enum { D = 3, N = 1000 };
    float x[D * N], want[N], got[N];
    uint16_t slab[D * N], own[N], got16[N];
    test_rng_fill(&rng, x, D * N, -4, 4);
    for (int i = 0; i < D * N; i++) slab[i] = f32_to_bf16(x[i]);
    for (int i = 0; i < N; i++) {
        own[i] = slab[N + i];
        slab[N + i] = 0x7fc0; /* rank 1's slot in the slab is not read: a NaN there would show */
        want[i] = 0.0f;
        for (int q = 0; q < D; q++) want[i] += bf16_to_f32(q == 1 ? own[i] : slab[q * N + i]);
    }
    uint16_t *d_slab, *d_own;
    void *d_out;
    assert_int_equal(cudaMalloc((void **)&d_slab, sizeof slab), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_own, sizeof own), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_out, sizeof got), cudaSuccess);
    cudaMemcpy(d_slab, slab, sizeof slab, cudaMemcpyHostToDevice);
    cudaMemcpy(d_own, own, sizeof own, cudaMemcpyHostToDevice);
    poison(got, N);
    cudaMemcpy(d_out, got, sizeof got, cudaMemcpyHostToDevice);
    assert_int_equal(shard_wire_sum_v1(d_out, KERNEL_F32, d_slab, d_own, 1, D, N, NULL), cudaSuccess);
    cudaMemcpy(got, d_out, sizeof got, cudaMemcpyDeviceToHost);
    check_close("shard_wire_sum_v1 float32", got, want, N, 0.0, 0.0);
    assert_int_equal(shard_wire_sum_v1(d_out, KERNEL_BF16, d_slab, d_own, 1, D, N, NULL), cudaSuccess);
    cudaMemcpy(got16, d_out, sizeof got16, cudaMemcpyDeviceToHost);
    for (int i = 0; i < N; i++) assert_int_equal(got16[i], f32_to_bf16(want[i]));
    cudaFree(d_slab);
    cudaFree(d_own);
    cudaFree(d_out);
}

static void partial_kernels(void **state)
{
    (void)state;
    need_device();
    wire_sum_kernel();
    const int pos[3] = { 0, 5, 17 }, base[3] = { 0, 20, 40 }; /* token 0 has no rows on rank 1 */
    const MlaDims small = { 4, 0, 8, 0, 40, 0.125f };
    for (int ct = 0; ct < 2; ct++) partial_case(small, 3, pos, base, 60, (MlaShard){ 3, 1, 2 }, (KernelDType)ct);
    const MlaDims wide = { 2, 0, 64, 0, 512, 0.06f }; /* V2's d_c and d_r: 4 channels per thread */
    const int pos2[2] = { 9, 30 }, base2[2] = { 0, 10 };
    partial_case(wide, 2, pos2, base2, 20, (MlaShard){ 4, 2, 1 }, KERNEL_BF16);
    const MlaDims too_wide = { 2, 0, 8, 0, 520, 0.1f };
    assert_int_equal(
        mla_shard_partial_v2(NULL, NULL, NULL, NULL, KERNEL_F32, too_wide, NULL, NULL, 1, (MlaShard){ 1, 0, 1 }, NULL),
        cudaErrorInvalidValue);
}

/* ---- the 8-head checkpoint ------------------------------------------------------------------ */

/* Element i of src (elements of esz bytes) into dst[j], its sign flipped when flip. */
static void put(char *dst, size_t j, const char *src, size_t i, size_t esz, bool flip)
{
    memcpy(dst + j * esz, src + i * esz, esz);
    if (flip) dst[j * esz + esz - 1] ^= (char)0x80; /* the sign bit of a little-endian bf16/f32 */
}

/* Writes dir/heads8: norope's tensors with the per-head ones widened from 4 heads to 8. */
static char *write_heads8(void)
{
    char src[256], path[300], *dir = stw_path(stw_scratch_dir, "heads8");
    golden_dir(src, sizeof src, "norope");
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/config.json", src);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char text[4096];
    const size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    char *h = strstr(text, "\"num_attention_heads\": 4"), *kvh = strstr(text, "\"num_key_value_heads\": 4");
    assert_true(h && kvh);
    h[strlen("\"num_attention_heads\": ")] = '8';
    kvh[strlen("\"num_key_value_heads\": ")] = '8';
    char *out = stw_path(dir, "config.json");
    assert_int_equal(stw_write_text(out, text), 0);
    free(out);
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    StFile st;
    if (st_open(path, &st)) fail_msg("%s", ds_last_error());
    StwTensor *t = calloc(st.n_tensors, sizeof *t);
    char **bufs = calloc(st.n_tensors, sizeof *bufs);
    for (size_t i = 0; i < st.n_tensors; i++) {
        const StTensor *x = &st.tensors[i];
        const size_t esz = dtype_size(x->dtype);
        t[i] = (StwTensor){ x->name, x->dtype == DT_BF16 ? "BF16" : x->dtype == DT_F16 ? "F16" : "F32",
                            x->ndim, { 0 },
                            x->data, x->nbytes };
        memcpy(t[i].shape, x->shape, sizeof x->shape);
        const bool by_rows = strstr(x->name, "q_b_proj") || strstr(x->name, "q_proj.") || strstr(x->name, "kv_b_proj");
        const bool by_cols = strstr(x->name, "o_proj") != NULL;
        if (!by_rows && !by_cols) continue;
        const size_t R = (size_t)x->shape[0], C = (size_t)x->shape[1];
        char *b = bufs[i] = malloc(2 * x->nbytes);
        for (size_t r = 0; r < (by_rows ? 2 * R : R); r++)
            for (size_t c = 0; c < (by_cols ? 2 * C : C); c++) {
                const bool extra = by_rows ? r >= R : c >= C; /* the new heads: mirrored, every other sign */
                const size_t sr = by_rows && extra ? 2 * R - 1 - r : r, sc = by_cols && extra ? 2 * C - 1 - c : c;
                put(b, r * (by_cols ? 2 * C : C) + c, x->data, sr * C + sc, esz, extra && (r + c) % 2);
            }
        t[i].shape[by_rows ? 0 : 1] *= 2;
        t[i].data = b;
        t[i].nbytes = 2 * x->nbytes;
    }
    out = stw_path(dir, "model.safetensors");
    assert_int_equal(stw_write(out, t, (int)st.n_tensors), 0);
    free(out);
    for (size_t i = 0; i < st.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(t);
    st_close(&st);
    return dir;
}

static void heads8(int N, bool bf16, FastShardWire wire)
{
    Golden g;
    golden_load(&g, "norope");
    int ids[128];
    const int T = g.T;
    memcpy(ids, g.ids, sizeof(int) * (size_t)T);
    golden_close(&g);
    char *dir = write_heads8();
    shard_fixture(dir, ids, T, N, bf16, wire);
    free(dir);
}

/* ---- the cases ------------------------------------------------------------------------------- */

static void v2_f32(void **state)
{
    (void)state;
    for (int N = 1; N <= 4; N *= 2) golden_fixture("v2", N, false, FAST_WIRE_F32);
}

static void lite_f32(void **state)
{
    (void)state;
    for (int N = 1; N <= 4; N *= 2) golden_fixture("lite", N, false, FAST_WIRE_F32);
}

static void longctx_f32(void **state)
{
    (void)state;
    for (int N = 2; N <= 4; N *= 2) golden_fixture("longctx", N, false, FAST_WIRE_F32);
}

static void heads8_f32(void **state)
{
    (void)state;
    heads8(8, false, FAST_WIRE_F32);
    heads8(2, false, FAST_WIRE_F32);
}

static void bf16_runs(void **state)
{
    (void)state;
    golden_fixture("v2", 4, true, FAST_WIRE_F32);
    heads8(8, true, FAST_WIRE_F32);
}

/* float32 weights, bf16 collectives (the default wire) over 1, 2, 4 and 8 devices. */
static void bf16_wire(void **state)
{
    (void)state;
    for (int N = 1; N <= 4; N *= 2) golden_fixture("v2", N, false, FAST_WIRE_BF16);
    heads8(8, false, FAST_WIRE_BF16);
}

/* Decode steps replayed from the D devices' CUDA graphs (the default) against the same steps run eagerly
 * (FastOptions.graph −1), float32: bit for bit equal logits (the same launches and collectives in the same order
 * on the same data), while shard_fixture holds the graph steps to the C reference. Counted over a step and its
 * logits fetch: one graph launch per device, every kernel, GEMM and fill replayed from a graph, and outside the
 * graphs only the D uploads of the staged step and the logits copy; the one host sync is the fetch. */
static void graphs_equal_eager(const char *name, int N)
{
    need_devices(N);
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    FastShardModel g, e;
    const FastOptions go = { .chunk = CHUNK, .max_batch = 2, .max_context = 32 },
                      eo = { .chunk = CHUNK, .max_batch = 2, .max_context = 32, .graph = -1 };
    if (fast_shard_open(&g, dir, N, &go) || fast_shard_open(&e, dir, N, &eo)) fail_msg("%s", ds_last_error());
    assert_non_null(g.graphs);
    assert_null(e.graphs);
    const int V = g.cfg->vocab_size, prompt[7] = { 5, 17, 3, 99, 42, 7, 250 };
    float *a = malloc(sizeof(float) * 2 * V), *b = malloc(sizeof(float) * 2 * V);
    for (int i = 0; i < 2; i++)
        if (fast_shard_prefill(&g, i, prompt + i, 6 - i, NULL, false) ||
            fast_shard_prefill(&e, i, prompt + i, 6 - i, NULL, false))
            fail_msg("%s", ds_last_error());
    int tokens[2] = { 11, 12 };
    for (int k = 0; k < 4; k++) { /* batch 2, then batch 1 (its own graphs), then batch 2 again (replayed) */
        const int B = k == 2 ? 1 : 2, slots[2] = { B == 2 ? 0 : 1, 1 };
        poison(a, 2 * (size_t)V);
        poison(b, 2 * (size_t)V);
#if HAVE_SIM_COUNTERS
        SimStepCounters c;
        sim_counters_start();
#endif
        if (fast_shard_decode(&g, slots, tokens, B, NULL) || fast_shard_logits(&g, a)) fail_msg("%s", ds_last_error());
#if HAVE_SIM_COUNTERS
        sim_counters_stop(&c);
        size_t n = 0, outside = 0;
        const SimLaunchRecord *rec = sim_counters_records(&n);
        for (size_t i = 0; i < n; i++) {
            if (rec[i].in_graph) continue;
            outside++;
            if (rec[i].kind != SIM_REC_COPY) fail_msg("%s: %s ran outside the step's graphs", dir, rec[i].name);
        }
        assert_int_equal(outside, N + 1);
        assert_int_equal(c.graph_launches, N);
        assert_int_equal(c.host_syncs, 1);
#endif
        if (fast_shard_decode(&e, slots, tokens, B, b)) fail_msg("%s", ds_last_error());
        if (memcmp(a, b, sizeof(float) * (size_t)B * V))
            fail_msg("%s N=%d step %d: graph and eager logits differ", dir, N, k);
        for (int i = 0; i < B; i++) tokens[i] = golden_argmax(a + (size_t)i * V, V);
    }
    printf("%s N=%d: 4 decode steps from graphs equal the eager steps bit for bit; %d graph launches and %d copies "
           "outside them per step\n",
           dir, N, N, N + 1);
    free(a);
    free(b);
    fast_shard_close(&g);
    fast_shard_close(&e);
}

#if HAVE_SIM_COUNTERS
/* NCCL bytes of one decode step of B tokens over D devices (every link's, summed), from the sizes: a ring
 * all-reduce sends 2(D−1)/D of its buffer per device, an all-gather or reduce-scatter D−1 per-device chunks;
 * the bf16 wire's all-reduce sends D−1 bf16 slices of n/D point to point and all-gathers its bf16 slice. */
static unsigned long long step_bytes(const ModelConfig *c, int D, int B, FastShardWire wire)
{
    const unsigned long long Dm = (unsigned long long)B * c->hidden_size, nh = c->num_attention_heads, hl = nh / D,
                             w = c->kv_lora_rank + c->qk_rope_head_dim, L = c->num_hidden_layers;
    const unsigned long long ring = D * (2ull * (D - 1) * Dm * 4 / D), chunks = (unsigned long long)D * (D - 1);
    const unsigned long long sum = wire == FAST_WIRE_F32 ? ring : chunks * (Dm / D) * 2 * 2;
    const unsigned long long max = D * (2ull * (D - 1) * B * nh * (wire == FAST_WIRE_F32 ? 4 : 2) / D);
    const unsigned long long combine = chunks * B * hl * (c->kv_lora_rank + 1) * (wire == FAST_WIRE_F32 ? 4 : 2);
    const unsigned long long layer = chunks * B * hl * w * 4 + max + combine + 2 * sum;
    return sum + L * layer + chunks * B * (c->vocab_size / D) * 4;
}

/* One decode step of 2 sequences, counted, with float32 and bf16 collectives: the NCCL bytes equal step_bytes()
 * for each; the bf16 wire halves each sub-layer's all-reduce and the attention combine. */
static void wire_bytes(const char *name, int D)
{
    need_devices(D);
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    unsigned long long got[2] = { 0, 0 };
    for (int k = 0; k < 2; k++) {
        const FastShardWire wire = k ? FAST_WIRE_BF16 : FAST_WIRE_F32;
        FastShardModel m;
        const FastOptions opt = { .chunk = CHUNK, .max_batch = 2, .max_context = 16 };
        if (fast_shard_open(&m, dir, D, &opt)) fail_msg("%s", ds_last_error());
        fast_shard_set_wire(&m, wire);
        const int prompt[2] = { 3, 4 }, slots[2] = { 0, 1 }, tokens[2] = { 9, 10 };
        float *logits = malloc(sizeof(float) * 2 * m.cfg->vocab_size);
        if (fast_shard_prefill(&m, 0, prompt, 1, NULL, false) || fast_shard_prefill(&m, 1, prompt + 1, 1, NULL, false))
            fail_msg("%s", ds_last_error());
        SimStepCounters c;
        sim_counters_start();
        if (fast_shard_decode(&m, slots, tokens, 2, logits)) fail_msg("%s", ds_last_error());
        sim_counters_stop(&c);
        for (int i = 0; i < 64; i++) got[k] += c.nccl_bytes[i / 8][i % 8];
        const unsigned long long want = step_bytes(m.cfg, D, 2, wire);
        if (got[k] != want) fail_msg("%s D=%d wire %d: %llu NCCL bytes, want %llu", dir, D, (int)wire, got[k], want);
        free(logits);
        fast_shard_close(&m);
    }
    printf("%s D=%d: NCCL bytes per decode step of 2 tokens %llu (float32) and %llu (bf16 wire), ratio %.3f\n", dir, D,
           got[0], got[1], (double)got[1] / (double)got[0]);
}
#endif

static void graphs(void **state)
{
    (void)state;
    graphs_equal_eager("v2", 2);
    graphs_equal_eager("lite", 4);
#if HAVE_SIM_COUNTERS
    wire_bytes("v2", 2);
    wire_bytes("lite", 4);
#endif
}

/* One error line naming the reason, nothing left open. */
static void refused(const char *name, int N, const char *why)
{
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    FastShardModel m;
    const FastOptions opt = { .chunk = CHUNK };
    assert_int_equal(fast_shard_open(&m, dir, N, &opt), -1);
    if (!strstr(ds_last_error(), why)) fail_msg("expected \"%s\" in: %s", why, ds_last_error());
    assert_null(m.cfg);
}

static void refuses(void **state)
{
    (void)state;
    need_devices(8);
    refused("v2", 3, "vocab_size = 512 is not divisible by 3 devices");
    refused("v2", 8, "num_attention_heads = 4 is not divisible by 8 devices");
    refused("v2", 9, "9 devices (1..8)");
    ModelConfig cfg = { .vocab_size = 512, .num_attention_heads = 8, .n_routed_experts = 6, .num_hidden_layers = 1 };
    assert_int_equal(fast_shard_check(&cfg, 4), -1);
    assert_non_null(strstr(ds_last_error(), "n_routed_experts = 6 is not divisible by 4 devices"));
    char dir[256];
    golden_dir(dir, sizeof dir, "v2");
    FastShardModel m;
    const FastOptions opt = { .chunk = CHUNK, .max_batch = 2, .max_context = 16 };
    if (fast_shard_open(&m, dir, 2, &opt)) fail_msg("%s", ds_last_error());
    const int bad[1] = { 512 }, ok[2] = { 1, 2 }, twice[2] = { 1, 1 };
    assert_int_equal(fast_shard_prefill(&m, 0, bad, 1, NULL, false), -1);
    assert_non_null(strstr(ds_last_error(), "token id 512"));
    assert_int_equal(fast_shard_decode(&m, twice, ok, 2, NULL), -1);
    assert_non_null(strstr(ds_last_error(), "slot 1 appears twice"));
    assert_int_equal(fast_shard_prefill(&m, 2, ok, 1, NULL, false), -1);
    assert_non_null(strstr(ds_last_error(), "slot 2 is outside"));
    fast_shard_close(&m);
}

/* dsv2 generate --backend fast --layout sharded --devices 4 (float32): the reference's greedy ids; misuse refused
 * with one usage line and nothing on stdout. */
static void cli_generate(void **state)
{
    (void)state;
    const char *ref[] = { "generate", "-m", "tests/golden/v2", "--ids", "1,2,3", "-n", "4", NULL };
    const char *sharded[] = { "generate",  "-m",   "tests/golden/v2", "--ids",   "1,2,3",     "-n", "4",
                              "--backend", "fast", "--layout",        "sharded", "--devices", "4",  NULL };
    CliRun want = cli_run(ref), got = cli_run(sharded); /* SIM_DEVICE_COUNT=8 is inherited */
    assert_int_equal(want.status, 0);
    assert_int_equal(got.status, 0);
    assert_string_equal(got.out, want.out);
    cli_run_free(&want);
    cli_run_free(&got);
    const char *const bad[][12] = {
        { "generate", "-m", "tests/golden/v2", "--ids", "1", "--layout", "sharded", NULL },
        { "generate", "-m", "tests/golden/v2", "--ids", "1", "--backend", "fast", "--layout", "dp", NULL },
        { "generate", "-m", "tests/golden/v2", "--ids", "1", "--backend", "fast", "--devices", "2", NULL },
        { "generate", "-m", "tests/golden/v2", "--ids", "1", "--backend", "fast", "--layout", "sharded", "--devices",
          "3" },
    };
    const char *const why[] = { "--layout sharded needs --backend fast", "--layout dp: expected sharded",
                                "--devices goes with --layout sharded", "vocab_size = 512 is not divisible by 3" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CliRun r = cli_run((const char *const *)bad[i]);
        assert_int_not_equal(r.status, 0);
        assert_string_equal(r.out, "");
        if (!strstr(r.err, why[i])) fail_msg("expected \"%s\" in: %s", why[i], r.err);
        cli_run_free(&r);
    }
}

/* Open lite over 2 devices, a prompt across two chunks and a decode step, close. Returns 0 or −1 (error line set). */
static int open_run_close(void)
{
    static const int prompt[] = { 1, 5, 9, 2, 7, 3 };
    const FastOptions opt = { .chunk = 4, .max_context = 16 };
    FastShardModel m;
    if (fast_shard_open(&m, "tests/golden/lite", 2, &opt)) return -1; /* nothing left open on failure */
    const int slot = 0, next = 4;
    const int rc = fast_shard_prefill(&m, 0, prompt, 6, NULL, false) || fast_shard_decode(&m, &slot, &next, 1, NULL);
    fast_shard_close(&m);
    return rc ? -1 : 0;
}

#if HAVE_SIM_COUNTERS
static void sim_counts(FaultCounts *out)
{
    SimStats st;
    sim_stats(&st);
    *out = (FaultCounts){ st.malloc_calls, st.live_allocs, st.live_bytes };
}
#else
static void sim_counts(FaultCounts *out)
{
    memset(out, 0, sizeof *out);
}
#endif

static const char *self; /* this binary, for the fault sweep's children */
static const FaultSweep shard_sweep = { "shard",
                                        "tests/golden/lite sharded over 2 devices: open + prompt + decode + close",
                                        open_run_close, sim_counts };

/* Every cudaMalloc of opening the sharded layout fails in turn: one error line, no device allocation left. */
static void faults(void **state)
{
    (void)state;
#if !HAVE_SIM_COUNTERS
    printf("needs the simulated device's fault injection (SIM_FAIL_MALLOC); a real-GPU build has none\n");
    skip();
#else
    fault_sweep_run((void *)&shard_sweep, self);
#endif
}

int main(int argc, char **argv)
{
    self = argv[0];
    setenv("SIM_DEVICE_COUNT", "8", 1); /* before the first CUDA call */
    if (argc == 4 && strcmp(argv[1], "child") == 0 && strcmp(argv[2], shard_sweep.id) == 0)
        return fault_sweep_child(&shard_sweep, argv[3]);
    setenv("SIM_RACECHECK", "1", 0); /* every simulated launch under three thread orders */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v2_f32),       cmocka_unit_test(lite_f32),  cmocka_unit_test(longctx_f32),
        cmocka_unit_test(heads8_f32),   cmocka_unit_test(bf16_runs), cmocka_unit_test(refuses),
        cmocka_unit_test(cli_generate), cmocka_unit_test(faults),    cmocka_unit_test(partial_kernels),
        cmocka_unit_test(graphs),       cmocka_unit_test(bf16_wire),
    };
    return cmocka_run_group_tests_name("fast_shard", tests, stw_group_setup, stw_group_teardown);
}
