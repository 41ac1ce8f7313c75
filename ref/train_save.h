/**
 * \file train_save.h
 * \brief Writes a TrainModel's weights as a safetensors checkpoint that model_open() reads.
 */
#ifndef DSV2_TRAIN_SAVE_H
#define DSV2_TRAIN_SAVE_H

#include "train_model.h"

/**
 * Writes every weight of tm, float32, under its checkpoint name (train_params_each()) to the
 * safetensors file path. The file is written under a temporary name and renamed into place, so a
 * failure leaves no partial file. A directory with this file and the model's config.json (and
 * tokenizer files) is a checkpoint model_open() accepts. \return 0, or −1 with one error line
 * naming the file.
 */
int train_model_save(const TrainModel *tm, const char *path);

#endif
