/*
 * notebooks-c/yarn_ramp.c: which rotary frequencies does YaRN stretch, and by how much?
 *
 * Run:  make notebook-yarn_ramp
 *       NOTEBOOK_DATA=ramp.dat build/notebooks/yarn_ramp    (also writes plot data)
 *
 * RoPE turns pair i of the d_r-wide key/query part by the angle t·θ_i, θ_i = θ^{-2i/d_r}.
 * Pair i completes L0·θ_i/(2π) rotations over the original context L0: the first pairs
 * turn thousands of times, the last ones less than once. To stretch the context by s,
 * YaRN divides only the slow frequencies by s (interpolation), keeps the fast ones
 * (extrapolation), and blends linearly in between (paper §3.1.4, Appendix; bloc97's
 * YaRN). The blend starts where a pair makes β_fast rotations over L0 and ends where it
 * makes β_slow:
 *
 *     low  = floor(d_r · ln(L0 / (2π β_fast)) / (2 ln θ)),
 *     high = ceil (d_r · ln(L0 / (2π β_slow)) / (2 ln θ)),
 *     γ_i  = clamp((i − low) / (high − low), 0, 1),   θ'_i = (1 − γ_i) θ_i + γ_i θ_i / s.
 *
 * The frequencies themselves come from the reference: rope_init() (ref/rope.c) for the
 * released DeepSeek-V2 config (θ = 10000, s = 40, L0 = 4096, d_r = 64, β_fast = 32,
 * β_slow = 1), and once more with YaRN off for the original θ_i. The notebook reads the
 * blend back as γ_i = (θ_i − θ'_i) / (θ_i − θ_i/s), computes low and high from the
 * formula above, and fails unless γ is 0 up to low, 1 from high on and rises in between.
 * figures/yarn-ramp.svg plots its data (notebooks-c/plots/yarn_ramp.gp).
 */
#include "config.h"
#include "rope.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* The rope_scaling block of the released DeepSeek-V2 and V2-Lite config.json. */
static ModelConfig released(void)
{
    ModelConfig c = { 0 };
    c.qk_nope_head_dim = 128;
    c.qk_rope_head_dim = 64;
    c.rope_theta = 10000.0f;
    c.rope_yarn = true;
    c.rope_factor = 40.0f;
    c.rope_original_max_position = 4096;
    c.rope_beta_fast = 32.0f;
    c.rope_beta_slow = 1.0f;
    c.rope_mscale = 0.707f;
    c.rope_mscale_all_dim = 0.707f;
    return c;
}

/* The pair index at which a frequency makes `rotations` turns over L0 (before rounding). */
static double boundary(const ModelConfig *c, double rotations)
{
    return c->qk_rope_head_dim * log(c->rope_original_max_position / (2 * M_PI * rotations)) / (2 * log(c->rope_theta));
}

int main(void)
{
    const ModelConfig yarn = released();
    ModelConfig plain = yarn;
    plain.rope_yarn = false;
    Rope r_yarn, r_plain;
    if (rope_init(&r_yarn, &yarn) != 0 || rope_init(&r_plain, &plain) != 0) {
        fprintf(stderr, "rope_init failed\n");
        return 1;
    }
    const int pairs = yarn.qk_rope_head_dim / 2;
    const double s = yarn.rope_factor, L0 = yarn.rope_original_max_position;
    const double low = fmax(floor(boundary(&yarn, yarn.rope_beta_fast)), 0);
    const double high = fmin(ceil(boundary(&yarn, yarn.rope_beta_slow)), yarn.qk_rope_head_dim - 1);

    const char *path = getenv("NOTEBOOK_DATA");
    FILE *data = path ? fopen(path, "w") : NULL;
    if (path && !data) {
        perror(path);
        return 1;
    }
    if (data) { fprintf(data, "# pair gamma theta_original theta_yarn theta_over_s rotations_in_L0\n"); }

    printf("YaRN for theta %g, s %g, L0 %.0f, d_r %d: blend from pair %.0f (beta_fast %g "
           "rotations) to pair %.0f (beta_slow %g)\n\n",
           (double)yarn.rope_theta, s, L0, yarn.qk_rope_head_dim, low, (double)yarn.rope_beta_fast, high,
           (double)yarn.rope_beta_slow);
    printf("%5s %12s %12s %12s %8s %14s\n", "pair", "theta_i", "yarn", "theta_i/s", "gamma", "turns in L0");
    int bad = 0;
    double prev = 0;
    for (int i = 0; i < pairs; i++) {
        const double orig = r_plain.inv_freq[i], got = r_yarn.inv_freq[i];
        const double gamma = (orig - got) / (orig - orig / s); /* share of θ_i/s in θ'_i */
        const double turns = L0 * orig / (2 * M_PI);
        printf("%5d %12.4e %12.4e %12.4e %8.4f %14.3f\n", i, orig, got, orig / s, gamma, turns);
        if (data) fprintf(data, "%d %.6f %.6e %.6e %.6e %.4f\n", i, gamma, orig, got, orig / s, turns);
        /* float32 frequencies: γ is exact to about 1e-4 */
        if ((i <= low && fabs(gamma) > 1e-4) || (i >= high && fabs(gamma - 1) > 1e-4) || gamma < prev - 1e-4) {
            fprintf(stderr, "pair %d: gamma %.6f breaks the ramp (low %.0f, high %.0f)\n", i, gamma, low, high);
            bad = 1;
        }
        prev = gamma;
    }
    /* block 1: the two boundaries, for the plot's markers */
    if (data) {
        fprintf(data, "\n\n# low high\n%.0f %.0f\n", low, high);
        fclose(data);
    }
    if (bad) return 1;
    printf("\nchecks passed: gamma is 0 up to pair %.0f, 1 from pair %.0f, rising in between\n", low, high);
    return 0;
}
