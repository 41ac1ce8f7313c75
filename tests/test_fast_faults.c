/**
 * \file test_fast_faults.c
 * \brief Allocation failures in the fast path (issue 9, item 4): for every N from 1 to the number of
 *        cudaMalloc calls that fast_model_open() + one fast_model_forward() + fast_model_close() make on
 *        tests/golden/lite, a child process with SIM_FAIL_MALLOC=N must fail cleanly.
 *
 * The simulated device reads SIM_FAIL_MALLOC once, when it starts, so each N runs in a fresh process:
 * this binary spawns itself with the argument `child N`; the child sets the variable before its first
 * CUDA call, opens the model, feeds the prompt, closes, and prints what it saw. The parent asserts for
 * each N: the child exits normally (no crash, no sanitizer report), the call returned −1, the error is one
 * line naming cudaMalloc, a file and a line, and no device allocation is live after it (sim_stats()).
 * N = count + 1 must succeed, which shows the count is exact.
 *
 * A real-GPU build has no fault injection: the suite skips there, saying so.
 */
#include "check.h"
#include "error.h"
#include "fast.h"

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if __has_include("sim.h")
#include "sim.h"
#define HAVE_SIM 1
#else
#define HAVE_SIM 0
#endif

#define FIXTURE "tests/golden/lite"

extern char **environ;

static const char *self;  /* this binary, for the children */

/* The run under test: open, one prompt, close. Returns 0 or −1 (error line set). */
static int open_forward_close(void)
{
    static const int prompt[] = {1, 5, 9, 2, 7, 3};
    FastModel m;
    const FastOptions opt = {.bf16 = false, .chunk = 4};
    if (fast_model_open(&m, FIXTURE, &opt))
        return -1;                                     /* open leaves nothing open on failure */
    float *logits = malloc(sizeof(float) * (size_t)m.cfg->vocab_size);
    const int rc = !logits ? ds_error("out of host memory")
                           : fast_model_forward(&m, prompt, (int)(sizeof prompt / sizeof prompt[0]), logits, false);
    free(logits);
    fast_model_close(&m);
    return rc;
}

#if HAVE_SIM
/* Child: SIM_FAIL_MALLOC=n, then the run; prints "rc R", "live L B", "error E". */
static int child(const char *n)
{
    setenv("SIM_FAIL_MALLOC", n, 1);
    setenv("SIM_QUIET", "1", 1);
    const int rc = open_forward_close();
    SimStats st;
    sim_stats(&st);
    printf("rc %d\nlive %llu %llu\nerror %s\n", rc, st.live_allocs, st.live_bytes, ds_last_error());
    return 0;
}

/* Runs `self child n`, captures its standard output into out; returns its wait status. */
static int spawn_child(int n, char *out, size_t cap)
{
    char arg[32];
    snprintf(arg, sizeof arg, "%d", n);
    char *const argv[] = {(char *)self, "child", arg, NULL};
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
    while (len + 1 < cap && (r = read(fd[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = '\0';
    close(fd[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}
#endif

static void every_malloc_fails_cleanly(void **state)
{
    (void)state;
#if !HAVE_SIM
    printf("needs the simulated device's fault injection (SIM_FAIL_MALLOC); a real-GPU build has none\n");
    skip();
#else
    /* the count, in this process, with nothing failing */
    SimStats before, after;
    sim_stats(&before);
    if (open_forward_close())
        fail_msg("%s", ds_last_error());
    sim_stats(&after);
    const int count = (int)(after.malloc_calls - before.malloc_calls);
    printf("%s: %d cudaMalloc calls in open + forward + close; %llu allocations live after close\n", FIXTURE, count,
           after.live_allocs);
    assert_true(count > 0);
    assert_int_equal(after.live_allocs, before.live_allocs);

    char out[4096];
    for (int n = 1; n <= count + 1; n++) {
        const int status = spawn_child(n, out, sizeof out);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("SIM_FAIL_MALLOC=%d: the child did not exit cleanly (status %#x); output:\n%s", n, status, out);
        int rc = 0;
        unsigned long long live = 1, bytes = 1;
        const char *err = strstr(out, "error ");
        if (sscanf(out, "rc %d\nlive %llu %llu", &rc, &live, &bytes) != 3 || !err)
            fail_msg("SIM_FAIL_MALLOC=%d: unexpected child output:\n%s", n, out);
        err += 6;
        if (live || bytes)
            fail_msg("SIM_FAIL_MALLOC=%d: %llu device allocations (%llu bytes) leaked; error: %s", n, live, bytes,
                     err);
        if (n == count + 1) {                          /* past the last call: nothing fails */
            if (rc != 0)
                fail_msg("SIM_FAIL_MALLOC=%d (after the last call) failed: %s", n, err);
            continue;
        }
        const char *nl = strchr(err, '\n');
        const bool one_line = nl && nl[1] == '\0';
        const char *at = strstr(err, " at ");
        if (rc != -1 || !strstr(err, "cudaMalloc") || !strstr(err, "cudaErrorMemoryAllocation") || !at ||
            !strstr(at, ".c:") || !one_line)
            fail_msg("SIM_FAIL_MALLOC=%d: rc %d, error line: %s", n, rc, err);
        if (n == 1 || n == count)
            printf("SIM_FAIL_MALLOC=%d: %s", n, err);
    }
    printf("%d failing runs: each returned -1 with one cudaMalloc error line, none crashed or leaked\n", count);
#endif
}

int main(int argc, char **argv)
{
    self = argv[0];
#if HAVE_SIM
    if (argc == 3 && strcmp(argv[1], "child") == 0)
        return child(argv[2]);
#else
    (void)argc;
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_malloc_fails_cleanly),
    };
    return cmocka_run_group_tests_name("fast faults", tests, NULL, NULL);
}
