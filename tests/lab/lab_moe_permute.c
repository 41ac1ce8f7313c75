/**
 * \file lab_moe_permute.c
 * \brief Kernel lab, component `moe_permute`: lab_moe_permute against ref/ep.c's ep_plan_build.
 *
 * There is no public reference function with the kernel's outputs; the
 * reference is the expert-parallel dispatch plan, ep_plan_build() on one
 * device with every assignment kept: its count and offset are counts and
 * offsets, and its order (assignment ids t·K + k, by expert, then token) is
 * the permuted order, so row_token[r] = order[r] / K and
 * slot_row[order[r]] = r. Every output must agree exactly.
 *
 * idx: K distinct experts per token drawn uniformly, or, for the skewed
 * shape, from the first few experts only, leaving most experts empty.
 * Shapes: tiny (one token, one expert); odd (T 37, K 3, E 12); skewed (T 50,
 * K 2, E 100, ids below 5); V2-Lite (T 512, K 6, E 64); V2 (T 512, K 6,
 * E 160).
 */
#include "contract.h"
#include "ep.h"
#include "lab.h"

#include <stdio.h>
#include <stdlib.h>

/** One shape's device buffers, for the timed runs. */
typedef struct {
    int *counts, *offsets, *slot_row, *row_token, *idx;
    int T, K, E;
} PermuteRun;

static cudaError_t run_permute(void *ctx, bool project)
{
    const PermuteRun *r = ctx;
    return (project ? moe_permute_v2 : lab_moe_permute)(r->counts, r->offsets, r->slot_row, r->row_token, r->idx, r->T,
                                                        r->K, r->E, 0);
}

/* K distinct ids per token in [0, range). */
static void draw_ids(int *idx, int T, int K, int range)
{
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            int e, again;
            do {
                e = (int)test_rng_uniform(&lab_rng, 0.0f, (float)range) % range;
                again = 0;
                for (int j = 0; j < k; j++) again |= idx[t * K + j] == e;
            } while (again);
            idx[t * K + k] = e;
        }
}

static void shape(const char *kind, int T, int K, int E, int range)
{
    const int n = T * K;
    int *idx = malloc(sizeof(int) * n), *slot_row = malloc(sizeof(int) * n), *row_token = malloc(sizeof(int) * n);
    int *got = malloc(sizeof(int) * (size_t)(n > E + 1 ? n : E + 1));
    draw_ids(idx, T, K, range);
    EpPlan plan;
    if (ep_plan_build(&plan, idx, NULL, T, K, E, 1) != 0) {
        fprintf(stderr, "lab: out of memory for the reference plan\n");
        exit(2);
    }
    for (int r = 0; r < n; r++) {
        row_token[r] = plan.order[r] / K;
        slot_row[plan.order[r]] = r;
    }

    lab_shape_begin("%-6s T %3d, K %d, E %3d%s", kind, T, K, E, range < E ? " (ids below 5)" : "");
    PermuteRun p = { lab_device(NULL, sizeof(int) * E),
                     lab_device(NULL, sizeof(int) * (E + 1)),
                     lab_device(NULL, sizeof(int) * n),
                     lab_device(NULL, sizeof(int) * n),
                     lab_device(idx, sizeof(int) * n),
                     T,
                     K,
                     E };
    const int d_e[1] = { E }, d_o[1] = { E + 1 }, d_r[1] = { n }, d_tk[2] = { T, K };
    lab_arg("counts", p.counts, sizeof(int) * E, sizeof(int), "e", 1, d_e);
    lab_arg("offsets", p.offsets, sizeof(int) * (E + 1), sizeof(int), "e", 1, d_o);
    lab_arg("slot_row", p.slot_row, sizeof(int) * n, sizeof(int), "t, k", 2, d_tk);
    lab_arg("row_token", p.row_token, sizeof(int) * n, sizeof(int), "r", 1, d_r);
    lab_arg("idx", p.idx, sizeof(int) * n, sizeof(int), "t, k", 2, d_tk);
    if (lab_call(lab_moe_permute(p.counts, p.offsets, p.slot_row, p.row_token, p.idx, T, K, E, 0)) && lab_sync()) {
        lab_host(got, p.counts, sizeof(int) * E);
        lab_compare_ints("counts", got, plan.count, (size_t)E, NULL);
        lab_host(got, p.offsets, sizeof(int) * (E + 1));
        lab_compare_ints("offsets", got, plan.offset, (size_t)E + 1, NULL);
        lab_host(got, p.slot_row, sizeof(int) * n);
        lab_compare_ints("slot_row", got, slot_row, (size_t)n, NULL);
        lab_host(got, p.row_token, sizeof(int) * n);
        lab_compare_ints("row_token", got, row_token, (size_t)n, NULL);
        lab_time(run_permute, &p, 4.0 * (3.0 * n + 2.0 * E + 1), 0);
    }
    lab_shape_end();
    ep_plan_free(&plan);
    free(idx);
    free(slot_row);
    free(row_token);
    free(got);
}

static void run(void)
{
    shape("tiny", 1, 1, 1, 1);
    shape("odd", 37, 3, 12, 12);
    shape("skewed", 50, 2, 100, 5); /* 95 empty experts */
    shape("Lite", 512, 6, 64, 64);
    shape("V2", 512, 6, 160, 160);
}

const LabComponent lab_component = { "moe_permute", "lab_moe_permute", run };
