/**
 * \file cli_run.h
 * \brief Running the built command-line program from a suite and reading back what it wrote.
 *
 * The program is $DSV2_BIN when set, else build/dsv2 (`make test` builds it first). Its stdout and
 * stderr go to two files in stw_scratch_dir, read back and removed, so the suite's CMocka group must
 * run stw_group_setup/stw_group_teardown (st_writer.h).
 */
#ifndef DSV2_TESTS_CLI_RUN_H
#define DSV2_TESTS_CLI_RUN_H

#include <stddef.h>

/** What one run of the program left. */
typedef struct {
    int status; /**< exit status */
    char *out;  /**< stdout, NUL-terminated (malloc'd) */
    char *err;  /**< stderr, NUL-terminated (malloc'd) */
} CliRun;

/** The whole content of path, NUL-terminated (malloc'd), "" when absent; *len gets its length when len is not NULL. */
char *slurp(const char *path, size_t *len);

/** Runs the program with args (NULL-terminated, without argv[0], at most 30) in the environment env. */
CliRun cli_run_env(const char *const *args, char *const *env);

/** cli_run_env() in this process's environment. */
CliRun cli_run(const char *const *args);

/** Frees both streams of r. */
void cli_run_free(CliRun *r);

#endif
