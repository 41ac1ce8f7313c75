/**
 * \file test_fast_rope.c
 * \brief kernels/rope.cu against ref/rope.c's rope_rotate: v1 and v2, on q^R slices and the shared k^R.
 *
 * DeepSeek-V2(-Lite)'s RoPE (d_r = 64, YaRN s = 40) on 16 heads of d_q = 192,
 * an odd small layout (3 heads, d_r = 6, plain RoPE), and k^R inside a
 * [T, d_c + d_r] kv row; positions far out (pos0 = 3000) so angles are large.
 * Everything outside the rotated slices must stay bit-identical. Relative L2 ≤ 1e-5.
 * The _at launchers (positions from a device array) get each token at its own
 * position: pos0 + t, then the same positions reversed (tokens of different sequences).
 */
#include "check.h"
#include "fast_test.h"
#include "kernels.h"
#include "rope.h"
#include "yarn_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static TestRng rng;

static ModelConfig rope_config(int d_n, int d_r, bool yarn)
{
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.qk_nope_head_dim = d_n;
    c.qk_rope_head_dim = d_r;
    test_v2_rope(&c, yarn);
    return c;
}

/* Token t's position: pos0 + t, or pos0 + T − 1 − t for the reversed variants (3, 4). */
static int position(int variant, int pos0, int T, int t)
{
    return variant >= 3 ? pos0 + T - 1 - t : pos0 + t;
}

/*
 * Rotates `heads` slices per token of x (row_stride, head_stride, offset) on the device and on the host:
 * variants 1, 2: rope_forward_v1/v2 at pos0 + t; 3, 4: rope_forward_at_v1/v2 at positions reversed.
 */
static void check_layout(const ModelConfig *c, int T, int heads, int row_stride, int head_stride, int offset, int pos0)
{
    Rope r;
    assert_int_equal(rope_init(&r, c), 0);
    const size_t N = (size_t)T * row_stride;
    float *x = malloc(4 * N), *want = malloc(4 * N), *got = malloc(4 * N);
    int *pos = malloc(sizeof(int) * (size_t)T);
    test_rng_fill(&rng, x, N, -2.0f, 2.0f);
    float *dx, *df;
    int *dpos;
    assert_int_equal(cudaMalloc((void **)&dx, 4 * N), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&df, 4 * (size_t)r.dim / 2), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dpos, sizeof(int) * (size_t)T), cudaSuccess);
    assert_int_equal(cudaMemcpy(df, r.inv_freq, 4 * (size_t)r.dim / 2, cudaMemcpyHostToDevice), cudaSuccess);
    for (int t = 0; t < T; t++) pos[t] = position(3, pos0, T, t);
    assert_int_equal(cudaMemcpy(dpos, pos, sizeof(int) * (size_t)T, cudaMemcpyHostToDevice), cudaSuccess);
    static const char *const names[] = { "", "rope v1", "rope v2", "rope at v1 (positions reversed)",
                                         "rope at v2 (positions reversed)" };
    for (int variant = 1; variant <= 4; variant++) {
        memcpy(want, x, 4 * N);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < heads; h++)
                rope_rotate(want + (size_t)t * row_stride + (size_t)h * head_stride + offset, &r,
                            position(variant, pos0, T, t));
        assert_int_equal(cudaMemcpy(dx, x, 4 * N, cudaMemcpyHostToDevice), cudaSuccess);
        const float s = r.cos_sin_scale;
        const cudaError_t err =
            variant <= 2 ? (variant == 1 ? rope_forward_v1 : rope_forward_v2)(dx + offset, df, s, r.dim, T, heads,
                                                                              row_stride, head_stride, pos0, 0)
                         : (variant == 3 ? rope_forward_at_v1 : rope_forward_at_v2)(dx + offset, df, s, r.dim, T, heads,
                                                                                    row_stride, head_stride, dpos, 0);
        assert_int_equal(err, cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        poison(got, N);
        assert_int_equal(cudaMemcpy(got, dx, 4 * N, cudaMemcpyDeviceToHost), cudaSuccess);
        check_close(names[variant], got, want, N, -1, 1e-5);
        for (int t = 0; t < T; t++) /* q^N parts untouched */
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < offset; i++) {
                    const size_t k = (size_t)t * row_stride + (size_t)h * head_stride + i;
                    assert_memory_equal(&got[k], &x[k], sizeof(float));
                }
    }
    cudaFree(dx);
    cudaFree(df);
    cudaFree(dpos);
    free(x);
    free(want);
    free(got);
    free(pos);
}

static void deepseek_q_rope(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = rope_config(128, 64, true);
    check_layout(&c, 5, 16, 16 * 192, 192, 128, 0);
    check_layout(&c, 3, 16, 16 * 192, 192, 128, 3000);
}

static void deepseek_k_rope(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = rope_config(128, 64, true);
    check_layout(&c, 7, 1, 512 + 64, 0, 512, 17); /* k^R_raw inside [c^KV ; k^R] */
}

static void odd_plain_rope(void **state)
{
    (void)state;
    need_device();
    const ModelConfig c = rope_config(5, 6, false);
    check_layout(&c, 9, 3, 3 * 11, 11, 5, 2);
}

int main(void)
{
    setenv("SIM_RACECHECK", "1", 0);
    test_rng_seed(&rng, "fast rope");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deepseek_q_rope),
        cmocka_unit_test(deepseek_k_rope),
        cmocka_unit_test(odd_plain_rope),
    };
    return cmocka_run_group_tests_name("fast rope", tests, NULL, NULL);
}
