/**
 * \file runtime.c
 * \brief The simulated CUDA runtime's devices and errors: the machine's state, error codes, device queries.
 *
 * The runtime is split along its seams: this file (the devices, the
 * per-thread last error, error names), memory.c (the allocation table,
 * cudaMalloc and friends), stream.c (streams, their deferred queues and stream
 * capture), copy.c (copies and fills) and event.c (events); what they share
 * is declared in sim_internal.h.
 *
 * cudaDeviceReset lives here: it drops the device's queued work and captures
 * (stream.c), frees its allocations (memory.c), then clears its peer access,
 * its sticky error and the calling thread's last error.
 */
#include "sim_internal.h"
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

SimMachine sim_machine;

static _Thread_local int current_device; /* per host thread, as in CUDA */
static _Thread_local cudaError_t last_error;
static _Thread_local char detail[1024];

/* ------------------------------------------------------------------------------------------ */
/* errors                                                                                      */

static void record_detail(const char *fmt, va_list ap)
{
    vsnprintf(detail, sizeof detail, fmt, ap);
    const char *quiet = getenv("SIM_QUIET");
    if (!quiet || !*quiet || strcmp(quiet, "0") == 0) fprintf(stderr, "sim: %s\n", detail);
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
    if (sim_machine.dev[dev].sticky == cudaSuccess) sim_machine.dev[dev].sticky = err;
    last_error = err;
}

const char *sim_last_detail(void)
{
    return detail;
}

long sim_env_long(const char *name, long fallback)
{
    const char *s = getenv(name);
    if (!s || !*s) return fallback;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0) {
        fprintf(stderr, "sim: ignoring %s=%s (want a non-negative integer)\n", name, s);
        return fallback;
    }
    return v;
}

cudaError_t sim_recorded_error(void)
{
    return last_error;
}

cudaError_t sim_device_sticky(int dev)
{
    return sim_machine.dev[dev].sticky;
}

cudaError_t cudaGetLastError(void)
{
    sim_init();
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e != cudaSuccess ? e : sim_machine.dev[current_device].sticky;
}

cudaError_t cudaPeekAtLastError(void)
{
    sim_init();
    return last_error != cudaSuccess ? last_error : sim_machine.dev[current_device].sticky;
}

/** Name and sentence of one error code. */
typedef struct {
    cudaError_t code;
    const char *name, *text;
} ErrorText;

static const ErrorText error_texts[] = {
    { cudaSuccess, "cudaSuccess", "no error" },
    { cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument" },
    { cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory" },
    { cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error" },
    { cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument" },
    { cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer" },
    { cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy" },
    { cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver",
      "CUDA driver version is insufficient for CUDA runtime version" },
    { cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function" },
    { cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected" },
    { cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal" },
    { cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle" },
    { cudaErrorIllegalState, "cudaErrorIllegalState", "the operation cannot be performed in the present state" },
    { cudaErrorNotReady, "cudaErrorNotReady", "device not ready" },
    { cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered" },
    { cudaErrorPeerAccessAlreadyEnabled, "cudaErrorPeerAccessAlreadyEnabled", "peer access is already enabled" },
    { cudaErrorPeerAccessNotEnabled, "cudaErrorPeerAccessNotEnabled", "peer access has not been enabled" },
    { cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure" },
    { cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
      "operation not permitted when stream is capturing" },
    { cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
      "operation failed due to a previous error during capture" },
    { cudaErrorStreamCaptureImplicit, "cudaErrorStreamCaptureImplicit",
      "operation would make the legacy stream depend on a capturing blocking stream" },
    { cudaErrorUnknown, "cudaErrorUnknown", "unknown error" },
};

static const ErrorText *find_error_text(cudaError_t err)
{
    for (size_t i = 0; i < sizeof error_texts / sizeof error_texts[0]; i++)
        if (error_texts[i].code == err) return &error_texts[i];
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
    if (sim_machine.initialised) return;
    sim_machine.initialised = 1;
    long n = sim_env_long("SIM_DEVICE_COUNT", 1);
    if (n > SIM_MAX_DEVICES) {
        fprintf(stderr, "sim: SIM_DEVICE_COUNT=%ld exceeds %d; using %d\n", n, SIM_MAX_DEVICES, SIM_MAX_DEVICES);
        n = SIM_MAX_DEVICES;
    }
    sim_machine.count = (int)n;
    sim_machine.fail_malloc_at = sim_env_long("SIM_FAIL_MALLOC", 0);
    for (int d = 0; d < SIM_MAX_DEVICES; d++) {
        sim_machine.dev[d].legacy.device = d;
        sim_machine.dev[d].legacy.legacy = 1;
    }
}

int sim_device_count(void)
{
    sim_init();
    return sim_machine.count;
}

int sim_current_device(void)
{
    return current_device;
}

int sim_peer_enabled(int dev, int peer)
{
    return dev == peer || sim_machine.dev[dev].peer[peer];
}

cudaError_t sim_need_device(const char *call)
{
    sim_init();
    if (sim_machine.count == 0)
        return sim_error(cudaErrorNoDevice, "%s: SIM_DEVICE_COUNT=0: no simulated device", call);
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    sim_init();
    if (!count) return sim_error(cudaErrorInvalidValue, "cudaGetDeviceCount: count is NULL");
    *count = sim_machine.count;
    return sim_machine.count ? cudaSuccess : sim_error(cudaErrorNoDevice, "cudaGetDeviceCount: SIM_DEVICE_COUNT=0");
}

cudaError_t cudaSetDevice(int dev)
{
    cudaError_t e = sim_need_device("cudaSetDevice");
    if (e) return e;
    if (dev < 0 || dev >= sim_machine.count)
        return sim_error(cudaErrorInvalidDevice, "cudaSetDevice(%d): %d simulated device(s)", dev, sim_machine.count);
    current_device = dev;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *dev)
{
    cudaError_t e = sim_need_device("cudaGetDevice");
    if (e) return e;
    if (!dev) return sim_error(cudaErrorInvalidValue, "cudaGetDevice: dev is NULL");
    *dev = current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev)
{
    cudaError_t e = sim_need_device("cudaGetDeviceProperties");
    if (e) return e;
    if (!prop) return sim_error(cudaErrorInvalidValue, "cudaGetDeviceProperties: prop is NULL");
    if (dev < 0 || dev >= sim_machine.count)
        return sim_error(cudaErrorInvalidDevice, "cudaGetDeviceProperties(%d): %d simulated device(s)", dev,
                         sim_machine.count);
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
    if (!value) return sim_error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: value is NULL");
    cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e) return e;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    default:
        return sim_error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d is not simulated", (int)attr);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int *can, int dev, int peer)
{
    cudaError_t e = sim_need_device("cudaDeviceCanAccessPeer");
    if (e) return e;
    if (!can) return sim_error(cudaErrorInvalidValue, "cudaDeviceCanAccessPeer: can is NULL");
    if (dev < 0 || dev >= sim_machine.count || peer < 0 || peer >= sim_machine.count)
        return sim_error(cudaErrorInvalidDevice, "cudaDeviceCanAccessPeer(%d, %d): %d device(s)", dev, peer,
                         sim_machine.count);
    *can = dev != peer;
    return cudaSuccess;
}

cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned int flags)
{
    cudaError_t e = sim_need_device("cudaDeviceEnablePeerAccess");
    if (e) return e;
    if (flags != 0) return sim_error(cudaErrorInvalidValue, "cudaDeviceEnablePeerAccess: flags must be 0");
    if (peer < 0 || peer >= sim_machine.count || peer == current_device)
        return sim_error(cudaErrorInvalidDevice, "cudaDeviceEnablePeerAccess(%d) from device %d", peer, current_device);
    if (sim_machine.dev[current_device].peer[peer])
        return sim_error(cudaErrorPeerAccessAlreadyEnabled,
                         "cudaDeviceEnablePeerAccess(%d): already enabled on device %d", peer, current_device);
    sim_machine.dev[current_device].peer[peer] = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceReset(void)
{
    cudaError_t e = sim_need_device("cudaDeviceReset");
    if (e) return e;
    int dev = current_device;
    sim_drop_device_work(dev);
    sim_free_device_allocations(dev);
    memset(sim_machine.dev[dev].peer, 0, sizeof sim_machine.dev[dev].peer);
    sim_machine.dev[dev].sticky = cudaSuccess;
    last_error = cudaSuccess;
    sim_exec_reset();
    return cudaSuccess;
}
