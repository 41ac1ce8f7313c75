/**
 * \file linear.c
 * \brief Weight-streaming matrix–vector products (see linear.h).
 */
#include "linear.h"

#include <stdint.h>

/*
 * Dot products use LANES partial sums, s[j] = Σ_k a[LANES·k + j] b[LANES·k + j], added in a
 * fixed pairwise tree at the end. The order does not depend on the compiler or the CPU, so
 * results are reproducible; and LANES independent sums let the compiler keep several vector
 * accumulators in flight, so a decode step is limited by memory, not by add latency.
 */
enum { LANES = 32 };

/* Σ s[0..LANES) as a balanced pairwise tree (fixed order). */
static inline float sum_lanes(float *s)
{
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) s[j] += s[j + w];
    return s[0];
}

/* Built three times by GCC, for x86-64-v4 (AVX-512: 32 vector registers, enough for dot42_bf16's
 * eight accumulator sets), for AVX2 and for baseline x86-64, and picked at load time; -std=c11 keeps
 * the compiler from fusing multiply-adds, so every build computes bit-identical sums. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

// ANCHOR: dot
VECTOR_CLONES
float dot(const float *a, const float *b, int n)
{
    float s[LANES] = { 0 };
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) s[j] += a[i + j] * b[i + j];
    for (int j = 0; i < n; i++, j++) s[j] += a[i] * b[i];
    return sum_lanes(s);
}
// ANCHOR_END: dot

/* Dot product of a stored row (any dtype) with a float32 vector, widening on
 * the fly. bf16 and f16 widen exactly, so this equals dot() on a widened copy
 * bit for bit. */
VECTOR_CLONES
static float dot_stored(const void *w, DType t, size_t off, const float *x, int n)
{
    if (t == DT_F32) return dot((const float *)w + off, x, n);
    const uint16_t *h = (const uint16_t *)w + off;
    float s[LANES] = { 0 };
    int i = 0;
    if (t == DT_BF16) {
        for (; i + LANES <= n; i += LANES)
            for (int j = 0; j < LANES; j++) s[j] += bf16_to_f32(h[i + j]) * x[i + j];
        for (int j = 0; i < n; i++, j++) s[j] += bf16_to_f32(h[i]) * x[i];
    } else {
        for (; i + LANES <= n; i += LANES)
            for (int j = 0; j < LANES; j++) s[j] += f16_to_f32(h[i + j]) * x[i + j];
        for (int j = 0; i < n; i++, j++) s[j] += f16_to_f32(h[i]) * x[i];
    }
    return sum_lanes(s);
}

/* Two dot products of one bf16 row with two vectors, in one pass over the row. Each sum keeps
 * exactly dot_stored()'s lane order, so the results are bit-identical to two separate calls;
 * sharing the widened row between two tokens halves the work per multiply-add in prompts. */
VECTOR_CLONES
static void dot2_bf16(float *y0, float *y1, const uint16_t *h, const float *x0, const float *x1, int n)
{
    float s0[LANES] = { 0 }, s1[LANES] = { 0 };
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            const float w = bf16_to_f32(h[i + j]);
            s0[j] += w * x0[i + j];
            s1[j] += w * x1[i + j];
        }
    for (int j = 0; i < n; i++, j++) {
        const float w = bf16_to_f32(h[i]);
        s0[j] += w * x0[i];
        s1[j] += w * x1[i];
    }
    *y0 = sum_lanes(s0);
    *y1 = sum_lanes(s1);
}

/* A 4 × 2 block: rows h, h + n, h + 2n, h + 3n (bf16) against tokens x0, x1; y[t][k] at y + t·ys + k.
 * Each of the eight sums keeps dot_stored()'s lane order. Every widened weight serves two tokens and
 * every loaded activation four rows, so the activations (which stream from L2 when a chunk's tokens
 * do not fit in L1) are read a quarter as often as by dot2_bf16. */
VECTOR_CLONES
static void dot42_bf16(float *y, size_t ys, const uint16_t *h, const float *x0, const float *x1, int n)
{
    float s0[4][LANES] = { { 0 } }, s1[4][LANES] = { { 0 } }; /* s_t[row][lane] */
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            const float a0 = x0[i + j], a1 = x1[i + j];
            for (int k = 0; k < 4; k++) {
                const float w = bf16_to_f32(h[(size_t)k * n + i + j]);
                s0[k][j] += w * a0;
                s1[k][j] += w * a1;
            }
        }
    for (int j = 0; i < n; i++, j++)
        for (int k = 0; k < 4; k++) {
            const float w = bf16_to_f32(h[(size_t)k * n + i]);
            s0[k][j] += w * x0[i];
            s1[k][j] += w * x1[i];
        }
    for (int k = 0; k < 4; k++) {
        y[k] = sum_lanes(s0[k]);
        y[ys + k] = sum_lanes(s1[k]);
    }
}

// ANCHOR: linear_rows
void linear_rows(float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    const int n = W->cols, out = r1 - r0;
    const uint16_t *h = (const uint16_t *)W->data;
    /* row-outer, token-inner: each weight row (or block of four bf16 rows) is read from memory once and
     * stays in L1 while every token of the chunk uses it; all paths sum in dot_stored()'s order,
     * so the blocking changes the speed, never the result */
    int r = 0;
    if (W->dtype == DT_BF16 && T >= 2)
        for (; r + 4 <= out; r += 4) {
            const size_t row = (size_t)(r0 + r) * n;
            int t = 0;
            for (; t + 2 <= T; t += 2)
                dot42_bf16(&y[(size_t)t * out + r], (size_t)out, h + row, x + (size_t)t * n, x + (size_t)(t + 1) * n,
                           n);
            for (; t < T; t++)
                for (int k = 0; k < 4; k++)
                    y[(size_t)t * out + r + k] =
                        dot_stored(W->data, DT_BF16, row + (size_t)k * n, x + (size_t)t * n, n);
        }
    for (; r < out; r++) {
        const size_t row = (size_t)(r0 + r) * n;
        int t = 0;
        if (W->dtype == DT_BF16)
            for (; t + 2 <= T; t += 2)
                dot2_bf16(&y[(size_t)t * out + r], &y[(size_t)(t + 1) * out + r], h + row, x + (size_t)t * n,
                          x + (size_t)(t + 1) * n, n);
        for (; t < T; t++) y[(size_t)t * out + r] = dot_stored(W->data, W->dtype, row, x + (size_t)t * n, n);
    }
}
// ANCHOR_END: linear_rows

void linear(float *y, const float *x, const Mat *W, int T)
{
    linear_rows(y, x, W, 0, W->rows, T);
}

// ANCHOR: linear_transposed_rows
void linear_transposed_rows(float *y, const float *x, const Mat *W, int r0, int n)
{
    const int cols = W->cols;
    for (int c = 0; c < cols; c++) y[c] = 0;
    for (int r = 0; r < n; r++) {
        const size_t row = (size_t)(r0 + r) * cols;
        const float xr = x[r];
        if (W->dtype == DT_F32) {
            const float *w = (const float *)W->data + row;
            for (int c = 0; c < cols; c++) y[c] += w[c] * xr;
        } else if (W->dtype == DT_BF16) {
            const uint16_t *w = (const uint16_t *)W->data + row;
            for (int c = 0; c < cols; c++) y[c] += bf16_to_f32(w[c]) * xr;
        } else {
            const uint16_t *w = (const uint16_t *)W->data + row;
            for (int c = 0; c < cols; c++) y[c] += f16_to_f32(w[c]) * xr;
        }
    }
}
// ANCHOR_END: linear_transposed_rows

/* W[r, c] of a stored matrix, widened to float32. */
static float mat_at(const Mat *W, int r, int c)
{
    const size_t i = (size_t)r * W->cols + c;
    if (W->dtype == DT_F32) return ((const float *)W->data)[i];
    const uint16_t h = ((const uint16_t *)W->data)[i];
    return W->dtype == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// ANCHOR: linear_backward
void linear_backward(float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T)
{
    const int rows = W->rows, cols = W->cols;
    const float *Wf = W->dtype == DT_F32 ? (const float *)W->data : NULL; /* training's weights */
    if (dx)                                                               /* dx_t = Wᵀ dy_t: [T, cols] */
        for (int t = 0; t < T; t++) {
            float *dxt = dx + (size_t)t * cols;
            const float *dyt = dy + (size_t)t * rows;
            for (int c = 0; c < cols; c++) dxt[c] = 0;
            for (int r = 0; r < rows; r++) {
                const float g = dyt[r];
                if (Wf)
                    for (int c = 0; c < cols; c++) dxt[c] += g * Wf[(size_t)r * cols + c];
                else
                    for (int c = 0; c < cols; c++) dxt[c] += g * mat_at(W, r, c);
            }
        }
    if (dW) /* dW += Σ_t dy_t x_tᵀ: [rows, cols] */
        for (int r = 0; r < rows; r++)
            for (int t = 0; t < T; t++) {
                const float g = dy[(size_t)t * rows + r];
                const float *xt = x + (size_t)t * cols;
                float *dWr = dW + (size_t)r * cols;
                for (int c = 0; c < cols; c++) dWr[c] += g * xt[c];
            }
}
// ANCHOR_END: linear_backward
