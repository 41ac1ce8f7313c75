/**
 * \file train_save.c
 * \brief Saving trained weights as safetensors (see train_save.h).
 */
#include "train_save.h"

#include "error.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    json_t *header;
    size_t offset;       /* bytes of data described so far */
    const float *expect; /* where the next weight must start in tm->params */
    int tiled;           /* every weight started where the previous ended */
} Header;

static void describe(void *ctx, const char *name, const float *p, int rows, int cols)
{
    Header *h = ctx;
    const size_t n = (size_t)rows * (cols ? cols : 1), bytes = n * sizeof(float);
    json_t *shape = cols ? json_pack("[ii]", rows, cols) : json_pack("[i]", rows);
    json_object_set_new(h->header, name,
                        json_pack("{s:s, s:o, s:[II]}", "dtype", "F32", "shape", shape, "data_offsets",
                                  (json_int_t)h->offset, (json_int_t)(h->offset + bytes)));
    h->tiled &= p == h->expect;
    h->expect = p + n;
    h->offset += bytes;
}

// ANCHOR: train_model_save
int train_model_save(const TrainModel *tm, const char *path)
{
    Header h = { json_object(), 0, tm->params, 1 };
    train_params_each(tm, describe, &h);
    /* the weights tile tm->params in visiting order, so the data section is params itself */
    if (!h.tiled || h.offset != tm->n_params * sizeof(float)) {
        json_decref(h.header);
        return ds_error("%s: the weights do not tile the parameter array", path);
    }
    char *text = json_dumps(h.header, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h.header);
    if (!text) return ds_error("%s: out of memory for the header", path);
    size_t len = strlen(text);
    const size_t padded = (len + 7) / 8 * 8; /* data starts 8-byte aligned */
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        free(text);
        return ds_error("%s: path too long", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(text);
        return ds_error("%s: cannot create: %s", tmp, strerror(errno));
    }
    unsigned char n8[8];
    for (int i = 0; i < 8; i++) n8[i] = (unsigned char)((uint64_t)padded >> (8 * i)); /* little-endian */
    int ok = fwrite(n8, 1, 8, f) == 8 && fwrite(text, 1, len, f) == len;
    for (; ok && len < padded; len++) ok = fputc(' ', f) != EOF;
    ok = ok && fwrite(tm->params, sizeof(float), tm->n_params, f) == tm->n_params; /* LE hosts, as the reader */
    ok = (fclose(f) == 0) && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        const int err = errno;
        remove(tmp);
        return ds_error("%s: write failed: %s", path, strerror(err));
    }
    return 0;
}
// ANCHOR_END: train_model_save
