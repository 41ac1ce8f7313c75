/**
 * \file event.c
 * \brief The simulated runtime's events: records queued on streams, waits, host timing.
 *
 * A record is a SimOp on its stream; when it runs it marks the event
 * complete and notes the host clock, which cudaEventElapsedTime reads. A
 * wait queues an operation that runs the event's stream up to the record.
 */
#include "sim_internal.h"
#include "sim.h"

#include <stdlib.h>
#include <time.h>

#define SIM_EVENT_MAGIC 0x45564e54u /**< "EVNT": marks a live event */

/** An event: where it was last recorded and whether that point has run. */
struct CUevent_st {
    unsigned int magic;  /**< SIM_EVENT_MAGIC while alive */
    unsigned int flags;  /**< cudaEvent* flags */
    cudaStream_t stream; /**< stream of the last record (NULL: never recorded) */
    uint64_t seq;        /**< sequence number of the last record */
    int completed;       /**< the last record has run */
    int pending;         /**< record operations still queued */
    int destroyed;       /**< cudaEventDestroy called while records were pending */
    double time_ms;      /**< host clock when the last record ran */
};

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
    sim_drain_until(w->stream, w->seq);
}

static cudaError_t check_event(const char *call, cudaEvent_t e)
{
    if (!e || e->magic != SIM_EVENT_MAGIC || e->destroyed)
        return sim_error(cudaErrorInvalidResourceHandle, "%s: %p is not a live event", call, (void *)e);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    cudaError_t e = sim_need_device("cudaEventCreate");
    if (e) return e;
    if (!event || flags > (cudaEventBlockingSync | cudaEventDisableTiming))
        return sim_error(cudaErrorInvalidValue, "cudaEventCreateWithFlags: NULL event or flags %u", flags);
    cudaEvent_t ev = calloc(1, sizeof *ev);
    if (!ev) return sim_error(cudaErrorMemoryAllocation, "cudaEventCreate: out of host memory");
    ev->magic = SIM_EVENT_MAGIC;
    ev->flags = flags;
    *event = ev;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event)
{
    return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    cudaError_t e = check_event("cudaEventDestroy", event);
    if (e) return e;
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
    if (e) return e;
    cudaStream_t s = sim_resolve_stream("cudaEventRecord", stream);
    if (!s) return sim_recorded_error();
    if (s->capture)
        return sim_refuse_on_capture("cudaEventRecord", s, "an event record (cross-stream capture is not simulated)");
    RecordOp *r = malloc(sizeof *r);
    if (!r) return sim_error(cudaErrorMemoryAllocation, "cudaEventRecord: out of host memory");
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
    if (e) return e;
    if (!event->stream) return cudaSuccess;
    sim_count_sync();
    sim_drain_until(event->stream, event->seq);
    return sim_machine.dev[event->stream->device].sticky;
}

cudaError_t cudaEventQuery(cudaEvent_t event)
{
    cudaError_t e = check_event("cudaEventQuery", event);
    if (e) return e;
    return !event->stream || event->completed ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    cudaError_t e = check_event("cudaEventElapsedTime", start);
    if (e || (e = check_event("cudaEventElapsedTime", end))) return e;
    if (!ms) return sim_error(cudaErrorInvalidValue, "cudaEventElapsedTime: ms is NULL");
    if ((start->flags | end->flags) & cudaEventDisableTiming || !start->stream || !end->stream)
        return sim_error(cudaErrorInvalidResourceHandle,
                         "cudaEventElapsedTime: an event was never recorded or has cudaEventDisableTiming");
    if (!start->completed || !end->completed) return cudaErrorNotReady;
    *ms = (float)(end->time_ms - start->time_ms);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags)
{
    cudaError_t e = check_event("cudaStreamWaitEvent", event);
    if (e) return e;
    cudaStream_t s = sim_resolve_stream("cudaStreamWaitEvent", stream);
    if (!s) return sim_recorded_error();
    if (s->capture)
        return sim_refuse_on_capture("cudaStreamWaitEvent", s, "an event wait (cross-stream capture is not simulated)");
    if (flags != 0) return sim_error(cudaErrorInvalidValue, "cudaStreamWaitEvent: flags must be 0");
    if (!event->stream || event->completed) return cudaSuccess;
    WaitOp *w = malloc(sizeof *w);
    if (!w) return sim_error(cudaErrorMemoryAllocation, "cudaStreamWaitEvent: out of host memory");
    w->op.run = run_wait;
    w->op.release = sim_free_op;
    w->stream = event->stream;
    w->seq = event->seq;
    sim_enqueue(s, &w->op);
    return cudaSuccess;
}
