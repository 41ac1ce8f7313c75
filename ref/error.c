/**
 * \file error.c
 * \brief The thread-local last-error line (see error.h).
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

int ds_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *ds_last_error(void) { return last_error; }

void ds_error_clear(void) { last_error[0] = '\0'; }
