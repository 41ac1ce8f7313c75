/**
 * \file linear.c
 * \brief Weight-streaming matrix–vector products (see linear.h).
 */
#include "linear.h"

#include "gemm.h"

#include <stdint.h>

/*
 * The products themselves live in gemm.c: register-blocked kernels built for AVX-512, AVX2 and
 * portable C, picked at load time, all summing every output in the order linear.h states, so every
 * build gives bit-identical results.
 */

// ANCHOR: dot
float dot(const float *a, const float *b, int n)
{
    return gemm_dot_isa(gemm_isa_best(), a, b, n);
}
// ANCHOR_END: dot

// ANCHOR: linear_rows
void linear_rows(float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    gemm_rows_isa(gemm_isa_best(), y, x, W, r0, r1, T);
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

// ANCHOR: linear_backward
void linear_backward(float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T)
{
    gemm_backward_isa(gemm_isa_best(), dx, dW, dy, x, W, T);
}
// ANCHOR_END: linear_backward
