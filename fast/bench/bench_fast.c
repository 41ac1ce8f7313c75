/**
 * \file bench_fast.c
 * \brief `make bench-fast`: kernel times on a real GPU against the device's own copy bandwidth and
 *        cuBLAS bf16 GEMM rate, end-to-end decode on the synthetic V2-Lite-shaped checkpoint, and the
 *        expert-parallel exchanges over every GPU present.
 *
 * Measured in one run: device-to-device copy GB/s and cuBLAS bf16 GEMM
 * TFLOP/s (the ceilings), then each kernel (v1 and v2, and the v3 decode
 * kernels the fast model runs) at DeepSeek-V2-Lite's shapes with its achieved GB/s, then end-to-end decode tok/s of the fast
 * model in bf16 at batch 1, 16 and 64 (fast_model_decode, one token for each
 * of B sequences per step) on build/bench/v2-lite-2layer (written by
 * `make bench-ref`) when present, each against its roofline: the bytes the
 * step must read at the copy bandwidth measured in the same run. With two
 * or more GPUs, that checkpoint's MoE layer sharded over all of them
 * (fast_ep_moe_forward, bf16) at 1 to 2048 tokens per GPU: the
 * dispatch and combine exchanges timed by FastEp.timing's events (the
 * longest device), the whole layer by the host clock, and each exchange's
 * bus bandwidth, bytes moved between devices / its time. Medians of RUNS
 * timed runs. Results also go to build/bench/fast.txt. Without a GPU it says
 * so and exits 0.
 */
#include "fast.h"
#include "fast_ep.h"

#include "error.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define RUNS 20
#define CKPT "build/bench/v2-lite-2layer"

static FILE *out;

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* One line to stdout and to the results file. */
static void line(const char *name, double ms, double bytes, double flops)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%-34s %9.4f ms", name, ms);
    if (bytes > 0) n += snprintf(buf + n, sizeof buf - (size_t)n, "  %8.1f GB/s", bytes / (ms * 1e6));
    if (flops > 0) snprintf(buf + n, sizeof buf - (size_t)n, "  %8.1f TFLOP/s", flops / (ms * 1e9));
    printf("%s\n", buf);
    if (out) fprintf(out, "%s\n", buf);
}

/* The median time in ms of RUNS launches of what (a statement using stream st), after one warm-up. */
#define TIME(ms, st, what)                         \
    do {                                           \
        float t_[RUNS];                            \
        cudaEvent_t a_, b_;                        \
        cudaEventCreate(&a_);                      \
        cudaEventCreate(&b_);                      \
        what;                                      \
        for (int r_ = 0; r_ < RUNS; r_++) {        \
            cudaEventRecord(a_, st);               \
            what;                                  \
            cudaEventRecord(b_, st);               \
            cudaEventSynchronize(b_);              \
            cudaEventElapsedTime(&t_[r_], a_, b_); \
        }                                          \
        qsort(t_, RUNS, sizeof(float), cmp_float); \
        ms = t_[RUNS / 2];                         \
        cudaEventDestroy(a_);                      \
        cudaEventDestroy(b_);                      \
    } while (0)

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        fprintf(stderr, "bench-fast: cudaMalloc(%zu) failed\n", bytes);
        exit(1);
    }
    cudaMemset(p, 0, bytes);
    return p;
}

/* The ceilings; returns the device-to-device copy rate in GB/s (bytes read + written per second). */
static double ceilings(cudaStream_t st, cublasHandle_t blas)
{
    const size_t bytes = (size_t)1 << 30;
    void *a = dev_alloc(bytes), *b = dev_alloc(bytes);
    double ms;
    TIME(ms, st, cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st));
    line("copy device→device 1 GiB", ms, 2.0 * bytes, 0);
    const double copy_ms = ms;
    const int n = 8192;
    const float one = 1.0f, zero = 0.0f;
    TIME(ms, st,
         cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero,
                      (char *)a + (size_t)n * n * 2, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    line("cuBLAS bf16 GEMM 8192³", ms, 0, 2.0 * n * n * n);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * bytes / (copy_ms * 1e6);
}

static void kernels(cudaStream_t st)
{
    enum { T = 64, D = 2048, NH = 16, DQ = 192, E = 64, K = 6, DC = 512, DR = 64, CTX = 4096, V = 102400 };
    float *x = dev_alloc(sizeof(float) * T * D), *y = dev_alloc(sizeof(float) * T * D);
    float *w = dev_alloc(sizeof(float) * D), *q = dev_alloc(sizeof(float) * T * NH * DQ);
    float *freq = dev_alloc(sizeof(float) * DR / 2), *g = dev_alloc(sizeof(float) * T * E);
    float *s = dev_alloc(sizeof(float) * T * E), *wt = dev_alloc(sizeof(float) * T * K);
    int *idx = dev_alloc(sizeof(int) * T * K), *arg = dev_alloc(sizeof(int));
    void *cache = dev_alloc((size_t)CTX * (DC + DR) * 2);
    float *ql = dev_alloc(sizeof(float) * NH * DC), *ol = dev_alloc(sizeof(float) * NH * DC);
    float *part = dev_alloc(sizeof(float) * NH * mla_decode_splits(CTX) * (DC + 2));
    float *scratch = dev_alloc(sizeof(float) * NH * (CTX + 2 * DC)), *o = dev_alloc(sizeof(float) * NH * 128);
    void *kvb = dev_alloc((size_t)NH * 256 * DC * 2);
    float *logits = dev_alloc(sizeof(float) * V);
    const RouterParams rp = { E, K, 1, 1, 0, 0, 0, 1.0f };
    const MlaDims dims = { NH, 128, DR, 128, DC, 0.1147f };
    const double norm_bytes = 2.0 * T * D * 4, rope_bytes = 2.0 * T * NH * DR * 4, cache_bytes = CTX * (DC + DR) * 2.0;
    double ms;
    TIME(ms, st, rmsnorm_forward_v1(y, x, w, T, D, 1e-6f, st));
    line("rmsnorm v1 [64, 2048]", ms, norm_bytes, 0);
    TIME(ms, st, rmsnorm_forward_v2(y, x, w, T, D, 1e-6f, st));
    line("rmsnorm v2 [64, 2048]", ms, norm_bytes, 0);
    TIME(ms, st, rmsnorm_residual_v2(y, x, x, w, T, D, 1e-6f, st));
    line("rmsnorm+residual v2 [64, 2048]", ms, 1.5 * norm_bytes, 0);
    TIME(ms, st, rope_forward_v1(q + 128, freq, 1.0f, DR, T, NH, NH * DQ, DQ, 0, st));
    line("rope v1 q^R 64×16×64", ms, rope_bytes, 0);
    TIME(ms, st, rope_forward_v2(q + 128, freq, 1.0f, DR, T, NH, NH * DQ, DQ, 0, st));
    line("rope v2 q^R 64×16×64", ms, rope_bytes, 0);
    TIME(ms, st, router_forward_v1(idx, wt, s, g, NULL, rp, T, st));
    line("router v1 64 tokens, E 64, K 6", ms, 2.0 * T * E * 4, 0);
    TIME(ms, st, router_forward_v2(idx, wt, s, g, NULL, rp, T, st));
    line("router v2 64 tokens, E 64, K 6", ms, 2.0 * T * E * 4, 0);
    TIME(ms, st, mla_attend_v1(o, q, kvb, KERNEL_BF16, cache, KERNEL_BF16, dims, CTX - 1, 1, 1, scratch, st));
    line("mla attend v1 absorbed, ctx 4096", ms, cache_bytes, 0);
    TIME(ms, st, mla_decode_v2(ol, ql, q, cache, KERNEL_BF16, dims, CTX - 1, 1, part, st));
    line("mla decode v2, ctx 4096 (bf16 cache)", ms, cache_bytes, 0);
    /* what the fast model's decode step runs: positions read on the device, o^L stored as bf16 */
    const int last = CTX - 1;
    int *pos = dev_alloc(sizeof(int)), *base = dev_alloc(sizeof(int));
    int *count = dev_alloc(sizeof(int) * mla_decode_v3_counters(NH, 1));
    float *part3 = dev_alloc(sizeof(float) * mla_decode_v3_partial_floats(dims, 1, CTX));
    cudaMemcpy(pos, &last, sizeof(int), cudaMemcpyHostToDevice);
    TIME(ms, st,
         mla_decode_at_v3(ol, KERNEL_BF16, ql, q, cache, KERNEL_BF16, dims, pos, base, 1, CTX, part3, count, st));
    line("mla decode at v3, ctx 4096 (bf16 cache)", ms, cache_bytes, 0);
    TIME(ms, st, sample_argmax_v1(arg, logits, V, st));
    line("argmax v1, vocab 102400", ms, V * 4.0, 0);
    TIME(ms, st, sample_argmax_v2(arg, logits, V, st));
    line("argmax v2, vocab 102400", ms, V * 4.0, 0);
    void *bufs[] = { x,  y,  w,    q,       freq, g,   s,      wt,  idx,  arg,   cache,
                     ql, ol, part, scratch, o,    kvb, logits, pos, base, count, part3 };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
}

/*
 * The routed and shared experts of one decode token at DeepSeek-V2-Lite's sizes in bf16, as the fast
 * model's decode step runs them (moe_ffn_grouped_v3): K rows, one for each of experts 0..K−1, plus the
 * two shared experts (I_s = 2·I). Bytes: the K routed experts' and the shared experts' weights, 3·I·D each.
 */
static void moe_grouped(cudaStream_t st)
{
    enum { D = 2048, I = 1408, I_S = 2816, E = 64, K = 6 };
    int offsets[E + 1];
    for (int e = 0; e <= E; e++) offsets[e] = e < K ? e : K;
    void *gate_up = dev_alloc((size_t)E * 2 * I * D * 2), *down = dev_alloc((size_t)E * D * I * 2);
    void *shared_gate_up = dev_alloc((size_t)2 * I_S * D * 2), *shared_down = dev_alloc((size_t)D * I_S * 2);
    float *x = dev_alloc(sizeof(float) * D), *out = dev_alloc(sizeof(float) * K * D);
    float *shared_out = dev_alloc(sizeof(float) * D);
    void *hidden = dev_alloc((size_t)K * I * 2), *shared_hidden = dev_alloc((size_t)I_S * 2);
    int *row_token = dev_alloc(sizeof(int) * K), *off = dev_alloc(sizeof offsets); /* every row is token 0 */
    cudaMemcpy(off, offsets, sizeof offsets, cudaMemcpyHostToDevice);
    double ms;
    TIME(ms, st,
         moe_ffn_grouped_v3(out, shared_out, hidden, shared_hidden, x, row_token, off, gate_up, down, shared_gate_up,
                            shared_down, KERNEL_BF16, 1, K, E, D, I, I_S, st));
    line("moe ffn grouped v3, 1 token, K 6 + shared", ms, 2.0 * 3 * (K * I + I_S) * D, 0);
    void *bufs[] = { gate_up,    down,   shared_gate_up, shared_down, x,  out,
                     shared_out, hidden, shared_hidden,  row_token,   off };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
}

/*
 * Bytes of bf16 weights one decode step of c reads when each MoE layer's routed experts are `experts`
 * distinct ones: every layer's attention, the dense FFNs, the shared experts, the routers (float32), the
 * LM head, and `rows` embedding rows. The weights of a step are read once however many rows it has.
 */
static double step_weight_bytes(const ModelConfig *c, double experts, int rows)
{
    const double D = c->hidden_size, nh = c->num_attention_heads, dq = config_qk_head_dim(c);
    const double dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    const double expert = 3.0 * c->moe_intermediate_size * D;
    double params = (c->vocab_size + rows) * D, router = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        params += (c->q_lora_rank ? c->q_lora_rank * (D + nh * dq) : nh * dq * D) + (dc + dr) * D +
                  nh * (c->qk_nope_head_dim + dv) * dc + D * nh * dv;
        if (config_layer_is_moe(c, l)) {
            params += (experts + c->n_shared_experts) * expert;
            router += c->n_routed_experts * D;
        } else {
            params += 3.0 * c->intermediate_size * D;
        }
    }
    return 2.0 * params + 4.0 * router;
}

/* Distinct experts among the last MoE layer's B·K choices of the step just run (the router's output). */
static int distinct_experts(const FastModel *m, int B)
{
    const int K = m->cfg->num_experts_per_tok, E = m->cfg->n_routed_experts;
    int idx[64 * 32], seen[1024] = { 0 }, n = 0;
    if (B * K > 64 * 32 || E > 1024 ||
        cudaMemcpy(idx, m->scratch.idx, sizeof(int) * (size_t)B * K, cudaMemcpyDeviceToHost) != cudaSuccess)
        return -1;
    for (int i = 0; i < B * K; i++)
        if (idx[i] >= 0 && idx[i] < E && !seen[idx[i]]++) n++;
    return n;
}

/*
 * End-to-end decode on the synthetic checkpoint in bf16: 64 slots, each prefilled with its own 16-token
 * prompt; then for B = 1, 16, 64, STEPS calls of fast_model_decode on slots 0..B−1 (one token per
 * sequence, logits left on the device), timed by CUDA events around the whole calls (host work, uploads
 * and synchronisations included). The roofline of a step is the bytes it must read at the copy rate
 * measured above: the weights (step_weight_bytes) with the union of the experts the B tokens chose —
 * counted from the router's output after each of 4 more steps and averaged; the checkpoint has one MoE
 * layer, so this is exact for it — plus each row's latent cache, (pos + 1)·(d_c + d_r)·2 bytes per layer.
 */
static void decode(double copy_gbps)
{
    struct stat sb;
    if (stat(CKPT, &sb) != 0) {
        printf("decode: %s missing (make bench-ref writes it); skipped\n", CKPT);
        return;
    }
    enum { MAX_B = 64, PROMPT = 16, STEPS = 16, COUNTED = 4 };
    FastModel m;
    const FastOptions opt = { .bf16 = true, .max_context = 256, .max_batch = MAX_B };
    if (fast_model_open(&m, CKPT, &opt)) {
        printf("decode: %s\n", ds_last_error());
        return;
    }
    const ModelConfig *c = m.cfg;
    ModelConfig lite = *c;
    lite.num_hidden_layers = 27; /* the real V2-Lite: 1 dense + 26 MoE layers */
    printf("decode: batch-1 weights per token %.3f GB here (%d layers), %.2f GB for the 27-layer V2-Lite\n",
           step_weight_bytes(c, c->num_experts_per_tok, 1) / 1e9, c->num_hidden_layers,
           step_weight_bytes(&lite, lite.num_experts_per_tok, 1) / 1e9);
    int slots[MAX_B], tokens[MAX_B], prompt[PROMPT];
    for (int s = 0; s < MAX_B; s++) {
        slots[s] = s;
        for (int t = 0; t < PROMPT; t++) prompt[t] = (s * 7919 + t * 104729) % c->vocab_size;
        if (fast_model_prefill(&m, s, prompt, PROMPT, NULL, false)) {
            printf("decode: %s\n", ds_last_error());
            fast_model_close(&m);
            return;
        }
    }
    static const int batch[] = { 1, 16, 64 };
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (size_t i = 0; i < sizeof batch / sizeof batch[0]; i++) {
        const int B = batch[i];
        int rc = 0;
        for (int r = 0; r < B; r++) tokens[r] = (r * 31 + 7) % c->vocab_size;
        rc |= fast_model_decode(&m, slots, tokens, B, NULL); /* warm-up (a graph is captured here) */
        cudaEventRecord(a, m.ctx.stream);
        for (int step = 0; step < STEPS && rc == 0; step++) {
            for (int r = 0; r < B; r++) tokens[r] = (tokens[r] * 7919 + step + 1) % c->vocab_size;
            rc |= fast_model_decode(&m, slots, tokens, B, NULL);
        }
        cudaEventRecord(b, m.ctx.stream);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        double experts = 0, cache = 0;
        for (int step = 0; step < COUNTED && rc == 0; step++) {
            rc |= fast_model_decode(&m, slots, tokens, B, NULL);
            const int n = distinct_experts(&m, B);
            experts += n < 0 ? (double)B * c->num_experts_per_tok : n;
        }
        for (int r = 0; r < B; r++)
            cache += (double)m.pos[r] * (c->kv_lora_rank + c->qk_rope_head_dim) * 2.0 * c->num_hidden_layers;
        if (rc) {
            printf("decode: %s\n", ds_last_error());
            break;
        }
        experts /= COUNTED;
        const double per = ms / STEPS, bytes = step_weight_bytes(c, experts, B) + cache;
        const double roof = copy_gbps * 1e9 / bytes; /* steps per second at the copy rate */
        char name[160];
        snprintf(name, sizeof name, "decode batch %2d: %8.1f tok/s, roofline %8.1f tok/s (%.0f%%)", B, 1e3 * B / per,
                 roof * B, 100.0 * 1e3 / per / roof);
        line(name, per, bytes, 0);
        printf("    reads %.3f GB/step: %.1f of %d experts per MoE layer, %.1f MB of latent cache; copy %.0f GB/s\n",
               bytes / 1e9, experts, c->n_routed_experts, cache / 1e6, copy_gbps);
        if (out)
            fprintf(out, "    reads %.3f GB/step: %.1f of %d experts per MoE layer, %.1f MB of latent cache\n",
                    bytes / 1e9, experts, c->n_routed_experts, cache / 1e6);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    fast_model_close(&m);
}

/* The median of n times (sorts them). */
static float median(float *t, int n)
{
    qsort(t, (size_t)n, sizeof(float), cmp_float);
    return t[n / 2];
}

/* Device d's buffer of n floats, uniform in [−1, 1) from a fixed-seed LCG (the routing needs varied inputs). */
static float *random_input(size_t n, unsigned seed)
{
    float *host = malloc(sizeof(float) * n), *dev = dev_alloc(sizeof(float) * n);
    if (!host) {
        fprintf(stderr, "bench-fast: out of host memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        host[i] = (float)(seed >> 8) / (float)(1u << 23) - 1.0f;
    }
    cudaMemcpy(dev, host, sizeof(float) * n, cudaMemcpyHostToDevice);
    free(host);
    return dev;
}

/* One batch size over the group: RUNS timed calls after a warm-up, then dispatch, combine and the layer. */
static void ep_measure(FastEp *ep, const FastEpMoe *w, const ModelConfig *c, const FastEpTiming *tm, float *const *y,
                       const float *const *x, int T)
{
    const int N = ep->N;
    int Ts[FAST_EP_MAX_DEVICES];
    float ms[FAST_EP_PHASES][RUNS], layer[RUNS];
    for (int d = 0; d < N; d++) Ts[d] = T;
    for (int r = -1; r < RUNS; r++) { /* r = −1: the warm-up */
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (fast_ep_moe_forward(ep, w, c, y, x, Ts)) {
            printf("expert parallel: %s\n", ds_last_error());
            return;
        }
        for (int d = 0; d < N; d++) {
            cudaSetDevice(d);
            cudaStreamSynchronize(ep->dev[d].ctx.stream);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (r < 0) continue;
        layer[r] = (float)(1e3 * (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0.tv_nsec));
        float phase[FAST_EP_PHASES];
        if (fast_ep_timing_ms(tm, N, phase)) {
            printf("expert parallel: %s\n", ds_last_error());
            return;
        }
        for (int p = 0; p < FAST_EP_PHASES; p++) ms[p][r] = phase[p];
    }
    if (ep->last_host_free && fast_ep_host_plan(ep)) { /* a small step's statistics come on request */
        printf("expert parallel: %s\n", ds_last_error());
        return;
    }
    cudaSetDevice(0);
    /* moved between devices, exact sizes: rows out and partials back in the payload type, one per (token, other
     * device) */
    const double out = (double)ep->stats.bytes_sent, back = out;
    char name[96];
    snprintf(name, sizeof name, "EP %d GPUs, %4d tok/GPU: dispatch", N, T);
    line(name, median(ms[FAST_EP_DISPATCH], RUNS), out, 0);
    snprintf(name, sizeof name, "EP %d GPUs, %4d tok/GPU: combine", N, T);
    line(name, median(ms[FAST_EP_COMBINE], RUNS), back, 0);
    snprintf(name, sizeof name, "EP %d GPUs, %4d tok/GPU: MoE layer", N, T);
    line(name, median(layer, RUNS), 0, 0);
}

/* The synthetic checkpoint's MoE layer sharded over every GPU present (as many as divide its experts, up to
 * FAST_EP_MAX_DEVICES), bf16, at batch sizes from one decode token per GPU to a prefill chunk. */
static void expert_parallel(int present)
{
    if (present < 2) {
        printf("expert parallel: the dispatch/combine timing needs >= 2 GPUs (%d present); skipped\n", present);
        return;
    }
    struct stat sb;
    if (stat(CKPT, &sb) != 0) {
        printf("expert parallel: %s missing (make bench-ref writes it); skipped\n", CKPT);
        return;
    }
    static const int tokens[] = { 1, 16, 256, 2048 }; /* per GPU */
    const int max_T = tokens[sizeof tokens / sizeof tokens[0] - 1];
    Model ref;
    const ModelOptions mo = { .max_context = 1, .chunk = 1 }; /* only its weights are used */
    if (model_open(&ref, CKPT, &mo)) {
        printf("expert parallel: %s\n", ds_last_error());
        return;
    }
    const ModelConfig *c = ref.cfg;
    int N = present < FAST_EP_MAX_DEVICES ? present : FAST_EP_MAX_DEVICES, l = 0;
    while (c->n_routed_experts % N) N--;
    while (l < c->num_hidden_layers && !config_layer_is_moe(c, l)) l++;
    FastEp ep;
    FastEpMoe w;
    FastEpTiming tm;
    float *x[FAST_EP_MAX_DEVICES] = { NULL }, *y[FAST_EP_MAX_DEVICES] = { NULL };
    if (l == c->num_hidden_layers || fast_ep_init(&ep, N, true, c, max_T)) {
        printf("expert parallel: %s\n", l == c->num_hidden_layers ? "no MoE layer in " CKPT : ds_last_error());
        model_close(&ref);
        return;
    }
    if (fast_ep_upload_moe(&ep, &w, &ref.layers[l].moe, c)) {
        printf("expert parallel: %s\n", ds_last_error());
        fast_ep_free(&ep);
        model_close(&ref);
        return;
    }
    if (fast_ep_timing_create(&tm, N)) {
        printf("expert parallel: %s\n", ds_last_error());
        fast_ep_timing_destroy(&tm, N);
        fast_ep_free_moe(&ep, &w);
        fast_ep_free(&ep);
        model_close(&ref);
        return;
    }
    for (int d = 0; d < N; d++) {
        cudaSetDevice(d);
        x[d] = random_input((size_t)max_T * c->hidden_size, 1234u + (unsigned)d);
        y[d] = dev_alloc(sizeof(float) * (size_t)max_T * c->hidden_size);
    }
    ep.timing = &tm;
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++)
        ep_measure(&ep, &w, c, &tm, y, (const float *const *)x, tokens[i]);
    fast_ep_timing_destroy(&tm, N);
    for (int d = 0; d < N; d++) {
        cudaSetDevice(d);
        cudaFree(x[d]);
        cudaFree(y[d]);
    }
    fast_ep_free_moe(&ep, &w);
    fast_ep_free(&ep);
    cudaSetDevice(0);
    model_close(&ref);
}

int main(void)
{
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        printf("bench-fast: no CUDA GPU here (cudaGetDeviceCount: %s); nothing to measure\n", cudaGetErrorName(err));
        return 0;
    }
    struct cudaDeviceProp prop; /* C needs the tag: the toolkit typedefs it for C++ only */
    cudaGetDeviceProperties(&prop, 0);
    mkdir("build/bench", 0755);
    out = fopen("build/bench/fast.txt", "w");
    printf("bench-fast on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    cudaStream_t st;
    cublasHandle_t blas;
    cudaStreamCreate(&st);
    cublasCreate(&blas);
    cublasSetStream(blas, st);
    const double copy_gbps = ceilings(st, blas);
    kernels(st);
    moe_grouped(st);
    decode(copy_gbps);
    expert_parallel(n);
    cublasDestroy(blas);
    cudaStreamDestroy(st);
    if (out) fclose(out);
    return 0;
}
