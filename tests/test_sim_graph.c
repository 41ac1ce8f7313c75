/**
 * \file test_sim_graph.c
 * \brief Stream capture and CUDA graphs on the simulated device: replay equals eager execution, replays
 *        read the buffers as they are at launch, refused calls return CUDA's codes and invalidate the
 *        capture, a captured cuBLAS GEMM replays, race check covers replayed kernels, nothing leaks.
 *
 * Every comparison here is bitwise: a replay runs the very operations an
 * eager run would, on the same data, so any difference is a bug.
 */
#include "check.h"
#include "cublas_v2.h"
#include "sim.h"
#include "sim/sim_test_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { ROWS = 19, COLS = 37, N = ROWS * COLS, SCAN = 200 };

static TestRng rng;

static unsigned long long live_allocs(void)
{
    SimStats st;
    sim_stats(&st);
    return st.live_allocs;
}

static void *device(size_t bytes)
{
    void *p = NULL;
    assert_int_equal(cudaMalloc(&p, bytes), cudaSuccess);
    return p;
}

/* The work both runs queue: upload from pinned memory, scale, transpose, a fill and a copy, download. */
static void queue_work(cudaStream_t s, float *dx, float *dy, float *dz, const float *pinned_in, float *pinned_out)
{
    assert_int_equal(cudaMemcpyAsync(dx, pinned_in, sizeof(float) * N, cudaMemcpyHostToDevice, s), cudaSuccess);
    assert_int_equal(launch_scale(dx, N, 1.5f, s), cudaSuccess);
    assert_int_equal(launch_transpose(dx, dy, ROWS, COLS, s), cudaSuccess);
    assert_int_equal(cudaMemsetAsync(dz, 0, sizeof(float) * N, s), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(dz, dy, sizeof(float) * (N / 2), cudaMemcpyDeviceToDevice, s), cudaSuccess);
    assert_int_equal(launch_scale(dz, N, -0.25f, s), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(pinned_out, dz, sizeof(float) * N, cudaMemcpyDeviceToHost, s), cudaSuccess);
}

/* Captures queue_work on s and instantiates it. */
static cudaGraphExec_t capture_work(cudaStream_t s, float *dx, float *dy, float *dz, const float *in, float *out)
{
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    enum cudaStreamCaptureStatus st;
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_equal(cudaStreamIsCapturing(s, &st), cudaSuccess);
    assert_int_equal(st, cudaStreamCaptureStatusActive);
    queue_work(s, dx, dy, dz, in, out);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaSuccess);
    assert_non_null(g);
    assert_int_equal(cudaStreamIsCapturing(s, &st), cudaSuccess);
    assert_int_equal(st, cudaStreamCaptureStatusNone);
    assert_int_equal(cudaGraphInstantiate(&x, g, 0), cudaSuccess);
    assert_int_equal(cudaGraphDestroy(g), cudaSuccess); /* the exec keeps what it needs */
    return x;
}

static void replay_equals_eager(void **state)
{
    (void)state;
    const unsigned long long live0 = live_allocs();
    cudaStream_t s;
    float *in, *eager, *replay;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    assert_int_equal(cudaMallocHost((void **)&in, sizeof(float) * N), cudaSuccess);
    assert_int_equal(cudaMallocHost((void **)&eager, sizeof(float) * N), cudaSuccess);
    assert_int_equal(cudaMallocHost((void **)&replay, sizeof(float) * N), cudaSuccess);
    float *dx = device(sizeof(float) * N), *dy = device(sizeof(float) * N), *dz = device(sizeof(float) * N);
    test_rng_fill(&rng, in, N, -4.0f, 4.0f);

    poison(eager, N);
    queue_work(s, dx, dy, dz, in, eager);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);

    poison(replay, N);
    assert_int_equal(cudaMemset(dz, 0xff, sizeof(float) * N), cudaSuccess);
    cudaGraphExec_t x = capture_work(s, dx, dy, dz, in, replay);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    float probe;
    assert_int_equal(cudaMemcpy(&probe, dz, sizeof probe, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_true(probe != probe); /* captured, not run: dz still NaN */
    assert_true(replay[0] != replay[0]);

    assert_int_equal(cudaGraphLaunch(x, s), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    assert_memory_equal(replay, eager, sizeof(float) * N);

    /* launched, then destroyed before it ran: the queued launch keeps the work alive */
    poison(replay, N);
    assert_int_equal(cudaGraphLaunch(x, s), cudaSuccess);
    assert_int_equal(cudaGraphExecDestroy(x), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    assert_memory_equal(replay, eager, sizeof(float) * N);

    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dz);
    cudaFreeHost(in);
    cudaFreeHost(eager);
    cudaFreeHost(replay);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(live_allocs(), live0);
}

static void replays_read_buffers_at_launch(void **state)
{
    (void)state;
    const unsigned long long live0 = live_allocs();
    cudaStream_t s;
    float *in, *out, want[N];
    assert_int_equal(cudaStreamCreate(&s), cudaSuccess); /* a blocking stream, as fast/ uses */
    assert_int_equal(cudaMallocHost((void **)&in, sizeof(float) * N), cudaSuccess);
    assert_int_equal(cudaMallocHost((void **)&out, sizeof(float) * N), cudaSuccess);
    float *dx = device(sizeof(float) * N), *dy = device(sizeof(float) * N), *dz = device(sizeof(float) * N);
    cudaGraphExec_t x = capture_work(s, dx, dy, dz, in, out);
    for (int step = 0; step < 3; step++) {
        test_rng_fill(&rng, in, N, -1.0f, 1.0f);
        poison(want, N);
        queue_work(s, dx, dy, dz, in, want); /* eager reference on this step's input */
        assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
        poison(out, N);
        assert_int_equal(cudaGraphLaunch(x, s), cudaSuccess);
        assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
        assert_memory_equal(out, want, sizeof want);
    }
    /* every replay runs the recorded work again: three replays of "x *= 3" multiply by 27 */
    cudaGraph_t g;
    cudaGraphExec_t triple;
    float h[N];
    for (int i = 0; i < N; i++) h[i] = (float)(i % 5);
    assert_int_equal(cudaMemcpy(dx, h, sizeof h, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_equal(launch_scale(dx, N, 3.0f, s), cudaSuccess);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaSuccess);
    assert_int_equal(cudaGraphInstantiate(&triple, g, 0), cudaSuccess);
    for (int r = 0; r < 3; r++) assert_int_equal(cudaGraphLaunch(triple, s), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    float got[N];
    assert_int_equal(cudaMemcpy(got, dx, sizeof got, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < N; i++) assert_true(got[i] == h[i] * 27.0f);
    assert_int_equal(cudaGraphExecDestroy(triple), cudaSuccess);
    assert_int_equal(cudaGraphDestroy(g), cudaSuccess);
    assert_int_equal(cudaGraphExecDestroy(x), cudaSuccess);
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dz);
    cudaFreeHost(in);
    cudaFreeHost(out);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(live_allocs(), live0);
}

/* Begins a capture, makes one refused call through `call`, and checks the code, the invalidation and the end. */
typedef cudaError_t (*RefusedCall)(cudaStream_t s, float *d, float *pageable);

static cudaError_t sync_stream(cudaStream_t s, float *d, float *p)
{
    (void)d;
    (void)p;
    return cudaStreamSynchronize(s);
}
static cudaError_t sync_device(cudaStream_t s, float *d, float *p)
{
    (void)s;
    (void)d;
    (void)p;
    return cudaDeviceSynchronize();
}
static cudaError_t query_stream(cudaStream_t s, float *d, float *p)
{
    (void)d;
    (void)p;
    return cudaStreamQuery(s);
}
static cudaError_t copy_sync(cudaStream_t s, float *d, float *p)
{
    (void)s;
    return cudaMemcpy(p, d, sizeof(float), cudaMemcpyDeviceToHost);
}
static cudaError_t copy_async_pageable(cudaStream_t s, float *d, float *p)
{
    return cudaMemcpyAsync(p, d, sizeof(float), cudaMemcpyDeviceToHost, s);
}
static cudaError_t malloc_global(cudaStream_t s, float *d, float *p)
{
    (void)s;
    (void)d;
    (void)p;
    void *q = NULL;
    return cudaMalloc(&q, 64);
}
static cudaError_t legacy_launch(cudaStream_t s, float *d, float *p)
{
    (void)s;
    (void)p;
    return launch_scale(d, 1, 2.0f, 0);
}
static cudaError_t bad_launch(cudaStream_t s, float *d, float *p)
{
    (void)d;
    return launch_scale(p, 1, 2.0f, s);
}

static void refused(cudaStream_t s, float *d, float *pageable, RefusedCall call, cudaError_t want)
{
    static int sentinel;
    cudaGraph_t g = (cudaGraph_t)(void *)&sentinel; /* EndCapture must overwrite it with NULL */
    enum cudaStreamCaptureStatus st;
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_equal(launch_scale(d, 1, 2.0f, s), cudaSuccess);
    assert_int_equal(call(s, d, pageable), want);
    (void)cudaGetLastError();
    assert_int_equal(cudaStreamIsCapturing(s, &st), cudaSuccess);
    assert_int_equal(st, cudaStreamCaptureStatusInvalidated);
    assert_int_equal(launch_scale(d, 1, 2.0f, s), cudaSuccess); /* accepted, dropped */
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    assert_null(g);
    (void)cudaGetLastError();
    assert_int_equal(cudaStreamIsCapturing(s, &st), cudaSuccess);
    assert_int_equal(st, cudaStreamCaptureStatusNone);
}

static void refused_calls_invalidate(void **state)
{
    (void)state;
    const unsigned long long live0 = live_allocs();
    cudaStream_t s;
    float pageable[1] = { 5.0f }, one = 1.0f;
    assert_int_equal(cudaStreamCreate(&s), cudaSuccess);
    float *d = device(sizeof(float));
    assert_int_equal(cudaMemcpy(d, &one, sizeof one, cudaMemcpyHostToDevice), cudaSuccess);

    refused(s, d, pageable, sync_stream, cudaErrorStreamCaptureUnsupported);
    refused(s, d, pageable, sync_device, cudaErrorStreamCaptureUnsupported);
    refused(s, d, pageable, query_stream, cudaErrorStreamCaptureUnsupported);
    refused(s, d, pageable, copy_sync, cudaErrorStreamCaptureUnsupported);
    refused(s, d, pageable, copy_async_pageable, cudaErrorStreamCaptureUnsupported);
    refused(s, d, pageable, malloc_global, cudaErrorStreamCaptureUnsupported);
    refused(s, d, pageable, legacy_launch, cudaErrorStreamCaptureImplicit);
    refused(s, d, pageable, bad_launch, cudaErrorInvalidDevicePointer);

    /* nothing captured or refused ever ran: d is still 1 */
    float got = 0.0f;
    assert_int_equal(cudaMemcpy(&got, d, sizeof got, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_true(got == 1.0f);

    /* relaxed mode allows cudaMalloc meanwhile; the capture stays valid */
    cudaGraph_t g = NULL;
    void *q = NULL;
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
    assert_int_equal(cudaMalloc(&q, 64), cudaSuccess);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaSuccess);
    assert_non_null(g);
    assert_int_equal(cudaGraphDestroy(g), cudaSuccess);
    assert_int_equal(cudaFree(q), cudaSuccess);

    /* the legacy stream cannot capture; capture twice, end without begin */
    assert_int_equal(cudaStreamBeginCapture(0, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaErrorIllegalState);
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaErrorIllegalState);
    enum cudaStreamCaptureStatus st;
    assert_int_equal(cudaStreamIsCapturing(0, &st), cudaErrorStreamCaptureImplicit);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaSuccess);
    assert_int_equal(cudaGraphDestroy(g), cudaSuccess);
    (void)cudaGetLastError();

    /* the stream works eagerly again */
    assert_int_equal(launch_scale(d, 1, 2.0f, s), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    assert_int_equal(cudaMemcpy(&got, d, sizeof got, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_true(got == 2.0f);
    cudaFree(d);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(live_allocs(), live0);
}

static void captured_gemm_replays(void **state)
{
    (void)state;
    enum { M = 13, NN = 7, K = 29 };
    const unsigned long long live0 = live_allocs();
    cudaStream_t s;
    cublasHandle_t h;
    assert_int_equal(cudaStreamCreate(&s), cudaSuccess);
    assert_int_equal(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
    float a[M * K], b[K * NN], eager[M * NN], replay[M * NN];
    float *dA = device(sizeof a), *dB = device(sizeof b), *dC = device(sizeof eager);
    const float one = 1.0f, zero = 0.0f;
    cudaGraph_t g;
    cudaGraphExec_t x;
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_equal(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, NN, K, &one, dA, CUDA_R_32F, K, dB, CUDA_R_32F, K,
                                  &zero, dC, CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaSuccess);
    assert_int_equal(cudaGraphInstantiate(&x, g, 0), cudaSuccess);
    for (int step = 0; step < 2; step++) {
        test_rng_fill(&rng, a, M * K, -1.0f, 1.0f);
        test_rng_fill(&rng, b, K * NN, -1.0f, 1.0f);
        assert_int_equal(cudaMemcpy(dA, a, sizeof a, cudaMemcpyHostToDevice), cudaSuccess);
        assert_int_equal(cudaMemcpy(dB, b, sizeof b, cudaMemcpyHostToDevice), cudaSuccess);
        assert_int_equal(cudaMemset(dC, 0xff, sizeof eager), cudaSuccess);
        assert_int_equal(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, NN, K, &one, dA, CUDA_R_32F, K, dB, CUDA_R_32F, K,
                                      &zero, dC, CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                         CUBLAS_STATUS_SUCCESS);
        assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
        assert_int_equal(cudaMemcpy(eager, dC, sizeof eager, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_int_equal(cudaMemset(dC, 0xff, sizeof eager), cudaSuccess);
        assert_int_equal(cudaGraphLaunch(x, s), cudaSuccess);
        assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
        assert_int_equal(cudaMemcpy(replay, dC, sizeof replay, cudaMemcpyDeviceToHost), cudaSuccess);
        assert_memory_equal(replay, eager, sizeof eager);
        for (int i = 0; i < M; i++) { /* and it is the product: C = Aᵀ·B */
            for (int j = 0; j < NN; j++) {
                double want = 0.0;
                for (int p = 0; p < K; p++) want += (double)a[i * K + p] * b[j * K + p];
                assert_true(fabs(replay[i + j * M] - want) <= 1e-5 * (1.0 + fabs(want)));
            }
        }
    }
    assert_int_equal(cudaGraphExecDestroy(x), cudaSuccess);
    assert_int_equal(cudaGraphDestroy(g), cudaSuccess);
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    assert_int_equal(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(live_allocs(), live0);
}

/* Last: it leaves the device failed and resets it (which frees every allocation). */
static void racecheck_covers_replays(void **state)
{
    (void)state;
    int x[SCAN], want[SCAN], got[SCAN];
    for (int i = 0; i < SCAN; i++) {
        x[i] = i % 5 - 2;
        want[i] = (i ? want[i - 1] : 0) + x[i];
    }
    cudaStream_t s;
    assert_int_equal(cudaStreamCreate(&s), cudaSuccess);
    int *dx = device(sizeof x), *dy = device(sizeof x);
    assert_int_equal(cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice), cudaSuccess);
    cudaGraph_t good, racy;
    cudaGraphExec_t gx, rx;
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_equal(launch_block_scan(dx, dy, SCAN, 256, s), cudaSuccess);
    assert_int_equal(cudaStreamEndCapture(s, &good), cudaSuccess);
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    assert_int_equal(launch_racy_scan(dx, dy, SCAN, s), cudaSuccess);
    assert_int_equal(cudaStreamEndCapture(s, &racy), cudaSuccess);
    assert_int_equal(cudaGraphInstantiate(&gx, good, 0), cudaSuccess);
    assert_int_equal(cudaGraphInstantiate(&rx, racy, 0), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess); /* capturing ran nothing */

    assert_int_equal(cudaGraphLaunch(gx, s), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    assert_int_equal(cudaMemcpy(got, dy, sizeof got, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_memory_equal(got, want, sizeof got);

    assert_int_equal(cudaGraphLaunch(rx, s), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaErrorLaunchFailure);
    assert_non_null(strstr(sim_last_detail(), "race-check: kernel racy_scan"));
    assert_int_equal(cudaGraphLaunch(gx, s), cudaErrorLaunchFailure); /* sticky, as after an eager fault */
    cudaGraphExecDestroy(gx);
    cudaGraphExecDestroy(rx);
    cudaGraphDestroy(good);
    cudaGraphDestroy(racy);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
    assert_int_equal(live_allocs(), 0);
}

int main(void)
{
    setenv("SIM_QUIET", "1", 1);
    setenv("SIM_RACECHECK", "1", 1);
    test_rng_seed(&rng, "sim graph");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replay_equals_eager),      cmocka_unit_test(replays_read_buffers_at_launch),
        cmocka_unit_test(refused_calls_invalidate), cmocka_unit_test(captured_gemm_replays),
        cmocka_unit_test(racecheck_covers_replays),
    };
    return cmocka_run_group_tests_name("sim graph", tests, NULL, NULL);
}
