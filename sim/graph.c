/**
 * \file graph.c
 * \brief CUDA graphs on the simulated device: the work a stream capture recorded, instantiated and replayed.
 *
 * A captured graph is the list of operations that were queued on the
 * capturing stream, in issue order: the very SimOps the stream would have
 * run, built and checked when they were issued (kernel arguments copied by
 * value, GEMM shapes and scalars, copy and fill pointers). Running a SimOp
 * leaves it intact, so a graph replays any number of times; its operations
 * are released only when the last of the graph, its instantiations and
 * their queued launches lets go of them. The nodes of a captured stream
 * form a chain, so replaying them in recorded order is the graph's order.
 *
 * cudaGraphLaunch queues the list on the launch stream as one operation per
 * node, all with the launch's issue number, so a stream stops at a device
 * fault between nodes as it does between operations, and a replay can stop
 * at an NCCL collective (nccl.c) while the other ranks' replays catch up.
 * Launching on a capturing stream records one operation that replays the
 * list at once (a child graph); a graph holding a collective cannot be one.
 */
#include "sim_internal.h"

#include <stdlib.h>

#define SIM_GRAPH_MAGIC 0x47524148u /**< "GRAH": a live cudaGraph_t */
#define SIM_EXEC_MAGIC  0x47455845u /**< "GEXE": a live cudaGraphExec_t */

/** The recorded operations, shared by a graph, its instantiations and their queued launches. */
typedef struct {
    SimOp *head; /**< first recorded operation */
    SimOp *tail; /**< last recorded operation */
    int device;  /**< device whose stream recorded them */
    int refs;    /**< holders: the graph, each instantiation, each queued launch */
} OpList;

/** A captured graph. */
struct CUgraph_st {
    unsigned int magic; /**< SIM_GRAPH_MAGIC while alive */
    OpList *ops;        /**< what was recorded */
};

/** An instantiated graph. */
struct CUgraphExec_st {
    unsigned int magic; /**< SIM_EXEC_MAGIC while alive */
    OpList *ops;        /**< the graph's operations, shared */
};

/** Drops one reference; the last releases every operation. */
static void ops_drop(OpList *l)
{
    if (--l->refs > 0) return;
    while (l->head) {
        SimOp *op = l->head;
        l->head = op->next;
        op->release(op);
    }
    free(l);
}

cudaGraph_t sim_graph_new(int dev)
{
    cudaGraph_t g = calloc(1, sizeof *g);
    OpList *l = calloc(1, sizeof *l);
    if (!g || !l) {
        free(g);
        free(l);
        return NULL;
    }
    l->device = dev;
    l->refs = 1;
    g->magic = SIM_GRAPH_MAGIC;
    g->ops = l;
    return g;
}

void sim_graph_append(cudaGraph_t g, SimOp *op)
{
    op->next = NULL;
    if (g->ops->tail)
        g->ops->tail->next = op;
    else
        g->ops->head = op;
    g->ops->tail = op;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    if (!graph || graph->magic != SIM_GRAPH_MAGIC)
        return sim_error(cudaErrorInvalidValue, "cudaGraphDestroy: %p is not a live graph", (void *)graph);
    graph->magic = 0;
    ops_drop(graph->ops);
    free(graph);
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    if (!exec || !graph || graph->magic != SIM_GRAPH_MAGIC)
        return sim_error(cudaErrorInvalidValue, "cudaGraphInstantiate: NULL exec or %p is not a live graph",
                         (void *)graph);
    if (flags != 0)
        return sim_error(cudaErrorInvalidValue, "cudaGraphInstantiate: flags %llu (only 0 is simulated)", flags);
    cudaGraphExec_t x = calloc(1, sizeof *x);
    if (!x) return sim_error(cudaErrorMemoryAllocation, "cudaGraphInstantiate: out of host memory");
    x->magic = SIM_EXEC_MAGIC;
    x->ops = graph->ops;
    x->ops->refs++;
    *exec = x;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    if (!exec || exec->magic != SIM_EXEC_MAGIC)
        return sim_error(cudaErrorInvalidValue, "cudaGraphExecDestroy: %p is not a live graph exec", (void *)exec);
    exec->magic = 0;
    ops_drop(exec->ops);
    free(exec);
    return cudaSuccess;
}

/** A queued launch of an instantiated graph as a child of a capture: replays the whole list at once. */
typedef struct {
    SimOp op;    /**< base */
    OpList *ops; /**< the operations to replay (one reference held) */
} LaunchOp;

/** One node of a launch queued on a stream. */
typedef struct {
    SimOp op;    /**< base */
    SimOp *node; /**< the recorded operation (NULL: an empty graph's launch) */
    OpList *ops; /**< the list it belongs to (one reference held per queued node) */
    int first;   /**< the launch's first node: counts the replay */
} NodeOp;

/** The queued node running now (innermost), for sim_graph_replaying(). */
static const SimOp *replaying;

static void run_node(SimOp *op)
{
    NodeOp *n = (NodeOp *)op;
    const SimOp *outer = replaying;
    if (n->first) { /* one replay counted, by its first node */
        sim_count_graph(1);
        sim_count_graph(-1);
    }
    replaying = op;
    sim_count_in_graph(1);
    if (n->node) n->node->run(n->node);
    sim_count_in_graph(-1);
    replaying = outer;
}

static void release_node(SimOp *op)
{
    ops_drop(((NodeOp *)op)->ops);
    free(op);
}

const SimOp *sim_graph_replaying(void)
{
    return replaying;
}

const SimOp *sim_graph_queued_node(const SimOp *queued)
{
    return queued->run == run_node ? ((const NodeOp *)queued)->node : NULL;
}

static void run_launch(SimOp *op)
{
    sim_count_graph(1);
    for (SimOp *node = ((LaunchOp *)op)->ops->head; node; node = node->next) {
        if (sim_device_sticky(op->device) != cudaSuccess) break;
        node->run(node);
    }
    sim_count_graph(-1);
}

static void release_launch(SimOp *op)
{
    ops_drop(((LaunchOp *)op)->ops);
    free(op);
}

/** Records a launch of exec into the capture of s as one child operation. */
static cudaError_t launch_into_capture(cudaGraphExec_t exec, cudaStream_t s)
{
    for (const SimOp *node = exec->ops->head; node; node = node->next)
        if (sim_nccl_is_collective(node))
            return sim_refuse_on_capture("cudaGraphLaunch", s,
                                         "a graph holding an NCCL collective launched as a child graph");
    LaunchOp *l = malloc(sizeof *l);
    if (!l) return sim_error(cudaErrorMemoryAllocation, "cudaGraphLaunch: out of host memory");
    l->op.run = run_launch;
    l->op.release = release_launch;
    l->ops = exec->ops;
    l->ops->refs++;
    sim_enqueue(s, &l->op);
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    if (!exec || exec->magic != SIM_EXEC_MAGIC)
        return sim_error(cudaErrorInvalidValue, "cudaGraphLaunch: %p is not a live graph exec", (void *)exec);
    cudaStream_t s = sim_resolve_stream_on("cudaGraphLaunch", stream, exec->ops->device);
    if (!s) return cudaPeekAtLastError();
    const cudaError_t sticky = sim_device_sticky(exec->ops->device);
    if (sticky != cudaSuccess)
        return sim_error(sticky, "cudaGraphLaunch: device %d has failed earlier (cudaDeviceReset clears it)",
                         exec->ops->device);
    if (sim_stream_capturing(s)) return launch_into_capture(exec, s);
    /* one queued node per recorded operation (one for an empty graph), chained in order */
    SimOp *first = NULL, **link = &first;
    SimOp *node = exec->ops->head;
    do {
        NodeOp *n = malloc(sizeof *n);
        if (!n) {
            while (first) {
                SimOp *next = first->next;
                release_node(first);
                first = next;
            }
            return sim_error(cudaErrorMemoryAllocation, "cudaGraphLaunch: out of host memory");
        }
        n->op.run = run_node;
        n->op.release = release_node;
        n->op.next = NULL;
        n->node = node;
        n->ops = exec->ops;
        n->ops->refs++;
        n->first = first == NULL;
        *link = &n->op;
        link = &n->op.next;
        node = node ? node->next : NULL;
    } while (node);
    sim_enqueue_chain(s, first);
    return cudaSuccess;
}
