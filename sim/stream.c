/**
 * \file stream.c
 * \brief The simulated runtime's streams: deferred queues, legacy-default-stream ordering, stream capture.
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

#include <stdlib.h>
#include <string.h>

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
    for (size_t i = 0; i < sim_machine.nstreams; i++) {
        cudaStream_t t = sim_machine.streams[i];
        if (t->capture && (dev < 0 || t->device == dev) &&
            !(strict && t->capture_mode == cudaStreamCaptureModeRelaxed)) {
            t->capture_invalid = 1;
            n++;
        }
    }
    return n;
}

cudaError_t sim_unsafe_in_capture(const char *call)
{
    if (!invalidate_captures(-1, 1)) return cudaSuccess;
    return sim_error(cudaErrorStreamCaptureUnsupported,
                     "%s: not permitted while a stream captures in global or thread-local mode; the capture is "
                     "invalidated",
                     call);
}

cudaError_t sim_refuse_on_capture(const char *call, cudaStream_t s, const char *why)
{
    s->capture_invalid = 1;
    return sim_error(cudaErrorStreamCaptureUnsupported,
                     "%s: %s on stream %p while it captures; the capture is invalidated", call, why, (void *)s);
}

/** Blocking streams of device dev that capture. */
static int blocking_captures(int dev)
{
    int n = 0;
    for (size_t i = 0; i < sim_machine.nstreams; i++)
        n += sim_machine.streams[i]->capture && sim_machine.streams[i]->device == dev &&
             !(sim_machine.streams[i]->flags & cudaStreamNonBlocking);
    return n;
}

/**
 * Work on a legacy default stream while a blocking stream of its device
 * captures would wait for the capture: records cudaErrorStreamCaptureImplicit,
 * invalidates those captures and returns 1; 0 when s is free to use.
 */
static int legacy_implicit(const char *call, cudaStream_t s)
{
    if (!s->legacy || !blocking_captures(s->device)) return 0;
    for (size_t i = 0; i < sim_machine.nstreams; i++)
        if (sim_machine.streams[i]->device == s->device && !(sim_machine.streams[i]->flags & cudaStreamNonBlocking))
            sim_machine.streams[i]->capture_invalid |= sim_machine.streams[i]->capture != NULL;
    sim_error(cudaErrorStreamCaptureImplicit,
              "%s: the legacy default stream of device %d would wait for a capturing blocking stream; the capture "
              "is invalidated",
              call, s->device);
    return 1;
}

int sim_stream_capturing(cudaStream_t stream)
{
    return stream->capture != NULL;
}

void sim_capture_invalidate(cudaStream_t stream)
{
    if (stream && stream->capture) stream->capture_invalid = 1;
}

/* ------------------------------------------------------------------------------------------ */
/* streams                                                                                     */

/**
 * Finds stream; NULL means the legacy stream of device dev. A stream of
 * another device than dev is an error unless any_device is set.
 */
static cudaStream_t lookup_stream(const char *call, cudaStream_t stream, int dev, int any_device)
{
    if (sim_need_device(call)) return NULL;
    if (!stream) return &sim_machine.dev[dev].legacy;
    for (size_t i = 0; i < sim_machine.nstreams; i++) {
        if (sim_machine.streams[i] == stream) {
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
    cudaStream_t s = lookup_stream(call, stream, sim_current_device(), 0);
    return s && legacy_implicit(call, s) ? NULL : s;
}

cudaStream_t sim_resolve_stream_on(const char *call, cudaStream_t stream, int dev)
{
    cudaStream_t s = lookup_stream(call, stream, dev, 0);
    return s && legacy_implicit(call, s) ? NULL : s;
}

int sim_stream_device(cudaStream_t stream)
{
    return stream->device;
}

void sim_enqueue(cudaStream_t stream, SimOp *op)
{
    op->next = NULL;
    op->seq = ++sim_machine.next_seq;
    op->device = stream->device;
    op->stream = stream;
    if (stream->capture) { /* recorded, not run; dropped once the capture is invalid */
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

void sim_enqueue_chain(cudaStream_t stream, SimOp *first)
{
    const uint64_t seq = ++sim_machine.next_seq;
    SimOp *last = first;
    for (SimOp *op = first; op; op = op->next) {
        op->seq = seq;
        op->device = stream->device;
        op->stream = stream;
        last = op;
    }
    if (stream->tail)
        stream->tail->next = first;
    else
        stream->head = first;
    stream->tail = last;
}

/** Runs what must precede op on stream s under legacy-default-stream ordering. */
static void drain_dependencies(cudaStream_t s, uint64_t seq)
{
    if (s->legacy) {
        for (size_t i = 0; i < sim_machine.nstreams; i++) {
            cudaStream_t t = sim_machine.streams[i];
            if (t->device == s->device && !(t->flags & cudaStreamNonBlocking)) sim_drain_until(t, seq - 1);
        }
    } else if (!(s->flags & cudaStreamNonBlocking)) {
        sim_drain_until(&sim_machine.dev[s->device].legacy, seq - 1);
    }
}

/** Takes the oldest operation off s, runs it (unless its device has failed) and releases it. */
static void run_head(cudaStream_t s)
{
    SimOp *op = s->head;
    s->head = op->next;
    if (!s->head) s->tail = NULL;
    drain_dependencies(s, op->seq);
    if (sim_machine.dev[op->device].sticky == cudaSuccess) op->run(op);
    op->release(op);
}

void sim_drain_until(cudaStream_t s, uint64_t upto)
{
    while (s->head && s->head->seq <= upto) run_head(s);
}

void sim_drain_through(cudaStream_t s, const SimOp *target)
{
    while (s->head) {
        const int last = s->head == target;
        run_head(s);
        if (last) return;
    }
}

void sim_free_op(SimOp *op)
{
    free(op);
}

void sim_drain_stream(cudaStream_t stream)
{
    sim_drain_until(stream, UINT64_MAX);
}

void sim_drain_all(void)
{
    for (int d = 0; d < sim_machine.count; d++) sim_drain_stream(&sim_machine.dev[d].legacy);
    for (size_t i = 0; i < sim_machine.nstreams; i++) sim_drain_stream(sim_machine.streams[i]);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    cudaError_t e = sim_need_device("cudaStreamCreateWithFlags");
    if (e) return e;
    if (!stream || flags > cudaStreamNonBlocking)
        return sim_error(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: NULL stream or flags %u", flags);
    if (sim_machine.nstreams == sim_machine.cap_streams) {
        size_t cap = sim_machine.cap_streams ? 2 * sim_machine.cap_streams : 16;
        cudaStream_t *grown = realloc(sim_machine.streams, cap * sizeof *grown);
        if (!grown) return sim_error(cudaErrorMemoryAllocation, "cudaStreamCreate: out of host memory");
        sim_machine.streams = grown;
        sim_machine.cap_streams = cap;
    }
    cudaStream_t s = calloc(1, sizeof *s);
    if (!s) return sim_error(cudaErrorMemoryAllocation, "cudaStreamCreate: out of host memory");
    s->device = sim_current_device();
    s->flags = flags;
    sim_machine.streams[sim_machine.nstreams++] = s;
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (!stream)
        return sim_error(cudaErrorInvalidResourceHandle,
                         "cudaStreamDestroy: the legacy default stream cannot be destroyed");
    for (size_t i = 0; i < sim_machine.nstreams; i++) {
        if (sim_machine.streams[i] == stream) {
            if (stream->capture) return sim_refuse_on_capture("cudaStreamDestroy", stream, "destruction");
            /* Other streams may wait on events of this one: run everything first. */
            sim_drain_all();
            sim_machine.streams[i] = sim_machine.streams[--sim_machine.nstreams];
            free(stream);
            return cudaSuccess;
        }
    }
    return sim_error(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: %p is not a live stream", (void *)stream);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    cudaStream_t s = lookup_stream("cudaStreamSynchronize", stream, sim_current_device(), 1);
    if (!s || legacy_implicit("cudaStreamSynchronize", s)) return sim_recorded_error();
    if (s->capture) return sim_refuse_on_capture("cudaStreamSynchronize", s, "synchronisation");
    sim_count_sync();
    sim_drain_stream(s);
    return sim_machine.dev[s->device].sticky;
}

cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    cudaStream_t s = lookup_stream("cudaStreamQuery", stream, sim_current_device(), 1);
    if (!s || legacy_implicit("cudaStreamQuery", s)) return sim_recorded_error();
    if (s->capture) return sim_refuse_on_capture("cudaStreamQuery", s, "a query");
    return s->head ? cudaErrorNotReady : sim_machine.dev[s->device].sticky;
}

cudaError_t cudaDeviceSynchronize(void)
{
    cudaError_t e = sim_need_device("cudaDeviceSynchronize");
    if (e) return e;
    if (invalidate_captures(sim_current_device(), 0))
        return sim_error(cudaErrorStreamCaptureUnsupported,
                         "cudaDeviceSynchronize: a stream of device %d captures; the capture is invalidated",
                         sim_current_device());
    sim_count_sync();
    sim_drain_stream(&sim_machine.dev[sim_current_device()].legacy);
    for (size_t i = 0; i < sim_machine.nstreams; i++)
        if (sim_machine.streams[i]->device == sim_current_device()) sim_drain_stream(sim_machine.streams[i]);
    return sim_machine.dev[sim_current_device()].sticky;
}

/* ------------------------------------------------------------------------------------------ */
/* stream capture                                                                              */

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    cudaStream_t s = lookup_stream("cudaStreamBeginCapture", stream, sim_current_device(), 1);
    if (!s) return sim_recorded_error();
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
    cudaStream_t s = lookup_stream("cudaStreamEndCapture", stream, sim_current_device(), 1);
    if (!s) return sim_recorded_error();
    if (!graph) return sim_error(cudaErrorInvalidValue, "cudaStreamEndCapture: graph is NULL");
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
    cudaStream_t s = lookup_stream("cudaStreamIsCapturing", stream, sim_current_device(), 1);
    if (!s) return sim_recorded_error();
    if (!status) return sim_error(cudaErrorInvalidValue, "cudaStreamIsCapturing: status is NULL");
    if (s->legacy && blocking_captures(s->device))
        return sim_error(
            cudaErrorStreamCaptureImplicit,
            "cudaStreamIsCapturing: the legacy default stream of device %d while a blocking stream captures",
            s->device);
    *status = !s->capture          ? cudaStreamCaptureStatusNone
              : s->capture_invalid ? cudaStreamCaptureStatusInvalidated
                                   : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

void sim_drop_device_work(int dev)
{
    for (size_t s = 0; s <= sim_machine.nstreams; s++) {
        cudaStream_t st = s < sim_machine.nstreams ? sim_machine.streams[s] : &sim_machine.dev[dev].legacy;
        if (st->device != dev) continue;
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
}
