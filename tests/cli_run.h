/**
 * \file cli_run.h
 * \brief Running the built command-line program from a suite and reading back what it wrote.
 *
 * The program is $DSV2_BIN when set, else build/dsv2 (`make test` builds it first). Its stdout and
 * stderr go to two files in stw_scratch_dir, read back and removed, so the suite's CMocka group must
 * run stw_group_setup/stw_group_teardown (st_writer.h). Its stdin is a pipe the suite writes to.
 */
#ifndef DSV2_TESTS_CLI_RUN_H
#define DSV2_TESTS_CLI_RUN_H

#include <stddef.h>

/** What one run of the program left. */
typedef struct {
    int status; /**< exit status */
    char *out;  /**< stdout, NUL-terminated (malloc'd); "" when it went to CliIo.stdout_path */
    char *err;  /**< stderr, NUL-terminated (malloc'd) */
} CliRun;

/** How to run it; zero fields are the defaults. */
typedef struct {
    char *const *env;         /**< the environment (NULL: this process's) */
    const char *input;        /**< written to its stdin, which is then closed (NULL: nothing) */
    const char *stdout_path;  /**< its stdout goes here, e.g. /dev/full (NULL: a scratch file, read back) */
    const char *wait_for;     /**< when set: once its stdout contains this, it gets SIGINT... */
    const char *wait_for_err; /**< ...or once its stderr contains this... */
    const char *then_input;   /**< ...then this on stdin before stdin is closed; NULL: it must quit on the
                                  SIGINT within 10 s with stdin still open */
} CliIo;

/** The whole content of path, NUL-terminated (malloc'd), "" when absent; *len gets its length when len is not NULL. */
char *slurp(const char *path, size_t *len);

/** Runs the program with args (NULL-terminated, without argv[0], at most 30) as io says. */
CliRun cli_run_io(const char *const *args, const CliIo *io);

/** Runs the program with args in the environment env, stdin empty. */
CliRun cli_run_env(const char *const *args, char *const *env);

/** cli_run_env() in this process's environment. */
CliRun cli_run(const char *const *args);

/** Frees both streams of r. */
void cli_run_free(CliRun *r);

#endif
