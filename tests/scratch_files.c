/**
 * \file scratch_files.c
 * \brief Running a shell command from a suite, and small file trees in a temporary directory
 * (see scratch_files.h).
 */
#include "scratch_files.h"

#include "check.h"
#include "cli_run.h"
#include "st_writer.h"

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int shell_vcapture(char *out, size_t cap, const char *fmt, va_list ap)
{
    char cmd[16384];
    const int len = vsnprintf(cmd, sizeof cmd, fmt, ap);
    if (len < 0 || (size_t)len >= sizeof cmd) fail_msg("a shell command longer than %zu bytes", sizeof cmd - 1);
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("cannot run %s", cmd);
    size_t n = 0, got;
    while (n + 1 < cap && (got = fread(out + n, 1, cap - 1 - n, p)) > 0) n += got;
    out[n] = '\0';
    const int more = fgetc(p) != EOF;
    const int status = pclose(p);
    if (more) fail_msg("%s said more than %zu bytes; the first ones:\n%s", cmd, cap - 1, out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int shell_capture(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const int status = shell_vcapture(out, cap, fmt, ap);
    va_end(ap);
    return status;
}

void shell_ok(const char *fmt, ...)
{
    char out[8192];
    va_list ap;
    va_start(ap, fmt);
    const int status = shell_vcapture(out, sizeof out, fmt, ap);
    va_end(ap);
    if (status != 0) fail_msg("a setup command exited with %d (format \"%s\"):\n%s", status, fmt, out);
}

char *scratch_make(void)
{
    char *dir = stw_mkdtemp();
    if (!dir) fail_msg("cannot make a temporary directory: %s", strerror(errno));
    return dir;
}

void scratch_remove(char *dir)
{
    stw_rmdir(dir);
    free(dir);
}

/* dir/name as a new string, with every directory above its last component made. */
static char *scratch_path(const char *dir, const char *name)
{
    char *path = stw_path(dir, name);
    assert_non_null(path);
    for (char *slash = path + strlen(dir) + 1; (slash = strchr(slash, '/')); slash++) {
        *slash = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) fail_msg("cannot make %s: %s", path, strerror(errno));
        *slash = '/';
    }
    return path;
}

void scratch_write(const char *dir, const char *name, const char *text)
{
    char *path = scratch_path(dir, name);
    if (stw_write_text(path, text) != 0) fail_msg("cannot write %s: %s", path, strerror(errno));
    free(path);
}

void scratch_copy(const char *dir, const char *path)
{
    char *to = scratch_path(dir, path);
    if (stw_copy_file(path, to) != 0) fail_msg("cannot copy %s to %s: %s", path, to, strerror(errno));
    free(to);
}

char *scratch_read(const char *dir, const char *name)
{
    char *path = stw_path(dir, name);
    assert_non_null(path);
    if (access(path, R_OK) != 0) fail_msg("cannot read %s: %s", path, strerror(errno));
    char *text = slurp(path, NULL);
    free(path);
    return text;
}

int repo_path(const char *rel, char *abs)
{
    if (realpath(rel, abs)) return 0;
    fprintf(stderr, "%s: %s (the suites run from the repository root)\n", rel, strerror(errno));
    return -1;
}
