/**
 * \file rmsnorm_warp_per_row.cu
 * \brief Kernel lab example (correct): RMSNorm with one warp per row and no shared memory.
 *
 * A different design from the project's rmsnorm_forward_v2 (one block of 256
 * threads per row): each warp of a 128-thread block owns one row, so the
 * mean square needs only warp shuffles and no barrier. It suits the many
 * short rows of MLA's latent norms (d_c = 512: 16 elements per lane).
 *
 *     make check-kernel COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_warp_per_row.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

/** Rows per block of 128 threads: one per warp. */
#define ROWS_PER_BLOCK 4

// ANCHOR: warp_per_row
/** Warp w of block b normalises row t = 4·b + w: lanes stride over i, Σ x_i² by butterfly shuffles. */
__global__ void rmsnorm_warp_per_row_kernel(float *y, const float *x, const float *w, int T, int n, float eps)
{
    const int lane = (int)threadIdx.x % 32;
    const int t = (int)blockIdx.x * ROWS_PER_BLOCK + (int)threadIdx.x / 32;
    if (t >= T) return; /* the whole warp leaves: no collective is left waiting */
    const float *xt = x + (size_t)t * n;
    float sum_sq = 0.0f;
    for (int i = lane; i < n; i += 32) sum_sq += xt[i] * xt[i];
    for (int offset = 16; offset > 0; offset /= 2) /* every lane ends with the row's Σ x_i² */
        sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
    const float inv_rms = rsqrtf(sum_sq / (float)n + eps); /* ε inside the root */
    for (int i = lane; i < n; i += 32) y[(size_t)t * n + i] = w[i] * (xt[i] * inv_rms);
}
// ANCHOR_END: warp_per_row

extern "C" cudaError_t lab_rmsnorm(float *y, const float *x, const float *w, int T, int n, float eps,
                                   cudaStream_t stream)
{
    const unsigned blocks = (unsigned)((T + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK);
    LAUNCH(rmsnorm_warp_per_row_kernel, dim3(blocks), dim3(32 * ROWS_PER_BLOCK), 0, stream, y, x, w, T, n, eps);
    return cudaGetLastError();
}
