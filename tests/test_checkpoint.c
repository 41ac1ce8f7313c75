/**
 * \file test_checkpoint.c
 * \brief Model directories: single and sharded checkpoints open; a broken directory, index,
 * shard or tensor, a token outside the vocabulary and a prompt longer than the context are
 * refused with one exact line, before anything is computed.
 *
 * The broken checkpoints are copies of the golden fixtures (tests/golden/lite, v2) with
 * one thing changed, written by the test into a scratch directory (st_writer.h).
 */
#include "check.h"
#include "checkpoint.h"
#include "error.h"
#include "model.h"
#include "st_writer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const kShard1 = "model-00001-of-000002.safetensors";
static const char *const kShard2 = "model-00002-of-000002.safetensors";

/* A fresh scratch directory per test (made by setup, removed by teardown). */
static int dir_setup(void **state)
{
    *state = stw_mkdtemp();
    return *state ? 0 : -1;
}

static int dir_teardown(void **state)
{
    stw_rmdir(*state);
    free(*state);
    return 0;
}

/* Copies file name from tests/golden/<fixture> into dir. */
static void copy_golden(const char *fixture, const char *name, const char *dir)
{
    char src[256];
    snprintf(src, sizeof src, "tests/golden/%s/%s", fixture, name);
    char *dst = stw_path(dir, name);
    assert_int_equal(stw_copy_file(src, dst), 0);
    free(dst);
}

/* What write_lite_with() does to the one tensor it changes. */
typedef enum { DROP, DROP_ROW, ADD_AXIS, AS_I16 } Change;

/* Writes dir/config.json and dir/model.safetensors: the golden Lite checkpoint with `victim`
 * dropped, shortened by one row, given an extra trailing axis of 1, or relabelled I16. */
static void write_lite_with(const char *dir, const char *victim, Change change)
{
    copy_golden("lite", "config.json", dir);
    StFile f;
    if (st_open("tests/golden/lite/model.safetensors", &f)) fail_msg("%s", ds_last_error());
    StwTensor *t = calloc(f.n_tensors, sizeof *t);
    assert_non_null(t);
    int n = 0, found = 0;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const StTensor *s = &f.tensors[i];
        StwTensor w = { s->name, dtype_name(s->dtype), s->ndim, { 0 }, s->data, s->nbytes };
        memcpy(w.shape, s->shape, sizeof s->shape);
        if (!strcmp(s->name, victim)) {
            found = 1;
            if (change == DROP) continue;
            if (change == DROP_ROW) {
                w.nbytes -= w.nbytes / (size_t)w.shape[0];
                w.shape[0]--;
            } else if (change == ADD_AXIS) {
                w.shape[w.ndim++] = 1;
            } else {
                w.dtype = "I16"; /* same byte count as BF16 */
            }
        }
        t[n++] = w;
    }
    assert_true(found);
    char *path = stw_path(dir, "model.safetensors");
    assert_int_equal(stw_write(path, t, n), 0);
    free(path);
    free(t);
    st_close(&f);
}

/* Copies the sharded V2 fixture into dir, with the index's weight_map entry for tensor set to
 * shard (NULL: the index is copied unchanged). */
static void write_v2_with(const char *dir, const char *tensor, const char *shard)
{
    copy_golden("v2", "config.json", dir);
    copy_golden("v2", kShard1, dir);
    copy_golden("v2", kShard2, dir);
    json_t *index = json_load_file("tests/golden/v2/model.safetensors.index.json", 0, NULL);
    assert_non_null(index);
    if (tensor) {
        json_t *map = json_object_get(index, "weight_map");
        assert_non_null(json_object_get(map, tensor));
        json_object_set_new(map, tensor, json_string(shard));
    }
    char *path = stw_path(dir, "model.safetensors.index.json");
    assert_int_equal(json_dump_file(index, path, JSON_INDENT(1)), 0);
    free(path);
    json_decref(index);
}

/* checkpoint_open(dir) must fail with exactly want, leaving nothing open. */
static void expect_open_error(const char *dir, const char *want)
{
    Checkpoint ck;
    ds_error_clear();
    assert_int_equal(checkpoint_open(dir, &ck), -1);
    assert_string_equal(ds_last_error(), want);
    assert_null(ck.files);
    assert_null(ck.entries);
    assert_null(ck.dir);
}

/* model_open(dir) must fail with exactly want, leaving nothing open. */
static void expect_model_error(const char *dir, const char *want)
{
    Model m;
    ds_error_clear();
    assert_int_equal(model_open(&m, dir, NULL), -1);
    assert_string_equal(ds_last_error(), want);
    assert_null(m.layers);
    assert_null(m.ck.files);
}

static void single_file_checkpoint(void **state)
{
    (void)state;
    Checkpoint ck;
    if (checkpoint_open("tests/golden/lite", &ck)) fail_msg("%s", ds_last_error());
    assert_int_equal(ck.n_files, 1);
    assert_int_equal(ck.n_entries, ck.files[0].n_tensors);
    const int64_t shape[2] = { 512, 64 };
    const StTensor *t = checkpoint_tensor(&ck, "lm_head.weight", 2, shape);
    assert_non_null(t);
    assert_int_equal(t->dtype, DT_BF16);
    checkpoint_close(&ck);
    assert_null(ck.files);
    checkpoint_close(&ck); /* safe on a zeroed Checkpoint */
}

static void sharded_checkpoint(void **state)
{
    (void)state;
    Checkpoint ck;
    if (checkpoint_open("tests/golden/v2", &ck)) fail_msg("%s", ds_last_error());
    assert_int_equal(ck.n_files, 2);
    json_t *index = json_load_file("tests/golden/v2/model.safetensors.index.json", 0, NULL);
    json_t *map = json_object_get(index, "weight_map");
    assert_int_equal(ck.n_entries, json_object_size(map));
    /* every entry lives in the shard the index names (read from the index, never rebuilt) */
    for (size_t i = 0; i < ck.n_entries; i++) {
        const char *shard = json_string_value(json_object_get(map, ck.entries[i].name));
        const char *base = strrchr(ck.entries[i].file->path, '/') + 1;
        assert_string_equal(base, shard);
        assert_ptr_equal(st_find(ck.entries[i].file, ck.entries[i].name), ck.entries[i].tensor);
    }
    json_decref(index);
    checkpoint_close(&ck);
}

static void missing_directory_and_files(void **state)
{
    const char *dir = *state;
    expect_open_error("tests/golden/none", "tests/golden/none: no such model directory");
    char want[1024];
    snprintf(want, sizeof want, "%s/config.json: cannot open: No such file or directory", dir);
    expect_open_error(dir, want);
    copy_golden("lite", "config.json", dir);
    snprintf(want, sizeof want, "%s/model.safetensors: cannot open: No such file or directory", dir);
    expect_open_error(dir, want);
}

static void truncated_weights(void **state)
{
    const char *dir = *state;
    copy_golden("lite", "config.json", dir);
    char *path = stw_path(dir, "model.safetensors");
    assert_int_equal(stw_copy_file("tests/golden/lite/model.safetensors", path), 0);
    StFile f;
    if (st_open(path, &f)) fail_msg("%s", ds_last_error());
    const size_t size = f.size;
    const StTensor *last = &f.tensors[0];
    for (size_t i = 1; i < f.n_tensors; i++)
        if (f.tensors[i].file_offset > last->file_offset) last = &f.tensors[i];
    char want[1024];
    snprintf(want, sizeof want,
             "%s: tensor '%s': data ends at byte offset %zu, past the end of "
             "the file (%zu bytes)",
             path, last->name, size, size - 100);
    st_close(&f);
    assert_int_equal(truncate(path, (off_t)(size - 100)), 0);
    expect_open_error(dir, want);
    free(path);
}

static void index_names_missing_shard(void **state)
{
    const char *dir = *state;
    write_v2_with(dir, "model.norm.weight", "model-00003-of-000002.safetensors");
    char want[1024];
    snprintf(want, sizeof want,
             "%s/model-00003-of-000002.safetensors: cannot open: No such file "
             "or directory (the shard of tensor 'model.norm.weight' in "
             "%s/model.safetensors.index.json)",
             dir, dir);
    expect_open_error(dir, want);
}

static void index_names_wrong_shard(void **state)
{
    const char *dir = *state;
    /* find a tensor that lives in shard 1, then claim it is in shard 2 */
    json_t *index = json_load_file("tests/golden/v2/model.safetensors.index.json", 0, NULL);
    const char *name, *victim = NULL;
    json_t *v;
    json_object_foreach(json_object_get(index, "weight_map"), name,
                        v) if (!victim && !strcmp(json_string_value(v), kShard1)) victim = name;
    assert_non_null(victim);
    char tensor[256];
    snprintf(tensor, sizeof tensor, "%s", victim);
    json_decref(index);
    write_v2_with(dir, tensor, kShard2);
    char want[1024];
    snprintf(want, sizeof want,
             "%s/model.safetensors.index.json: tensor '%s' is listed in shard "
             "%s but absent from it",
             dir, tensor, kShard2);
    expect_open_error(dir, want);
}

static void index_shard_name_with_path(void **state)
{
    const char *dir = *state;
    static const char *const bad[] = { "../v2/model-00001-of-000002.safetensors", "/etc/passwd", "..", "" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_v2_with(dir, "lm_head.weight", bad[i]);
        char want[1024];
        snprintf(want, sizeof want,
                 "%s/model.safetensors.index.json: "
                 "weight_map['lm_head.weight']: shard name \"%s\" is not a plain file name",
                 dir, bad[i]);
        expect_open_error(dir, want);
    }
}

static void index_malformed(void **state)
{
    const char *dir = *state;
    write_v2_with(dir, NULL, NULL);
    char *path = stw_path(dir, "model.safetensors.index.json");
    char want[1024];
    assert_int_equal(stw_write_text(path, "{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}"), 0);
    snprintf(want, sizeof want, "%s: line 1, column 29: duplicate object key near '\"a\"'", path);
    expect_open_error(dir, want);
    assert_int_equal(stw_write_text(path, "{\"metadata\": {}}"), 0);
    snprintf(want, sizeof want, "%s: key 'weight_map' is missing or not an object", path);
    expect_open_error(dir, want);
    assert_int_equal(stw_write_text(path, "{\"weight_map\": {\"lm_head.weight\": 3}}"), 0);
    snprintf(want, sizeof want, "%s: weight_map['lm_head.weight'] is not a string", path);
    expect_open_error(dir, want);
    free(path);
}

static void missing_tensor(void **state)
{
    const char *dir = *state;
    write_lite_with(dir, "model.layers.2.mlp.experts.5.down_proj.weight", DROP);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: tensor 'model.layers.2.mlp.experts.5.down_proj.weight' is "
             "missing from the checkpoint",
             dir);
    expect_model_error(dir, want);
}

static void shape_not_matching_config(void **state)
{
    const char *dir = *state;
    char want[1024];
    write_lite_with(dir, "model.layers.1.self_attn.kv_b_proj.weight", DROP_ROW);
    snprintf(want, sizeof want,
             "%s/model.safetensors: tensor "
             "'model.layers.1.self_attn.kv_b_proj.weight': shape [111, 32], but the config "
             "implies [112, 32]",
             dir);
    expect_model_error(dir, want);
    write_lite_with(dir, "model.norm.weight", ADD_AXIS);
    snprintf(want, sizeof want,
             "%s/model.safetensors: tensor 'model.norm.weight': shape [64, 1], "
             "but the config implies [64]",
             dir);
    expect_model_error(dir, want);
    write_lite_with(dir, "lm_head.weight", DROP_ROW);
    snprintf(want, sizeof want,
             "%s/model.safetensors: tensor 'lm_head.weight': shape [511, 64], "
             "but the config implies [512, 64]",
             dir);
    expect_model_error(dir, want);
}

static void dtype_outside_bf16_f16_f32(void **state)
{
    const char *dir = *state;
    write_lite_with(dir, "model.layers.0.mlp.up_proj.weight", AS_I16);
    char want[1024];
    snprintf(want, sizeof want,
             "%s/model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight': "
             "dtype I16 is not supported (BF16, F16, F32)",
             dir);
    expect_model_error(dir, want);
}

static void bad_config_in_directory(void **state)
{
    const char *dir = *state;
    write_lite_with(dir, "model.norm.weight", ADD_AXIS);
    char *path = stw_path(dir, "config.json");
    assert_int_equal(stw_write_text(path, "{\"vocab_size\": \"512\"}"), 0);
    char want[1024];
    snprintf(want, sizeof want, "%s: key 'vocab_size': expected an integer, got a string", path);
    expect_model_error(dir, want);
    free(path);
}

/* Runs checkpoint_open(dir) in a child process under a 1-second alarm, so a reader that blocks fails
 * the test instead of hanging it; the child must refuse with exactly want. */
static void expect_open_error_within_a_second(const char *dir, const char *want)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        alarm(1); /* SIGALRM ends a blocked child */
        Checkpoint ck;
        const int rc = checkpoint_open(dir, &ck);
        const char *line = ds_last_error();
        const ssize_t n = write(fds[1], line, strlen(line));
        _exit(rc == -1 && n == (ssize_t)strlen(line) ? 0 : 1);
    }
    close(fds[1]);
    char got[2048] = { 0 };
    size_t n = 0;
    for (ssize_t r; n < sizeof got - 1 && (r = read(fds[0], got + n, sizeof got - 1 - n)) > 0;) n += (size_t)r;
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) fail_msg("checkpoint_open(%s) still blocked after 1 s (signal %d)", dir, WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_string_equal(got, want);
}

/* A FIFO in place of config.json, the shard index or model.safetensors: opening one for reading
 * would wait forever for a writer, so each is refused as not a regular file, at once. */
static void fifos_refused_without_blocking(void **state)
{
    const char *dir = *state;
    static const char *const names[] = { "config.json", "model.safetensors.index.json", "model.safetensors" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        write_v2_with(dir, NULL, NULL); /* a complete sharded checkpoint */
        char *path = stw_path(dir, names[i]);
        if (i == 2) { /* the single-file layout: no index */
            char *index = stw_path(dir, "model.safetensors.index.json");
            assert_int_equal(unlink(index), 0);
            free(index);
        } else {
            assert_int_equal(unlink(path), 0);
        }
        assert_int_equal(mkfifo(path, 0600), 0);
        char want[1024];
        snprintf(want, sizeof want, "%s: not a regular file", path);
        expect_open_error_within_a_second(dir, want);
        assert_int_equal(unlink(path), 0);
        free(path);
    }
}

/* Writes dir/model.safetensors.index.json: the V2 weight_map plus fillers named filler<i> (in shard 1)
 * up to n_keys keys inside the top-level objects (the weight_map's and metadata's). */
static void write_v2_index_with_keys(const char *dir, size_t n_keys)
{
    json_t *index = json_load_file("tests/golden/v2/model.safetensors.index.json", 0, NULL);
    assert_non_null(index);
    json_t *map = json_object_get(index, "weight_map");
    const size_t have = json_object_size(map) + json_object_size(json_object_get(index, "metadata"));
    assert_true(n_keys >= have);
    for (size_t i = 0; i < n_keys - have; i++) {
        char name[32];
        snprintf(name, sizeof name, "filler%zu", i);
        json_object_set_new(map, name, json_string(kShard1));
    }
    char *path = stw_path(dir, "model.safetensors.index.json");
    assert_int_equal(json_dump_file(index, path, JSON_COMPACT), 0);
    free(path);
    json_decref(index);
}

/* An index of a million entries is refused by counting them before parsing (< 1 s; parsing it took
 * 6.4 s), against a bound from the config: 2 × (3 + 3 layers × (2 + 7 + 2 + 3·8 + 3)) + 1024 = 1258. */
static void index_entries_bounded_by_config(void **state)
{
    const char *dir = *state;
    write_v2_with(dir, NULL, NULL);
    char *path = stw_path(dir, "model.safetensors.index.json");
    char want[1024];
    snprintf(want, sizeof want,
             "%s: more than 1258 entries, twice the tensors config.json's 3 layers "
             "of 8 routed experts can use",
             path);
    write_v2_index_with_keys(dir, 1259);
    expect_open_error(dir, want);
    write_v2_index_with_keys(dir, 1258); /* at the bound: parsed, then checked */
    snprintf(want, sizeof want, "%s: tensor 'filler0' is listed in shard %s but absent from it", path, kShard1);
    expect_open_error(dir, want);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"weight_map\": {", f);
    for (int i = 0; i < 1000000; i++) fprintf(f, "%s\"t%d\": \"s\"", i ? ", " : "", i);
    fputs("}}", f);
    assert_int_equal(fclose(f), 0);
    snprintf(want, sizeof want,
             "%s: more than 1258 entries, twice the tensors config.json's 3 layers "
             "of 8 routed experts can use",
             path);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_open_error(dir, want);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (s >= 1.0) fail_msg("refusing a million index entries took %.2f s", s);
    free(path);
}

/* A model directory whose config multiplies two keys past a matrix's int extents: refused by
 * config_load naming both keys, before any tensor is bound (it once bound 0-row tensors). */
static void config_products_overflowing(void **state)
{
    const char *dir = *state;
    copy_golden("lite", "model.safetensors", dir);
    json_t *cfg = json_load_file("tests/golden/lite/config.json", 0, NULL);
    assert_non_null(cfg);
    json_object_set_new(cfg, "n_shared_experts", json_integer(65536));
    json_object_set_new(cfg, "moe_intermediate_size", json_integer(65536));
    char *path = stw_path(dir, "config.json");
    assert_int_equal(json_dump_file(cfg, path, JSON_INDENT(1)), 0);
    json_decref(cfg);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: keys 'n_shared_experts' x 'moe_intermediate_size': 65536 x "
             "65536 = 4294967296 exceeds 2147483647, the widest weight matrix the code can address",
             path);
    expect_model_error(dir, want);
    free(path);
}

/* The logits of tokens on a freshly opened model (all positions). */
static void fresh_logits(float *logits, const int *tokens, int T)
{
    Model m;
    const ModelOptions opt = { .max_context = 8 };
    if (model_open(&m, "tests/golden/lite", &opt)) fail_msg("%s", ds_last_error());
    assert_int_equal(model_forward(&m, tokens, T, logits, true), 0);
    model_close(&m);
}

static void token_outside_vocabulary(void **state)
{
    (void)state;
    Model m;
    const ModelOptions opt = { .max_context = 8 };
    if (model_open(&m, "tests/golden/lite", &opt)) fail_msg("%s", ds_last_error());
    const int V = m.cfg->vocab_size;
    float *logits = malloc(sizeof(float) * 2 * V), *want = malloc(sizeof(float) * 2 * V);
    assert_non_null(logits);
    assert_non_null(want);
    const int bad[3] = { 5, 512, 7 }, neg[2] = { -1, 3 }, good[2] = { 5, 511 };
    poison(logits, 2 * (size_t)V);
    assert_int_equal(model_forward(&m, bad, 3, logits, true), -1);
    assert_string_equal(ds_last_error(), "token id 512 at position 1 is outside the vocabulary "
                                         "[0, 512)");
    assert_int_equal(model_forward(&m, neg, 2, logits, true), -1);
    assert_string_equal(ds_last_error(), "token id -1 at position 0 is outside the vocabulary "
                                         "[0, 512)");
    assert_int_equal(m.pos, 0);
    for (size_t i = 0; i < 2 * (size_t)V; i++) assert_true(isnan(logits[i])); /* nothing written */
    /* nothing reached the cache: the next valid call equals a fresh model's, bit for bit */
    assert_int_equal(model_forward(&m, good, 2, logits, true), 0);
    fresh_logits(want, good, 2);
    check_close("logits after refused ids", logits, want, 2 * (size_t)V, 0, 0); /* same ops, same order */
    free(logits);
    free(want);
    model_close(&m);
}

static void prompt_longer_than_context(void **state)
{
    (void)state;
    Model m;
    const ModelOptions opt = { .max_context = 8 };
    if (model_open(&m, "tests/golden/lite", &opt)) fail_msg("%s", ds_last_error());
    const int V = m.cfg->vocab_size;
    const int tokens[9] = { 3, 1, 4, 1, 5, 9, 2, 6, 5 };
    float *logits = malloc(sizeof(float) * 9 * V), *want = malloc(sizeof(float) * 9 * V);
    assert_non_null(logits);
    assert_non_null(want);
    poison(logits, 9 * (size_t)V);
    assert_int_equal(model_forward(&m, tokens, 9, logits, true), -1);
    assert_string_equal(ds_last_error(),
                        "9 new tokens at positions 0.. do not fit the context of 8 positions (max_context)");
    assert_int_equal(m.pos, 0);
    for (size_t i = 0; i < 9 * (size_t)V; i++) assert_true(isnan(logits[i]));
    /* 5 fit; 4 more would not; the 3 that do still continue from position 5 */
    assert_int_equal(model_forward(&m, tokens, 5, NULL, false), 0);
    assert_int_equal(model_forward(&m, tokens + 5, 4, logits, true), -1);
    assert_string_equal(ds_last_error(),
                        "4 new tokens at positions 5.. do not fit the context of 8 positions (max_context)");
    assert_int_equal(m.pos, 5);
    assert_int_equal(model_forward(&m, tokens + 5, 3, logits, true), 0);
    assert_int_equal(m.pos, 8);
    fresh_logits(want, tokens, 8);
    /* 5 + 3 tokens against one pass of 8: the same per-token arithmetic, so only float32
     * rounding may differ (≤ 1e-5 on logits of order 1) */
    check_close("logits continued after a refused call", logits, want + 5 * (size_t)V, 3 * (size_t)V, 1e-5, 1e-6);
    free(logits);
    free(want);
    model_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_file_checkpoint),
        cmocka_unit_test(sharded_checkpoint),
        cmocka_unit_test_setup_teardown(missing_directory_and_files, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(truncated_weights, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(index_names_missing_shard, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(index_names_wrong_shard, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(index_shard_name_with_path, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(index_malformed, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(missing_tensor, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(shape_not_matching_config, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(dtype_outside_bf16_f16_f32, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(bad_config_in_directory, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(fifos_refused_without_blocking, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(config_products_overflowing, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(index_entries_bounded_by_config, dir_setup, dir_teardown),
        cmocka_unit_test(token_outside_vocabulary),
        cmocka_unit_test(prompt_longer_than_context),
    };
    return cmocka_run_group_tests_name("checkpoint", tests, NULL, NULL);
}
