/**
 * \file gemm.h
 * \brief The register-blocked kernels behind linear.h, one build per instruction set.
 *
 * linear.h promises fixed summation orders; this header exposes the kernels that keep them, built
 * three times (AVX-512, AVX2, portable C) and picked at run time, so that a test can call every
 * build on the same inputs and check that the results are bit-identical.
 */
#ifndef DSV2_GEMM_H
#define DSV2_GEMM_H

#include "linear.h"

#include <stdbool.h>

/** An instruction-set build of the kernels. */
typedef enum {
    GEMM_PORTABLE, /**< plain C with GCC vector types, any CPU */
    GEMM_AVX2,     /**< x86-64 with AVX2 */
    GEMM_AVX512,   /**< x86-64-v4 (AVX-512 F/BW/DQ/VL) */
    GEMM_ISA_COUNT
} GemmIsa;

/** Whether this CPU (and this build) can run isa. */
bool gemm_isa_available(GemmIsa isa);

/** The build linear.h's functions use on this CPU: the widest available. */
GemmIsa gemm_isa_best(void);

/** A short name for isa ("avx512", "avx2", "portable"). */
const char *gemm_isa_name(GemmIsa isa);

/** linear_rows() with the kernels of isa (which must be available). */
void gemm_rows_isa(GemmIsa isa, float *y, const float *x, const Mat *W, int r0, int r1, int T);

/** dot() with the kernels of isa. */
float gemm_dot_isa(GemmIsa isa, const float *a, const float *b, int n);

/** linear_backward() with the kernels of isa. */
void gemm_backward_isa(GemmIsa isa, float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T);

#endif
