/**
 * \file moe_v5.cu
 * \brief The MoE FFN of a decode step in one launch after the gate (moe_route_v4 in router.cu): version 4's
 *        three launches (hidden rows, down rows, the combine with its residual+norm tail) as stages of one
 *        launch (kernels/stage.cuh), the combine folded into the down stage (docs/semantics.md §3.6.2,
 *        §3.6.4, §3.2).
 */
#include "common.cuh"
#include "moe_grouped.cuh"
#include "stage.cuh"

#define V5_STAGES 2   /**< stage counters: 0 the hidden rows are written, 1 the outputs are added into h */
#define V5_SLOTS  256 /**< (token, slot) weights and rows a stage-1 block holds at once for its combine */
#define V5_SLICE  16 /**< outputs of D a stage-1 block owns: ⌈D/16⌉ blocks, 128 at V2-Lite's width (about one per SM) */

static_assert(STAGE_COUNTER_INTS(V5_STAGES) == MOE_V5_COUNTERS, "MOE_V5_COUNTERS in kernels.h");

/** How a launch of moe_ffn_v5 splits into stages: blocks of each, and the rows a block stages per pass. */
struct V5Grid {
    int tiles;  /**< blocks of 64 hidden units per block row of stage 0 */
    int hidden; /**< blocks of stage 0: tiles × (active-expert rows + the shared row) */
    int down;   /**< blocks of stage 1: ⌈D / V5_SLICE⌉ */
    int norm;   /**< blocks of the norm: T with h, else 0 */
    int pass_h; /**< input rows staged per pass in stage 0 */
    int pass_d; /**< hidden rows staged per pass in stage 1 */
    int wide;   /**< 16-byte weight and activation loads */
    int wide4;  /**< 16-byte accesses of the [T, D] float32 rows */
};

/** v4_stage for rows another block wrote in this launch: n rows of width w into xs, through L2. */
static __device__ void v5_stage_cg(float *xs, const void *src, KernelDType t, const size_t *src0, int n, int w,
                                   int wide)
{
    if (wide) {
        for (int i = 8 * (int)threadIdx.x; i < n * w; i += 8 * (int)blockDim.x)
            load8_cg(src, t, src0[i / w] + i % w, xs + i);
    } else {
        for (int i = (int)threadIdx.x; i < n * w; i += (int)blockDim.x)
            xs[i] = load_elem_cg(src, t, src0[i / w] + i % w);
    }
}

// ANCHOR: moe_ffn_v5_stages
/**
 * Stage 0, version 4's hidden kernel on block row y and tile: h_i = silu(W_gate x)_i · (W_up x)_i for the 64
 * units of the tile, for every row of the row's expert (or every token for the shared experts).
 */
static __device__ void v5_hidden(const MoeFfn &p, float *xs, int y, int tile, int per_pass, int wide)
{
    __shared__ int slot[3];
    __shared__ size_t src0[V4_ROWS];
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32, tid = (int)threadIdx.x;
    int e, first, last;
    bool shared;
    if (!v4_slot_of(slot, p.offsets, y, p.T * p.K, p.E, p.T, e, first, last, shared)) return;
    const int units = shared ? p.I_s : p.I, u0 = tile * V4_UNITS, u1 = min(units, u0 + V4_UNITS);
    if (u0 >= units) return; /* the whole block */
    const void *w = shared ? p.shared_gate_up : p.gate_up;
    void *h = shared ? p.shared_hidden : p.hidden;
    for (int r0 = first; r0 < last; r0 += per_pass) {
        const int n = min(per_pass, last - r0);
        __syncthreads(); /* the previous pass has read the stage */
        if (tid < n) src0[tid] = (size_t)(shared ? r0 + tid : p.row_token[r0 + tid]) * p.D;
        __syncthreads();
        v4_stage(xs, p.x, KERNEL_F32, src0, n, p.D, wide);
        __syncthreads();
        for (int i = u0 + warp; i < u1; i += V4_WARPS) {
            const size_t gate = ((size_t)e * 2 * units + i) * p.D, up = gate + (size_t)units * p.D;
            float g[V4_ROWS] = { 0.0f }, u[V4_ROWS] = { 0.0f };
            v4_dot(g, w, p.w_type, gate, xs, p.D, n, lane, wide);
            v4_dot(u, w, p.w_type, up, xs, p.D, n, lane, wide);
#pragma unroll
            for (int k = 0; k < V4_ROWS; k++) {
                if (k < n) { /* uniform over the warp */
                    const float gk = warp_sum(g[k]), uk = warp_sum(u[k]);
                    if (lane == 0) store_elem(h, p.w_type, (size_t)(r0 + k) * units + i, silu_v4(gk) * uk);
                }
            }
        }
    }
}

/**
 * Stage 1 on outputs [d0, d0 + V5_SLICE) for all T tokens: for each active expert in turn, then the shared experts,
 * its hidden rows (written by stage 0, read through L2) staged once per pass and warp w on d = d0 + w, + 8, …:
 * out[r, d] = (W_down,e h_r)_d. Then the combine of the slice in a fixed order, k ascending, then the shared
 * experts: y_t[d] = Σ_k g_{k,t} out[slot_row[t,k], d] + shared_t[d], or with h, h_t[d] ← h_t[d] + y_t[d].
 */
static __device__ void v5_down(const MoeFfn &p, float *hs, int d0, int per_pass, int wide, int wide4)
{
    __shared__ int slot[3];
    __shared__ size_t src0[V4_ROWS];
    __shared__ float g[V5_SLOTS];
    __shared__ int row[V5_SLOTS];
    const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32, tid = (int)threadIdx.x;
    const int rows = p.T * p.K, d1 = min(p.D, d0 + V5_SLICE), ys = min(rows, p.E) + (p.I_s > 0);
    for (int y = 0; y < ys; y++) {
        int e, first, last;
        bool shared;
        __syncthreads(); /* every thread has read the previous row's slot */
        if (!v4_slot_of(slot, p.offsets, y, rows, p.E, p.T, e, first, last, shared)) continue;
        const int units = shared ? p.I_s : p.I;
        const void *w = shared ? p.shared_down : p.down, *src = shared ? p.shared_hidden : p.hidden;
        float *o = shared ? p.shared_out : p.out;
        for (int r0 = first; r0 < last; r0 += per_pass) {
            const int n = min(per_pass, last - r0);
            __syncthreads();
            if (tid < n) src0[tid] = (size_t)(r0 + tid) * units;
            __syncthreads();
            v5_stage_cg(hs, src, p.w_type, src0, n, units, wide);
            __syncthreads();
            for (int d = d0 + warp; d < d1; d += V4_WARPS) {
                float acc[V4_ROWS] = { 0.0f };
                v4_dot(acc, w, p.w_type, ((size_t)e * p.D + d) * units, hs, units, n, lane, wide);
#pragma unroll
                for (int k = 0; k < V4_ROWS; k++) {
                    if (k < n) {
                        const float sum = warp_sum(acc[k]);
                        if (lane == 0) o[(size_t)(r0 + k) * p.D + d] = sum;
                    }
                }
            }
        }
    }
    const int cols = (d1 - d0 + 3) / 4, tc = V5_SLOTS / p.K; /* float4 columns; tokens per round */
    for (int t0 = 0; t0 < p.T; t0 += tc) {
        const int nt = min(tc, p.T - t0);
        __syncthreads(); /* the previous round has read g and row (the first: this block's out is written) */
        for (int i = tid; i < nt * p.K; i += (int)blockDim.x) {
            g[i] = p.weight[t0 * p.K + i];
            row[i] = p.slot_row[t0 * p.K + i];
        }
        __syncthreads();
        for (int i = tid; i < nt * cols; i += (int)blockDim.x) {
            const int j = i / cols, t = t0 + j, d = d0 + 4 * (i % cols);
            float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            for (int k = 0; k < p.K; k++) {
                const float gk = g[j * p.K + k];
                const float4 o = v4_load4(p.out + (size_t)row[j * p.K + k] * p.D, d, p.D, wide4);
                acc = make_float4(acc.x + gk * o.x, acc.y + gk * o.y, acc.z + gk * o.z, acc.w + gk * o.w);
            }
            if (p.I_s > 0) {
                const float4 s = v4_load4(p.shared_out + (size_t)t * p.D, d, p.D, wide4);
                acc = make_float4(acc.x + s.x, acc.y + s.y, acc.z + s.z, acc.w + s.w);
            }
            float *dst = p.h ? p.h : p.y;
            if (p.h) { /* h' = h + y */
                const float4 hv = v4_load4(p.h + (size_t)t * p.D, d, p.D, wide4);
                acc = make_float4(hv.x + acc.x, hv.y + acc.y, hv.z + acc.z, hv.w + acc.w);
            }
            v4_store4(dst + (size_t)t * p.D, d, p.D, wide4, acc);
        }
    }
}
// ANCHOR_END: moe_ffn_v5_stages

// ANCHOR: moe_ffn_v5
/** The next RMSNorm of token t once stage 1 is done: a_t = norm ⊙ h_t / sqrt(mean(h_t²) + ε), h_t read once. */
static __device__ void v5_norm(const MoeFfn &p, float *hs, int t, int wide4)
{
    __shared__ float scratch[32];
    const float *ht = p.h + (size_t)t * p.D;
    float ss = 0.0f;
    if (wide4) {
        for (int i = 4 * (int)threadIdx.x; i < p.D; i += 4 * (int)blockDim.x) {
            const float4 v = __ldcg(reinterpret_cast<const float4 *>(ht + i));
            *reinterpret_cast<float4 *>(hs + i) = v;
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = (int)threadIdx.x; i < p.D; i += (int)blockDim.x) {
            hs[i] = __ldcg(ht + i);
            ss += hs[i] * hs[i];
        }
    }
    const float inv_rms = 1.0f / sqrtf(block_sum(ss, scratch) / (float)p.D + p.eps);
    for (int i = (int)threadIdx.x; i < p.D; i += (int)blockDim.x)
        p.a[(size_t)t * p.D + i] = p.norm[i] * (hs[i] * inv_rms);
}

/**
 * Version 5: one launch, blocks in ticket order (stage_ticket): first v5_hidden's blocks, then v5_down's, each
 * waiting for all of stage 0, then with h one v5_norm block per token, waiting for all of stage 1.
 */
__global__ void moe_ffn_v5_kernel(MoeFfn p, V5Grid grid, float *y, float *h, float *a, float *out, float *shared_out,
                                  void *hidden, void *shared_hidden, int *counters)
{
    /* the memory it writes, also as plain arguments (the simulator's race check restores those between runs) */
    p.y = y;
    p.h = h;
    p.a = a;
    p.out = out;
    p.shared_out = shared_out;
    p.hidden = hidden;
    p.shared_hidden = shared_hidden;
    p.counters = counters;
    DYNAMIC_SHARED(float, smem);
    const int ticket = stage_ticket(p.counters);
    if (ticket < grid.hidden) {
        v5_hidden(p, smem, ticket / grid.tiles, ticket % grid.tiles, grid.pass_h, grid.wide);
        stage_signal(p.counters, 0);
    } else if (ticket < grid.hidden + grid.down) {
        stage_wait(p.counters, 0, grid.hidden);
        v5_down(p, smem, (ticket - grid.hidden) * V5_SLICE, grid.pass_d, grid.wide, grid.wide4);
        stage_signal(p.counters, 1);
    } else {
        stage_wait(p.counters, 1, grid.down);
        v5_norm(p, smem, ticket - grid.hidden - grid.down, grid.wide4);
    }
    stage_exit(p.counters, V5_STAGES);
}
// ANCHOR_END: moe_ffn_v5

extern "C" cudaError_t moe_ffn_v5(MoeFfn p, cudaStream_t stream)
{
    const int units = p.I > p.I_s ? p.I : p.I_s, rows = p.T * p.K;
    if (p.T < 1 || p.K < 1 || p.K > p.E || p.K > 32 || p.D < 1 || p.D > MOE_V4_MAX_WIDTH || units > MOE_V4_MAX_WIDTH ||
        !p.counters || (p.h && (!p.a || !p.norm)))
        return cudaErrorInvalidValue;
    V5Grid g;
    g.tiles = (int)blocks_for((size_t)units, V4_UNITS);
    g.hidden = g.tiles * ((rows < p.E ? rows : p.E) + (p.I_s > 0));
    g.down = (int)blocks_for((size_t)p.D, V5_SLICE);
    g.norm = p.h ? p.T : 0;
    g.pass_h = v4_pass_rows(p.D, p.T);
    g.pass_d = v4_pass_rows(units, p.T);
    g.wide = p.D % 8 == 0 && p.I % 8 == 0 && p.I_s % 8 == 0 && aligned16(p.x) && aligned16(p.hidden) &&
             aligned16(p.gate_up) && aligned16(p.down) &&
             (p.I_s == 0 || (aligned16(p.shared_hidden) && aligned16(p.shared_gate_up) && aligned16(p.shared_down)));
    g.wide4 = p.D % 4 == 0 && aligned16(p.out) && (p.I_s == 0 || aligned16(p.shared_out)) &&
              (p.h ? aligned16(p.h) : aligned16(p.y));
    size_t smem = (size_t)g.pass_h * p.D;
    smem = smem > (size_t)g.pass_d * units ? smem : (size_t)g.pass_d * units;
    smem = sizeof(float) * (smem > (size_t)p.D ? smem : (size_t)p.D);
    const cudaError_t err = v4_allow_smem((const void *)moe_ffn_v5_kernel, smem);
    if (err != cudaSuccess) return err;
    LAUNCH(moe_ffn_v5_kernel, dim3((unsigned)(g.hidden + g.down + g.norm)), dim3(32 * V4_WARPS), smem, stream, p, g,
           p.y, p.h, p.a, p.out, p.shared_out, p.hidden, p.shared_hidden, p.counters);
    return cudaGetLastError();
}
