/**
 * \file test_fast_gemv.c
 * \brief kernels/gemv.cu against sums in double precision on the host: gemv_forward_v1 and v2 (plain,
 *        split output, per-head row groups with bf16 activations, more tokens than one pass), the
 *        residual-and-norm tail, and the absorbed query mla_absorb_v2; gemv_forward_v3's stages in one launch
 *        (W^UV then W^O with the tail; the input projection, W^UQ and the absorption), T = 1 and 16, with the
 *        counters back at zero after each launch.
 *
 * The latent and RoPE tails run inside fast_mla_forward's decode path, held to ref/mla.c by
 * test_fast_mla (cache rows and attention output) and to the whole model by test_fast_model.
 *
 * Weights random in ±1/√cols, stored bf16 or float32; outputs NaN-poisoned first; fixed seeds.
 * Tolerances: float32 relative L2 ≤ 1e-5 (float32 sums of ≤ 256 terms against double); bf16
 * ≤ 2e-2 (the activations are rounded to bf16 as the cuBLAS path's operand, the reference is not).
 * Sizes that are not multiples of 8 take the element-by-element fallback; 16 tokens of 2048 stage more
 * than the default 48 KB of shared memory (the launcher opts in).
 */
#include "check.h"
#include "dtype.h"
#include "fast_test.h"
#include "kernels.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static TestRng rng;

static void *to_device(const void *host, size_t bytes)
{
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes), cudaSuccess);
    assert_int_equal(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

/* n random floats in ±a, rounded to bf16 when bf16 (the host copy keeps the rounded values). */
static float *random_vals(size_t n, float a, bool bf16)
{
    float *x = malloc(sizeof(float) * n);
    test_rng_fill(&rng, x, n, -a, a);
    for (size_t i = 0; bf16 && i < n; i++) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
    return x;
}

/* x on the device in type t (bf16: x already representable). */
static void *upload_as(const float *x, size_t n, KernelDType t)
{
    if (t == KERNEL_F32) return to_device(x, sizeof(float) * n);
    uint16_t *b = malloc(2 * n);
    for (size_t i = 0; i < n; i++) b[i] = f32_to_bf16(x[i]);
    void *d = to_device(b, 2 * n);
    free(b);
    return d;
}

/* A poisoned device output of n floats. */
static float *poisoned(size_t n)
{
    float *h = malloc(sizeof(float) * n), *d;
    poison(h, n);
    d = to_device(h, sizeof(float) * n);
    free(h);
    return d;
}

static void fetch(float *host, const float *d, size_t n)
{
    assert_int_equal(cudaMemcpy(host, d, sizeof(float) * n, cudaMemcpyDeviceToHost), cudaSuccess);
}

/* One Gemv shape: rows in groups (group, w_row0, w_group_stride; x_group_stride), split output at split. */
typedef struct {
    int T, rows, cols, group, w_row0, w_group_stride, x_group_stride, split;
    KernelDType w_type, x_type;
} Shape;

static void check_gemv(Shape sh, const char *name)
{
    const int groups = (sh.rows + sh.group - 1) / sh.group;
    const int w_rows = (groups - 1) * sh.w_group_stride + sh.w_row0 + sh.group;
    const int ldx = (groups - 1) * sh.x_group_stride + sh.cols;
    const bool bf16 = sh.w_type == KERNEL_BF16;
    float *W = random_vals((size_t)w_rows * sh.cols, 1.0f / sqrtf((float)sh.cols), bf16);
    float *x = random_vals((size_t)sh.T * ldx, 1.0f, sh.x_type == KERNEL_BF16);
    const int n2 = sh.rows - sh.split;
    float *want1 = malloc(sizeof(float) * sh.T * sh.split), *want2 = malloc(sizeof(float) * sh.T * (n2 ? n2 : 1));
    for (int t = 0; t < sh.T; t++)
        for (int r = 0; r < sh.rows; r++) {
            const int g = r / sh.group;
            const float *w = W + ((size_t)g * sh.w_group_stride + sh.w_row0 + r % sh.group) * sh.cols;
            const float *xt = x + (size_t)t * ldx + (size_t)g * sh.x_group_stride;
            double s = 0;
            for (int c = 0; c < sh.cols; c++) s += (double)w[c] * xt[c];
            if (r < sh.split)
                want1[(size_t)t * sh.split + r] = (float)s;
            else
                want2[(size_t)t * n2 + r - sh.split] = (float)s;
        }
    void *dW = upload_as(W, (size_t)w_rows * sh.cols, sh.w_type), *dx = upload_as(x, (size_t)sh.T * ldx, sh.x_type);
    float *got1 = malloc(sizeof(float) * sh.T * sh.split), *got2 = malloc(sizeof(float) * sh.T * (n2 ? n2 : 1));
    const double tol = bf16 || sh.x_type == KERNEL_BF16 ? 2e-2 : 1e-5;
    for (int version = 1; version <= 2; version++) {
        float *dy = poisoned((size_t)sh.T * sh.split), *dy2 = n2 ? poisoned((size_t)sh.T * n2) : NULL;
        const Gemv g = { .W = dW,
                         .w_type = sh.w_type,
                         .rows = sh.rows,
                         .cols = sh.cols,
                         .group = sh.group,
                         .w_row0 = sh.w_row0,
                         .w_group_stride = sh.w_group_stride,
                         .x = dx,
                         .x_type = sh.x_type,
                         .ldx = ldx,
                         .x_group_stride = sh.x_group_stride,
                         .y = dy,
                         .y2 = dy2,
                         .ldy = sh.split,
                         .ldy2 = n2,
                         .split = sh.split,
                         .T = sh.T };
        assert_int_equal(version == 1 ? gemv_forward_v1(g, 0)
                                      : gemv_forward_v2(g, (GemvTail){ .kind = GEMV_TAIL_NONE }, 0),
                         cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        fetch(got1, dy, (size_t)sh.T * sh.split);
        char what[96];
        snprintf(what, sizeof what, "%s v%d, y", name, version);
        printf("  %s\n", what);
        check_close(what, got1, want1, (size_t)sh.T * sh.split, -1, tol);
        if (n2) {
            fetch(got2, dy2, (size_t)sh.T * n2);
            snprintf(what, sizeof what, "%s v%d, y2", name, version);
            check_close(what, got2, want2, (size_t)sh.T * n2, -1, tol);
        }
        cudaFree(dy);
        cudaFree(dy2);
    }
    cudaFree(dW);
    cudaFree(dx);
    free(W);
    free(x);
    free(want1);
    free(want2);
    free(got1);
    free(got2);
}

/* Plain matrices: odd columns (element loads), a split output, and 17 tokens (two passes of ≤ 16). */
static void plain(void **state)
{
    (void)state;
    need_device();
    for (int m = 0; m < 2; m++) {
        const KernelDType t = m ? KERNEL_BF16 : KERNEL_F32;
        check_gemv((Shape){ 3, 37, 100, 37, 0, 0, 0, 37, t, KERNEL_F32 }, m ? "odd cols bf16" : "odd cols f32");
        check_gemv((Shape){ 2, 300, 256, 300, 0, 0, 0, 100, t, KERNEL_F32 }, m ? "split bf16" : "split f32");
        check_gemv((Shape){ 17, 45, 64, 45, 0, 0, 0, 45, t, KERNEL_F32 }, m ? "17 tokens bf16" : "17 tokens f32");
        /* 16 tokens of 2048: 64 KB (bf16) or 128 KB (float32, two passes) of activations, above the default 48 KB */
        check_gemv((Shape){ 16, 24, 2048, 24, 0, 0, 0, 24, t, KERNEL_F32 }, m ? "16 x 2048 bf16" : "16 x 2048 f32");
    }
}

/* Per-head row groups (W^UV's shape: 12 rows per head at row 5 of every 20, x per head), bf16 x too. */
static void row_groups(void **state)
{
    (void)state;
    need_device();
    check_gemv((Shape){ 2, 36, 64, 12, 5, 20, 64, 36, KERNEL_F32, KERNEL_F32 }, "groups f32");
    check_gemv((Shape){ 3, 36, 64, 12, 5, 20, 64, 36, KERNEL_BF16, KERNEL_BF16 }, "groups bf16");
    check_gemv((Shape){ 2, 30, 22, 10, 3, 15, 22, 30, KERNEL_BF16, KERNEL_BF16 }, "groups odd bf16");
}

/* The residual-and-norm tail: h += W x; a = RMSNorm(h) · norm, in the last block. */
static void residual_norm_tail(void **state)
{
    (void)state;
    need_device();
    enum { T = 2, D = 72, C = 40 };
    const float eps = 1e-6f;
    float *W = random_vals((size_t)D * C, 1.0f / sqrtf((float)C), false), *x = random_vals((size_t)T * C, 1.0f, false);
    float *h = random_vals((size_t)T * D, 2.0f, false), *norm = random_vals(D, 1.0f, false);
    float h_want[T * D], a_want[T * D], h_got[T * D], a_got[T * D];
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int r = 0; r < D; r++) {
            double s = 0;
            for (int c = 0; c < C; c++) s += (double)W[r * C + c] * x[t * C + c];
            h_want[t * D + r] = (float)(h[t * D + r] + s);
            ss += (double)h_want[t * D + r] * h_want[t * D + r];
        }
        const double inv = 1.0 / sqrt(ss / D + eps);
        for (int r = 0; r < D; r++) a_want[t * D + r] = (float)(norm[r] * h_want[t * D + r] * inv);
    }
    float *dW = to_device(W, sizeof(float) * D * C), *dx = to_device(x, sizeof(float) * T * C);
    float *dh = to_device(h, sizeof(float) * T * D), *dn = to_device(norm, sizeof(float) * D);
    float *dy = poisoned((size_t)T * D), *da = poisoned((size_t)T * D);
    int *counter;
    assert_int_equal(cudaMalloc((void **)&counter, sizeof(int)), cudaSuccess);
    assert_int_equal(cudaMemset(counter, 0, sizeof(int)), cudaSuccess);
    const Gemv g = { .W = dW,
                     .w_type = KERNEL_F32,
                     .rows = D,
                     .cols = C,
                     .group = D,
                     .x = dx,
                     .x_type = KERNEL_F32,
                     .ldx = C,
                     .y = dy,
                     .ldy = D,
                     .split = D,
                     .T = T };
    const GemvTail e = {
        .kind = GEMV_TAIL_RESIDUAL_NORM, .counter = counter, .h = dh, .a = da, .norm = dn, .eps = eps
    };
    assert_int_equal(gemv_forward_v2(g, e, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    float y_want[T * D], y_got[T * D];
    for (int i = 0; i < T * D; i++) y_want[i] = h_want[i] - h[i];
    fetch(y_got, dy, T * D);
    check_close("tail: y = W x", y_got, y_want, T * D, -1, 1e-5);
    fetch(h_got, dh, T * D);
    fetch(a_got, da, T * D);
    check_close("tail: h + W x", h_got, h_want, T * D, -1, 1e-5);
    check_close("tail: RMSNorm(h)", a_got, a_want, T * D, -1, 1e-5);
    int left = -1;
    assert_int_equal(cudaMemcpy(&left, counter, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    assert_int_equal(left, 0); /* ready for the next launch */
    /* a tail without its counter is refused at launch */
    GemvTail bad = e;
    bad.counter = NULL;
    assert_int_equal(gemv_forward_v2(g, bad, 0), cudaErrorInvalidValue);
    void *dev[] = { dW, dx, dh, dn, dy, da, counter };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    free(W);
    free(x);
    free(h);
    free(norm);
}

/* q^L_{t,h}[c] = Σ_d W^UK_h[d, c] q^N_{t,h}[d] for one shape. */
static void check_absorb(int T, int nh, int dn, int dr, int dv, int dc, KernelDType wt, const char *name)
{
    const int dq = dn + dr;
    const bool bf16 = wt == KERNEL_BF16;
    float *kv_b = random_vals((size_t)nh * (dn + dv) * dc, 1.0f / sqrtf((float)dn), bf16);
    float *q = random_vals((size_t)T * nh * dq, 1.0f, false);
    const size_t n = (size_t)T * nh * dc;
    float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++)
            for (int c = 0; c < dc; c++) {
                double s = 0;
                for (int d = 0; d < dn; d++)
                    s += (double)kv_b[((size_t)h * (dn + dv) + d) * dc + c] * q[((size_t)t * nh + h) * dq + d];
                want[((size_t)t * nh + h) * dc + c] = (float)s;
            }
    void *dk = upload_as(kv_b, (size_t)nh * (dn + dv) * dc, wt);
    float *dq_ = to_device(q, sizeof(float) * T * nh * dq), *dl = poisoned(n);
    const MlaDims dims = { nh, dn, dr, dv, dc, 1.0f };
    assert_int_equal(mla_absorb_v2(dl, dq_, dk, wt, dims, T, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    fetch(got, dl, n);
    printf("  %s\n", name);
    check_close(name, got, want, n, -1, bf16 ? 2e-2 : 1e-5);
    cudaFree(dk);
    cudaFree(dq_);
    cudaFree(dl);
    free(kv_b);
    free(q);
    free(want);
    free(got);
}

/* The absorption: V2-Lite's head (d_n 128, d_c 512), odd d_n and d_c (element loads), d_n over 128 refused. */
static void absorb(void **state)
{
    (void)state;
    need_device();
    check_absorb(2, 3, 128, 64, 128, 512, KERNEL_BF16, "absorb 128 x 512 bf16");
    check_absorb(3, 2, 40, 8, 24, 64, KERNEL_F32, "absorb 40 x 64 f32");
    check_absorb(2, 3, 37, 6, 11, 20, KERNEL_F32, "absorb odd f32");
    check_absorb(1, 2, 37, 6, 11, 20, KERNEL_BF16, "absorb odd bf16");
    const MlaDims big = { 1, 129, 0, 1, 8, 1.0f };
    assert_int_equal(mla_absorb_v2(NULL, NULL, NULL, KERNEL_F32, big, 1, 0), cudaErrorInvalidValue);
}

/* y[t, r] = Σ_c W[r', c] x[t, x_off + c] in double (check_gemv's sum; rows in groups as Gemv), rounded to float. */
static void host_product(float *y, const float *W, int rows, int cols, int group, int w_row0, int w_stride,
                         const float *x, int ldx, int x_stride, int T)
{
    for (int t = 0; t < T; t++)
        for (int r = 0; r < rows; r++) {
            const float *w = W + ((size_t)(r / group) * w_stride + w_row0 + r % group) * cols;
            const float *xt = x + (size_t)t * ldx + (size_t)(r / group) * x_stride;
            double acc = 0;
            for (int c = 0; c < cols; c++) acc += (double)w[c] * xt[c];
            y[(size_t)t * rows + r] = (float)acc;
        }
}

/* A plain Gemv of rows × cols for T tokens, y [T, rows]. */
static Gemv plain_gemv(const void *W, KernelDType wt, int rows, int cols, const void *x, KernelDType xt, float *y,
                       int T)
{
    return (Gemv){ .W = W,
                   .w_type = wt,
                   .rows = rows,
                   .cols = cols,
                   .group = rows,
                   .x = x,
                   .x_type = xt,
                   .ldx = cols,
                   .y = y,
                   .ldy = rows,
                   .split = rows,
                   .T = T };
}

/* Fetches n floats of d and checks them against want; prints the name. */
static void check_dev(const char *name, const float *d, const float *want, size_t n, double tol)
{
    float *got = malloc(sizeof(float) * n);
    fetch(got, d, n);
    printf("  %s\n", name);
    check_close(name, got, want, n, -1, tol);
    free(got);
}

/* The launch's counters are back at zero (the next launch or graph replay starts from rest). */
static void check_counters_at_rest(const int *counters)
{
    int c[GEMV_V3_COUNTER_INTS];
    assert_int_equal(cudaMemcpy(c, counters, sizeof c, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < GEMV_V3_COUNTER_INTS; i++) assert_int_equal(c[i], 0);
}

static int *zeroed_counters(void)
{
    int *d;
    assert_int_equal(cudaMalloc((void **)&d, sizeof(int) * GEMV_V3_COUNTER_INTS), cudaSuccess);
    assert_int_equal(cudaMemset(d, 0, sizeof(int) * GEMV_V3_COUNTER_INTS), cudaSuccess);
    return d;
}

/*
 * W^UV then W^O in one launch (the decode step's third launch): o = W^UV_h o^L_h per head (rows dn + h(dn + dv)
 * … of a stacked kv_b, x in the weights' type), out = W^O o, then h += out, a = RMSNorm(h)·norm. Against
 * double sums on the host, the second product's input the host's own first product.
 */
static void check_uv_o(int T, int nh, int dn, int dv, int dc, int D, bool bf16)
{
    const KernelDType wt = bf16 ? KERNEL_BF16 : KERNEL_F32;
    const int R = nh * dv;
    const float eps = 1e-6f;
    float *kv_b = random_vals((size_t)nh * (dn + dv) * dc, 1.0f / sqrtf((float)dc), bf16);
    float *W_o = random_vals((size_t)D * R, 1.0f / sqrtf((float)R), bf16);
    float *o_lat = random_vals((size_t)T * nh * dc, 1.0f, bf16), *h = random_vals((size_t)T * D, 2.0f, false);
    float *norm = random_vals(D, 1.0f, false);
    float *o = malloc(sizeof(float) * T * R), *out = malloc(sizeof(float) * T * D);
    float *h_want = malloc(sizeof(float) * T * D), *a_want = malloc(sizeof(float) * T * D);
    host_product(o, kv_b, R, dc, dv, dn, dn + dv, o_lat, nh * dc, dc, T);
    host_product(out, W_o, D, R, D, 0, 0, o, R, 0, T);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int r = 0; r < D; r++) {
            h_want[t * D + r] = h[t * D + r] + out[t * D + r];
            ss += (double)h_want[t * D + r] * h_want[t * D + r];
        }
        const double inv = 1.0 / sqrt(ss / D + eps);
        for (int r = 0; r < D; r++) a_want[t * D + r] = (float)(norm[r] * h_want[t * D + r] * inv);
    }
    void *dkv = upload_as(kv_b, (size_t)nh * (dn + dv) * dc, wt), *dWo = upload_as(W_o, (size_t)D * R, wt);
    void *dol = upload_as(o_lat, (size_t)T * nh * dc, wt);
    float *dh = to_device(h, sizeof(float) * T * D), *dnorm = to_device(norm, sizeof(float) * D);
    float *d_o = poisoned((size_t)T * R), *dout = poisoned((size_t)T * D), *da = poisoned((size_t)T * D);
    int *counters = zeroed_counters();
    Gemv g[2] = { plain_gemv(dkv, wt, R, dc, dol, wt, d_o, T), plain_gemv(dWo, wt, D, R, d_o, KERNEL_F32, dout, T) };
    g[0].group = dv;
    g[0].w_row0 = dn;
    g[0].w_group_stride = dn + dv;
    g[0].ldx = nh * dc;
    g[0].x_group_stride = dc;
    const GemvTail e[2] = { { .kind = GEMV_TAIL_NONE },
                            { .kind = GEMV_TAIL_RESIDUAL_NORM, .h = dh, .a = da, .norm = dnorm, .eps = eps } };
    assert_int_equal(gemv_forward_v3(g, e, 2, NULL, counters, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    char what[96];
    const double tol = bf16 ? 2e-2 : 1e-5;
    snprintf(what, sizeof what, "v3 W^UV, T %d%s", T, bf16 ? " bf16" : "");
    check_dev(what, d_o, o, (size_t)T * R, tol);
    snprintf(what, sizeof what, "v3 W^O after W^UV, T %d%s", T, bf16 ? " bf16" : "");
    check_dev(what, dout, out, (size_t)T * D, tol);
    snprintf(what, sizeof what, "v3 tail h + W^O o, T %d%s", T, bf16 ? " bf16" : "");
    check_dev(what, dh, h_want, (size_t)T * D, tol);
    snprintf(what, sizeof what, "v3 tail RMSNorm(h), T %d%s", T, bf16 ? " bf16" : "");
    check_dev(what, da, a_want, (size_t)T * D, tol);
    check_counters_at_rest(counters);
    void *dev[] = { dkv, dWo, dol, dh, dnorm, d_o, dout, da, counters };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    float *host[] = { kv_b, W_o, o_lat, h, norm, o, out, h_want, a_want };
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

/*
 * The decode step's first launch without its latent tail: [kv ; c^Q] = W_in a (split output), with query
 * compression q = W^UQ c^Q as a middle stage (else q is W_in's second output), then the absorption
 * q^L_{t,h} = W^UK_hᵀ q^N_{t,h} as the last stage. Against double sums on the host.
 */
static void check_in_absorb(int T, int nh, int dn, int dr, int dv, int dc, int D, int dcq, bool bf16)
{
    const KernelDType wt = bf16 ? KERNEL_BF16 : KERNEL_F32;
    const int dq = dn + dr, kvw = dc + dr, qw = nh * dq, w2 = dcq ? dcq : qw, rows = kvw + w2;
    float *W_in = random_vals((size_t)rows * D, 1.0f / sqrtf((float)D), bf16);
    float *W_qb = dcq ? random_vals((size_t)qw * dcq, 1.0f / sqrtf((float)dcq), bf16) : NULL;
    float *kv_b = random_vals((size_t)nh * (dn + dv) * dc, 1.0f / sqrtf((float)dn), bf16);
    float *x = random_vals((size_t)T * D, 1.0f, false);
    float *in = malloc(sizeof(float) * T * rows), *kv = malloc(sizeof(float) * T * kvw);
    float *second = malloc(sizeof(float) * T * w2), *q = malloc(sizeof(float) * T * qw);
    float *q_lat = malloc(sizeof(float) * T * nh * dc);
    host_product(in, W_in, rows, D, rows, 0, 0, x, D, 0, T);
    for (int t = 0; t < T; t++) {
        memcpy(kv + (size_t)t * kvw, in + (size_t)t * rows, sizeof(float) * kvw);
        memcpy(second + (size_t)t * w2, in + (size_t)t * rows + kvw, sizeof(float) * w2);
    }
    if (dcq)
        host_product(q, W_qb, qw, dcq, qw, 0, 0, second, dcq, 0, T);
    else
        memcpy(q, second, sizeof(float) * T * qw);
    /* W^UK_hᵀ q^N: column c of W^UK_h is row c of the transposed head, so the sum runs over d < d_n */
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++)
            for (int c = 0; c < dc; c++) {
                double acc = 0;
                for (int d = 0; d < dn; d++)
                    acc += (double)kv_b[((size_t)h * (dn + dv) + d) * dc + c] * q[((size_t)t * nh + h) * dq + d];
                q_lat[((size_t)t * nh + h) * dc + c] = (float)acc;
            }
    void *dWin = upload_as(W_in, (size_t)rows * D, wt), *dWqb = dcq ? upload_as(W_qb, (size_t)qw * dcq, wt) : NULL;
    void *dkvb = upload_as(kv_b, (size_t)nh * (dn + dv) * dc, wt);
    float *dx = to_device(x, sizeof(float) * T * D), *dkv = poisoned((size_t)T * kvw);
    float *dcq_ = dcq ? poisoned((size_t)T * dcq) : NULL, *dq_ = poisoned((size_t)T * qw);
    float *dql = poisoned((size_t)T * nh * dc);
    int *counters = zeroed_counters();
    Gemv g[2] = { plain_gemv(dWin, wt, rows, D, dx, KERNEL_F32, dkv, T),
                  plain_gemv(dWqb, wt, qw, dcq, dcq_, KERNEL_F32, dq_, T) };
    g[0].ldy = kvw;
    g[0].split = kvw;
    g[0].y2 = dcq ? dcq_ : dq_;
    g[0].ldy2 = w2;
    const GemvTail e[2] = { { .kind = GEMV_TAIL_NONE }, { .kind = GEMV_TAIL_NONE } };
    const MlaDims dims = { nh, dn, dr, dv, dc, 1.0f };
    const GemvAbsorb ab = { dql, dq_, dkvb, wt, dims, T };
    assert_int_equal(gemv_forward_v3(g, e, dcq ? 2 : 1, &ab, counters, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    char what[96];
    const double tol = bf16 ? 2e-2 : 1e-5;
    const char *form = dcq ? "W^DQ, W^UQ" : "W^Q";
    snprintf(what, sizeof what, "v3 [c^KV ; k^R] (%s), T %d%s", form, T, bf16 ? " bf16" : "");
    check_dev(what, dkv, kv, (size_t)T * kvw, tol);
    snprintf(what, sizeof what, "v3 q (%s), T %d%s", form, T, bf16 ? " bf16" : "");
    check_dev(what, dq_, q, (size_t)T * qw, tol);
    snprintf(what, sizeof what, "v3 absorbed q^L (%s), T %d%s", form, T, bf16 ? " bf16" : "");
    check_dev(what, dql, q_lat, (size_t)T * nh * dc, tol);
    check_counters_at_rest(counters);
    void *dev[] = { dWin, dWqb, dkvb, dx, dkv, dcq_, dq_, dql, counters };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    float *host[] = { W_in, W_qb, kv_b, x, in, kv, second, q, q_lat };
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

/* Version 3's stages: W^UV + W^O with the tail, and W_in [+ W^UQ] + the absorption; T = 1 and 16; odd widths. */
static void staged_chains(void **state)
{
    (void)state;
    need_device();
    for (int m = 0; m < 2; m++) {
        const bool bf16 = m == 1;
        for (int T = 1; T <= 16; T += 15) {
            check_uv_o(T, 3, 16, 24, 40, 64, bf16);
            check_in_absorb(T, 3, 32, 8, 24, 64, 48, 0, bf16);
            check_in_absorb(T, 3, 32, 8, 24, 64, 48, 40, bf16);
        }
        check_uv_o(2, 3, 5, 11, 37, 29, bf16); /* widths not multiples of 8: element loads */
        check_in_absorb(2, 2, 37, 6, 11, 20, 45, 27, bf16);
    }
    /* refused: no counters, too many products, d_n over 128 */
    Gemv g[GEMV_CHAIN_MAX + 1] = { plain_gemv(NULL, KERNEL_F32, 8, 8, NULL, KERNEL_F32, NULL, 1) };
    for (int j = 1; j <= GEMV_CHAIN_MAX; j++) g[j] = g[0];
    const GemvTail e[GEMV_CHAIN_MAX + 1] = { { .kind = GEMV_TAIL_NONE } };
    int *counters = zeroed_counters();
    assert_int_equal(gemv_forward_v3(g, e, 1, NULL, NULL, 0), cudaErrorInvalidValue);
    assert_int_equal(gemv_forward_v3(g, e, GEMV_CHAIN_MAX + 1, NULL, counters, 0), cudaErrorInvalidValue);
    const GemvAbsorb big = { (float *)counters, NULL, NULL, KERNEL_F32, { 1, 129, 0, 1, 8, 1.0f }, 1 };
    assert_int_equal(gemv_forward_v3(g, e, 1, &big, counters, 0), cudaErrorInvalidValue);
    cudaFree(counters);
}

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0);
    test_rng_seed(&rng, "fast gemv");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain),  cmocka_unit_test(row_groups),    cmocka_unit_test(residual_norm_tail),
        cmocka_unit_test(absorb), cmocka_unit_test(staged_chains),
    };
    return cmocka_run_group_tests_name("fast gemv", tests, NULL, NULL);
}
