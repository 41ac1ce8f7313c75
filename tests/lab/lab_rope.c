/**
 * \file lab_rope.c
 * \brief Kernel lab, component `rope`: lab_rope against ref/rope.c's rope_rotate on every slice.
 *
 * The harness allocates whole rows — T rows of row_stride floats, the rotated
 * slices at offset + h·head_stride in each, everything else left as it was —
 * and passes x = rows + offset, as the fast path does for q^R (offset d_n)
 * and for k^R inside a latent row (offset d_c, heads 1). The reference
 * rotates each slice with rope_rotate() at position pos0 + t; the frequencies
 * come from rope_init() (YaRN for the V2-Lite and V2 shapes, whose positions
 * reach 10⁵, where φ is large). x uniform in [-2, 2).
 *
 * Shapes: a single pair; odd widths and strides (d_r 6 and 2, 3 and 5
 * heads, rows with padding after the last head); k^R inside a cache row
 * (heads 1); V2-Lite's q^R (16 heads, d_n 128, d_r 64) and k^R; V2's q^R
 * (128 heads) at positions near 10⁵. Tolerance, element-wise: |got − ref| ≤
 * 1e-5·(1 + |ref|) — one rotation, but cos and sin of φ up to 10⁵ radians
 * differ between libm and fast intrinsics by about 1e-6 relative; elements
 * outside the slices must not change at all.
 */
#include "contract.h"
#include "lab.h"
#include "rope.h"

#include <stdlib.h>
#include <string.h>

/** One shape's device buffers, for the timed runs. */
typedef struct {
    float *x, *inv_freq, cos_sin_scale;
    int dim, T, heads, row_stride, head_stride, pos0;
} RopeRun;

static cudaError_t run_rope(void *ctx, bool project)
{
    const RopeRun *r = ctx;
    return (project ? rope_forward_v2 : lab_rope)(r->x, r->inv_freq, r->cos_sin_scale, r->dim, r->T, r->heads,
                                                  r->row_stride, r->head_stride, r->pos0, 0);
}

/* The first element of rows [T, row_stride] that lies outside every slice and changed, or -1. */
static long changed_outside(const float *got, const float *before, int T, int row_stride, int offset, int heads,
                            int head_stride, int dim)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < row_stride; i++) {
            const int rel = i - offset;
            const bool inside = rel >= 0 && rel / head_stride < heads && rel % head_stride < dim;
            const size_t at = (size_t)t * row_stride + i;
            if (!inside && memcmp(&got[at], &before[at], sizeof(float)) != 0) return (long)at;
        }
    return -1;
}

static void shape(const char *kind, int dim, bool yarn, int T, int heads, int offset, int head_stride, int row_stride,
                  int pos0)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.qk_rope_head_dim = dim;
    c.qk_nope_head_dim = 128;
    c.rope_theta = 10000.0f;
    c.rope_yarn = yarn;
    c.rope_factor = 40.0f;
    c.rope_original_max_position = 4096;
    c.rope_beta_fast = 32.0f;
    c.rope_beta_slow = 1.0f;
    c.rope_mscale = 0.707f;
    c.rope_mscale_all_dim = 0.707f;
    Rope rope;
    rope_init(&rope, &c);

    const size_t N = (size_t)T * row_stride;
    float *before = malloc(sizeof(float) * N), *want = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    test_rng_fill(&lab_rng, before, N, -2.0f, 2.0f);
    memcpy(want, before, sizeof(float) * N);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++)
            rope_rotate(want + (size_t)t * row_stride + offset + (size_t)h * head_stride, &rope, pos0 + t);

    lab_shape_begin("%-4s d_r %2d, T %d, heads %3d, head_stride %3d, row_stride %5d, pos0 %6d", kind, dim, T, heads,
                    head_stride, row_stride, pos0);
    float *rows = lab_device(before, sizeof(float) * N);
    RopeRun r = { rows + offset,
                  lab_device(rope.inv_freq, sizeof(float) * (dim / 2)),
                  rope.cos_sin_scale,
                  dim,
                  T,
                  heads,
                  row_stride,
                  head_stride,
                  pos0 };
    const int d_x[2] = { T, row_stride }, d_f[1] = { dim / 2 };
    lab_arg("x", rows, sizeof(float) * N, sizeof(float), "t, i", 2, d_x);
    lab_arg("inv_freq", r.inv_freq, sizeof(float) * (dim / 2), sizeof(float), "i", 1, d_f);
    if (lab_call(lab_rope(r.x, r.inv_freq, r.cos_sin_scale, dim, T, heads, row_stride, head_stride, pos0, 0)) &&
        lab_sync()) {
        lab_host(got, rows, sizeof(float) * N);
        if (lab_compare_pointwise("x", got, want, N, 1e-5, 1e-5)) {
            const long at = changed_outside(got, before, T, row_stride, offset, heads, head_stride, dim);
            if (at >= 0)
                lab_fail("x[t=%ld, i=%ld] lies outside every rotated slice (they start at i = %d, every %d, %d wide) "
                         "and was changed from %.9g to %.9g",
                         at / row_stride, at % row_stride, offset, head_stride, dim, (double)before[at],
                         (double)got[at]);
        }
        /* bytes: the slices read and written, inv_freq; flops: 6 per pair besides cos and sin */
        const double pairs = (double)T * heads * (dim / 2);
        lab_time(run_rope, &r, 16.0 * pairs + 2.0 * dim, 6.0 * pairs);
    }
    lab_shape_end();
    free(before);
    free(want);
    free(got);
}

static void run(void)
{
    shape("tiny", 2, false, 1, 1, 0, 2, 2, 0);
    shape("odd", 6, false, 3, 5, 10, 16, 93, 7); /* q^R-like, 13 floats of padding per row */
    shape("odd", 2, false, 5, 3, 1, 3, 10, 1000);
    shape("odd", 6, false, 4, 1, 40, 6, 46, 61);               /* k^R after d_c = 40 */
    shape("Lite", 64, true, 4, 16, 128, 192, 16 * 192, 4093);  /* q^R: d_n 128, d_r 64 */
    shape("Lite", 64, true, 6, 1, 512, 64, 576, 300);          /* k^R inside a [d_c + d_r] row */
    shape("V2", 64, true, 2, 128, 128, 192, 128 * 192, 99998); /* q^R, positions near 10⁵ */
}

const LabComponent lab_component = { "rope", "lab_rope", run };
