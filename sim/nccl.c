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
 *
 * A group whose calls are all on capturing streams is checked the same way
 * and recorded instead: one rendezvous node per capturing stream (see
 * "groups captured in graphs" below).
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
    cudaStream_t stream; /**< the resolved stream it was issued on */
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
    c.stream = s;
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
    Call c = { CALL_SEND, comm, sendbuff, NULL, count, datatype, ncclSum, peer, 0, NULL };
    return record(c, stream, count, 0);
}

ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream)
{
    Call c = { CALL_RECV, comm, NULL, recvbuff, count, datatype, ncclSum, peer, 0, NULL };
    return record(c, stream, 0, count);
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream)
{
    Call c = { CALL_ALLREDUCE, comm, sendbuff, recvbuff, count, datatype, op, 0, 0, NULL };
    return record(c, stream, count, count);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream)
{
    Call c = { CALL_ALLGATHER, comm, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0, 0, NULL };
    ncclResult_t r = check_comm("ncclAllGather", comm);
    return r ? r : record(c, stream, sendcount, sendcount * (size_t)comm->clique->n);
}

ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)
{
    Call c = { CALL_REDUCESCATTER, comm, sendbuff, recvbuff, recvcount, datatype, op, 0, 0, NULL };
    ncclResult_t r = check_comm("ncclReduceScatter", comm);
    return r ? r : record(c, stream, recvcount * (size_t)comm->clique->n, recvcount);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream)
{
    Call c = { CALL_BROADCAST, comm, sendbuff, recvbuff, count, datatype, ncclSum, root, 0, NULL };
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

/** A group's calls: the open group's, or a captured group's copy. */
typedef struct {
    Call *calls; /**< the calls in issue order */
    size_t n;    /**< how many */
} Batch;

/**
 * Index of the j-th (0-based) call by rank of clique c in b, or −1: with p2p set, the
 * j-th call of exactly `kind` with the given peer; otherwise the j-th collective of any kind.
 */
static long find_call(Batch b, const Clique *c, int rank, CallKind kind, int p2p, int peer, size_t j)
{
    for (size_t i = 0; i < b.n; i++) {
        const Call *x = &b.calls[i];
        int kind_ok = p2p ? x->kind == kind : x->kind >= CALL_ALLREDUCE;
        if (x->comm->clique == c && x->comm->rank == rank && kind_ok && (peer < 0 || x->peer == peer) && j-- == 0)
            return (long)i;
    }
    return -1;
}

/** How many calls before call i in b were made by the same rank with the same kind (and peer, p2p). */
static size_t earlier(Batch b, size_t i, int p2p)
{
    const Call *x = &b.calls[i];
    size_t j = 0;
    for (size_t k = 0; k < i; k++) {
        const Call *y = &b.calls[k];
        j += y->comm->clique == x->comm->clique && y->comm->rank == x->comm->rank &&
             (p2p ? y->kind == x->kind && y->peer == x->peer : y->kind >= CALL_ALLREDUCE);
    }
    return j;
}

/** Pairs every send with its receive; returns the first mismatch. */
static ncclResult_t match_point_to_point(Batch b)
{
    for (size_t i = 0; i < b.n; i++) {
        Call *s = &b.calls[i];
        if (s->kind != CALL_SEND && s->kind != CALL_RECV) continue;
        if (s->matched) continue;
        /* The j-th send a→b pairs with the j-th recv at b from a. */
        int from = s->comm->rank, to = s->peer;
        CallKind other = s->kind == CALL_SEND ? CALL_RECV : CALL_SEND;
        long p = find_call(b, s->comm->clique, to, other, 1, from, earlier(b, i, 1));
        if (p < 0) {
            sim_detail("%s from rank %d %s rank %d (%zu elements) has no matching %s", call_names[s->kind], from,
                       s->kind == CALL_SEND ? "to" : "from", to, s->count, call_names[other]);
            return ncclInvalidUsage;
        }
        Call *q = &b.calls[p];
        if (q->count != s->count || q->type != s->type) {
            sim_detail("ncclSend/ncclRecv between ranks %d and %d disagree: %zu elements of type %d vs %zu of type %d",
                       from, to, s->count, (int)s->type, q->count, (int)q->type);
            return ncclInvalidArgument;
        }
        s->matched = q->matched = 1;
    }
    return ncclSuccess;
}

/** Checks that every rank of each clique posted the same collectives. */
static ncclResult_t match_collectives(Batch b)
{
    for (size_t i = 0; i < b.n; i++) {
        Call *x = &b.calls[i];
        if (x->kind < CALL_ALLREDUCE || x->matched) continue;
        const Clique *c = x->comm->clique;
        size_t j = earlier(b, i, 0);
        for (int r = 0; r < c->n; r++) {
            long p = find_call(b, c, r, x->kind, 0, -1, j);
            if (p < 0) {
                sim_detail("%s #%zu posted by rank %d is missing on rank %d (in one process, post every rank's call "
                           "between ncclGroupStart and ncclGroupEnd)",
                           call_names[x->kind], j, x->comm->rank, r);
                return ncclInvalidUsage;
            }
            Call *y = &b.calls[p];
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

/** Performs collective #j of clique c (every rank's call is present in b and agrees). */
static void perform_collective(Batch b, const Clique *c, size_t j, char *scratch)
{
    Call *calls[SIM_MAX_DEVICES] = { 0 };
    const void *ins[SIM_MAX_DEVICES];
    for (int r = 0; r < c->n; r++) {
        calls[r] = &b.calls[find_call(b, c, r, CALL_ALLREDUCE, 0, -1, j)];
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
    default: break;
    }
}

/** Moves the data of a matched batch (its send pointers are replaced by staged copies). */
static ncclResult_t move_data(Batch b)
{
    for (size_t i = 0; i < b.n; i++) b.calls[i].matched = 0;
    /* Scratch big enough for any call: n ranks' worth of data plus reduction room. */
    size_t most = 0;
    for (size_t i = 0; i < b.n; i++) {
        size_t bytes = b.calls[i].count * elem_size(b.calls[i].type) * (size_t)b.calls[i].comm->clique->n;
        most = bytes > most ? bytes : most;
    }
    char *scratch = malloc(2 * most + 1);
    if (!scratch) return ncclSystemError;
    for (size_t i = 0; i < b.n; i++) {
        Call *x = &b.calls[i];
        if (x->kind < CALL_ALLREDUCE || x->matched || x->comm->rank != 0) continue;
        perform_collective(b, x->comm->clique, earlier(b, i, 0), scratch);
    }
    /* Point-to-point: stage every send first, so exchanges in place read the old contents. */
    size_t total = 0;
    for (size_t i = 0; i < b.n; i++)
        if (b.calls[i].kind == CALL_SEND) total += b.calls[i].count * elem_size(b.calls[i].type);
    char *staged = malloc(total + 1);
    if (!staged) {
        free(scratch);
        return ncclSystemError;
    }
    size_t off = 0;
    for (size_t i = 0; i < b.n; i++) {
        Call *s = &b.calls[i];
        if (s->kind != CALL_SEND) continue;
        size_t bytes = s->count * elem_size(s->type);
        memcpy(staged + off, s->send, bytes);
        s->send = staged + off; /* the staged copy now stands for the send buffer */
        off += bytes;
    }
    for (size_t i = 0; i < b.n; i++) {
        Call *s = &b.calls[i];
        if (s->kind != CALL_SEND) continue;
        Call *q = &b.calls[find_call(b, s->comm->clique, s->peer, CALL_RECV, 1, s->comm->rank, earlier(b, i, 1))];
        sim_count_nccl(s->comm->device, q->comm->device, s->count * elem_size(s->type));
        memcpy(q->recv, s->send, s->count * elem_size(s->type));
    }
    free(staged);
    free(scratch);
    return ncclSuccess;
}

static ncclResult_t capture_group(Batch b);

static ncclResult_t execute_group(void)
{
    Batch b = { group.calls, group.n };
    ncclResult_t r = ncclSuccess;
    size_t captured = 0;
    for (size_t i = 0; i < b.n; i++) {
        b.calls[i].matched = 0;
        captured += sim_stream_capturing(b.calls[i].stream) != 0;
    }
    if ((r = match_point_to_point(b)) || (r = match_collectives(b))) goto done;
    if (captured && captured < b.n) {
        for (size_t i = 0; i < b.n; i++) sim_capture_invalidate(b.calls[i].stream);
        sim_detail("ncclGroupEnd: %zu of the group's %zu calls are on capturing streams: a group is captured "
                   "whole or not at all (every capture involved is invalidated)",
                   captured, b.n);
        r = ncclInvalidUsage;
        goto done;
    }
    if (captured) {
        r = capture_group(b);
        goto done;
    }
    /* Everything issued before the group must have run before data moves. */
    sim_drain_all();
    r = move_data(b);
done:
    group.n = 0;
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* groups captured in graphs                                                                   */

#define RDV_MAX_PARTS 64 /**< most capturing streams one captured group may span */

struct Rendezvous;

/** A participant's node. */
typedef struct {
    SimOp op;             /**< base */
    struct Rendezvous *x; /**< the group */
    int part;             /**< which participant */
} Arrive;

/**
 * A captured group: each capturing stream involved records one node (an Arrive) into its graph. When a
 * replay reaches its node it waits for the other participants' replays to reach theirs, running their
 * streams up to that point, and the last to arrive moves the data.
 */
typedef struct Rendezvous {
    Batch calls;                /**< a copy of the matched group */
    int parts;                  /**< participants: distinct capturing streams */
    int device[RDV_MAX_PARTS];  /**< each participant's device */
    int arrived[RDV_MAX_PARTS]; /**< whose replay waits at the node now */
    Arrive node[RDV_MAX_PARTS]; /**< each participant's node */
    unsigned long round;        /**< replays completed */
    int refs;                   /**< recorded nodes holding it */
} Rendezvous;

/** Replay streams waiting at a node (innermost last): running them further would pass their node. */
static struct {
    cudaStream_t s[RDV_MAX_PARTS * SIM_MAX_DEVICES];
    int n;
} blocked;

static void run_arrive(SimOp *op);

int sim_nccl_is_collective(const SimOp *op)
{
    return op->run == run_arrive;
}

/** The earliest queued replay of participant part's node of x on its device's streams (stream in *on), or NULL. */
static const SimOp *queued_arrival(const Rendezvous *x, int part, cudaStream_t *on)
{
    const SimOp *best = NULL;
    const int dev = x->device[part];
    for (size_t i = 0; i <= sim_machine.nstreams; i++) {
        cudaStream_t t = i < sim_machine.nstreams ? sim_machine.streams[i] : &sim_machine.dev[dev].legacy;
        if (t->device != dev) continue;
        for (const SimOp *q = t->head; q; q = q->next) {
            const SimOp *node = sim_graph_queued_node(q);
            if (node && node->run == run_arrive && ((const Arrive *)node)->x == x &&
                ((const Arrive *)node)->part == part) {
                if (!best || q->seq < best->seq) {
                    best = q;
                    *on = t;
                }
                break;
            }
        }
    }
    return best;
}

static int is_blocked(cudaStream_t s)
{
    for (int i = 0; i < blocked.n; i++)
        if (blocked.s[i] == s) return 1;
    return 0;
}

/** Moves the data of x's group (a copy of the calls, whose send pointers move_data replaces). */
static void rendezvous_perform(Rendezvous *x, int dev)
{
    Call *copy = malloc(x->calls.n * sizeof *copy);
    if (copy) memcpy(copy, x->calls.calls, x->calls.n * sizeof *copy);
    if (!copy || move_data((Batch){ copy, x->calls.n }) != ncclSuccess)
        sim_device_fault(dev, cudaErrorMemoryAllocation, "%s replayed from a graph: out of host scratch memory",
                         call_names[x->calls.calls[0].kind]);
    free(copy);
}

static void run_arrive(SimOp *op)
{
    Arrive *a = (Arrive *)op;
    Rendezvous *x = a->x;
    const SimOp *me = sim_graph_replaying();
    cudaStream_t mine = (cudaStream_t)(me ? me->stream : op->stream);
    const char *name = call_names[x->calls.calls[0].kind];
    const unsigned long round = x->round;
    char why[256] = "";
    if (x->arrived[a->part] || blocked.n == (int)(sizeof blocked.s / sizeof blocked.s[0])) {
        snprintf(why, sizeof why, "a second replay of the same rank's graph reached it first");
    } else {
        x->arrived[a->part] = 1;
        blocked.s[blocked.n++] = mine;
        for (int p = 0; p < x->parts && x->round == round && !why[0]; p++) {
            if (x->arrived[p]) continue;
            cudaStream_t on = NULL;
            const SimOp *peer = queued_arrival(x, p, &on);
            if (!peer)
                snprintf(why, sizeof why, "device %d has no replay of its graph queued that reaches it", x->device[p]);
            else if (is_blocked(on))
                snprintf(why, sizeof why, "device %d's stream %p waits at another collective before reaching it",
                         x->device[p], (void *)on);
            else { /* what the peer's stream runs meanwhile is counted as its own (in a graph or not) */
                sim_count_in_graph(-1);
                sim_drain_through(on, peer);
                sim_count_in_graph(1);
            }
        }
        blocked.n--;
        if (x->round == round && !why[0]) {
            int all = 1;
            for (int p = 0; p < x->parts; p++) all &= x->arrived[p];
            if (all) {
                rendezvous_perform(x, op->device);
                memset(x->arrived, 0, sizeof x->arrived);
                x->round++;
            } else {
                snprintf(why, sizeof why, "a rank's replay failed before reaching it");
            }
        }
        if (x->round == round) x->arrived[a->part] = 0;
    }
    if (why[0])
        sim_device_fault(op->device, cudaErrorLaunchFailure,
                         "%s captured in a graph, replayed on device %d (stream %p): %s; on a GPU this replay would "
                         "wait forever",
                         name, op->device, (void *)mine, why);
}

static void release_arrive(SimOp *op)
{
    Rendezvous *x = ((Arrive *)op)->x;
    if (--x->refs > 0) return;
    free(x->calls.calls);
    free(x);
}

/** Records a matched group whose calls are all on capturing streams: one node per capturing stream. */
static ncclResult_t capture_group(Batch b)
{
    Rendezvous *x = calloc(1, sizeof *x);
    cudaStream_t part[RDV_MAX_PARTS];
    if (!x || !(x->calls.calls = malloc(b.n * sizeof *b.calls))) {
        free(x);
        return ncclSystemError;
    }
    memcpy(x->calls.calls, b.calls, b.n * sizeof *b.calls);
    x->calls.n = b.n;
    for (size_t i = 0; i < b.n; i++) {
        int p = 0;
        while (p < x->parts && part[p] != b.calls[i].stream) p++;
        if (p == RDV_MAX_PARTS) {
            free(x->calls.calls);
            free(x);
            sim_detail("ncclGroupEnd: a captured group spans more than %d streams", RDV_MAX_PARTS);
            return ncclInvalidUsage;
        }
        if (p == x->parts) {
            part[x->parts] = b.calls[i].stream;
            x->device[x->parts++] = sim_stream_device(b.calls[i].stream);
        }
    }
    x->refs = x->parts;
    for (int p = 0; p < x->parts; p++) {
        x->node[p] = (Arrive){ .op = { .run = run_arrive, .release = release_arrive }, .x = x, .part = p };
        sim_enqueue(part[p], &x->node[p].op);
    }
    return ncclSuccess;
}
