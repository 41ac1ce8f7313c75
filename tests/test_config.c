/**
 * \file test_config.c
 * \brief config.json: released layouts load with the right values; every malformed or
 * out-of-range key is refused with one line naming the file, the key and the value.
 *
 * Each bad config is the golden Lite (or V2) config with one key changed, written
 * into a scratch directory, so a failure can only come from that key.
 */
#include "check.h"
#include "config.h"
#include "error.h"
#include "st_writer.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_path; /**< the config file the tests write and load, in the suite's scratch directory */

static int group_setup(void **state)
{
    if (stw_group_setup(state)) return -1;
    g_path = stw_path(stw_scratch_dir, "config.json");
    return g_path ? 0 : -1;
}

static int group_teardown(void **state)
{
    free(g_path);
    return stw_group_teardown(state);
}

/* A golden fixture's config.json as a JSON object (the caller decrefs). */
static json_t *golden(const char *fixture)
{
    char path[256];
    snprintf(path, sizeof path, "tests/golden/%s/config.json", fixture);
    json_t *root = json_load_file(path, 0, NULL);
    if (!root) fail_msg("cannot read %s", path);
    return root;
}

/* Writes root to g_path and decrefs it. */
static void write_config(json_t *root)
{
    assert_int_equal(json_dump_file(root, g_path, JSON_INDENT(1)), 0);
    json_decref(root);
}

/* config_load(g_path) must fail with exactly "<g_path>: <want>". */
static void expect_error(const char *want)
{
    char line[1024];
    snprintf(line, sizeof line, "%s: %s", g_path, want);
    ModelConfig c;
    ds_error_clear();
    assert_int_equal(config_load(g_path, &c), -1);
    assert_string_equal(ds_last_error(), line);
}

/* The config root with key of obj (root or an object in it) set to value (NULL value: key
 * removed), written and loaded, expecting want. */
static void expect_edit_error(json_t *root, json_t *obj, const char *key, json_t *value, const char *want)
{
    if (value)
        json_object_set_new(obj, key, value);
    else
        json_object_del(obj, key);
    write_config(root);
    expect_error(want);
}

/* The fixture's config with key set to value (NULL value: key removed), expecting want. */
static void expect_key_error(const char *fixture, const char *key, json_t *value, const char *want)
{
    json_t *root = golden(fixture);
    expect_edit_error(root, root, key, value, want);
}

/* The same inside rope_scaling. */
static void expect_rope_error(const char *key, json_t *value, const char *want)
{
    json_t *root = golden("lite");
    expect_edit_error(root, json_object_get(root, "rope_scaling"), key, value, want);
}

static ModelConfig load_ok(const char *path)
{
    ModelConfig c;
    if (config_load(path, &c)) fail_msg("%s", ds_last_error());
    return c;
}

/* The fixture's config with key set to value must load (a value equal to the implemented one,
 * or a key without effect on inference); returns what it loads as. */
static ModelConfig expect_key_loads(const char *fixture, const char *key, json_t *value)
{
    json_t *root = golden(fixture);
    json_object_set_new(root, key, value);
    write_config(root);
    return load_ok(g_path);
}

/* The Lite config with N_s = n_shared shared experts of I_e = inter rows, written to g_path. */
static void write_shared_experts(json_int_t n_shared, json_int_t inter)
{
    json_t *root = golden("lite");
    json_object_set_new(root, "n_shared_experts", json_integer(n_shared));
    json_object_set_new(root, "moe_intermediate_size", json_integer(inter));
    write_config(root);
}

static void released_layouts(void **state)
{
    (void)state;
    ModelConfig c = load_ok("tests/golden/lite/config.json");
    assert_int_equal(c.vocab_size, 512);
    assert_int_equal(c.hidden_size, 64);
    assert_int_equal(c.q_lora_rank, 0); /* null: no query compression */
    assert_int_equal(c.kv_lora_rank, 32);
    assert_int_equal(config_qk_head_dim(&c), 24);
    assert_int_equal(c.topk_method, TOPK_GREEDY);
    assert_int_equal(c.n_routed_experts, 8);
    assert_int_equal(c.num_experts_per_tok, 2);
    assert_true(c.rope_yarn);
    assert_true(c.rope_factor == 40.0f && c.rope_mscale == 0.707f && c.rope_mscale_all_dim == 0.707f);
    assert_int_equal(c.rope_original_max_position, 4096);
    assert_true(c.rms_norm_eps == 1e-6f);
    assert_false(config_layer_is_moe(&c, 0));
    assert_true(config_layer_is_moe(&c, 1) && config_layer_is_moe(&c, 2));

    c = load_ok("tests/golden/v2/config.json");
    assert_int_equal(c.q_lora_rank, 48);
    assert_int_equal(c.topk_method, TOPK_GROUP_LIMITED_GREEDY);
    assert_int_equal(c.n_group, 4);
    assert_int_equal(c.topk_group, 2);
    assert_true(c.routed_scaling_factor == 16.0f);
    assert_false(c.norm_topk_prob);

    c = load_ok("tests/golden/norope/config.json");
    assert_false(c.rope_yarn);
}

static void optional_keys_take_remote_code_defaults(void **state)
{
    (void)state;
    json_t *root = golden("lite");
    static const char *const optional[] = {
        "moe_layer_freq", "n_group",    "topk_group",   "norm_topk_prob", "routed_scaling_factor",
        "scoring_func",   "rope_theta", "bos_token_id", "eos_token_id",   "tie_word_embeddings"
    };
    for (size_t i = 0; i < sizeof optional / sizeof *optional; i++) json_object_del(root, optional[i]);
    json_object_del(json_object_get(root, "rope_scaling"), "beta_fast");
    json_object_del(json_object_get(root, "rope_scaling"), "mscale_all_dim");
    write_config(root);
    ModelConfig c = load_ok(g_path);
    assert_int_equal(c.moe_layer_freq, 1);
    assert_int_equal(c.n_group, 1);
    assert_int_equal(c.topk_group, 1);
    assert_false(c.norm_topk_prob);
    assert_true(c.routed_scaling_factor == 1.0f);
    assert_int_equal(c.scoring_func, SCORING_SOFTMAX);
    assert_true(c.rope_theta == 10000.0f);
    assert_int_equal(c.bos_token_id, -1);
    assert_true(c.rope_beta_fast == 32.0f);
    assert_true(c.rope_mscale_all_dim == 0.0f); /* R's default: no softmax m² */
}

static void rope_parameters_layout(void **state)
{
    (void)state;
    /* transformers ≥ 5 writes rope_parameters with rope_type and rope_theta inside */
    json_t *root = golden("lite"), *rs = json_object_get(root, "rope_scaling");
    json_incref(rs);
    json_object_del(root, "rope_scaling");
    json_object_del(root, "rope_theta");
    json_object_set_new(rs, "rope_type", json_string("yarn"));
    json_object_del(rs, "type");
    json_object_set_new(rs, "rope_theta", json_real(50000.0));
    json_object_set_new(root, "rope_parameters", rs);
    write_config(root);
    ModelConfig c = load_ok(g_path);
    assert_true(c.rope_yarn);
    assert_true(c.rope_theta == 50000.0f);
    assert_true(c.rope_factor == 40.0f);
}

static void moe_layer_frequency(void **state)
{
    (void)state;
    json_t *root = golden("lite");
    json_object_set_new(root, "num_hidden_layers", json_integer(6));
    json_object_set_new(root, "first_k_dense_replace", json_integer(1));
    json_object_set_new(root, "moe_layer_freq", json_integer(2));
    write_config(root);
    ModelConfig c = load_ok(g_path);
    const bool want[6] = { false, false, true, false, true, false }; /* l ≥ 1 and l % 2 == 0 */
    for (int l = 0; l < 6; l++) assert_int_equal(config_layer_is_moe(&c, l), want[l]);
    c = expect_key_loads("lite", "n_routed_experts", json_null()); /* no experts: every layer dense */
    for (int l = 0; l < c.num_hidden_layers; l++) assert_false(config_layer_is_moe(&c, l));
}

static void missing_file(void **state)
{
    (void)state;
    ModelConfig c;
    assert_int_equal(config_load("tests/golden/none/config.json", &c), -1);
    assert_string_equal(ds_last_error(), "tests/golden/none/config.json: cannot open: No such file "
                                         "or directory");
}

static void invalid_json(void **state)
{
    (void)state;
    assert_int_equal(stw_write_text(g_path, "{\n  \"vocab_size\": 512,\n  \"hidden_size\": }\n"), 0);
    expect_error("line 3, column 18: unexpected token near '}'");
    assert_int_equal(stw_write_text(g_path, "[1, 2]"), 0);
    expect_error("expected a JSON object at the top level");
}

static void duplicate_key(void **state)
{
    (void)state;
    assert_int_equal(stw_write_text(g_path, "{\"vocab_size\": 512,\n\"vocab_size\": 1024}"), 0);
    expect_error("line 2, column 12: duplicate object key near '\"vocab_size\"'");
}

static void missing_keys(void **state)
{
    (void)state;
    static const char *const required[] = { "vocab_size",
                                            "hidden_size",
                                            "num_hidden_layers",
                                            "num_attention_heads",
                                            "q_lora_rank",
                                            "kv_lora_rank",
                                            "qk_nope_head_dim",
                                            "qk_rope_head_dim",
                                            "v_head_dim",
                                            "intermediate_size",
                                            "max_position_embeddings",
                                            "rms_norm_eps",
                                            "moe_intermediate_size",
                                            "n_shared_experts",
                                            "num_experts_per_tok",
                                            "topk_method",
                                            "first_k_dense_replace" };
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        char want[128];
        snprintf(want, sizeof want, "key '%s' is missing", required[i]);
        expect_key_error("lite", required[i], NULL, want);
    }
    expect_rope_error("factor", NULL, "key 'factor' is missing (in 'rope_scaling')");
    expect_rope_error("type", NULL, "key 'rope_scaling.rope_type' is missing or not a string");
}

static void wrong_types(void **state)
{
    (void)state;
    expect_key_error("lite", "hidden_size", json_string("64"), "key 'hidden_size': expected an integer, got a string");
    expect_key_error("lite", "kv_lora_rank", json_real(32.0), "key 'kv_lora_rank': expected an integer, got a number");
    expect_key_error("lite", "q_lora_rank", json_true(), "key 'q_lora_rank': expected an integer, got a boolean");
    expect_key_error("lite", "rms_norm_eps", json_string("1e-6"),
                     "key 'rms_norm_eps': expected a number, got a string");
    expect_key_error("lite", "norm_topk_prob", json_integer(1),
                     "key 'norm_topk_prob': expected a boolean, got an integer");
    expect_key_error("lite", "topk_method", json_array(), "key 'topk_method': expected a string, got an array");
    expect_key_error("lite", "rope_scaling", json_integer(40),
                     "key 'rope_scaling': expected an object, got an integer");
    expect_rope_error("factor", json_string("40"), "key 'factor': expected a number, got a string (in 'rope_scaling')");
}

static void out_of_range_values(void **state)
{
    (void)state;
    expect_key_error("lite", "kv_lora_rank", json_integer(0), "key 'kv_lora_rank': 0 is out of range [1, 16777216]");
    expect_key_error("lite", "hidden_size", json_integer(-64), "key 'hidden_size': -64 is out of range [1, 16777216]");
    expect_key_error("lite", "num_experts_per_tok", json_integer(9),
                     "key 'num_experts_per_tok': 9 is out of range [1, 8]");
    expect_key_error("lite", "first_k_dense_replace", json_integer(4),
                     "key 'first_k_dense_replace': 4 is out of range [0, 3]");
    expect_key_error("lite", "rms_norm_eps", json_real(-1e-6), "key 'rms_norm_eps': -1e-06 is out of range [0, 1]");
    /* the router's and RoPE's fixed buffers bound these two */
    expect_key_error("lite", "n_routed_experts", json_integer(1025),
                     "key 'n_routed_experts': 1025 is out of range [1, 1024]");
    expect_key_error("lite", "qk_rope_head_dim", json_integer(1026),
                     "key 'qk_rope_head_dim': 1026 is out of range [2, 1024]");
    expect_key_error("lite", "qk_rope_head_dim", json_integer(7),
                     "key 'qk_rope_head_dim': 7 is odd; RoPE rotates pairs");
    expect_key_error("v2", "n_group", json_integer(3), "key 'n_group': 3 does not divide n_routed_experts 8");
    expect_key_error("v2", "topk_group", json_integer(5), "key 'topk_group': 5 is out of range [1, 4]");
    /* group_limited_greedy: K = 3 cannot be picked from 1 group of 2 experts */
    expect_key_error("v2", "topk_group", json_integer(1),
                     "key 'num_experts_per_tok': 3 exceeds the 2 experts in topk_group 1 groups");
    expect_key_error("lite", "tie_word_embeddings", json_true(),
                     "key 'tie_word_embeddings': true is not a DeepSeek-V2 layout");
    /* a context must hold a prompt token and the one it predicts */
    expect_key_error("lite", "max_position_embeddings", json_integer(1),
                     "key 'max_position_embeddings': 1 is out of range [2, 1073741824]");
    /* special ids are positions in the embedding table */
    expect_key_error("lite", "bos_token_id", json_integer(512),
                     "key 'bos_token_id': 512 is outside the vocabulary [0, 512) of key 'vocab_size'");
    expect_key_error("lite", "eos_token_id", json_integer(100001),
                     "key 'eos_token_id': 100001 is outside the vocabulary [0, 512) of key 'vocab_size'");
}

/* N_s·I_e is one matrix's row count: 65536 × 65536 = 2^32 would wrap an int to 0 rows. */
static void products_overflowing_a_matrix(void **state)
{
    (void)state;
    write_shared_experts(65536, 65536);
    expect_error("keys 'n_shared_experts' x 'moe_intermediate_size': 65536 x 65536 = 4294967296 "
                 "exceeds 2147483647, the widest weight matrix the code can address");
    /* the edge: 128 × (2^24 − 1) = 2^31 − 128 fits; 128 × 2^24 = 2^31 does not */
    write_shared_experts(128, (1 << 24) - 1);
    ModelConfig c = load_ok(g_path);
    assert_int_equal((int64_t)c.n_shared_experts * c.moe_intermediate_size, 2147483520);
    write_shared_experts(128, 1 << 24);
    expect_error("keys 'n_shared_experts' x 'moe_intermediate_size': 128 x 16777216 = 2147483648 "
                 "exceeds 2147483647, the widest weight matrix the code can address");
}

/* Keys transformers' DeepseekV2Config reads, with values selecting a variant this code does not
 * implement: one line naming the key and the only value implemented. */
static void unimplemented_values_refused(void **state)
{
    (void)state;
    expect_key_error("lite", "hidden_act", json_string("gelu"),
                     "key 'hidden_act': \"gelu\" is not implemented; the only supported value is \"silu\"");
    expect_key_error("lite", "attention_bias", json_true(),
                     "key 'attention_bias': true is not implemented; the only supported value is false");
    expect_key_error("lite", "mlp_bias", json_true(),
                     "key 'mlp_bias': true is not implemented; the only supported value is false");
    expect_key_error("lite", "num_key_value_heads", json_integer(1),
                     "key 'num_key_value_heads': 1 is not implemented; the only supported value is 4");
    expect_key_error("lite", "partial_rotary_factor", json_real(0.5),
                     "key 'partial_rotary_factor': 0.5 is not implemented; the only supported value is 1");
    expect_rope_error("partial_rotary_factor", json_real(0.5),
                      "key 'rope_scaling.partial_rotary_factor': 0.5 is not implemented; the only "
                      "supported value is 1");
    expect_rope_error("attention_factor", json_real(1.2),
                      "key 'rope_scaling.attention_factor': 1.2 is not implemented; the only "
                      "supported value is null");
    expect_rope_error("truncate", json_false(),
                      "key 'rope_scaling.truncate': false is not implemented; the only supported "
                      "value is true");
    /* a boolean is not a number: 0 for attention_bias is refused too */
    expect_key_error("lite", "attention_bias", json_integer(0),
                     "key 'attention_bias': 0 is not implemented; the only supported value is false");
    /* the implemented values, spelled out, load */
    expect_key_loads("lite", "hidden_act", json_string("silu"));
    expect_key_loads("lite", "attention_bias", json_false());
    expect_key_loads("lite", "num_key_value_heads", json_integer(4));
    expect_key_loads("lite", "partial_rotary_factor", json_real(1.0));
    /* null is transformers' default for these (no bias, one key/value head per head) */
    expect_key_loads("lite", "attention_bias", json_null());
    expect_key_loads("lite", "num_key_value_heads", json_null());
    expect_key_error("lite", "hidden_act", json_null(),
                     "key 'hidden_act': null is not implemented; the only supported value is \"silu\"");
    expect_rope_error("truncate", json_null(),
                      "key 'rope_scaling.truncate': null is not implemented; the only supported "
                      "value is true");
}

/* Keys without effect on inference (config.h lists them) load whatever their value. */
static void keys_without_effect_ignored(void **state)
{
    (void)state;
    expect_key_loads("lite", "initializer_range", json_real(0.5));
    expect_key_loads("lite", "use_cache", json_false());
    expect_key_loads("lite", "pad_token_id", json_integer(7));
    expect_key_loads("lite", "pretraining_tp", json_integer(4));
    expect_key_loads("lite", "attention_dropout", json_real(0.3));
    expect_key_loads("lite", "aux_loss_alpha", json_real(0.01));
    expect_key_loads("lite", "head_dim", json_integer(99)); /* transformers rederives it */
}

static void unknown_names(void **state)
{
    (void)state;
    expect_key_error("lite", "topk_method", json_string("gready"), "key 'topk_method': unknown value \"gready\"");
    expect_key_error("lite", "scoring_func", json_string("relu"), "key 'scoring_func': unknown value \"relu\"");
    expect_rope_error("type", json_string("linear"), "key 'rope_scaling.type': unknown value \"linear\"");
    expect_key_error("lite", "scoring_func", json_string("sigmoid"),
                     "key 'scoring_func': \"sigmoid\" does not go with topk_method \"greedy\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(released_layouts),
        cmocka_unit_test(optional_keys_take_remote_code_defaults),
        cmocka_unit_test(rope_parameters_layout),
        cmocka_unit_test(moe_layer_frequency),
        cmocka_unit_test(missing_file),
        cmocka_unit_test(invalid_json),
        cmocka_unit_test(duplicate_key),
        cmocka_unit_test(missing_keys),
        cmocka_unit_test(wrong_types),
        cmocka_unit_test(out_of_range_values),
        cmocka_unit_test(unknown_names),
        cmocka_unit_test(products_overflowing_a_matrix),
        cmocka_unit_test(unimplemented_values_refused),
        cmocka_unit_test(keys_without_effect_ignored),
    };
    return cmocka_run_group_tests_name("config", tests, group_setup, group_teardown);
}
