/**
 * \file test_sim_counters.c
 * \brief The device counters (sim_counters.h) against hand-counted kernels, GEMMs, copies,
 *        synchronisations, graphs, NCCL exchanges and the memory high-water mark.
 *
 * Every expected number is worked out from the kernel's source (threads × accesses × width),
 * never taken from an earlier run. The kernels (tests/sim/counted/) are built with the same
 * instrumentation as `make profile-fast` builds kernels/.
 */
#include "check.h"
#include "counted_kernels.h"
#include "cublas_v2.h"
#include "nccl.h"
#include "sim.h"
#include "sim_counters.h"

#include <stdlib.h>
#include <string.h>

enum { W1, W2, W4, W8, W16, WOTHER };

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    assert_int_equal(cudaMalloc(&p, bytes), cudaSuccess);
    assert_int_equal(cudaMemset(p, 0, bytes), cudaSuccess);
    return p;
}

/** The only record of the interval just stopped (asserts there is exactly one). */
static const SimLaunchRecord *only_record(void)
{
    size_t n = 0;
    const SimLaunchRecord *r = sim_counters_records(&n);
    assert_int_equal(n, 1);
    return r;
}

static void float4_loads_count_n_times_4_bytes_at_width_16(void **state)
{
    (void)state;
    const int n = 1000; /* 250 threads of 4 blocks × 64 read; 6 threads idle */
    float *x = dev_alloc(n * sizeof(float)), *out = dev_alloc(n / 4 * sizeof(float));
    SimStepCounters c;
    sim_counters_start();
    assert_int_equal(launch_count_float4(x, out, n, 0), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess);
    sim_counters_stop(&c);
    const SimLaunchRecord *r = only_record();
    assert_string_equal(r->name, "count_float4");
    assert_int_equal(r->kind, SIM_REC_KERNEL);
    assert_int_equal(r->grid.x, 4);
    assert_int_equal(r->block.x, 64);
    assert_int_equal(r->read[W16], (unsigned long long)n * 4);
    assert_int_equal(sim_counters_sum(r->read), (unsigned long long)n * 4);
    assert_int_equal(r->written[W4], (unsigned long long)n);
    assert_int_equal(sim_counters_sum(r->written), (unsigned long long)n);
    assert_int_equal(r->distinct, (unsigned long long)n * 4 + n);
    assert_int_equal(c.kernels, 1);
    assert_int_equal(c.host_syncs, 1);
    assert_int_equal(c.distinct_read, (unsigned long long)n * 4);
    /* x is only read: it is the interval's read-only data; out is written */
    assert_int_equal(c.ro_read, (unsigned long long)n * 4);
    assert_int_equal(c.ro_read_width[W16], (unsigned long long)n * 4);
    cudaFree(x);
    cudaFree(out);
}

static void bf16_byte_and_uint2_widths(void **state)
{
    (void)state;
    const int n = 333;
    unsigned short *xb = dev_alloc(n * 2);
    uint2 *x2 = dev_alloc(n * sizeof(uint2));
    float *outf = dev_alloc(n * sizeof(float));
    unsigned int *outu = dev_alloc(n * sizeof(unsigned int));
    unsigned char *bytes = dev_alloc(n);
    SimStepCounters c;
    sim_counters_start();
    assert_int_equal(launch_count_bf16(xb, outf, n, 0), cudaSuccess);
    assert_int_equal(launch_count_uint2(x2, outu, bytes, n, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    sim_counters_stop(&c);
    size_t nr = 0;
    const SimLaunchRecord *r = sim_counters_records(&nr);
    assert_int_equal(nr, 2);
    assert_int_equal(r[0].read[W2], 2ull * n);
    assert_int_equal(sim_counters_sum(r[0].read), 2ull * n);
    assert_int_equal(r[0].written[W4], 4ull * n);
    assert_int_equal(r[1].read[W8], 8ull * n);
    assert_int_equal(sim_counters_sum(r[1].read), 8ull * n);
    assert_int_equal(r[1].written[W4], 4ull * n);
    assert_int_equal(r[1].written[W1], (unsigned long long)n);
    assert_int_equal(c.read[W2] + c.read[W8], 10ull * n);
    assert_int_equal(c.kernels, 2);
    assert_int_equal(c.host_syncs, 1);
    cudaFree(xb);
    cudaFree(x2);
    cudaFree(outf);
    cudaFree(outu);
    cudaFree(bytes);
}

static void broadcast_reads_distinct_bytes_and_atomics(void **state)
{
    (void)state;
    float *x = dev_alloc(64 * sizeof(float)), *out = dev_alloc(sizeof(float));
    int *counter = dev_alloc(sizeof(int));
    SimStepCounters c;
    sim_counters_start();
    assert_int_equal(launch_count_broadcast(x, counter, out, 0), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess);
    sim_counters_stop(&c);
    const SimLaunchRecord *r = only_record();
    /* 64 threads × 4 floats, plus the atomic's read of the counter by each thread */
    assert_int_equal(r->read[W4], 64ull * 16 + 64 * 4);
    assert_int_equal(r->written[W4], 64ull * 4 + 4);
    assert_int_equal(r->distinct, 16ull + 4 + 4);
    assert_int_equal(c.distinct_read, 16ull + 4);
    assert_int_equal(c.ro_distinct, 16ull);
    int host = 0;
    assert_int_equal(cudaMemcpy(&host, counter, sizeof host, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_int_equal(host, 64);
    cudaFree(x);
    cudaFree(out);
    cudaFree(counter);
}

/* Stages in one launch (kernels/stage.cuh): the consumers see every producer's writes, the record counts one
 * dependency per stage waited on, and the counters are zero again for the next launch. */
static void stages_inside_a_launch(void **state)
{
    (void)state;
    enum { P = 5, Q = 3 };
    float *x = dev_alloc(P * 64 * sizeof(float)), *sums = dev_alloc(Q * sizeof(float));
    int *counters = dev_alloc(4 * sizeof(int));
    for (int run = 0; run < 2; run++) { /* the second run finds the counters the first left */
        assert_int_equal(cudaMemset(sums, 0xff, Q * sizeof(float)), cudaSuccess);
        SimStepCounters c;
        sim_counters_start();
        assert_int_equal(launch_count_staged(x, sums, counters, P, Q, 0, 0), cudaSuccess);
        assert_int_equal(cudaStreamSynchronize(0), cudaSuccess);
        sim_counters_stop(&c);
        assert_int_equal(only_record()->stages, 1);
        float host[Q];
        int zero[4];
        assert_int_equal(cudaMemcpy(host, sums, sizeof host, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemcpy(zero, counters, sizeof zero, cudaMemcpyDeviceToHost), cudaSuccess);
        for (int q = 0; q < Q; q++) assert_float_equal(host[q], (float)(P * 64) * (P * 64 + 1) / 2, 0.0f);
        for (int i = 0; i < 4; i++) assert_int_equal(zero[i], 0);
    }
    /* a block that waits for a later ticket is a fault naming the spin-wait, not a hang */
    assert_int_equal(launch_count_staged(x, sums, counters, P, Q, 1, 0), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(0), cudaErrorLaunchFailure);
    assert_non_null(strstr(sim_last_detail(), "spin-wait"));
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
}

static void shared_memory_is_not_global_traffic(void **state)
{
    (void)state;
    float *x = dev_alloc(256 * sizeof(float)), *y = dev_alloc(256 * sizeof(float));
    SimStepCounters c;
    sim_counters_start();
    assert_int_equal(launch_count_shared(x, y, 0), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess);
    sim_counters_stop(&c);
    const SimLaunchRecord *r = only_record();
    assert_int_equal(sim_counters_sum(r->read), 1024);
    assert_int_equal(sim_counters_sum(r->written), 1024);
    cudaFree(x);
    cudaFree(y);
}

static void copies_syncs_gemm_graph_and_high_water(void **state)
{
    (void)state;
    enum { M = 8, N = 3, K = 16 };
    float host[M * K] = { 0 };
    SimStepCounters c;
    cudaStream_t s;
    assert_int_equal(cudaStreamCreate(&s), cudaSuccess);
    cublasHandle_t h;
    assert_int_equal(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
    float *a = dev_alloc(M * K * sizeof(float)), *b = dev_alloc(K * N * sizeof(float));
    float *y = dev_alloc(M * N * sizeof(float));
    const float one = 1.0f, zero = 0.0f;
    size_t before_free = 0, total = 0;
    assert_int_equal(cudaMemGetInfo(&before_free, &total), cudaSuccess);

    sim_counters_start();
    const size_t base = total - before_free;
    assert_int_equal(cudaMemcpyAsync(a, host, sizeof host, cudaMemcpyHostToDevice, s), cudaSuccess);
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, a, CUDA_R_32F, M, b, CUDA_R_32F, K, &zero,
                                  y, CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_SUCCESS);
    void *tmp = NULL;
    assert_int_equal(cudaMalloc(&tmp, 1 << 20), cudaSuccess); /* high water: base + 1 MiB */
    assert_int_equal(cudaMemcpy(host, y, M * N * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess); /* sync 1 */
    assert_int_equal(cudaFree(tmp), cudaSuccess);                                                      /* sync 2 */

    cudaGraph_t g;
    cudaGraphExec_t e;
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_equal(launch_count_float4(a, y, 8, s), cudaSuccess);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaSuccess);
    assert_int_equal(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
    assert_int_equal(cudaGraphLaunch(e, s), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess); /* sync 3 */
    sim_counters_stop(&c);

    size_t n = 0;
    const SimLaunchRecord *r = sim_counters_records(&n);
    assert_int_equal(n, 4); /* copy, GEMM, D2H copy, the replayed kernel */
    assert_int_equal(r[0].kind, SIM_REC_COPY);
    assert_ptr_equal(r[0].stream, s);
    assert_int_equal(r[0].written[W16], sizeof host);
    assert_int_equal(r[1].kind, SIM_REC_GEMM);
    assert_int_equal(r[1].read[W16], (M * K + K * N) * sizeof(float));
    assert_int_equal(r[1].written[W16], M * N * sizeof(float));
    assert_int_equal(r[2].read[W16], M * N * sizeof(float));
    assert_int_equal(r[3].kind, SIM_REC_KERNEL);
    assert_int_equal(r[3].in_graph, 1);
    assert_int_equal(r[3].read[W16], 32);
    assert_int_equal(c.kernels, 1);
    assert_int_equal(c.gemms, 1);
    assert_int_equal(c.copies, 2);
    assert_int_equal(c.graph_launches, 1);
    assert_int_equal(c.host_syncs, 3);
    /* queued: the H2D copy, the GEMM, the captured kernel, the graph launch (cudaMemcpy runs at once);
     * syncs 1 and 2 fall between the first (the H2D copy) and the last (the graph launch) */
    assert_int_equal(c.queued, 4);
    assert_int_equal(c.host_syncs_inside, 2);
    assert_int_equal(c.h2d_bytes, sizeof host);
    assert_int_equal(c.d2h_bytes, M * N * sizeof(float));
    assert_int_equal(c.high_water[0], base + (1 << 20));
    cudaGraphExecDestroy(e);
    cudaGraphDestroy(g);
    cublasDestroy(h);
    cudaStreamDestroy(s);
    cudaFree(a);
    cudaFree(b);
    cudaFree(y);
}

static void nccl_bytes_per_peer(void **state)
{
    (void)state;
    enum { COUNT = 100 };
    ncclComm_t comm[2];
    float *buf[2];
    cudaStream_t st[2];
    assert_int_equal(ncclCommInitAll(comm, 2, NULL), ncclSuccess);
    for (int d = 0; d < 2; d++) {
        assert_int_equal(cudaSetDevice(d), cudaSuccess);
        buf[d] = dev_alloc(COUNT * sizeof(float));
        assert_int_equal(cudaStreamCreate(&st[d]), cudaSuccess);
    }
    SimStepCounters c;
    sim_counters_start();
    /* device 0 sends 100 floats to device 1 */
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    assert_int_equal(ncclSend(buf[0], COUNT, ncclFloat, 1, comm[0], st[0]), ncclSuccess);
    assert_int_equal(ncclRecv(buf[1], COUNT, ncclFloat, 0, comm[1], st[1]), ncclSuccess);
    assert_int_equal(ncclGroupEnd(), ncclSuccess);
    /* a ring all-reduce over 2 ranks: each sends 2·(2−1)/2 of its 400 bytes to the other */
    assert_int_equal(ncclGroupStart(), ncclSuccess);
    for (int d = 0; d < 2; d++)
        assert_int_equal(ncclAllReduce(buf[d], buf[d], COUNT, ncclFloat, ncclSum, comm[d], st[d]), ncclSuccess);
    assert_int_equal(ncclGroupEnd(), ncclSuccess);
    sim_counters_stop(&c);
    assert_int_equal(c.nccl_bytes[0][1], 400 + 400);
    assert_int_equal(c.nccl_bytes[1][0], 400);
    assert_int_equal(c.nccl_bytes[0][0], 0);
    assert_int_equal(c.host_syncs, 0);
    for (int d = 0; d < 2; d++) {
        assert_int_equal(cudaSetDevice(d), cudaSuccess);
        cudaStreamDestroy(st[d]);
        cudaFree(buf[d]);
        ncclCommDestroy(comm[d]);
    }
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
}

/* A synchronisation before an interval's first queued operation or after its last is at an edge. */
static void syncs_inside_an_interval_and_at_its_edges(void **state)
{
    (void)state;
    float *x = dev_alloc(64 * sizeof(float)), *out = dev_alloc(16 * sizeof(float));
    SimStepCounters c;
    sim_counters_start();
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess); /* edge: nothing queued yet */
    assert_int_equal(launch_count_float4(x, out, 64, 0), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess); /* inside: another launch follows */
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess); /* inside */
    assert_int_equal(launch_count_float4(x, out, 64, 0), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess); /* edge: after the last launch */
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);  /* edge */
    sim_counters_stop(&c);
    assert_int_equal(c.host_syncs, 5);
    assert_int_equal(c.host_syncs_inside, 2);
    assert_int_equal(c.queued, 2);
    sim_counters_start();
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess); /* nothing queued at all: an edge */
    sim_counters_stop(&c);
    assert_int_equal(c.host_syncs, 1);
    assert_int_equal(c.host_syncs_inside, 0);
    assert_int_equal(c.queued, 0);
    cudaFree(x);
    cudaFree(out);
}

static void nothing_counted_outside_an_interval(void **state)
{
    (void)state;
    float *x = dev_alloc(64 * sizeof(float)), *out = dev_alloc(16 * sizeof(float));
    SimStepCounters c;
    sim_counters_start();
    sim_counters_stop(&c);
    assert_int_equal(launch_count_float4(x, out, 64, 0), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(0), cudaSuccess);
    size_t n = 99;
    sim_counters_records(&n);
    assert_int_equal(n, 0);
    assert_int_equal(c.kernels + c.host_syncs + sim_counters_sum(c.read), 0);
    cudaFree(x);
    cudaFree(out);
}

static int setup(void **state)
{
    (void)state;
    setenv("SIM_QUIET", "1", 1);
    setenv("SIM_DEVICE_COUNT", "2", 1);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(float4_loads_count_n_times_4_bytes_at_width_16),
        cmocka_unit_test(bf16_byte_and_uint2_widths),
        cmocka_unit_test(broadcast_reads_distinct_bytes_and_atomics),
        cmocka_unit_test(stages_inside_a_launch),
        cmocka_unit_test(shared_memory_is_not_global_traffic),
        cmocka_unit_test(copies_syncs_gemm_graph_and_high_water),
        cmocka_unit_test(nccl_bytes_per_peer),
        cmocka_unit_test(syncs_inside_an_interval_and_at_its_edges),
        cmocka_unit_test(nothing_counted_outside_an_interval),
    };
    return cmocka_run_group_tests_name("sim_counters", tests, setup, NULL);
}
