/**
 * \file lab_rmsnorm.c
 * \brief Kernel lab, component `rmsnorm`: lab_rmsnorm against ref/rmsnorm.c's rmsnorm_forward.
 *
 * Shapes: a single element, odd widths (37, 257, 1000: not multiples of a
 * warp or a block), DeepSeek-V2-Lite (D 2048, d_c 512) and DeepSeek-V2
 * (D 5120, d_c' 1536), with x uniform in [-3, 3) and eps 1e-6; then two
 * shapes where eps is not negligible beside the mean square: rows of tiny
 * magnitude (|x| < 1e-3, mean square ≈ 3.3e-7 < eps = 1e-6) and a large eps
 * (1e-2 beside a mean square ≈ 3). On the first group eps itself moves y
 * by eps/(2·3) ≈ 2e-7 relative, so a kernel that puts eps in the wrong
 * place (outside the root: 4e-7; or nowhere) still passes there; on the two
 * others the same mistake moves y by 4e-3 (large eps) to a factor of 2
 * (tiny rows). w in [0.5, 1.5); y filled with
 * NaN first. Tolerance: relative L2 ≤ 1e-5, since a float32 sum of n
 * squares in any order and one reciprocal square root stay within a few
 * units in the last place of the reference.
 */
#include "contract.h"
#include "lab.h"
#include "rmsnorm.h"

#include <stdlib.h>

/** One shape's device buffers, for the timed runs. */
typedef struct {
    float *y, *x, *w;
    int T, n;
    float eps;
} RmsnormRun;

static cudaError_t run_rmsnorm(void *ctx, bool project)
{
    const RmsnormRun *r = ctx;
    return (project ? rmsnorm_forward_v2 : lab_rmsnorm)(r->y, r->x, r->w, r->T, r->n, r->eps, 0);
}

/* T rows of n elements uniform in [-amp, amp); eps as given. The default amp 3 and eps 1e-6 are not printed. */
static void shape(const char *kind, int T, int n, float amp, float eps)
{
    const size_t N = (size_t)T * n;
    float *x = malloc(sizeof(float) * N), *w = malloc(sizeof(float) * n);
    float *want = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    test_rng_fill(&lab_rng, x, N, -amp, amp);
    test_rng_fill(&lab_rng, w, (size_t)n, 0.5f, 1.5f);
    rmsnorm_forward(want, x, w, T, n, eps);

    if (amp != 3.0f || eps != 1e-6f)
        lab_shape_begin("%-4s T %d, n %d, |x| < %g, eps %g", kind, T, n, (double)amp, (double)eps);
    else
        lab_shape_begin("%-4s T %d, n %-4d", kind, T, n);
    RmsnormRun r = { lab_device(NULL, sizeof(float) * N),
                     lab_device(x, sizeof(float) * N),
                     lab_device(w, sizeof(float) * n),
                     T,
                     n,
                     eps };
    const int dims_yx[2] = { T, n }, dims_w[1] = { n };
    lab_arg("y", r.y, sizeof(float) * N, sizeof(float), "t, i", 2, dims_yx);
    lab_arg("x", r.x, sizeof(float) * N, sizeof(float), "t, i", 2, dims_yx);
    lab_arg("w", r.w, sizeof(float) * n, sizeof(float), "i", 1, dims_w);
    if (lab_call(lab_rmsnorm(r.y, r.x, r.w, T, n, eps, 0)) && lab_sync()) {
        lab_host(got, r.y, sizeof(float) * N);
        lab_compare("y", got, want, N, 1e-5);
        lab_time(run_rmsnorm, &r, 4.0 * (2.0 * N + n), 4.0 * N);
    }
    lab_shape_end();
    free(x);
    free(w);
    free(want);
    free(got);
}

static void run(void)
{
    shape("tiny", 1, 1, 3.0f, 1e-6f);
    shape("odd", 3, 37, 3.0f, 1e-6f);
    shape("odd", 5, 257, 3.0f, 1e-6f);
    shape("odd", 2, 1000, 3.0f, 1e-6f);
    shape("Lite", 4, 2048, 3.0f, 1e-6f); /* D of V2-Lite */
    shape("Lite", 6, 512, 3.0f, 1e-6f);  /* d_c: kv_a_layernorm */
    shape("V2", 4, 5120, 3.0f, 1e-6f);   /* D of V2 */
    shape("V2", 2, 1536, 3.0f, 1e-6f);   /* d_c': q_a_layernorm */
    shape("eps", 4, 512, 1e-3f, 1e-6f);  /* mean square 3.3e-7: eps is most of the root */
    shape("eps", 3, 257, 3.0f, 1e-2f);   /* eps 1e-2 beside a mean square of 3 */
}

const LabComponent lab_component = { "rmsnorm", "lab_rmsnorm", run };
