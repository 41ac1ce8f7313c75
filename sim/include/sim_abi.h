/**
 * \file sim_abi.h
 * \brief The interface between kernels compiled as C++ and the simulator's C runtime.
 *
 * sim_kernel.h builds on these declarations; sim/exec.c implements them.
 * Kernel authors never call them directly.
 */
#ifndef DSV2_SIM_ABI_H
#define DSV2_SIM_ABI_H

#include <stddef.h>

#include "cuda_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Coordinates of the simulated thread that is running now. */
typedef struct SimCoords {
    uint3 thread_idx;  /**< threadIdx */
    uint3 block_idx;   /**< blockIdx */
    dim3 block_dim;    /**< blockDim */
    dim3 grid_dim;     /**< gridDim */
    unsigned int lane; /**< linear thread index mod 32 */
} SimCoords;

/** Points at the running fiber's coordinates; set by the block scheduler at every switch. */
extern __thread const SimCoords *sim_coords;

/** What a warp collective computes once every lane of its mask has arrived. */
enum SimWarpOp {
    SIM_WARP_SYNC = 0,   /**< __syncwarp: nothing */
    SIM_WARP_SHFL = 1,   /**< each lane receives the value of lane `arg` */
    SIM_WARP_BALLOT = 2, /**< each lane receives the mask of lanes whose value is non-zero */
    SIM_WARP_ALL = 3     /**< each lane receives 1 when every lane of the mask has a non-zero value */
};

/** What a block barrier combines (the __syncthreads_count/and/or variants). */
enum SimBarrierOp {
    SIM_BARRIER_PLAIN = 0, /**< __syncthreads */
    SIM_BARRIER_COUNT = 1, /**< number of threads with a non-zero predicate */
    SIM_BARRIER_AND = 2,   /**< 1 when every predicate is non-zero */
    SIM_BARRIER_OR = 3     /**< 1 when any predicate is non-zero */
};

/** Suspends the calling fiber until every thread of the block arrives; returns the combined predicate. */
int sim_block_barrier(int op, int pred);
/**
 * Suspends the calling fiber until every lane of mask (restricted to the
 * lanes that exist) has arrived with the same op; returns this lane's result.
 */
unsigned long long sim_warp_collective(unsigned int mask, int op, unsigned long long value, int arg);
/** Mask of the lanes of the caller's warp that have not exited. */
unsigned int sim_warp_active_mask(void);
/** The block's dynamic shared memory (the launch's smem bytes, 16-byte aligned). */
void *sim_dynamic_smem(void);
/**
 * One pause of a spin-wait (`__nanosleep`): lets the block's other threads run. Blocks run one after
 * another here, so a wait that another block would have to end never ends: after SIM_SPIN_LIMIT pauses
 * in one block the kernel faults, naming it, instead of hanging.
 */
void sim_spin_wait(void);
/** Notes that the running block waits on the stage counter at `counter` (the counters record each one). */
void sim_stage_wait(const void *counter);

/** Everything the runtime needs to run one launch; built by sim_launch(). */
typedef struct SimKernelLaunch {
    const char *name;            /**< the kernel's name as written at the LAUNCH site */
    const void *kernel;          /**< the kernel's address (key for cudaFuncSetAttribute) */
    dim3 grid;                   /**< gridDim */
    dim3 block;                  /**< blockDim */
    size_t smem;                 /**< dynamic shared memory bytes */
    cudaStream_t stream;         /**< stream (0 = legacy default) */
    void (*invoke)(void *pack);  /**< calls the kernel with the packed arguments */
    void (*release)(void *pack); /**< frees the packed arguments */
    void *pack;                  /**< the arguments, copied at launch like a real launch does */
    int nargs;                   /**< number of kernel parameters */
    const void *const *pointers; /**< per parameter: its value when it is a pointer, else NULL */
} SimKernelLaunch;

/** Validates a launch (dimensions, shared memory, pointer arguments) and queues it; errors go to cudaGetLastError(). */
void sim_launch_kernel(const SimKernelLaunch *launch);

#ifdef __cplusplus
}
#endif

#endif
