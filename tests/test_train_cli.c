/**
 * \file test_train_cli.c
 * \brief `dsv2 train` run as a subprocess on a 0.3M-parameter config (MLA with q compression, a
 * dense layer then a MoE layer with a shared expert and group-limited routing) and a 3 kB text.
 *
 * Evidence: the checkpoint it writes loads in `dsv2 logits`, and the mean cross-entropy of those
 * logits equals the training forward's (train_forward_backward() on the same weights, opened
 * here) within 1e-5 relative — the two forwards sum in different orders (inference keeps a
 * latent cache, training does not), which moves float32 results by about 1e-7; a wrong weight
 * name, shape or order changes the loss by far more. A run of 6 steps equals one stopped after 3
 * and resumed, byte for byte in weights, optimizer state and log. Each bad input gets its exact
 * line and exit status.
 */
#include "check.h"
#include "cli_run.h"
#include "error.h"
#include "model.h"
#include "st_writer.h"
#include "train_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char CONFIG[] =
    "{\"model_type\": \"deepseek_v2\", \"vocab_size\": 4096, \"hidden_size\": 32,\n"
    " \"num_hidden_layers\": 2, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1,\n"
    " \"num_attention_heads\": 2, \"num_key_value_heads\": 2, \"q_lora_rank\": 16, \"kv_lora_rank\": 16,\n"
    " \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 8, \"intermediate_size\": 64,\n"
    " \"moe_intermediate_size\": 16, \"n_routed_experts\": 8, \"n_shared_experts\": 1,\n"
    " \"num_experts_per_tok\": 2, \"n_group\": 4, \"topk_group\": 2,\n"
    " %s,\n"
    " \"routed_scaling_factor\": 2.0, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-06,\n"
    " \"rope_theta\": 10000.0, \"bos_token_id\": 4094, \"eos_token_id\": 4095, \"initializer_range\": 0.02}\n";

/* The routing keys of the trainable config. */
static const char ROUTING[] = "\"topk_method\": \"group_limited_greedy\", \"scoring_func\": \"softmax\", "
                              "\"norm_topk_prob\": false";

static const char VERSE[] =
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
    "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.\n";

static char *scratch(const char *name)
{
    return stw_path(stw_scratch_dir, name);
}

/* Writes the config (routing: its topk_method, scoring_func and norm_topk_prob) and a 3 kB text; fills the paths. */
static void write_inputs(char **cfg, char **data, const char *routing)
{
    char text[4096];
    snprintf(text, sizeof text, CONFIG, routing);
    *cfg = scratch("config.json");
    *data = scratch("data.txt");
    assert_int_equal(stw_write_text(*cfg, text), 0);
    char body[16 * sizeof VERSE] = "";
    for (int i = 0; i < 15; i++) strcat(body, VERSE);
    assert_int_equal(stw_write_text(*data, body), 0);
}

/* Removes a run's directory and what dsv2 train writes there. */
static void remove_run(const char *dir)
{
    static const char *const files[] = { "config.json",    "model.safetensors",     "optimizer.bin",
                                         "tokenizer.json", "tokenizer_config.json", "train_log.jsonl" };
    char path[4200];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        remove(path);
    }
    rmdir(dir);
}

/* dsv2 train with the common options, then extra (NULL-terminated, up to 8). */
static CliRun train(const char *cfg, const char *data, const char *dir, const char *const *extra)
{
    const char *args[30] = { "train", "-c",         cfg,  "--data", data, "-o",       dir, "--steps",
                             "6",     "--batch",    "2",  "--seq",  "16", "--warmup", "2", "--eval-every",
                             "3",     "--capacity", "1.5" };
    int n = 19;
    for (int i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    return cli_run(args);
}

static void expect_train(const char *cfg, const char *data, const char *dir, const char *const *extra, int status,
                         const char *err)
{
    CliRun r = train(cfg, data, dir, extra);
    assert_string_equal(r.err, err);
    assert_int_equal(r.status, status);
    cli_run_free(&r);
}

static void checkpoint_loads_and_logits_match(void **state)
{
    (void)state;
    char *cfg, *data, *dir = scratch("run"), *out = scratch("logits.bin");
    write_inputs(&cfg, &data, ROUTING);
    CliRun r = train(cfg, data, dir, NULL);
    if (r.status) fail_msg("dsv2 train: %s", r.err);
    cli_run_free(&r);
    static const int ids[16] = { 4094, 300, 41, 1000, 7, 2048, 99, 5, 12, 600, 3000, 17, 256, 81, 4000, 2 };
    const char *args[] = { "logits", "-m", dir, "--ids", "4094,300,41,1000,7,2048,99,5,12,600,3000,17,256,81,4000,2",
                           "-o",     out,  NULL };
    r = cli_run(args);
    if (r.status) fail_msg("dsv2 logits: %s", r.err);
    cli_run_free(&r);
    size_t len;
    float *z = (float *)slurp(out, &len);
    const int T = 15, V = 4096; /* positions 0..14 predict ids 1..15 */
    assert_int_equal(len, sizeof(float) * 16 * V);
    double ce = 0;
    for (int t = 0; t < T; t++) {
        double max = z[t * V], sum = 0;
        for (int v = 1; v < V; v++) max = fmax(max, z[t * V + v]);
        for (int v = 0; v < V; v++) sum += exp(z[t * V + v] - max);
        ce += log(sum) + max - z[t * V + ids[t + 1]];
    }
    ce /= T;
    Model m;
    TrainModel tm;
    TrainLoss L;
    L.ce = NAN;
    if (model_open(&m, dir, NULL) || train_model_init(&tm, &m, NULL) ||
        train_forward_backward(&tm, ids, ids + 1, T, &L))
        fail_msg("%s", ds_last_error());
    const double rel = fabs(L.ce - ce) / ce;
    printf("# CE of dsv2 logits %.9f, of the training forward %.9f, relative %.2e\n", ce, L.ce, rel);
    assert_true(rel <= 1e-5);
    assert_true(L.ce < log(4096.0) + 0.5); /* finite, near ln V after 6 steps */
    train_model_free(&tm);
    model_close(&m);
    free(z);
    remove(out);
    remove_run(dir);
    free(out);
    free(dir);
    free(cfg);
    free(data);
}

static void expect_same_file(const char *a_dir, const char *b_dir, const char *name)
{
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/%s", a_dir, name);
    snprintf(pb, sizeof pb, "%s/%s", b_dir, name);
    size_t la, lb;
    char *a = slurp(pa, &la), *b = slurp(pb, &lb);
    assert_true(la > 0);
    assert_int_equal(la, lb);
    if (memcmp(a, b, la)) fail_msg("%s differs between the whole run and the resumed one", name);
    free(a);
    free(b);
}

static void resume_is_bit_identical(void **state)
{
    (void)state;
    char *cfg, *data, *a = scratch("whole"), *b = scratch("halves");
    write_inputs(&cfg, &data, ROUTING);
    CliRun r = train(cfg, data, a, NULL);
    assert_int_equal(r.status, 0);
    cli_run_free(&r);
    r = train(cfg, data, b, (const char *const[]){ "--stop-after", "3", NULL });
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "holds step 3 of 6"));
    cli_run_free(&r);
    r = train(cfg, data, b, (const char *const[]){ "--resume", NULL });
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "resuming after step 3"));
    cli_run_free(&r);
    expect_same_file(a, b, "model.safetensors");
    expect_same_file(a, b, "optimizer.bin");
    expect_same_file(a, b, "train_log.jsonl"); /* every step's loss, lr, norm and load */
    char line[8600];
    snprintf(line, sizeof line, "dsv2: --resume: %s/optimizer.bin was written with --batch 2, not 3\n", b);
    expect_train(cfg, data, b, (const char *const[]){ "--resume", "--batch", "3", NULL }, 1, line);
    remove_run(a);
    remove_run(b);
    free(a);
    free(b);
    free(cfg);
    free(data);
}

static void bad_inputs_get_one_line(void **state)
{
    (void)state;
    char *cfg, *data, *dir = scratch("bad"), *empty = scratch("empty.txt"), line[8600];
    write_inputs(&cfg, &data, ROUTING);
    assert_int_equal(stw_write_text(empty, ""), 0);
    expect_train(cfg, "/nonexistent/text", dir, NULL, 1, "dsv2: --data /nonexistent/text: No such file or directory\n");
    snprintf(line, sizeof line, "dsv2: --data %s: the file is empty\n", empty);
    expect_train(cfg, empty, dir, NULL, 1, line);
    char *tiny = scratch("tiny.txt"); /* BOS + 2 ids: no window of 16 + 1 */
    assert_int_equal(stw_write_text(tiny, "In the"), 0);
    snprintf(line, sizeof line, "dsv2: %s: 3 tokens, fewer than one sequence of 16 + 1\n", tiny);
    expect_train(cfg, tiny, dir, NULL, 1, line);
    assert_int_not_equal(access(dir, F_OK), 0); /* nothing written */
    remove(tiny);
    free(tiny);
    snprintf(line, sizeof line, "dsv2: --seq 100 is longer than the context (max_position_embeddings 64 in %s)\n", cfg);
    expect_train(cfg, data, dir, (const char *const[]){ "--seq", "100", NULL }, 1, line);
    expect_train(cfg, data, dir, (const char *const[]){ "--devices", "3", NULL }, 1,
                 "dsv2: --devices 3 does not divide n_routed_experts 8\n");
    expect_train(cfg, data, dir, (const char *const[]){ "--lr", "0", NULL }, 2,
                 "dsv2 train: --lr: '0' is not a number in [1e-12, 1e+06] (see dsv2 train --help)\n");
    const char *no_c[] = { "train", "--data", data, "-o", dir, NULL };
    CliRun r = cli_run(no_c);
    assert_string_equal(r.err, "dsv2 train: -c CONFIG.json is missing (see dsv2 train --help)\n");
    assert_int_equal(r.status, 2);
    cli_run_free(&r);
    /* a divergent run stops at the first non-finite loss and keeps the last good checkpoint */
    snprintf(line, sizeof line, "dsv2: step 3: the loss is not finite; stopped (%s keeps the checkpoint of step 2)\n",
             dir);
    r = train(cfg, data, dir, (const char *const[]){ "--lr", "1e6", "--warmup", "1", "--eval-every", "1", NULL });
    assert_non_null(strstr(r.err, line));
    assert_int_equal(r.status, 1);
    cli_run_free(&r);
    Model m;
    if (model_open(&m, dir, NULL)) fail_msg("the kept checkpoint: %s", ds_last_error());
    model_close(&m);
    remove_run(dir);
    /* a config key the trainer does not implement */
    free(cfg);
    free(data);
    write_inputs(&cfg, &data, "\"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\", \"norm_topk_prob\": true");
    snprintf(line, sizeof line, "dsv2: %s: topk_method noaux_tc: its bias update is not part of dsv2 train\n", cfg);
    expect_train(cfg, data, dir, NULL, 1, line);
    remove(empty);
    free(dir);
    free(empty);
    free(cfg);
    free(data);
}

/* Standard attention (GQA: 4 query heads over 2 key/value heads, RoPE on the whole head) trains
 * through the CLI, saves and resumes bit-identically like MLA, and generation refuses the
 * checkpoint with one line naming attention_type, printing nothing. */
static void standard_attention_trains_and_is_refused_by_generate(void **state)
{
    (void)state;
    static const char GQA[] =
        "{\"model_type\": \"deepseek_v2\", \"vocab_size\": 4096, \"hidden_size\": 32,\n"
        " \"num_hidden_layers\": 2, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1,\n"
        " \"num_attention_heads\": 4, \"attention_type\": \"gqa\", \"num_key_value_heads\": 2,\n"
        " \"qk_nope_head_dim\": 0, \"qk_rope_head_dim\": 8, \"v_head_dim\": 8, \"intermediate_size\": 64,\n"
        " \"moe_intermediate_size\": 16, \"n_routed_experts\": 8, \"n_shared_experts\": 1,\n"
        " \"num_experts_per_tok\": 2, \"n_group\": 4, \"topk_group\": 2, \"topk_method\": \"group_limited_greedy\",\n"
        " \"routed_scaling_factor\": 2.0, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-06,\n"
        " \"rope_theta\": 10000.0, \"bos_token_id\": 4094, \"eos_token_id\": 4095, \"initializer_range\": 0.02}\n";
    char *cfg, *data, *a = scratch("gqa_whole"), *b = scratch("gqa_halves");
    write_inputs(&cfg, &data, ROUTING);
    assert_int_equal(stw_write_text(cfg, GQA), 0);
    CliRun r = train(cfg, data, a, NULL);
    if (r.status) fail_msg("dsv2 train on a GQA config: %s", r.err);
    cli_run_free(&r);
    r = train(cfg, data, b, (const char *const[]){ "--stop-after", "3", NULL });
    assert_int_equal(r.status, 0);
    cli_run_free(&r);
    r = train(cfg, data, b, (const char *const[]){ "--resume", NULL });
    assert_int_equal(r.status, 0);
    cli_run_free(&r);
    expect_same_file(a, b, "model.safetensors");
    expect_same_file(a, b, "optimizer.bin");
    expect_same_file(a, b, "train_log.jsonl");
    r = cli_run((const char *const[]){ "generate", "-m", a, "-p", "In the", "-n", "4", NULL });
    char line[8600];
    snprintf(line, sizeof line,
             "dsv2: %s: key 'attention_type': \"gqa\" (standard attention) is implemented by dsv2 train only, "
             "not by inference (generate, chat, logits, fast/)\n",
             a);
    assert_int_equal(r.status, 1);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, line);
    cli_run_free(&r);
    remove_run(a);
    remove_run(b);
    free(a);
    free(b);
    free(cfg);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(checkpoint_loads_and_logits_match),
        cmocka_unit_test(resume_is_bit_identical),
        cmocka_unit_test(bad_inputs_get_one_line),
        cmocka_unit_test(standard_attention_trains_and_is_refused_by_generate),
    };
    return cmocka_run_group_tests_name("train_cli", tests, stw_group_setup, stw_group_teardown);
}
