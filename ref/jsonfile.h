/**
 * \file jsonfile.h
 * \brief Reading a JSON file that may not be what its name says.
 *
 * A checkpoint directory is untrusted input: `config.json` may be a FIFO
 * (opening it for reading would block forever), a directory, or a device.
 * json_read_file() opens with O_NONBLOCK, refuses anything but a regular
 * file, and reports parse errors as "FILE: line L, column C: what", or
 * "FILE: what" where jansson gives no position.
 */
#ifndef DSV2_JSONFILE_H
#define DSV2_JSONFILE_H

#include <jansson.h>

/**
 * Parses the regular file at `path` (rejecting duplicate keys). Returns the
 * root, or NULL after ds_error() with one line naming the file.
 */
json_t *json_read_file(const char *path);

#endif
