/* Exercise 03-rope-1: which RoPE pairs YaRN leaves alone, divides by s, or blends, for
 * DeepSeek-V2's settings (d_r = 64, θ = 10000, s = 40, L0 = 4096, β_f = 32, β_s = 1). */
#include "rope.h"

#include <math.h>
#include <stdio.h>

int main(void)
{
    ModelConfig cfg = {.qk_nope_head_dim = 128, .qk_rope_head_dim = 64, .rope_theta = 10000.0f,
                       .rope_yarn = true, .rope_factor = 40.0f, .rope_original_max_position = 4096,
                       .rope_beta_fast = 32.0f, .rope_beta_slow = 1.0f, .rope_mscale = 0.707f,
                       .rope_mscale_all_dim = 0.707f};
    Rope r;
    if (rope_init(&r, &cfg)) return 1;
    for (int i = 0; i < r.dim / 2; i++) {
        float original = 1.0f / powf(cfg.rope_theta, (float)(2 * i) / (float)r.dim);
        float kept = r.inv_freq[i] / original;   /* 1: unchanged, 1/s: interpolated */
        const char *what = kept == 1.0f                        ? "keeps theta_i"
                           : fabsf(kept - 1.0f / 40.0f) < 1e-6f ? "divided by 40"
                                                                 : "blended";
        printf("pair %2d %s\n", i, what);
    }
    return 0;
}
