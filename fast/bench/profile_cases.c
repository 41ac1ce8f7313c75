/**
 * \file profile_cases.c
 * \brief bench_fast.c's kernel cases (kernels() and moe_grouped(): the same calls, shapes and labels),
 *        counted one at a time; the estimate of a case is its launches' memory terms plus one eager
 *        launch latency each (h100_model.h), as bench-fast times each call alone between two events.
 */
#include "profile_cases.h"

#include "error.h"
#include "h100_model.h"
#include "kernels.h"
#include "sim_counters.h"

#include <string.h>

static FILE *out;
static int first;

/* The case just counted, as one JSON object. */
static void emit(const char *label)
{
    size_t n = 0;
    const SimLaunchRecord *r = sim_counters_records(&n);
    double bytes_s = 0, launch_s = 0;
    char names[256] = "";
    for (size_t i = 0; i < n; i++) {
        bytes_s += h100_record_seconds(&r[i]);
        launch_s += h100_launch_seconds(&r[i], 0);
        if (strlen(names) + strlen(r[i].name) + 2 < sizeof names) {
            if (i) strcat(names, "+");
            strcat(names, r[i].name);
        }
    }
    fprintf(out,
            "%s    {\"label\": \"%s\", \"launches\": %zu, \"kernels\": \"%s\", \"estimated_us\": %.3f, "
            "\"estimated_bytes_us\": %.3f}",
            first ? "" : ",\n", label, n, names, 1e6 * (bytes_s + launch_s), 1e6 * bytes_s);
    first = 0;
}

/* Counts one call (a statement) and emits it; what was queued before it runs first, uncounted. */
#define CASE(label, call)                                   \
    do {                                                    \
        SimStepCounters c_;                                 \
        rc = rc || cudaDeviceSynchronize() != cudaSuccess;  \
        sim_counters_start();                               \
        rc = rc || (call) != cudaSuccess;                   \
        rc = rc || cudaStreamSynchronize(0) != cudaSuccess; \
        sim_counters_stop(&c_);                             \
        if (rc == 0) emit(label);                           \
    } while (0)

static void *dev_alloc(size_t bytes, int *rc)
{
    void *p = NULL;
    if (*rc == 0 && (cudaMalloc(&p, bytes) != cudaSuccess || cudaMemset(p, 0, bytes) != cudaSuccess)) *rc = -1;
    return p;
}

/* bench_fast.c's kernels(): DeepSeek-V2-Lite's sizes, 64 tokens, a 4096-position bf16 cache. */
static int kernels(void)
{
    enum { T = 64, D = 2048, NH = 16, DQ = 192, E = 64, K = 6, DC = 512, DR = 64, CTX = 4096, V = 102400 };
    int rc = 0;
    const cudaStream_t st = 0;
    float *x = dev_alloc(sizeof(float) * T * D, &rc), *y = dev_alloc(sizeof(float) * T * D, &rc);
    float *w = dev_alloc(sizeof(float) * D, &rc), *q = dev_alloc(sizeof(float) * T * NH * DQ, &rc);
    float *freq = dev_alloc(sizeof(float) * DR / 2, &rc), *g = dev_alloc(sizeof(float) * T * E, &rc);
    float *s = dev_alloc(sizeof(float) * T * E, &rc), *wt = dev_alloc(sizeof(float) * T * K, &rc);
    int *idx = dev_alloc(sizeof(int) * T * K, &rc), *arg = dev_alloc(sizeof(int), &rc);
    void *cache = dev_alloc((size_t)CTX * (DC + DR) * 2, &rc);
    float *ql = dev_alloc(sizeof(float) * NH * DC, &rc), *ol = dev_alloc(sizeof(float) * NH * DC, &rc);
    float *part = dev_alloc(sizeof(float) * NH * mla_decode_splits(CTX) * (DC + 2), &rc);
    float *scratch = dev_alloc(sizeof(float) * NH * (CTX + 2 * DC), &rc);
    float *o = dev_alloc(sizeof(float) * NH * 128, &rc);
    void *kvb = dev_alloc((size_t)NH * 256 * DC * 2, &rc);
    float *logits = dev_alloc(sizeof(float) * V, &rc);
    const RouterParams rp = { E, K, 1, 1, 0, 0, 0, 1.0f };
    const MlaDims dims = { NH, 128, DR, 128, DC, 0.1147f };
    const int last = CTX - 1;
    int *pos = dev_alloc(sizeof(int), &rc), *base = dev_alloc(sizeof(int), &rc);
    int *count = dev_alloc(sizeof(int) * mla_decode_v3_counters(NH, 1), &rc);
    float *part3 = dev_alloc(sizeof(float) * mla_decode_v3_partial_floats(dims, 1, CTX), &rc);
    rc = rc || cudaMemcpy(pos, &last, sizeof(int), cudaMemcpyHostToDevice) != cudaSuccess;
    CASE("rmsnorm v1 [64, 2048]", rmsnorm_forward_v1(y, x, w, T, D, 1e-6f, st));
    CASE("rmsnorm v2 [64, 2048]", rmsnorm_forward_v2(y, x, w, T, D, 1e-6f, st));
    CASE("rmsnorm+residual v2 [64, 2048]", rmsnorm_residual_v2(y, x, x, w, T, D, 1e-6f, st));
    CASE("rope v1 q^R 64×16×64", rope_forward_v1(q + 128, freq, 1.0f, DR, T, NH, NH * DQ, DQ, 0, st));
    CASE("rope v2 q^R 64×16×64", rope_forward_v2(q + 128, freq, 1.0f, DR, T, NH, NH * DQ, DQ, 0, st));
    CASE("router v1 64 tokens, E 64, K 6", router_forward_v1(idx, wt, s, g, NULL, rp, T, st));
    CASE("router v2 64 tokens, E 64, K 6", router_forward_v2(idx, wt, s, g, NULL, rp, T, st));
    CASE("mla attend v1 absorbed, ctx 4096",
         mla_attend_v1(o, q, kvb, KERNEL_BF16, cache, KERNEL_BF16, dims, CTX - 1, 1, 1, scratch, st));
    CASE("mla decode v2, ctx 4096 (bf16 cache)",
         mla_decode_v2(ol, ql, q, cache, KERNEL_BF16, dims, CTX - 1, 1, part, st));
    CASE("mla decode at v3, ctx 4096 (bf16 cache)",
         mla_decode_at_v3(ol, KERNEL_BF16, ql, q, cache, KERNEL_BF16, dims, pos, base, 1, CTX, part3, count, st));
    CASE("argmax v1, vocab 102400", sample_argmax_v1(arg, logits, V, st));
    CASE("argmax v2, vocab 102400", sample_argmax_v2(arg, logits, V, st));
    void *bufs[] = { x,  y,  w,    q,       freq, g,   s,      wt,  idx,  arg,   cache,
                     ql, ol, part, scratch, o,    kvb, logits, pos, base, count, part3 };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    return rc;
}

/* bench_fast.c's moe_grouped(): one decode token's K routed experts (0..K−1) and the shared experts, bf16. */
static int moe_grouped(void)
{
    enum { D = 2048, I = 1408, I_S = 2816, E = 64, K = 6 };
    int rc = 0, offsets[E + 1];
    for (int e = 0; e <= E; e++) offsets[e] = e < K ? e : K;
    void *gate_up = dev_alloc((size_t)E * 2 * I * D * 2, &rc), *down = dev_alloc((size_t)E * D * I * 2, &rc);
    void *shared_gate_up = dev_alloc((size_t)2 * I_S * D * 2, &rc), *shared_down = dev_alloc((size_t)D * I_S * 2, &rc);
    float *x = dev_alloc(sizeof(float) * D, &rc), *y = dev_alloc(sizeof(float) * K * D, &rc);
    float *shared_out = dev_alloc(sizeof(float) * D, &rc);
    void *hidden = dev_alloc((size_t)K * I * 2, &rc), *shared_hidden = dev_alloc((size_t)I_S * 2, &rc);
    int *row_token = dev_alloc(sizeof(int) * K, &rc), *off = dev_alloc(sizeof offsets, &rc);
    rc = rc || cudaMemcpy(off, offsets, sizeof offsets, cudaMemcpyHostToDevice) != cudaSuccess;
    CASE("moe ffn grouped v3, 1 token, K 6 + shared",
         moe_ffn_grouped_v3(y, shared_out, hidden, shared_hidden, x, row_token, off, gate_up, down, shared_gate_up,
                            shared_down, KERNEL_BF16, 1, K, E, D, I, I_S, 0));
    void *bufs[] = {
        gate_up, down, shared_gate_up, shared_down, x, y, shared_out, hidden, shared_hidden, row_token, off
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    return rc;
}

int profile_cases_json(FILE *f, double decode_b1_s, double decode_b16_s)
{
    out = f;
    first = 1;
    fprintf(f, "  \"bench_fast_kernels\": [\n");
    if (kernels() || moe_grouped()) return ds_error("a kernel case failed on the simulated device");
    static const char *const decode[] = { "decode batch  1", "decode batch 16" };
    const double t[] = { decode_b1_s, decode_b16_s };
    for (int i = 0; i < 2; i++)
        fprintf(f,
                ",\n    {\"label\": \"%s\", \"launches\": 0, \"kernels\": \"the 2-layer decode step\", "
                "\"estimated_us\": %.3f, \"estimated_bytes_us\": 0}",
                decode[i], 1e6 * t[i]);
    fprintf(f, "\n  ],\n");
    return 0;
}
