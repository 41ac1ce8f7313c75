/**
 * \file fuzz_index.c
 * \brief libFuzzer target: model.safetensors.index.json (the shard index) through checkpoint_open.
 *
 * The model directory holds a valid config and shard (copied from tests/golden/v2 at
 * start-up); the fuzzer writes the index.
 */
#include "checkpoint.h"
#include "fuzz_util.h"

#include <string.h>
#include <sys/stat.h>

static char dir[128];

static void copy(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/%s'", from, dir, to);
    if (system(cmd)) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/dsv2-fuzz-index-%d", (int)getpid());
    mkdir(dir, 0700);
    copy("tests/golden/v2/config.json", "config.json");
    copy("tests/golden/v2/model-00001-of-000002.safetensors", "model-00001-of-000002.safetensors");
    copy("tests/golden/v2/model-00002-of-000002.safetensors", "model-00002-of-000002.safetensors");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[192];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) abort();
    Checkpoint ck;
    if (checkpoint_open(dir, &ck) == 0) checkpoint_close(&ck);
    return 0;
}
