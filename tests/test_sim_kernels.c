/**
 * \file test_sim_kernels.c
 * \brief The simulated device runs kernels with CUDA semantics: one test per device-side feature.
 *
 * Kernels live in tests/sim/kernels.cu and tests/sim/faulty_kernels.cu; each
 * test uploads inputs, launches, synchronises and compares with an answer
 * computed here.
 */
#include "check.h"
#include "sim.h"
#include "sim/sim_test_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static TestRng rng;

/** Device copy of n bytes of host data. */
static void *to_device(const void *host, size_t bytes)
{
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes), cudaSuccess);
    assert_int_equal(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

/** Device buffer of n bytes filled with 0xff (NaN for floats), so unwritten output shows. */
static void *device_poisoned(size_t bytes)
{
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes), cudaSuccess);
    assert_int_equal(cudaMemset(d, 0xff, bytes), cudaSuccess);
    return d;
}

static void from_device(void *host, const void *d, size_t bytes)
{
    assert_int_equal(cudaMemcpy(host, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

static void block_reduction_with_shuffles_and_shared_memory(void **state)
{
    (void)state;
    enum { N = 3000, THREADS = 256, BLOCKS = (N + THREADS - 1) / THREADS };
    float x[N], got[BLOCKS], want[BLOCKS];
    test_rng_fill(&rng, x, N, -1.0f, 1.0f);
    for (int b = 0; b < BLOCKS; b++) {
        double s = 0.0;
        for (int i = b * THREADS; i < N && i < (b + 1) * THREADS; i++) s += x[i];
        want[b] = (float)s;
    }
    float *dx = to_device(x, sizeof x), *dout = device_poisoned(sizeof got);
    assert_int_equal(launch_block_sum(dx, N, dout, THREADS, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(got, dout, sizeof got);
    check_close("block sums", got, want, BLOCKS, 1e-5, 1e-6);
    cudaFree(dx);
    cudaFree(dout);
}

static void inclusive_scan_in_dynamic_shared_memory(void **state)
{
    (void)state;
    enum { N = 1000, THREADS = 1024 };
    int x[N], got[N];
    for (int i = 0; i < N; i++) x[i] = (int)test_rng_uniform(&rng, -100.0f, 100.0f);
    int *dx = to_device(x, sizeof x), *dy = device_poisoned(sizeof got);
    assert_int_equal(launch_block_scan(dx, dy, N, THREADS, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(got, dy, sizeof got);
    int sum = 0;
    for (int i = 0; i < N; i++) {
        sum += x[i];
        assert_int_equal(got[i], sum);
    }
    cudaFree(dx);
    cudaFree(dy);
}

static void tiled_transpose_of_a_ragged_matrix(void **state)
{
    (void)state;
    enum { R = 70, C = 45 };
    static float in[R * C], got[C * R], want[C * R];
    test_rng_fill(&rng, in, R * C, -1.0f, 1.0f);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) want[c * R + r] = in[r * C + c];
    float *din = to_device(in, sizeof in), *dout = device_poisoned(sizeof got);
    assert_int_equal(launch_transpose(din, dout, R, C, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(got, dout, sizeof got);
    check_close("transpose", got, want, R * C, 0.0, 0.0);
    cudaFree(din);
    cudaFree(dout);
}

static void three_dimensional_coordinates(void **state)
{
    (void)state;
    dim3 grid = { 3, 2, 2 }, block = { 4, 3, 2 };
    enum { N = 3 * 2 * 2 * 4 * 3 * 2 };
    unsigned int ids[N], dims[N];
    unsigned int *dids = device_poisoned(sizeof ids), *ddims = device_poisoned(sizeof dims);
    assert_int_equal(launch_coords(dids, ddims, grid, block, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(ids, dids, sizeof ids);
    from_device(dims, ddims, sizeof dims);
    unsigned int packed = 4u | 3u << 5 | 2u << 10 | 3u << 15 | 2u << 20 | 2u << 25;
    for (unsigned int i = 0; i < N; i++) {
        assert_int_equal(ids[i], i);
        assert_int_equal(dims[i], packed);
    }
    cudaFree(dids);
    cudaFree(ddims);
}

/** Expected shuffles for v = t, as the CUDA programming guide defines them. */
static void check_shuffles(int threads, int width, int xor_mask)
{
    int *got = malloc((size_t)threads * 4 * sizeof *got);
    int *d = device_poisoned((size_t)threads * 4 * sizeof *got);
    assert_int_equal(launch_shuffles(d, threads, width, xor_mask, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(got, d, (size_t)threads * 4 * sizeof *got);
    for (int t = 0; t < threads; t++) {
        int lane = t % 32, warp0 = t - lane, seg = lane / width * width, in_seg = lane % width;
        int idx = warp0 + seg + (lane + 5) % width;
        int up = in_seg >= 3 ? t - 3 : t;
        int down = in_seg + 3 < width ? t + 3 : t;
        int x = lane ^ xor_mask;
        int xr = x < seg + width ? warp0 + x : t;
        assert_int_equal(got[4 * t + 0], idx);
        assert_int_equal(got[4 * t + 1], up);
        assert_int_equal(got[4 * t + 2], down);
        assert_int_equal(got[4 * t + 3], xr);
    }
    cudaFree(d);
    free(got);
}

static void shuffles_idx_up_down_xor_with_widths(void **state)
{
    (void)state;
    check_shuffles(64, 32, 5);
    check_shuffles(96, 16, 3);
    check_shuffles(32, 8, 12); /* xor into a later segment returns the lane's own value */
}

static void ballot_any_all(void **state)
{
    (void)state;
    enum { T = 96 };
    unsigned int got[4 * T];
    unsigned int *d = device_poisoned(sizeof got);
    assert_int_equal(launch_votes(d, T, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(got, d, sizeof got);
    for (int t = 0; t < T; t++) {
        unsigned int ballot = 0;
        for (int l = 0; l < 32; l++)
            if ((t - t % 32 + l) % 3 == 0) ballot |= 1u << l;
        assert_int_equal(got[4 * t + 0], ballot);
        assert_int_equal(got[4 * t + 1], t / 32 == 37 / 32);
        assert_int_equal(got[4 * t + 2], 1);
        assert_int_equal(got[4 * t + 3], 0);
    }
    cudaFree(d);
}

static void syncthreads_count_and_or_in_a_partial_warp_block(void **state)
{
    (void)state;
    enum { T = 100 };
    int got[4 * T];
    int *d = device_poisoned(sizeof got);
    assert_int_equal(launch_barrier_variants(d, T, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(got, d, sizeof got);
    for (int t = 0; t < T; t++) {
        assert_int_equal(got[4 * t + 0], 15); /* 0, 7, ..., 98 */
        assert_int_equal(got[4 * t + 1], 1);
        assert_int_equal(got[4 * t + 2], 1);
        assert_int_equal(got[4 * t + 3], 0);
    }
    cudaFree(d);
}

static void atomics_add_max_cas(void **state)
{
    (void)state;
    enum { N = 1000 };
    int x[N], hist_want[16] = { 0 }, max_want = 0;
    for (int i = 0; i < N; i++) {
        x[i] = (int)test_rng_uniform(&rng, 0.0f, 100000.0f);
        hist_want[x[i] % 16]++;
        max_want = x[i] > max_want ? x[i] : max_want;
    }
    int *dx = to_device(x, sizeof x);
    int *dints = NULL;
    float *dsum = NULL;
    assert_int_equal(cudaMalloc((void **)&dints, 19 * sizeof(int)), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dsum, sizeof(float)), cudaSuccess);
    assert_int_equal(cudaMemset(dints, 0, 19 * sizeof(int)), cudaSuccess);
    assert_int_equal(cudaMemset(dsum, 0, sizeof(float)), cudaSuccess);
    assert_int_equal(launch_atomics(dx, N, dints, dsum, dints + 16, dints + 17, dints + 18, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    int ints[19];
    float sum;
    from_device(ints, dints, sizeof ints);
    from_device(&sum, dsum, sizeof sum);
    assert_memory_equal(ints, hist_want, sizeof hist_want);
    assert_int_equal(ints[16], max_want);
    assert_true(ints[17] >= 1 && ints[17] <= N);
    assert_int_equal(ints[18], 1);
    assert_true(sum == (float)N);
    cudaFree(dx);
    cudaFree(dints);
    cudaFree(dsum);
}

static void dynamic_shared_memory_limits(void **state)
{
    (void)state;
    float *d = device_poisoned(sizeof(float)), got;
    size_t small = 48 * 1024, big = 100 * 1024;
    assert_int_equal(launch_dynamic_smem(d, small, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(&got, d, sizeof got);
    double n = (double)(small / 4);
    assert_true(got == (float)(n * (n - 1) / 2));

    assert_int_equal(launch_dynamic_smem(d, big, 0), cudaErrorInvalidValue);
    assert_non_null(strstr(sim_last_detail(), "dynamic_smem"));
    assert_int_equal(set_dynamic_smem_limit(228 * 1024), cudaErrorInvalidValue);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidValue);
    assert_int_equal(set_dynamic_smem_limit(227 * 1024), cudaSuccess);
    assert_int_equal(launch_dynamic_smem(d, big, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(&got, d, sizeof got);
    n = (double)(big / 4);
    assert_true(got == (float)(n * (n - 1) / 2));
    assert_int_equal(launch_dynamic_smem(d, 227 * 1024 + 4, 0), cudaErrorInvalidValue);
    cudaFree(d);
}

/** Reference bfloat16 rounding, written independently: round half to even on the dropped 16 bits. */
static unsigned short bf16_reference(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if (isnan(f)) return 0x7fff;
    uint32_t keep = u >> 16, dropped = u & 0xffffu;
    if (dropped > 0x8000u || (dropped == 0x8000u && (keep & 1u))) keep++;
    return (unsigned short)keep;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void bfloat16_round_to_nearest_even_bit_exact(void **state)
{
    (void)state;
    enum { FIXED = 12, N = FIXED + 500 };
    float in[N];
    /* Special cases: float bits and the bfloat16 bits the GPU's cvt.rn.bf16.f32 gives. */
    const uint32_t fixed[FIXED] = {
        0x3f800000u, /* 1.0 */
        0x3f808000u, /* a tie with an even kept part: stays */
        0x3f818000u, /* a tie with an odd kept part: rounds up */
        0x3f808001u, /* just above a tie: rounds up */
        0x7fc00001u, /* quiet NaN with a payload: canonical NaN */
        0xff800001u, /* negative signalling NaN: canonical NaN */
        0x7f800000u, /* +inf */
        0xff800000u, /* −inf */
        0x7f7fffffu, /* FLT_MAX rounds up to +inf */
        0x7f7f7fffu, /* just below a tie near the top: rounds down */
        0x00018000u, /* a denormal tie with an odd kept part: rounds up */
        0x80000000u, /* −0 */
    };
    const unsigned short want_fixed[FIXED] = { 0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x7fff, 0x7fff,
                                               0x7f80, 0xff80, 0x7f80, 0x7f7f, 0x0002, 0x8000 };
    for (int i = 0; i < FIXED; i++) in[i] = from_bits(fixed[i]);
    for (int i = FIXED; i < N; i++) {
        uint32_t u = (uint32_t)(test_rng_uniform(&rng, 0.0f, 1.0f) * 4294967040.0f);
        in[i] = from_bits(u);
    }
    unsigned short bits[N];
    float back[N];
    float *din = to_device(in, sizeof in);
    unsigned short *dbits = device_poisoned(sizeof bits);
    float *dback = device_poisoned(sizeof back);
    assert_int_equal(launch_bf16(din, dbits, dback, N, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    from_device(bits, dbits, sizeof bits);
    from_device(back, dback, sizeof back);
    for (int i = 0; i < N; i++) {
        unsigned short want = i < FIXED ? want_fixed[i] : bf16_reference(in[i]);
        uint32_t u;
        memcpy(&u, &in[i], 4);
        if (bits[i] != want) fail_msg("bf16(%#010x) = %#06x, want %#06x", (unsigned)u, bits[i], want);
        assert_int_equal(bf16_reference(in[i]), want);
        uint32_t wb = (uint32_t)want << 16, gb;
        memcpy(&gb, &back[i], 4);
        assert_int_equal(gb, wb);
    }
    cudaFree(din);
    cudaFree(dbits);
    cudaFree(dback);
}

static void barrier_divergence_names_the_kernel(void **state)
{
    (void)state;
    int *d = device_poisoned(32 * sizeof(int));
    assert_int_equal(launch_divergent_barrier(d, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    assert_non_null(strstr(sim_last_detail(), "divergent_barrier"));
    assert_non_null(strstr(sim_last_detail(), "barrier divergence"));
    /* The error is sticky until the device is reset, as on a GPU. */
    assert_int_equal(cudaGetLastError(), cudaErrorLaunchFailure);
    assert_int_equal(launch_empty((dim3){ 1, 1, 1 }, (dim3){ 1, 1, 1 }, 0, 0), cudaErrorLaunchFailure);
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
}

static void warp_divergent_shuffle_is_reported(void **state)
{
    (void)state;
    int *d = device_poisoned(32 * sizeof(int));
    assert_int_equal(launch_divergent_shuffle(d, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    assert_non_null(strstr(sim_last_detail(), "divergent_shuffle"));
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
}

static int setup(void **state)
{
    (void)state;
    setenv("SIM_QUIET", "1", 1);
    test_rng_seed(&rng, "sim_kernels");
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(block_reduction_with_shuffles_and_shared_memory),
        cmocka_unit_test(inclusive_scan_in_dynamic_shared_memory),
        cmocka_unit_test(tiled_transpose_of_a_ragged_matrix),
        cmocka_unit_test(three_dimensional_coordinates),
        cmocka_unit_test(shuffles_idx_up_down_xor_with_widths),
        cmocka_unit_test(ballot_any_all),
        cmocka_unit_test(syncthreads_count_and_or_in_a_partial_warp_block),
        cmocka_unit_test(atomics_add_max_cas),
        cmocka_unit_test(dynamic_shared_memory_limits),
        cmocka_unit_test(bfloat16_round_to_nearest_even_bit_exact),
        cmocka_unit_test(barrier_divergence_names_the_kernel),
        cmocka_unit_test(warp_divergent_shuffle_is_reported),
    };
    return cmocka_run_group_tests_name("sim_kernels", tests, setup, NULL);
}
