/**
 * \file test_grad_save.c
 * \brief Saving trained weights (ref/train_save.c) and reading them back with model_open().
 *
 * Evidence: after a training step on the golden v2 checkpoint (so every weight has moved), the
 * saved file must pass the project's strict safetensors and checkpoint readers, and the model
 * read back must hold exactly the trained float32 weights (bit-identical, every name and shape
 * checked by model_open()). A failed save leaves no file and one error line.
 */
#include "check.h"
#include "error.h"
#include "model.h"
#include "train_model.h"
#include "train_optim.h"
#include "train_save.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

static void saved_weights_read_back_exactly(void **state)
{
    (void)state;
    char dir[] = "/tmp/dsv2_train_save_XXXXXX", cfg[96], weights[96];
    assert_non_null(mkdtemp(dir));
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(weights, sizeof weights, "%s/model.safetensors", dir);
    copy_file("tests/golden/v2/config.json", cfg);
    Model m;
    TrainModel tm;
    AdamW opt;
    const AdamWConfig oc = {
        .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .warmup_steps = 0, .total_steps = 1
    };
    if (model_open(&m, "tests/golden/v2", NULL) || train_model_init(&tm, &m, NULL) ||
        adamw_init(&opt, &oc, tm.n_params))
        fail_msg("%s", ds_last_error());
    model_close(&m);
    const int tokens[9] = { 5, 17, 300, 2, 99, 41, 7, 7, 250 };
    TrainLoss L;
    if (train_forward_backward(&tm, tokens, tokens + 1, 8, &L)) fail_msg("%s", ds_last_error());
    adamw_step(&opt, tm.params, tm.grads); /* every weight moves (decay at least) */
    if (train_model_save(&tm, weights)) fail_msg("%s", ds_last_error());

    Model back;
    TrainModel tm2;
    if (model_open(&back, dir, NULL) || train_model_init(&tm2, &back, NULL)) fail_msg("%s", ds_last_error());
    assert_int_equal(tm2.n_params, tm.n_params);
    assert_memory_equal(tm2.params, tm.params, sizeof(float) * tm.n_params);
    train_model_free(&tm2);
    model_close(&back);
    adamw_free(&opt);
    train_model_free(&tm);
    unlink(weights);
    unlink(cfg);
    rmdir(dir);
}

static void failed_save_leaves_nothing(void **state)
{
    (void)state;
    Model m;
    TrainModel tm;
    if (model_open(&m, "tests/golden/lite", NULL) || train_model_init(&tm, &m, NULL)) fail_msg("%s", ds_last_error());
    assert_int_equal(train_model_save(&tm, "/nonexistent-dir/model.safetensors"), -1);
    assert_string_equal(ds_last_error(),
                        "/nonexistent-dir/model.safetensors.tmp: cannot create: No such file or directory");
    assert_int_equal(access("/nonexistent-dir/model.safetensors", F_OK), -1);
    train_model_free(&tm);
    model_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(saved_weights_read_back_exactly),
        cmocka_unit_test(failed_save_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
