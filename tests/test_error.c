/**
 * \file test_error.c
 * \brief The error-line convention: ds_error() records, ds_last_error() returns.
 */
#include "check.h"
#include "error.h"

#include <string.h>

static void records_formatted_line(void **state)
{
    (void)state;
    ds_error_clear();
    assert_string_equal(ds_last_error(), "");
    assert_int_equal(ds_error("%s: tensor %s: %d", "a.safetensors", "w", 3), -1);
    assert_string_equal(ds_last_error(), "a.safetensors: tensor w: 3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(records_formatted_line),
    };
    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
