/**
 * \file cli_run.c
 * \brief Running the built command-line program from a suite (see cli_run.h).
 */
#include "cli_run.h"

#include "check.h"
#include "st_writer.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t n = 0;
    char *buf;
    if (f) {
        fseek(f, 0, SEEK_END);
        n = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = malloc(n + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, n, f), n);
        fclose(f);
    } else {
        buf = malloc(1);
        assert_non_null(buf);
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

CliRun cli_run_env(const char *const *args, char *const *env)
{
    const char *bin = getenv("DSV2_BIN") ? getenv("DSV2_BIN") : "build/dsv2";
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)bin;
    for (; args[n - 1]; n++) {
        assert_true(n < 31);
        argv[n] = (char *)args[n - 1];
    }
    argv[n] = NULL;
    char *out = stw_path(stw_scratch_dir, "stdout.txt"), *err = stw_path(stw_scratch_dir, "stderr.txt");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    if (posix_spawn(&pid, bin, &fa, NULL, argv, env) != 0) fail_msg("cannot run %s", bin);
    posix_spawn_file_actions_destroy(&fa);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (!WIFEXITED(ws)) fail_msg("%s did not exit normally", bin);
    CliRun r = {WEXITSTATUS(ws), slurp(out, NULL), slurp(err, NULL)};
    unlink(out);
    unlink(err);
    free(out);
    free(err);
    return r;
}

CliRun cli_run(const char *const *args) { return cli_run_env(args, environ); }

void cli_run_free(CliRun *r)
{
    free(r->out);
    free(r->err);
}
