/**
 * \file exec.c
 * \brief Kernel launches: checking them, and running each block's threads as cooperative fibers.
 *
 * **Launch.** sim_launch() (sim_kernel.h) packs the kernel's arguments and
 * calls sim_launch_kernel(), which checks the launch as a GPU would
 * (dimensions, dynamic shared memory) and more strictly (every pointer
 * argument must be device or pinned memory, of this device or a peer with
 * access enabled), then queues it on its stream.
 *
 * **Blocks.** When the stream runs the launch, blocks run one after another.
 * Each thread of a block is a fiber (fiber.c). The scheduler switches to
 * each runnable thread in turn; a thread runs until it finishes or reaches
 * a synchronisation point:
 *
 * - `__syncthreads()`: the thread waits until every live thread of the block
 *   has arrived; the last one to arrive releases the others and continues.
 *   If some thread of the block has exited, the barrier can never be
 *   complete: that is barrier divergence, reported as an error naming the
 *   kernel.
 * - a warp collective (`__syncwarp`, shuffles, votes): the thread deposits
 *   its value and waits for the other lanes of its mask; the last to arrive
 *   computes every lane's result.
 *
 * If a full pass over the threads makes no progress, the threads wait for
 * each other in a way that can never resolve (a deadlock a GPU would hang
 * on), which is reported too.
 *
 * **Race check.** With SIM_RACECHECK=1 each launch runs three times, the
 * threads of every block scheduled forward, in reverse, and shuffled; the
 * memory the kernel can reach through its pointer arguments is restored
 * between runs and compared after them. A kernel whose result depends on
 * the order has a race (typically a missing `__syncthreads()`).
 */
#include "sim_internal.h"
#include "sim.h"
#include "sim_abi.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__thread const SimCoords *sim_coords;

static struct {
    unsigned long long launches, blocks, threads;
} counters;

void sim_stats(SimStats *stats)
{
    stats->launches = counters.launches;
    stats->blocks = counters.blocks;
    stats->threads = counters.threads;
    stats->fiber_switches = sim_fiber_switches();
    sim_alloc_stats(&stats->malloc_calls, &stats->live_allocs, &stats->live_bytes);
}

/* ------------------------------------------------------------------------------------------ */
/* per-kernel attributes                                                                       */

/** The dynamic shared memory limit of one kernel, raised by cudaFuncSetAttribute. */
typedef struct {
    const void *kernel; /**< the kernel's address */
    int max_dynamic;    /**< bytes */
} FuncAttr;

static FuncAttr *func_attrs;
static size_t nfunc_attrs, cap_func_attrs;

void sim_exec_reset(void)
{
    nfunc_attrs = 0;
}

static size_t max_dynamic_smem(const void *kernel)
{
    for (size_t i = 0; i < nfunc_attrs; i++)
        if (func_attrs[i].kernel == kernel) return (size_t)func_attrs[i].max_dynamic;
    return SIM_SMEM_DEFAULT;
}

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value)
{
    sim_init();
    if (!func) return sim_error(cudaErrorInvalidDeviceFunction, "cudaFuncSetAttribute: func is NULL");
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return sim_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute %d is not simulated", (int)attr);
    if (value < 0 || (size_t)value > SIM_SMEM_OPTIN)
        return sim_error(cudaErrorInvalidValue,
                         "cudaFuncSetAttribute: %d bytes of dynamic shared memory; sm_90 allows at most %u", value,
                         SIM_SMEM_OPTIN);
    for (size_t i = 0; i < nfunc_attrs; i++) {
        if (func_attrs[i].kernel == func) {
            func_attrs[i].max_dynamic = value;
            return cudaSuccess;
        }
    }
    if (nfunc_attrs == cap_func_attrs) {
        size_t cap = cap_func_attrs ? 2 * cap_func_attrs : 16;
        FuncAttr *grown = realloc(func_attrs, cap * sizeof *grown);
        if (!grown) return sim_error(cudaErrorMemoryAllocation, "cudaFuncSetAttribute: out of host memory");
        func_attrs = grown;
        cap_func_attrs = cap;
    }
    func_attrs[nfunc_attrs++] = (FuncAttr){ func, value };
    return cudaSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* blocks of fibers                                                                            */

/** Where a simulated thread stands. */
enum ThreadState {
    THREAD_RUNNABLE, /**< can run */
    THREAD_BARRIER,  /**< waits at __syncthreads */
    THREAD_WARP,     /**< waits at a warp collective */
    THREAD_DONE      /**< returned from the kernel */
};

/** One simulated GPU thread. */
typedef struct {
    SimFiber fiber;            /**< its flow of control */
    SimCoords coords;          /**< threadIdx, blockIdx, ... as the kernel sees them */
    int linear;                /**< x + y·blockDim.x + z·blockDim.x·blockDim.y */
    int state;                 /**< enum ThreadState */
    unsigned long long value;  /**< what it brought to the pending warp collective */
    int arg;                   /**< source lane of a pending shuffle */
    unsigned long long result; /**< what the collective or barrier gave back */
} SimThread;

/** Bookkeeping of one warp's collectives. */
typedef struct {
    unsigned int exist;   /**< lanes that exist (a partial last warp has fewer) */
    unsigned int exited;  /**< lanes that returned from the kernel */
    unsigned int arrived; /**< lanes waiting at the pending collective */
    unsigned int mask;    /**< the pending collective's mask, restricted to existing lanes */
    int op;               /**< the pending collective's enum SimWarpOp */
} SimWarp;

/** A queued kernel launch. */
typedef struct {
    SimOp op;               /**< base */
    SimKernelLaunch launch; /**< what sim_launch() packed */
    const void **pointers;  /**< owned copy of launch.pointers */
} KernelOp;

/** The block being run on this OS thread. */
typedef struct {
    const KernelOp *k;  /**< its launch */
    SimThread *threads; /**< blockDim.x·y·z threads */
    int n;              /**< number of threads */
    SimWarp warps[32];  /**< ⌈n / 32⌉ warps */
    int live;           /**< threads not yet exited */
    int exited;         /**< threads that returned */
    int at_barrier;     /**< threads waiting at __syncthreads */
    int barrier_op;     /**< enum SimBarrierOp of the pending barrier */
    int barrier_acc;    /**< its combined predicate */
    void *smem;         /**< dynamic shared memory */
    SimFiber scheduler; /**< the OS thread's own context, which runs the scheduler */
    SimThread *current; /**< the thread running now */
    int failed;         /**< a fault ended the block */
    long spins;         /**< __nanosleep pauses so far (a spin-wait's iterations) */
} Block;

static _Thread_local Block *running;
static _Thread_local SimThread *thread_pool;
static _Thread_local int thread_pool_size;

/** Records a fault of block b (thread t, when not NULL) as the device's sticky error. */
static void vblock_fault(Block *b, const SimThread *t, const char *fmt, va_list ap)
{
    char what[768], who[96] = "";
    vsnprintf(what, sizeof what, fmt, ap);
    if (t)
        snprintf(who, sizeof who, ", thread (%u,%u,%u)", t->coords.thread_idx.x, t->coords.thread_idx.y,
                 t->coords.thread_idx.z);
    const SimCoords *c = &b->threads[0].coords;
    sim_device_fault(b->k->op.device, cudaErrorLaunchFailure, "kernel %s, block (%u,%u,%u)%s: %s", b->k->launch.name,
                     c->block_idx.x, c->block_idx.y, c->block_idx.z, who, what);
    b->failed = 1;
}

/** A fault detected by the scheduler. */
static void block_fault(Block *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void block_fault(Block *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vblock_fault(b, NULL, fmt, ap);
    va_end(ap);
}

/** A fault detected inside a thread: records it and leaves the fiber for good. */
static void thread_fault(Block *b, SimThread *t, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
static void thread_fault(Block *b, SimThread *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vblock_fault(b, t, fmt, ap);
    va_end(ap);
    sim_fiber_exit(&t->fiber, &b->scheduler);
    __builtin_unreachable();
}

/** The running block, or a clear abort when a device built-in is called outside a kernel. */
static Block *need_block(const char *what)
{
    if (!running) {
        fprintf(stderr, "sim: %s called outside a kernel\n", what);
        abort();
    }
    return running;
}

/** Suspends the running thread until the scheduler switches back to it. */
static void wait_here(Block *b, SimThread *t, int state)
{
    t->state = state;
    sim_fiber_switch(&t->fiber, &b->scheduler);
}

/** Entry of every thread's fiber: runs the kernel, then retires the thread. */
static void thread_main(void)
{
    Block *b = running;
    SimThread *t = b->current;
    sim_fiber_started(&b->scheduler);
    b->k->launch.invoke(b->k->launch.pack);

    t->state = THREAD_DONE;
    b->live--;
    b->exited++;
    SimWarp *w = &b->warps[t->linear / 32];
    unsigned int bit = 1u << (t->linear % 32);
    w->exited |= bit;
    if (w->arrived && (w->mask & bit))
        thread_fault(b, t, "exited while lanes 0x%08x of warp %d wait for it at a warp collective", w->arrived,
                     t->linear / 32);
    if (b->at_barrier > 0 && b->at_barrier == b->live)
        thread_fault(b, t, "barrier divergence: %d thread(s) exited while %d wait at __syncthreads", b->exited,
                     b->at_barrier);
    sim_fiber_exit(&t->fiber, &b->scheduler);
}

int sim_block_barrier(int op, int pred)
{
    Block *b = need_block("__syncthreads");
    SimThread *t = b->current;
    if (b->at_barrier == 0) {
        b->barrier_op = op;
        b->barrier_acc = op == SIM_BARRIER_AND;
    } else if (op != b->barrier_op) {
        thread_fault(b, t, "threads reached different __syncthreads variants");
    }
    if (op == SIM_BARRIER_COUNT)
        b->barrier_acc += pred != 0;
    else if (op == SIM_BARRIER_AND)
        b->barrier_acc &= pred != 0;
    else if (op == SIM_BARRIER_OR)
        b->barrier_acc |= pred != 0;
    if (++b->at_barrier < b->live) {
        wait_here(b, t, THREAD_BARRIER);
        return (int)t->result;
    }
    /* Last to arrive: release everyone and carry on. */
    if (b->exited > 0)
        thread_fault(b, t, "barrier divergence: %d thread(s) exited while %d wait at __syncthreads", b->exited,
                     b->at_barrier);
    for (int i = 0; i < b->n; i++) {
        if (b->threads[i].state == THREAD_BARRIER) {
            b->threads[i].state = THREAD_RUNNABLE;
            b->threads[i].result = (unsigned long long)b->barrier_acc;
        }
    }
    b->at_barrier = 0;
    return b->barrier_acc;
}

static const char *warp_op_name(int op)
{
    static const char *names[] = { "__syncwarp", "__shfl*_sync", "__ballot_sync/__any_sync", "__all_sync" };
    return names[op];
}

unsigned long long sim_warp_collective(unsigned int mask, int op, unsigned long long value, int arg)
{
    Block *b = need_block("a warp collective");
    SimThread *t = b->current;
    int wi = t->linear / 32, lane = t->linear % 32;
    SimWarp *w = &b->warps[wi];
    unsigned int eff = mask & w->exist;
    if (!(eff & (1u << lane)))
        thread_fault(b, t, "%s with mask 0x%08x, which does not name the calling lane %d", warp_op_name(op), mask,
                     lane);
    if (eff & w->exited)
        thread_fault(b, t, "%s with mask 0x%08x names lanes 0x%08x that have exited", warp_op_name(op), mask,
                     eff & w->exited);
    if (w->arrived == 0) {
        w->mask = eff;
        w->op = op;
    } else if (w->mask != eff || w->op != op) {
        thread_fault(b, t, "lanes of warp %d meet at different collectives: %s mask 0x%08x vs %s mask 0x%08x", wi,
                     warp_op_name(w->op), w->mask, warp_op_name(op), eff);
    }
    t->value = value;
    t->arg = arg;
    w->arrived |= 1u << lane;
    if (w->arrived != eff) {
        wait_here(b, t, THREAD_WARP);
        return t->result;
    }
    /* Last lane to arrive: compute every lane's result, release them, carry on. */
    SimThread *lanes = &b->threads[wi * 32];
    unsigned long long ballot = 0;
    for (int l = 0; l < 32; l++)
        if ((eff >> l & 1u) && lanes[l].value) ballot |= 1ull << l;
    for (int l = 0; l < 32; l++) {
        if (!(eff >> l & 1u)) continue;
        if (op == SIM_WARP_SHFL) {
            int src = lanes[l].arg;
            if (!(eff >> src & 1u))
                thread_fault(b, t, "__shfl*_sync: lane %d reads lane %d, which is not in mask 0x%08x", l, src, eff);
            lanes[l].result = lanes[src].value;
        } else if (op == SIM_WARP_ALL) {
            lanes[l].result = ballot == eff;
        } else {
            lanes[l].result = ballot;
        }
    }
    for (int l = 0; l < 32; l++)
        if ((eff >> l & 1u) && l != lane) lanes[l].state = THREAD_RUNNABLE;
    w->arrived = 0;
    return t->result;
}

unsigned int sim_warp_active_mask(void)
{
    Block *b = need_block("__activemask");
    SimWarp *w = &b->warps[b->current->linear / 32];
    return w->exist & ~w->exited;
}

void *sim_dynamic_smem(void)
{
    return need_block("dynamic shared memory")->smem;
}

/** Pauses a block may spend spinning before its wait is declared one no block can end. */
#define SIM_SPIN_LIMIT 100000

void sim_spin_wait(void)
{
    Block *b = need_block("__nanosleep");
    SimThread *t = b->current;
    if (++b->spins > SIM_SPIN_LIMIT)
        thread_fault(b, t,
                     "a spin-wait that nothing ends: blocks run one after another here, so a block may wait "
                     "only for blocks that started before it (a stage ticket)");
    wait_here(b, t, THREAD_RUNNABLE); /* another thread of the block may be the one to end it */
}

void sim_stage_wait(const void *counter)
{
    need_block("a stage wait");
    sim_count_stage(counter);
}

/** Explains why no thread can make progress. */
static void deadlock_fault(Block *b)
{
    for (int wi = 0; wi * 32 < b->n; wi++) {
        SimWarp *w = &b->warps[wi];
        if (w->arrived)
            block_fault(b,
                        "deadlock: lanes 0x%08x of warp %d wait at %s for lanes 0x%08x, which never arrive "
                        "(%d thread(s) wait at __syncthreads, %d exited)",
                        w->arrived, wi, warp_op_name(w->op), w->mask & ~w->arrived, b->at_barrier, b->exited);
        if (w->arrived) return;
    }
    block_fault(b, "deadlock: no thread can proceed");
}

/** Runs block b to completion (or to its first fault), picking runnable threads in the given order. */
static void run_block(Block *b, const int *order)
{
    b->live = b->n;
    b->exited = 0;
    b->at_barrier = 0;
    b->spins = 0;
    for (int wi = 0; wi * 32 < b->n; wi++) {
        int lanes = b->n - wi * 32 < 32 ? b->n - wi * 32 : 32;
        b->warps[wi] = (SimWarp){ lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u, 0, 0, 0, 0 };
    }
    for (int i = 0; i < b->n; i++) {
        size_t size;
        void *stack = sim_stack_get(i, &size);
        sim_fiber_prepare(&b->threads[i].fiber, stack, size, thread_main);
        b->threads[i].state = THREAD_RUNNABLE;
    }
    if (b->k->launch.smem) memset(b->smem, 0xff, b->k->launch.smem); /* uninitialised shared memory reads as NaN */
    counters.blocks++;
    counters.threads += (unsigned long long)b->n;

    for (;;) {
        int progressed = 0;
        for (int k = 0; k < b->n; k++) {
            SimThread *t = &b->threads[order[k]];
            if (t->state != THREAD_RUNNABLE) continue;
            b->current = t;
            sim_coords = &t->coords;
            sim_fiber_switch(&b->scheduler, &t->fiber);
            progressed = 1;
            if (b->failed) return;
        }
        if (b->exited == b->n) return;
        if (!progressed) {
            deadlock_fault(b);
            return;
        }
    }
}

/** Fills order[0..n) for a race-check pass: 0 forward, 1 reverse, 2 shuffled (seeded by the block). */
static void make_order(int *order, int n, int pass, unsigned long long seed)
{
    for (int i = 0; i < n; i++) order[i] = pass == 1 ? n - 1 - i : i;
    if (pass != 2) return;
    unsigned long long s = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
    for (int i = n - 1; i > 0; i--) {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        int j = (int)((s * 0x2545f4914f6cdd1dull >> 33) % (unsigned long long)(i + 1));
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

/** Runs every block of the launch with thread order `pass`; returns 0, or −1 after a fault. */
static int run_grid(const KernelOp *k, int pass)
{
    const SimKernelLaunch *l = &k->launch;
    int n = (int)(l->block.x * l->block.y * l->block.z);
    if (thread_pool_size < n) {
        SimThread *grown = realloc(thread_pool, (size_t)n * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "sim: out of host memory for %d threads\n", n);
            abort();
        }
        memset(grown + thread_pool_size, 0, (size_t)(n - thread_pool_size) * sizeof *grown);
        thread_pool = grown;
        thread_pool_size = n;
    }
    Block b;
    memset(&b, 0, sizeof b);
    b.k = k;
    b.threads = thread_pool;
    b.n = n;
    b.smem = malloc(l->smem ? l->smem : 1);
    int *order = malloc((size_t)n * sizeof *order);
    if (!b.smem || !order) {
        fprintf(stderr, "sim: out of host memory for a block\n");
        abort();
    }
    for (int i = 0; i < n; i++) {
        SimThread *t = &b.threads[i];
        t->linear = i;
        t->coords.thread_idx = make_uint3(i % l->block.x, i / l->block.x % l->block.y, i / (l->block.x * l->block.y));
        t->coords.block_dim = l->block;
        t->coords.grid_dim = l->grid;
        t->coords.lane = (unsigned int)i % 32;
    }
    Block *outer = running;
    running = &b;
    make_order(order, n, pass, 0);
    for (unsigned int bz = 0; bz < l->grid.z && !b.failed; bz++) {
        for (unsigned int by = 0; by < l->grid.y && !b.failed; by++) {
            for (unsigned int bx = 0; bx < l->grid.x && !b.failed; bx++) {
                uint3 idx = make_uint3(bx, by, bz);
                for (int i = 0; i < n; i++) b.threads[i].coords.block_idx = idx;
                if (pass == 2)
                    make_order(order, n, pass, ((unsigned long long)bz << 42) ^ ((unsigned long long)by << 21) ^ bx);
                run_block(&b, order);
            }
        }
    }
    running = outer;
    sim_coords = NULL;
    free(order);
    free(b.smem);
    return b.failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* race check                                                                                  */

/** Contents of the allocations a kernel can reach, saved to be restored and compared. */
typedef struct {
    const SimAlloc **allocs; /**< distinct allocations named by pointer arguments */
    unsigned char **before;  /**< contents before the launch */
    unsigned char **first;   /**< contents after the first (forward) run */
    int n;                   /**< number of allocations */
} Snapshot;

static void snapshot_take(Snapshot *s, const KernelOp *k)
{
    int nargs = k->launch.nargs;
    s->allocs = calloc((size_t)nargs + 1, sizeof *s->allocs);
    s->before = calloc((size_t)nargs + 1, sizeof *s->before);
    s->first = calloc((size_t)nargs + 1, sizeof *s->first);
    s->n = 0;
    if (!s->allocs || !s->before || !s->first) {
        fprintf(stderr, "sim: out of host memory for a race-check snapshot\n");
        abort();
    }
    for (int i = 0; i < nargs; i++) {
        const SimAlloc *a = sim_find_alloc(k->pointers[i]);
        int seen = 0;
        for (int j = 0; j < s->n && a; j++) seen |= s->allocs[j] == a;
        if (!a || seen) continue;
        s->before[s->n] = malloc(a->size ? a->size : 1);
        s->first[s->n] = malloc(a->size ? a->size : 1);
        if (!s->before[s->n] || !s->first[s->n]) {
            fprintf(stderr, "sim: out of host memory for a race-check snapshot\n");
            abort();
        }
        memcpy(s->before[s->n], a->base, a->size);
        s->allocs[s->n++] = a;
    }
}

static void snapshot_free(Snapshot *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->before[i]);
        free(s->first[i]);
    }
    free(s->allocs);
    free(s->before);
    free(s->first);
}

/** Compares memory after run `pass` with the first run; reports the first difference. Returns 0 when equal. */
static int snapshot_compare(const Snapshot *s, const KernelOp *k, int pass)
{
    static const char *names[] = { "forward", "reverse", "shuffled" };
    for (int i = 0; i < s->n; i++) {
        const SimAlloc *a = s->allocs[i];
        for (size_t off = 0; off < a->size; off++) {
            if ((unsigned char)a->base[off] != s->first[i][off]) {
                sim_device_fault(k->op.device, cudaErrorLaunchFailure,
                                 "race-check: kernel %s: result depends on thread order: byte %zu of the %zu-byte "
                                 "allocation at %p differs between %s and %s thread order (missing __syncthreads?)",
                                 k->launch.name, off, a->size, (void *)a->base, names[0], names[pass]);
                return -1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* launch                                                                                      */

static void run_kernel(SimOp *op)
{
    KernelOp *k = (KernelOp *)op;
    static int racecheck = -1;
    if (racecheck < 0) racecheck = sim_env_long("SIM_RACECHECK", 0) != 0;
    counters.launches++;
    sim_count_begin(SIM_REC_KERNEL, k->launch.name, op->device, op->stream, k->launch.grid, k->launch.block);
    if (!racecheck) {
        run_grid(k, 0);
        sim_count_end();
        return;
    }
    Snapshot s;
    snapshot_take(&s, k);
    for (int pass = 0; pass < 3; pass++) {
        if (pass > 0) {
            for (int i = 0; i < s.n; i++) {
                if (pass == 1) memcpy(s.first[i], s.allocs[i]->base, s.allocs[i]->size);
                memcpy(s.allocs[i]->base, s.before[i], s.allocs[i]->size);
            }
        }
        if (run_grid(k, pass) != 0 || (pass > 0 && snapshot_compare(&s, k, pass) != 0)) break;
        sim_count_end(); /* race check's later passes repeat the same accesses: count the first */
    }
    sim_count_end();
    snapshot_free(&s);
}

static void release_kernel(SimOp *op)
{
    KernelOp *k = (KernelOp *)op;
    k->launch.release(k->launch.pack);
    free(k->pointers);
    free(k);
}

/** Checks the launch configuration against sm_90's limits. */
static cudaError_t check_config(const SimKernelLaunch *l)
{
    dim3 g = l->grid, b = l->block;
    unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
    if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > 1024 ||
        g.x > 2147483647u || g.y > 65535 || g.z > 65535)
        return sim_error(cudaErrorInvalidConfiguration,
                         "kernel %s: grid (%u,%u,%u), block (%u,%u,%u): limits are block ≤ (1024,1024,64) with "
                         "≤ 1024 threads, grid ≤ (2^31-1,65535,65535), no zero extent",
                         l->name, g.x, g.y, g.z, b.x, b.y, b.z);
    size_t limit = max_dynamic_smem(l->kernel);
    if (l->smem > limit)
        return sim_error(cudaErrorInvalidValue,
                         "kernel %s: %zu bytes of dynamic shared memory exceed the kernel's limit of %zu "
                         "(raise it with cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize, ...), "
                         "at most %u)",
                         l->name, l->smem, limit, SIM_SMEM_OPTIN);
    return cudaSuccess;
}

/** Every pointer argument must be memory the launching device can address. */
static cudaError_t check_pointers(const SimKernelLaunch *l, int dev)
{
    for (int i = 0; i < l->nargs; i++) {
        const void *p = l->pointers[i];
        if (!p) continue;
        const SimAlloc *a = sim_find_alloc(p);
        if (!a)
            return sim_error(cudaErrorInvalidDevicePointer,
                             "kernel %s: argument %d (%p) is host memory that did not come from cudaMalloc or "
                             "cudaMallocHost",
                             l->name, i, p);
        if (a->device >= 0 && !sim_peer_enabled(dev, a->device))
            return sim_error(cudaErrorPeerAccessNotEnabled,
                             "kernel %s: argument %d (%p) is device %d memory, the launch is on device %d without "
                             "peer access",
                             l->name, i, p, a->device, dev);
    }
    return cudaSuccess;
}

void sim_launch_kernel(const SimKernelLaunch *l)
{
    cudaStream_t s = sim_resolve_stream("kernel launch", l->stream);
    KernelOp *k = NULL;
    if (!s) goto reject;
    int dev = sim_stream_device(s);
    if (sim_device_sticky(dev)) {
        sim_error(sim_device_sticky(dev), "kernel %s: device %d has failed earlier (cudaDeviceReset clears it)",
                  l->name, dev);
        goto reject;
    }
    if (check_config(l) || check_pointers(l, dev)) goto reject;
    k = calloc(1, sizeof *k);
    if (!k || !(k->pointers = malloc((size_t)(l->nargs + 1) * sizeof *k->pointers))) {
        sim_error(cudaErrorMemoryAllocation, "kernel %s: out of host memory", l->name);
        goto reject;
    }
    memcpy(k->pointers, l->pointers, (size_t)l->nargs * sizeof *k->pointers);
    k->launch = *l;
    k->launch.pointers = k->pointers;
    k->op.run = run_kernel;
    k->op.release = release_kernel;
    sim_enqueue(s, &k->op);
    return;
reject:
    sim_capture_invalidate(s); /* a refused launch invalidates a capture of its stream, as on a GPU */
    free(k);
    l->release(l->pack);
}
