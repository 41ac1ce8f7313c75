/**
 * \file fuzz_safetensors.c
 * \brief libFuzzer target: the safetensors header and layout (st_open), then every tensor's bytes.
 */
#include "fuzz_util.h"
#include "safetensors.h"

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StFile f;
    if (st_open(fuzz_file("st", data, size), &f) == 0) {
        if (f.n_tensors > ST_MAX_TENSORS) abort();
        unsigned sum = 0;
        for (size_t i = 0; i < f.n_tensors; i++) { /* touch the first and last byte of each tensor */
            const unsigned char *p = f.tensors[i].data;
            if (f.tensors[i].nbytes) sum += p[0] + p[f.tensors[i].nbytes - 1];
            if (st_find(&f, f.tensors[i].name) != &f.tensors[i]) abort();
        }
        sink = sum;
        st_close(&f);
    }
    return 0;
}
