/**
 * \file st_writer.h
 * \brief A tiny safetensors writer and scratch-directory helpers for the bad-input tests.
 *
 * The reader tests need files that are wrong in exactly one way. stw_write()
 * lays out a well-formed file from a tensor list (header padded to a
 * multiple of 8, tensors in list order); stw_write_raw() writes any length
 * field, header text and data bytes verbatim, so a test can state the
 * malformed bytes it feeds the reader. The directory helpers build model
 * directories (a copied config.json plus rewritten weights) under a fresh
 * temporary directory.
 */
#ifndef DSV2_TESTS_ST_WRITER_H
#define DSV2_TESTS_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

/** One tensor to write: dtype is the safetensors name ("BF16", "F32", "I64", ...). */
typedef struct {
    const char *name;  /**< tensor name */
    const char *dtype; /**< dtype string, written as given */
    int ndim;          /**< rank */
    int64_t shape[8];  /**< extents */
    const void *data;  /**< nbytes of data (may be NULL when nbytes is 0) */
    size_t nbytes;     /**< bytes written for this tensor */
} StwTensor;

/**
 * Writes a safetensors file: the header lists the tensors with consecutive
 * data_offsets in list order, padded with spaces to a multiple of 8 bytes.
 * \return 0, or −1 when the file cannot be written.
 */
int stw_write(const char *path, const StwTensor *t, int n);

/**
 * Writes the bytes of a file verbatim: the 8-byte little-endian length
 * field `declared_len`, the header text, then data_len data bytes
 * (zeros when data is NULL). \return 0 or −1.
 */
int stw_write_raw(const char *path, uint64_t declared_len, const char *header, const void *data, size_t data_len);

/** Writes text to path. \return 0 or −1. */
int stw_write_text(const char *path, const char *text);

/** Copies the file src to dst. \return 0 or −1. */
int stw_copy_file(const char *src, const char *dst);

/** Makes a fresh directory under $TMPDIR (or /tmp) and returns its path (malloc'd), or NULL. */
char *stw_mkdtemp(void);

/** Removes dir and everything in it (subdirectories too; links are removed, not followed). */
void stw_rmdir(const char *dir);

/** The scratch directory of a suite whose CMocka group runs stw_group_setup/stw_group_teardown. */
extern char *stw_scratch_dir;

/** CMocka group setup: makes stw_scratch_dir with stw_mkdtemp(). \return 0, or −1 when it cannot. */
int stw_group_setup(void **state);

/** CMocka group teardown: removes stw_scratch_dir and the files in it. \return 0. */
int stw_group_teardown(void **state);

/** dir + "/" + name, malloc'd (the caller frees). */
char *stw_path(const char *dir, const char *name);

#endif
