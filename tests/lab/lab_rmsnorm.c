/**
 * \file lab_rmsnorm.c
 * \brief Kernel lab, component `rmsnorm`: lab_rmsnorm against ref/rmsnorm.c's rmsnorm_forward.
 *
 * Shapes: a single element, odd widths (37, 257, 1000: not multiples of a
 * warp or a block), DeepSeek-V2-Lite (D 2048, d_c 512) and DeepSeek-V2
 * (D 5120, d_c' 1536). x uniform in [-3, 3), w in [0.5, 1.5), eps 1e-6;
 * y filled with NaN first. Tolerance: relative L2 ≤ 1e-5, since a float32
 * sum of n squares in any order and one reciprocal square root stay within a
 * few units in the last place of the reference.
 */
#include "contract.h"
#include "lab.h"
#include "rmsnorm.h"

#include <stdlib.h>

/** One shape's device buffers, for the timed runs. */
typedef struct {
    float *y, *x, *w;
    int T, n;
} RmsnormRun;

static cudaError_t run_rmsnorm(void *ctx, bool project)
{
    const RmsnormRun *r = ctx;
    return (project ? rmsnorm_forward_v2 : lab_rmsnorm)(r->y, r->x, r->w, r->T, r->n, 1e-6f, 0);
}

static void shape(const char *kind, int T, int n)
{
    const size_t N = (size_t)T * n;
    float *x = malloc(sizeof(float) * N), *w = malloc(sizeof(float) * n);
    float *want = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    test_rng_fill(&lab_rng, x, N, -3.0f, 3.0f);
    test_rng_fill(&lab_rng, w, (size_t)n, 0.5f, 1.5f);
    rmsnorm_forward(want, x, w, T, n, 1e-6f);

    lab_shape_begin("%-4s T %d, n %-4d", kind, T, n);
    RmsnormRun r = {lab_device(NULL, sizeof(float) * N), lab_device(x, sizeof(float) * N),
                    lab_device(w, sizeof(float) * n), T, n};
    const int dims_yx[2] = {T, n}, dims_w[1] = {n};
    lab_arg("y", r.y, sizeof(float) * N, sizeof(float), "t, i", 2, dims_yx);
    lab_arg("x", r.x, sizeof(float) * N, sizeof(float), "t, i", 2, dims_yx);
    lab_arg("w", r.w, sizeof(float) * n, sizeof(float), "i", 1, dims_w);
    if (lab_call(lab_rmsnorm(r.y, r.x, r.w, T, n, 1e-6f, 0)) && lab_sync()) {
        lab_host(got, r.y, sizeof(float) * N);
        lab_compare("y", got, want, N, 1e-5);
        lab_time(run_rmsnorm, &r, 4.0 * (2.0 * N + n), 4.0 * N);
    }
    lab_shape_end();
    free(x); free(w); free(want); free(got);
}

static void run(void)
{
    shape("tiny", 1, 1);
    shape("odd", 3, 37);
    shape("odd", 5, 257);
    shape("odd", 2, 1000);
    shape("Lite", 4, 2048);   /* D of V2-Lite */
    shape("Lite", 6, 512);    /* d_c: kv_a_layernorm */
    shape("V2", 4, 5120);     /* D of V2 */
    shape("V2", 2, 1536);     /* d_c': q_a_layernorm */
}

const LabComponent lab_component = {"rmsnorm", "lab_rmsnorm", run};
