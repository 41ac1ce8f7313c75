/**
 * \file test_sim_runtime.c
 * \brief The simulated runtime: devices, memory, copies, streams, events, and every launch/copy error with its code.
 */
#include "check.h"
#include "sim.h"
#include "sim/sim_test_kernels.h"

#include <stdlib.h>
#include <string.h>

static void devices_and_properties(void **state)
{
    (void)state;
    int n = 0, dev = -1, v = 0;
    cudaDeviceProp p;
    assert_int_equal(cudaGetDeviceCount(&n), cudaSuccess);
    assert_int_equal(n, 4);
    assert_int_equal(cudaSetDevice(3), cudaSuccess);
    assert_int_equal(cudaGetDevice(&dev), cudaSuccess);
    assert_int_equal(dev, 3);
    assert_int_equal(cudaSetDevice(4), cudaErrorInvalidDevice);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidDevice);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    assert_int_equal(cudaGetDeviceProperties(&p, 2), cudaSuccess);
    assert_int_equal(p.major, 9);
    assert_int_equal(p.warpSize, 32);
    assert_int_equal(p.maxThreadsPerBlock, 1024);
    assert_int_equal(p.sharedMemPerBlockOptin, 227 * 1024);
    assert_int_equal(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
    assert_int_equal(v, 227 * 1024);
    assert_string_equal(cudaGetErrorName(cudaErrorInvalidConfiguration), "cudaErrorInvalidConfiguration");
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
}

static void copies_of_every_kind_round_trip(void **state)
{
    (void)state;
    float h[64], back[64], pinned_back[64];
    for (int i = 0; i < 64; i++) h[i] = (float)i;
    float *d1, *d2, *pinned;
    assert_int_equal(cudaMalloc((void **)&d1, sizeof h), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d2, sizeof h), cudaSuccess);
    assert_int_equal(cudaMallocHost((void **)&pinned, sizeof h), cudaSuccess);
    assert_int_equal(cudaMemcpy(d1, h, sizeof h, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(d2, d1, sizeof h, cudaMemcpyDeviceToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(pinned, d2, sizeof h, cudaMemcpyDefault), cudaSuccess);
    assert_int_equal(cudaMemcpy(pinned_back, pinned, sizeof h, cudaMemcpyHostToHost), cudaSuccess);
    assert_int_equal(cudaMemcpy(back, d2, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_memory_equal(back, h, sizeof h);
    assert_memory_equal(pinned_back, h, sizeof h);
    assert_int_equal(cudaMemset(d1, 0, sizeof h), cudaSuccess);
    assert_int_equal(cudaMemcpy(back, d1, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < 64; i++) assert_true(back[i] == 0.0f);
    assert_int_equal(cudaFree(d1), cudaSuccess);
    assert_int_equal(cudaFree(d2), cudaSuccess);
    assert_int_equal(cudaFreeHost(pinned), cudaSuccess);
}

static void copies_that_contradict_their_kind(void **state)
{
    (void)state;
    float h[16] = { 0 }, *d;
    assert_int_equal(cudaMalloc((void **)&d, sizeof h), cudaSuccess);
    assert_int_equal(cudaMemcpy(h, h, sizeof h, cudaMemcpyHostToDevice), cudaErrorInvalidValue); /* dst is host */
    assert_non_null(strstr(sim_last_detail(), "destination"));
    assert_int_equal(cudaMemcpy(d, d, sizeof h, cudaMemcpyHostToDevice), cudaErrorInvalidValue); /* src is device */
    assert_int_equal(cudaMemcpy(d, h, sizeof h, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToHost), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpy(d, h, sizeof h, (enum cudaMemcpyKind)7), cudaErrorInvalidMemcpyDirection);
    assert_int_equal(cudaMemcpy(d, h, sizeof h + 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue); /* overrun */
    assert_non_null(strstr(sim_last_detail(), "overrun"));
    assert_int_equal(cudaMemcpy(d + 1, h, sizeof h, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    assert_int_equal(cudaMemset(h, 0, sizeof h), cudaErrorInvalidValue); /* host memory */
    assert_int_equal(cudaFree(h), cudaErrorInvalidValue);
    assert_int_equal(cudaFree(d + 1), cudaErrorInvalidValue); /* not the start of an allocation */
    assert_int_equal(cudaFreeHost(d), cudaErrorInvalidValue);
    assert_int_equal(cudaFree(d), cudaSuccess);
    assert_int_equal(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost), cudaErrorInvalidValue); /* freed */
    cudaGetLastError();
}

static void peer_copies_between_devices(void **state)
{
    (void)state;
    int h[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, back[8] = { 0 };
    int *d0, *d2;
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d0, sizeof h), cudaSuccess);
    assert_int_equal(cudaSetDevice(2), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d2, sizeof h), cudaSuccess);
    assert_int_equal(cudaMemcpy(d0, h, sizeof h, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpyPeer(d2, 2, d0, 0, sizeof h), cudaSuccess);
    assert_int_equal(cudaMemcpy(back, d2, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_memory_equal(back, h, sizeof h);
    assert_int_equal(cudaMemcpyPeer(d2, 1, d0, 0, sizeof h), cudaErrorInvalidDevicePointer); /* d2 is on device 2 */
    assert_int_equal(cudaMemcpyPeer(d2, 2, d0, 0, sizeof h + 1), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpyPeer(d2, 9, d0, 0, sizeof h), cudaErrorInvalidDevice);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidDevice); /* the last error stays until read, as in CUDA */
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    cudaFree(d2);
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    cudaFree(d0);
}

static void streams_run_at_synchronisation_points(void **state)
{
    (void)state;
    float h[256], back[256];
    for (int i = 0; i < 256; i++) h[i] = (float)i;
    float *d;
    cudaStream_t s;
    assert_int_equal(cudaMalloc((void **)&d, sizeof h), cudaSuccess);
    assert_int_equal(cudaStreamCreate(&s), cudaSuccess);
    memset(back, 0, sizeof back);
    assert_int_equal(cudaMemcpyAsync(d, h, sizeof h, cudaMemcpyHostToDevice, s), cudaSuccess);
    assert_int_equal(launch_scale(d, 256, 2.0f, s), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(back, d, sizeof h, cudaMemcpyDeviceToHost, s), cudaSuccess);
    assert_int_equal(cudaStreamQuery(s), cudaErrorNotReady);
    assert_true(back[5] == 0.0f); /* deferred: nothing ran yet */
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    assert_int_equal(cudaStreamQuery(s), cudaSuccess);
    for (int i = 0; i < 256; i++) assert_true(back[i] == 2.0f * (float)i);
    assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
    cudaFree(d);
}

static void events_order_streams_and_time(void **state)
{
    (void)state;
    float h[256], back[256];
    for (int i = 0; i < 256; i++) h[i] = 1.0f;
    float *d;
    cudaStream_t a, b;
    cudaEvent_t written, start, stop;
    assert_int_equal(cudaMalloc((void **)&d, sizeof h), cudaSuccess);
    assert_int_equal(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
    assert_int_equal(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
    assert_int_equal(cudaEventCreate(&written), cudaSuccess);
    assert_int_equal(cudaEventCreate(&start), cudaSuccess);
    assert_int_equal(cudaEventCreate(&stop), cudaSuccess);
    assert_int_equal(cudaEventRecord(start, a), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(d, h, sizeof h, cudaMemcpyHostToDevice, a), cudaSuccess);
    assert_int_equal(launch_scale(d, 256, 3.0f, a), cudaSuccess);
    assert_int_equal(cudaEventRecord(written, a), cudaSuccess);
    /* Stream b scales again, but only after a's work: b must pull a's queue first. */
    assert_int_equal(cudaStreamWaitEvent(b, written, 0), cudaSuccess);
    assert_int_equal(launch_scale(d, 256, 2.0f, b), cudaSuccess);
    assert_int_equal(cudaEventRecord(stop, b), cudaSuccess);
    assert_int_equal(cudaEventQuery(stop), cudaErrorNotReady);
    assert_int_equal(cudaEventSynchronize(stop), cudaSuccess);
    assert_int_equal(cudaEventQuery(stop), cudaSuccess);
    assert_int_equal(cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < 256; i++) assert_true(back[i] == 6.0f);
    float ms = -1.0f;
    assert_int_equal(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
    assert_true(ms >= 0.0f);
    cudaEvent_t never;
    assert_int_equal(cudaEventCreate(&never), cudaSuccess);
    assert_int_equal(cudaEventElapsedTime(&ms, start, never), cudaErrorInvalidResourceHandle);
    cudaEventDestroy(never);
    cudaEventDestroy(written), cudaEventDestroy(start), cudaEventDestroy(stop);
    cudaStreamDestroy(a), cudaStreamDestroy(b);
    cudaFree(d);
}

static void launch_dimensions_over_the_limits(void **state)
{
    (void)state;
    dim3 one = { 1, 1, 1 };
    assert_int_equal(launch_empty(one, (dim3){ 1025, 1, 1 }, 0, 0), cudaErrorInvalidConfiguration);
    assert_non_null(strstr(sim_last_detail(), "empty"));
    assert_int_equal(launch_empty(one, (dim3){ 32, 32, 2 }, 0, 0), cudaErrorInvalidConfiguration); /* 2048 threads */
    assert_int_equal(launch_empty(one, (dim3){ 1, 1, 65 }, 0, 0), cudaErrorInvalidConfiguration);
    assert_int_equal(launch_empty((dim3){ 0, 1, 1 }, one, 0, 0), cudaErrorInvalidConfiguration);
    assert_int_equal(launch_empty((dim3){ 1, 65536, 1 }, one, 0, 0), cudaErrorInvalidConfiguration);
    assert_int_equal(launch_empty(one, one, 48 * 1024 + 1, 0), cudaErrorInvalidValue);
    assert_int_equal(cudaGetLastError(), cudaSuccess); /* the launcher already read it */
    assert_int_equal(launch_empty((dim3){ 2, 2, 2 }, (dim3){ 1024, 1, 1 }, 48 * 1024, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
}

static void kernel_arguments_must_be_device_memory(void **state)
{
    (void)state;
    float host[16] = { 0 }, *pinned, *d1;
    assert_int_equal(launch_scale(host, 16, 2.0f, 0), cudaErrorInvalidDevicePointer);
    assert_non_null(strstr(sim_last_detail(), "kernel scale: argument 0"));
    /* Pinned host memory is addressable from kernels. */
    assert_int_equal(cudaMallocHost((void **)&pinned, sizeof host), cudaSuccess);
    pinned[3] = 1.5f;
    assert_int_equal(launch_scale(pinned, 16, 2.0f, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_true(pinned[3] == 3.0f);
    /* Another device's memory needs peer access. */
    assert_int_equal(cudaSetDevice(1), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d1, sizeof host), cudaSuccess);
    assert_int_equal(cudaMemset(d1, 0, sizeof host), cudaSuccess);
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    assert_int_equal(launch_scale(d1, 16, 2.0f, 0), cudaErrorPeerAccessNotEnabled);
    assert_int_equal(cudaDeviceEnablePeerAccess(1, 0), cudaSuccess);
    assert_int_equal(cudaDeviceEnablePeerAccess(1, 0), cudaErrorPeerAccessAlreadyEnabled);
    assert_int_equal(cudaGetLastError(), cudaErrorPeerAccessAlreadyEnabled);
    assert_int_equal(launch_scale(d1, 16, 2.0f, 0), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    cudaFree(d1);
    cudaFreeHost(pinned);
}

static void streams_belong_to_their_device(void **state)
{
    (void)state;
    cudaStream_t s1;
    float *d;
    assert_int_equal(cudaSetDevice(1), cudaSuccess);
    assert_int_equal(cudaStreamCreate(&s1), cudaSuccess);
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d, 64), cudaSuccess);
    assert_int_equal(launch_scale(d, 16, 1.0f, s1), cudaErrorInvalidResourceHandle);
    assert_int_equal(cudaMemsetAsync(d, 0, 64, s1), cudaErrorInvalidResourceHandle);
    assert_int_equal(cudaStreamSynchronize(s1), cudaSuccess); /* allowed from any device */
    assert_int_equal(cudaStreamDestroy(s1), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(s1), cudaErrorInvalidResourceHandle);
    cudaGetLastError();
    cudaFree(d);
}

static void device_reset_frees_memory_and_clears_errors(void **state)
{
    (void)state;
    size_t before_free = 0, total = 0, after_free = 0;
    float *d;
    assert_int_equal(cudaMemGetInfo(&before_free, &total), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d, 1 << 20), cudaSuccess);
    assert_int_equal(cudaMemGetInfo(&after_free, &total), cudaSuccess);
    assert_int_equal(before_free - after_free, 1 << 20);
    assert_int_equal(cudaDeviceReset(), cudaSuccess);
    assert_int_equal(cudaMemGetInfo(&after_free, &total), cudaSuccess);
    assert_int_equal(after_free, total);
    assert_int_equal(launch_scale(d, 16, 1.0f, 0), cudaErrorInvalidDevicePointer); /* freed by the reset */
}

static int setup(void **state)
{
    (void)state;
    setenv("SIM_QUIET", "1", 1);
    setenv("SIM_DEVICE_COUNT", "4", 1);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(devices_and_properties),
        cmocka_unit_test(copies_of_every_kind_round_trip),
        cmocka_unit_test(copies_that_contradict_their_kind),
        cmocka_unit_test(peer_copies_between_devices),
        cmocka_unit_test(streams_run_at_synchronisation_points),
        cmocka_unit_test(events_order_streams_and_time),
        cmocka_unit_test(launch_dimensions_over_the_limits),
        cmocka_unit_test(kernel_arguments_must_be_device_memory),
        cmocka_unit_test(streams_belong_to_their_device),
        cmocka_unit_test(device_reset_frees_memory_and_clears_errors),
    };
    return cmocka_run_group_tests_name("sim_runtime", tests, setup, NULL);
}
