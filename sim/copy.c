/**
 * \file copy.c
 * \brief The simulated runtime's copies and fills: cudaMemcpy*, cudaMemcpyPeer*, cudaMemset*, checked and queued.
 *
 * Each side of a copy is checked against the allocation table (memory.c) as
 * its cudaMemcpyKind says, and the whole range must lie inside one
 * allocation; the asynchronous forms queue a SimOp on their stream
 * (stream.c), the synchronous ones run everything queued first.
 */
#include "sim_internal.h"
#include "sim.h"

#include <stdlib.h>
#include <string.h>

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
    sim_count_copy(c->dst, c->src, c->bytes, op->device, op->stream);
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
    sim_count_fill(f->dst, f->bytes, op->device, op->stream);
    memset(f->dst, f->value, f->bytes);
}

static const char *kind_name(enum cudaMemcpyKind kind)
{
    static const char *names[] = { "HostToHost", "HostToDevice", "DeviceToHost", "DeviceToDevice", "Default" };
    return names[kind];
}

/** Checks one side of a copy: device memory when want_device, else host memory (pinned or not). */
static cudaError_t check_side(const char *call, enum cudaMemcpyKind kind, const char *side, const void *p, size_t bytes,
                              int want_device)
{
    char where[128];
    const SimAlloc *a = sim_find_alloc(p);
    int is_device = a && a->device >= 0;
    if (!p) return sim_error(cudaErrorInvalidValue, "%s(%s): %s is NULL", call, kind_name(kind), side);
    if (want_device >= 0 && is_device != want_device)
        return sim_error(cudaErrorInvalidValue, "%s(%s): %s is %s", call, kind_name(kind), side,
                         sim_describe_pointer(p, where, sizeof where));
    if (a) {
        size_t off = (size_t)((const char *)p - a->base);
        if (bytes > a->size - off)
            return sim_error(cudaErrorInvalidValue,
                             "%s: %s: %zu bytes at offset %zu overrun the %zu-byte allocation at %p", call, side, bytes,
                             off, a->size, (void *)a->base);
    }
    return cudaSuccess;
}

/** Checks a copy: each side must be device or host memory as kind says (any for cudaMemcpyDefault), and in bounds. */
static cudaError_t check_copy(const char *call, void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
    if ((unsigned)kind > cudaMemcpyDefault)
        return sim_error(cudaErrorInvalidMemcpyDirection, "%s: kind %d is not a cudaMemcpyKind", call, (int)kind);
    if (bytes == 0) return cudaSuccess;
    int dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    int src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    int any = kind == cudaMemcpyDefault;
    cudaError_t e = check_side(call, kind, "destination", dst, bytes, any ? -1 : dst_device);
    return e ? e : check_side(call, kind, "source", src, bytes, any ? -1 : src_device);
}

static cudaError_t enqueue_copy(cudaStream_t s, void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) return cudaSuccess;
    CopyOp *c = malloc(sizeof *c);
    if (!c) return sim_error(cudaErrorMemoryAllocation, "cudaMemcpy: out of host memory");
    c->op.run = run_copy;
    c->op.release = sim_free_op;
    c->dst = dst;
    c->src = src;
    c->bytes = bytes;
    sim_enqueue(s, &c->op);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream)
{
    cudaStream_t s = sim_resolve_stream("cudaMemcpyAsync", stream);
    if (!s) return sim_recorded_error();
    cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, count, kind);
    if (e) {
        sim_capture_invalidate(s);
        return e;
    }
    if (s->capture && count && (!sim_find_alloc(dst) || !sim_find_alloc(src)))
        return sim_refuse_on_capture("cudaMemcpyAsync", s,
                                     "a copy with pageable host memory (not from cudaMallocHost)");
    return enqueue_copy(s, dst, src, count);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind)
{
    cudaError_t e = sim_need_device("cudaMemcpy");
    if (e || (e = sim_unsafe_in_capture("cudaMemcpy"))) return e;
    if ((e = check_copy("cudaMemcpy", dst, src, count, kind))) return e;
    sim_count_sync();
    sim_drain_all();
    if (sim_machine.dev[sim_current_device()].sticky) return sim_machine.dev[sim_current_device()].sticky;
    sim_count_copy(dst, src, count, sim_current_device(), NULL);
    if (count) memcpy(dst, src, count);
    return cudaSuccess;
}

/** Checks a peer copy: each pointer must be memory of the device named for it. */
static cudaError_t check_peer(const char *call, void *dst, int dst_dev, const void *src, int src_dev, size_t count)
{
    if (dst_dev < 0 || dst_dev >= sim_machine.count || src_dev < 0 || src_dev >= sim_machine.count)
        return sim_error(cudaErrorInvalidDevice, "%s: devices %d and %d, %d simulated", call, dst_dev, src_dev,
                         sim_machine.count);
    if (count == 0) return cudaSuccess;
    cudaError_t e = sim_check_device_range(call, "destination", dst, count, dst_dev);
    return e ? e : sim_check_device_range(call, "source", src, count, src_dev);
}

cudaError_t cudaMemcpyPeerAsync(void *dst, int dst_dev, const void *src, int src_dev, size_t count, cudaStream_t stream)
{
    cudaStream_t s = sim_resolve_stream("cudaMemcpyPeerAsync", stream);
    if (!s) return sim_recorded_error();
    cudaError_t e = check_peer("cudaMemcpyPeerAsync", dst, dst_dev, src, src_dev, count);
    if (e) sim_capture_invalidate(s);
    return e ? e : enqueue_copy(s, dst, src, count);
}

cudaError_t cudaMemcpyPeer(void *dst, int dst_dev, const void *src, int src_dev, size_t count)
{
    cudaError_t e = sim_need_device("cudaMemcpyPeer");
    if (e || (e = sim_unsafe_in_capture("cudaMemcpyPeer")) ||
        (e = check_peer("cudaMemcpyPeer", dst, dst_dev, src, src_dev, count)))
        return e;
    sim_count_sync();
    sim_drain_all();
    sim_count_copy(dst, src, count, src_dev, NULL);
    if (count) memcpy(dst, src, count);
    return cudaSuccess;
}

/** A fill target must be device or pinned memory, wholly inside its allocation. */
static cudaError_t check_fill(const char *call, const void *dst, size_t count)
{
    char where[128];
    const SimAlloc *a = sim_find_alloc(dst);
    if (count == 0) return cudaSuccess;
    if (!a)
        return sim_error(cudaErrorInvalidValue, "%s: destination is %s", call,
                         sim_describe_pointer(dst, where, sizeof where));
    return check_side(call, cudaMemcpyDefault, "destination", dst, count, -1);
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t count, cudaStream_t stream)
{
    cudaStream_t s = sim_resolve_stream("cudaMemsetAsync", stream);
    if (!s) return sim_recorded_error();
    cudaError_t e = check_fill("cudaMemsetAsync", dst, count);
    if (e) sim_capture_invalidate(s);
    if (e || count == 0) return e;
    FillOp *f = malloc(sizeof *f);
    if (!f) return sim_error(cudaErrorMemoryAllocation, "cudaMemsetAsync: out of host memory");
    f->op.run = run_fill;
    f->op.release = sim_free_op;
    f->dst = dst;
    f->value = value;
    f->bytes = count;
    sim_enqueue(s, &f->op);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *dst, int value, size_t count)
{
    cudaError_t e = sim_need_device("cudaMemset");
    if (e || (e = sim_unsafe_in_capture("cudaMemset")) || (e = check_fill("cudaMemset", dst, count))) return e;
    sim_count_sync();
    sim_drain_all();
    sim_count_fill(dst, count, sim_current_device(), NULL);
    if (count) memset(dst, value, count);
    return sim_machine.dev[sim_current_device()].sticky;
}
