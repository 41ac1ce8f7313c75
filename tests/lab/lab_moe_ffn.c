/**
 * \file lab_moe_ffn.c
 * \brief Kernel lab, component `moe_ffn`: lab_moe_ffn against ref/moe.c's swiglu_forward per (token, slot).
 *
 * The kernel never sees E: the harness picks a few experts (up to 8) at
 * real widths and draws each token's K distinct ids among them, with
 * weights in [0.05, 0.5). The reference runs swiglu_forward() on each
 * token's input for each of its experts (gate = expert e's first I rows of
 * gate_up, up = the next I, down = down[e]), sums weight · output in slot
 * order in float32, then adds the shared expert's swiglu_forward() — the
 * order ref/moe.c's moe_combine uses. Weights uniform in ±1/√D (gate_up)
 * and ±1/√I (down), stored as float32 or bfloat16; with bf16 both sides
 * widen the same values, so the tolerance does not change.
 *
 * Shapes: tiny (D 4, I 2, K 1, no shared expert); odd widths (D 37, I 13,
 * K 3, I_s 10; D 33, I 9, K 2, bf16, no shared expert); V2-Lite (D 2048,
 * I 1408, K 6, I_s 2816, bf16, 8 experts); V2 (D 5120, I 1536, K 6,
 * I_s 3072, bf16, 6 experts, one token). Tolerance: relative L2 ≤ 1e-5 —
 * dot products of up to max(D, K·I + I_s) terms in another order.
 */
#include "contract.h"
#include "dtype.h"
#include "lab.h"
#include "moe.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/** One shape's device buffers, for the timed runs. */
typedef struct {
    float *y, *x, *weight, *hidden;
    int *idx;
    void *gate_up, *down, *shared_gate_up, *shared_down;
    KernelDType wt;
    int T, D, I, K, I_s;
} FfnRun;

static cudaError_t run_ffn(void *ctx, bool project)
{
    const FfnRun *r = ctx;
    return (project ? moe_forward_v1 : lab_moe_ffn)(r->y, r->x, r->idx, r->weight, r->gate_up, r->down,
                                                    r->shared_gate_up, r->shared_down, r->wt, r->T, r->D, r->I, r->K,
                                                    r->I_s, r->hidden, 0);
}

/* n random weights in ±a, stored as wt (float32 or bf16 bits). */
static void *random_weights(size_t n, float a, KernelDType wt)
{
    float *f = malloc(sizeof(float) * n);
    test_rng_fill(&lab_rng, f, n, -a, a);
    if (wt == KERNEL_F32) return f;
    uint16_t *h = malloc(sizeof(uint16_t) * n);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(f[i]);
    free(f);
    return h;
}

/* The SwiGLU of gate_up [2·I, D] and down [D, I] (of wt) viewed as ref/moe.h weights. */
static SwigluWeights view(const void *gate_up, const void *down, KernelDType wt, int D, int I)
{
    const DType dt = wt == KERNEL_F32 ? DT_F32 : DT_BF16;
    const size_t esz = kernel_dtype_size(wt);
    SwigluWeights w = { { gate_up, dt, I, D },
                        { (const char *)gate_up + (size_t)I * D * esz, dt, I, D },
                        { down, dt, D, I } };
    return w;
}

static void shape(const char *kind, int T, int D, int I, int K, int I_s, int E, KernelDType wt)
{
    const size_t esz = kernel_dtype_size(wt), n_gu = (size_t)E * 2 * I * D, n_dn = (size_t)E * D * I;
    void *gate_up = random_weights(n_gu, 1.0f / sqrtf((float)D), wt),
         *down = random_weights(n_dn, 1.0f / sqrtf((float)I), wt);
    void *s_gu = I_s ? random_weights((size_t)2 * I_s * D, 1.0f / sqrtf((float)D), wt) : NULL;
    void *s_dn = I_s ? random_weights((size_t)D * I_s, 1.0f / sqrtf((float)I_s), wt) : NULL;
    float *x = malloc(sizeof(float) * T * D), *weight = malloc(sizeof(float) * T * K);
    float *want = calloc((size_t)T * D, sizeof(float)), *got = malloc(sizeof(float) * T * D);
    float *out = malloc(sizeof(float) * D), *scratch = malloc(sizeof(float) * 2 * (I > I_s ? I : I_s));
    int *idx = malloc(sizeof(int) * T * K);
    test_rng_fill(&lab_rng, x, (size_t)T * D, -1.0f, 1.0f);
    test_rng_fill(&lab_rng, weight, (size_t)T * K, 0.05f, 0.5f);
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            int e, again;
            do {
                e = (int)test_rng_uniform(&lab_rng, 0.0f, (float)E) % E;
                again = 0;
                for (int j = 0; j < k; j++) again |= idx[t * K + j] == e;
            } while (again);
            idx[t * K + k] = e;
        }
    for (int t = 0; t < T; t++) {
        float *yt = want + (size_t)t * D;
        for (int k = 0; k < K; k++) {
            const int e = idx[t * K + k];
            const SwigluWeights w = view((const char *)gate_up + (size_t)e * 2 * I * D * esz,
                                         (const char *)down + (size_t)e * D * I * esz, wt, D, I);
            swiglu_forward(out, x + (size_t)t * D, &w, 1, scratch);
            for (int d = 0; d < D; d++) yt[d] += weight[t * K + k] * out[d];
        }
        if (I_s) {
            const SwigluWeights w = view(s_gu, s_dn, wt, D, I_s);
            swiglu_forward(out, x + (size_t)t * D, &w, 1, scratch);
            for (int d = 0; d < D; d++) yt[d] += out[d];
        }
    }

    lab_shape_begin("%-4s T %d, D %4d, I %4d, K %d, I_s %4d, %d experts, %-4s weights", kind, T, D, I, K, I_s, E,
                    wt == KERNEL_F32 ? "f32" : "bf16");
    const size_t n_hidden = (size_t)T * (K * I + I_s);
    FfnRun r = { lab_device(NULL, sizeof(float) * T * D),
                 lab_device(x, sizeof(float) * T * D),
                 lab_device(weight, sizeof(float) * T * K),
                 lab_device(NULL, sizeof(float) * n_hidden),
                 lab_device(idx, sizeof(int) * T * K),
                 lab_device(gate_up, n_gu * esz),
                 lab_device(down, n_dn * esz),
                 I_s ? lab_device(s_gu, (size_t)2 * I_s * D * esz) : NULL,
                 I_s ? lab_device(s_dn, (size_t)D * I_s * esz) : NULL,
                 wt,
                 T,
                 D,
                 I,
                 K,
                 I_s };
    const int d_td[2] = { T, D }, d_tk[2] = { T, K }, d_h[1] = { (int)n_hidden }, d_gu[3] = { E, 2 * I, D },
              d_dn[3] = { E, D, I }, d_sgu[2] = { 2 * I_s, D }, d_sdn[2] = { D, I_s };
    lab_arg("y", r.y, sizeof(float) * T * D, sizeof(float), "t, d", 2, d_td);
    lab_arg("x", r.x, sizeof(float) * T * D, sizeof(float), "t, d", 2, d_td);
    lab_arg("idx", r.idx, sizeof(int) * T * K, sizeof(int), "t, k", 2, d_tk);
    lab_arg("weight", r.weight, sizeof(float) * T * K, sizeof(float), "t, k", 2, d_tk);
    lab_arg("gate_up", r.gate_up, n_gu * esz, esz, "e, i, d", 3, d_gu);
    lab_arg("down", r.down, n_dn * esz, esz, "e, d, i", 3, d_dn);
    if (I_s) {
        lab_arg("shared_gate_up", r.shared_gate_up, (size_t)2 * I_s * D * esz, esz, "i, d", 2, d_sgu);
        lab_arg("shared_down", r.shared_down, (size_t)D * I_s * esz, esz, "d, i", 2, d_sdn);
    }
    lab_arg("hidden", r.hidden, sizeof(float) * n_hidden, sizeof(float), "i", 1, d_h);
    if (lab_call(lab_moe_ffn(r.y, r.x, r.idx, r.weight, r.gate_up, r.down, r.shared_gate_up, r.shared_down, wt, T, D, I,
                             K, I_s, r.hidden, 0)) &&
        lab_sync()) {
        lab_host(got, r.y, sizeof(float) * T * D);
        lab_compare("y", got, want, (size_t)T * D, 1e-5);
        /* bytes: the weights of every (token, slot) and of the shared expert; flops: a multiply-add per weight */
        const double weights = 3.0 * D * ((double)T * K * I + (double)T * I_s);
        lab_time(run_ffn, &r, weights * (double)esz, 2.0 * weights);
    }
    lab_shape_end();
    free(gate_up);
    free(down);
    free(s_gu);
    free(s_dn);
    free(x);
    free(weight);
    free(want);
    free(got);
    free(out);
    free(scratch);
    free(idx);
}

static void run(void)
{
    shape("tiny", 1, 4, 2, 1, 0, 2, KERNEL_F32);
    shape("odd", 3, 37, 13, 3, 10, 7, KERNEL_F32);
    shape("odd", 5, 33, 9, 2, 0, 4, KERNEL_BF16);
    shape("Lite", 2, 2048, 1408, 6, 2816, 8, KERNEL_BF16);
    shape("V2", 1, 5120, 1536, 6, 3072, 6, KERNEL_BF16);
}

const LabComponent lab_component = { "moe_ffn", "lab_moe_ffn", run };
