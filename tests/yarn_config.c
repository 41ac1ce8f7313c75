/**
 * \file yarn_config.c
 * \brief DeepSeek-V2's RoPE settings with YaRN (see yarn_config.h).
 */
#include "yarn_config.h"

void test_v2_rope(ModelConfig *c, bool yarn)
{
    c->rope_theta = 10000.0f;
    c->rope_yarn = yarn;
    c->rope_factor = 40.0f;
    c->rope_original_max_position = 4096;
    c->rope_beta_fast = 32.0f;
    c->rope_beta_slow = 1.0f;
    c->rope_mscale = 0.707f;
    c->rope_mscale_all_dim = 0.707f;
}
