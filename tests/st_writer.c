/**
 * \file st_writer.c
 * \brief A tiny safetensors writer and scratch-directory helpers (see st_writer.h).
 */
#include "st_writer.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Appends printf-style text to a growing buffer; returns 0 or −1. */
static int append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (k < 0) return -1;
        if ((size_t)k < *cap - *len) {
            *len += (size_t)k;
            return 0;
        }
        char *grown = realloc(*buf, *cap * 2 + (size_t)k);
        if (!grown) return -1;
        *buf = grown;
        *cap = *cap * 2 + (size_t)k;
    }
}

int stw_write(const char *path, const StwTensor *t, int n)
{
    size_t cap = 256, len = 0, offset = 0;
    char *h = malloc(cap);
    int rc = h ? append(&h, &len, &cap, "{") : -1;
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = append(&h, &len, &cap, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t[i].name, t[i].dtype);
        for (int d = 0; rc == 0 && d < t[i].ndim; d++)
            rc = append(&h, &len, &cap, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
        if (rc == 0) rc = append(&h, &len, &cap, "],\"data_offsets\":[%zu,%zu]}", offset, offset + t[i].nbytes);
        offset += t[i].nbytes;
    }
    if (rc == 0) rc = append(&h, &len, &cap, "}");
    while (rc == 0 && len % 8) rc = append(&h, &len, &cap, " ");
    char *data = rc == 0 ? calloc(offset + 1, 1) : NULL;
    if (data) {
        size_t at = 0;
        for (int i = 0; i < n; i++) {
            if (t[i].nbytes) memcpy(data + at, t[i].data, t[i].nbytes);
            at += t[i].nbytes;
        }
        rc = stw_write_raw(path, len, h, data, offset);
    } else {
        rc = -1;
    }
    free(data);
    free(h);
    return rc;
}

int stw_write_raw(const char *path, uint64_t declared_len, const char *header, const void *data, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(declared_len >> (8 * i));
    int ok = fwrite(len, 1, 8, f) == 8;
    size_t hl = strlen(header);
    ok = ok && fwrite(header, 1, hl, f) == hl;
    for (size_t i = 0; ok && i < data_len; i++) ok = fputc(data ? ((const unsigned char *)data)[i] : 0, f) != EOF;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : -1;
}

int stw_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : -1;
}

int stw_copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (!in) return -1;
    FILE *out = fopen(dst, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[1 << 14];
    size_t n;
    int ok = 1;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    ok = !ferror(in) && ok;
    fclose(in);
    ok = (fclose(out) == 0) && ok;
    return ok ? 0 : -1;
}

char *stw_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    char *dir = stw_path(base && *base ? base : "/tmp", "dsv2-test-XXXXXX");
    if (dir && !mkdtemp(dir)) {
        free(dir);
        dir = NULL;
    }
    return dir;
}

void stw_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = stw_path(dir, e->d_name);
        if (p && unlink(p) != 0) /* a directory: emptied, then removed */
            stw_rmdir(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

char *stw_scratch_dir;

int stw_group_setup(void **state)
{
    (void)state;
    stw_scratch_dir = stw_mkdtemp();
    return stw_scratch_dir ? 0 : -1;
}

int stw_group_teardown(void **state)
{
    (void)state;
    stw_rmdir(stw_scratch_dir);
    free(stw_scratch_dir);
    stw_scratch_dir = NULL;
    return 0;
}

char *stw_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}
