/**
 * \file nccl.c
 * \brief The simulated NCCL: communicators over the simulated devices, grouped calls checked as a whole.
 *
 * ncclCommInitAll() makes a clique: one communicator per rank, each bound to
 * a device. Every call is checked on its own (communicator, type, operator,
 * peer, buffers in device memory of the rank's device, stream of that
 * device) and recorded. At the outermost ncclGroupEnd() — or at once for a
 * call outside any group — the recorded calls are checked together:
 *
 * - the j-th send from rank a to rank b pairs with the j-th receive posted
 *   by b from a; counts and types must agree (ncclInvalidArgument), and a
 *   send or receive without its partner is ncclInvalidUsage (on a GPU it
 *   would hang);
 * - every rank of a clique must post the same collectives in the same order
 *   with the same count, type, operator and root (ncclInvalidArgument when
 *   they differ, ncclInvalidUsage when a rank is missing).
 *
 * Then every stream is run up to now and the data moves, through scratch
 * copies so that in-place collectives and exchanges read the old contents.
 * Reductions are computed in double (integers in 64-bit integers) in rank
 * order and rounded once to the element type.
 */
#include "sim_internal.h"
#include "nccl.h"
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMM_MAGIC 0x4e43434cu /**< "NCCL": marks a live communicator */

/** The communicators made by one ncclCommInitAll. */
typedef struct {
    int n;                                  /**< number of ranks */
    int live;                               /**< communicators not yet destroyed */
    struct ncclComm *rank[SIM_MAX_DEVICES]; /**< rank r's communicator */
} Clique;

/** One rank. */
struct ncclComm {
    unsigned int magic; /**< COMM_MAGIC while alive */
    Clique *clique;     /**< its clique */
    int rank;           /**< its rank */
    int device;         /**< its device */
};

/** What a recorded call does. */
typedef enum { CALL_SEND, CALL_RECV, CALL_ALLREDUCE, CALL_ALLGATHER, CALL_REDUCESCATTER, CALL_BROADCAST } CallKind;

static const char *const call_names[] = { "ncclSend",      "ncclRecv",          "ncclAllReduce",
                                          "ncclAllGather", "ncclReduceScatter", "ncclBroadcast" };

/** A recorded call. */
typedef struct {
    CallKind kind;       /**< what it does */
    ncclComm_t comm;     /**< the calling rank */
    const void *send;    /**< send buffer */
    void *recv;          /**< receive buffer */
    size_t count;        /**< elements (per rank for all-gather and reduce-scatter) */
    ncclDataType_t type; /**< element type */
    ncclRedOp_t op;      /**< reduction */
    int peer;            /**< peer (send/recv) or root (broadcast) */
    int matched;         /**< paired or grouped already */
} Call;

static struct {
    int depth;     /**< group nesting */
    Call *calls;   /**< recorded calls of the open group */
    size_t n, cap; /**< how many, room */
} group;

/* ------------------------------------------------------------------------------------------ */
/* strings                                                                                     */

const char *ncclGetErrorString(ncclResult_t result)
{
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    }
    return "unknown result code";
}

const char *ncclGetLastError(ncclComm_t comm)
{
    (void)comm;
    return sim_last_detail();
}

/* ------------------------------------------------------------------------------------------ */
/* communicators                                                                               */

ncclResult_t ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist)
{
    int count = 0;
    if (sim_env_long("SIM_FAIL_COMM", 0)) {
        sim_detail("ncclCommInitAll: communicator creation fails (SIM_FAIL_COMM)");
        return ncclSystemError;
    }
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        sim_detail("ncclCommInitAll: no simulated device");
        return ncclUnhandledCudaError;
    }
    if (!comms || ndev < 1 || ndev > count) {
        sim_detail("ncclCommInitAll: %d ranks requested, %d simulated device(s)", ndev, count);
        return ncclInvalidArgument;
    }
    for (int i = 0; i < ndev; i++) {
        int d = devlist ? devlist[i] : i;
        for (int j = 0; j < i; j++) {
            if (d < 0 || d >= count || (devlist && devlist[j] == d)) {
                sim_detail("ncclCommInitAll: devlist[%d] = %d is out of range or repeated", i, d);
                return ncclInvalidArgument;
            }
        }
        if (d < 0 || d >= count) {
            sim_detail("ncclCommInitAll: devlist[%d] = %d is out of range", i, d);
            return ncclInvalidArgument;
        }
    }
    Clique *c = calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    c->n = c->live = ndev;
    for (int i = 0; i < ndev; i++) {
        ncclComm_t comm = calloc(1, sizeof *comm);
        if (!comm) {
            while (i-- > 0) free(c->rank[i]);
            free(c);
            return ncclSystemError;
        }
        *comm = (struct ncclComm){ COMM_MAGIC, c, i, devlist ? devlist[i] : i };
        c->rank[i] = comm;
    }
    memcpy(comms, c->rank, (size_t)ndev * sizeof *comms);
    return ncclSuccess;
}

static ncclResult_t check_comm(const char *call, ncclComm_t comm)
{
    if (!comm || comm->magic != COMM_MAGIC) {
        sim_detail("%s: %p is not a live communicator", call, (void *)comm);
        return ncclInvalidArgument;
    }
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    ncclResult_t r = check_comm("ncclCommDestroy", comm);
    if (r) return r;
    Clique *c = comm->clique;
    comm->magic = 0;
    c->rank[comm->rank] = NULL;
    free(comm);
    if (--c->live == 0) free(c);
    return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int *count)
{
    ncclResult_t r = check_comm("ncclCommCount", comm);
    if (r || !count) return r ? r : ncclInvalidArgument;
    *count = comm->clique->n;
    return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int *device)
{
    ncclResult_t r = check_comm("ncclCommCuDevice", comm);
    if (r || !device) return r ? r : ncclInvalidArgument;
    *device = comm->device;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank)
{
    ncclResult_t r = check_comm("ncclCommUserRank", comm);
    if (r || !rank) return r ? r : ncclInvalidArgument;
    *rank = comm->rank;
    return ncclSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* element types and reductions                                                                */

/** Bytes per element, 0 for types the simulator does not handle. */
static size_t elem_size(ncclDataType_t t)
{
    switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    }
    return 0;
}

static int is_float(ncclDataType_t t)
{
    return t == ncclFloat32 || t == ncclFloat64 || t == ncclBfloat16;
}
static int is_signed(ncclDataType_t t)
{
    return t == ncclInt8 || t == ncclInt32 || t == ncclInt64;
}

static double load_float(ncclDataType_t t, const void *p, size_t i)
{
    if (t == ncclFloat32) return ((const float *)p)[i];
    if (t == ncclFloat64) return ((const double *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void store_float(ncclDataType_t t, void *p, size_t i, double v)
{
    if (t == ncclFloat64) {
        ((double *)p)[i] = v;
        return;
    }
    float f = (float)v;
    if (t == ncclFloat32) {
        ((float *)p)[i] = f;
        return;
    }
    uint32_t u;
    memcpy(&u, &f, 4);
    ((uint16_t *)p)[i] = (u & 0x7fffffffu) > 0x7f800000u ? 0x7fff : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/** Integer element i, sign- or zero-extended to 64 bits. */
static uint64_t load_int(ncclDataType_t t, const void *p, size_t i)
{
    switch (t) {
    case ncclInt8: return (uint64_t)(int64_t)((const int8_t *)p)[i];
    case ncclUint8: return ((const uint8_t *)p)[i];
    case ncclInt32: return (uint64_t)(int64_t)((const int32_t *)p)[i];
    case ncclUint32: return ((const uint32_t *)p)[i];
    default: return ((const uint64_t *)p)[i];
    }
}

static void store_int(ncclDataType_t t, void *p, size_t i, uint64_t v)
{
    size_t sz = elem_size(t);
    memcpy((char *)p + i * sz, &v, sz); /* little-endian: the low bytes */
}

/** Combines two integers (as 64-bit two's complement or unsigned). */
static uint64_t combine_int(ncclRedOp_t op, int sgn, uint64_t a, uint64_t b)
{
    int less = sgn ? (int64_t)a < (int64_t)b : a < b;
    switch (op) {
    case ncclProd: return a * b;
    case ncclMax: return less ? b : a;
    case ncclMin: return less ? a : b;
    default: return a + b;
    }
}

/** out[i] = op over r of in[r][i] for i < count (out may alias an input; results go through scratch). */
static void reduce(ncclDataType_t t, ncclRedOp_t op, void *out, const void *const *in, int nin, size_t count,
                   void *scratch)
{
    for (size_t i = 0; i < count; i++) {
        if (is_float(t)) {
            double acc = load_float(t, in[0], i);
            for (int r = 1; r < nin; r++) {
                double v = load_float(t, in[r], i);
                acc = op == ncclProd  ? acc * v
                      : op == ncclMax ? (v > acc ? v : acc)
                      : op == ncclMin ? (v < acc ? v : acc)
                                      : acc + v;
            }
            store_float(t, scratch, i, op == ncclAvg ? acc / nin : acc);
        } else {
            uint64_t acc = load_int(t, in[0], i);
            for (int r = 1; r < nin; r++) acc = combine_int(op, is_signed(t), acc, load_int(t, in[r], i));
            if (op == ncclAvg) acc = is_signed(t) ? (uint64_t)((int64_t)acc / nin) : acc / (uint64_t)nin;
            store_int(t, scratch, i, acc);
        }
    }
    memcpy(out, scratch, count * elem_size(t));
}

/* ------------------------------------------------------------------------------------------ */
/* recording calls                                                                             */

static ncclResult_t execute_group(void);

/** Checks one call against its own communicator and records it. */
static ncclResult_t record(Call c, cudaStream_t stream, size_t send_elems, size_t recv_elems)
{
    const char *name = call_names[c.kind];
    ncclResult_t r = check_comm(name, c.comm);
    if (r) return r;
    size_t es = elem_size(c.type);
    int n = c.comm->clique->n;
    char why[256];
    if (!es) {
        sim_detail("%s: data type %d is not simulated", name, (int)c.type);
        return ncclInvalidArgument;
    }
    if ((unsigned)c.op > ncclAvg) {
        sim_detail("%s: reduction %d is not simulated", name, (int)c.op);
        return ncclInvalidArgument;
    }
    if ((c.kind == CALL_SEND || c.kind == CALL_RECV || c.kind == CALL_BROADCAST) && (c.peer < 0 || c.peer >= n)) {
        sim_detail("%s: rank %d: peer/root %d outside 0..%d", name, c.comm->rank, c.peer, n - 1);
        return ncclInvalidArgument;
    }
    if ((send_elems && !sim_device_range_ok(c.send, send_elems * es, c.comm->device, why, sizeof why)) ||
        (recv_elems && !sim_device_range_ok(c.recv, recv_elems * es, c.comm->device, why, sizeof why))) {
        sim_detail("%s: rank %d (device %d): buffer %s", name, c.comm->rank, c.comm->device, why);
        return ncclInvalidArgument;
    }
    cudaStream_t s = sim_resolve_stream_on(name, stream, c.comm->device);
    if (!s) return ncclInvalidArgument;
    if (sim_stream_capturing(s)) {
        sim_capture_invalidate(s);
        sim_detail("%s: rank %d: stream %p captures; NCCL inside a capture is not simulated (the capture is "
                   "invalidated)",
                   name, c.comm->rank, (void *)s);
        return ncclInvalidUsage;
    }
    if (group.n == group.cap) {
        size_t cap = group.cap ? 2 * group.cap : 32;
        Call *grown = realloc(group.calls, cap * sizeof *grown);
        if (!grown) return ncclSystemError;
        group.calls = grown;
        group.cap = cap;
    }
    group.calls[group.n++] = c;
    return group.depth ? ncclSuccess : execute_group();
}

ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream)
{
    Call c = { CALL_SEND, comm, sendbuff, NULL, count, datatype, ncclSum, peer, 0 };
    return record(c, stream, count, 0);
}

ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream)
{
    Call c = { CALL_RECV, comm, NULL, recvbuff, count, datatype, ncclSum, peer, 0 };
    return record(c, stream, 0, count);
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream)
{
    Call c = { CALL_ALLREDUCE, comm, sendbuff, recvbuff, count, datatype, op, 0, 0 };
    return record(c, stream, count, count);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream)
{
    Call c = { CALL_ALLGATHER, comm, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0, 0 };
    ncclResult_t r = check_comm("ncclAllGather", comm);
    return r ? r : record(c, stream, sendcount, sendcount * (size_t)comm->clique->n);
}

ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)
{
    Call c = { CALL_REDUCESCATTER, comm, sendbuff, recvbuff, recvcount, datatype, op, 0, 0 };
    ncclResult_t r = check_comm("ncclReduceScatter", comm);
    return r ? r : record(c, stream, recvcount * (size_t)comm->clique->n, recvcount);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream)
{
    Call c = { CALL_BROADCAST, comm, sendbuff, recvbuff, count, datatype, ncclSum, root, 0 };
    ncclResult_t r = check_comm("ncclBroadcast", comm);
    /* Only the root's send buffer is read. */
    return r ? r : record(c, stream, comm && comm->rank == root ? count : 0, count);
}

ncclResult_t ncclGroupStart(void)
{
    group.depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void)
{
    if (group.depth == 0) {
        sim_detail("ncclGroupEnd without ncclGroupStart");
        return ncclInvalidUsage;
    }
    return --group.depth ? ncclSuccess : execute_group();
}

/* ------------------------------------------------------------------------------------------ */
/* executing a group                                                                           */

/**
 * Index of the j-th (0-based) call by rank of clique c, or −1: with p2p set, the
 * j-th call of exactly `kind` with the given peer; otherwise the j-th collective of any kind.
 */
static long find_call(const Clique *c, int rank, CallKind kind, int p2p, int peer, size_t j)
{
    for (size_t i = 0; i < group.n; i++) {
        const Call *x = &group.calls[i];
        int kind_ok = p2p ? x->kind == kind : x->kind >= CALL_ALLREDUCE;
        if (x->comm->clique == c && x->comm->rank == rank && kind_ok && (peer < 0 || x->peer == peer) && j-- == 0)
            return (long)i;
    }
    return -1;
}

/** Pairs every send with its receive; returns the first mismatch. */
static ncclResult_t match_point_to_point(void)
{
    for (size_t i = 0; i < group.n; i++) {
        Call *s = &group.calls[i];
        if (s->kind != CALL_SEND && s->kind != CALL_RECV) continue;
        if (s->matched) continue;
        /* The j-th send a→b pairs with the j-th recv at b from a. */
        int a = s->comm->rank, b = s->peer;
        CallKind other = s->kind == CALL_SEND ? CALL_RECV : CALL_SEND;
        size_t j = 0;
        for (size_t k = 0; k < i; k++)
            j += group.calls[k].comm->clique == s->comm->clique && group.calls[k].kind == s->kind &&
                 group.calls[k].comm->rank == a && group.calls[k].peer == b;
        long p = find_call(s->comm->clique, b, other, 1, a, j);
        if (p < 0) {
            sim_detail("%s from rank %d %s rank %d (%zu elements) has no matching %s", call_names[s->kind], a,
                       s->kind == CALL_SEND ? "to" : "from", b, s->count, call_names[other]);
            return ncclInvalidUsage;
        }
        Call *q = &group.calls[p];
        if (q->count != s->count || q->type != s->type) {
            sim_detail("ncclSend/ncclRecv between ranks %d and %d disagree: %zu elements of type %d vs %zu of type %d",
                       a, b, s->count, (int)s->type, q->count, (int)q->type);
            return ncclInvalidArgument;
        }
        s->matched = q->matched = 1;
    }
    return ncclSuccess;
}

/** Checks that every rank of each clique posted the same collectives. */
static ncclResult_t match_collectives(void)
{
    for (size_t i = 0; i < group.n; i++) {
        Call *x = &group.calls[i];
        if (x->kind < CALL_ALLREDUCE || x->matched) continue;
        const Clique *c = x->comm->clique;
        size_t j = 0;
        for (size_t k = 0; k < i; k++)
            j += group.calls[k].comm->clique == c && group.calls[k].comm->rank == x->comm->rank &&
                 group.calls[k].kind >= CALL_ALLREDUCE;
        for (int r = 0; r < c->n; r++) {
            long p = find_call(c, r, x->kind, 0, -1, j);
            if (p < 0) {
                sim_detail("%s #%zu posted by rank %d is missing on rank %d (in one process, post every rank's call "
                           "between ncclGroupStart and ncclGroupEnd)",
                           call_names[x->kind], j, x->comm->rank, r);
                return ncclInvalidUsage;
            }
            Call *y = &group.calls[p];
            if (y->kind != x->kind || y->count != x->count || y->type != x->type || y->op != x->op ||
                y->peer != x->peer) {
                sim_detail("collective #%zu differs between rank %d (%s, %zu elements, type %d, op %d, root %d) and "
                           "rank %d (%s, %zu elements, type %d, op %d, root %d)",
                           j, x->comm->rank, call_names[x->kind], x->count, (int)x->type, (int)x->op, x->peer, r,
                           call_names[y->kind], y->count, (int)y->type, (int)y->op, y->peer);
                return ncclInvalidArgument;
            }
        }
    }
    return ncclSuccess;
}

/**
 * Counts the bytes a ring implementation of collective x moves from each rank to the next
 * (bytes: x->count elements): all-reduce 2(n−1)/n of the buffer, all-gather and reduce-scatter
 * n−1 per-rank chunks, broadcast the buffer over the n−1 links after the root.
 */
static void count_ring(const Clique *c, const Call *x, size_t bytes)
{
    int n = c->n;
    for (int r = 0; r < n; r++) {
        size_t b = 0;
        switch (x->kind) {
        case CALL_ALLREDUCE: b = 2 * (size_t)(n - 1) * bytes / (size_t)n; break;
        case CALL_ALLGATHER:
        case CALL_REDUCESCATTER: b = (size_t)(n - 1) * bytes; break;
        case CALL_BROADCAST: b = (r + 1) % n == x->peer ? 0 : bytes; break;
        default: break;
        }
        if (n > 1) sim_count_nccl(c->rank[r]->device, c->rank[(r + 1) % n]->device, b);
    }
}

/** Performs collective #j of clique c (every rank's call is present and agrees). */
static int perform_collective(const Clique *c, size_t j, char *scratch)
{
    Call *calls[SIM_MAX_DEVICES] = { 0 };
    const void *ins[SIM_MAX_DEVICES];
    for (int r = 0; r < c->n; r++) {
        calls[r] = &group.calls[find_call(c, r, CALL_ALLREDUCE, 0, -1, j)];
        calls[r]->matched = 1;
    }
    const Call *x = calls[0];
    size_t es = elem_size(x->type), bytes = x->count * es;
    int n = c->n;
    count_ring(c, x, bytes);
    switch (x->kind) {
    case CALL_ALLREDUCE:
        for (int r = 0; r < n; r++) ins[r] = calls[r]->send;
        reduce(x->type, x->op, scratch, ins, n, x->count, scratch + bytes);
        for (int r = 0; r < n; r++) memcpy(calls[r]->recv, scratch, bytes);
        break;
    case CALL_REDUCESCATTER:
        for (int dst = 0; dst < n; dst++) {
            for (int r = 0; r < n; r++) ins[r] = (const char *)calls[r]->send + (size_t)dst * bytes;
            reduce(x->type, x->op, scratch + (size_t)dst * bytes, ins, n, x->count, scratch + (size_t)n * bytes);
        }
        for (int r = 0; r < n; r++) memcpy(calls[r]->recv, scratch + (size_t)r * bytes, bytes);
        break;
    case CALL_ALLGATHER:
        for (int r = 0; r < n; r++) memcpy(scratch + (size_t)r * bytes, calls[r]->send, bytes);
        for (int r = 0; r < n; r++) memcpy(calls[r]->recv, scratch, (size_t)n * bytes);
        break;
    case CALL_BROADCAST:
        memcpy(scratch, calls[x->peer]->send, bytes);
        for (int r = 0; r < n; r++) memcpy(calls[r]->recv, scratch, bytes);
        break;
    default: return -1;
    }
    return 0;
}

static ncclResult_t execute_group(void)
{
    ncclResult_t r = ncclSuccess;
    for (size_t i = 0; i < group.n; i++) group.calls[i].matched = 0;
    if ((r = match_point_to_point()) || (r = match_collectives())) goto done;
    for (size_t i = 0; i < group.n; i++) group.calls[i].matched = 0;

    /* Everything issued before the group must have run before data moves. */
    sim_drain_all();

    /* Scratch big enough for any call: n ranks' worth of data plus reduction room. */
    size_t most = 0;
    for (size_t i = 0; i < group.n; i++) {
        size_t b = group.calls[i].count * elem_size(group.calls[i].type) * (size_t)group.calls[i].comm->clique->n;
        most = b > most ? b : most;
    }
    char *scratch = malloc(2 * most + 1);
    if (!scratch) {
        r = ncclSystemError;
        goto done;
    }
    for (size_t i = 0; i < group.n; i++) {
        Call *x = &group.calls[i];
        if (x->kind < CALL_ALLREDUCE || x->matched || x->comm->rank != 0) continue;
        size_t j = 0;
        for (size_t k = 0; k < i; k++)
            j += group.calls[k].comm->clique == x->comm->clique && group.calls[k].comm->rank == 0 &&
                 group.calls[k].kind >= CALL_ALLREDUCE;
        perform_collective(x->comm->clique, j, scratch);
    }
    /* Point-to-point: stage every send first, so exchanges in place read the old contents. */
    size_t total = 0;
    for (size_t i = 0; i < group.n; i++)
        if (group.calls[i].kind == CALL_SEND) total += group.calls[i].count * elem_size(group.calls[i].type);
    char *staged = malloc(total + 1);
    if (!staged) {
        free(scratch);
        r = ncclSystemError;
        goto done;
    }
    size_t off = 0;
    for (size_t i = 0; i < group.n; i++) {
        Call *s = &group.calls[i];
        if (s->kind != CALL_SEND) continue;
        size_t bytes = s->count * elem_size(s->type);
        memcpy(staged + off, s->send, bytes);
        s->send = staged + off; /* the staged copy now stands for the send buffer */
        off += bytes;
    }
    for (size_t i = 0; i < group.n; i++) {
        Call *s = &group.calls[i];
        if (s->kind != CALL_SEND) continue;
        int a = s->comm->rank, b = s->peer;
        size_t j = 0;
        for (size_t k = 0; k < i; k++)
            j += group.calls[k].comm->clique == s->comm->clique && group.calls[k].kind == CALL_SEND &&
                 group.calls[k].comm->rank == a && group.calls[k].peer == b;
        Call *q = &group.calls[find_call(s->comm->clique, b, CALL_RECV, 1, a, j)];
        sim_count_nccl(s->comm->device, q->comm->device, s->count * elem_size(s->type));
        memcpy(q->recv, s->send, s->count * elem_size(s->type));
    }
    free(staged);
    free(scratch);
done:
    group.n = 0;
    return r;
}
