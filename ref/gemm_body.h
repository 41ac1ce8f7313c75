/**
 * \file gemm_body.h
 * \brief The kernels of gemm.c for one vector width, included once per instruction set.
 *
 * gemm.c includes this file three times, each time defining VW (floats per hardware vector: 16 for
 * AVX-512, 8 for AVX2, 4 for portable C), ISA(name) (a suffix for every name defined here) and the tile
 * shapes FWD_TM × FWD_TN and BWD_TM × BWD_TC, under a matching `#pragma GCC target`. Every type is a
 * whole hardware vector, so the compiler keeps the tiles' accumulators in registers.
 *
 * The summation orders are gemm.c's: forward, 32 partial sums per output (lane j takes k ≡ j mod 32,
 * in increasing k; one output's sums span 32 / VW vectors), added in the tree s_j += s_{j+16}, +8, +4,
 * +2, +1; backward, one output per lane, summed term by term in increasing r (dx) or t (dW).
 */

/* The kernels are internal to gemm.c: Doxygen documents the file, not each width's copy. */
/** \cond GEMM_INTERNAL */

#define P (LANES / VW) /* vectors per output's partial sums */

typedef float ISA(vec) __attribute__((vector_size(VW * sizeof(float))));
typedef uint16_t ISA(vech) __attribute__((vector_size(VW * sizeof(uint16_t))));
typedef uint32_t ISA(vecu) __attribute__((vector_size(VW * sizeof(uint32_t))));
typedef float ISA(v8) __attribute__((vector_size(8 * sizeof(float))));
typedef float ISA(v4) __attribute__((vector_size(4 * sizeof(float))));
#define V ISA(vec)

INLINE V ISA(load)(const float *p)
{
    V v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* VW stored weights from element i, widened: bf16 by a 16-bit shift of every lane. */
INLINE V ISA(load_w)(DType dt, const void *w, size_t i)
{
    if (dt == DT_F32) return ISA(load)((const float *)w + i);
    if (dt == DT_BF16) {
#if VW == 16 /* one zero-extending load and one shift; GCC splits the generic conversion in halves */
        return (V)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)((const uint16_t *)w + i))),
                                    16);
#elif VW == 8
        return (V)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)((const uint16_t *)w + i))),
                                    16);
#else
        ISA(vech) h;
        memcpy(&h, (const uint16_t *)w + i, sizeof h);
        return (V)(__builtin_convertvector(h, ISA(vecu)) << 16);
#endif
    }
    float b[VW];
    for (int j = 0; j < VW; j++) b[j] = widen(dt, w, i + j);
    return ISA(load)(b);
}

/* The last m < VW elements from i. Missing lanes get x = 0 and w = −0, whose product −0 leaves any
 * partial sum unchanged bit for bit (s + (−0) = s, signed zeros included). AVX-512 and AVX2 use
 * masked loads; other widths and types go through a small buffer. */
INLINE V ISA(tail_x)(const float *x, int m)
{
#if VW == 16
    return (V)_mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1), x);
#elif VW == 8
    return (V)_mm256_maskload_ps(x,
                                 _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
#else
    float a[VW];
    for (int j = 0; j < VW; j++) a[j] = j < m ? x[j] : 0.0f;
    return ISA(load)(a);
#endif
}

INLINE V ISA(tail_w)(DType dt, const void *w, size_t i, int m)
{
#if VW == 16
    const __mmask16 k = (__mmask16)((1u << m) - 1);
    if (dt == DT_F32) return (V)_mm512_mask_loadu_ps(_mm512_set1_ps(-0.0f), k, (const float *)w + i);
    if (dt == DT_BF16) {
        const __m512i u = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, (const uint16_t *)w + i));
        return (V)_mm512_mask_blend_ps(k, _mm512_set1_ps(-0.0f), _mm512_castsi512_ps(_mm512_slli_epi32(u, 16)));
    }
#elif VW == 8
    if (dt == DT_F32) {
        const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        return (V)_mm256_blendv_ps(_mm256_set1_ps(-0.0f), _mm256_maskload_ps((const float *)w + i, k),
                                   _mm256_castsi256_ps(k));
    }
#endif
    float b[VW];
    for (int j = 0; j < VW; j++) b[j] = j < m ? widen(dt, w, i + j) : -0.0f;
    return ISA(load)(b);
}

/* The tree over one output's sums, acc[0..P): whole vectors first (s_j += s_{j+w} for w ≥ VW), then
 * within the vector, lane by lane. */
INLINE float ISA(sum_one)(V *acc)
{
    for (int w = P / 2; w > 0; w /= 2)
        for (int p = 0; p < w; p++) acc[p] += acc[p + w];
#if VW == 16
    const ISA(v8) h = __builtin_shufflevector(acc[0], acc[0], 0, 1, 2, 3, 4, 5, 6, 7) +
                      __builtin_shufflevector(acc[0], acc[0], 8, 9, 10, 11, 12, 13, 14, 15);
    const ISA(v4) b = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
#elif VW == 8
    const ISA(v4) b =
        __builtin_shufflevector(acc[0], acc[0], 0, 1, 2, 3) + __builtin_shufflevector(acc[0], acc[0], 4, 5, 6, 7);
#else
    const V b = acc[0];
#endif
    return (b[0] + b[2]) + (b[1] + b[3]);
}

#if VW == 16
/* The in-vector levels of the tree (+8, +4, +2, +1) for n ≤ 16 outputs at once, from a[i], output i's
 * sums after the +16 level: level 8 pairs outputs (2p, 2p+1) in one vector, level 4 puts four outputs
 * in one, level 2 eight, level 1 sixteen, so each add serves several outputs. out[i] is bit-identical
 * to the tree of output i alone (same pairs added, same order) at a third of the shuffles and adds.
 * Lane i of the result is output i. */
INLINE V ISA(sum_tree)(const int n, const V *a)
{
    V u[8], v[4], x[2];
    for (int p = 0; p < (n + 1) / 2; p++) {
        const V e = a[2 * p], f = a[2 * p + 1 < n ? 2 * p + 1 : 2 * p];
        u[p] = __builtin_shufflevector(e, f, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               __builtin_shufflevector(e, f, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
    for (int q = 0; q < (n + 3) / 4; q++) {
        const V e = u[2 * q], f = u[2 * q + 1 < (n + 1) / 2 ? 2 * q + 1 : 2 * q];
        v[q] = __builtin_shufflevector(e, f, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
               __builtin_shufflevector(e, f, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    }
    for (int m = 0; m < (n + 7) / 8; m++) {
        const V e = v[2 * m], f = v[2 * m + 1 < (n + 3) / 4 ? 2 * m + 1 : 2 * m];
        x[m] = __builtin_shufflevector(e, f, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
               __builtin_shufflevector(e, f, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    }
    const V e = x[0], f = n > 8 ? x[1] : x[0];
    return __builtin_shufflevector(e, f, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           __builtin_shufflevector(e, f, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
#endif

/* y[t·ys + r] = the tree over acc[t][r] for a TM × TN tile. */
INLINE void ISA(sum_tile)(const int TM, const int TN, V acc[FWD_TM][FWD_TN][P], float *y, size_t ys)
{
#if VW == 16
    if (TM * TN > 1) {
        V a[FWD_TM * FWD_TN];
        for (int t = 0; t < TM; t++)
            for (int r = 0; r < TN; r++) {
                V *s = acc[t][r];
                for (int w = P / 2; w > 0; w /= 2)
                    for (int p = 0; p < w; p++) s[p] += s[p + w];
                a[t * TN + r] = s[0];
            }
        const __m512 d = (__m512)ISA(sum_tree)(TM * TN, a);
        for (int t = 0; t < TM; t++) /* lanes t·TN .. t·TN + TN − 1 to 0 .., then TN of them to memory */
            _mm512_mask_storeu_ps(y + (size_t)t * ys, (__mmask16)((1u << TN) - 1),
                                  _mm512_permutexvar_ps(_mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                                           10, 11, 12, 13, 14, 15),
                                                                         _mm512_set1_epi32(t * TN)),
                                                        d));
        return;
    }
#endif
    for (int t = 0; t < TM; t++)
        for (int r = 0; r < TN; r++) y[(size_t)t * ys + r] = ISA(sum_one)(acc[t][r]);
}

// ANCHOR: fwd_tile
/* One tile: y[t·ys + r] for t < TM, r < TN, from tokens x + t·n and weight rows starting at element
 * w0 + r·n. TM and TN are constants where this is inlined: the loops unroll and the TM·TN·P
 * accumulators live in registers; each widened weight vector serves TM tokens, each activation TN rows. */
INLINE void ISA(fwd_tile)(const int TM, const int TN, DType dt, float *y, size_t ys, const float *x, const void *w,
                          size_t w0, int n)
{
    V acc[FWD_TM][FWD_TN][P];
    for (int t = 0; t < TM; t++)
        for (int r = 0; r < TN; r++)
            for (int p = 0; p < P; p++) acc[t][r][p] = (V){ 0 };
    int k = 0;
    for (; k + LANES <= n; k += LANES) /* lane p·VW + j of the 32 takes k + p·VW + j */
        for (int p = 0; p < P; p++) {
            V wv[FWD_TN];
            for (int r = 0; r < TN; r++) wv[r] = ISA(load_w)(dt, w, w0 + (size_t)r * n + k + p * VW);
            for (int t = 0; t < TM; t++) {
                V xv = ISA(load)(x + (size_t)t * n + k + p * VW);
                IN_REGISTER(xv);
                for (int r = 0; r < TN; r++) acc[t][r][p] += wv[r] * xv;
            }
        }
    for (int p = 0; k < n; p++, k += VW) { /* the tail: whole vectors, then one padded vector */
        const int m = n - k < VW ? n - k : VW;
        V wv[FWD_TN];
        for (int r = 0; r < TN; r++)
            wv[r] =
                m == VW ? ISA(load_w)(dt, w, w0 + (size_t)r * n + k) : ISA(tail_w)(dt, w, w0 + (size_t)r * n + k, m);
        for (int t = 0; t < TM; t++) {
            V xv = m == VW ? ISA(load)(x + (size_t)t * n + k) : ISA(tail_x)(x + (size_t)t * n + k, m);
            IN_REGISTER(xv);
            for (int r = 0; r < TN; r++) acc[t][r][p] += wv[r] * xv;
        }
    }
    ISA(sum_tile)(TM, TN, acc, y, ys);
}
// ANCHOR_END: fwd_tile

// ANCHOR: fwd_rows
/* Rows [r0, r1) against T tokens in tiles: row tiles outside, so a tile of weight rows is read from
 * memory once and reused from cache by every token; leftovers in TM × 1 and 1 × TN tiles. A single
 * token goes row by row: the prefetcher follows one sequential stream best (measured: three rows in
 * flight made a 400 MB bf16 product 1.6x slower). */
INLINE void ISA(fwd_rows)(DType dt, float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    const int n = W->cols, out = r1 - r0, TM = FWD_TM, TN = FWD_TN;
    int r = 0;
    if (T == 1) { /* a decode step streams W from memory: one row at a time keeps one sequential stream */
        for (; r < out; r++) ISA(fwd_tile)(1, 1, dt, y + r, 0, x, W->data, (size_t)(r0 + r) * n, n);
        return;
    }
    for (; r + TN <= out; r += TN) {
        const size_t w0 = (size_t)(r0 + r) * n;
        int t = 0;
        for (; t + TM <= T; t += TM)
            ISA(fwd_tile)(TM, TN, dt, y + (size_t)t * out + r, out, x + (size_t)t * n, W->data, w0, n);
        for (; t < T; t++) ISA(fwd_tile)(1, TN, dt, y + (size_t)t * out + r, out, x + (size_t)t * n, W->data, w0, n);
    }
    for (; r < out; r++) {
        const size_t w0 = (size_t)(r0 + r) * n;
        int t = 0;
        for (; t + TM <= T; t += TM)
            ISA(fwd_tile)(TM, 1, dt, y + (size_t)t * out + r, out, x + (size_t)t * n, W->data, w0, n);
        for (; t < T; t++) ISA(fwd_tile)(1, 1, dt, y + (size_t)t * out + r, out, x + (size_t)t * n, W->data, w0, n);
    }
}
// ANCHOR_END: fwd_rows

static void ISA(rows)(float *y, const float *x, const Mat *W, int r0, int r1, int T)
{
    if (W->dtype == DT_BF16)
        ISA(fwd_rows)(DT_BF16, y, x, W, r0, r1, T);
    else if (W->dtype == DT_F32)
        ISA(fwd_rows)(DT_F32, y, x, W, r0, r1, T);
    else
        ISA(fwd_rows)(DT_F16, y, x, W, r0, r1, T);
}

static float ISA(dot)(const float *a, const float *b, int n)
{
    float y;
    ISA(fwd_tile)(1, 1, DT_F32, &y, 0, a, b, 0, n);
    return y;
}

/* ---- backward: one output per lane -------------------------------------------------------- */

/* dx[t, c0 + VW·c + j] for t < TM, c < TC: Σ_r dy[t, r] W[r, ·] from 0, in increasing r. */
INLINE void ISA(dx_tile)(const int TM, const int TC, DType dt, float *dx, const float *dy, const void *w, int rows,
                         int cols, int c0)
{
    V acc[BWD_TM][BWD_TC];
    for (int t = 0; t < TM; t++)
        for (int c = 0; c < TC; c++) acc[t][c] = (V){ 0 };
    for (int r = 0; r < rows; r++) {
        V wv[BWD_TC];
        for (int c = 0; c < TC; c++) {
            wv[c] = ISA(load_w)(dt, w, (size_t)r * cols + c0 + c * VW);
            IN_REGISTER(wv[c]);
        }
        for (int t = 0; t < TM; t++) {
            const V g = (V){ 0 } + dy[(size_t)t * rows + r];
            for (int c = 0; c < TC; c++) acc[t][c] += g * wv[c];
        }
    }
    for (int t = 0; t < TM; t++)
        for (int c = 0; c < TC; c++) memcpy(dx + (size_t)t * cols + c0 + c * VW, &acc[t][c], sizeof(V));
}

/* dx = Wᵀ dy for TM tokens: tiles of TC vectors, then single vectors, then single columns. */
INLINE void ISA(dx_tokens)(const int TM, DType dt, float *dx, const float *dy, const void *w, int rows, int cols)
{
    const int TC = BWD_TC;
    int c = 0;
    for (; c + TC * VW <= cols; c += TC * VW) ISA(dx_tile)(TM, TC, dt, dx, dy, w, rows, cols, c);
    for (; c + VW <= cols; c += VW) ISA(dx_tile)(TM, 1, dt, dx, dy, w, rows, cols, c);
    for (; c < cols; c++)
        for (int t = 0; t < TM; t++) {
            float s = 0;
            for (int r = 0; r < rows; r++) s += dy[(size_t)t * rows + r] * widen(dt, w, (size_t)r * cols + c);
            dx[(size_t)t * cols + c] = s;
        }
}

INLINE void ISA(dx_all)(DType dt, float *dx, const float *dy, const void *w, int rows, int cols, int T)
{
    int t = 0;
    for (; t + BWD_TM <= T; t += BWD_TM)
        ISA(dx_tokens)(BWD_TM, dt, dx + (size_t)t * cols, dy + (size_t)t * rows, w, rows, cols);
    for (; t < T; t++) ISA(dx_tokens)(1, dt, dx + (size_t)t * cols, dy + (size_t)t * rows, w, rows, cols);
}

// ANCHOR: dw_tile
/* dW[r0 + i, c0 + VW·c + j] += Σ_t dy[t, r0 + i] x[t, ·] for i < TR, c < TC, in increasing t. */
INLINE void ISA(dw_tile)(const int TR, const int TC, float *dW, const float *dy, const float *x, int rows, int cols,
                         int T, int r0, int c0)
{
    V acc[BWD_TM][BWD_TC];
    for (int i = 0; i < TR; i++)
        for (int c = 0; c < TC; c++) acc[i][c] = ISA(load)(dW + (size_t)(r0 + i) * cols + c0 + c * VW);
    for (int t = 0; t < T; t++) {
        V xv[BWD_TC];
        for (int c = 0; c < TC; c++) {
            xv[c] = ISA(load)(x + (size_t)t * cols + c0 + c * VW);
            IN_REGISTER(xv[c]);
        }
        for (int i = 0; i < TR; i++) {
            const V g = (V){ 0 } + dy[(size_t)t * rows + r0 + i];
            for (int c = 0; c < TC; c++) acc[i][c] += g * xv[c];
        }
    }
    for (int i = 0; i < TR; i++)
        for (int c = 0; c < TC; c++) memcpy(dW + (size_t)(r0 + i) * cols + c0 + c * VW, &acc[i][c], sizeof(V));
}
// ANCHOR_END: dw_tile

INLINE void ISA(dw_rows)(const int TR, float *dW, const float *dy, const float *x, int rows, int cols, int T, int r0)
{
    const int TC = BWD_TC;
    int c = 0;
    for (; c + TC * VW <= cols; c += TC * VW) ISA(dw_tile)(TR, TC, dW, dy, x, rows, cols, T, r0, c);
    for (; c + VW <= cols; c += VW) ISA(dw_tile)(TR, 1, dW, dy, x, rows, cols, T, r0, c);
    for (; c < cols; c++)
        for (int i = 0; i < TR; i++) {
            float s = dW[(size_t)(r0 + i) * cols + c];
            for (int t = 0; t < T; t++) s += dy[(size_t)t * rows + r0 + i] * x[(size_t)t * cols + c];
            dW[(size_t)(r0 + i) * cols + c] = s;
        }
}

static void ISA(backward)(float *dx, float *dW, const float *dy, const float *x, const Mat *W, int T)
{
    const int rows = W->rows, cols = W->cols;
    if (dx) {
        if (W->dtype == DT_F32)
            ISA(dx_all)(DT_F32, dx, dy, W->data, rows, cols, T);
        else if (W->dtype == DT_BF16)
            ISA(dx_all)(DT_BF16, dx, dy, W->data, rows, cols, T);
        else
            ISA(dx_all)(DT_F16, dx, dy, W->data, rows, cols, T);
    }
    if (dW) {
        int r = 0;
        for (; r + BWD_TM <= rows; r += BWD_TM) ISA(dw_rows)(BWD_TM, dW, dy, x, rows, cols, T, r);
        for (; r < rows; r++) ISA(dw_rows)(1, dW, dy, x, rows, cols, T, r);
    }
}

#undef V
#undef P

/** \endcond */
