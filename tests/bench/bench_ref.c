/**
 * \file bench_ref.c
 * \brief `make bench-ref`: the reference model's speed on DeepSeek-V2-Lite's real shapes.
 *
 * Writes (once, into build/bench/) a synthetic checkpoint with DeepSeek-V2-Lite's
 * exact tensor names and shapes but 2 layers — layer 0 dense, layer 1 MoE
 * with all 64 experts — and random bf16 weights, then measures on one thread:
 *   - a memory-read baseline: GB/s of a fixed-order float32 sum over 1 GiB;
 *   - decode: tokens/s, and the GB/s of weight bytes a step reads;
 *   - prefill: tokens/s on a 64-token prompt;
 *   - peak RSS;
 *   - the batched linear (linear(), the path prefill and training share) in GFLOP/s beside
 *     OpenBLAS's cblas_sgemm on one thread, at the same shapes, in the same run.
 * Each figure is the median of several runs. `bench_ref --linear-only` measures the last alone. Results also go to
 * build/bench/ref.txt for the book. `bench_ref --checkpoint-v2` only writes the same two layers with
 * DeepSeek-V2's shapes (160 experts, a vocabulary cut to 12800) to build/bench/v2-2layer.
 */
#include "bench_util.h"
#include "gemm.h"
#include "dtype.h"
#include "error.h"
#include "linear.h"
#include "model.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <math.h>
#include <cblas.h>

#define DIR "build/bench/v2-lite-2layer"

/* ---- the synthetic checkpoint --------------------------------------------------------- */

typedef struct {
    char name[96];
    int64_t rows, cols;
} Spec;

static int add(Spec *s, int n, const char *name, int64_t rows, int64_t cols)
{
    snprintf(s[n].name, sizeof s[n].name, "%s", name);
    s[n].rows = rows;
    s[n].cols = cols;
    return n + 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const Spec *)a)->name, ((const Spec *)b)->name);
}

/* The shapes a synthetic checkpoint varies: DeepSeek-V2-Lite's, or DeepSeek-V2's with a smaller vocabulary. */
typedef struct {
    const char *dir;
    int D, V, H, q_lora, I_dense, Ie, E, n_group, topk_group;
    const char *topk_method;
    double routed_scale;
} Shape;

static const Shape lite = { "build/bench/v2-lite-2layer", 2048, 102400, 16, 0, 10944, 1408, 64, 1, 1, "greedy", 1.0 };
/* DeepSeek-V2's widths, heads, experts and group-limited routing; only the vocabulary is cut, from 102400 to
 * 12800, to keep the file and the simulated device's copy of the weights within a shared machine's memory */
static const Shape v2 = { "build/bench/v2-2layer", 5120, 12800, 128, 1536, 12288, 1536, 160, 8, 3,
                          "group_limited_greedy",  16.0 };

/* The tensors (docs/semantics.md §2) of layers 0 (dense) and 1 (MoE) of shape h; cols 0 = a vector. */
static int shape_specs(Spec *s, const Shape *h)
{
    const int D = h->D, V = h->V, H = h->H, dq = 192, dc = 512, dr = 64, dnv = 256, Idense = h->I_dense, Ie = h->Ie;
    char name[96];
    int n = 0;
    n = add(s, n, "model.embed_tokens.weight", V, D);
    n = add(s, n, "lm_head.weight", V, D);
    n = add(s, n, "model.norm.weight", D, 0);
    for (int l = 0; l < 2; l++) {
#define T(fmt, r, c) (snprintf(name, sizeof name, "model.layers.%d." fmt, l), n = add(s, n, name, r, c))
        T("input_layernorm.weight", D, 0);
        T("post_attention_layernorm.weight", D, 0);
        if (h->q_lora) {
            T("self_attn.q_a_proj.weight", h->q_lora, D);
            T("self_attn.q_a_layernorm.weight", h->q_lora, 0);
            T("self_attn.q_b_proj.weight", H * dq, h->q_lora);
        } else {
            T("self_attn.q_proj.weight", H * dq, D);
        }
        T("self_attn.kv_a_proj_with_mqa.weight", dc + dr, D);
        T("self_attn.kv_a_layernorm.weight", dc, 0);
        T("self_attn.kv_b_proj.weight", H * dnv, dc);
        T("self_attn.o_proj.weight", D, H * 128);
        if (l == 0) {
            T("mlp.gate_proj.weight", Idense, D);
            T("mlp.up_proj.weight", Idense, D);
            T("mlp.down_proj.weight", D, Idense);
        } else {
            T("mlp.gate.weight", h->E, D);
            T("mlp.shared_experts.gate_proj.weight", 2 * Ie, D);
            T("mlp.shared_experts.up_proj.weight", 2 * Ie, D);
            T("mlp.shared_experts.down_proj.weight", D, 2 * Ie);
            for (int e = 0; e < h->E; e++) {
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
                n = add(s, n, name, Ie, D);
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
                n = add(s, n, name, Ie, D);
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
                n = add(s, n, name, D, Ie);
            }
        }
#undef T
    }
    qsort(s, n, sizeof *s, by_name);
    return n;
}

/* config.json of shape h: 2 layers, the first dense; everything else DeepSeek-V2's and V2-Lite's common values. */
static void write_config(FILE *f, const Shape *h)
{
    char q_lora[16] = "null";
    if (h->q_lora) snprintf(q_lora, sizeof q_lora, "%d", h->q_lora);
    fprintf(f,
            "{\"vocab_size\": %d, \"hidden_size\": %d, \"num_hidden_layers\": 2,\n"
            " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"q_lora_rank\": %s,\n"
            " \"kv_lora_rank\": 512, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, \"v_head_dim\": 128,\n"
            " \"intermediate_size\": %d, \"moe_intermediate_size\": %d, \"n_routed_experts\": %d,\n"
            " \"n_shared_experts\": 2, \"num_experts_per_tok\": 6, \"first_k_dense_replace\": 1,\n"
            " \"moe_layer_freq\": 1, \"topk_method\": \"%s\", \"n_group\": %d, \"topk_group\": %d,\n"
            " \"norm_topk_prob\": false, \"routed_scaling_factor\": %.1f, \"scoring_func\": \"softmax\",\n"
            " \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000, \"max_position_embeddings\": 163840,\n"
            " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": 4096,\n"
            "   \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 0.707, \"mscale_all_dim\": 0.707},\n"
            " \"bos_token_id\": %d, \"eos_token_id\": %d, \"tie_word_embeddings\": false}\n",
            h->V, h->D, h->H, h->H, q_lora, h->I_dense, h->Ie, h->E, h->topk_method, h->n_group, h->topk_group,
            h->routed_scale, h->V - 2400, h->V - 2399); /* DeepSeek's 100000, 100001: 2400 below the end */
}

/* Streams the safetensors file: header from the shapes, then random bf16 data. */
static int write_checkpoint(const Shape *h)
{
    static Spec specs[1024];
    const int n = shape_specs(specs, h);
    char path[128], partial[160];
    snprintf(path, sizeof path, "%s/model.safetensors", h->dir);
    snprintf(partial, sizeof partial, "%s.partial", path);
    mkdir("build/bench", 0755);
    mkdir(h->dir, 0755);
    char cfg_path[128];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", h->dir);
    FILE *cfg = fopen(cfg_path, "w");
    if (!cfg) return -1;
    write_config(cfg, h);
    fclose(cfg);
    size_t cap = 256 * 1024, len = 0;
    char *hdr = malloc(cap);
    uint64_t off = 0;
    len += (size_t)snprintf(hdr + len, cap - len, "{");
    for (int i = 0; i < n; i++) {
        uint64_t bytes = 2 * (uint64_t)specs[i].rows * (specs[i].cols ? (uint64_t)specs[i].cols : 1);
        char shape[64];
        if (specs[i].cols)
            snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)specs[i].rows, (long long)specs[i].cols);
        else
            snprintf(shape, sizeof shape, "[%lld]", (long long)specs[i].rows);
        len += (size_t)snprintf(hdr + len, cap - len,
                                "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":%s,"
                                "\"data_offsets\":[%llu,%llu]}",
                                i ? "," : "", specs[i].name, shape, (unsigned long long)off,
                                (unsigned long long)(off + bytes));
        off += bytes;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' '; /* keep the data 8-byte aligned */
    FILE *f = fopen(partial, "wb");
    if (!f) {
        free(hdr);
        return -1;
    }
    uint64_t hlen = len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(hdr, 1, len, f);
    free(hdr);
    enum { CHUNK = 1 << 20 };
    uint16_t *buf = malloc(2 * CHUNK);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < n; i++) {
        uint64_t count = (uint64_t)specs[i].rows * (specs[i].cols ? (uint64_t)specs[i].cols : 1);
        /* norms ≈ 1, matrices uniform with std ≈ 1/sqrt(fan-in), so activations stay O(1) */
        float scale = specs[i].cols ? 1.7f / sqrtf((float)specs[i].cols) : 0.0f;
        while (count) {
            size_t k = count < CHUNK ? (size_t)count : CHUNK;
            for (size_t j = 0; j < k; j++) {
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                float u = (float)((rng * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f - 0.5f;
                buf[j] = f32_to_bf16(specs[i].cols ? u * 2 * scale : 1.0f + 0.1f * u);
            }
            fwrite(buf, 2, k, f);
            count -= k;
        }
    }
    free(buf);
    int ok = fclose(f) == 0;
    return ok && rename(partial, path) == 0 ? 0 : -1;
}

/* ---- measurements --------------------------------------------------------------------- */

/* Single-thread read bandwidth: dot(x, x) over 1 GiB of float32 (the reference's own
 * fixed-order 8-lane dot product, reading each byte once), GB/s, median of 5. */
static double read_baseline(void)
{
    const int n = 1 << 28;
    float *x = malloc((size_t)n * sizeof *x);
    for (int i = 0; i < n; i++) x[i] = (float)(i & 1023) * 1e-3f;
    double runs[5];
    volatile float sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = bench_now();
        sink += dot(x, x, n);
        runs[r] = (double)n * sizeof *x / (bench_now() - t0) / 1e9;
    }
    free(x);
    return bench_median(runs, 5);
}

/* Weight bytes one decode step reads: everything but the unchosen experts (and one embedding row). */
static double decode_bytes(const ModelConfig *c)
{
    const double D = c->hidden_size, attn = (3072.0 + 576) * D + 4096.0 * 512 + D * 2048;
    const double dense = 3.0 * D * c->intermediate_size, expert = 3.0 * D * c->moe_intermediate_size;
    return 2.0 * (c->vocab_size * D + 2 * attn + dense + c->n_routed_experts * D +
                  (c->num_experts_per_tok + c->n_shared_experts) * expert);
}

/* ---- the batched linear beside OpenBLAS ------------------------------------------------ */

/* CPU seconds of this thread: on a shared machine, time spent descheduled does not count. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GFLOP/s (2·T·rows·cols per product, over thread CPU time) of y = W x for T tokens, median of RUNS:
 * linear() with W in bf16 (the checkpoints' type, prefill's case) and in float32 (training's case),
 * the AVX2 build of the same kernels on the float32 W when this CPU has AVX-512 (what a machine
 * without it runs), and OpenBLAS's sgemm on the same float32 W (y = x Wᵀ, row-major), one thread.
 * Appends one line per shape to out. */
static int linear_vs_openblas(char *out, size_t cap)
{
    static const struct {
        const char *name;
        int rows, cols, T;
    } shapes[] = {
        { "q_proj      3072x2048, T=64", 3072, 2048, 64 }, { "kv_b_proj   4096x512,  T=64", 4096, 512, 64 },
        { "expert up   1408x2048, T=64", 1408, 2048, 64 }, { "expert down 2048x1408, T=64", 2048, 1408, 64 },
        { "lm_head     4096x48,   T=512", 4096, 48, 512 },
    };
    enum { RUNS = 7 };
    const bool avx2 = gemm_isa_best() == GEMM_AVX512 && gemm_isa_available(GEMM_AVX2);
    openblas_set_num_threads(1);
    size_t len = strlen(out);
    len +=
        (size_t)snprintf(out + len, cap - len,
                         "  batched linear vs OpenBLAS sgemm (one thread, GFLOP/s of thread CPU time, median of %d;\n"
                         "  linear's build: %s; OpenBLAS core: %s)\n"
                         "    %-29s %11s %11s %11s %11s %10s %10s\n",
                         RUNS, gemm_isa_name(gemm_isa_best()), openblas_get_corename(), "shape (rows x cols)",
                         "linear bf16", "linear f32", "avx2 f32", "sgemm f32", "f32/sgemm", "avx2/sgemm");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int R = shapes[s].rows, C = shapes[s].cols, T = shapes[s].T;
        float *wf = malloc(sizeof(float) * (size_t)R * C), *x = malloc(sizeof(float) * (size_t)T * C);
        float *y = malloc(sizeof(float) * (size_t)T * R);
        uint16_t *wh = malloc(sizeof(uint16_t) * (size_t)R * C);
        if (!wf || !x || !y || !wh) return -1;
        uint64_t rng = 0x9E3779B97F4A7C15ull + s;
        for (size_t i = 0; i < (size_t)R * C; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            wh[i] = f32_to_bf16((float)(rng >> 40) / 16777216.0f - 0.5f);
            wf[i] = bf16_to_f32(wh[i]);
        }
        for (size_t i = 0; i < (size_t)T * C; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        const Mat Wh = { .data = wh, .dtype = DT_BF16, .rows = R, .cols = C };
        const Mat Wf = { .data = wf, .dtype = DT_F32, .rows = R, .cols = C };
        const double flop = 2.0 * T * R * C;
        double g[4][RUNS] = { { 0 } };
        for (int r = -1; r < RUNS; r++) { /* run −1 warms the caches */
            double t[5];
            t[0] = cpu_now();
            linear(y, x, &Wh, T);
            t[1] = cpu_now();
            linear(y, x, &Wf, T);
            t[2] = cpu_now();
            if (avx2) gemm_rows_isa(GEMM_AVX2, y, x, &Wf, 0, R, T);
            t[3] = cpu_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, R, C, 1.0f, x, C, wf, C, 0.0f, y, R);
            t[4] = cpu_now();
            if (r >= 0)
                for (int k = 0; k < 4; k++) g[k][r] = t[k + 1] > t[k] ? flop / (t[k + 1] - t[k]) / 1e9 : 0;
        }
        double m[4];
        for (int k = 0; k < 4; k++) m[k] = bench_median(g[k], RUNS);
        if (avx2)
            len += (size_t)snprintf(out + len, cap - len, "    %-29s %11.1f %11.1f %11.1f %11.1f %9.0f%% %9.0f%%\n",
                                    shapes[s].name, m[0], m[1], m[2], m[3], 100 * m[1] / m[3], 100 * m[2] / m[3]);
        else
            len += (size_t)snprintf(out + len, cap - len, "    %-29s %11.1f %11.1f %11s %11.1f %9.0f%% %10s\n",
                                    shapes[s].name, m[0], m[1], "-", m[3], 100 * m[1] / m[3], "-");
        free(wf);
        free(x);
        free(y);
        free(wh);
    }
    return 0;
}

static void print_cpu(void)
{
    char line[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) break;
    if (f) fclose(f);
    const char *name = strchr(line, ':');
    printf("CPU: %s", name ? name + 2 : line);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--linear-only") == 0) {
        char lines[2048] = "";
        print_cpu();
        if (linear_vs_openblas(lines, sizeof lines)) return 1;
        fputs(lines, stdout);
        return 0;
    }
    struct stat st;
    /* --checkpoint-v2 writes the DeepSeek-V2-shaped checkpoint (make profile-fast-v2) and stops */
    const Shape *h = argc > 1 && strcmp(argv[1], "--checkpoint-v2") == 0 ? &v2 : &lite;
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", h->dir);
    if (stat(path, &st) != 0) {
        fprintf(stderr, "bench-ref: writing a 2-layer %s-shaped checkpoint to %s ...\n",
                h == &v2 ? "DeepSeek-V2" : "DeepSeek-V2-Lite", h->dir);
        if (write_checkpoint(h)) {
            fprintf(stderr, "bench-ref: cannot write %s\n", h->dir);
            return 1;
        }
    }
    if (h == &v2 ||
        (argc > 1 && strcmp(argv[1], "--checkpoint-only") == 0)) /* make profile-fast needs only the files */
        return 0;
    stat(DIR "/model.safetensors", &st);
    Model m;
    ModelOptions opt = { .max_context = 512, .chunk = 64 };
    if (model_open(&m, DIR, &opt)) {
        fprintf(stderr, "bench-ref: %s\n", ds_last_error());
        return 1;
    }
    const double baseline = read_baseline();
    float *logits = malloc(sizeof(float) * m.cfg->vocab_size);
    int prompt[64];
    for (int i = 0; i < 64; i++) prompt[i] = (i * 7919) % m.cfg->vocab_size;

    enum { RUNS = 5, STEPS = 16 };
    double prefill[RUNS], decode[RUNS];
    for (int r = -1; r < RUNS; r++) { /* run −1 warms the page tables */
        model_reset(&m);
        double t0 = bench_now();
        model_forward(&m, prompt, 64, logits, false);
        if (r >= 0) prefill[r] = 64 / (bench_now() - t0);
        int tok = prompt[63];
        t0 = bench_now();
        for (int s = 0; s < STEPS; s++) model_forward(&m, &tok, 1, logits, false);
        if (r >= 0) decode[r] = STEPS / (bench_now() - t0);
    }
    const double pf = bench_median(prefill, RUNS), dc = bench_median(decode, RUNS);
    const double gbs = dc * decode_bytes(m.cfg) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char report[3072];
    snprintf(report, sizeof report,
             "bench-ref (DeepSeek-V2-Lite shapes, 2 layers: 1 dense + 1 MoE with 64 experts; one thread)\n"
             "  memory-read baseline   %.2f GB/s (float32 sum over 1 GiB, median of 5)\n"
             "  decode                 %.2f tok/s, %.2f GB/s of weights = %.0f%% of the baseline\n"
             "  prefill (64 tokens)    %.2f tok/s = %.1fx decode\n"
             "  peak RSS               %.0f MiB (weights are memory-mapped: %.0f MiB on disk)\n",
             baseline, dc, gbs, 100 * gbs / baseline, pf, pf / dc, ru.ru_maxrss / 1024.0,
             (double)st.st_size / 1048576.0);
    if (linear_vs_openblas(report, sizeof report)) {
        fprintf(stderr, "bench-ref: out of memory for the linear benchmark\n");
        return 1;
    }
    print_cpu();
    fputs(report, stdout);
    FILE *f = fopen("build/bench/ref.txt", "w");
    if (f) {
        fputs(report, f);
        fclose(f);
    }
    free(logits);
    model_close(&m);
    return 0;
}
