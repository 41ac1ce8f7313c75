/**
 * \file checkpoint.h
 * \brief A Hugging Face model directory: config.json plus safetensors weights.
 *
 * Weights come from `model.safetensors`, or from the shards named in
 * `model.safetensors.index.json` (`weight_map`: tensor name → shard file).
 * Shard names are read from the index, never rebuilt from a pattern:
 * DeepSeek's own shards are named `model-00001-of-000004.safetensors`.
 * Every file is memory-mapped; nothing is read until it is used.
 */
#ifndef DSV2_CHECKPOINT_H
#define DSV2_CHECKPOINT_H

#include "config.h"
#include "safetensors.h"

/** Where one tensor lives: which file, and its entry there. */
typedef struct {
    const char *name;       /**< tensor name (owned by the StFile) */
    const StFile *file;     /**< the shard holding it */
    const StTensor *tensor; /**< its entry in that shard */
} CkEntry;

/** An open model directory. */
typedef struct {
    ModelConfig cfg;  /**< the validated config.json */
    char *dir;        /**< the directory */
    int n_files;      /**< number of safetensors files */
    StFile *files;    /**< the mapped files */
    size_t n_entries; /**< number of tensors */
    CkEntry *entries; /**< sorted by name */
} Checkpoint;

/**
 * Opens dir: reads config.json, then the single file or the index and its
 * shards. A missing shard, or a tensor the index places in a shard that does
 * not hold it, is an error naming both.
 * \return 0, or −1 with one error line.
 */
int checkpoint_open(const char *dir, Checkpoint *ck);

/** Unmaps and frees everything (safe on a zeroed Checkpoint). */
void checkpoint_close(Checkpoint *ck);

/**
 * The tensor called name, checked against the expected rank and extents
 * (shape[0..ndim)). A missing tensor or a different shape is an error naming
 * the file, the tensor and both shapes.
 * \return the tensor, or NULL with one error line.
 */
const StTensor *checkpoint_tensor(const Checkpoint *ck, const char *name, int ndim, const int64_t *shape);

#endif
