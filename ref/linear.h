/**
 * \file linear.h
 * \brief y = W x for weights stored as in the checkpoint (bf16, f16 or f32).
 *
 * Every projection in DeepSeek-V2 is a bias-free linear layer whose weight
 * is stored row-major as [out_features, in_features] (PyTorch's nn.Linear).
 * The reference widens weights to float32 as it reads them.
 */
#ifndef DSV2_LINEAR_H
#define DSV2_LINEAR_H

#include "dtype.h"

/** A weight matrix in checkpoint storage: rows × cols, row-major. */
typedef struct {
    const void *data; /**< first element (memory-mapped) */
    DType dtype;      /**< element type */
    int rows;         /**< out_features */
    int cols;         /**< in_features */
} Mat;

/**
 * y[t, r] = Σ_c W[r, c] · x[t, c] for t < T.
 * x: [T, W.cols], y: [T, W.rows] (float32, must not overlap).
 * Weight rows are read from memory once per call, in tiles that stay in cache while all T
 * tokens use them, so a prompt costs one pass over the weights, like a decode step.
 * Summation order is fixed (32 interleaved partial sums, then added in a
 * fixed tree) and the same for every T, so results are reproducible and a
 * token gets bit-identical projections whether it comes alone or in a chunk.
 */
void linear(float *y, const float *x, const Mat *W, int T);

/** The same for rows [r0, r1) of W only: y is [T, r1 − r0]. Used for per-head slices. */
void linear_rows(float *y, const float *x, const Mat *W, int r0, int r1, int T);

/**
 * The transposed product over a row slice: y[c] = Σ_{r<n} W[r0 + r, c] · x[r].
 * x: [n], y: [W.cols] (float32). Used for MLA's absorbed query
 * q^L = W^UK_hᵀ q^N_h, which reads head h's rows of kv_b_proj.
 */
void linear_transposed_rows(float *y, const float *x, const Mat *W, int r0, int n);

/** Fixed-order dot product of two float32 vectors of length n (32 partial sums, see linear.c). */
float dot(const float *a, const float *b, int n);

/**
 * Backward of linear() (y = W x for T tokens): dx = Wᵀ dy, written into dx [T, W.cols];
 * dW += Σ_t dy_t x_tᵀ, accumulated into the float32 array dW [W.rows, W.cols] (row-major like W).
 * dy: [T, W.rows], x: [T, W.cols] the forward input. Either output may be NULL to skip it.
 * Each dx[t, c] is summed from 0 in increasing r, each dW[r, c] onto its old value in increasing t,
 * one term at a time (register-blocked in gemm.c, but in exactly this order).
 */
void linear_backward(float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T);

#endif
