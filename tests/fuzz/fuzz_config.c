/**
 * \file fuzz_config.c
 * \brief libFuzzer target: config.json (config_load) and the invariants a loaded config promises.
 */
#include "config.h"
#include "fuzz_util.h"

#include <limits.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ModelConfig c;
    if (config_load(fuzz_file("config.json", data, size), &c) == 0) {
        if (c.n_routed_experts &&
            (c.n_routed_experts % c.n_group || c.topk_group > c.n_group || c.num_experts_per_tok > c.n_routed_experts))
            abort();
        if (c.qk_rope_head_dim % 2 || c.kv_lora_rank < 1) abort();
        if (c.bos_token_id >= c.vocab_size || c.eos_token_id >= c.vocab_size || c.max_position_embeddings < 2) abort();
        if ((int64_t)c.n_shared_experts * c.moe_intermediate_size > INT_MAX) abort();
    }
    return 0;
}
