/**
 * \file cuda_bf16.h
 * \brief bfloat16 for the simulated device: `__nv_bfloat16`, `__nv_bfloat162` and their conversions.
 *
 * bfloat16 is the top half of an IEEE float: 1 sign bit, 8 exponent bits,
 * 7 mantissa bits. Widening is exact (append 16 zero bits). Narrowing rounds
 * to nearest, ties to even, exactly as the GPU's `cvt.rn.bf16.f32`: add
 * 0x7fff plus the lowest kept bit to the float's bits and truncate; every NaN
 * becomes the canonical 0x7fff.
 *
 * As in the real header, C sees only the raw storage structs; C++ gets the
 * types with conversions and float-computed arithmetic (each operation is
 * done in float and rounded once, which matches the GPU for +, −, × of two
 * bfloat16 values except when float's own rounding intervenes, see
 * sim/README.md).
 */
#ifndef DSV2_SIM_CUDA_BF16_H
#define DSV2_SIM_CUDA_BF16_H

#include <string.h>

/** Bits of one bfloat16, the only view C has. */
typedef struct __attribute__((aligned(2))) {
    unsigned short x;
} __nv_bfloat16_raw;
/** Bits of two bfloat16 (x in the low half). */
typedef struct __attribute__((aligned(4))) {
    unsigned short x, y;
} __nv_bfloat162_raw;

#ifdef __cplusplus
#include "cuda_runtime.h"

/** float → bfloat16 bits, round to nearest even, NaN → 0x7fff. */
static inline unsigned short sim_float_to_bf16_bits(float f)
{
    unsigned int u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

/** bfloat16 bits → float, exact. */
static inline float sim_bf16_bits_to_float(unsigned short b)
{
    unsigned int u = (unsigned int)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/** One bfloat16 value. */
struct __attribute__((aligned(2))) __nv_bfloat16 {
    unsigned short __x; /**< the bits (public here; the real header keeps them protected) */
    __nv_bfloat16() = default;
    /** Rounds f to nearest even. */
    __nv_bfloat16(float f) : __x(sim_float_to_bf16_bits(f)) {}
    /** Rounds through float (double rounding possible; the GPU rounds once on sm_90). */
    __nv_bfloat16(double d) : __x(sim_float_to_bf16_bits((float)d)) {}
    /** From raw bits. */
    __nv_bfloat16(const __nv_bfloat16_raw &r) : __x(r.x) {}
    /** Exact widening. */
    operator float() const { return sim_bf16_bits_to_float(__x); }
    /** The raw bits. */
    operator __nv_bfloat16_raw() const
    {
        __nv_bfloat16_raw r;
        r.x = __x;
        return r;
    }
};

/** Two bfloat16 values. */
struct __attribute__((aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x; /**< low half */
    __nv_bfloat16 y; /**< high half */
    __nv_bfloat162() = default;
    /** From two values. */
    __nv_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) : x(a), y(b) {}
    /** From raw bits. */
    __nv_bfloat162(const __nv_bfloat162_raw &r)
    {
        x.__x = r.x;
        y.__x = r.y;
    }
    /** The raw bits. */
    operator __nv_bfloat162_raw() const
    {
        __nv_bfloat162_raw r;
        r.x = x.__x;
        r.y = y.__x;
        return r;
    }
};

/** Same names without underscores, as the real header. */
typedef __nv_bfloat16 nv_bfloat16;
/** Same names without underscores, as the real header. */
typedef __nv_bfloat162 nv_bfloat162;

/** bfloat16 may travel through shuffles. */
template <> struct SimShuffleable<__nv_bfloat16> {
    static const bool value = true;
};
/** bfloat16 pairs may travel through shuffles. */
template <> struct SimShuffleable<__nv_bfloat162> {
    static const bool value = true;
};

/** float → bfloat16, round to nearest even. */
static inline __nv_bfloat16 __float2bfloat16(float f)
{
    return __nv_bfloat16(f);
}
/** float → bfloat16, round to nearest even. */
static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    return __nv_bfloat16(f);
}
/** float → bfloat16, round toward zero (truncate; NaN → 0x7fff). */
static inline __nv_bfloat16 __float2bfloat16_rz(float f)
{
    unsigned int u;
    memcpy(&u, &f, 4);
    __nv_bfloat16_raw r;
    r.x = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)0x7fffu : (unsigned short)(u >> 16);
    return __nv_bfloat16(r);
}
/** bfloat16 → float, exact. */
static inline float __bfloat162float(__nv_bfloat16 h)
{
    return sim_bf16_bits_to_float(h.__x);
}
/** The bits of h. */
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h)
{
    return h.__x;
}
/** bfloat16 with bits b. */
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b)
{
    __nv_bfloat16_raw r;
    r.x = b;
    return __nv_bfloat16(r);
}
/** Two floats → pair, each rounded to nearest even. */
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b)
{
    return __nv_bfloat162(__nv_bfloat16(a), __nv_bfloat16(b));
}
/** float2 → pair, rounded to nearest even. */
static inline __nv_bfloat162 __float22bfloat162_rn(float2 f)
{
    return __floats2bfloat162_rn(f.x, f.y);
}
/** Pair → float2, exact. */
static inline float2 __bfloat1622float2(__nv_bfloat162 h)
{
    return make_float2(float(h.x), float(h.y));
}
/** Low half as float. */
static inline float __low2float(__nv_bfloat162 h)
{
    return float(h.x);
}
/** High half as float. */
static inline float __high2float(__nv_bfloat162 h)
{
    return float(h.y);
}
/** Low half. */
static inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h)
{
    return h.x;
}
/** High half. */
static inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h)
{
    return h.y;
}
/** Pair from two halves. */
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return __nv_bfloat162(a, b);
}

/** a + b in float, rounded once. */
static inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return __nv_bfloat16(float(a) + float(b));
}
/** a − b in float, rounded once. */
static inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return __nv_bfloat16(float(a) - float(b));
}
/** a × b in float, rounded once. */
static inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return __nv_bfloat16(float(a) * float(b));
}
/** a × b + c fused in float, rounded once. */
static inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c)
{
    return __nv_bfloat16(fmaf(float(a), float(b), float(c)));
}
/** Sum. */
static inline __nv_bfloat16 operator+(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return __hadd(a, b);
}
/** Difference. */
static inline __nv_bfloat16 operator-(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return __hsub(a, b);
}
/** Product. */
static inline __nv_bfloat16 operator*(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return __hmul(a, b);
}
/** Quotient. */
static inline __nv_bfloat16 operator/(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return __nv_bfloat16(float(a) / float(b));
}
/** Negation (flips the sign bit, as the GPU). */
static inline __nv_bfloat16 operator-(__nv_bfloat16 a)
{
    return __ushort_as_bfloat16((unsigned short)(a.__x ^ 0x8000u));
}
/** a = a + b. */
static inline __nv_bfloat16 &operator+=(__nv_bfloat16 &a, __nv_bfloat16 b)
{
    return a = a + b;
}
/** a = a × b. */
static inline __nv_bfloat16 &operator*=(__nv_bfloat16 &a, __nv_bfloat16 b)
{
    return a = a * b;
}
/** Ordered comparison (false with NaN). */
static inline bool operator<(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return float(a) < float(b);
}
/** Ordered comparison (false with NaN). */
static inline bool operator>(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return float(a) > float(b);
}
/** Equality (false with NaN). */
static inline bool operator==(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return float(a) == float(b);
}
/** Inequality (true with NaN). */
static inline bool operator!=(__nv_bfloat16 a, __nv_bfloat16 b)
{
    return float(a) != float(b);
}
/** NaN test. */
static inline bool __hisnan(__nv_bfloat16 a)
{
    return (a.__x & 0x7fffu) > 0x7f80u;
}
#endif

#endif
