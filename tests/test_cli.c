/**
 * \file test_cli.c
 * \brief The command line (dsv2.c): exit status and the exact stderr line for malformed
 * commands and inputs, `dsv2 logits` output (bytes equal to model_forward's logits, nothing
 * left behind on failure), `dsv2 generate` greedy output, and `dsv2 info`'s MLA cache line.
 *
 * Runs the built program: $DSV2_BIN when set, else build/dsv2 (`make test` builds it first).
 */
#include "check.h"
#include "cli_run.h"
#include "error.h"
#include "model.h"
#include "sample.h"
#include "st_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Path of a scratch file (each call returns a new malloc'd string). */
static char *scratch(const char *name) { return stw_path(stw_scratch_dir, name); }

/* Runs args and expects the exit status and the exact stderr text. */
static void expect(const char *const *args, int status, const char *err)
{
    CliRun r = cli_run(args);
    assert_string_equal(r.err, err);
    assert_int_equal(r.status, status);
    cli_run_free(&r);
}

#define HINT "(run 'dsv2 help' for usage)\n"

static void malformed_command_lines(void **state)
{
    (void)state;
    expect((const char *[]){"frobnicate", NULL}, 2,
           "dsv2: unknown command 'frobnicate' (run 'dsv2 help' for usage)\n");
    expect((const char *[]){"generate", "--bogus", "1", NULL}, 2,
           "dsv2: unknown option '--bogus' for 'generate'\n" HINT);
    expect((const char *[]){"info", "-m", NULL}, 2, "dsv2: option '-m' needs a value\n" HINT);
    expect((const char *[]){"info", NULL}, 2, "dsv2: 'info' needs -m DIR (a model directory)\n" HINT);
    expect((const char *[]){"generate", "-m", "x", "-n", "ten", NULL}, 2,
           "dsv2: -n: 'ten' is not an integer in [0, 2147483647]\n");
    expect((const char *[]){"generate", "-m", "x", "-n", "-1", NULL}, 2,
           "dsv2: -n: '-1' is not an integer in [0, 2147483647]\n");
    expect((const char *[]){"generate", "-m", "x", "-n", "5x", NULL}, 2,
           "dsv2: -n: '5x' is not an integer in [0, 2147483647]\n");
    expect((const char *[]){"generate", "-m", "x", "-t", "hot", NULL}, 2,
           "dsv2: -t: 'hot' is not a number in [0, 100]\n");
    expect((const char *[]){"generate", "-m", "x", "--top-p", "1.5", NULL}, 2,
           "dsv2: --top-p: '1.5' is not a number in [0, 1]\n");
    expect((const char *[]){"generate", "-m", "x", "--top-p", "", NULL}, 2,
           "dsv2: --top-p: '' is not a number in [0, 1]\n");
}

static void malformed_ids(void **state)
{
    (void)state;
    expect((const char *[]){"generate", "-m", "tests/golden/lite", "--ids", "1,,2", NULL}, 2,
           "dsv2: --ids: '1,,2' is not a comma-separated list of token ids (problem at "
           "character 3)\n");
    expect((const char *[]){"generate", "-m", "tests/golden/lite", "--ids", "1,-2", NULL}, 2,
           "dsv2: --ids: '1,-2' is not a comma-separated list of token ids (problem at "
           "character 3)\n");
    expect((const char *[]){"generate", "-m", "tests/golden/lite", "--ids", "7,x", NULL}, 2,
           "dsv2: --ids: '7,x' is not a comma-separated list of token ids (problem at "
           "character 3)\n");
}

/* An empty prompt is refused, as text or as ids. */
static void empty_prompt(void **state)
{
    (void)state;
    expect((const char *[]){"generate", "-m", "models/tiny-kjv", "-p", "", NULL}, 1,
           "dsv2: -p: the prompt is empty\n");
    expect((const char *[]){"generate", "-m", "tests/golden/lite", "--ids", "", NULL}, 2,
           "dsv2: --ids: '' is not a comma-separated list of token ids (problem at character 1)\n");
}

static void missing_model_directory(void **state)
{
    (void)state;
    expect((const char *[]){"info", "-m", "tests/golden/none", NULL}, 1,
           "dsv2: tests/golden/none: no such model directory\n");
    expect((const char *[]){"generate", "-m", "tests/golden/none", "--ids", "1", NULL}, 1,
           "dsv2: tests/golden/none: no such model directory\n");
}

/* model_forward's logits for every position, as `dsv2 logits` opens the model (defaults). */
static float *reference_logits(const int *ids, int T, int *vocab)
{
    Model m;
    if (model_open(&m, "tests/golden/lite", NULL)) fail_msg("%s", ds_last_error());
    *vocab = m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * T * *vocab);
    assert_non_null(logits);
    poison(logits, (size_t)T * *vocab);
    assert_int_equal(model_forward(&m, ids, T, logits, true), 0);
    model_close(&m);
    return logits;
}

static void logits_file_equals_model_forward(void **state)
{
    (void)state;
    char *out = scratch("logits.bin");
    expect((const char *[]){"logits", "-m", "tests/golden/lite", "--ids", "5,17,300,2", "-o", out,
                            NULL}, 0, "");
    const int ids[4] = {5, 17, 300, 2};
    int V;
    float *want = reference_logits(ids, 4, &V);
    size_t len;
    char *got = slurp(out, &len);
    assert_int_equal(len, 4 * (size_t)V * sizeof(float));      /* exactly T · vocab · 4 bytes */
    /* the same library calls on the same inputs: bit-identical */
    check_close("dsv2 logits vs model_forward", (const float *)got, want, 4 * (size_t)V, 0, 0);
    free(got);
    free(want);
    unlink(out);
    free(out);
}

/* True when path exists. */
static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void failed_logits_leave_no_file(void **state)
{
    (void)state;
    char *out = scratch("bad.bin"), *partial = scratch("bad.bin.partial");
    expect((const char *[]){"logits", "-m", "tests/golden/lite", "--ids", "1,512", "-o", out, NULL},
           1, "dsv2: token id 512 at position 1 is outside the vocabulary [0, 512)\n");
    assert_false(exists(out));
    assert_false(exists(partial));
    /* an existing file is left as it was */
    assert_int_equal(stw_write_text(out, "old"), 0);
    expect((const char *[]){"logits", "-m", "tests/golden/lite", "--ids", "1,512", "-o", out, NULL},
           1, "dsv2: token id 512 at position 1 is outside the vocabulary [0, 512)\n");
    char *kept = slurp(out, NULL);
    assert_string_equal(kept, "old");
    free(kept);
    assert_false(exists(partial));
    unlink(out);
    /* an unwritable destination */
    char *nowhere = scratch("no/such/dir/x.bin"), msg[1024];
    snprintf(msg, sizeof msg, "dsv2: %s.partial: No such file or directory\n", nowhere);
    expect((const char *[]){"logits", "-m", "tests/golden/lite", "--ids", "1,2", "-o", nowhere,
                            NULL}, 1, msg);
    free(nowhere);
    expect((const char *[]){"logits", "-m", "tests/golden/lite", "--ids", "1,2", NULL}, 2,
           "dsv2: logits needs -o FILE\n");
    free(out);
    free(partial);
}

static void generate_greedy_continuation(void **state)
{
    (void)state;
    CliRun r = cli_run((const char *[]){"generate", "-m", "tests/golden/lite", "--ids", "5,17,300", "-n",
                                         "6", NULL});
    assert_int_equal(r.status, 0);
    /* the same continuation, made here with model_forward and argmax */
    Model m;
    if (model_open(&m, "tests/golden/lite", NULL)) fail_msg("%s", ds_last_error());
    const int V = m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * V);
    assert_non_null(logits);
    int ids[9] = {5, 17, 300};
    assert_int_equal(model_forward(&m, ids, 3, logits, false), 0);
    char want[256];
    int len = snprintf(want, sizeof want, "5,17,300");
    for (int i = 3; i < 9; i++) {
        ids[i] = sample_argmax(logits, V);
        len += snprintf(want + len, sizeof want - (size_t)len, ",%d", ids[i]);
        if (ids[i] == m.cfg->eos_token_id) break;
        assert_int_equal(model_forward(&m, &ids[i], 1, logits, false), 0);
    }
    snprintf(want + len, sizeof want - (size_t)len, "\n");
    assert_string_equal(r.out, want);
    free(logits);
    model_close(&m);
    cli_run_free(&r);
}

static void info_prints_mla_cache(void **state)
{
    (void)state;
    CliRun r = cli_run((const char *[]){"info", "-m", "tests/golden/v2", NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, "");
    /* golden v2: d_c 32 + d_r 8 = 40 elements × 3 layers = 120 elements, 240 bytes in bf16 */
    const char *line = "  MLA          (d_c + d_r) l =        120 elements = 240 bytes in bf16\n";
    if (!strstr(r.out, line)) fail_msg("no line \"%s\" in:\n%s", line, r.out);
    assert_non_null(strstr(r.out, "layers       3: 1 dense, 2 MoE (8 routed experts, 3 per token, 2 shared)\n"));
    assert_non_null(strstr(r.out, "model        tests/golden/v2 (89 tensors in 2 files)\n"));
    cli_run_free(&r);
}

/* `--backend fast` (float32 mode, on the simulated device here) generates the same greedy
 * continuation as `--backend ref` on every golden fixture. */
static void fast_backend_generates_ref_text(void **state)
{
    (void)state;
    static const char *const fixtures[] = {"tests/golden/lite", "tests/golden/v2", "tests/golden/norope",
                                           "tests/golden/longctx"};
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        CliRun ref = cli_run((const char *[]){"generate", "-m", fixtures[i], "--ids", "3,14,15,92,65", "-n", "16",
                                              NULL});
        CliRun fast = cli_run((const char *[]){"generate", "-m", fixtures[i], "--ids", "3,14,15,92,65", "-n", "16",
                                               "--backend", "fast", NULL});
        assert_int_equal(ref.status, 0);
        assert_int_equal(fast.status, 0);
        assert_string_equal(fast.out, ref.out);
        cli_run_free(&ref);
        cli_run_free(&fast);
    }
    expect((const char *[]){"generate", "-m", "tests/golden/lite", "--ids", "1", "--backend", "gpu", NULL}, 2,
           "dsv2: --backend gpu: expected 'ref' or 'fast'\n" HINT);
}

/* Writes a config.json of the released model (layers, dims and routing as SPEC §1.1) to dir. */
static char *released_config(const char *name, int D, int L, int heads, int q_lora, int I, int Ie,
                             int E, const char *method, int G, int Gk, double scale)
{
    char *dir = scratch(name), text[2048];
    mkdir(dir, 0755);
    char q[16];
    if (q_lora) snprintf(q, sizeof q, "%d", q_lora);
    else snprintf(q, sizeof q, "null");
    snprintf(text, sizeof text,
             "{\"vocab_size\": 102400, \"hidden_size\": %d, \"num_hidden_layers\": %d,"
             " \"num_attention_heads\": %d, \"q_lora_rank\": %s, \"kv_lora_rank\": 512,"
             " \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, \"v_head_dim\": 128,"
             " \"intermediate_size\": %d, \"moe_intermediate_size\": %d, \"n_routed_experts\": %d,"
             " \"n_shared_experts\": 2, \"num_experts_per_tok\": 6, \"first_k_dense_replace\": 1,"
             " \"moe_layer_freq\": 1, \"topk_method\": \"%s\", \"n_group\": %d, \"topk_group\": %d,"
             " \"norm_topk_prob\": false, \"routed_scaling_factor\": %g, \"scoring_func\": \"softmax\","
             " \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000, \"max_position_embeddings\": 163840,"
             " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": 4096,"
             " \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 0.707, \"mscale_all_dim\": 0.707},"
             " \"bos_token_id\": 100000, \"eos_token_id\": 100001, \"tie_word_embeddings\": false}\n",
             D, L, heads, q, I, Ie, E, method, G, Gk, scale);
    char *path = stw_path(dir, "config.json");
    assert_int_equal(stw_write_text(path, text), 0);
    free(path);
    return dir;
}

/* `dsv2 info` on the released configs reproduces SPEC §1.3's parameter counts (which match
 * the observed V2-Lite checkpoint) and §5.3's KV cache per token. */
static void info_matches_released_models(void **state)
{
    (void)state;
    char *lite = released_config("v2-lite", 2048, 27, 16, 0, 10944, 1408, 64, "greedy", 1, 1, 1.0);
    char *v2 = released_config("v2", 5120, 60, 128, 1536, 12288, 1536, 160, "group_limited_greedy", 8, 3, 16.0);
    CliRun r = cli_run((const char *[]){"info", "-m", lite, NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "parameters   15706484224 total"));
    assert_non_null(strstr(r.out, "(d_c + d_r) l =      15552 elements = 31104 bytes in bf16"));
    cli_run_free(&r);
    r = cli_run((const char *[]){"info", "-m", v2, NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "parameters   235741434880 total"));
    assert_non_null(strstr(r.out, "(d_c + d_r) l =      34560 elements = 69120 bytes in bf16"));
    assert_non_null(strstr(r.out, "MHA          2 n_h d_h l  =    1966080 elements"));  /* 2·128·128·60 */
    cli_run_free(&r);
    free(lite);
    free(v2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malformed_command_lines),
        cmocka_unit_test(malformed_ids),
        cmocka_unit_test(empty_prompt),
        cmocka_unit_test(missing_model_directory),
        cmocka_unit_test(logits_file_equals_model_forward),
        cmocka_unit_test(failed_logits_leave_no_file),
        cmocka_unit_test(generate_greedy_continuation),
        cmocka_unit_test(info_prints_mla_cache),
        cmocka_unit_test(info_matches_released_models),
        cmocka_unit_test(fast_backend_generates_ref_text),
    };
    return cmocka_run_group_tests_name("cli", tests, stw_group_setup, stw_group_teardown);
}
