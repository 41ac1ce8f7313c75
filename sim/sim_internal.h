/**
 * \file sim_internal.h
 * \brief What the parts of sim/ share: errors, the allocation table, streams of operations, fibers.
 *
 * Not for users: kernels and host code include the CUDA-named headers in
 * sim/include/. The runtime is single-host-threaded (see sim/README.md).
 */
#ifndef DSV2_SIM_INTERNAL_H
#define DSV2_SIM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_runtime.h"

#define SIM_MAX_DEVICES   8              /**< SIM_DEVICE_COUNT may not exceed this */
#define SIM_SMEM_DEFAULT  (48u * 1024u)  /**< dynamic shared memory without opt-in */
#define SIM_SMEM_OPTIN    (227u * 1024u) /**< sm_90's per-block opt-in maximum */
#define SIM_DEVICE_MEMORY (80ull << 30)  /**< bytes each simulated device reports */

/* ---- errors (runtime.c) ---- */

/** The calling thread's last recorded error, left in place (cudaPeekAtLastError without the sticky one). */
cudaError_t sim_recorded_error(void);
/** cudaErrorNoDevice, recorded, when SIM_DEVICE_COUNT is 0 (every call that needs a device checks this). */
cudaError_t sim_need_device(const char *call);

/**
 * Records err as the calling thread's last error with a formatted detail
 * (see sim_last_detail()), prints "sim: <detail>" to stderr unless SIM_QUIET
 * is set, and returns err.
 */
cudaError_t sim_error(cudaError_t err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Records only the detail sentence (for cuBLAS and NCCL errors, which have their own codes). */
void sim_detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Marks device dev as failed (a sticky error, as a kernel fault is on a GPU) and records the detail. */
void sim_device_fault(int dev, cudaError_t err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** Reads a non-negative integer environment variable; fallback when unset or malformed. */
long sim_env_long(const char *name, long fallback);

/* ---- devices (runtime.c) and memory (memory.c) ---- */

/** Reads the environment once and sets up the devices. */
void sim_init(void);
/** Number of simulated devices. */
int sim_device_count(void);
/** The calling thread's current device. */
int sim_current_device(void);
/** Whether kernels on dev may address peer's memory. */
int sim_peer_enabled(int dev, int peer);

/** One live allocation. */
typedef struct SimAlloc {
    char *base;  /**< first byte */
    size_t size; /**< bytes requested */
    int device;  /**< owning device, or -1 for pinned host memory */
} SimAlloc;

/** The allocation containing p (its end address included), or NULL for unknown (pageable host) memory. */
const SimAlloc *sim_find_alloc(const void *p);
/**
 * 1 when [p, p + bytes) lies inside one allocation of device dev (dev = −1:
 * any device), else 0 with the reason written to why (nothing is recorded).
 */
int sim_device_range_ok(const void *p, size_t bytes, int dev, char *why, size_t n);
/**
 * Checks that [p, p + bytes) lies inside one allocation of device dev
 * (dev = -1: any device). Returns cudaSuccess or records an error naming call and what.
 */
cudaError_t sim_check_device_range(const char *call, const char *what, const void *p, size_t bytes, int dev);
/** Describes where p points ("0x… (device 1 memory)", "NULL", ...) into buf, for error sentences; returns buf. */
const char *sim_describe_pointer(const void *p, char *buf, size_t n);
/** Frees every allocation of device dev (cudaDeviceReset). */
void sim_free_device_allocations(int dev);

/* ---- streams of operations (stream.c) ---- */

/** One queued piece of device work; concrete operations embed it as their first member. */
typedef struct SimOp {
    struct SimOp *next;                /**< next in the stream */
    uint64_t seq;                      /**< global issue order */
    int device;                        /**< device whose stream holds it */
    const void *stream;                /**< the stream it was queued on (for the counters) */
    void (*run)(struct SimOp *op);     /**< performs the work */
    void (*release)(struct SimOp *op); /**< frees the operation */
} SimOp;

/**
 * Resolves stream for a call on the current device: NULL becomes the legacy
 * default stream; an unknown stream or one of another device records
 * cudaErrorInvalidResourceHandle. Returns NULL on error.
 */
cudaStream_t sim_resolve_stream(const char *call, cudaStream_t stream);
/** Like sim_resolve_stream() for device dev instead of the current device (libraries bound to a device). */
cudaStream_t sim_resolve_stream_on(const char *call, cudaStream_t stream, int dev);
/** The device a resolved stream belongs to. */
int sim_stream_device(cudaStream_t stream);
/** Appends op (run, release filled in) to a resolved stream. */
void sim_enqueue(cudaStream_t stream, SimOp *op);
/** Appends a chain of operations (linked by next) to a resolved stream that does not capture: one issue number. */
void sim_enqueue_chain(cudaStream_t stream, SimOp *first);
/** Runs the operations of s in order up to and including target, which must be queued on s. */
void sim_drain_through(cudaStream_t s, const SimOp *target);
/** Runs everything queued on a resolved stream, with what it depends on. */
void sim_drain_stream(cudaStream_t stream);
/** Runs the operations of s with sequence numbers up to upto, in order, with what they depend on. */
void sim_drain_until(cudaStream_t s, uint64_t upto);
/** Runs everything queued on every device. */
void sim_drain_all(void);
/** Drops the queued work and the captures of device dev's streams without running them (cudaDeviceReset). */
void sim_drop_device_work(int dev);
/** Frees an operation allocated with malloc: the release of operations that own nothing else. */
void sim_free_op(SimOp *op);
/** The sticky error of device dev (cudaSuccess when healthy). */
cudaError_t sim_device_sticky(int dev);

/* ---- stream capture (stream.c) and graphs (graph.c) ---- */

/**
 * A potentially unsafe call (allocation, release, synchronous copy or fill):
 * refused while a capture begun in global or thread-local mode runs (the
 * simulator has one host thread, so the two modes agree), invalidating it.
 */
cudaError_t sim_unsafe_in_capture(const char *call);
/** Refuses call on the capturing stream s for the reason why, invalidating the capture. */
cudaError_t sim_refuse_on_capture(const char *call, cudaStream_t s, const char *why);

/** 1 when the resolved stream is capturing (its work goes into a graph). */
int sim_stream_capturing(cudaStream_t stream);
/** Invalidates the capture of stream, if it captures (a call on it was refused); NULL is ignored. */
void sim_capture_invalidate(cudaStream_t stream);
/** A new empty graph recording work of device dev, or NULL when out of host memory. */
cudaGraph_t sim_graph_new(int dev);
/** Appends op (run, release, device filled in) to graph g, which owns it from now on. */
void sim_graph_append(cudaGraph_t g, SimOp *op);
/** The queued graph node running now (its stream is the replay's), or NULL outside a replay. */
const SimOp *sim_graph_replaying(void);
/** The recorded operation a queued operation replays, or NULL when it is not a queued graph node. */
const SimOp *sim_graph_queued_node(const SimOp *queued);
/** 1 when a recorded operation is an NCCL group's rendezvous (nccl.c). */
int sim_nccl_is_collective(const SimOp *op);

/* ---- fibers (fiber.c) ---- */

/** A suspended flow of control with its own stack. */
typedef struct SimFiber {
    void *sp;                /**< saved stack pointer (x86-64 switch) */
    void *context;           /**< ucontext_t on other architectures */
    void *stack;             /**< lowest usable stack address (NULL: the OS thread's own stack) */
    size_t stack_size;       /**< usable bytes */
    void *asan_fake_stack;   /**< AddressSanitizer's bookkeeping across switches */
    const void *asan_bottom; /**< OS-thread stack bounds learned by AddressSanitizer */
    size_t asan_size;        /**< size of that stack */
} SimFiber;

/** A stack of at least the given index from the calling OS thread's pool (grown on demand, guard page below). */
void *sim_stack_get(int index, size_t *size);
/** Prepares fiber f to start entry() on stack when first switched to. */
void sim_fiber_prepare(SimFiber *f, void *stack, size_t size, void (*entry)(void));
/** Saves the running context into from and resumes to; returns when something switches back to from. */
void sim_fiber_switch(SimFiber *from, SimFiber *to);
/** Like sim_fiber_switch() from a fiber that will never be resumed (lets AddressSanitizer drop its state). */
void sim_fiber_exit(SimFiber *from, SimFiber *to);
/** First call in a new fiber: completes the switch that started it (to_return_to is the switcher). */
void sim_fiber_started(SimFiber *to_return_to);
/** Context switches so far. */
unsigned long long sim_fiber_switches(void);
/** cudaMalloc calls so far, and the live device allocations (count, bytes) over every device. */
void sim_alloc_stats(unsigned long long *calls, unsigned long long *live, unsigned long long *bytes);

/* ---- the runtime's state (runtime.c, memory.c, stream.c, copy.c, event.c) ---- */

/** A stream: its device and its queue. */
struct CUstream_st {
    int device;                              /**< device it was created on */
    unsigned int flags;                      /**< cudaStreamDefault or cudaStreamNonBlocking */
    int legacy;                              /**< 1 for a device's legacy default stream */
    SimOp *head;                             /**< oldest queued operation */
    SimOp *tail;                             /**< newest queued operation */
    cudaGraph_t capture;                     /**< graph being recorded (NULL: not capturing) */
    enum cudaStreamCaptureMode capture_mode; /**< mode given to cudaStreamBeginCapture */
    int capture_invalid;                     /**< a refused call invalidated the capture */
};

/** Per-device state. */
typedef struct SimDevice {
    struct CUstream_st legacy;           /**< the legacy default stream (stream 0) */
    size_t allocated;                    /**< bytes of live device memory */
    cudaError_t sticky;                  /**< error of a failed kernel; cleared by cudaDeviceReset */
    unsigned char peer[SIM_MAX_DEVICES]; /**< peer access enabled towards each device */
} SimDevice;

/** The whole simulated machine. */
typedef struct SimMachine {
    int initialised; /**< sim_init() ran */
    int count;       /**< number of devices */
    SimDevice dev[SIM_MAX_DEVICES];
    SimAlloc *allocs; /**< live allocations sorted by base */
    size_t nallocs, cap_allocs;
    cudaStream_t *streams; /**< user-created streams */
    size_t nstreams, cap_streams;
    uint64_t next_seq;   /**< issue order of operations */
    long malloc_calls;   /**< cudaMalloc calls so far */
    long fail_malloc_at; /**< SIM_FAIL_MALLOC: the call number that fails (0: none) */
} SimMachine;

/** The machine (runtime.c); only the runtime's files touch it. */
extern SimMachine sim_machine;

/* ---- device counters (counters.c; public side in sim_counters.h) ---- */

#include "sim_counters.h"

/** Opens a record of the given kind while counters run (no-op otherwise). */
void sim_count_begin(SimRecordKind kind, const char *name, int device, const void *stream, dim3 grid, dim3 block);
/** Closes the open record. */
void sim_count_end(void);
/** Notes a wait of the running kernel on the stage counter at `counter` (the record counts distinct ones). */
void sim_count_stage(const void *counter);
/** A kernel's access of size bytes at p (device memory only, inside a kernel record). */
void sim_count_access(const void *p, size_t size, int write);
/** A library's or copy's access of bytes at p, counted at width 16 in the open record. */
void sim_count_range(const void *p, size_t bytes, int write);
/** A copy of bytes from src to dst run on device's stream: one record, and its direction's total. */
void sim_count_copy(void *dst, const void *src, size_t bytes, int device, const void *stream);
/** A fill of bytes at dst run on device's stream: one record. */
void sim_count_fill(void *dst, size_t bytes, int device, const void *stream);
/** The host waited for a device. */
void sim_count_sync(void);
/** A graph replay starts (+1) or ends (−1). */
void sim_count_graph(int delta);
/** A replayed graph node starts (+1) or ends (−1): what runs meanwhile is counted in_graph. */
void sim_count_in_graph(int delta);
/** NCCL moved bytes from device from to device to. */
void sim_count_nccl(int from, int to, size_t bytes);
/** The allocation at base is being freed: its line table goes (its interval totals stay). */
void sim_count_forget(const void *base);
/** Device device now has allocated bytes live (for the high-water mark). */
void sim_count_alloc(int device, size_t allocated);

/* ---- kernels (exec.c) ---- */

/** Drops the dynamic shared memory limits set by cudaFuncSetAttribute (cudaDeviceReset). */
void sim_exec_reset(void);

#endif
