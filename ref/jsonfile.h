/**
 * \file jsonfile.h
 * \brief Reading a JSON file that may not be what its name says.
 *
 * A checkpoint directory is untrusted input: `config.json` may be a FIFO
 * (opening it for reading would block forever), a directory, or a device.
 * json_read_file() opens with O_NONBLOCK, refuses anything but a regular
 * file, and reports parse errors as "FILE: line L, column C: what", or
 * "FILE: what" where jansson gives no position. A reader that must bound
 * its work before parsing reads the text (json_file_text()), counts its
 * keys (json_count_keys()), then parses it (json_parse_text()).
 */
#ifndef DSV2_JSONFILE_H
#define DSV2_JSONFILE_H

#include <jansson.h>
#include <stddef.h>

/** A JSON file larger than this is refused before it is read (a real tokenizer.json is ~8 MB). */
#define JSON_MAX_BYTES ((size_t)256 << 20)

/**
 * Parses the regular file at `path` (rejecting duplicate keys). Returns the
 * root, or NULL after ds_error() with one line naming the file.
 */
json_t *json_read_file(const char *path);

/**
 * The bytes of the regular file at `path` (at most JSON_MAX_BYTES), NUL-terminated, with their
 * count in *len; the caller frees them. NULL after ds_error() with one line naming the file.
 */
char *json_file_text(const char *path, size_t *len);

/** Parses text read from `path` as json_read_file() does (the same error lines). */
json_t *json_parse_text(const char *path, const char *text, size_t len);

/**
 * Counts, without parsing, the keys of the objects `depth` levels down (1: the top-level
 * object's keys; 2: the keys of the objects inside it), stopping once the count exceeds `stop`.
 * Exact for valid JSON; malformed text is left to the parser to report.
 */
size_t json_count_keys(const char *text, size_t len, int depth, size_t stop);

#endif
