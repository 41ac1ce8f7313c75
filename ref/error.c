/**
 * \file error.c
 * \brief The thread-local last-error line (see error.h).
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];

/* Formats into a local buffer first, so an argument may be ds_last_error() itself
 * (callers wrap an inner error line with context: ds_error("%s (in '%s')", ds_last_error(), key)). */
int ds_error(const char *fmt, ...)
{
    char line[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    memcpy(last_error, line, sizeof line);
    return -1;
}

const char *ds_last_error(void)
{
    return last_error;
}

void ds_error_clear(void)
{
    last_error[0] = '\0';
}
