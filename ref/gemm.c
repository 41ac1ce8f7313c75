/**
 * \file gemm.c
 * \brief Register-blocked matrix products for linear.h whose summation order does not depend on the CPU.
 *
 * Forward, y[t, r] = Σ_k W[r, k] x[t, k]: every output keeps LANES = 32 partial sums,
 * s_j = Σ_{k ≡ j (mod 32)} W[r, k] x[t, k] in increasing k, then adds them in a fixed pairwise tree
 * (s_j += s_{j+16}, then +8, +4, +2, +1). The 32 sums of one output span 32 / VW hardware vectors of VW
 * floats: two for AVX-512, four for AVX2, eight for portable C (gemm_body.h, included once per width).
 * A tile of TM tokens × TN weight rows keeps its outputs' sums in registers, so each widened weight
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

enum { LANES = 32 }; /* forward partial sums per output */

/* Helpers pass vectors by value; they are always inlined, so no call ever uses the vector ABI that
 * GCC warns about (-Wpsabi: a vector return differs with and without AVX). */
#pragma GCC diagnostic ignored "-Wpsabi"
#define INLINE static inline __attribute__((always_inline))

/* Keeps v in a register: without this GCC folds a reused load into every multiply that uses it, and
 * the tile's loads, not its arithmetic, set the speed. An empty asm statement, so no instruction. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define IN_REGISTER(v) (void)(v)
#endif

/* Element i of stored weights, widened (bf16 and f16 widen exactly). */
INLINE float widen(DType dt, const void *w, size_t i)
{
    if (dt == DT_F32) return ((const float *)w)[i];
    const uint16_t h = ((const uint16_t *)w)[i];
    return dt == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

/* The builds. Tile shapes are bounded by the register file: AVX-512 has 32 registers of 16 floats
 * (forward 4 × 3 tiles: 24 accumulators, each output's 32 sums in two registers), AVX2 16 of 8
 * (3 × 1: 12, each output in four), portable C is sized for 16 registers of 4 (SSE2, NEON). */
#define ISA(name) name##_portable
#define VW        4
#define FWD_TM    1
#define FWD_TN    1
#define BWD_TM    2
#define BWD_TC    2
#include "gemm_body.h"
#undef ISA
#undef VW
#undef FWD_TM
#undef FWD_TN
#undef BWD_TM
#undef BWD_TC

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GEMM_X86 1
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2")
#define ISA(name) name##_avx2
#define VW        8
#define FWD_TM    1
#define FWD_TN    3
#define BWD_TM    4
#define BWD_TC    2
#include "gemm_body.h"
#undef ISA
#undef VW
#undef FWD_TM
#undef FWD_TN
#undef BWD_TM
#undef BWD_TC
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define ISA(name) name##_avx512
#define VW        16
#define FWD_TM    4
#define FWD_TN    3
#define BWD_TM    4
#define BWD_TC    3
#include "gemm_body.h"
#undef ISA
#undef VW
#undef FWD_TM
#undef FWD_TN
#undef BWD_TM
#undef BWD_TC
#pragma GCC pop_options
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
