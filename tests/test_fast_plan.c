/**
 * \file test_fast_plan.c
 * \brief fast_plan_memory() against the simulated device's memory high-water mark (sim_counters.h).
 *
 * For every fixture configuration and each layout at 1, 2 and 4 devices the model is opened with
 * the counters running from an empty device (the single, ep and sharded layouts then run a prompt and
 * a decode step; dp is opened and closed), and each device's high-water mark must equal the plan's
 * total for it exactly: the plan adds up the sizes
 * the allocators themselves use, so any difference is an allocation the plan misses (the issue's
 * bar is 1%; exact is what one definition of each size gives).
 */
#include "check.h"
#include "cli_run.h"
#include "fast.h"
#include "fast_dp.h"
#include "fast_plan.h"
#include "fast_shard.h"
#include "fast_test.h"
#include "golden.h"
#include "error.h"
#include "st_writer.h"

#if __has_include("sim_counters.h")
#include "sim_counters.h"
#define HAVE_SIM_COUNTERS 1
#else
#define HAVE_SIM_COUNTERS 0
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if HAVE_SIM_COUNTERS
static const char *const FIXTURES[] = { "lite", "v2", "norope", "longctx", "eps" };

/* Opens name in layout over N devices, runs a 3-token prompt and a decode step, returns the counters. */
static bool measure(const char *name, FastLayout layout, int N, const FastOptions *base, SimStepCounters *c)
{
    char dir[256];
    golden_dir(dir, sizeof dir, name);
    FastOptions opt = *base;
    const int ids[3] = { 1, 2, 3 };
    float *none = NULL;
    sim_counters_start();
    if (layout == FAST_LAYOUT_DP) {
        FastDpModel *dp;
        if (fast_dp_model_open(&dp, dir, N, &opt)) {
            sim_counters_stop(c);
            return false;
        }
        fast_dp_model_close(dp);
    } else if (layout == FAST_LAYOUT_SHARDED) {
        FastShardModel m;
        if (fast_shard_open(&m, dir, N, &opt)) fail_msg("%s: %s", name, ds_last_error());
        const int slot = 0, next = 4;
        if (fast_shard_prefill(&m, 0, ids, 3, none, false) || fast_shard_decode(&m, &slot, &next, 1, none))
            fail_msg("%s: %s", name, ds_last_error());
        fast_shard_close(&m);
    } else {
        opt.ep_devices = layout == FAST_LAYOUT_EP ? N : 0;
        FastModel m;
        if (fast_model_open(&m, dir, &opt)) fail_msg("%s: %s", name, ds_last_error());
        const int slot = 0, next = 4;
        if (fast_model_prefill(&m, 0, ids, 3, none, false) || fast_model_decode(&m, &slot, &next, 1, none))
            fail_msg("%s: %s", name, ds_last_error());
        fast_model_close(&m);
    }
    sim_counters_stop(c);
    return true;
}

static void plan_matches(const char *name, FastLayout layout, int N, const FastOptions *opt)
{
    char dir[256], path[300];
    golden_dir(dir, sizeof dir, name);
    snprintf(path, sizeof path, "%s/config.json", dir);
    ModelConfig cfg;
    if (config_load(path, &cfg)) fail_msg("%s", ds_last_error());
    FastPlan plan;
    const int plan_rc = fast_plan_memory(&plan, &cfg, N, layout, opt->max_context, opt->max_batch ? opt->max_batch : 1,
                                         opt->bf16, opt->chunk);
    if (layout == FAST_LAYOUT_SINGLE && N > 1) {
        assert_int_equal(plan_rc, -1);
        return;
    }
    SimStepCounters c;
    const bool opened = measure(name, layout, N, opt, &c);
    assert_int_equal(plan_rc, opened ? 0 : -1); /* both refuse a split the experts don't allow */
    for (int d = 0; opened && d < N; d++) {
        printf("%-8s layout %d N %d device %d: plan %zu, high-water %zu\n", name, (int)layout, N, d, plan.dev[d].total,
               c.high_water[d]);
        assert_int_equal(plan.dev[d].total, c.high_water[d]);
    }
}

static void every_fixture(bool bf16, int batch)
{
    need_devices(4);
    const FastOptions opt = { .bf16 = bf16, .max_context = 40, .chunk = 5, .max_batch = batch };
    for (size_t f = 0; f < sizeof FIXTURES / sizeof FIXTURES[0]; f++)
        for (int layout = 0; layout < 4; layout++)
            for (int N = 1; N <= 4; N *= 2) plan_matches(FIXTURES[f], (FastLayout)layout, N, &opt);
}
#else
/* On a real GPU the driver, cuBLAS and NCCL allocate beside the model: no exact high-water mark to compare. */
static void every_fixture(bool bf16, int batch)
{
    (void)bf16;
    (void)batch;
    printf("the high-water mark compared is the simulated device's (sim_counters.h); not on a real GPU\n");
    skip();
}
#endif

/* bf16 weights and cache, one slot. */
static void bf16_one_slot(void **state)
{
    (void)state;
    every_fixture(true, 1);
}

/* float32 mode with more slots than the chunk has rows (rows = max_batch). */
static void float32_batch(void **state)
{
    (void)state;
    every_fixture(false, 8);
}

/* A plan the layouts cannot take is refused with one line. */
static void refuses(void **state)
{
    (void)state;
    ModelConfig cfg = { .n_routed_experts = 6, .num_hidden_layers = 1 };
    FastPlan plan;
    assert_int_equal(fast_plan_memory(&plan, &cfg, 4, FAST_LAYOUT_EP, 16, 1, true, 0), -1);
    assert_non_null(strstr(ds_last_error(), "6 routed experts"));
    assert_int_equal(fast_plan_memory(&plan, &cfg, 9, FAST_LAYOUT_DP, 16, 1, true, 0), -1);
    ModelConfig four = { .vocab_size = 512, .num_attention_heads = 4, .n_routed_experts = 8, .num_hidden_layers = 1 };
    assert_int_equal(fast_plan_memory(&plan, &four, 8, FAST_LAYOUT_SHARDED, 16, 1, true, 0), -1);
    assert_non_null(strstr(ds_last_error(), "num_attention_heads = 4 is not divisible by 8 devices"));
    FastLayout l;
    assert_int_equal(fast_layout_parse("sharded", &l), 0);
    assert_int_equal(l, FAST_LAYOUT_SHARDED);
    assert_int_equal(fast_layout_parse("tp", &l), -1);
    assert_non_null(strstr(ds_last_error(), "tp"));
}

/* dsv2 info --plan: a plan per device and the verdict; bad values refused with one line and no stdout. */
static void cli_plan(void **state)
{
    (void)state;
    const char *fits[] = { "info", "-m", "tests/golden/lite", "--plan", "2:80", "--layout", "dp", "--ctx", "40", NULL };
    CliRun r = cli_run(fits);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "plan         dp layout, 2 devices of 80.0 GB, 40 positions x 1 sequence, bf16"));
    assert_non_null(strstr(r.out, "  device 1 "));
    assert_non_null(strstr(r.out, "fits on every device"));
    cli_run_free(&r);
    const char *tight[] = { "info", "-m", "tests/golden/lite", "--plan", "1:0.0001", NULL };
    r = cli_run(tight);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "does not fit"));
    cli_run_free(&r);
    const char *const bad[][10] = { { "info", "-m", "tests/golden/lite", "--plan", "9", NULL },
                                    { "info", "-m", "tests/golden/lite", "--plan", "2:x", NULL },
                                    { "info", "-m", "tests/golden/lite", "--plan", "2", "--layout", "tp", NULL },
                                    { "info", "-m", "tests/golden/lite", "--batch", "2", NULL },
                                    { "info", "-m", "tests/golden/lite", "--plan", "3",
                                      NULL } }; /* 3 devices, 8 experts: refused */
    const char *const why[] = { "--plan 9", "--plan 2:x", "--layout tp", "go with --plan", "cannot share" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = cli_run((const char *const *)bad[i]);
        assert_int_not_equal(r.status, 0);
        assert_string_equal(r.out, "");
        assert_non_null(strstr(r.err, why[i]));
        cli_run_free(&r);
    }
}

/* DeepSeek-V2 (236B, models/deepseek-v2/config.json) at 32K context and 16 sequences in bf16 on one node of eight
 * 80 GB devices, sharded: every device at most 76 GB (the bound, room for the CUDA context, NCCL and
 * cuBLAS workspaces). */
static void v2_sharded_fits_one_node(void **state)
{
    (void)state;
    const char *args[] = { "info",    "-m",    "models/deepseek-v2",
                           "--plan",  "8:80",  "--layout",
                           "sharded", "--ctx", "32768",
                           "--batch", "16",    NULL };
    CliRun r = cli_run(args);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "plan         sharded layout, 8 devices of 80.0 GB, 32768 positions x 16 sequences"));
    int devices = 0;
    for (const char *p = strstr(r.out, "  device "); p; p = strstr(p + 1, "  device ")) {
        const char *total = strstr(p, "total ");
        assert_non_null(total);
        const double gb = atof(total + 6);
        printf("DeepSeek-V2 sharded over 8: device %d plans %.3f GB\n", devices, gb);
        assert_true(gb > 60 && gb <= 76.0);
        devices++;
    }
    assert_int_equal(devices, 8);
    cli_run_free(&r);
}

int main(void)
{
    setenv("SIM_DEVICE_COUNT", "4", 1); /* before the first CUDA call */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bf16_one_slot),
        cmocka_unit_test(float32_batch),
        cmocka_unit_test(refuses),
        cmocka_unit_test(cli_plan),
        cmocka_unit_test(v2_sharded_fits_one_node),
    };
    return cmocka_run_group_tests(tests, stw_group_setup, stw_group_teardown);
}
