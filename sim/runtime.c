/**
 * \file runtime.c
 * \brief The simulated CUDA runtime: devices, device memory, copies, streams, events, errors.
 *
 * Device memory is host memory from posix_memalign recorded in an
 * allocation table (sorted by address), so every pointer can be classified:
 * device memory of device d, pinned host memory (cudaMallocHost), or
 * pageable host memory (anything else). Copies, fills, kernel arguments and
 * library calls are checked against the table.
 *
 * Work is deferred, as on a GPU: cudaMemcpyAsync, cudaMemsetAsync, kernel
 * launches, event records and library calls are checked when issued and
 * appended to their stream as a SimOp; nothing runs until a synchronisation
 * point needs it (cudaStreamSynchronize, cudaDeviceSynchronize,
 * cudaEventSynchronize, the synchronous cudaMemcpy/cudaMemset, cudaFree,
 * ncclGroupEnd). Streams created with cudaStreamDefault are ordered after
 * earlier work of the legacy default stream and before later work of it,
 * as the legacy default stream semantics require; cudaStreamWaitEvent makes
 * a stream run the event's stream up to the event first.
 *
 * Stream capture: while a stream captures, sim_enqueue() hands its operations
 * to the graph being recorded (graph.c) instead of the queue. Calls that
 * would synchronise with the capture, or that a capture begun in global or
 * thread-local mode forbids (allocation, synchronous copies), are refused
 * with cudaErrorStreamCaptureUnsupported and invalidate it, as on a GPU.
 */
#include "sim_internal.h"
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/** A stream: its device and its queue. */
struct CUstream_st {
    int device;         /**< device it was created on */
    unsigned int flags; /**< cudaStreamDefault or cudaStreamNonBlocking */
    int legacy;         /**< 1 for a device's legacy default stream */
    SimOp *head;        /**< oldest queued operation */
    SimOp *tail;        /**< newest queued operation */
    cudaGraph_t capture;/**< graph being recorded (NULL: not capturing) */
    enum cudaStreamCaptureMode capture_mode; /**< mode given to cudaStreamBeginCapture */
    int capture_invalid;/**< a refused call invalidated the capture */
};

#define SIM_EVENT_MAGIC 0x45564e54u /**< "EVNT": marks a live event */

/** An event: where it was last recorded and whether that point has run. */
struct CUevent_st {
    unsigned int magic; /**< SIM_EVENT_MAGIC while alive */
    unsigned int flags; /**< cudaEvent* flags */
    cudaStream_t stream;/**< stream of the last record (NULL: never recorded) */
    uint64_t seq;       /**< sequence number of the last record */
    int completed;      /**< the last record has run */
    int pending;        /**< record operations still queued */
    int destroyed;      /**< cudaEventDestroy called while records were pending */
    double time_ms;     /**< host clock when the last record ran */
};

/** Per-device state. */
typedef struct SimDevice {
    struct CUstream_st legacy;              /**< the legacy default stream (stream 0) */
    size_t allocated;                       /**< bytes of live device memory */
    cudaError_t sticky;                     /**< error of a failed kernel; cleared by cudaDeviceReset */
    unsigned char peer[SIM_MAX_DEVICES];    /**< peer access enabled towards each device */
} SimDevice;

/** The whole simulated machine. */
static struct {
    int initialised;          /**< sim_init() ran */
    int count;                /**< number of devices */
    SimDevice dev[SIM_MAX_DEVICES];
    SimAlloc *allocs;         /**< live allocations sorted by base */
    size_t nallocs, cap_allocs;
    cudaStream_t *streams;    /**< user-created streams */
    size_t nstreams, cap_streams;
    uint64_t next_seq;        /**< issue order of operations */
    long malloc_calls;        /**< cudaMalloc calls so far */
    long fail_malloc_at;      /**< SIM_FAIL_MALLOC: the call number that fails (0: none) */
} sim;

static _Thread_local int current_device;          /* per host thread, as in CUDA */
static _Thread_local cudaError_t last_error;
static _Thread_local char detail[1024];

/* ------------------------------------------------------------------------------------------ */
/* errors                                                                                      */

static void record_detail(const char *fmt, va_list ap)
{
    vsnprintf(detail, sizeof detail, fmt, ap);
    const char *quiet = getenv("SIM_QUIET");
    if (!quiet || !*quiet || strcmp(quiet, "0") == 0)
        fprintf(stderr, "sim: %s\n", detail);
}

cudaError_t sim_error(cudaError_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_detail(fmt, ap);
    va_end(ap);
    last_error = err;
    return err;
}

void sim_detail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_detail(fmt, ap);
    va_end(ap);
}

void sim_device_fault(int dev, cudaError_t err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_detail(fmt, ap);
    va_end(ap);
    if (sim.dev[dev].sticky == cudaSuccess)
        sim.dev[dev].sticky = err;
    last_error = err;
}

const char *sim_last_detail(void) { return detail; }

long sim_env_long(const char *name, long fallback)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return fallback;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0) {
        fprintf(stderr, "sim: ignoring %s=%s (want a non-negative integer)\n", name, s);
        return fallback;
    }
    return v;
}

cudaError_t sim_device_sticky(int dev) { return sim.dev[dev].sticky; }

cudaError_t cudaGetLastError(void)
{
    sim_init();
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e != cudaSuccess ? e : sim.dev[current_device].sticky;
}

cudaError_t cudaPeekAtLastError(void)
{
    sim_init();
    return last_error != cudaSuccess ? last_error : sim.dev[current_device].sticky;
}

/** Name and sentence of one error code. */
typedef struct { cudaError_t code; const char *name, *text; } ErrorText;

static const ErrorText error_texts[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy"},
    {cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"},
    {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorIllegalState, "cudaErrorIllegalState", "the operation cannot be performed in the present state"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
    {cudaErrorPeerAccessAlreadyEnabled, "cudaErrorPeerAccessAlreadyEnabled", "peer access is already enabled"},
    {cudaErrorPeerAccessNotEnabled, "cudaErrorPeerAccessNotEnabled", "peer access has not been enabled"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
    {cudaErrorStreamCaptureImplicit, "cudaErrorStreamCaptureImplicit",
     "operation would make the legacy stream depend on a capturing blocking stream"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

static const ErrorText *find_error_text(cudaError_t err)
{
    for (size_t i = 0; i < sizeof error_texts / sizeof error_texts[0]; i++)
        if (error_texts[i].code == err)
            return &error_texts[i];
    return NULL;
}

const char *cudaGetErrorString(cudaError_t err)
{
    const ErrorText *t = find_error_text(err);
    return t ? t->text : "unrecognized error code";
}

const char *cudaGetErrorName(cudaError_t err)
{
    const ErrorText *t = find_error_text(err);
    return t ? t->name : "cudaErrorUnknown";
}

/* ------------------------------------------------------------------------------------------ */
/* devices                                                                                     */

void sim_init(void)
{
    if (sim.initialised)
        return;
    sim.initialised = 1;
    long n = sim_env_long("SIM_DEVICE_COUNT", 1);
    if (n > SIM_MAX_DEVICES) {
        fprintf(stderr, "sim: SIM_DEVICE_COUNT=%ld exceeds %d; using %d\n", n, SIM_MAX_DEVICES, SIM_MAX_DEVICES);
        n = SIM_MAX_DEVICES;
    }
    sim.count = (int)n;
    sim.fail_malloc_at = sim_env_long("SIM_FAIL_MALLOC", 0);
    for (int d = 0; d < SIM_MAX_DEVICES; d++) {
        sim.dev[d].legacy.device = d;
        sim.dev[d].legacy.legacy = 1;
    }
}

int sim_device_count(void)
{
    sim_init();
    return sim.count;
}

int sim_current_device(void) { return current_device; }

int sim_peer_enabled(int dev, int peer) { return dev == peer || sim.dev[dev].peer[peer]; }

/** cudaErrorNoDevice when SIM_DEVICE_COUNT is 0 (every call that needs a device checks this). */
static cudaError_t need_device(const char *call)
{
    sim_init();
    if (sim.count == 0)
        return sim_error(cudaErrorNoDevice, "%s: SIM_DEVICE_COUNT=0: no simulated device", call);
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    sim_init();
    if (!count)
        return sim_error(cudaErrorInvalidValue, "cudaGetDeviceCount: count is NULL");
    *count = sim.count;
    return sim.count ? cudaSuccess : sim_error(cudaErrorNoDevice, "cudaGetDeviceCount: SIM_DEVICE_COUNT=0");
}

cudaError_t cudaSetDevice(int dev)
{
    cudaError_t e = need_device("cudaSetDevice");
    if (e)
        return e;
    if (dev < 0 || dev >= sim.count)
        return sim_error(cudaErrorInvalidDevice, "cudaSetDevice(%d): %d simulated device(s)", dev, sim.count);
    current_device = dev;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *dev)
{
    cudaError_t e = need_device("cudaGetDevice");
    if (e)
        return e;
    if (!dev)
        return sim_error(cudaErrorInvalidValue, "cudaGetDevice: dev is NULL");
    *dev = current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev)
{
    cudaError_t e = need_device("cudaGetDeviceProperties");
    if (e)
        return e;
    if (!prop)
        return sim_error(cudaErrorInvalidValue, "cudaGetDeviceProperties: prop is NULL");
    if (dev < 0 || dev >= sim.count)
        return sim_error(cudaErrorInvalidDevice, "cudaGetDeviceProperties(%d): %d simulated device(s)", dev, sim.count);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "dsv2 simulated device %d (sm_90)", dev);
    prop->totalGlobalMem = SIM_DEVICE_MEMORY;
    prop->sharedMemPerBlock = SIM_SMEM_DEFAULT;
    prop->sharedMemPerBlockOptin = SIM_SMEM_OPTIN;
    prop->regsPerBlock = 65536;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = 1024;
    prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 2147483647;
    prop->maxGridSize[1] = 65535;
    prop->maxGridSize[2] = 65535;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 132;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int dev)
{
    cudaDeviceProp p;
    if (!value)
        return sim_error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: value is NULL");
    cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e)
        return e;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    default: return sim_error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d is not simulated", (int)attr);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int *can, int dev, int peer)
{
    cudaError_t e = need_device("cudaDeviceCanAccessPeer");
    if (e)
        return e;
    if (!can)
        return sim_error(cudaErrorInvalidValue, "cudaDeviceCanAccessPeer: can is NULL");
    if (dev < 0 || dev >= sim.count || peer < 0 || peer >= sim.count)
        return sim_error(cudaErrorInvalidDevice, "cudaDeviceCanAccessPeer(%d, %d): %d device(s)", dev, peer, sim.count);
    *can = dev != peer;
    return cudaSuccess;
}

cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned int flags)
{
    cudaError_t e = need_device("cudaDeviceEnablePeerAccess");
    if (e)
        return e;
    if (flags != 0)
        return sim_error(cudaErrorInvalidValue, "cudaDeviceEnablePeerAccess: flags must be 0");
    if (peer < 0 || peer >= sim.count || peer == current_device)
        return sim_error(cudaErrorInvalidDevice, "cudaDeviceEnablePeerAccess(%d) from device %d", peer, current_device);
    if (sim.dev[current_device].peer[peer])
        return sim_error(cudaErrorPeerAccessAlreadyEnabled, "cudaDeviceEnablePeerAccess(%d): already enabled on device %d",
                         peer, current_device);
    sim.dev[current_device].peer[peer] = 1;
    return cudaSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* what a stream capture forbids meanwhile                                                     */

/**
 * Invalidates every capture of device dev (dev = −1: any device) that forbids
 * potentially unsafe calls (strict: begun in global or thread-local mode;
 * else every capture). Returns how many there were.
 */
static int invalidate_captures(int dev, int strict)
{
    int n = 0;
    for (size_t i = 0; i < sim.nstreams; i++) {
        cudaStream_t t = sim.streams[i];
        if (t->capture && (dev < 0 || t->device == dev) &&
            !(strict && t->capture_mode == cudaStreamCaptureModeRelaxed)) {
            t->capture_invalid = 1;
            n++;
        }
    }
    return n;
}

/**
 * A potentially unsafe call (allocation, release, synchronous copy or fill):
 * refused while a capture begun in global or thread-local mode runs (the
 * simulator has one host thread, so the two modes agree), invalidating it.
 */
static cudaError_t unsafe_in_capture(const char *call)
{
    if (!invalidate_captures(-1, 1))
        return cudaSuccess;
    return sim_error(cudaErrorStreamCaptureUnsupported,
                     "%s: not permitted while a stream captures in global or thread-local mode; the capture is "
                     "invalidated",
                     call);
}

/** Refuses call on the capturing stream s for the reason why, invalidating the capture. */
static cudaError_t refuse_on_capture(const char *call, cudaStream_t s, const char *why)
{
    s->capture_invalid = 1;
    return sim_error(cudaErrorStreamCaptureUnsupported, "%s: %s on stream %p while it captures; the capture is invalidated",
                     call, why, (void *)s);
}

/** Blocking streams of device dev that capture. */
static int blocking_captures(int dev)
{
    int n = 0;
    for (size_t i = 0; i < sim.nstreams; i++)
        n += sim.streams[i]->capture && sim.streams[i]->device == dev && !(sim.streams[i]->flags & cudaStreamNonBlocking);
    return n;
}

/**
 * Work on a legacy default stream while a blocking stream of its device
 * captures would wait for the capture: records cudaErrorStreamCaptureImplicit,
 * invalidates those captures and returns 1; 0 when s is free to use.
 */
static int legacy_implicit(const char *call, cudaStream_t s)
{
    if (!s->legacy || !blocking_captures(s->device))
        return 0;
    for (size_t i = 0; i < sim.nstreams; i++)
        if (sim.streams[i]->device == s->device && !(sim.streams[i]->flags & cudaStreamNonBlocking))
            sim.streams[i]->capture_invalid |= sim.streams[i]->capture != NULL;
    sim_error(cudaErrorStreamCaptureImplicit,
              "%s: the legacy default stream of device %d would wait for a capturing blocking stream; the capture "
              "is invalidated",
              call, s->device);
    return 1;
}

int sim_stream_capturing(cudaStream_t stream) { return stream->capture != NULL; }

void sim_capture_invalidate(cudaStream_t stream)
{
    if (stream && stream->capture)
        stream->capture_invalid = 1;
}

/* ------------------------------------------------------------------------------------------ */
/* allocation table                                                                            */

/** Index of the first allocation whose base is greater than p. */
static size_t upper_bound(const void *p)
{
    size_t lo = 0, hi = sim.nallocs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((const char *)p < sim.allocs[mid].base)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

const SimAlloc *sim_find_alloc(const void *p)
{
    size_t i = upper_bound(p);
    if (i == 0 || !p)
        return NULL;
    const SimAlloc *a = &sim.allocs[i - 1];
    return (const char *)p <= a->base + a->size ? a : NULL;
}

static int table_insert(char *base, size_t size, int device)
{
    if (sim.nallocs == sim.cap_allocs) {
        size_t cap = sim.cap_allocs ? 2 * sim.cap_allocs : 64;
        SimAlloc *grown = realloc(sim.allocs, cap * sizeof *grown);
        if (!grown)
            return -1;
        sim.allocs = grown;
        sim.cap_allocs = cap;
    }
    size_t i = upper_bound(base);
    memmove(&sim.allocs[i + 1], &sim.allocs[i], (sim.nallocs - i) * sizeof *sim.allocs);
    sim.allocs[i] = (SimAlloc){base, size, device};
    sim.nallocs++;
    return 0;
}

/** Removes the allocation starting exactly at p; returns its device, or -2 when there is none. */
static int table_remove(const void *p, int want_pinned)
{
    size_t i = upper_bound(p);
    if (i == 0 || sim.allocs[i - 1].base != (const char *)p || (sim.allocs[i - 1].device < 0) != want_pinned)
        return -2;
    int dev = sim.allocs[i - 1].device;
    if (dev >= 0)
        sim.dev[dev].allocated -= sim.allocs[i - 1].size;
    memmove(&sim.allocs[i - 1], &sim.allocs[i], (sim.nallocs - i) * sizeof *sim.allocs);
    sim.nallocs--;
    return dev;
}

void sim_alloc_stats(unsigned long long *calls, unsigned long long *live, unsigned long long *bytes)
{
    *calls = (unsigned long long)sim.malloc_calls;
    *live = *bytes = 0;
    for (size_t i = 0; i < sim.nallocs; i++)
        if (sim.allocs[i].device >= 0) {
            ++*live;
            *bytes += sim.allocs[i].size;
        }
}

/** Describes where p points, for error sentences. */
static const char *describe(const void *p, char *buf, size_t n)
{
    const SimAlloc *a = sim_find_alloc(p);
    if (!p)
        snprintf(buf, n, "NULL");
    else if (!a)
        snprintf(buf, n, "%p (host memory, not from cudaMalloc)", p);
    else if (a->device < 0)
        snprintf(buf, n, "%p (pinned host memory)", p);
    else
        snprintf(buf, n, "%p (device %d memory)", p, a->device);
    return buf;
}

int sim_device_range_ok(const void *p, size_t bytes, int dev, char *why, size_t n)
{
    char where[128];
    const SimAlloc *a = sim_find_alloc(p);
    if (!a || a->device < 0 || (dev >= 0 && a->device != dev)) {
        char want[32] = "device";
        if (dev >= 0)
            snprintf(want, sizeof want, "device %d", dev);
        snprintf(why, n, "%s, want %s memory", describe(p, where, sizeof where), want);
        return 0;
    }
    size_t off = (size_t)((const char *)p - a->base);
    if (bytes > a->size - off) {
        snprintf(why, n, "%zu bytes at offset %zu overrun the %zu-byte allocation at %p", bytes, off, a->size,
                 (void *)a->base);
        return 0;
    }
    return 1;
}

cudaError_t sim_check_device_range(const char *call, const char *what, const void *p, size_t bytes, int dev)
{
    char why[256];
    if (sim_device_range_ok(p, bytes, dev, why, sizeof why))
        return cudaSuccess;
    const SimAlloc *a = sim_find_alloc(p);
    return sim_error(a && a->device >= 0 && (dev < 0 || a->device == dev) ? cudaErrorInvalidValue
                                                                          : cudaErrorInvalidDevicePointer,
                     "%s: %s is %s", call, what, why);
}

cudaError_t cudaMalloc(void **ptr, size_t size)
{
    cudaError_t e = need_device("cudaMalloc");
    if (e)
        return e;
    if (!ptr)
        return sim_error(cudaErrorInvalidValue, "cudaMalloc: ptr is NULL");
    if ((e = unsafe_in_capture("cudaMalloc")))
        return e;
    sim.malloc_calls++;
    if (sim.fail_malloc_at && sim.malloc_calls == sim.fail_malloc_at)
        return sim_error(cudaErrorMemoryAllocation, "cudaMalloc(%zu bytes): call %ld fails (SIM_FAIL_MALLOC)", size,
                         sim.malloc_calls);
    *ptr = NULL;
    if (size == 0)
        return cudaSuccess;
    SimDevice *d = &sim.dev[current_device];
    void *p = NULL;
    if (size > SIM_DEVICE_MEMORY - d->allocated || posix_memalign(&p, 256, size) != 0 ||
        table_insert(p, size, current_device) != 0) {
        free(p);
        return sim_error(cudaErrorMemoryAllocation, "cudaMalloc(%zu bytes) on device %d failed", size, current_device);
    }
    d->allocated += size;
    *ptr = p;
    return cudaSuccess;
}

/* Shared by cudaFree and cudaFreeHost: finish queued work, then release ptr if the table
 * holds it as the right kind of allocation (pinned host memory or device memory). */
static cudaError_t release(void *ptr, int pinned, const char *call, const char *not_ours)
{
    cudaError_t e = need_device(call);
    if (e || !ptr || (e = unsafe_in_capture(call)))
        return e;
    sim_drain_all();
    if (table_remove(ptr, pinned) == -2) {
        char where[128];
        return sim_error(cudaErrorInvalidValue, "%s: %s %s", call, describe(ptr, where, sizeof where), not_ours);
    }
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    return release(ptr, 0, "cudaFree", "is not the start of a live device allocation");
}

cudaError_t cudaMallocHost(void **ptr, size_t size)
{
    cudaError_t e = need_device("cudaMallocHost");
    if (e)
        return e;
    if (!ptr)
        return sim_error(cudaErrorInvalidValue, "cudaMallocHost: ptr is NULL");
    if ((e = unsafe_in_capture("cudaMallocHost")))
        return e;
    void *p = NULL;
    if (posix_memalign(&p, 256, size ? size : 1) != 0 || table_insert(p, size, -1) != 0) {
        free(p);
        return sim_error(cudaErrorMemoryAllocation, "cudaMallocHost(%zu bytes) failed", size);
    }
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *ptr)
{
    return release(ptr, 1, "cudaFreeHost", "is not from cudaMallocHost");
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    cudaError_t e = need_device("cudaMemGetInfo");
    if (e)
        return e;
    if (!free_bytes || !total_bytes)
        return sim_error(cudaErrorInvalidValue, "cudaMemGetInfo: NULL argument");
    *total_bytes = SIM_DEVICE_MEMORY;
    *free_bytes = SIM_DEVICE_MEMORY - sim.dev[current_device].allocated;
    return cudaSuccess;
}

cudaError_t cudaDeviceReset(void)
{
    cudaError_t e = need_device("cudaDeviceReset");
    if (e)
        return e;
    int dev = current_device;
    /* Drop queued work of this device's streams without running it. */
    for (size_t s = 0; s <= sim.nstreams; s++) {
        cudaStream_t st = s < sim.nstreams ? sim.streams[s] : &sim.dev[dev].legacy;
        if (st->device != dev)
            continue;
        while (st->head) {
            SimOp *op = st->head;
            st->head = op->next;
            op->release(op);
        }
        st->tail = NULL;
        if (st->capture) {
            cudaGraphDestroy(st->capture);
            st->capture = NULL;
        }
    }
    for (size_t i = sim.nallocs; i-- > 0;) {
        if (sim.allocs[i].device == dev) {
            char *base = sim.allocs[i].base;
            table_remove(base, 0);
            free(base);
        }
    }
    memset(sim.dev[dev].peer, 0, sizeof sim.dev[dev].peer);
    sim.dev[dev].sticky = cudaSuccess;
    last_error = cudaSuccess;
    sim_exec_reset();
    return cudaSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* streams                                                                                     */

/**
 * Finds stream; NULL means the legacy stream of device dev. A stream of
 * another device than dev is an error unless any_device is set.
 */
static cudaStream_t lookup_stream(const char *call, cudaStream_t stream, int dev, int any_device)
{
    if (need_device(call))
        return NULL;
    if (!stream)
        return &sim.dev[dev].legacy;
    for (size_t i = 0; i < sim.nstreams; i++) {
        if (sim.streams[i] == stream) {
            if (!any_device && stream->device != dev) {
                sim_error(cudaErrorInvalidResourceHandle, "%s: stream %p belongs to device %d, not device %d", call,
                          (void *)stream, stream->device, dev);
                return NULL;
            }
            return stream;
        }
    }
    sim_error(cudaErrorInvalidResourceHandle, "%s: %p is not a live stream", call, (void *)stream);
    return NULL;
}

cudaStream_t sim_resolve_stream(const char *call, cudaStream_t stream)
{
    cudaStream_t s = lookup_stream(call, stream, current_device, 0);
    return s && legacy_implicit(call, s) ? NULL : s;
}

cudaStream_t sim_resolve_stream_on(const char *call, cudaStream_t stream, int dev)
{
    cudaStream_t s = lookup_stream(call, stream, dev, 0);
    return s && legacy_implicit(call, s) ? NULL : s;
}

int sim_stream_device(cudaStream_t stream) { return stream->device; }

void sim_enqueue(cudaStream_t stream, SimOp *op)
{
    op->next = NULL;
    op->seq = ++sim.next_seq;
    op->device = stream->device;
    if (stream->capture) {                     /* recorded, not run; dropped once the capture is invalid */
        if (stream->capture_invalid)
            op->release(op);
        else
            sim_graph_append(stream->capture, op);
        return;
    }
    if (stream->tail)
        stream->tail->next = op;
    else
        stream->head = op;
    stream->tail = op;
}

static void drain_until(cudaStream_t s, uint64_t upto);

/** Runs what must precede op on stream s under legacy-default-stream ordering. */
static void drain_dependencies(cudaStream_t s, uint64_t seq)
{
    if (s->legacy) {
        for (size_t i = 0; i < sim.nstreams; i++) {
            cudaStream_t t = sim.streams[i];
            if (t->device == s->device && !(t->flags & cudaStreamNonBlocking))
                drain_until(t, seq - 1);
        }
    } else if (!(s->flags & cudaStreamNonBlocking)) {
        drain_until(&sim.dev[s->device].legacy, seq - 1);
    }
}

/** Runs the operations of s with sequence numbers up to upto, in order. */
static void drain_until(cudaStream_t s, uint64_t upto)
{
    while (s->head && s->head->seq <= upto) {
        SimOp *op = s->head;
        s->head = op->next;
        if (!s->head)
            s->tail = NULL;
        drain_dependencies(s, op->seq);
        if (sim.dev[op->device].sticky == cudaSuccess)
            op->run(op);
        op->release(op);
    }
}

void sim_drain_stream(cudaStream_t stream) { drain_until(stream, UINT64_MAX); }

void sim_drain_all(void)
{
    for (int d = 0; d < sim.count; d++)
        sim_drain_stream(&sim.dev[d].legacy);
    for (size_t i = 0; i < sim.nstreams; i++)
        sim_drain_stream(sim.streams[i]);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    cudaError_t e = need_device("cudaStreamCreateWithFlags");
    if (e)
        return e;
    if (!stream || flags > cudaStreamNonBlocking)
        return sim_error(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: NULL stream or flags %u", flags);
    if (sim.nstreams == sim.cap_streams) {
        size_t cap = sim.cap_streams ? 2 * sim.cap_streams : 16;
        cudaStream_t *grown = realloc(sim.streams, cap * sizeof *grown);
        if (!grown)
            return sim_error(cudaErrorMemoryAllocation, "cudaStreamCreate: out of host memory");
        sim.streams = grown;
        sim.cap_streams = cap;
    }
    cudaStream_t s = calloc(1, sizeof *s);
    if (!s)
        return sim_error(cudaErrorMemoryAllocation, "cudaStreamCreate: out of host memory");
    s->device = current_device;
    s->flags = flags;
    sim.streams[sim.nstreams++] = s;
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (!stream)
        return sim_error(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: the legacy default stream cannot be destroyed");
    for (size_t i = 0; i < sim.nstreams; i++) {
        if (sim.streams[i] == stream) {
            if (stream->capture)
                return refuse_on_capture("cudaStreamDestroy", stream, "destruction");
            /* Other streams may wait on events of this one: run everything first. */
            sim_drain_all();
            sim.streams[i] = sim.streams[--sim.nstreams];
            free(stream);
            return cudaSuccess;
        }
    }
    return sim_error(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: %p is not a live stream", (void *)stream);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    cudaStream_t s = lookup_stream("cudaStreamSynchronize", stream, current_device, 1);
    if (!s || legacy_implicit("cudaStreamSynchronize", s))
        return last_error;
    if (s->capture)
        return refuse_on_capture("cudaStreamSynchronize", s, "synchronisation");
    sim_drain_stream(s);
    return sim.dev[s->device].sticky;
}

cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    cudaStream_t s = lookup_stream("cudaStreamQuery", stream, current_device, 1);
    if (!s || legacy_implicit("cudaStreamQuery", s))
        return last_error;
    if (s->capture)
        return refuse_on_capture("cudaStreamQuery", s, "a query");
    return s->head ? cudaErrorNotReady : sim.dev[s->device].sticky;
}

cudaError_t cudaDeviceSynchronize(void)
{
    cudaError_t e = need_device("cudaDeviceSynchronize");
    if (e)
        return e;
    if (invalidate_captures(current_device, 0))
        return sim_error(cudaErrorStreamCaptureUnsupported,
                         "cudaDeviceSynchronize: a stream of device %d captures; the capture is invalidated",
                         current_device);
    sim_drain_stream(&sim.dev[current_device].legacy);
    for (size_t i = 0; i < sim.nstreams; i++)
        if (sim.streams[i]->device == current_device)
            sim_drain_stream(sim.streams[i]);
    return sim.dev[current_device].sticky;
}

/* ------------------------------------------------------------------------------------------ */
/* copies and fills                                                                            */

/** A queued copy. */
typedef struct {
    SimOp op;        /**< base */
    void *dst;       /**< destination */
    const void *src; /**< source */
    size_t bytes;    /**< length */
} CopyOp;

static void run_copy(SimOp *op)
{
    CopyOp *c = (CopyOp *)op;
    memcpy(c->dst, c->src, c->bytes);
}

/** A queued fill. */
typedef struct {
    SimOp op;     /**< base */
    void *dst;    /**< destination */
    int value;    /**< byte value */
    size_t bytes; /**< length */
} FillOp;

static void run_fill(SimOp *op)
{
    FillOp *f = (FillOp *)op;
    memset(f->dst, f->value, f->bytes);
}

static void release_op(SimOp *op) { free(op); }

static const char *kind_name(enum cudaMemcpyKind kind)
{
    static const char *names[] = {"HostToHost", "HostToDevice", "DeviceToHost", "DeviceToDevice", "Default"};
    return names[kind];
}

/** Checks one side of a copy: device memory when want_device, else host memory (pinned or not). */
static cudaError_t check_side(const char *call, enum cudaMemcpyKind kind, const char *side, const void *p,
                              size_t bytes, int want_device)
{
    char where[128];
    const SimAlloc *a = sim_find_alloc(p);
    int is_device = a && a->device >= 0;
    if (!p)
        return sim_error(cudaErrorInvalidValue, "%s(%s): %s is NULL", call, kind_name(kind), side);
    if (want_device >= 0 && is_device != want_device)
        return sim_error(cudaErrorInvalidValue, "%s(%s): %s is %s", call, kind_name(kind), side,
                         describe(p, where, sizeof where));
    if (a) {
        size_t off = (size_t)((const char *)p - a->base);
        if (bytes > a->size - off)
            return sim_error(cudaErrorInvalidValue, "%s: %s: %zu bytes at offset %zu overrun the %zu-byte allocation at %p",
                             call, side, bytes, off, a->size, (void *)a->base);
    }
    return cudaSuccess;
}

/** Checks a copy: each side must be device or host memory as kind says (any for cudaMemcpyDefault), and in bounds. */
static cudaError_t check_copy(const char *call, void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
    if ((unsigned)kind > cudaMemcpyDefault)
        return sim_error(cudaErrorInvalidMemcpyDirection, "%s: kind %d is not a cudaMemcpyKind", call, (int)kind);
    if (bytes == 0)
        return cudaSuccess;
    int dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    int src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    int any = kind == cudaMemcpyDefault;
    cudaError_t e = check_side(call, kind, "destination", dst, bytes, any ? -1 : dst_device);
    return e ? e : check_side(call, kind, "source", src, bytes, any ? -1 : src_device);
}

static cudaError_t enqueue_copy(cudaStream_t s, void *dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return cudaSuccess;
    CopyOp *c = malloc(sizeof *c);
    if (!c)
        return sim_error(cudaErrorMemoryAllocation, "cudaMemcpy: out of host memory");
    c->op.run = run_copy;
    c->op.release = release_op;
    c->dst = dst;
    c->src = src;
    c->bytes = bytes;
    sim_enqueue(s, &c->op);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream)
{
    cudaStream_t s = sim_resolve_stream("cudaMemcpyAsync", stream);
    if (!s)
        return last_error;
    cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, count, kind);
    if (e) {
        sim_capture_invalidate(s);
        return e;
    }
    if (s->capture && count && (!sim_find_alloc(dst) || !sim_find_alloc(src)))
        return refuse_on_capture("cudaMemcpyAsync", s, "a copy with pageable host memory (not from cudaMallocHost)");
    return enqueue_copy(s, dst, src, count);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind)
{
    cudaError_t e = need_device("cudaMemcpy");
    if (e || (e = unsafe_in_capture("cudaMemcpy")))
        return e;
    if ((e = check_copy("cudaMemcpy", dst, src, count, kind)))
        return e;
    sim_drain_all();
    if (sim.dev[current_device].sticky)
        return sim.dev[current_device].sticky;
    if (count)
        memcpy(dst, src, count);
    return cudaSuccess;
}

/** Checks a peer copy: each pointer must be memory of the device named for it. */
static cudaError_t check_peer(const char *call, void *dst, int dst_dev, const void *src, int src_dev, size_t count)
{
    if (dst_dev < 0 || dst_dev >= sim.count || src_dev < 0 || src_dev >= sim.count)
        return sim_error(cudaErrorInvalidDevice, "%s: devices %d and %d, %d simulated", call, dst_dev, src_dev, sim.count);
    if (count == 0)
        return cudaSuccess;
    cudaError_t e = sim_check_device_range(call, "destination", dst, count, dst_dev);
    return e ? e : sim_check_device_range(call, "source", src, count, src_dev);
}

cudaError_t cudaMemcpyPeerAsync(void *dst, int dst_dev, const void *src, int src_dev, size_t count, cudaStream_t stream)
{
    cudaStream_t s = sim_resolve_stream("cudaMemcpyPeerAsync", stream);
    if (!s)
        return last_error;
    cudaError_t e = check_peer("cudaMemcpyPeerAsync", dst, dst_dev, src, src_dev, count);
    if (e)
        sim_capture_invalidate(s);
    return e ? e : enqueue_copy(s, dst, src, count);
}

cudaError_t cudaMemcpyPeer(void *dst, int dst_dev, const void *src, int src_dev, size_t count)
{
    cudaError_t e = need_device("cudaMemcpyPeer");
    if (e || (e = unsafe_in_capture("cudaMemcpyPeer")) || (e = check_peer("cudaMemcpyPeer", dst, dst_dev, src, src_dev, count)))
        return e;
    sim_drain_all();
    if (count)
        memcpy(dst, src, count);
    return cudaSuccess;
}

/** A fill target must be device or pinned memory, wholly inside its allocation. */
static cudaError_t check_fill(const char *call, const void *dst, size_t count)
{
    char where[128];
    const SimAlloc *a = sim_find_alloc(dst);
    if (count == 0)
        return cudaSuccess;
    if (!a)
        return sim_error(cudaErrorInvalidValue, "%s: destination is %s", call, describe(dst, where, sizeof where));
    return check_side(call, cudaMemcpyDefault, "destination", dst, count, -1);
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t count, cudaStream_t stream)
{
    cudaStream_t s = sim_resolve_stream("cudaMemsetAsync", stream);
    if (!s)
        return last_error;
    cudaError_t e = check_fill("cudaMemsetAsync", dst, count);
    if (e)
        sim_capture_invalidate(s);
    if (e || count == 0)
        return e;
    FillOp *f = malloc(sizeof *f);
    if (!f)
        return sim_error(cudaErrorMemoryAllocation, "cudaMemsetAsync: out of host memory");
    f->op.run = run_fill;
    f->op.release = release_op;
    f->dst = dst;
    f->value = value;
    f->bytes = count;
    sim_enqueue(s, &f->op);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *dst, int value, size_t count)
{
    cudaError_t e = need_device("cudaMemset");
    if (e || (e = unsafe_in_capture("cudaMemset")) || (e = check_fill("cudaMemset", dst, count)))
        return e;
    sim_drain_all();
    if (count)
        memset(dst, value, count);
    return sim.dev[current_device].sticky;
}

/* ------------------------------------------------------------------------------------------ */
/* events                                                                                      */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/** A queued event record. */
typedef struct {
    SimOp op;          /**< base */
    cudaEvent_t event; /**< the event */
} RecordOp;

static void run_record(SimOp *op)
{
    RecordOp *r = (RecordOp *)op;
    if (r->event->seq == op->seq) {
        r->event->completed = 1;
        r->event->time_ms = now_ms();
    }
}

static void release_record(SimOp *op)
{
    cudaEvent_t e = ((RecordOp *)op)->event;
    if (--e->pending == 0 && e->destroyed) {
        e->magic = 0;
        free(e);
    }
    free(op);
}

/** A queued wait on an event. */
typedef struct {
    SimOp op;            /**< base */
    cudaStream_t stream; /**< the event's stream */
    uint64_t seq;        /**< the record to wait for */
} WaitOp;

static void run_wait(SimOp *op)
{
    WaitOp *w = (WaitOp *)op;
    drain_until(w->stream, w->seq);
}

static cudaError_t check_event(const char *call, cudaEvent_t e)
{
    if (!e || e->magic != SIM_EVENT_MAGIC || e->destroyed)
        return sim_error(cudaErrorInvalidResourceHandle, "%s: %p is not a live event", call, (void *)e);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    cudaError_t e = need_device("cudaEventCreate");
    if (e)
        return e;
    if (!event || flags > (cudaEventBlockingSync | cudaEventDisableTiming))
        return sim_error(cudaErrorInvalidValue, "cudaEventCreateWithFlags: NULL event or flags %u", flags);
    cudaEvent_t ev = calloc(1, sizeof *ev);
    if (!ev)
        return sim_error(cudaErrorMemoryAllocation, "cudaEventCreate: out of host memory");
    ev->magic = SIM_EVENT_MAGIC;
    ev->flags = flags;
    *event = ev;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    cudaError_t e = check_event("cudaEventDestroy", event);
    if (e)
        return e;
    if (event->pending) {
        event->destroyed = 1;
    } else {
        event->magic = 0;
        free(event);
    }
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    cudaError_t e = check_event("cudaEventRecord", event);
    if (e)
        return e;
    cudaStream_t s = sim_resolve_stream("cudaEventRecord", stream);
    if (!s)
        return last_error;
    if (s->capture)
        return refuse_on_capture("cudaEventRecord", s, "an event record (cross-stream capture is not simulated)");
    RecordOp *r = malloc(sizeof *r);
    if (!r)
        return sim_error(cudaErrorMemoryAllocation, "cudaEventRecord: out of host memory");
    r->op.run = run_record;
    r->op.release = release_record;
    r->event = event;
    sim_enqueue(s, &r->op);
    event->stream = s;
    event->seq = r->op.seq;
    event->completed = 0;
    event->pending++;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    cudaError_t e = check_event("cudaEventSynchronize", event);
    if (e)
        return e;
    if (!event->stream)
        return cudaSuccess;
    drain_until(event->stream, event->seq);
    return sim.dev[event->stream->device].sticky;
}

cudaError_t cudaEventQuery(cudaEvent_t event)
{
    cudaError_t e = check_event("cudaEventQuery", event);
    if (e)
        return e;
    return !event->stream || event->completed ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    cudaError_t e = check_event("cudaEventElapsedTime", start);
    if (e || (e = check_event("cudaEventElapsedTime", end)))
        return e;
    if (!ms)
        return sim_error(cudaErrorInvalidValue, "cudaEventElapsedTime: ms is NULL");
    if ((start->flags | end->flags) & cudaEventDisableTiming || !start->stream || !end->stream)
        return sim_error(cudaErrorInvalidResourceHandle,
                         "cudaEventElapsedTime: an event was never recorded or has cudaEventDisableTiming");
    if (!start->completed || !end->completed)
        return cudaErrorNotReady;
    *ms = (float)(end->time_ms - start->time_ms);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags)
{
    cudaError_t e = check_event("cudaStreamWaitEvent", event);
    if (e)
        return e;
    cudaStream_t s = sim_resolve_stream("cudaStreamWaitEvent", stream);
    if (!s)
        return last_error;
    if (s->capture)
        return refuse_on_capture("cudaStreamWaitEvent", s, "an event wait (cross-stream capture is not simulated)");
    if (flags != 0)
        return sim_error(cudaErrorInvalidValue, "cudaStreamWaitEvent: flags must be 0");
    if (!event->stream || event->completed)
        return cudaSuccess;
    WaitOp *w = malloc(sizeof *w);
    if (!w)
        return sim_error(cudaErrorMemoryAllocation, "cudaStreamWaitEvent: out of host memory");
    w->op.run = run_wait;
    w->op.release = release_op;
    w->stream = event->stream;
    w->seq = event->seq;
    sim_enqueue(s, &w->op);
    return cudaSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* stream capture                                                                              */

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    cudaStream_t s = lookup_stream("cudaStreamBeginCapture", stream, current_device, 1);
    if (!s)
        return last_error;
    if (s->legacy)
        return sim_error(cudaErrorStreamCaptureUnsupported,
                         "cudaStreamBeginCapture: the legacy default stream cannot capture (create a stream)");
    if ((unsigned)mode > cudaStreamCaptureModeRelaxed)
        return sim_error(cudaErrorInvalidValue, "cudaStreamBeginCapture: mode %d is not a cudaStreamCaptureMode",
                         (int)mode);
    if (s->capture)
        return sim_error(cudaErrorIllegalState, "cudaStreamBeginCapture: stream %p is already capturing", (void *)s);
    if (!(s->capture = sim_graph_new(s->device)))
        return sim_error(cudaErrorMemoryAllocation, "cudaStreamBeginCapture: out of host memory");
    s->capture_mode = mode;
    s->capture_invalid = 0;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    cudaStream_t s = lookup_stream("cudaStreamEndCapture", stream, current_device, 1);
    if (!s)
        return last_error;
    if (!graph)
        return sim_error(cudaErrorInvalidValue, "cudaStreamEndCapture: graph is NULL");
    if (!s->capture)
        return sim_error(cudaErrorIllegalState, "cudaStreamEndCapture: stream %p is not capturing", (void *)s);
    cudaGraph_t g = s->capture;
    s->capture = NULL;
    *graph = NULL;
    if (s->capture_invalid) {
        cudaGraphDestroy(g);
        return sim_error(cudaErrorStreamCaptureInvalidated,
                         "cudaStreamEndCapture: a call refused during the capture on stream %p invalidated it",
                         (void *)s);
    }
    *graph = g;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status)
{
    cudaStream_t s = lookup_stream("cudaStreamIsCapturing", stream, current_device, 1);
    if (!s)
        return last_error;
    if (!status)
        return sim_error(cudaErrorInvalidValue, "cudaStreamIsCapturing: status is NULL");
    if (s->legacy && blocking_captures(s->device))
        return sim_error(cudaErrorStreamCaptureImplicit,
                         "cudaStreamIsCapturing: the legacy default stream of device %d while a blocking stream captures",
                         s->device);
    *status = !s->capture        ? cudaStreamCaptureStatusNone
              : s->capture_invalid ? cudaStreamCaptureStatusInvalidated
                                   : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}
