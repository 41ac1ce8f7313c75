/**
 * \file fuzz_util.h
 * \brief Shared helper of the fuzz targets: the readers take paths, so inputs go through a file.
 */
#ifndef DSV2_FUZZ_UTIL_H
#define DSV2_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/** Writes data to a per-process file under /tmp named after tag and returns its path (static). */
static inline const char *fuzz_file(const char *tag, const uint8_t *data, size_t size)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/dsv2-fuzz-%d-%s", (int)getpid(), tag);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f)) abort();
    return path;
}

#endif
