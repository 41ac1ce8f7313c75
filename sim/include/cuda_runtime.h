/**
 * \file cuda_runtime.h
 * \brief The simulated device: the subset of the CUDA runtime API that dsv2.c uses.
 *
 * This header stands in for the toolkit's cuda_runtime.h when the project is
 * built without a GPU (see sim/README.md). It declares only what sim/
 * implements; every enumerator carries the numeric value of the CUDA 13
 * headers, so error codes printed here mean the same on a real GPU.
 *
 * From C it declares the host API (memory, copies, streams, events,
 * devices, errors). Compiled as C++ (a `.cu` file built with g++) it also
 * brings in sim_kernel.h: the device-side vocabulary (`__global__`,
 * `threadIdx`, `__syncthreads`, shuffles, atomics, ...) and the launch
 * template behind the LAUNCH macro of dsv2_launch.h.
 */
#ifndef DSV2_SIM_CUDA_RUNTIME_H
#define DSV2_SIM_CUDA_RUNTIME_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Runtime status codes (values as in the CUDA 13 driver_types.h). */
typedef enum cudaError {
    cudaSuccess = 0,                      /**< no error */
    cudaErrorInvalidValue = 1,            /**< an argument is out of range or contradicts another */
    cudaErrorMemoryAllocation = 2,        /**< device or pinned allocation failed */
    cudaErrorInitializationError = 3,     /**< runtime could not initialise */
    cudaErrorInvalidConfiguration = 9,    /**< launch grid/block dimensions over the device limits */
    cudaErrorInvalidDevicePointer = 17,   /**< a pointer is not device memory where device memory is needed */
    cudaErrorInvalidMemcpyDirection = 21, /**< cudaMemcpyKind out of range */
    cudaErrorInsufficientDriver = 35,     /**< what a real runtime returns on a machine without a GPU driver */
    cudaErrorInvalidDeviceFunction = 98,  /**< not a kernel */
    cudaErrorNoDevice = 100,              /**< no device (SIM_DEVICE_COUNT=0) */
    cudaErrorInvalidDevice = 101,         /**< device ordinal out of range */
    cudaErrorInvalidResourceHandle = 400, /**< stream/event/handle unknown or of another device */
    cudaErrorIllegalState = 401,   /**< the call does not fit the object's state (capture not begun or begun twice) */
    cudaErrorNotReady = 600,       /**< queued work not yet executed */
    cudaErrorIllegalAddress = 700, /**< a kernel was handed memory it cannot address */
    cudaErrorPeerAccessAlreadyEnabled = 704, /**< cudaDeviceEnablePeerAccess called twice */
    cudaErrorPeerAccessNotEnabled = 705,     /**< a kernel was handed another device's memory without peer access */
    cudaErrorLaunchFailure = 719,            /**< a kernel failed while running (divergence, race-check, ...) */
    cudaErrorStreamCaptureUnsupported = 900, /**< the call is not permitted while a stream captures */
    cudaErrorStreamCaptureInvalidated = 901, /**< the capture was invalidated by an earlier refused call */
    cudaErrorStreamCaptureImplicit = 906,    /**< legacy-stream work would depend on a capturing blocking stream */
    cudaErrorUnknown = 999                   /**< anything else */
} cudaError_t;

/** Direction of a copy (values as in driver_types.h). */
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,     /**< host → host */
    cudaMemcpyHostToDevice = 1,   /**< host → device */
    cudaMemcpyDeviceToHost = 2,   /**< device → host */
    cudaMemcpyDeviceToDevice = 3, /**< device → device (same or another device) */
    cudaMemcpyDefault = 4         /**< inferred from the pointers */
};

/** Per-kernel attributes settable with cudaFuncSetAttribute(). */
enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8 /**< dynamic shared memory a launch may ask for */
};

/** Device attributes readable with cudaDeviceGetAttribute(). */
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,           /**< 1024 */
    cudaDevAttrMaxSharedMemoryPerBlock = 8,      /**< 48 KB without opt-in */
    cudaDevAttrWarpSize = 10,                    /**< 32 */
    cudaDevAttrMultiProcessorCount = 16,         /**< as an H100 SXM: 132 */
    cudaDevAttrComputeCapabilityMajor = 75,      /**< 9 */
    cudaDevAttrComputeCapabilityMinor = 76,      /**< 0 */
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 /**< 227 KB with cudaFuncSetAttribute() */
};

#define cudaStreamDefault      0x00 /**< stream synchronises with the legacy default stream */
#define cudaStreamNonBlocking  0x01 /**< stream does not synchronise with the legacy default stream */
#define cudaEventDefault       0x00 /**< event with timing */
#define cudaEventBlockingSync  0x01 /**< accepted; the simulator never spins */
#define cudaEventDisableTiming 0x02 /**< event without timing */
#define cudaHostAllocDefault   0x00 /**< pinned allocation flag */

/** A queue of device work; 0 (NULL) is the legacy default stream of the current device. */
typedef struct CUstream_st *cudaStream_t;
/** A marker in a stream's work, for ordering and timing. */
typedef struct CUevent_st *cudaEvent_t;
/** Work recorded by stream capture (cudaStreamBeginCapture … cudaStreamEndCapture). */
typedef struct CUgraph_st *cudaGraph_t;
/** An instantiated graph, launchable on a stream. */
typedef struct CUgraphExec_st *cudaGraphExec_t;

/** How a capture treats potentially unsafe calls (cudaMalloc, synchronous copies) meanwhile (driver_types.h values). */
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,      /**< refused while the capture runs */
    cudaStreamCaptureModeThreadLocal = 1, /**< refused on the capturing thread (the simulator has one) */
    cudaStreamCaptureModeRelaxed = 2      /**< allowed */
};

/** What cudaStreamIsCapturing() reports. */
enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,       /**< not capturing */
    cudaStreamCaptureStatusActive = 1,     /**< capturing */
    cudaStreamCaptureStatusInvalidated = 2 /**< capturing, but a refused call invalidated it: end it */
};

/** Three unsigned coordinates (threadIdx, blockIdx). */
typedef struct uint3 {
    unsigned int x; /**< fastest-varying coordinate */
    unsigned int y; /**< middle coordinate */
    unsigned int z; /**< slowest coordinate */
} uint3;

/** Launch dimensions; unspecified components are 1. */
typedef struct dim3 {
    unsigned int x; /**< fastest-varying extent */
    unsigned int y; /**< middle extent */
    unsigned int z; /**< slowest extent */
#ifdef __cplusplus
    /** dim3(8) is {8, 1, 1}, as in CUDA. */
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    /** From a uint3 (blockIdx, threadIdx). */
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
#endif
} dim3;

/** Vector types with CUDA's alignment, so vectorised loads keep their meaning. */
typedef struct __attribute__((aligned(8))) float2 {
    float x, y;
} float2;
/** Four floats, 16-byte aligned. */
typedef struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
} float4;
/** Two ints, 8-byte aligned. */
typedef struct __attribute__((aligned(8))) int2 {
    int x, y;
} int2;
/** Four ints, 16-byte aligned. */
typedef struct __attribute__((aligned(16))) int4 {
    int x, y, z, w;
} int4;
/** Two unsigned ints, 8-byte aligned. */
typedef struct __attribute__((aligned(8))) uint2 {
    unsigned int x, y;
} uint2;
/** Four unsigned ints, 16-byte aligned. */
typedef struct __attribute__((aligned(16))) uint4 {
    unsigned int x, y, z, w;
} uint4;

/** Builds a float2. */
static inline float2 make_float2(float x, float y)
{
    float2 v = { x, y };
    return v;
}
/** Builds a float4. */
static inline float4 make_float4(float x, float y, float z, float w)
{
    float4 v = { x, y, z, w };
    return v;
}
/** Builds an int2. */
static inline int2 make_int2(int x, int y)
{
    int2 v = { x, y };
    return v;
}
/** Builds a uint3. */
static inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z)
{
    uint3 v = { x, y, z };
    return v;
}

/** The fields of cudaDeviceProp that the simulator fills (a subset of the real struct). */
typedef struct cudaDeviceProp {
    char name[256];                /**< "dsv2 simulated device N (sm_90)" */
    size_t totalGlobalMem;         /**< bytes of device memory (80 GiB) */
    size_t sharedMemPerBlock;      /**< 48 KB */
    size_t sharedMemPerBlockOptin; /**< 227 KB */
    int regsPerBlock;              /**< 65536 (not modelled) */
    int warpSize;                  /**< 32 */
    int maxThreadsPerBlock;        /**< 1024 */
    int maxThreadsDim[3];          /**< {1024, 1024, 64} */
    int maxGridSize[3];            /**< {2^31 − 1, 65535, 65535} */
    int major;                     /**< compute capability 9 */
    int minor;                     /**< .0 */
    int multiProcessorCount;       /**< 132 */
} cudaDeviceProp;

/** Number of simulated devices (env SIM_DEVICE_COUNT, default 1, at most 8). */
cudaError_t cudaGetDeviceCount(int *count);
/** Makes dev the current device of the calling host thread. */
cudaError_t cudaSetDevice(int dev);
/** The current device. */
cudaError_t cudaGetDevice(int *dev);
/** Fills the subset of cudaDeviceProp listed above. */
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev);
/** One integer attribute of device dev. */
cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int dev);
/** Runs every queued operation of the current device; returns its sticky error, if any. */
cudaError_t cudaDeviceSynchronize(void);
/** Drops queued work and allocations of the current device and clears its sticky error. */
cudaError_t cudaDeviceReset(void);
/** Sets *can to 1 when both devices exist and differ. */
cudaError_t cudaDeviceCanAccessPeer(int *can, int dev, int peer);
/** Lets kernels on the current device read and write peer's memory. flags must be 0. */
cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned int flags);

/** Returns and clears the last error of the calling thread (sticky errors stay). */
cudaError_t cudaGetLastError(void);
/** Returns the last error without clearing it. */
cudaError_t cudaPeekAtLastError(void);
/** A sentence describing err. */
const char *cudaGetErrorString(cudaError_t err);
/** The enumerator's name, e.g. "cudaErrorInvalidValue". */
const char *cudaGetErrorName(cudaError_t err);

/** Allocates size bytes of device memory on the current device (256-byte aligned). */
cudaError_t cudaMalloc(void **ptr, size_t size);
/** Frees device memory (synchronises first, as on a GPU). NULL is accepted. */
cudaError_t cudaFree(void *ptr);
/** Allocates pinned host memory, which kernels may also address. */
cudaError_t cudaMallocHost(void **ptr, size_t size);
/** Frees memory from cudaMallocHost. */
cudaError_t cudaFreeHost(void *ptr);
/** Free and total device memory of the current device. */
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

/** Synchronous copy; the pointers must agree with kind. */
cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind);
/** Copy queued on stream; checked now, performed when the stream runs. */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream);
/** Synchronous copy between the memory of two devices. */
cudaError_t cudaMemcpyPeer(void *dst, int dst_dev, const void *src, int src_dev, size_t count);
/** Queued copy between the memory of two devices. */
cudaError_t cudaMemcpyPeerAsync(void *dst, int dst_dev, const void *src, int src_dev, size_t count,
                                cudaStream_t stream);
/** Synchronous fill of device memory with the byte value. */
cudaError_t cudaMemset(void *dst, int value, size_t count);
/** Queued fill of device memory. */
cudaError_t cudaMemsetAsync(void *dst, int value, size_t count, cudaStream_t stream);

/** Creates a stream on the current device. */
cudaError_t cudaStreamCreate(cudaStream_t *stream);
/** Creates a stream with cudaStreamDefault or cudaStreamNonBlocking. */
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags);
/** Runs the stream's remaining work, then destroys it. */
cudaError_t cudaStreamDestroy(cudaStream_t stream);
/** Runs every operation queued on stream (and what it waits on). */
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
/** cudaSuccess when stream has no queued work, else cudaErrorNotReady (nothing is run). */
cudaError_t cudaStreamQuery(cudaStream_t stream);
/** Later work on stream waits until event's recorded work has run. flags must be 0. */
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags);

/** Creates an event. */
cudaError_t cudaEventCreate(cudaEvent_t *event);
/** Creates an event with cudaEvent* flags. */
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags);
/** Destroys an event. */
cudaError_t cudaEventDestroy(cudaEvent_t event);
/** Queues the event on stream. */
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
/** Runs the recorded stream up to the event. */
cudaError_t cudaEventSynchronize(cudaEvent_t event);
/** cudaSuccess when the event's work has run, else cudaErrorNotReady. */
cudaError_t cudaEventQuery(cudaEvent_t event);
/** Host wall-clock milliseconds between the moments the two events' work ran (not GPU time). */
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

/** Sets a kernel attribute; func is the kernel (C++ callers may pass it directly). */
cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value);

/**
 * Starts capturing stream (not the legacy default stream): work queued on it is
 * recorded into a graph instead of being run, until cudaStreamEndCapture().
 */
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode);
/**
 * Ends the capture begun on stream: *graph is the recorded work, or NULL with
 * cudaErrorStreamCaptureInvalidated when a refused call invalidated the capture.
 */
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph);
/** Whether stream is capturing (*status: none, active or invalidated). */
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status);
/** Makes a launchable copy of graph (flags must be 0); graph may be destroyed afterwards. */
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags);
/** Queues the recorded work of exec on stream, in recorded order with the recorded arguments. */
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
/** Destroys an instantiated graph (launches still queued run first). */
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
/** Destroys a captured graph. */
cudaError_t cudaGraphDestroy(cudaGraph_t graph);

#ifdef __cplusplus
}

/** C++ convenience, as in the real header: pass the kernel itself. */
template <typename T> static inline cudaError_t cudaFuncSetAttribute(T *entry, enum cudaFuncAttribute attr, int value)
{
    return cudaFuncSetAttribute(reinterpret_cast<const void *>(entry), attr, value);
}

#include "sim_kernel.h"
#endif

#endif
