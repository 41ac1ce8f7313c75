/**
 * \file moe.cu
 * \brief SwiGLU experts on the device (docs/semantics.md §3.6.2, §3.6.4): the reference loops, the pieces around
 *        the per-expert GEMMs (token permutation by expert, the SwiGLU nonlinearity, the weighted combine),
 *        and the routed experts on permuted rows with the per-expert offsets read on the device.
 */
#include "common.cuh"

/** silu(z) = z · sigmoid(z). */
static __device__ __forceinline__ float silu(float z)
{
    return z / (1.0f + expf(-z));
}

// ANCHOR: moe_v1
/** Hidden units of one assignment: h_i = silu(W_gate x)_i · (W_up x)_i for i < I, with w = [W_gate; W_up]
 *  ([2·I, D] of w_type from element w0) and x one token's input; the block's threads share the units (ref/moe.c's
 *  swiglu_forward up to the down projection, for one row). */
static __device__ void swiglu_hidden(float *h, const float *x, const void *w, KernelDType w_type, size_t w0, int D,
                                     int I)
{
    for (int i = (int)threadIdx.x; i < I; i += (int)blockDim.x) {
        float g = 0.0f, u = 0.0f;
        for (int d = 0; d < D; d++) {
            g += load_elem(w, w_type, w0 + (size_t)i * D + d) * x[d];       /* W_gate x */
            u += load_elem(w, w_type, w0 + (size_t)(I + i) * D + d) * x[d]; /* W_up x */
        }
        h[i] = silu(g) * u;
    }
}

// ANCHOR: moe_v1_experts
/**
 * Version 1, step 1 (ref/moe.c's moe_forward loop over experts, with moe_expert_rows' gather): block b
 * serves expert e = idx[b] when b is the first assignment that chose e, so every expert that has tokens
 * is served once, by one block; it walks the assignments r = t·K + k in order and computes the hidden
 * units of each r that chose e into r's slot of hidden. Block T·K does the shared experts on every token.
 */
__global__ void moe_v1_experts_kernel(float *hidden, const float *x, const int *idx, const void *gate_up,
                                      const void *shared_gate_up, KernelDType w_type, int T, int D, int I, int K,
                                      int I_s)
{
    const int b = (int)blockIdx.x, stride = K * I + I_s; /* hidden: [T, K·I + I_s] */
    if (b == T * K) {                                    /* the shared experts, on the same b_t */
        for (int t = 0; t < T; t++)
            swiglu_hidden(hidden + (size_t)t * stride + K * I, x + (size_t)t * D, shared_gate_up, w_type, 0, D, I_s);
        return;
    }
    const int e = idx[b];
    for (int r = 0; r < b; r++)
        if (idx[r] == e) return;    /* an earlier block serves e */
    for (int r = b; r < T * K; r++) /* expert e once, on its tokens */
        if (idx[r] == e)            /* assignment t·K + k reads token t */
            swiglu_hidden(hidden + (size_t)(r / K) * stride + (r % K) * I, x + (size_t)(r / K) * D, gate_up, w_type,
                          (size_t)e * 2 * I * D, D, I);
}
// ANCHOR_END: moe_v1_experts

// ANCHOR: moe_v1_combine
/**
 * Version 1, step 2 (ref/moe.c's moe_combine): thread (t, d) sums y_t[d] = Σ_k g_{k,t} (W_down,e_k h_{t,k})_d
 * in slot order, then adds the shared experts' (W_down h)_d. The down projection of each assignment is done
 * here because the scratch holds hidden units, not D-wide expert outputs.
 */
__global__ void moe_v1_combine_kernel(float *y, const float *hidden, const int *idx, const float *weight,
                                      const void *down, const void *shared_down, KernelDType w_type, int T, int D,
                                      int I, int K, int I_s)
{
    const size_t id = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (size_t)T * D) return;
    const int t = (int)(id / D), d = (int)(id % D);
    const float *h_t = hidden + (size_t)t * (K * I + I_s);
    float y_td = 0.0f;
    for (int k = 0; k < K; k++) {                                /* y_t = Σ_k g_{k,t} FFN_{e_k}(b_t), slot order */
        const size_t row = ((size_t)idx[t * K + k] * D + d) * I; /* row d of W_down of expert e_k */
        float o = 0.0f;
        for (int i = 0; i < I; i++) o += load_elem(down, w_type, row + i) * h_t[k * I + i];
        y_td += weight[t * K + k] * o;
    }
    if (I_s > 0) { /* + the shared experts */
        float o = 0.0f;
        for (int i = 0; i < I_s; i++) o += load_elem(shared_down, w_type, (size_t)d * I_s + i) * h_t[K * I + i];
        y_td += o;
    }
    y[id] = y_td;
}
// ANCHOR_END: moe_v1_combine
// ANCHOR_END: moe_v1

extern "C" cudaError_t moe_forward_v1(float *y, const float *x, const int *idx, const float *weight,
                                      const void *gate_up, const void *down, const void *shared_gate_up,
                                      const void *shared_down, KernelDType w_type, int T, int D, int I, int K, int I_s,
                                      float *hidden, cudaStream_t stream)
{
    LAUNCH(moe_v1_experts_kernel, dim3((unsigned)(T * K + (I_s > 0))), dim3(128), 0, stream, hidden, x, idx, gate_up,
           shared_gate_up, w_type, T, D, I, K, I_s);
    LAUNCH(moe_v1_combine_kernel, dim3(blocks_for((size_t)T * D, 128)), dim3(128), 0, stream, y, hidden, idx, weight,
           down, shared_down, w_type, T, D, I, K, I_s);
    return cudaGetLastError();
}

// ANCHOR: moe_v2
/** h[r, i] = silu(gate) · up from the fused GEMM output row [gate (I) | up (I)]. */
__global__ void swiglu_v2_kernel(void *h, KernelDType h_type, const float *gu, int rows, int I)
{
    const size_t n = (size_t)rows * I;
    for (size_t id = (size_t)blockIdx.x * blockDim.x + threadIdx.x; id < n; id += (size_t)gridDim.x * blockDim.x) {
        const size_t r = id / I, i = id % I;
        const float *row = gu + r * 2 * I;
        store_elem(h, h_type, id, silu(row[i]) * row[I + i]);
    }
}

/**
 * One block: thread e counts the (token, slot) pairs that chose expert e
 * (scanning in token order), thread 0 turns the counts into offsets, then
 * thread e hands out its rows in the same order.
 */
__global__ void moe_permute_v2_kernel(int *counts, int *offsets, int *slot_row, int *row_token, const int *idx, int T,
                                      int K, int E)
{
    const int n = T * K;
    for (int e = (int)threadIdx.x; e < E; e += (int)blockDim.x) {
        int c = 0;
        for (int r = 0; r < n; r++) c += idx[r] == e;
        counts[e] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        offsets[0] = 0;
        for (int e = 0; e < E; e++) offsets[e + 1] = offsets[e] + counts[e];
    }
    __syncthreads();
    for (int e = (int)threadIdx.x; e < E; e += (int)blockDim.x) {
        int next = offsets[e];
        for (int r = 0; r < n; r++)
            if (idx[r] == e) {
                slot_row[r] = next;
                row_token[next] = r / K;
                next++;
            }
    }
}

/** Block r copies token row_token[r]'s input into permuted row r, as xp_type. */
__global__ void moe_gather_v2_kernel(void *xp, KernelDType xp_type, const float *x, const int *row_token, int D)
{
    const size_t r = blockIdx.x, src = (size_t)row_token[r] * D;
    for (int d = (int)threadIdx.x; d < D; d += (int)blockDim.x) store_elem(xp, xp_type, r * D + d, x[src + d]);
}

/** Block t: y_t = Σ_k weight[t,k] · out[slot_row[t,k]] (k ascending), then + shared_t. */
__global__ void moe_combine_v2_kernel(float *y, const float *out, const int *slot_row, const float *weight,
                                      const float *shared, int K, int D)
{
    const int t = (int)blockIdx.x;
    for (int d = (int)threadIdx.x; d < D; d += (int)blockDim.x) {
        float acc = 0.0f;
        for (int k = 0; k < K; k++) acc += weight[t * K + k] * out[(size_t)slot_row[t * K + k] * D + d];
        if (shared) acc += shared[(size_t)t * D + d];
        y[(size_t)t * D + d] = acc;
    }
}
// ANCHOR_END: moe_v2

extern "C" cudaError_t swiglu_forward_v2(void *h, KernelDType h_type, const float *gu, int rows, int I,
                                         cudaStream_t stream)
{
    const size_t n = (size_t)rows * I;
    const unsigned int blocks = blocks_for(n, 256) < 4096 ? blocks_for(n, 256) : 4096;
    LAUNCH(swiglu_v2_kernel, dim3(blocks), dim3(256), 0, stream, h, h_type, gu, rows, I);
    return cudaGetLastError();
}

extern "C" cudaError_t moe_permute_v2(int *counts, int *offsets, int *slot_row, int *row_token, const int *idx, int T,
                                      int K, int E, cudaStream_t stream)
{
    const int threads = E < 1024 ? 32 * ((E + 31) / 32) : 1024;
    LAUNCH(moe_permute_v2_kernel, dim3(1), dim3((unsigned)threads), 0, stream, counts, offsets, slot_row, row_token,
           idx, T, K, E);
    return cudaGetLastError();
}

extern "C" cudaError_t moe_gather_v2(void *xp, KernelDType xp_type, const float *x, const int *row_token, int rows,
                                     int D, cudaStream_t stream)
{
    LAUNCH(moe_gather_v2_kernel, dim3((unsigned)rows), dim3(256), 0, stream, xp, xp_type, x, row_token, D);
    return cudaGetLastError();
}

extern "C" cudaError_t moe_combine_v2(float *y, const float *out, const int *slot_row, const float *weight,
                                      const float *shared, int T, int K, int D, cudaStream_t stream)
{
    LAUNCH(moe_combine_v2_kernel, dim3((unsigned)T), dim3(256), 0, stream, y, out, slot_row, weight, shared, K, D);
    return cudaGetLastError();
}

/* ---- the routed experts on permuted rows, offsets read on the device ------------------------- */

/** The expert owning permuted row r: the e with offsets[e] ≤ r < offsets[e + 1]. */
static __device__ int row_expert(const int *offsets, int E, int r)
{
    int e = 0;
    while (e < E - 1 && offsets[e + 1] <= r) e++;
    return e;
}

// ANCHOR: moe_experts_v1
/**
 * Version 1, step 1: thread (r, i) computes hidden unit i of permuted row r for
 * the expert owning r: silu(W_gate x_r)_i · (W_up x_r)_i, stored as the weights' type.
 */
__global__ void moe_experts_v1_hidden_kernel(void *hidden, const void *xp, const int *offsets, const void *gate_up,
                                             KernelDType w_type, int rows, int E, int D, int I)
{
    const size_t id = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (size_t)rows * I) return;
    const int r = (int)(id / I), i = (int)(id % I), e = row_expert(offsets, E, r);
    const size_t gate = ((size_t)e * 2 * I + i) * D, up = gate + (size_t)I * D;
    float g = 0.0f, u = 0.0f;
    for (int d = 0; d < D; d++) {
        const float x = load_elem(xp, w_type, (size_t)r * D + d);
        g += load_elem(gate_up, w_type, gate + d) * x;
        u += load_elem(gate_up, w_type, up + d) * x;
    }
    store_elem(hidden, w_type, id, silu(g) * u);
}

/** Version 1, step 2: thread (r, d) computes out[r, d] = (W_down,e h_r)_d for the expert e owning row r. */
__global__ void moe_experts_v1_down_kernel(float *out, const void *hidden, const int *offsets, const void *down,
                                           KernelDType w_type, int rows, int E, int D, int I)
{
    const size_t id = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (size_t)rows * D) return;
    const int r = (int)(id / D), d = (int)(id % D), e = row_expert(offsets, E, r);
    const size_t w = ((size_t)e * D + d) * I;
    float acc = 0.0f;
    for (int i = 0; i < I; i++) acc += load_elem(down, w_type, w + i) * load_elem(hidden, w_type, (size_t)r * I + i);
    out[id] = acc;
}
// ANCHOR_END: moe_experts_v1

extern "C" cudaError_t moe_experts_v1(float *out, void *hidden, const void *xp, const int *offsets, const void *gate_up,
                                      const void *down, KernelDType w_type, int rows, int E, int D, int I,
                                      cudaStream_t stream)
{
    LAUNCH(moe_experts_v1_hidden_kernel, dim3(blocks_for((size_t)rows * I, 128)), dim3(128), 0, stream, hidden, xp,
           offsets, gate_up, w_type, rows, E, D, I);
    LAUNCH(moe_experts_v1_down_kernel, dim3(blocks_for((size_t)rows * D, 128)), dim3(128), 0, stream, out, hidden,
           offsets, down, w_type, rows, E, D, I);
    return cudaGetLastError();
}

#define EXPERT_WARPS 8 /**< warps per block of the grouped kernels: one output unit each */
#define EXPERT_ROWS  4 /**< rows of one expert a warp carries at once (accumulators per lane) */

/** The j-th expert that has rows (ascending e), or −1 when fewer than j + 1 have any. */
static __device__ int active_expert(const int *offsets, int E, int j)
{
    for (int e = 0; e < E; e++)
        if (offsets[e + 1] > offsets[e] && j-- == 0) return e;
    return -1;
}

// ANCHOR: moe_experts_v2
/**
 * Version 2, step 1: block (tile, j) serves the j-th expert with rows; warp w of
 * it computes hidden unit i = tile·EXPERT_WARPS + w for every row of that expert,
 * EXPERT_ROWS rows at a time, so the W_gate and W_up rows are read once per
 * EXPERT_ROWS rows; lanes stride over D and meet in a warp sum.
 */
__global__ void moe_experts_v2_hidden_kernel(void *hidden, const void *xp, const int *offsets, const void *gate_up,
                                             KernelDType w_type, int E, int D, int I)
{
    const int e = active_expert(offsets, E, (int)blockIdx.y);
    const int lane = (int)threadIdx.x % 32, i = (int)blockIdx.x * EXPERT_WARPS + (int)threadIdx.x / 32;
    if (e < 0 || i >= I) /* uniform over the warp */
        return;
    const size_t gate = ((size_t)e * 2 * I + i) * D, up = gate + (size_t)I * D;
    for (int r0 = offsets[e]; r0 < offsets[e + 1]; r0 += EXPERT_ROWS) {
        const int n = min(EXPERT_ROWS, offsets[e + 1] - r0);
        float g[EXPERT_ROWS] = { 0.0f }, u[EXPERT_ROWS] = { 0.0f };
        for (int d = lane; d < D; d += 32) {
            const float wg = load_elem(gate_up, w_type, gate + d), wu = load_elem(gate_up, w_type, up + d);
#pragma unroll
            for (int k = 0; k < EXPERT_ROWS; k++) {
                if (k < n) {
                    const float x = load_elem(xp, w_type, (size_t)(r0 + k) * D + d);
                    g[k] += wg * x;
                    u[k] += wu * x;
                }
            }
        }
#pragma unroll
        for (int k = 0; k < EXPERT_ROWS; k++) {
            const float gk = warp_sum(g[k]), uk = warp_sum(u[k]);
            if (lane == 0 && k < n) store_elem(hidden, w_type, (size_t)(r0 + k) * I + i, silu(gk) * uk);
        }
    }
}

/** Version 2, step 2: as step 1 for out[r, d] = (W_down,e h_r)_d, warp w of block (tile, j) on d = tile·EXPERT_WARPS + w. */
__global__ void moe_experts_v2_down_kernel(float *out, const void *hidden, const int *offsets, const void *down,
                                           KernelDType w_type, int E, int D, int I)
{
    const int e = active_expert(offsets, E, (int)blockIdx.y);
    const int lane = (int)threadIdx.x % 32, d = (int)blockIdx.x * EXPERT_WARPS + (int)threadIdx.x / 32;
    if (e < 0 || d >= D) return;
    const size_t w = ((size_t)e * D + d) * I;
    for (int r0 = offsets[e]; r0 < offsets[e + 1]; r0 += EXPERT_ROWS) {
        const int n = min(EXPERT_ROWS, offsets[e + 1] - r0);
        float acc[EXPERT_ROWS] = { 0.0f };
        for (int i = lane; i < I; i += 32) {
            const float wd = load_elem(down, w_type, w + i);
#pragma unroll
            for (int k = 0; k < EXPERT_ROWS; k++)
                if (k < n) acc[k] += wd * load_elem(hidden, w_type, (size_t)(r0 + k) * I + i);
        }
#pragma unroll
        for (int k = 0; k < EXPERT_ROWS; k++) {
            const float sum = warp_sum(acc[k]);
            if (lane == 0 && k < n) out[(size_t)(r0 + k) * D + d] = sum;
        }
    }
}
// ANCHOR_END: moe_experts_v2

extern "C" cudaError_t moe_experts_v2(float *out, void *hidden, const void *xp, const int *offsets, const void *gate_up,
                                      const void *down, KernelDType w_type, int rows, int E, int D, int I,
                                      cudaStream_t stream)
{
    const unsigned int active = (unsigned int)(rows < E ? rows : E); /* at most this many experts have rows */
    LAUNCH(moe_experts_v2_hidden_kernel, dim3(blocks_for((size_t)I, EXPERT_WARPS), active), dim3(32 * EXPERT_WARPS), 0,
           stream, hidden, xp, offsets, gate_up, w_type, E, D, I);
    LAUNCH(moe_experts_v2_down_kernel, dim3(blocks_for((size_t)D, EXPERT_WARPS), active), dim3(32 * EXPERT_WARPS), 0,
           stream, out, hidden, offsets, down, w_type, E, D, I);
    return cudaGetLastError();
}

/* ---- version 3: 16-byte weight loads, the expert found by binary search ---------------------- */

/**
 * The expert whose rows begin at permuted row r, or −1 when r is inside an expert's rows: the last e with
 * offsets[e] ≤ r owns r (log₂ E reads of the offsets), and it begins there when offsets[e] = r.
 */
static __device__ int expert_starting_at(const int *offsets, int E, int r)
{
    int lo = 0, hi = E - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return offsets[lo] == r ? lo : -1;
}

/**
 * Σ_d w[d] x_k[d] for the n ≤ EXPERT_ROWS rows x_k = x + k·n_x, added into acc[k]; this lane's share of a
 * warp's pass over n_w elements: 8 at a time in 16-byte loads (load8) when wide, else element by element.
 */
static __device__ __forceinline__ void warp_rows_dot(float *acc, const void *w, size_t w0, const void *x, size_t x0,
                                                     size_t n_x, KernelDType type, int n_w, int n, int lane, int wide)
{
    if (wide) {
        for (int d = 8 * lane; d < n_w; d += 8 * 32) {
            float wv[8], xv[8];
            load8(w, type, w0 + d, wv);
#pragma unroll
            for (int k = 0; k < EXPERT_ROWS; k++) {
                if (k < n) {
                    load8(x, type, x0 + k * n_x + d, xv);
#pragma unroll
                    for (int v = 0; v < 8; v++) acc[k] += wv[v] * xv[v];
                }
            }
        }
    } else {
        for (int d = lane; d < n_w; d += 32) {
            const float wv = load_elem(w, type, w0 + d);
#pragma unroll
            for (int k = 0; k < EXPERT_ROWS; k++)
                if (k < n) acc[k] += wv * load_elem(x, type, x0 + k * n_x + d);
        }
    }
}

// ANCHOR: moe_experts_v3
/**
 * Version 3, step 1: block (tile, r) serves the expert whose rows begin at permuted row r (found by
 * expert_starting_at; other blocks return), warp w hidden unit i = tile·EXPERT_WARPS + w as in version 2.
 * When D is a multiple of 8 and the tensors are 16-byte aligned (wide), every weight and activation load
 * moves 16 bytes: a warp reads 512 contiguous bytes of a bf16 W_gate row per step.
 */
__global__ void moe_experts_v3_hidden_kernel(void *hidden, const void *xp, const int *offsets, const void *gate_up,
                                             KernelDType w_type, int E, int D, int I, int wide)
{
    const int e = expert_starting_at(offsets, E, (int)blockIdx.y);
    const int lane = (int)threadIdx.x % 32, i = (int)blockIdx.x * EXPERT_WARPS + (int)threadIdx.x / 32;
    if (e < 0 || i >= I) /* uniform over the warp */
        return;
    const size_t gate = ((size_t)e * 2 * I + i) * D, up = gate + (size_t)I * D;
    for (int r0 = offsets[e]; r0 < offsets[e + 1]; r0 += EXPERT_ROWS) {
        const int n = min(EXPERT_ROWS, offsets[e + 1] - r0);
        float g[EXPERT_ROWS] = { 0.0f }, u[EXPERT_ROWS] = { 0.0f };
        warp_rows_dot(g, gate_up, gate, xp, (size_t)r0 * D, (size_t)D, w_type, D, n, lane, wide);
        warp_rows_dot(u, gate_up, up, xp, (size_t)r0 * D, (size_t)D, w_type, D, n, lane, wide);
#pragma unroll
        for (int k = 0; k < EXPERT_ROWS; k++) {
            const float gk = warp_sum(g[k]), uk = warp_sum(u[k]);
            if (lane == 0 && k < n) store_elem(hidden, w_type, (size_t)(r0 + k) * I + i, silu(gk) * uk);
        }
    }
}

/** Version 3, step 2: as step 1 for out[r, d] = (W_down,e h_r)_d, warp w of block (tile, r) on d = tile·EXPERT_WARPS + w. */
__global__ void moe_experts_v3_down_kernel(float *out, const void *hidden, const int *offsets, const void *down,
                                           KernelDType w_type, int E, int D, int I, int wide)
{
    const int e = expert_starting_at(offsets, E, (int)blockIdx.y);
    const int lane = (int)threadIdx.x % 32, d = (int)blockIdx.x * EXPERT_WARPS + (int)threadIdx.x / 32;
    if (e < 0 || d >= D) return;
    const size_t w = ((size_t)e * D + d) * I;
    for (int r0 = offsets[e]; r0 < offsets[e + 1]; r0 += EXPERT_ROWS) {
        const int n = min(EXPERT_ROWS, offsets[e + 1] - r0);
        float acc[EXPERT_ROWS] = { 0.0f };
        warp_rows_dot(acc, down, w, hidden, (size_t)r0 * I, (size_t)I, w_type, I, n, lane, wide);
#pragma unroll
        for (int k = 0; k < EXPERT_ROWS; k++) {
            const float sum = warp_sum(acc[k]);
            if (lane == 0 && k < n) out[(size_t)(r0 + k) * D + d] = sum;
        }
    }
}
// ANCHOR_END: moe_experts_v3

extern "C" cudaError_t moe_experts_v3(float *out, void *hidden, const void *xp, const int *offsets, const void *gate_up,
                                      const void *down, KernelDType w_type, int rows, int E, int D, int I,
                                      cudaStream_t stream)
{
    const int wide =
        D % 8 == 0 && I % 8 == 0 && aligned16(hidden) && aligned16(xp) && aligned16(gate_up) && aligned16(down);
    LAUNCH(moe_experts_v3_hidden_kernel, dim3(blocks_for((size_t)I, EXPERT_WARPS), (unsigned)rows),
           dim3(32 * EXPERT_WARPS), 0, stream, hidden, xp, offsets, gate_up, w_type, E, D, I, wide);
    LAUNCH(moe_experts_v3_down_kernel, dim3(blocks_for((size_t)D, EXPERT_WARPS), (unsigned)rows),
           dim3(32 * EXPERT_WARPS), 0, stream, out, hidden, offsets, down, w_type, E, D, I, wide);
    return cudaGetLastError();
}

/* ---- version 3, fused: gather and shared experts inside the two grouped launches ------------- */

/** Σ_d w[w0 + d] x_k[d] for the n ≤ EXPERT_ROWS rows x_k = x + x_off[k] (float32 activations), added
 *  into acc[k]: warp_rows_dot with the rows anywhere in x, so the permuted copy of x is not needed. */
static __device__ __forceinline__ void warp_rows_dot_f32(float *acc, const void *w, size_t w0, KernelDType w_type,
                                                         const float *x, const size_t *x_off, int n_w, int n, int lane,
                                                         int wide)
{
    if (wide) {
        for (int d = 8 * lane; d < n_w; d += 8 * 32) {
            float wv[8], xv[8];
            load8(w, w_type, w0 + d, wv);
#pragma unroll
            for (int k = 0; k < EXPERT_ROWS; k++) {
                if (k < n) {
                    load8(x, KERNEL_F32, x_off[k] + d, xv);
#pragma unroll
                    for (int v = 0; v < 8; v++) acc[k] += wv[v] * xv[v];
                }
            }
        }
    } else {
        for (int d = lane; d < n_w; d += 32) {
            const float wv = load_elem(w, w_type, w0 + d);
#pragma unroll
            for (int k = 0; k < EXPERT_ROWS; k++)
                if (k < n) acc[k] += wv * x[x_off[k] + d];
        }
    }
}

// ANCHOR: moe_ffn_grouped_v3
/**
 * Fused version 3, step 1. Block (tile, y): for y < rows, the expert whose permuted rows begin at y (as
 * moe_experts_v3_hidden_kernel), reading token row_token[r]'s input straight from x; for y = rows + t,
 * the shared experts on token t, hidden units into shared_hidden. Warp w computes hidden unit
 * i = tile·EXPERT_WARPS + w of its rows: silu(W_gate x)_i · (W_up x)_i, stored as w_type.
 */
__global__ void moe_ffn_v3_hidden_kernel(void *hidden, void *shared_hidden, const float *x, const int *row_token,
                                         const int *offsets, const void *gate_up, const void *shared_gate_up,
                                         KernelDType w_type, int rows, int E, int D, int I, int I_s, int wide)
{
    const int y = (int)blockIdx.y, lane = (int)threadIdx.x % 32;
    const int i = (int)blockIdx.x * EXPERT_WARPS + (int)threadIdx.x / 32;
    const bool shared = y >= rows;
    const int e = shared ? 0 : expert_starting_at(offsets, E, y), units = shared ? I_s : I;
    if (e < 0 || i >= units) /* uniform over the warp */
        return;
    const void *w = shared ? shared_gate_up : gate_up;
    void *h = shared ? shared_hidden : hidden;
    const size_t gate = ((size_t)e * 2 * units + i) * D, up = gate + (size_t)units * D;
    const int first = shared ? y - rows : offsets[e], last = shared ? first + 1 : offsets[e + 1];
    for (int r0 = first; r0 < last; r0 += EXPERT_ROWS) {
        const int n = min(EXPERT_ROWS, last - r0);
        size_t x_off[EXPERT_ROWS];
#pragma unroll
        for (int k = 0; k < EXPERT_ROWS; k++) /* row r's token, or the shared row's own */
            x_off[k] = k < n ? (size_t)(shared ? r0 + k : row_token[r0 + k]) * D : 0;
        float g[EXPERT_ROWS] = { 0.0f }, u[EXPERT_ROWS] = { 0.0f };
        warp_rows_dot_f32(g, w, gate, w_type, x, x_off, D, n, lane, wide);
        warp_rows_dot_f32(u, w, up, w_type, x, x_off, D, n, lane, wide);
#pragma unroll
        for (int k = 0; k < EXPERT_ROWS; k++) {
            const float gk = warp_sum(g[k]), uk = warp_sum(u[k]);
            if (lane == 0 && k < n) store_elem(h, w_type, (size_t)(r0 + k) * units + i, silu(gk) * uk);
        }
    }
}

/** Fused version 3, step 2: block (tile, y) as step 1, warp w on output d = tile·EXPERT_WARPS + w:
 *  out[r, d] = (W_down,e h_r)_d for routed rows, shared_out[t, d] = (W_down,shared h_t)_d for y = rows + t. */
__global__ void moe_ffn_v3_down_kernel(float *out, float *shared_out, const void *hidden, const void *shared_hidden,
                                       const int *offsets, const void *down, const void *shared_down,
                                       KernelDType w_type, int rows, int E, int D, int I, int I_s, int wide)
{
    const int y = (int)blockIdx.y, lane = (int)threadIdx.x % 32;
    const int d = (int)blockIdx.x * EXPERT_WARPS + (int)threadIdx.x / 32;
    const bool shared = y >= rows;
    const int e = shared ? 0 : expert_starting_at(offsets, E, y), units = shared ? I_s : I;
    if (e < 0 || d >= D) return;
    const size_t w = ((size_t)e * D + d) * units;
    const int first = shared ? y - rows : offsets[e], last = shared ? first + 1 : offsets[e + 1];
    float *o = shared ? shared_out : out;
    for (int r0 = first; r0 < last; r0 += EXPERT_ROWS) {
        const int n = min(EXPERT_ROWS, last - r0);
        float acc[EXPERT_ROWS] = { 0.0f };
        warp_rows_dot(acc, shared ? shared_down : down, w, shared ? shared_hidden : hidden, (size_t)r0 * units,
                      (size_t)units, w_type, units, n, lane, wide);
#pragma unroll
        for (int k = 0; k < EXPERT_ROWS; k++) {
            const float sum = warp_sum(acc[k]);
            if (lane == 0 && k < n) o[(size_t)(r0 + k) * D + d] = sum;
        }
    }
}
// ANCHOR_END: moe_ffn_grouped_v3

extern "C" cudaError_t moe_ffn_grouped_v3(float *out, float *shared_out, void *hidden, void *shared_hidden,
                                          const float *x, const int *row_token, const int *offsets, const void *gate_up,
                                          const void *down, const void *shared_gate_up, const void *shared_down,
                                          KernelDType w_type, int T, int rows, int E, int D, int I, int I_s,
                                          cudaStream_t stream)
{
    const int wide = D % 8 == 0 && I % 8 == 0 && I_s % 8 == 0 && aligned16(x) && aligned16(hidden) &&
                     aligned16(gate_up) && aligned16(down) &&
                     (I_s == 0 || (aligned16(shared_hidden) && aligned16(shared_gate_up) && aligned16(shared_down)));
    const unsigned int ys = (unsigned int)(rows + (I_s > 0 ? T : 0)), units = (unsigned int)(I > I_s ? I : I_s);
    LAUNCH(moe_ffn_v3_hidden_kernel, dim3(blocks_for(units, EXPERT_WARPS), ys), dim3(32 * EXPERT_WARPS), 0, stream,
           hidden, shared_hidden, x, row_token, offsets, gate_up, shared_gate_up, w_type, rows, E, D, I, I_s, wide);
    LAUNCH(moe_ffn_v3_down_kernel, dim3(blocks_for((size_t)D, EXPERT_WARPS), ys), dim3(32 * EXPERT_WARPS), 0, stream,
           out, shared_out, hidden, shared_hidden, offsets, down, shared_down, w_type, rows, E, D, I, I_s, wide);
    return cudaGetLastError();
}
