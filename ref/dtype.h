/**
 * \file dtype.h
 * \brief Element types of checkpoint tensors and their widening to float32.
 *
 * Released DeepSeek-V2 checkpoints store everything in bfloat16. The
 * reference computes in float32 and widens each weight as it is used, so a
 * memory-mapped 15.7B-parameter checkpoint never needs a float32 copy.
 */
#ifndef DSV2_DTYPE_H
#define DSV2_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/** Element types this project reads. */
typedef enum { DT_BF16, DT_F16, DT_F32 } DType;

/** Bytes per element of t. */
static inline size_t dtype_size(DType t)
{
    return t == DT_F32 ? 4 : 2;
}

/** The safetensors name of t ("BF16", "F16", "F32"). */
static inline const char *dtype_name(DType t)
{
    return t == DT_BF16 ? "BF16" : t == DT_F16 ? "F16" : "F32";
}

// ANCHOR: bf16_to_f32
/** bfloat16 → float32: the 16 bits are the top half of a float32 (exact). */
static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// ANCHOR_END: bf16_to_f32

/** float32 → bfloat16 with round-to-nearest-even; NaN stays a (quiet) NaN. */
static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/** IEEE half → float32 (exact, subnormals included). */
static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else { /* subnormal: normalise the mantissa */
        exp = 113;
        while (!(man & 0x400)) {
            man <<= 1;
            exp--;
        }
        u = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/** Widens n elements of type t starting at element i of src into dst. */
static inline void dtype_widen(float *dst, const void *src, DType t, size_t i, size_t n)
{
    if (t == DT_F32) {
        memcpy(dst, (const float *)src + i, n * 4);
    } else if (t == DT_BF16) {
        const uint16_t *s = (const uint16_t *)src + i;
        for (size_t k = 0; k < n; k++) dst[k] = bf16_to_f32(s[k]);
    } else {
        const uint16_t *s = (const uint16_t *)src + i;
        for (size_t k = 0; k < n; k++) dst[k] = f16_to_f32(s[k]);
    }
}

#endif
