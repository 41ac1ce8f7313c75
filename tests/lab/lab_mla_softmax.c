/**
 * \file lab_mla_softmax.c
 * \brief Kernel lab, component `mla_softmax`: lab_mla_softmax against the causal softmax of ref/mla.c's expanded form.
 *
 * ref/mla.c applies its softmax (a static function: max subtracted, float32)
 * to σ·s over the keys j ≤ pos0 + t of each (head, token); it is not public,
 * so the harness repeats those few lines from the contract's definition and
 * writes exact zeros beyond the causal limit. s uniform in [-20, 20) (score
 * dot products), σ = V2-Lite's YaRN scale 0.1147.
 *
 * Shapes: tiny (one head, one key); odd (3 heads, T 5, ctx 37; 5 heads, T 7,
 * ctx 300 with columns past every token's limit); V2-Lite (16 heads) prefill
 * of 64 tokens and a chunk of 16 at ctx 1000; V2 (128 heads), 4 tokens at ctx
 * 1000. Tolerance: relative L2 ≤ 1e-5 — the row sums of up to ctx
 * exponentials in another order — and every masked entry exactly 0.
 */
#include "contract.h"
#include "lab.h"

#include <math.h>
#include <stdlib.h>

#define SIGMA 0.1147f

/** One shape's device buffers, for the timed runs. */
typedef struct {
    float *p, *s;
    int n_h, T, ctx, pos0;
} SoftmaxRun;

static cudaError_t run_softmax(void *ctx, bool project)
{
    const SoftmaxRun *r = ctx;
    return (project ? mla_causal_softmax_v2 : lab_mla_softmax)(r->p, r->s, SIGMA, r->n_h, r->T, r->ctx, r->pos0, 0);
}

/* The reference row: softmax of σ·s[0..n_keys) (max subtracted, float32), zeros up to ctx. */
static void softmax_row(float *p, const float *s, int n_keys, int ctx)
{
    float max = -INFINITY, sum = 0.0f;
    for (int j = 0; j < n_keys; j++) max = fmaxf(max, SIGMA * s[j]);
    for (int j = 0; j < n_keys; j++) {
        p[j] = expf(SIGMA * s[j] - max);
        sum += p[j];
    }
    for (int j = 0; j < n_keys; j++) p[j] /= sum;
    for (int j = n_keys; j < ctx; j++) p[j] = 0.0f;
}

static void shape(const char *kind, int n_h, int T, int ctx, int pos0)
{
    const size_t N = (size_t)n_h * T * ctx;
    float *s = malloc(sizeof(float) * N), *want = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    test_rng_fill(&lab_rng, s, N, -20.0f, 20.0f);
    for (int h = 0; h < n_h; h++)
        for (int t = 0; t < T; t++)
            softmax_row(want + ((size_t)h * T + t) * ctx, s + ((size_t)h * T + t) * ctx, pos0 + t + 1, ctx);

    lab_shape_begin("%-4s %3d heads, T %2d, ctx %4d, pos0 %3d", kind, n_h, T, ctx, pos0);
    SoftmaxRun r = { lab_device(NULL, sizeof(float) * N), lab_device(s, sizeof(float) * N), n_h, T, ctx, pos0 };
    const int d[3] = { n_h, T, ctx };
    lab_arg("p", r.p, sizeof(float) * N, sizeof(float), "h, t, j", 3, d);
    lab_arg("s", r.s, sizeof(float) * N, sizeof(float), "h, t, j", 3, d);
    if (lab_call(lab_mla_softmax(r.p, r.s, SIGMA, n_h, T, ctx, pos0, 0)) && lab_sync()) {
        lab_host(got, r.p, sizeof(float) * N);
        if (lab_compare("p", got, want, N, 1e-5))
            for (size_t i = 0; i < N; i++) {
                const int j = (int)(i % ctx), t = (int)(i / ctx % T);
                if (j > pos0 + t && got[i] != 0.0f) {
                    lab_fail("p[h=%d, t=%d, j=%d] = %.9g lies beyond the causal limit j ≤ pos0 + t = %d and must be "
                             "exactly 0",
                             (int)(i / ctx / T), t, j, (double)got[i], pos0 + t);
                    break;
                }
            }
        lab_time(run_softmax, &r, 8.0 * N, 4.0 * N);
    }
    lab_shape_end();
    free(s);
    free(want);
    free(got);
}

static void run(void)
{
    shape("tiny", 1, 1, 1, 0);
    shape("odd", 3, 5, 37, 32);
    shape("odd", 5, 7, 300, 200); /* columns past pos0 + T: zero for every token */
    shape("Lite", 16, 64, 64, 0); /* prefill */
    shape("Lite", 16, 16, 1000, 984);
    shape("V2", 128, 4, 1000, 996);
}

const LabComponent lab_component = { "mla_softmax", "lab_mla_softmax", run };
