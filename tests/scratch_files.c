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
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { CMD_MAX = 16384 };

/* printf(fmt, ap) into cmd[0..CMD_MAX); the test fails when it does not fit. */
static void format_command(char *cmd, const char *fmt, va_list ap)
{
    const int len = vsnprintf(cmd, CMD_MAX, fmt, ap);
    if (len < 0 || len >= CMD_MAX) fail_msg("a shell command longer than %d bytes: %.200s...", CMD_MAX - 1, cmd);
}

int shell_capture(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[CMD_MAX];
    va_list ap;
    va_start(ap, fmt);
    format_command(cmd, fmt, ap);
    va_end(ap);
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

void shell_ok(const char *fmt, ...)
{
    char cmd[CMD_MAX], out[8192];
    va_list ap;
    va_start(ap, fmt);
    format_command(cmd, fmt, ap);
    va_end(ap);
    const int status = shell_capture(out, sizeof out, "( %s ) 2>&1", cmd);
    if (status != 0) fail_msg("%s exited with %d:\n%s", cmd, status, out);
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

/* dir/name into path (PATH_MAX bytes); with make_dirs, every directory above its last component is made. */
static void scratch_path(const char *dir, const char *name, bool make_dirs, char *path)
{
    const int len = snprintf(path, PATH_MAX, "%s/%s", dir, name);
    if (len < 0 || len >= PATH_MAX) fail_msg("%s/%s: the path is longer than %d bytes", dir, name, PATH_MAX - 1);
    for (char *slash = path + strlen(dir) + 1; make_dirs && (slash = strchr(slash, '/')); slash++) {
        *slash = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) fail_msg("cannot make %s: %s", path, strerror(errno));
        *slash = '/';
    }
}

void scratch_write(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    scratch_path(dir, name, true, path);
    if (stw_write_text(path, text) != 0) fail_msg("cannot write %s: %s", path, strerror(errno));
}

void scratch_copy(const char *dir, const char *path)
{
    char to[PATH_MAX];
    scratch_path(dir, path, true, to);
    if (stw_copy_file(path, to) != 0) fail_msg("cannot copy %s to %s: %s", path, to, strerror(errno));
}

char *scratch_read(const char *dir, const char *name)
{
    char path[PATH_MAX];
    scratch_path(dir, name, false, path);
    if (access(path, R_OK) != 0) fail_msg("cannot read %s: %s", path, strerror(errno));
    return slurp(path, NULL);
}

int repo_path(const char *rel, char *abs)
{
    if (realpath(rel, abs)) return 0;
    fprintf(stderr, "%s: %s (the suites run from the repository root)\n", rel, strerror(errno));
    return -1;
}
