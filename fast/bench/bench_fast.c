/**
 * \file bench_fast.c
 * \brief `make bench-fast`: kernel times on a real GPU against the device's own copy bandwidth and
 *        cuBLAS bf16 GEMM rate, and end-to-end decode on the synthetic V2-Lite-shaped checkpoint.
 *
 * Measured in one run: device-to-device copy GB/s and cuBLAS bf16 GEMM
 * TFLOP/s (the ceilings), then each kernel (v1 and v2) at DeepSeek-V2-Lite's
 * shapes with its achieved GB/s, then batch-1 decode tok/s of the fast model
 * in bf16 on build/bench/v2-lite-2layer (written by `make bench-ref`) when
 * present. Medians of several timed runs (CUDA events). Results also go to
 * build/bench/fast.txt. Without a GPU it says so and exits 0.
 */
#include "fast.h"

#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    if (bytes > 0)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "  %8.1f GB/s", bytes / (ms * 1e6));
    if (flops > 0)
        snprintf(buf + n, sizeof buf - (size_t)n, "  %8.1f TFLOP/s", flops / (ms * 1e9));
    printf("%s\n", buf);
    if (out)
        fprintf(out, "%s\n", buf);
}

/* The median time in ms of RUNS launches of what (a statement using stream st), after one warm-up. */
#define TIME(ms, st, what)                                                       \
    do {                                                                         \
        float t_[RUNS];                                                          \
        cudaEvent_t a_, b_;                                                      \
        cudaEventCreate(&a_);                                                    \
        cudaEventCreate(&b_);                                                    \
        what;                                                                    \
        for (int r_ = 0; r_ < RUNS; r_++) {                                      \
            cudaEventRecord(a_, st);                                             \
            what;                                                                \
            cudaEventRecord(b_, st);                                             \
            cudaEventSynchronize(b_);                                            \
            cudaEventElapsedTime(&t_[r_], a_, b_);                               \
        }                                                                        \
        qsort(t_, RUNS, sizeof(float), cmp_float);                               \
        ms = t_[RUNS / 2];                                                       \
        cudaEventDestroy(a_);                                                    \
        cudaEventDestroy(b_);                                                    \
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

static void ceilings(cudaStream_t st, cublasHandle_t blas)
{
    const size_t bytes = (size_t)1 << 30;
    void *a = dev_alloc(bytes), *b = dev_alloc(bytes);
    double ms;
    TIME(ms, st, cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st));
    line("copy device→device 1 GiB", ms, 2.0 * bytes, 0);
    const int n = 8192;
    const float one = 1.0f, zero = 0.0f;
    TIME(ms, st, cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n,
                              &zero, (char *)a + (size_t)n * n * 2, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
    line("cuBLAS bf16 GEMM 8192³", ms, 0, 2.0 * n * n * n);
    cudaFree(a);
    cudaFree(b);
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
    const RouterParams rp = {E, K, 1, 1, 0, 0, 0, 1.0f};
    const MlaDims dims = {NH, 128, DR, 128, DC, 0.1147f};
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
    TIME(ms, st, sample_argmax_v1(arg, logits, V, st));
    line("argmax v1, vocab 102400", ms, V * 4.0, 0);
    TIME(ms, st, sample_argmax_v2(arg, logits, V, st));
    line("argmax v2, vocab 102400", ms, V * 4.0, 0);
    void *bufs[] = {x, y, w, q, freq, g, s, wt, idx, arg, cache, ql, ol, part, scratch, o, kvb, logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cudaFree(bufs[i]);
}

/* Batch-1 decode on the synthetic checkpoint, in bf16 mode, against the bytes of weights a token reads. */
static void decode(void)
{
    struct stat sb;
    if (stat(CKPT, &sb) != 0) {
        printf("decode: %s missing (make bench-ref writes it); skipped\n", CKPT);
        return;
    }
    FastModel m;
    const FastOptions opt = {.bf16 = true, .max_context = 512};
    if (fast_model_open(&m, CKPT, &opt)) {
        printf("decode: %s\n", ds_last_error());
        return;
    }
    const ModelConfig *c = m.cfg;
    const double D = c->hidden_size, nh = c->num_attention_heads, dq = config_qk_head_dim(c);
    const double dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, dv = c->v_head_dim, Ie = c->moe_intermediate_size;
    double params = D + c->vocab_size * D;                    /* embedding row (≈ 0) + lm_head */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        params += (c->q_lora_rank ? c->q_lora_rank * (D + nh * dq) : nh * dq * D) + (dc + dr) * D +
                  nh * (c->qk_nope_head_dim + dv) * dc + D * nh * dv;
        params += config_layer_is_moe(c, l)
                      ? 3.0 * Ie * D * (c->num_experts_per_tok + c->n_shared_experts) + c->n_routed_experts * D * 2.0
                      : 3.0 * c->intermediate_size * D;
    }
    int tok = 1;
    float *logits = malloc(sizeof(float) * c->vocab_size);
    fast_model_forward(&m, &tok, 1, logits, false);
    const int steps = 64;
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, m.ctx.stream);
    for (int i = 0; i < steps; i++)
        if (fast_model_forward(&m, &tok, 1, logits, false) || fast_model_argmax(&m, &tok)) {
            printf("decode: %s\n", ds_last_error());
            break;
        }
    cudaEventRecord(b, m.ctx.stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    const double per = ms / steps;
    char name[96];
    snprintf(name, sizeof name, "decode batch 1, %d layers (%.2f tok/s)", c->num_hidden_layers, 1e3 / per);
    line(name, per, params * 2.0, 0);
    free(logits);
    fast_model_close(&m);
}

int main(void)
{
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
        printf("bench-fast: no CUDA GPU here (cudaGetDeviceCount: %s); nothing to measure\n", cudaGetErrorName(err));
        return 0;
    }
    struct cudaDeviceProp prop;   /* C needs the tag: the toolkit typedefs it for C++ only */
    cudaGetDeviceProperties(&prop, 0);
    mkdir("build/bench", 0755);
    out = fopen("build/bench/fast.txt", "w");
    printf("bench-fast on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    cudaStream_t st;
    cublasHandle_t blas;
    cudaStreamCreate(&st);
    cublasCreate(&blas);
    cublasSetStream(blas, st);
    ceilings(st, blas);
    kernels(st);
    decode();
    cublasDestroy(blas);
    cudaStreamDestroy(st);
    if (out)
        fclose(out);
    return 0;
}
