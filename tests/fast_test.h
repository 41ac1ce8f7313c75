/**
 * \file fast_test.h
 * \brief What every suite of the fast path needs before it touches a device.
 *
 * Header-only, so each suite compiles it against its own CUDA headers: the simulated
 * device's in the sim build, the toolkit's in `make fast-gpu`.
 */
#ifndef DSV2_TESTS_FAST_TEST_H
#define DSV2_TESTS_FAST_TEST_H

#include "check.h"

#include <cuda_runtime.h>
#include <stdio.h>

/**
 * Skips the current test, saying why, unless n devices exist. Without a GPU the CUDA
 * runtime returns an error (35, insufficient driver) and leaves the count unwritten, so
 * the count starts at 0 and any error means "no device".
 */
static inline void need_devices(int n)
{
    int have = 0;
    const cudaError_t err = cudaGetDeviceCount(&have);
    if (err != cudaSuccess || have < n) {
        printf("need %d CUDA device%s: cudaGetDeviceCount returned %s, %d devices\n", n, n == 1 ? "" : "s",
               cudaGetErrorName(err), have);
        skip();
    }
}

/** need_devices(1). */
static inline void need_device(void)
{
    need_devices(1);
}

#endif
