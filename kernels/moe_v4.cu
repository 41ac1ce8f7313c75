/**
 * \file moe_v4.cu
 * \brief The MoE FFN of a decode step in three launches after the gate (moe_route_v4 in router.cu): the
 *        routed and shared experts' gate/up with SwiGLU, their down projections, and the weighted combine
 *        fused with the residual add and the next RMSNorm (docs/semantics.md §3.6.2, §3.6.4, §3.2).
 */
#include "common.cuh"
#include "moe_grouped.cuh"

/** The block row's slot (moe_grouped.cuh's v4_slot_of) for block row blockIdx.y. */
static __device__ bool v4_slot(int *slot, const int *offsets, int rows, int E, int T, int &e, int &first, int &last,
                               bool &shared)
{
    return v4_slot_of(slot, offsets, (int)blockIdx.y, rows, E, T, e, first, last, shared);
}

// ANCHOR: moe_ffn_grouped_v4
/**
 * Version 4, step 1. Block (tile, y) serves v4_slot's expert e (routed or shared) and its hidden units
 * [64·tile, 64·tile + 64): the inputs of up to `per_pass` of its rows (x_t for the token of each row) are
 * staged in shared memory once, then warp w computes units i = 64·tile + w, + 8, … for all of them:
 * h_i = silu(W_gate x)_i · (W_up x)_i with 16-byte weight loads, each weight row read once per pass.
 * The activations cost one read of x per block, 1/64 of the 64 units' weight rows.
 */
__global__ void moe_ffn_v4_hidden_kernel(void *hidden, void *shared_hidden, const float *x, const int *row_token,
                                         const int *offsets, const void *gate_up, const void *shared_gate_up,
                                         KernelDType w_type, int T, int rows, int E, int D, int I, int I_s,
                                         int per_pass, int wide)
{
    DYNAMIC_SHARED(float, xs);
    __shared__ int slot[3];
    __shared__ size_t src0[V4_ROWS];
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    int e, first, last;
    bool shared;
    if (!v4_slot(slot, offsets, rows, E, T, e, first, last, shared)) return;
    const int units = shared ? I_s : I, u0 = (int)blockIdx.x * V4_UNITS, u1 = min(units, u0 + V4_UNITS);
    if (u0 >= units) return; /* the whole block */
    const void *w = shared ? shared_gate_up : gate_up;
    void *h = shared ? shared_hidden : hidden;
    for (int r0 = first; r0 < last; r0 += per_pass) {
        const int n = min(per_pass, last - r0), tid = (int)threadIdx.x;
        __syncthreads(); /* the previous pass has read the stage */
        if (tid < n) src0[tid] = (size_t)(shared ? r0 + tid : row_token[r0 + tid]) * D;
        __syncthreads();
        v4_stage(xs, x, KERNEL_F32, src0, n, D, wide);
        __syncthreads();
        for (int i = u0 + warp; i < u1; i += V4_WARPS) {
            const size_t gate = ((size_t)e * 2 * units + i) * D, up = gate + (size_t)units * D;
            float g[V4_ROWS] = { 0.0f }, u[V4_ROWS] = { 0.0f };
            v4_dot(g, w, w_type, gate, xs, D, n, lane, wide);
            v4_dot(u, w, w_type, up, xs, D, n, lane, wide);
#pragma unroll
            for (int k = 0; k < V4_ROWS; k++) {
                if (k < n) { /* uniform over the warp */
                    const float gk = warp_sum(g[k]), uk = warp_sum(u[k]);
                    if (lane == 0) store_elem(h, w_type, (size_t)(r0 + k) * units + i, silu_v4(gk) * uk);
                }
            }
        }
    }
}

/**
 * Version 4, step 2: block (tile, y) as step 1 on outputs d ∈ [64·tile, 64·tile + 64): the hidden rows
 * (w_type) staged as floats once per pass, warp w on d = 64·tile + w, + 8, …: out[r, d] = (W_down,e h_r)_d
 * for routed rows, shared_out[t, d] = (W_down,shared h_t)_d for the shared block row.
 */
__global__ void moe_ffn_v4_down_kernel(float *out, float *shared_out, const void *hidden, const void *shared_hidden,
                                       const int *offsets, const void *down, const void *shared_down,
                                       KernelDType w_type, int T, int rows, int E, int D, int I, int I_s, int per_pass,
                                       int wide)
{
    DYNAMIC_SHARED(float, hs);
    __shared__ int slot[3];
    __shared__ size_t src0[V4_ROWS];
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    int e, first, last;
    bool shared;
    if (!v4_slot(slot, offsets, rows, E, T, e, first, last, shared)) return;
    const int units = shared ? I_s : I, d0 = (int)blockIdx.x * V4_UNITS, d1 = min(D, d0 + V4_UNITS);
    if (d0 >= D) return;
    const void *w = shared ? shared_down : down, *src = shared ? shared_hidden : hidden;
    float *o = shared ? shared_out : out;
    for (int r0 = first; r0 < last; r0 += per_pass) {
        const int n = min(per_pass, last - r0), tid = (int)threadIdx.x;
        __syncthreads();
        if (tid < n) src0[tid] = (size_t)(r0 + tid) * units;
        __syncthreads();
        v4_stage(hs, src, w_type, src0, n, units, wide);
        __syncthreads();
        for (int d = d0 + warp; d < d1; d += V4_WARPS) {
            float acc[V4_ROWS] = { 0.0f };
            v4_dot(acc, w, w_type, ((size_t)e * D + d) * units, hs, units, n, lane, wide);
#pragma unroll
            for (int k = 0; k < V4_ROWS; k++) {
                if (k < n) {
                    const float sum = warp_sum(acc[k]);
                    if (lane == 0) o[(size_t)(r0 + k) * D + d] = sum;
                }
            }
        }
    }
}
// ANCHOR_END: moe_ffn_grouped_v4

/** v4_pass_rows for one kernel's stage of width w, its shared memory allowed first (err set on failure). */
static int v4_rows_per_pass(const void *kernel, int w, int T, cudaError_t *err)
{
    const int n = v4_pass_rows(w, T);
    const cudaError_t e = v4_allow_smem(kernel, sizeof(float) * (size_t)n * (w > 0 ? w : 1));
    if (e != cudaSuccess) *err = e;
    return n;
}

extern "C" cudaError_t moe_ffn_grouped_v4(float *out, float *shared_out, void *hidden, void *shared_hidden,
                                          const float *x, const int *row_token, const int *offsets, const void *gate_up,
                                          const void *down, const void *shared_gate_up, const void *shared_down,
                                          KernelDType w_type, int T, int rows, int E, int D, int I, int I_s,
                                          cudaStream_t stream)
{
    const int units = I > I_s ? I : I_s;
    if (T < 1 || rows < 1 || E < 1 || D > MOE_V4_MAX_WIDTH || units > MOE_V4_MAX_WIDTH) return cudaErrorInvalidValue;
    cudaError_t err = cudaSuccess;
    const int pass_h = v4_rows_per_pass((const void *)moe_ffn_v4_hidden_kernel, D, T, &err);
    const int pass_d = v4_rows_per_pass((const void *)moe_ffn_v4_down_kernel, units, T, &err);
    if (err != cudaSuccess) return err;
    const int wide = D % 8 == 0 && I % 8 == 0 && I_s % 8 == 0 && aligned16(x) && aligned16(hidden) &&
                     aligned16(gate_up) && aligned16(down) &&
                     (I_s == 0 || (aligned16(shared_hidden) && aligned16(shared_gate_up) && aligned16(shared_down)));
    const unsigned int ys = (unsigned int)((rows < E ? rows : E) + (I_s > 0));
    LAUNCH(moe_ffn_v4_hidden_kernel, dim3(blocks_for((size_t)units, V4_UNITS), ys), dim3(32 * V4_WARPS),
           sizeof(float) * (size_t)pass_h * D, stream, hidden, shared_hidden, x, row_token, offsets, gate_up,
           shared_gate_up, w_type, T, rows, E, D, I, I_s, pass_h, wide);
    LAUNCH(moe_ffn_v4_down_kernel, dim3(blocks_for((size_t)D, V4_UNITS), ys), dim3(32 * V4_WARPS),
           sizeof(float) * (size_t)pass_d * units, stream, out, shared_out, hidden, shared_hidden, offsets, down,
           shared_down, w_type, T, rows, E, D, I, I_s, pass_d, wide);
    return cudaGetLastError();
}

#define COMBINE_V4_COLS   64 /**< threads of a block along the outputs, 4 outputs each: 256 per block */
#define COMBINE_V4_GROUPS 4  /**< threads along the slots: group g adds slots g, g + 4, … */

// ANCHOR: moe_combine_v4
/**
 * Version 4 of the combine, over blocks (chunk, t) of 256 outputs. Thread (g, c) of the block takes
 * outputs d = 4c … 4c + 3 of the chunk (16-byte accesses when D is a multiple of 4) and the slots
 * k ≡ g (mod 4) among the token's K slots and the shared experts' row (slot K, weight 1), with the slots
 * and weights staged in shared memory once per block; group 0 adds the 4 groups' sums in group order:
 * y_t[d] = Σ_k g_{k,t} out[slot_row[t,k], d] + shared_t[d]. With h (the fused tail, FastResidualNorm):
 * h_t ← h_t + y_t instead of writing y, each block's Σ h_t[d]² into sq[t, chunk], and the last block of
 * token t (an atomic counter done[t], left zero again) adds those in chunk order and writes
 * a_t = norm ⊙ h_t / sqrt(mean(h_t²) + ε).
 */
__global__ void moe_combine_v4_kernel(float *y, const float *out, const int *slot_row, const float *weight,
                                      const float *shared, int K, int D, float *h, float *a, const float *norm,
                                      float eps, float *sq, int *done, int wide)
{
    __shared__ float scratch[32], g[33];
    __shared__ float4 part[COMBINE_V4_GROUPS][COMBINE_V4_COLS];
    __shared__ int row[33], last;
    const int t = (int)blockIdx.y, chunks = (int)gridDim.x, c = (int)threadIdx.x % COMBINE_V4_COLS;
    const int grp = (int)threadIdx.x / COMBINE_V4_COLS, d = 4 * ((int)blockIdx.x * COMBINE_V4_COLS + c);
    if ((int)threadIdx.x < K) {
        g[threadIdx.x] = weight[t * K + (int)threadIdx.x];
        row[threadIdx.x] = slot_row[t * K + (int)threadIdx.x];
    }
    __syncthreads();
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (d < D)
        for (int k = grp; k < K + (shared != NULL); k += COMBINE_V4_GROUPS) {
            const bool sh = k == K; /* the shared experts' row, weight 1 */
            const float gk = sh ? 1.0f : g[k];
            const float4 o = v4_load4(sh ? shared + (size_t)t * D : out + (size_t)row[k] * D, d, D, wide);
            acc = make_float4(acc.x + gk * o.x, acc.y + gk * o.y, acc.z + gk * o.z, acc.w + gk * o.w);
        }
    part[grp][c] = acc;
    __syncthreads();
    float ss = 0.0f;
    if (grp == 0 && d < D) {
        for (int j = 1; j < COMBINE_V4_GROUPS; j++) {
            const float4 p = part[j][c];
            acc = make_float4(acc.x + p.x, acc.y + p.y, acc.z + p.z, acc.w + p.w);
        }
        if (!h) {
            v4_store4(y + (size_t)t * D, d, D, wide, acc);
        } else {
            const float4 hv = v4_load4(h + (size_t)t * D, d, D, wide); /* h' = h + y */
            acc = make_float4(hv.x + acc.x, hv.y + acc.y, hv.z + acc.z, hv.w + acc.w);
            v4_store4(h + (size_t)t * D, d, D, wide, acc);
            ss = acc.x * acc.x + acc.y * acc.y + acc.z * acc.z + acc.w * acc.w; /* 0 past D */
        }
    }
    if (!h) return; /* uniform over the block */
    const float block_sq = block_sum(ss, scratch);
    if (threadIdx.x == 0) sq[(size_t)t * chunks + blockIdx.x] = block_sq;
    __threadfence(); /* this block's h and square sum, visible to all */
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(done + t, 1) == chunks - 1;
        if (last) done[t] = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const volatile float *vs = sq + (size_t)t * chunks, *ht = h + (size_t)t * D; /* written by other blocks */
    float sum_sq = 0.0f;
    for (int j = 0; j < chunks; j++) sum_sq += vs[j];
    const float inv_rms = 1.0f / sqrtf(sum_sq / (float)D + eps);
    for (int i = (int)threadIdx.x; i < D; i += (int)blockDim.x) a[(size_t)t * D + i] = norm[i] * (ht[i] * inv_rms);
}
// ANCHOR_END: moe_combine_v4

extern "C" cudaError_t moe_combine_v4(float *y, const float *out, const int *slot_row, const float *weight,
                                      const float *shared, int T, int K, int D, float *h, float *a, const float *norm,
                                      float eps, float *sq, int *done, cudaStream_t stream)
{
    if (K < 1 || K > 32 || T < 1 || D < 1) return cudaErrorInvalidValue;
    const int wide =
        D % 4 == 0 && aligned16(out) && (!shared || aligned16(shared)) && (h ? aligned16(h) : aligned16(y));
    LAUNCH(moe_combine_v4_kernel, dim3(blocks_for((size_t)D, 4 * COMBINE_V4_COLS), (unsigned)T),
           dim3(COMBINE_V4_COLS * COMBINE_V4_GROUPS), 0, stream, y, out, slot_row, weight, shared, K, D, h, a, norm,
           eps, sq, done, wide);
    return cudaGetLastError();
}
