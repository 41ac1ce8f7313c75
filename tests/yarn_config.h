/**
 * \file yarn_config.h
 * \brief DeepSeek-V2's RoPE settings with YaRN, for the suites that need them (one definition).
 */
#ifndef DSV2_TESTS_YARN_CONFIG_H
#define DSV2_TESTS_YARN_CONFIG_H

#include <stdbool.h>

#include "config.h"

/**
 * Sets c's RoPE fields to DeepSeek-V2's and V2-Lite's (docs/semantics.md §1.1): θ = 10000; YaRN
 * with s = 40 over an original context of 4096 positions, β_fast = 32, β_slow = 1,
 * mscale = mscale_all_dim = 0.707. yarn false leaves the YaRN figures in place but
 * turns YaRN off (plain RoPE, σ without the m² factor). Other fields are left alone.
 */
void test_v2_rope(ModelConfig *c, bool yarn);

#endif
