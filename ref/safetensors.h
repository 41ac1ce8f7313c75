/**
 * \file safetensors.h
 * \brief A strict, memory-mapped reader for one `.safetensors` file.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end)}}`, offsets relative
 * to byte 8 + N), then the data. The reader enforces the rules of the
 * format's reference implementation: header ≤ 100,000,000 bytes, no
 * duplicate keys, tensors tiling the data section exactly (first at 0, each
 * starting where the previous ended, the last ending at the end of the
 * file), byte counts equal to dtype × shape computed without overflow.
 * It also requires each tensor to be aligned to its element size, so the
 * mapped bytes can be read in place, refuses a path that is not a regular
 * file (opened without blocking, so a FIFO cannot hang it), and bounds the
 * number of entries (ST_MAX_TENSORS).
 */
#ifndef DSV2_SAFETENSORS_H
#define DSV2_SAFETENSORS_H

#include "dtype.h"

#include <stddef.h>
#include <stdint.h>

/**
 * Most header entries (tensors and `__metadata__`) one file may list: more
 * than twice the 29,102 tensors that DeepSeek-V2 (60 layers, 160 experts)
 * spreads over all its shards. The reader counts the entries before
 * parsing, so a hostile header of millions of tiny tensors costs one scan,
 * not a table in memory.
 */
#define ST_MAX_TENSORS 65536

/** Largest tensor rank the reader accepts. */
#define ST_MAX_DIMS 8

/** One tensor of a mapped file. */
typedef struct {
    char *name;                 /**< tensor name, e.g. "model.norm.weight" */
    DType dtype;                /**< element type */
    int ndim;                   /**< rank (0 for a scalar) */
    int64_t shape[ST_MAX_DIMS]; /**< extents, outermost first */
    const void *data;           /**< first element, inside the mapping */
    size_t nbytes;              /**< data size in bytes */
    uint64_t file_offset;       /**< absolute byte offset of data in the file */
} StTensor;

/** An open, validated, memory-mapped safetensors file. */
typedef struct {
    char *path;        /**< path as given to st_open() */
    void *map;         /**< the whole file, read-only */
    size_t size;       /**< file size in bytes */
    size_t n_tensors;  /**< number of tensors */
    StTensor *tensors; /**< sorted by name */
} StFile;

/**
 * Maps and validates `path`. On failure nothing stays open and one error
 * line names the file and the offending tensor, key or byte offset.
 * \return 0 or −1.
 */
int st_open(const char *path, StFile *f);

/** Unmaps and frees everything st_open() made (safe on a zeroed StFile). */
void st_close(StFile *f);

/** The tensor called name, or NULL. */
const StTensor *st_find(const StFile *f, const char *name);

#endif
