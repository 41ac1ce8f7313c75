/**
 * \file cli_run.c
 * \brief Running the built command-line program from a suite (see cli_run.h).
 */
#include "cli_run.h"

#include "check.h"
#include "st_writer.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    if (len) *len = n;
    return buf;
}

/* True when path holds text (a NUL-terminated string). */
static bool file_contains(const char *path, const char *text)
{
    char *got = slurp(path, NULL);
    const bool found = strstr(got, text) != NULL;
    free(got);
    return found;
}

/* Writes all of text to fd, ignoring a reader that has gone (the program may quit before reading it). */
static void feed(int fd, const char *text)
{
    for (size_t left = text ? strlen(text) : 0; left;) {
        const ssize_t n = write(fd, text, left);
        if (n <= 0) return;
        text += n;
        left -= (size_t)n;
    }
}

CliRun cli_run_io(const char *const *args, const CliIo *io)
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
    int in[2];
    assert_int_equal(pipe(in), 0);
    signal(SIGPIPE, SIG_IGN); /* a program that quits early closes the pipe */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_addclose(&fa, in[0]);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addopen(&fa, 1, io->stdout_path ? io->stdout_path : out, O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    if (posix_spawn(&pid, bin, &fa, NULL, argv, io->env ? io->env : environ) != 0) fail_msg("cannot run %s", bin);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    feed(in[1], io->input);
    int ws;
    const char *wait = io->wait_for ? io->wait_for : io->wait_for_err;
    if (wait) { /* poll the stream for up to a minute, then Ctrl-C */
        bool seen = false;
        for (int tries = 0; tries < 60000 && !seen; tries++) {
            seen = file_contains(io->wait_for ? out : err, wait);
            if (!seen && waitpid(pid, &ws, WNOHANG) == pid) fail_msg("%s quit before printing \"%s\"", bin, wait);
            if (!seen) usleep(1000);
        }
        if (!seen) fail_msg("%s did not print \"%s\" within a minute", bin, wait);
        kill(pid, SIGINT);
        for (int tries = 0; !io->then_input && tries < 10000; tries++) { /* it must quit, stdin still open */
            if (waitpid(pid, &ws, WNOHANG) == pid) goto exited;
            usleep(1000);
        }
        if (!io->then_input) fail_msg("%s did not quit within 10 s of SIGINT", bin);
        feed(in[1], io->then_input);
    }
    close(in[1]);
    in[1] = -1;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
exited:
    if (in[1] >= 0) close(in[1]);
    if (!WIFEXITED(ws)) fail_msg("%s did not exit normally", bin);
    CliRun r = { WEXITSTATUS(ws), slurp(out, NULL), slurp(err, NULL) };
    unlink(out);
    unlink(err);
    free(out);
    free(err);
    return r;
}

CliRun cli_run_env(const char *const *args, char *const *env)
{
    const CliIo io = { .env = env };
    return cli_run_io(args, &io);
}

CliRun cli_run(const char *const *args)
{
    return cli_run_env(args, environ);
}

void cli_run_free(CliRun *r)
{
    free(r->out);
    free(r->err);
}
