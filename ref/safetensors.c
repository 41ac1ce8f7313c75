/**
 * \file safetensors.c
 * \brief Strict memory-mapped safetensors reader (see safetensors.h).
 */
#include "safetensors.h"

#include "error.h"
#include "jsonfile.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/** Largest header the format allows (the reference reader's MAX_HEADER_SIZE). */
#define ST_MAX_HEADER 100000000ull

/* Orders by [begin, end): an empty tensor sorts before the tensor it shares its offset with.
 * (During parsing, data holds the relative end offset; see parse_header.) */
static int by_offset(const void *a, const void *b)
{
    const StTensor *x = a, *y = b;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    uintptr_t xe = (uintptr_t)x->data, ye = (uintptr_t)y->data;
    return xe < ye ? -1 : xe > ye;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

static int parse_dtype(const char *path, const char *name, const json_t *v, DType *out)
{
    const char *s = json_string_value(v);
    if (!s) return ds_error("%s: tensor '%s': 'dtype' is not a string", path, name);
    if (!strcmp(s, "BF16"))
        *out = DT_BF16;
    else if (!strcmp(s, "F16"))
        *out = DT_F16;
    else if (!strcmp(s, "F32"))
        *out = DT_F32;
    else
        return ds_error("%s: tensor '%s': dtype %s is not supported (BF16, F16, F32)", path, name, s);
    return 0;
}

/* Reads one header entry into t (offsets still relative to the data section). */
static int parse_entry(const char *path, const char *name, const json_t *v, StTensor *t, uint64_t *begin, uint64_t *end)
{
    if (!json_is_object(v)) return ds_error("%s: tensor '%s': entry is not an object", path, name);
    const json_t *shape = json_object_get(v, "shape"), *offs = json_object_get(v, "data_offsets");
    if (!json_object_get(v, "dtype")) return ds_error("%s: tensor '%s': 'dtype' is missing", path, name);
    if (parse_dtype(path, name, json_object_get(v, "dtype"), &t->dtype)) return -1;
    if (!json_is_array(shape)) return ds_error("%s: tensor '%s': 'shape' is not an array", path, name);
    if (json_array_size(shape) > ST_MAX_DIMS)
        return ds_error("%s: tensor '%s': rank %zu exceeds %d", path, name, json_array_size(shape), ST_MAX_DIMS);
    if (!json_is_array(offs) || json_array_size(offs) != 2)
        return ds_error("%s: tensor '%s': 'data_offsets' is not a [begin, end] pair", path, name);
    t->ndim = (int)json_array_size(shape);
    uint64_t bytes = dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) {
        const json_t *e = json_array_get(shape, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return ds_error("%s: tensor '%s': shape[%d] is not a non-negative integer", path, name, d);
        t->shape[d] = json_integer_value(e);
        if (__builtin_mul_overflow(bytes, (uint64_t)t->shape[d], &bytes))
            return ds_error("%s: tensor '%s': shape overflows the size of a tensor", path, name);
    }
    for (int i = 0; i < 2; i++) {
        const json_t *e = json_array_get(offs, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return ds_error("%s: tensor '%s': data_offsets[%d] is not a non-negative integer", path, name, i);
    }
    *begin = (uint64_t)json_integer_value(json_array_get(offs, 0));
    *end = (uint64_t)json_integer_value(json_array_get(offs, 1));
    if (*end < *begin)
        return ds_error("%s: tensor '%s': data_offsets [%llu, %llu) end before they begin", path, name,
                        (unsigned long long)*begin, (unsigned long long)*end);
    if (*end - *begin != bytes)
        return ds_error("%s: tensor '%s': data_offsets [%llu, %llu) hold %llu bytes, but %s x shape "
                        "needs %llu",
                        path, name, (unsigned long long)*begin, (unsigned long long)*end,
                        (unsigned long long)(*end - *begin), dtype_name(t->dtype), (unsigned long long)bytes);
    t->nbytes = (size_t)bytes;
    return 0;
}

/* Parses the JSON header and checks that the tensors tile the data section. */
static int parse_header(StFile *f, const char *hdr, size_t hlen, uint64_t data_start)
{
    if (json_count_keys(hdr, hlen, 1, ST_MAX_TENSORS) > ST_MAX_TENSORS) /* before any table is built */
        return ds_error("%s: header lists more than %d entries, the most one file may hold", f->path, ST_MAX_TENSORS);
    json_error_t jerr;
    json_t *root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ds_error("%s: header is not valid JSON at byte offset %llu: %s", f->path,
                        (unsigned long long)(8 + jerr.position), jerr.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = ds_error("%s: header is not a JSON object", f->path);
        goto out;
    }
    f->tensors = calloc(json_object_size(root) + 1, sizeof *f->tensors);
    if (!f->tensors) {
        rc = ds_error("%s: out of memory", f->path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (!strcmp(key, "__metadata__")) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v)) {
                rc = ds_error("%s: '__metadata__' is not an object", f->path);
                goto out;
            }
            json_object_foreach(v, mk, mv) if (!json_is_string(mv))
            {
                rc = ds_error("%s: '__metadata__' value '%s' is not a string", f->path, mk);
                goto out;
            }
            continue;
        }
        StTensor *t = &f->tensors[f->n_tensors];
        uint64_t begin = 0, end = 0;
        if (!(t->name = strdup(key))) {
            rc = ds_error("%s: out of memory", f->path);
            goto out;
        }
        f->n_tensors++;
        if (parse_entry(f->path, key, v, t, &begin, &end)) {
            rc = -1;
            goto out;
        }
        t->file_offset = data_start + begin;
        /* stash the relative end in data until the tiling check below */
        t->data = (const void *)(uintptr_t)end;
    }
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, by_offset);
    uint64_t expect = data_start;
    for (size_t i = 0; i < f->n_tensors; i++) {
        StTensor *t = &f->tensors[i];
        uint64_t end = (uint64_t)(uintptr_t)t->data + data_start;
        if (t->file_offset != expect) {
            rc = ds_error("%s: tensor '%s': data begins at byte offset %llu, expected %llu (%s)", f->path, t->name,
                          (unsigned long long)t->file_offset, (unsigned long long)expect,
                          t->file_offset < expect ? "overlaps the previous tensor" : "leaves a gap");
            goto out;
        }
        if (end > f->size) {
            rc = ds_error("%s: tensor '%s': data ends at byte offset %llu, past the end of the "
                          "file (%zu bytes)",
                          f->path, t->name, (unsigned long long)end, f->size);
            goto out;
        }
        if (t->file_offset % dtype_size(t->dtype)) {
            rc = ds_error("%s: tensor '%s': byte offset %llu is not aligned to its %s elements", f->path, t->name,
                          (unsigned long long)t->file_offset, dtype_name(t->dtype));
            goto out;
        }
        t->data = (const char *)f->map + t->file_offset;
        expect = end;
    }
    if (expect != f->size) {
        rc = ds_error("%s: %llu trailing bytes after the last tensor (byte offset %llu)", f->path,
                      (unsigned long long)(f->size - expect), (unsigned long long)expect);
        goto out;
    }
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, by_name);
out:
    json_decref(root);
    return rc;
}

int st_open(const char *path, StFile *f)
{
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block the open */
    if (fd < 0) return ds_error("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return ds_error("%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return ds_error("%s: not a regular file", path);
    }
    f->size = (size_t)sb.st_size;
    if (!(f->path = strdup(path))) {
        close(fd);
        return ds_error("%s: out of memory", path);
    }
    if (f->size < 8) {
        close(fd);
        ds_error("%s: file is %zu bytes, too small for the 8-byte header length", path, f->size);
        goto fail;
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        ds_error("%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    const unsigned char *b = f->map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (n > ST_MAX_HEADER) {
        ds_error("%s: header length %llu at byte offset 0 exceeds the %llu-byte limit", path, (unsigned long long)n,
                 ST_MAX_HEADER);
        goto fail;
    }
    if (n > f->size - 8) {
        ds_error("%s: header length %llu at byte offset 0 runs past the end of the file (%zu bytes)", path,
                 (unsigned long long)n, f->size);
        goto fail;
    }
    if (parse_header(f, (const char *)b + 8, (size_t)n, 8 + n)) goto fail;
    return 0;
fail:
    st_close(f);
    return -1;
}

void st_close(StFile *f)
{
    if (f->map) munmap(f->map, f->size);
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name)
{
    StTensor key = { .name = (char *)name };
    return bsearch(&key, f->tensors, f->n_tensors, sizeof key, by_name);
}
