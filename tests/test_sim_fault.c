/**
 * \file test_sim_fault.c
 * \brief Fault injection: SIM_FAIL_MALLOC=N fails the N-th cudaMalloc; SIM_FAIL_COMM=1 fails communicator creation.
 */
#include "check.h"
#include "nccl.h"
#include "sim.h"

#include <stdlib.h>
#include <string.h>

static void third_cudamalloc_fails(void **state)
{
    (void)state;
    void *p[4] = { NULL };
    assert_int_equal(cudaMalloc(&p[0], 16), cudaSuccess);
    assert_int_equal(cudaMalloc(&p[1], 16), cudaSuccess);
    assert_int_equal(cudaMalloc(&p[2], 16), cudaErrorMemoryAllocation);
    assert_non_null(strstr(sim_last_detail(), "SIM_FAIL_MALLOC"));
    assert_int_equal(cudaGetLastError(), cudaErrorMemoryAllocation);
    assert_int_equal(cudaMalloc(&p[3], 16), cudaSuccess); /* only the third */
    cudaFree(p[0]), cudaFree(p[1]), cudaFree(p[3]);
}

static void communicator_creation_fails(void **state)
{
    (void)state;
    ncclComm_t comms[2];
    assert_int_equal(ncclCommInitAll(comms, 2, NULL), ncclSystemError);
    assert_non_null(strstr(ncclGetLastError(NULL), "SIM_FAIL_COMM"));
    unsetenv("SIM_FAIL_COMM");
    assert_int_equal(ncclCommInitAll(comms, 2, NULL), ncclSuccess);
    ncclCommDestroy(comms[0]);
    ncclCommDestroy(comms[1]);
}

static int setup(void **state)
{
    (void)state;
    setenv("SIM_QUIET", "1", 1);
    setenv("SIM_DEVICE_COUNT", "2", 1);
    setenv("SIM_FAIL_MALLOC", "3", 1);
    setenv("SIM_FAIL_COMM", "1", 1);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(third_cudamalloc_fails),
        cmocka_unit_test(communicator_creation_fails),
    };
    return cmocka_run_group_tests_name("sim_fault", tests, setup, NULL);
}
