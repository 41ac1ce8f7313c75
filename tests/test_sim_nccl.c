/**
 * \file test_sim_nccl.c
 * \brief The simulated NCCL over 2–8 simulated devices: send/recv permutations, collectives, mismatches,
 *        collectives captured in CUDA graphs and replayed (rendezvous across the ranks' replays).
 */
#include "check.h"
#include "nccl.h"
#include "sim.h"
#include "sim_counters.h"

#include <stdlib.h>
#include <string.h>

enum { MAXR = 8, COUNT = 37 };

static TestRng rng;

/** A clique of n ranks with per-rank device buffers of `elems` floats. */
typedef struct {
    int n;
    ncclComm_t comm[MAXR];
    cudaStream_t stream[MAXR];
    float *send[MAXR], *recv[MAXR];
    float host[MAXR][COUNT * MAXR];
} Clique;

static void clique_open(Clique *c, int n)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    assert_int_equal(ncclCommInitAll(c->comm, n, NULL), ncclSuccess);
    for (int r = 0; r < n; r++) {
        int dev = -1, rank = -1, count = 0;
        assert_int_equal(ncclCommCuDevice(c->comm[r], &dev), ncclSuccess);
        assert_int_equal(ncclCommUserRank(c->comm[r], &rank), ncclSuccess);
        assert_int_equal(ncclCommCount(c->comm[r], &count), ncclSuccess);
        assert_int_equal(dev, r);
        assert_int_equal(rank, r);
        assert_int_equal(count, n);
        assert_int_equal(cudaSetDevice(r), cudaSuccess);
        assert_int_equal(cudaStreamCreate(&c->stream[r]), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&c->send[r], sizeof c->host[r]), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&c->recv[r], sizeof c->host[r]), cudaSuccess);
        test_rng_fill(&rng, c->host[r], COUNT * MAXR, -1.0f, 1.0f);
        assert_int_equal(cudaMemcpy(c->send[r], c->host[r], sizeof c->host[r], cudaMemcpyHostToDevice), cudaSuccess);
        assert_int_equal(cudaMemset(c->recv[r], 0xff, sizeof c->host[r]), cudaSuccess);
    }
}

static void clique_close(Clique *c)
{
    for (int r = 0; r < c->n; r++) {
        assert_int_equal(cudaSetDevice(r), cudaSuccess);
        cudaStreamDestroy(c->stream[r]);
        cudaFree(c->send[r]);
        cudaFree(c->recv[r]);
        assert_int_equal(ncclCommDestroy(c->comm[r]), ncclSuccess);
    }
    cudaSetDevice(0);
}

static void fetch(const Clique *c, int r, float *out, size_t elems)
{
    assert_int_equal(cudaMemcpy(out, c->recv[r], elems * sizeof *out, cudaMemcpyDeviceToHost), cudaSuccess);
}

/** Random permutation of 0..n−1. */
static void permutation(int *p, int n)
{
    for (int i = 0; i < n; i++) p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)test_rng_uniform(&rng, 0.0f, (float)(i + 1));
        j = j > i ? i : j;
        int t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static void send_recv_permutations_2_to_8_ranks(void **state)
{
    (void)state;
    for (int n = 2; n <= MAXR; n++) {
        for (int trial = 0; trial < 3; trial++) {
            Clique c;
            clique_open(&c, n);
            int dst[MAXR], src[MAXR];
            permutation(dst, n);
            for (int r = 0; r < n; r++) src[dst[r]] = r;
            /* Receives posted before sends, in reverse rank order: matching must not depend on order. */
            assert_int_equal(ncclGroupStart(), ncclSuccess);
            for (int r = n - 1; r >= 0; r--)
                assert_int_equal(ncclRecv(c.recv[r], COUNT, ncclFloat32, src[r], c.comm[r], c.stream[r]), ncclSuccess);
            for (int r = 0; r < n; r++)
                assert_int_equal(ncclSend(c.send[r], COUNT, ncclFloat32, dst[r], c.comm[r], c.stream[r]), ncclSuccess);
            assert_int_equal(ncclGroupEnd(), ncclSuccess);
            for (int r = 0; r < n; r++) {
                float got[COUNT];
                fetch(&c, r, got, COUNT);
                check_close("send/recv", got, c.host[src[r]], COUNT, 0.0, 0.0);
            }
            clique_close(&c);
        }
    }
}

static void all_to_all_exchange_in_place(void **state)
{
    (void)state;
    int n = 4;
    Clique c;
    clique_open(&c, n);
    /* Each rank sends chunk d of its buffer to rank d and receives rank s's chunk r into chunk s, in place. */
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    for (int r = 0; r < n; r++) {
        for (int d = 0; d < n; d++) {
            assert_int_equal(ncclSend(c.send[r] + d * COUNT, COUNT, ncclFloat32, d, c.comm[r], c.stream[r]),
                             ncclSuccess);
            assert_int_equal(ncclRecv(c.send[r] + d * COUNT, COUNT, ncclFloat32, d, c.comm[r], c.stream[r]),
                             ncclSuccess);
        }
    }
    assert_int_equal(ncclGroupEnd(), ncclSuccess);
    for (int r = 0; r < n; r++) {
        float got[COUNT * 4];
        assert_int_equal(cudaMemcpy(got, c.send[r], sizeof got, cudaMemcpyDeviceToHost), cudaSuccess);
        for (int s = 0; s < n; s++) check_close("all-to-all", got + s * COUNT, c.host[s] + r * COUNT, COUNT, 0.0, 0.0);
    }
    clique_close(&c);
}

static void all_reduce_sum_and_max_2_to_8_ranks(void **state)
{
    (void)state;
    for (int n = 2; n <= MAXR; n++) {
        for (int op = 0; op < 2; op++) {
            Clique c;
            clique_open(&c, n);
            float want[COUNT], got[COUNT];
            for (int i = 0; i < COUNT; i++) {
                double acc = c.host[0][i];
                for (int r = 1; r < n; r++)
                    acc = op == 0 ? acc + c.host[r][i] : (c.host[r][i] > acc ? c.host[r][i] : acc);
                want[i] = (float)acc;
            }
            assert_int_equal(ncclGroupStart(), ncclSuccess);
            for (int r = 0; r < n; r++)
                assert_int_equal(ncclAllReduce(c.send[r], c.recv[r], COUNT, ncclFloat32, op == 0 ? ncclSum : ncclMax,
                                               c.comm[r], c.stream[r]),
                                 ncclSuccess);
            assert_int_equal(ncclGroupEnd(), ncclSuccess);
            for (int r = 0; r < n; r++) {
                fetch(&c, r, got, COUNT);
                check_close("all-reduce", got, want, COUNT, 1e-6, 1e-6);
            }
            clique_close(&c);
        }
    }
}

static void all_reduce_in_place_int32(void **state)
{
    (void)state;
    int n = 3;
    ncclComm_t comm[3];
    int *buf[3];
    assert_int_equal(ncclCommInitAll(comm, n, NULL), ncclSuccess);
    for (int r = 0; r < n; r++) {
        int h[4] = { r, -r, 10 * r, 7 };
        cudaSetDevice(r);
        assert_int_equal(cudaMalloc((void **)&buf[r], sizeof h), cudaSuccess);
        assert_int_equal(cudaMemcpy(buf[r], h, sizeof h, cudaMemcpyHostToDevice), cudaSuccess);
    }
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    for (int r = 0; r < n; r++)
        assert_int_equal(ncclAllReduce(buf[r], buf[r], 4, ncclInt32, ncclSum, comm[r], NULL), ncclSuccess);
    assert_int_equal(ncclGroupEnd(), ncclSuccess);
    for (int r = 0; r < n; r++) {
        int h[4], want[4] = { 3, -3, 30, 21 };
        assert_int_equal(cudaMemcpy(h, buf[r], sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_memory_equal(h, want, sizeof h);
        cudaSetDevice(r);
        cudaFree(buf[r]);
        ncclCommDestroy(comm[r]);
    }
    cudaSetDevice(0);
}

static void all_gather_broadcast_reduce_scatter(void **state)
{
    (void)state;
    for (int n = 2; n <= MAXR; n += 3) {
        Clique c;
        clique_open(&c, n);
        float got[COUNT * MAXR], want[COUNT * MAXR];
        /* all-gather */
        assert_int_equal(ncclGroupStart(), ncclSuccess);
        for (int r = 0; r < n; r++)
            assert_int_equal(ncclAllGather(c.send[r], c.recv[r], COUNT, ncclFloat32, c.comm[r], c.stream[r]),
                             ncclSuccess);
        assert_int_equal(ncclGroupEnd(), ncclSuccess);
        for (int r = 0; r < n; r++) memcpy(want + r * COUNT, c.host[r], COUNT * sizeof(float));
        for (int r = 0; r < n; r++) {
            fetch(&c, r, got, (size_t)n * COUNT);
            check_close("all-gather", got, want, (size_t)n * COUNT, 0.0, 0.0);
        }
        /* broadcast from the last rank */
        assert_int_equal(ncclGroupStart(), ncclSuccess);
        for (int r = 0; r < n; r++)
            assert_int_equal(ncclBroadcast(c.send[r], c.recv[r], COUNT, ncclFloat32, n - 1, c.comm[r], c.stream[r]),
                             ncclSuccess);
        assert_int_equal(ncclGroupEnd(), ncclSuccess);
        for (int r = 0; r < n; r++) {
            fetch(&c, r, got, COUNT);
            check_close("broadcast", got, c.host[n - 1], COUNT, 0.0, 0.0);
        }
        /* reduce-scatter: rank r gets Σ_s send_s[r·COUNT ...] */
        assert_int_equal(ncclGroupStart(), ncclSuccess);
        for (int r = 0; r < n; r++)
            assert_int_equal(
                ncclReduceScatter(c.send[r], c.recv[r], COUNT, ncclFloat32, ncclSum, c.comm[r], c.stream[r]),
                ncclSuccess);
        assert_int_equal(ncclGroupEnd(), ncclSuccess);
        for (int r = 0; r < n; r++) {
            for (int i = 0; i < COUNT; i++) {
                double s = 0.0;
                for (int q = 0; q < n; q++) s += c.host[q][r * COUNT + i];
                want[i] = (float)s;
            }
            fetch(&c, r, got, COUNT);
            check_close("reduce-scatter", got, want, COUNT, 1e-6, 1e-6);
        }
        clique_close(&c);
    }
}

static void mismatches_and_unmatched_calls(void **state)
{
    (void)state;
    Clique c;
    clique_open(&c, 2);
    /* Counts differ between a send and its receive. */
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    assert_int_equal(ncclSend(c.send[0], COUNT, ncclFloat32, 1, c.comm[0], NULL), ncclSuccess);
    assert_int_equal(ncclRecv(c.recv[1], COUNT - 1, ncclFloat32, 0, c.comm[1], NULL), ncclSuccess);
    assert_int_equal(ncclGroupEnd(), ncclInvalidArgument);
    /* Types differ. */
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    assert_int_equal(ncclSend(c.send[0], COUNT, ncclFloat32, 1, c.comm[0], NULL), ncclSuccess);
    assert_int_equal(ncclRecv(c.recv[1], COUNT, ncclInt32, 0, c.comm[1], NULL), ncclSuccess);
    assert_int_equal(ncclGroupEnd(), ncclInvalidArgument);
    /* A send nobody receives. */
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    assert_int_equal(ncclSend(c.send[0], COUNT, ncclFloat32, 1, c.comm[0], NULL), ncclSuccess);
    assert_int_equal(ncclGroupEnd(), ncclInvalidUsage);
    assert_non_null(strstr(ncclGetLastError(c.comm[0]), "no matching ncclRecv"));
    /* All-reduce with different counts on the two ranks. */
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    assert_int_equal(ncclAllReduce(c.send[0], c.recv[0], COUNT, ncclFloat32, ncclSum, c.comm[0], NULL), ncclSuccess);
    assert_int_equal(ncclAllReduce(c.send[1], c.recv[1], COUNT - 2, ncclFloat32, ncclSum, c.comm[1], NULL),
                     ncclSuccess);
    assert_int_equal(ncclGroupEnd(), ncclInvalidArgument);
    /* A collective posted by one rank only (outside a group: a group of one). */
    assert_int_equal(ncclAllReduce(c.send[0], c.recv[0], COUNT, ncclFloat32, ncclSum, c.comm[0], NULL),
                     ncclInvalidUsage);
    /* Bad arguments caught at the call. */
    assert_int_equal(ncclSend(c.send[0], COUNT, ncclFloat32, 2, c.comm[0], NULL), ncclInvalidArgument);
    assert_int_equal(ncclSend(c.send[1], COUNT, ncclFloat32, 1, c.comm[0], NULL),
                     ncclInvalidArgument); /* device 1 memory on rank 0 */
    assert_int_equal(ncclSend(c.host[0], COUNT, ncclFloat32, 1, c.comm[0], NULL),
                     ncclInvalidArgument); /* host memory */
    assert_int_equal(ncclAllGather(c.send[0], c.recv[0], COUNT * MAXR, ncclFloat32, c.comm[0], NULL),
                     ncclInvalidArgument);
    assert_int_equal(ncclGroupEnd(), ncclInvalidUsage);
    assert_string_equal(ncclGetErrorString(ncclInvalidUsage), "invalid usage");
    /* Nothing moved: receive buffers still hold their poison. */
    float got[COUNT];
    fetch(&c, 1, got, COUNT);
    for (int i = 0; i < COUNT; i++) assert_true(got[i] != got[i]);
    clique_close(&c);
}

/* Captures, on each rank's stream, a SUM all-reduce of send into recv and a ring exchange of send into recv + COUNT
 * (each rank sends to r + 1, receives from r − 1) in one group; instantiates each rank's graph. */
static void capture_reduce_and_ring(Clique *c, cudaGraphExec_t *exec)
{
    int n = c->n;
    for (int r = 0; r < n; r++) {
        assert_int_equal(cudaSetDevice(r), cudaSuccess);
        assert_int_equal(cudaStreamBeginCapture(c->stream[r], cudaStreamCaptureModeGlobal), cudaSuccess);
    }
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    for (int r = 0; r < n; r++) {
        assert_int_equal(ncclAllReduce(c->send[r], c->recv[r], COUNT, ncclFloat32, ncclSum, c->comm[r], c->stream[r]),
                         ncclSuccess);
        assert_int_equal(ncclSend(c->send[r], COUNT, ncclFloat32, (r + 1) % n, c->comm[r], c->stream[r]), ncclSuccess);
        assert_int_equal(ncclRecv(c->recv[r] + COUNT, COUNT, ncclFloat32, (r + n - 1) % n, c->comm[r], c->stream[r]),
                         ncclSuccess);
    }
    assert_int_equal(ncclGroupEnd(), ncclSuccess);
    for (int r = 0; r < n; r++) {
        cudaGraph_t g = NULL;
        assert_int_equal(cudaSetDevice(r), cudaSuccess);
        assert_int_equal(cudaStreamEndCapture(c->stream[r], &g), cudaSuccess);
        assert_int_equal(cudaGraphInstantiate(&exec[r], g, 0), cudaSuccess);
        assert_int_equal(cudaGraphDestroy(g), cudaSuccess);
    }
}

/* Host sums of every rank's send buffer, summed in double and rounded once (what the simulator computes). */
static void host_sum(const Clique *c, float *want)
{
    for (int i = 0; i < COUNT; i++) {
        double acc = 0.0;
        for (int r = 0; r < c->n; r++) acc += c->host[r][i];
        want[i] = (float)acc;
    }
}

/* A group captured on 2 and 4 ranks' streams: nothing moves at capture; two replays with new inputs in
 * between give the exact host sum and ring exchange; the counters see one graph launch per rank and replay
 * and the ring all-reduce's 2(n−1)/n·bytes plus the exchange's bytes on each link. */
static void captured_all_reduce_replays(void **state)
{
    (void)state;
    for (int n = 2; n <= 4; n += 2) {
        Clique c;
        cudaGraphExec_t exec[MAXR];
        clique_open(&c, n);
        capture_reduce_and_ring(&c, exec);
        float got[2 * COUNT], want[COUNT];
        fetch(&c, 0, got, COUNT);
        for (int i = 0; i < COUNT; i++) assert_true(got[i] != got[i]); /* still the poison: only recorded */
        for (int replay = 0; replay < 2; replay++) {
            for (int r = 0; r < n; r++) { /* new inputs, uploaded eagerly before the replay */
                test_rng_fill(&rng, c.host[r], COUNT, -2.0f, 2.0f);
                assert_int_equal(cudaSetDevice(r), cudaSuccess);
                assert_int_equal(cudaMemcpy(c.send[r], c.host[r], COUNT * sizeof(float), cudaMemcpyHostToDevice),
                                 cudaSuccess);
                assert_int_equal(cudaMemset(c.recv[r], 0xff, 2 * COUNT * sizeof(float)), cudaSuccess);
            }
            sim_counters_start();
            for (int r = 0; r < n; r++) assert_int_equal(cudaGraphLaunch(exec[r], c.stream[r]), cudaSuccess);
            SimStepCounters k;
            sim_counters_stop(&k);
            assert_int_equal(k.graph_launches, 0); /* queued, not run: nothing waited for the devices */
            sim_counters_start();
            for (int r = n - 1; r >= 0; r--) { /* the last rank first: its replay waits for the others' */
                assert_int_equal(cudaSetDevice(r), cudaSuccess);
                assert_int_equal(cudaStreamSynchronize(c.stream[r]), cudaSuccess);
            }
            sim_counters_stop(&k);
            assert_int_equal(k.graph_launches, (unsigned long long)n);
            for (int r = 0; r < n; r++)
                for (int d = 0; d < n; d++) {
                    unsigned long long link = d == (r + 1) % n ? 2ull * (n - 1) * COUNT * 4 / n + COUNT * 4 : 0;
                    assert_int_equal(k.nccl_bytes[r][d], link);
                }
            host_sum(&c, want);
            for (int r = 0; r < n; r++) {
                assert_int_equal(cudaSetDevice(r), cudaSuccess);
                fetch(&c, r, got, 2 * COUNT);
                check_close("captured all-reduce", got, want, COUNT, 0.0, 0.0);
                check_close("captured ring exchange", got + COUNT, c.host[(r + n - 1) % n], COUNT, 0.0, 0.0);
            }
        }
        for (int r = 0; r < n; r++) assert_int_equal(cudaGraphExecDestroy(exec[r]), cudaSuccess);
        clique_close(&c);
    }
}

/* A replay on some ranks only: the waiting rank's device faults with a sentence naming the collective and the
 * missing device instead of hanging; a group mixing captured and eager streams is refused (invalid usage) and
 * invalidates the capture; a graph holding a collective cannot become a child graph. */
static void captured_misuse_reported(void **state)
{
    (void)state;
    Clique c;
    cudaGraphExec_t exec[MAXR];
    clique_open(&c, 2);
    capture_reduce_and_ring(&c, exec);
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    assert_int_equal(cudaGraphLaunch(exec[0], c.stream[0]), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(c.stream[0]), cudaErrorLaunchFailure);
    assert_non_null(strstr(sim_last_detail(), "ncclAllReduce captured in a graph"));
    assert_non_null(strstr(sim_last_detail(), "device 1 has no replay"));
    for (int r = 0; r < 2; r++) assert_int_equal(cudaGraphExecDestroy(exec[r]), cudaSuccess);
    assert_int_equal(cudaDeviceReset(), cudaSuccess); /* device 0's fault and memory go */
    assert_int_equal(cudaSetDevice(1), cudaSuccess);
    cudaStreamDestroy(c.stream[1]);
    cudaFree(c.send[1]);
    cudaFree(c.recv[1]);
    for (int r = 0; r < 2; r++) assert_int_equal(ncclCommDestroy(c.comm[r]), ncclSuccess);

    clique_open(&c, 2);
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    assert_int_equal(cudaStreamBeginCapture(c.stream[0], cudaStreamCaptureModeRelaxed), cudaSuccess);
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    for (int r = 0; r < 2; r++)
        assert_int_equal(ncclAllReduce(c.send[r], c.recv[r], COUNT, ncclFloat32, ncclSum, c.comm[r], c.stream[r]),
                         ncclSuccess);
    assert_int_equal(ncclGroupEnd(), ncclInvalidUsage);
    assert_non_null(strstr(sim_last_detail(), "captured whole or not at all"));
    cudaGraph_t g = NULL;
    assert_int_equal(cudaStreamEndCapture(c.stream[0], &g), cudaErrorStreamCaptureInvalidated);
    assert_null(g);

    capture_reduce_and_ring(&c, exec);
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    assert_int_equal(cudaStreamBeginCapture(c.stream[0], cudaStreamCaptureModeRelaxed), cudaSuccess);
    assert_int_equal(cudaGraphLaunch(exec[0], c.stream[0]), cudaErrorStreamCaptureUnsupported);
    assert_int_equal(cudaStreamEndCapture(c.stream[0], &g), cudaErrorStreamCaptureInvalidated);
    for (int r = 0; r < 2; r++) assert_int_equal(cudaGraphExecDestroy(exec[r]), cudaSuccess);
    clique_close(&c);
}

static int setup(void **state)
{
    (void)state;
    setenv("SIM_QUIET", "1", 1);
    setenv("SIM_DEVICE_COUNT", "8", 1);
    test_rng_seed(&rng, "sim_nccl");
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(send_recv_permutations_2_to_8_ranks), cmocka_unit_test(all_to_all_exchange_in_place),
        cmocka_unit_test(all_reduce_sum_and_max_2_to_8_ranks), cmocka_unit_test(all_reduce_in_place_int32),
        cmocka_unit_test(all_gather_broadcast_reduce_scatter), cmocka_unit_test(mismatches_and_unmatched_calls),
        cmocka_unit_test(captured_all_reduce_replays),         cmocka_unit_test(captured_misuse_reported),
    };
    return cmocka_run_group_tests_name("sim_nccl", tests, setup, NULL);
}
