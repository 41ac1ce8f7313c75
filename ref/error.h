/**
 * \file error.h
 * \brief One error line per failure, for readers and the command line.
 *
 * Library code never prints and never exits. A function that fails records
 * one line saying what was wrong and where (file, tensor, byte offset, JSON
 * key) with ds_error(), and returns a failure status; the caller decides
 * what to do with ds_last_error(). Tests assert on the exact text.
 */
#ifndef DSV2_ERROR_H
#define DSV2_ERROR_H

/** Records the error line (printf-style). Always returns -1, so `return ds_error(...)` reads well. */
int ds_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** The last recorded error line ("" when none). Valid until the next ds_error() on this thread. */
const char *ds_last_error(void);

/** Forgets the last error. */
void ds_error_clear(void);

#endif
