/**
 * \file test_gpu_report.c
 * \brief `make gpu-report`'s comparison (fast/bench/gpu_report.c) on canned inputs: a bench-fast
 *        output written the way bench_fast.c prints, and a profile JSON with estimates for some of
 *        its cases; every expected row and ratio is worked out by hand below. Also: the refusals
 *        (no timed line, no estimates), and the make target on a machine without a GPU.
 */
#include "check.h"
#include "gpu_report.h"
#include "scratch_files.h"

#include "error.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* As bench_fast.c's line() prints: "%-34s %9.4f ms" then GB/s or TFLOP/s; the decode label holds its own numbers. */
static const char *const BENCH =
    "bench-fast on NVIDIA H100 80GB HBM3 (sm_90)\n"
    "copy device→device 1 GiB              1.0000 ms    2147.5 GB/s\n"
    "rmsnorm v1 [64, 2048]                 0.0120 ms      87.4 GB/s\n"
    "rmsnorm v2 [64, 2048]                 0.0100 ms     104.9 GB/s\n"
    "rope v2 q^R 64×16×64                  0.0040 ms      65.5 GB/s\n"
    "mla decode v2, ctx 4096 (bf16 cache)    0.0300 ms     157.3 GB/s\n"
    "decode: batch-1 weights per token 0.750 GB here (2 layers), 4.94 GB for the 27-layer V2-Lite\n"
    "decode batch  1:    812.3 tok/s, roofline   2000.0 tok/s (41%)    1.2311 ms     609.2 GB/s\n"
    "    reads 0.750 GB/step: 6.0 of 64 experts per MoE layer, 0.1 MB of latent cache; copy 2147 GB/s\n"
    "EP 2 GPUs,    1 tok/GPU: dispatch      0.0200 ms\n";

static const char *const PROFILE =
    "{\"checkpoint\": \"x\", \"bench_fast_kernels\": [\n"
    " {\"label\": \"rmsnorm v2 [64, 2048]\", \"launches\": 1, \"kernels\": \"rmsnorm_v2_kernel\", "
    "\"estimated_us\": 5.0, \"estimated_bytes_us\": 2.5},\n"
    " {\"label\": \"rope v2 q^R 64×16×64\", \"launches\": 1, \"kernels\": \"rope_v2_kernel\", "
    "\"estimated_us\": 8.0, \"estimated_bytes_us\": 5.5},\n"
    " {\"label\": \"mla decode v2, ctx 4096 (bf16 cache)\", \"launches\": 2, "
    "\"kernels\": \"mla_decode_v2_kernel+mla_combine_v2_kernel\", \"estimated_us\": 20.0, \"estimated_bytes_us\": "
    "15.0},\n"
    " {\"label\": \"argmax v2, vocab 102400\", \"launches\": 1, \"kernels\": \"argmax_v2_kernel\", "
    "\"estimated_us\": 4.0, \"estimated_bytes_us\": 1.5},\n"
    " {\"label\": \"decode batch  1\", \"launches\": 0, \"kernels\": \"the 2-layer decode step\", "
    "\"estimated_us\": 1000.0, \"estimated_bytes_us\": 0}]}\n";

static char *report_of(const char *dir, const char *bench, const char *profile, int *rc)
{
    scratch_write(dir, "bench.txt", bench);
    scratch_write(dir, "profile.json", profile);
    scratch_write(dir, "suites.txt", "build/gpu/tests/test_fast_mla pass\nbuild/gpu/tests/test_fast_moe FAIL\n");
    char b[512], p[512], s[512], out[512];
    snprintf(b, sizeof b, "%s/bench.txt", dir);
    snprintf(p, sizeof p, "%s/profile.json", dir);
    snprintf(s, sizeof s, "%s/suites.txt", dir);
    snprintf(out, sizeof out, "%s/report", dir);
    *rc = gpu_report_write(b, p, s, out);
    return *rc == 0 ? scratch_read(dir, "report.md") : NULL;
}

static void expect_row(const char *md, const char *row)
{
    if (!strstr(md, row)) fail_msg("row not in the report: %s\n--- report ---\n%s", row, md);
}

static void rows_and_ratios_by_hand(void **state)
{
    (void)state;
    char *dir = scratch_make();
    int rc;
    char *md = report_of(dir, BENCH, PROFILE, &rc);
    assert_int_equal(rc, 0);
    /* measured µs = 1000 × ms; ratio = measured / estimated */
    expect_row(md, "| rmsnorm v2 [64, 2048] | rmsnorm_v2_kernel | 10.000 | 5.000 | 2.500 | 2.000 |");
    expect_row(md, "| rope v2 q^R 64×16×64 | rope_v2_kernel | 4.000 | 8.000 | 5.500 | 0.500 |");
    expect_row(md, "| mla decode v2, ctx 4096 (bf16 cache) | mla_decode_v2_kernel+mla_combine_v2_kernel | 30.000 | "
                   "20.000 | 15.000 | 1.500 |");
    expect_row(md, "| argmax v2, vocab 102400 | argmax_v2_kernel | not measured | 4.000 | 1.500 | - |");
    expect_row(md, "| decode batch  1 | the 2-layer decode step | 1231.100 | 1000.000 | 0.000 | 1.231 |");
    /* kernels: (10 + 4 + 30) / (5 + 8 + 20) = 44/33; geometric mean (2 · 0.5 · 1.5)^(1/3) = 1.5^(1/3) */
    expect_row(md, "kernel cases (3 measured): summed measured / summed estimated 1.333, geometric mean of the "
                   "ratios 1.145.");
    expect_row(md, "decode steps (1 measured): summed measured / summed estimated 1.231, geometric mean of the "
                   "ratios 1.231.");
    expect_row(md, "Measured without an estimate: copy device→device 1 GiB; rmsnorm v1 [64, 2048]; EP 2 GPUs,    1 "
                   "tok/GPU: dispatch.");
    expect_row(md, "Device: NVIDIA H100 80GB HBM3 (sm_90).");
    expect_row(md, "GPU suites: 1 passed, 1 failed: build/gpu/tests/test_fast_moe.");
    free(md);

    char path[512];
    snprintf(path, sizeof path, "%s/report.json", dir);
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    assert_non_null(root);
    const json_t *k = json_object_get(root, "kernel_cases");
    assert_int_equal(json_integer_value(json_object_get(k, "measured")), 3);
    assert_true(fabs(json_real_value(json_object_get(k, "ratio_of_sums")) - 44.0 / 33.0) < 1e-12);
    assert_true(fabs(json_real_value(json_object_get(k, "geometric_mean_ratio")) - cbrt(1.5)) < 1e-12);
    const json_t *cases = json_object_get(root, "cases");
    assert_int_equal(json_array_size(cases), 5);
    assert_true(fabs(json_real_value(json_object_get(json_array_get(cases, 0), "ratio")) - 2.0) < 1e-12);
    assert_true(json_is_null(json_object_get(json_array_get(cases, 3), "measured_us")));
    json_decref(root);
    scratch_remove(dir);
}

static void refuses_without_times_or_estimates(void **state)
{
    (void)state;
    char *dir = scratch_make();
    int rc;
    char *md =
        report_of(dir, "bench-fast: no CUDA GPU here (cudaGetDeviceCount: cudaErrorNoDevice); nothing to measure\n",
                  PROFILE, &rc);
    assert_int_equal(rc, -1);
    assert_null(md);
    assert_non_null(strstr(ds_last_error(), "bench.txt: no timed line"));
    md = report_of(dir, BENCH, "{\"decode_b1\": {}}", &rc);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(ds_last_error(), "profile.json: key bench_fast_kernels: missing or not an array"));
    md = report_of(dir, BENCH, "{\"bench_fast_kernels\": [{\"label\": \"x\", \"estimated_us\": 0}]}", &rc);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(ds_last_error(), "bench_fast_kernels[0]: needs a string label and a positive estimated_us"));
    char out[2048];
    assert_int_not_equal(shell_capture(out, sizeof out, "ls '%s/report.md' 2>&1", dir), 0); /* nothing written */
    scratch_remove(dir);
}

/* Without a GPU the target says so in one line and exits 2 (the probe is replaced by `false`; run as a top-level
 * make, since under `make test` a sub-make would add its own jobserver and directory lines). */
static void make_target_without_a_gpu(void **state)
{
    (void)state;
    char out[2048];
    const int status = shell_capture(
        out, sizeof out,
        "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory gpu-report NVIDIA_SMI=false 2>&1");
    assert_int_equal(status, 2);
    if (!strstr(out, "gpu-report: no CUDA device found (false -L lists none); nothing written"))
        fail_msg("unexpected output: %s", out);
    assert_null(strchr(strchr(out, '\n') + 1, '\n')); /* one line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rows_and_ratios_by_hand),
        cmocka_unit_test(refuses_without_times_or_estimates),
        cmocka_unit_test(make_target_without_a_gpu),
    };
    return cmocka_run_group_tests_name("gpu_report", tests, NULL, NULL);
}
