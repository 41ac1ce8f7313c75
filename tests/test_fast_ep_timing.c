/**
 * \file test_fast_ep_timing.c
 * \brief FastEp.timing, the events `make bench-fast` reads around the two exchanges of fast_ep_moe_forward().
 *
 * The MoE layer (layer 1) of the golden fixture tests/golden/v2 over 2 and 4 devices, float32, with uneven
 * token counts per device: the output with timing on equals the output with it off bit for bit (the events
 * only observe), every begin and end event of both phases on every device is recorded and complete after
 * the streams are synchronized, with elapsed times >= 0, fast_ep_timing_ms gives each phase the largest of
 * those times over the devices, and with timing off fresh events stay unrecorded (cudaEventElapsedTime and
 * fast_ep_timing_ms refuse them). Runs on the simulated device in `make test`; on a real GPU build it skips
 * without enough devices.
 */
#include "check.h"
#include "error.h"
#include "fast_ep.h"
#include "fast_test.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_T = 5 };

/* Runs the layer once over the group; y_host[d] gets device d's T[d] output rows. */
static void forward(FastEp *ep, const FastEpMoe *w, const ModelConfig *c, float *const *y, const float *const *x,
                    const int *T, float **y_host)
{
    if (fast_ep_moe_forward(ep, w, c, y, x, T)) fail_msg("%s", ds_last_error());
    for (int d = 0; d < ep->N; d++) {
        assert_int_equal(cudaSetDevice(d), cudaSuccess);
        assert_int_equal(cudaStreamSynchronize(ep->dev[d].ctx.stream), cudaSuccess);
        assert_int_equal(cudaMemcpy(y_host[d], y[d], sizeof(float) * T[d] * c->hidden_size, cudaMemcpyDeviceToHost),
                         cudaSuccess);
    }
}

static void timing_observes_without_changing(int N)
{
    need_devices(N);
    Model m;
    if (model_open(&m, "tests/golden/v2", NULL)) fail_msg("%s", ds_last_error());
    const ModelConfig *c = m.cfg;
    const int Dm = c->hidden_size;
    static const int counts[] = { 5, 2, 0, 3 }; /* uneven, one device idle */
    int T[FAST_EP_MAX_DEVICES];
    FastEp ep;
    FastEpMoe w;
    if (fast_ep_init(&ep, N, false, c, MAX_T) || fast_ep_upload_moe(&ep, &w, &m.layers[1].moe, c))
        fail_msg("%s", ds_last_error());
    float *x[FAST_EP_MAX_DEVICES], *y[FAST_EP_MAX_DEVICES], *off[FAST_EP_MAX_DEVICES], *on[FAST_EP_MAX_DEVICES];
    FastEpTiming tm;
    TestRng rng;
    test_rng_seed(&rng, "fast_ep_timing");
    float host[MAX_T * 64];
    assert_true(MAX_T * Dm <= (int)(sizeof host / sizeof host[0]));
    for (int d = 0; d < N; d++) {
        T[d] = counts[d];
        assert_int_equal(cudaSetDevice(d), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&x[d], sizeof(float) * MAX_T * Dm), cudaSuccess);
        assert_int_equal(cudaMalloc((void **)&y[d], sizeof(float) * MAX_T * Dm), cudaSuccess);
        test_rng_fill(&rng, host, (size_t)MAX_T * Dm, -1, 1);
        assert_int_equal(cudaMemcpy(x[d], host, sizeof(float) * MAX_T * Dm, cudaMemcpyHostToDevice), cudaSuccess);
        off[d] = malloc(sizeof(float) * MAX_T * Dm);
        on[d] = malloc(sizeof(float) * MAX_T * Dm);
        assert_true(off[d] && on[d]);
        poison(off[d], (size_t)MAX_T * Dm);
        poison(on[d], (size_t)MAX_T * Dm);
    }
    if (fast_ep_timing_create(&tm, N)) fail_msg("%s", ds_last_error());

    float phase_ms[FAST_EP_PHASES], slowest[FAST_EP_PHASES] = { 0 };
    forward(&ep, &w, c, y, (const float *const *)x, T, off); /* timing off: the events stay untouched */
    for (int d = 0; d < N; d++) {
        float ms;
        assert_int_equal(cudaSetDevice(d), cudaSuccess);
        for (int p = 0; p < FAST_EP_PHASES; p++)
            assert_int_not_equal(cudaEventElapsedTime(&ms, tm.begin[p][d], tm.end[p][d]), cudaSuccess);
    }
    assert_int_equal(fast_ep_timing_ms(&tm, N, phase_ms), -1);
    cudaGetLastError(); /* the refusals above are expected */
    ep.timing = &tm;
    forward(&ep, &w, c, y, (const float *const *)x, T, on);
    for (int d = 0; d < N; d++) {
        assert_memory_equal(on[d], off[d], sizeof(float) * T[d] * Dm);
        assert_int_equal(cudaSetDevice(d), cudaSuccess);
        for (int p = 0; p < FAST_EP_PHASES; p++) {
            float ms = -1;
            assert_int_equal(cudaEventQuery(tm.begin[p][d]), cudaSuccess);
            assert_int_equal(cudaEventQuery(tm.end[p][d]), cudaSuccess);
            assert_int_equal(cudaEventElapsedTime(&ms, tm.begin[p][d], tm.end[p][d]), cudaSuccess);
            assert_true(ms >= 0);
            slowest[p] = ms > slowest[p] ? ms : slowest[p];
            printf("N %d device %d %s: %.4f ms\n", N, d, p == FAST_EP_DISPATCH ? "dispatch" : "combine ", ms);
        }
    }
    if (fast_ep_timing_ms(&tm, N, phase_ms)) fail_msg("%s", ds_last_error());
    for (int p = 0; p < FAST_EP_PHASES; p++) /* the phase is its slowest device */
        assert_true(phase_ms[p] == slowest[p]);

    fast_ep_timing_destroy(&tm, N);
    for (int d = 0; d < N; d++) {
        cudaSetDevice(d);
        cudaFree(x[d]);
        cudaFree(y[d]);
        free(off[d]);
        free(on[d]);
    }
    fast_ep_free_moe(&ep, &w);
    fast_ep_free(&ep);
    cudaSetDevice(0);
    model_close(&m);
}

static void two_devices(void **state)
{
    (void)state;
    timing_observes_without_changing(2);
}

static void four_devices(void **state)
{
    (void)state;
    timing_observes_without_changing(4);
}

int main(void)
{
    setenv("SIM_DEVICE_COUNT", "4", 1); /* the simulated device: before the first CUDA call */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_devices),
        cmocka_unit_test(four_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
