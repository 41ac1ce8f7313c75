/**
 * \file jsonfile.c
 * \brief json_read_file(): a regular-file check before parsing; counting keys before parsing.
 */
#include "jsonfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

char *json_file_text(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        ds_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        ds_error("%s: not a regular file", path);
        return NULL;
    }
    if ((size_t)sb.st_size > JSON_MAX_BYTES) {
        close(fd);
        ds_error("%s: %lld bytes exceeds the %zu-byte limit for a JSON file", path, (long long)sb.st_size,
                 JSON_MAX_BYTES);
        return NULL;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        ds_error("%s: out of memory for %zu bytes", path, n);
        return NULL;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(buf);
        ds_error("%s: read %zu of %zu bytes", path, got, n);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

json_t *json_parse_text(const char *path, const char *text, size_t len)
{
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        if (err.line > 0)
            ds_error("%s: line %d, column %d: %s", path, err.line, err.column, err.text);
        else
            ds_error("%s: %s", path, err.text);
    }
    return root;
}

json_t *json_read_file(const char *path)
{
    size_t n;
    char *text = json_file_text(path, &n);
    if (!text) return NULL;
    json_t *root = json_parse_text(path, text, n);
    free(text);
    return root;
}

size_t json_count_keys(const char *text, size_t len, int depth, size_t stop)
{
    size_t n = 0;
    int level = 0, in_string = 0;
    for (size_t i = 0; i < len && n <= stop; i++) {
        const char ch = text[i];
        if (in_string) {
            if (ch == '\\')
                i++; /* an escaped quote does not end the string */
            else if (ch == '"')
                in_string = 0;
        } else if (ch == '"') {
            in_string = 1;
        } else if (ch == '{' || ch == '[') {
            level++;
        } else if (ch == '}' || ch == ']') {
            level--;
        } else if (ch == ':' && level == depth) { /* a colon outside strings ends a key */
            n++;
        }
    }
    return n;
}
