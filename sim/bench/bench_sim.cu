/**
 * \file bench_sim.cu
 * \brief make bench-sim: how fast the simulated device switches fibers and launches kernels.
 *
 * Prints two figures and writes them to build/bench/sim.json (the path given
 * as the first argument): fiber switches per second (one block of 256
 * threads passing many barriers) and empty launches per second (a kernel of
 * one warp that does nothing, launched and run).
 */
#include "dsv2_launch.h"
#include "sim.h"

#include <stdio.h>
#include <time.h>

/** Does nothing. */
__global__ void empty_kernel(void) {}

/** Passes `iterations` barriers. */
__global__ void barrier_kernel(int iterations)
{
    for (int i = 0; i < iterations; i++) __syncthreads();
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    SimStats a, b;
    sim_stats(&a);
    double t0 = seconds();
    LAUNCH(barrier_kernel, dim3(1), dim3(256), 0, 0, 2000);
    if (cudaDeviceSynchronize() != cudaSuccess) return 1;
    double t1 = seconds();
    sim_stats(&b);
    double switches = (double)(b.fiber_switches - a.fiber_switches) / (t1 - t0);

    const int launches = 20000;
    t0 = seconds();
    for (int i = 0; i < launches; i++) LAUNCH(empty_kernel, dim3(1), dim3(32), 0, 0);
    if (cudaDeviceSynchronize() != cudaSuccess) return 1;
    t1 = seconds();
    double per_s = launches / (t1 - t0);

    printf("sim: %.3g fiber switches/s, %.3g empty launches/s (1 block of 32 threads)\n", switches, per_s);
    if (argc > 1) {
        FILE *f = fopen(argv[1], "w");
        if (!f) return 1;
        fprintf(f, "{\"fiber_switches_per_s\": %.0f, \"empty_launches_per_s\": %.0f}\n", switches, per_s);
        fclose(f);
    }
    return 0;
}
