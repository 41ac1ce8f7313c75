/**
 * \file test_fast_gemv.c
 * \brief kernels/gemv.cu against sums in double precision on the host: gemv_forward_v1 and v2 (plain,
 *        split output, per-head row groups with bf16 activations, more tokens than one pass), the
 *        residual-and-norm tail, and the absorbed query mla_absorb_v2.
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

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0);
    test_rng_seed(&rng, "fast gemv");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain),
        cmocka_unit_test(row_groups),
        cmocka_unit_test(residual_norm_tail),
        cmocka_unit_test(absorb),
    };
    return cmocka_run_group_tests_name("fast gemv", tests, NULL, NULL);
}
