/**
 * \file scratch_files.h
 * \brief Running a shell command from a suite, and small file trees in a temporary directory.
 *
 * The suites that check the repository's scripts (tools/excerpts.sh, figures/render.sh) and
 * notebook programs run them with popen() from the repository root, where `make test` runs every
 * suite, and read back what they print. The failure cases copy or write a few files into a fresh
 * temporary directory and point the script at it. Every helper here fails the current test
 * (CMocka fail_msg) rather than return an error the caller could forget to look at.
 */
#ifndef DSV2_TESTS_SCRATCH_FILES_H
#define DSV2_TESTS_SCRATCH_FILES_H

#include <stddef.h>

/**
 * Runs the shell command printf(fmt, ...) and reads what it writes to its stdout (the command
 * adds 2>&1 to have stderr too) into out[0..cap), NUL-terminated. The test fails when the command
 * cannot be started or says more than cap − 1 bytes.
 * \return its exit status, or −1 when a signal ended it.
 */
int shell_capture(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/** Runs the shell command printf(fmt, ...); the test fails, naming it and showing what it wrote to
 * stdout and stderr, unless it exits 0. */
void shell_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** A fresh empty directory under $TMPDIR (or /tmp), malloc'd; scratch_remove() removes and frees it. */
char *scratch_make(void);

/** Removes dir and everything in it, then frees dir. */
void scratch_remove(char *dir);

/** Writes text to dir/name, making the directories on the way (name may be "chapters/01-one.md"). */
void scratch_write(const char *dir, const char *name, const char *text);

/** Copies the file path (relative to the working directory) to dir/path, making its directories. */
void scratch_copy(const char *dir, const char *path);

/** The whole of dir/name, NUL-terminated (malloc'd; the caller frees); the test fails when it cannot be read. */
char *scratch_read(const char *dir, const char *name);

/**
 * Puts the absolute path of rel, relative to the working directory, into abs (PATH_MAX bytes).
 * \return 0, or −1 after one line on stderr when rel does not exist there (a suite run from
 *         elsewhere than the repository root, or before make built it).
 */
int repo_path(const char *rel, char *abs);

#endif
