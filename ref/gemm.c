/**
 * \file gemm.c
 * \brief Register-blocked matrix products for linear.h whose summation order does not depend on the CPU.
 *
 * Forward, y[t, r] = Σ_k W[r, k] x[t, k]: every output keeps LANES = 32 partial sums,
 * s_j = Σ_{k ≡ j (mod 32)} W[r, k] x[t, k] in increasing k, then adds them in a fixed pairwise tree
 * (s_j += s_{j+16}, then +8, +4, +2, +1). One 32-float vector holds the 32 sums of one output whatever the
 * register width: AVX-512 keeps it in two registers, AVX2 in four, portable C in what the compiler has.
 * A tile of TM tokens × TN weight rows keeps TM·TN such vectors in registers, so each widened weight
 * vector serves TM tokens and each loaded activation vector TN rows. The tile shape differs between
 * builds (it is bounded by the register count), but the sums of one output never depend on it.
 *
 * Backward, dx[t, c] = Σ_r dy[t, r] W[r, c] and dW[r, c] += Σ_t dy[t, r] x[t, c]: here a vector lane is
 * one output, summed in increasing r (or t) one term at a time, so the vector width cannot change the
 * order either. Multiplies and adds stay separate (-std=c11 forbids contracting them into fused
 * multiply-adds), so every build rounds every step identically.
 */
#include "gemm.h"

#include <stdint.h>
#include <string.h>

enum { LANES = 32, BW = 16 }; /* forward partial sums per output; backward outputs per vector */

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef uint16_t vh __attribute__((vector_size(LANES * sizeof(uint16_t))));
typedef uint32_t vu __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef float v16 __attribute__((vector_size(16 * sizeof(float))));
typedef float v8 __attribute__((vector_size(8 * sizeof(float))));
typedef float v4 __attribute__((vector_size(4 * sizeof(float))));
typedef float vb __attribute__((vector_size(BW * sizeof(float))));

/* Helpers pass vectors by value; they are always inlined, so no call ever uses the vector ABI that
 * GCC warns about (-Wpsabi: a vector return differs with and without AVX). */
#pragma GCC diagnostic ignored "-Wpsabi"
#define INLINE static inline __attribute__((always_inline))
enum { TILE_MAX = 4 }; /* the largest tile side of any build */

/* ---- forward: 32 partial sums per output ---------------------------------------------- */

/* Σ s_j as the fixed pairwise tree. */
INLINE float sum_lanes(vf s)
{
    const v16 a = __builtin_shufflevector(s, s, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) +
                  __builtin_shufflevector(s, s, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
    const v8 b = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    const v4 c = __builtin_shufflevector(b, b, 0, 1, 2, 3) + __builtin_shufflevector(b, b, 4, 5, 6, 7);
    return (c[0] + c[2]) + (c[1] + c[3]);
}

INLINE vf load_f(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Element i of stored weights, widened (bf16 and f16 widen exactly). */
INLINE float widen(DType dt, const void *w, size_t i)
{
    if (dt == DT_F32) return ((const float *)w)[i];
    const uint16_t h = ((const uint16_t *)w)[i];
    return dt == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

/* LANES stored weights from element i, widened: bf16 by a 16-bit shift of every lane. */
INLINE vf load_w(DType dt, const void *w, size_t i)
{
    if (dt == DT_F32) return load_f((const float *)w + i);
    if (dt == DT_BF16) {
        vh h;
        memcpy(&h, (const uint16_t *)w + i, sizeof h);
        return (vf)(__builtin_convertvector(h, vu) << 16);
    }
    float b[LANES];
    for (int j = 0; j < LANES; j++) b[j] = widen(dt, w, i + j);
    return load_f(b);
}

/* The last m < LANES elements of a row. Missing lanes get x = 0 and w = −0, whose product −0 leaves
 * any partial sum unchanged bit for bit (s + (−0) = s, signed zeros included): a short tail adds to
 * the first m sums only. */
INLINE void load_tails(vf *xv, vf *wv, const float *x, DType dt, const void *w, size_t i, int m)
{
    float a[LANES], b[LANES];
    for (int j = 0; j < LANES; j++) {
        a[j] = j < m ? x[j] : 0.0f;
        b[j] = j < m ? widen(dt, w, i + j) : -0.0f;
    }
    if (xv) *xv = load_f(a);
    if (wv) *wv = load_f(b);
}

// ANCHOR: fwd_tile
/* One tile: y[t·ys + r] for t < TM, r < TN, from tokens x + t·n and weight rows starting at element
 * w0 + r·n of w. TM and TN are constants where this is inlined, so the loops over them unroll and
 * the TM·TN accumulators live in registers. */
INLINE void fwd_tile(const int TM, const int TN, DType dt, float *y, size_t ys, const float *x, const void *w,
                     size_t w0, int n)
{
    vf acc[TILE_MAX][TILE_MAX];
    for (int t = 0; t < TM; t++)
        for (int r = 0; r < TN; r++) acc[t][r] = (vf){ 0 };
    int k = 0;
    for (; k + LANES <= n; k += LANES) {
        vf wv[TILE_MAX];
        for (int r = 0; r < TN; r++) wv[r] = load_w(dt, w, w0 + (size_t)r * n + k);
        for (int t = 0; t < TM; t++) {
            const vf xv = load_f(x + (size_t)t * n + k);
            for (int r = 0; r < TN; r++) acc[t][r] += wv[r] * xv;
        }
    }
    if (k < n) {
        vf wv[TILE_MAX], xv;
        for (int r = 0; r < TN; r++) load_tails(NULL, &wv[r], x, dt, w, w0 + (size_t)r * n + k, n - k);
        for (int t = 0; t < TM; t++) {
            load_tails(&xv, NULL, x + (size_t)t * n + k, dt, w, 0, n - k);
            for (int r = 0; r < TN; r++) acc[t][r] += wv[r] * xv;
        }
    }
    for (int t = 0; t < TM; t++)
        for (int r = 0; r < TN; r++) y[(size_t)t * ys + r] = sum_lanes(acc[t][r]);
}

// ANCHOR_END: fwd_tile

// ANCHOR: fwd_rows
/* Rows [r0, r1) against T tokens, in TM × TN tiles: row tiles outside, so a tile of weight rows
 * is read from memory once and reused from cache by every token; leftovers in TM × 1 and 1 × TN. */
INLINE void fwd_rows(const int TM, const int TN, DType dt, float *y, const float *x, const Mat *W, int r0, int r1,
                     int T)
{
    const int n = W->cols, out = r1 - r0;
    int r = 0;
    for (; r + TN <= out; r += TN) {
        const size_t w0 = (size_t)(r0 + r) * n;
        int t = 0;
        for (; t + TM <= T; t += TM)
            fwd_tile(TM, TN, dt, y + (size_t)t * out + r, out, x + (size_t)t * n, W->data, w0, n);
        for (; t < T; t++) fwd_tile(1, TN, dt, y + (size_t)t * out + r, out, x + (size_t)t * n, W->data, w0, n);
    }
    for (; r < out; r++) {
        const size_t w0 = (size_t)(r0 + r) * n;
        int t = 0;
        for (; t + TM <= T; t += TM)
            fwd_tile(TM, 1, dt, y + (size_t)t * out + r, out, x + (size_t)t * n, W->data, w0, n);
        for (; t < T; t++) fwd_tile(1, 1, dt, y + (size_t)t * out + r, out, x + (size_t)t * n, W->data, w0, n);
    }
}

// ANCHOR_END: fwd_rows

/* Every stored type through one tile shape; f16 (rare in checkpoints) widens lane by lane. */
INLINE void fwd_any(const int TM, const int TN, float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    if (W->dtype == DT_BF16)
        fwd_rows(TM, TN, DT_BF16, y, x, W, r0, r1, T);
    else if (W->dtype == DT_F32)
        fwd_rows(TM, TN, DT_F32, y, x, W, r0, r1, T);
    else
        fwd_rows(TM, TN, DT_F16, y, x, W, r0, r1, T);
}

/* ---- backward: one output per lane, summed term by term ------------------------------- */

INLINE vb load_b(const float *p)
{
    vb v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE vb load_wb(DType dt, const void *w, size_t i)
{
    if (dt == DT_F32) return load_b((const float *)w + i);
    float b[BW];
    for (int j = 0; j < BW; j++) b[j] = widen(dt, w, i + j);
    return load_b(b);
}

// ANCHOR: dx_tile
/* dx[t, c0 + 16c + j] for t < TM, c < TC: Σ_r dy[t, r] W[r, ·] from 0, in increasing r. */
INLINE void dx_tile(const int TM, const int TC, DType dt, float *dx, const float *dy, const void *w, int rows, int cols,
                    int c0)
{
    vb acc[TILE_MAX][TILE_MAX];
    for (int t = 0; t < TM; t++)
        for (int c = 0; c < TC; c++) acc[t][c] = (vb){ 0 };
    for (int r = 0; r < rows; r++) {
        vb wv[TILE_MAX];
        for (int c = 0; c < TC; c++) wv[c] = load_wb(dt, w, (size_t)r * cols + c0 + c * BW);
        for (int t = 0; t < TM; t++) {
            const vb g = (vb){ 0 } + dy[(size_t)t * rows + r];
            for (int c = 0; c < TC; c++) acc[t][c] += g * wv[c];
        }
    }
    for (int t = 0; t < TM; t++)
        for (int c = 0; c < TC; c++) memcpy(dx + (size_t)t * cols + c0 + c * BW, &acc[t][c], sizeof(vb));
}

// ANCHOR_END: dx_tile

/* dx = Wᵀ dy for TM tokens at a time: full tiles of TC vectors, then single vectors, then single columns. */
INLINE void dx_tokens(const int TM, const int TC, DType dt, float *dx, const float *dy, const void *w, int rows,
                      int cols)
{
    int c = 0;
    for (; c + TC * BW <= cols; c += TC * BW) dx_tile(TM, TC, dt, dx, dy, w, rows, cols, c);
    for (; c + BW <= cols; c += BW) dx_tile(TM, 1, dt, dx, dy, w, rows, cols, c);
    for (; c < cols; c++)
        for (int t = 0; t < TM; t++) {
            float s = 0;
            for (int r = 0; r < rows; r++) s += dy[(size_t)t * rows + r] * widen(dt, w, (size_t)r * cols + c);
            dx[(size_t)t * cols + c] = s;
        }
}

INLINE void dx_all(const int TM, const int TC, DType dt, float *dx, const float *dy, const void *w, int rows, int cols,
                   int T)
{
    int t = 0;
    for (; t + TM <= T; t += TM) dx_tokens(TM, TC, dt, dx + (size_t)t * cols, dy + (size_t)t * rows, w, rows, cols);
    for (; t < T; t++) dx_tokens(1, TC, dt, dx + (size_t)t * cols, dy + (size_t)t * rows, w, rows, cols);
}

// ANCHOR: dw_tile
/* dW[r0 + i, c0 + 16c + j] += Σ_t dy[t, r0 + i] x[t, ·] for i < TR, c < TC, in increasing t. */
INLINE void dw_tile(const int TR, const int TC, float *dW, const float *dy, const float *x, int rows, int cols, int T,
                    int r0, int c0)
{
    vb acc[TILE_MAX][TILE_MAX];
    for (int i = 0; i < TR; i++)
        for (int c = 0; c < TC; c++) acc[i][c] = load_b(dW + (size_t)(r0 + i) * cols + c0 + c * BW);
    for (int t = 0; t < T; t++) {
        vb xv[TILE_MAX];
        for (int c = 0; c < TC; c++) xv[c] = load_b(x + (size_t)t * cols + c0 + c * BW);
        for (int i = 0; i < TR; i++) {
            const vb g = (vb){ 0 } + dy[(size_t)t * rows + r0 + i];
            for (int c = 0; c < TC; c++) acc[i][c] += g * xv[c];
        }
    }
    for (int i = 0; i < TR; i++)
        for (int c = 0; c < TC; c++) memcpy(dW + (size_t)(r0 + i) * cols + c0 + c * BW, &acc[i][c], sizeof(vb));
}

// ANCHOR_END: dw_tile

INLINE void dw_rows(const int TR, const int TC, float *dW, const float *dy, const float *x, int rows, int cols, int T,
                    int r0)
{
    int c = 0;
    for (; c + TC * BW <= cols; c += TC * BW) dw_tile(TR, TC, dW, dy, x, rows, cols, T, r0, c);
    for (; c + BW <= cols; c += BW) dw_tile(TR, 1, dW, dy, x, rows, cols, T, r0, c);
    for (; c < cols; c++)
        for (int i = 0; i < TR; i++) {
            float s = dW[(size_t)(r0 + i) * cols + c];
            for (int t = 0; t < T; t++) s += dy[(size_t)t * rows + r0 + i] * x[(size_t)t * cols + c];
            dW[(size_t)(r0 + i) * cols + c] = s;
        }
}

INLINE void dw_all(const int TR, const int TC, float *dW, const float *dy, const float *x, int rows, int cols, int T)
{
    int r = 0;
    for (; r + TR <= rows; r += TR) dw_rows(TR, TC, dW, dy, x, rows, cols, T, r);
    for (; r < rows; r++) dw_rows(1, TC, dW, dy, x, rows, cols, T, r);
}

INLINE void backward_any(const int TM, const int TC, float *dx, float *dW, const float *dy, const float *x,
                         const Mat *W, int T)
{
    if (dx) {
        if (W->dtype == DT_F32)
            dx_all(TM, TC, DT_F32, dx, dy, W->data, W->rows, W->cols, T);
        else if (W->dtype == DT_BF16)
            dx_all(TM, TC, DT_BF16, dx, dy, W->data, W->rows, W->cols, T);
        else
            dx_all(TM, TC, DT_F16, dx, dy, W->data, W->rows, W->cols, T);
    }
    if (dW) dw_all(TM, TC, dW, dy, x, W->rows, W->cols, T);
}

/* ---- the builds and the choice between them ------------------------------------------- */

/* Tile shapes: (forward TM × TN, backward TM × TC) chosen so the accumulators fit the register file
 * (AVX-512: 32 registers of 16 floats; AVX2: 16 of 8). */
static void rows_portable(float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    fwd_any(2, 1, y, x, W, r0, r1, T);
}
static float dot_portable(const float *a, const float *b, int n)
{
    float y;
    fwd_tile(1, 1, DT_F32, &y, 0, a, b, 0, n);
    return y;
}
static void backward_portable(float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T)
{
    backward_any(1, 2, dx, dW, dy, x, W, T);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GEMM_X86 1
#define AVX2     __attribute__((target("avx2")))
#define AVX512   __attribute__((target("arch=x86-64-v4")))

AVX2 static void rows_avx2(float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    fwd_any(2, 1, y, x, W, r0, r1, T);
}
AVX2 static float dot_avx2(const float *a, const float *b, int n)
{
    float y;
    fwd_tile(1, 1, DT_F32, &y, 0, a, b, 0, n);
    return y;
}
AVX2 static void backward_avx2(float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T)
{
    backward_any(2, 2, dx, dW, dy, x, W, T);
}
AVX512 static void rows_avx512(float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    fwd_any(4, 3, y, x, W, r0, r1, T);
}
AVX512 static float dot_avx512(const float *a, const float *b, int n)
{
    float y;
    fwd_tile(1, 1, DT_F32, &y, 0, a, b, 0, n);
    return y;
}
AVX512 static void backward_avx512(float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T)
{
    backward_any(4, 3, dx, dW, dy, x, W, T);
}
#endif

bool gemm_isa_available(GemmIsa isa)
{
    switch (isa) {
    case GEMM_PORTABLE: return true;
#ifdef GEMM_X86
    case GEMM_AVX2: __builtin_cpu_init(); return __builtin_cpu_supports("avx2");
    case GEMM_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2");
#endif
    default: return false;
    }
}

const char *gemm_isa_name(GemmIsa isa)
{
    return isa == GEMM_AVX512 ? "avx512" : isa == GEMM_AVX2 ? "avx2" : "portable";
}

static GemmIsa g_best = GEMM_PORTABLE;

/* Picks the build once, when the program loads, before any thread can call in. */
__attribute__((constructor)) static void gemm_pick(void)
{
    g_best = gemm_isa_available(GEMM_AVX512) ? GEMM_AVX512 : gemm_isa_available(GEMM_AVX2) ? GEMM_AVX2 : GEMM_PORTABLE;
}

GemmIsa gemm_isa_best(void)
{
    return g_best;
}

void gemm_rows_isa(GemmIsa isa, float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
#ifdef GEMM_X86
    if (isa == GEMM_AVX512)
        rows_avx512(y, x, W, r0, r1, T);
    else if (isa == GEMM_AVX2)
        rows_avx2(y, x, W, r0, r1, T);
    else
#endif
        rows_portable(y, x, W, r0, r1, T);
    (void)isa;
}

float gemm_dot_isa(GemmIsa isa, const float *a, const float *b, int n)
{
#ifdef GEMM_X86
    if (isa == GEMM_AVX512) return dot_avx512(a, b, n);
    if (isa == GEMM_AVX2) return dot_avx2(a, b, n);
#endif
    (void)isa;
    return dot_portable(a, b, n);
}

void gemm_backward_isa(GemmIsa isa, float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T)
{
#ifdef GEMM_X86
    if (isa == GEMM_AVX512)
        backward_avx512(dx, dW, dy, x, W, T);
    else if (isa == GEMM_AVX2)
        backward_avx2(dx, dW, dy, x, W, T);
    else
#endif
        backward_portable(dx, dW, dy, x, W, T);
    (void)isa;
}
