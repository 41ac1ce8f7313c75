/**
 * \file test_sim_racecheck.c
 * \brief Race-check mode (SIM_RACECHECK=1) passes correct kernels and reports a planted missing __syncthreads.
 */
#include "check.h"
#include "sim.h"
#include "sim/sim_test_kernels.h"

#include <stdlib.h>
#include <string.h>

enum { N = 200 };

static int x[N], want[N];

static void correct_kernels_pass_every_thread_order(void **state)
{
    (void)state;
    int got[N], *dx, *dy;
    assert_int_equal(cudaMalloc((void **)&dx, sizeof x), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dy, sizeof x), cudaSuccess);
    assert_int_equal(cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(launch_block_scan(dx, dy, N, 256, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_int_equal(cudaMemcpy(got, dy, sizeof got, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_memory_equal(got, want, sizeof got);
    cudaFree(dx);
    cudaFree(dy);
}

static void missing_barrier_is_reported(void **state)
{
    (void)state;
    int *dx, *dy;
    assert_int_equal(cudaMalloc((void **)&dx, sizeof x), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dy, sizeof x), cudaSuccess);
    assert_int_equal(cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(launch_racy_scan(dx, dy, N, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    assert_non_null(strstr(sim_last_detail(), "race-check: kernel racy_scan"));
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
}

static int setup(void **state)
{
    (void)state;
    setenv("SIM_QUIET", "1", 1);
    setenv("SIM_RACECHECK", "1", 1);
    for (int i = 0; i < N; i++) {
        x[i] = i % 7 - 3;
        want[i] = (i ? want[i - 1] : 0) + x[i];
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(correct_kernels_pass_every_thread_order),
        cmocka_unit_test(missing_barrier_is_reported),
    };
    return cmocka_run_group_tests_name("sim_racecheck", tests, setup, NULL);
}
