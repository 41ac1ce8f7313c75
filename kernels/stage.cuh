/**
 * \file stage.cuh
 * \brief Stages inside one launch: a block may wait for work of the blocks that started before it.
 *
 * Work that needs all of an earlier product (the rows of W^O need every head's output) normally
 * waits for the end of a launch: the next launch starts when the last block of the previous one is
 * done. Each such boundary costs a launch latency and leaves the GPU draining and refilling. One
 * launch can hold both products instead, if a block of the second may wait for the blocks of the
 * first, and that wait is safe only if the blocks it waits for are sure to run.
 *
 * A CUDA grid larger than the GPU holds runs in waves, in an order the hardware chooses, so a
 * block cannot wait on an arbitrary blockIdx: that block might not be resident, and the waiting
 * block would keep the SM it needs. **Tickets** remove the problem. Every block takes a ticket from
 * an atomic counter as it starts, and uses its ticket, not blockIdx, to decide what it computes:
 * the first tickets do the first stage, the next ones the second, and so on. A block holding
 * ticket t has started after every block with a smaller ticket, which is already running and
 * never waits on t: those blocks finish, so a wait on them ends, whatever the grid size and
 * wherever the blocks run. (Single-pass prefix scans with decoupled look-back rest on the same
 * argument.) Unlike a grid-wide barrier, nothing here needs the whole grid resident at once.
 *
 * A stage is one counter: each block of it calls stage_signal() when its writes are done, and a
 * block of a later stage calls stage_wait() for the count it needs. Data a stage writes is read by
 * later stages of the same launch with __ldcg (through L2, past the SM's L1, which another SM's
 * writes do not update), never with __ldg.
 *
 * The counters live in device memory, zero between launches: [0] the ticket dispenser, [1] the
 * blocks that have finished, [2..] one per stage. stage_exit() lets the last block to finish zero
 * them all, so the next launch (or graph replay) finds them at rest.
 *
 * On the simulated device blocks run one after another, so a block's wait is met before it starts;
 * a wait for a later ticket would never end, and the simulator reports it as a fault.
 */
#ifndef DSV2_KERNELS_STAGE_CUH
#define DSV2_KERNELS_STAGE_CUH /**< include guard */

#include "dsv2_launch.h"

/** Ints of the counters of a launch with `stages` stages: the dispenser, the finished count, one per stage. */
#define STAGE_COUNTER_INTS(stages) (2 + (stages))

/** This block's ticket: its position in the order blocks started (block-uniform). */
static __device__ int stage_ticket(int *counters)
{
    __shared__ int ticket;
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) ticket = atomicAdd(counters, 1);
    __syncthreads();
    return ticket;
}

/** Publishes this block's writes to later stages: counts the block on stage s's counter. */
static __device__ void stage_signal(int *counters, int s)
{
    __syncthreads(); /* every thread's writes are issued */
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        __threadfence(); /* ... and visible to the whole device before the count is */
        atomicAdd(counters + 2 + s, 1);
    }
}

/** Waits until `count` blocks have signalled stage s (all of them must hold smaller tickets). */
static __device__ void stage_wait(int *counters, int s, int count)
{
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
#ifndef __CUDACC__
        sim_stage_wait(counters + 2 + s);
#endif
        while (atomicAdd(counters + 2 + s, 0) < count) __nanosleep(100);
        __threadfence(); /* the stage's writes are read after its count */
    }
    __syncthreads();
}

/** Ends the block's part: the last block of the launch to finish zeroes every counter for the next launch. */
static __device__ void stage_exit(int *counters, int stages)
{
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        const int blocks = (int)(gridDim.x * gridDim.y * gridDim.z);
        if (atomicAdd(counters + 1, 1) == blocks - 1) {
            for (int i = 0; i < STAGE_COUNTER_INTS(stages); i++) atomicExch(counters + i, 0);
            __threadfence();
        }
    }
}

#endif
