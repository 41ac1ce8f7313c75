/**
 * \file fault_sweep.c
 * \brief The SIM_FAIL_MALLOC sweep: children spawned per N, their reports checked (see fault_sweep.h).
 */
#include "fault_sweep.h"

#include "check.h"
#include "error.h"

#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int fault_sweep_child(const FaultSweep *fs, const char *n)
{
    setenv("SIM_FAIL_MALLOC", n, 1);
    setenv("SIM_QUIET", "1", 1);
    const int rc = fs->run();
    FaultCounts c;
    fs->counts(&c);
    printf("rc %d\nlive %llu %llu\nerror %s\n", rc, c.live_allocs, c.live_bytes, ds_last_error());
    return 0;
}

/* Runs `self child id n`, captures its standard output into out; returns its wait status. */
static int spawn_child(const char *self, const char *id, int n, char *out, size_t cap)
{
    char arg[32];
    snprintf(arg, sizeof arg, "%d", n);
    char *const argv[] = { (char *)self, "child", (char *)id, arg, NULL };
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, self, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < cap && (r = read(fd[0], out + len, cap - 1 - len)) > 0) len += (size_t)r;
    out[len] = '\0';
    close(fd[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

void fault_sweep_run(const FaultSweep *fs, const char *self)
{
    /* the count, in this process, with nothing failing */
    FaultCounts before, after;
    fs->counts(&before);
    if (fs->run()) fail_msg("%s", ds_last_error());
    fs->counts(&after);
    const int count = (int)(after.malloc_calls - before.malloc_calls);
    printf("%s: %d cudaMalloc calls; %llu allocations live after it\n", fs->what, count, after.live_allocs);
    assert_true(count > 0);
    assert_int_equal(after.live_allocs, before.live_allocs);

    char out[4096];
    for (int n = 1; n <= count + 1; n++) {
        const int status = spawn_child(self, fs->id, n, out, sizeof out);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("SIM_FAIL_MALLOC=%d: the child did not exit cleanly (status %#x); output:\n%s", n, status, out);
        int rc = 0;
        unsigned long long live = 1, bytes = 1;
        const char *err = strstr(out, "error ");
        if (sscanf(out, "rc %d\nlive %llu %llu", &rc, &live, &bytes) != 3 || !err)
            fail_msg("SIM_FAIL_MALLOC=%d: unexpected child output:\n%s", n, out);
        err += 6;
        if (live || bytes)
            fail_msg("SIM_FAIL_MALLOC=%d: %llu device allocations (%llu bytes) leaked; error: %s", n, live, bytes, err);
        if (n == count + 1) { /* past the last call: nothing fails */
            if (rc != 0) fail_msg("SIM_FAIL_MALLOC=%d (after the last call) failed: %s", n, err);
            continue;
        }
        const char *nl = strchr(err, '\n');
        const bool one_line = nl && nl[1] == '\0';
        const char *at = strstr(err, " at ");
        if (rc != -1 || !strstr(err, "cudaMalloc") || !strstr(err, "cudaErrorMemoryAllocation") || !at ||
            !strstr(at, ".c:") || !one_line)
            fail_msg("SIM_FAIL_MALLOC=%d: rc %d, error line: %s", n, rc, err);
        if (n == 1 || n == count) printf("SIM_FAIL_MALLOC=%d: %s", n, err);
    }
    printf("%d failing runs: each returned -1 with one cudaMalloc error line, none crashed or leaked\n", count);
}
