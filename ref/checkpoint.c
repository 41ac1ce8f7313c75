/**
 * \file checkpoint.c
 * \brief Model directory reader: config, single or sharded safetensors (see checkpoint.h).
 */
#include "checkpoint.h"

#include "error.h"
#include "jsonfile.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const CkEntry *)a)->name, ((const CkEntry *)b)->name);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Maps one more file into ck->files; returns its index or −1. */
static int add_file(Checkpoint *ck, const char *name)
{
    for (int i = 0; i < ck->n_files; i++) {
        const char *base = strrchr(ck->files[i].path, '/') + 1;
        if (!strcmp(base, name)) return i;
    }
    char *path = join(ck->dir, name);
    if (!path) return ds_error("%s: out of memory", ck->dir);
    StFile *grown = realloc(ck->files, (ck->n_files + 1) * sizeof *grown);
    if (!grown) {
        free(path);
        return ds_error("%s: out of memory", ck->dir);
    }
    ck->files = grown;
    int rc = st_open(path, &ck->files[ck->n_files]);
    free(path);
    return rc ? -1 : ck->n_files++;
}

static int open_single(Checkpoint *ck)
{
    if (add_file(ck, "model.safetensors") < 0) return -1;
    const StFile *f = &ck->files[0];
    ck->entries = calloc(f->n_tensors + 1, sizeof *ck->entries);
    if (!ck->entries) return ds_error("%s: out of memory", f->path);
    for (size_t i = 0; i < f->n_tensors; i++) ck->entries[i] = (CkEntry){ f->tensors[i].name, f, &f->tensors[i] };
    ck->n_entries = f->n_tensors;
    return 0;
}

/* Most weight_map entries an index may list: twice the tensors the config can bind (3 + per layer
 * 2 norms, ≤ 7 attention tensors, a router and its bias, 3 per routed expert, 3 shared or dense),
 * leaving room for tensors a checkpoint carries beyond them, plus 1024. */
static size_t index_limit(const ModelConfig *c)
{
    const size_t per_layer = 2 + 7 + 2 + 3 * (size_t)c->n_routed_experts + 3;
    return 2 * (3 + (size_t)c->num_hidden_layers * per_layer) + 1024;
}

static int open_sharded(Checkpoint *ck, const char *index_path)
{
    size_t len;
    char *text = json_file_text(index_path, &len); /* a FIFO or directory is refused, never waited on */
    if (!text) return -1;
    /* bound the work before parsing: a hostile index of a million entries is refused by one scan */
    const size_t limit = index_limit(&ck->cfg);
    if (json_count_keys(text, len, 2, limit) > limit) {
        free(text);
        return ds_error("%s: more than %zu entries, twice the tensors config.json's %d layers of "
                        "%d routed experts can use",
                        index_path, limit, ck->cfg.num_hidden_layers, ck->cfg.n_routed_experts);
    }
    json_t *root = json_parse_text(index_path, text, len);
    free(text);
    if (!root) return -1;
    int rc = 0;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        rc = ds_error("%s: key 'weight_map' is missing or not an object", index_path);
        goto out;
    }
    ck->entries = calloc(json_object_size(map) + 1, sizeof *ck->entries);
    if (!ck->entries) {
        rc = ds_error("%s: out of memory", index_path);
        goto out;
    }
    /* First pass: open every shard the index names, so entries can point into stable storage. */
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v)
    {
        const char *shard = json_string_value(v);
        if (!shard) {
            rc = ds_error("%s: weight_map['%s'] is not a string", index_path, name);
            goto out;
        }
        if (strchr(shard, '/') || !strcmp(shard, "..") || !*shard) {
            rc = ds_error("%s: weight_map['%s']: shard name \"%s\" is not a plain file name", index_path, name, shard);
            goto out;
        }
        if (add_file(ck, shard) < 0) {
            rc = ds_error("%s (the shard of tensor '%s' in %s)", ds_last_error(), name, index_path);
            goto out;
        }
    }
    json_object_foreach(map, name, v)
    {
        const char *shard = json_string_value(v);
        int fi = add_file(ck, shard);
        const StTensor *t = st_find(&ck->files[fi], name);
        if (!t) {
            rc = ds_error("%s: tensor '%s' is listed in shard %s but absent from it", index_path, name, shard);
            goto out;
        }
        ck->entries[ck->n_entries++] = (CkEntry){ t->name, &ck->files[fi], t };
    }
out:
    json_decref(root);
    return rc;
}

// ANCHOR: checkpoint_open
int checkpoint_open(const char *dir, Checkpoint *ck)
{
    memset(ck, 0, sizeof *ck);
    if (!(ck->dir = strdup(dir))) return ds_error("%s: out of memory", dir);
    char *cfg = join(dir, "config.json"), *index = join(dir, "model.safetensors.index.json");
    int rc = -1;
    if (!cfg || !index) {
        ds_error("%s: out of memory", dir);
        goto out;
    }
    if (access(dir, F_OK) != 0) {
        ds_error("%s: no such model directory", dir);
        goto out;
    }
    if (config_load(cfg, &ck->cfg)) goto out;
    rc = access(index, F_OK) == 0 ? open_sharded(ck, index) : open_single(ck);
    if (rc == 0) qsort(ck->entries, ck->n_entries, sizeof *ck->entries, entry_cmp);
out:
    free(cfg);
    free(index);
    if (rc) checkpoint_close(ck); /* releases what was opened; the error line stays */
    return rc;
}
// ANCHOR_END: checkpoint_open

void checkpoint_close(Checkpoint *ck)
{
    for (int i = 0; i < ck->n_files; i++) st_close(&ck->files[i]);
    free(ck->files);
    free(ck->entries);
    free(ck->dir);
    memset(ck, 0, sizeof *ck);
}

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

// ANCHOR: checkpoint_tensor
const StTensor *checkpoint_tensor(const Checkpoint *ck, const char *name, int ndim, const int64_t *shape)
{
    CkEntry key = { .name = name };
    const CkEntry *e = bsearch(&key, ck->entries, ck->n_entries, sizeof key, entry_cmp);
    if (!e) {
        ds_error("%s: tensor '%s' is missing from the checkpoint", ck->dir, name);
        return NULL;
    }
    const StTensor *t = e->tensor;
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char got[128], want[128];
        format_shape(got, sizeof got, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim, shape);
        ds_error("%s: tensor '%s': shape %s, but the config implies %s", e->file->path, name, got, want);
        return NULL;
    }
    return t;
}
// ANCHOR_END: checkpoint_tensor
