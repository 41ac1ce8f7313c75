/**
 * \file linear.c
 * \brief Weight-streaming matrix–vector products (see linear.h).
 */
#include "linear.h"

#include <stdint.h>

/*
 * The reduction uses 8 partial sums s[j] = Σ_k a[8k + j] b[8k + j], added
 * pairwise at the end. This order does not depend on the compiler, yet it
 * lets the compiler keep the 8 sums in vector registers, so a decode step
 * runs at close to memory speed without -ffast-math.
 */
float dot(const float *a, const float *b, int n)
{
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (int j = 0; i < n; i++, j++) s[j] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/* Dot product of a stored row (any dtype) with a float32 vector, widening on
 * the fly. bf16 and f16 widen exactly, so this equals dot() on a widened copy
 * bit for bit: the decode and prompt paths below give identical results. */
static float dot_stored(const void *w, DType t, size_t off, const float *x, int n)
{
    if (t == DT_F32) return dot((const float *)w + off, x, n);
    const uint16_t *h = (const uint16_t *)w + off;
    float s[8] = {0};
    int i = 0;
    if (t == DT_BF16) {
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) s[j] += bf16_to_f32(h[i + j]) * x[i + j];
        for (int j = 0; i < n; i++, j++) s[j] += bf16_to_f32(h[i]) * x[i];
    } else {
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) s[j] += f16_to_f32(h[i + j]) * x[i + j];
        for (int j = 0; i < n; i++, j++) s[j] += f16_to_f32(h[i]) * x[i];
    }
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/* Floats of widened weights the prompt path keeps per thread (1 MiB, L2-sized). */
enum { ROW_BUF = 1 << 18 };

void linear_rows(float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    const int n = W->cols, out = r1 - r0;
    if (T == 1 || W->dtype == DT_F32 || n > ROW_BUF) {
        /* decode: one pass over the weights, widening in registers */
        for (int r = 0; r < out; r++)
            for (int t = 0; t < T; t++)
                y[(size_t)t * out + r] =
                    dot_stored(W->data, W->dtype, (size_t)(r0 + r) * n, x + (size_t)t * n, n);
        return;
    }
    /* prompt: widen a block of rows once and reuse it for every token */
    static _Thread_local float buf[ROW_BUF];
    const int block = ROW_BUF / n;
    for (int r = 0; r < out; r += block) {
        const int nb = out - r < block ? out - r : block;
        dtype_widen(buf, W->data, W->dtype, (size_t)(r0 + r) * n, (size_t)nb * n);
        for (int t = 0; t < T; t++)
            for (int b = 0; b < nb; b++)
                y[(size_t)t * out + r + b] = dot(buf + (size_t)b * n, x + (size_t)t * n, n);
    }
}

void linear(float *y, const float *x, const Mat *W, int T) { linear_rows(y, x, W, 0, W->rows, T); }

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
