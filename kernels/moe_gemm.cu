/**
 * \file moe_gemm.cu
 * \brief The routed experts of a prompt chunk as a grouped GEMM (paper §2.2): every expert's rows in two
 *        launches whose blocks find their expert from the permutation's offsets on the device.
 *
 * moe_permute_v2 sorts the chunk's (token, slot) pairs by expert, so expert e owns the contiguous
 * permuted rows [offsets[e], offsets[e + 1]). A tile is GEMM_BM of those rows (never two experts'
 * rows) times GEMM_BN weight rows. The number of tiles is Σ_e ⌈n_e / GEMM_BM⌉ ≤ ⌈rows / GEMM_BM⌉ +
 * min(E, rows), known on the host from rows and E alone, so the grid never waits for the offsets:
 * blocks past the last tile return at once. The literal version of the same function is
 * moe_experts_v1 (kernels/moe.cu); both round the hidden layer once to the weights' type and
 * accumulate in float32.
 */
#include "common.cuh"

#define GEMM_BM      64  /**< permuted rows of one expert per tile */
#define GEMM_BN      128 /**< weight rows per tile (down: outputs; gate/up: 64 gate then 64 up rows) */
#define GEMM_BK      16  /**< reduction slice staged in shared memory */
#define GEMM_THREADS 256 /**< 16 × 16 threads, each 4 rows × 8 weight rows of the tile */
#define GEMM_TM      4   /**< tile rows per thread (ty + 16·i) */
#define GEMM_TN      8   /**< tile columns per thread (tx + 16·j) */

/* The inner product over shared memory touches no global memory, so the counted build (sim/count_hooks.c
 * counts global traffic only) need not instrument it: without the hooks it runs at the simulator's speed. */
#ifdef __CUDACC__
#define SHARED_ONLY /**< nvcc: nothing to mark */
#else
#define SHARED_ONLY __attribute__((no_sanitize_thread)) /**< not instrumented by the counted build */
#endif

/** SwiGLU of one unit: silu(g) · u = g / (1 + e^{−g}) · u, as kernels/moe.cu's swiglu_v2_kernel computes it. */
static __device__ __forceinline__ float swiglu_unit(float g, float u)
{
    return g / (1.0f + expf(-g)) * u;
}

/** Where one tile of a block lives: expert, its first permuted row and the end of its rows. */
struct ExpertTile {
    int expert; /**< −1: no tile for this block */
    int row0;   /**< first permuted row */
    int row1;   /**< one past the last row of the tile */
};

/**
 * Tile `tile` of the grouped GEMM: expert e contributes ⌈n_e / GEMM_BM⌉ tiles in expert order. Thread i
 * sums the tile counts of its run of experts, a block scan turns them into starts, and the thread whose
 * run holds the tile walks it. Every thread gets the answer (two shared-memory arrays, free on return).
 */
static __device__ ExpertTile expert_tile(const int *offsets, int E, int tile)
{
    __shared__ int scan[GEMM_THREADS];
    __shared__ ExpertTile found;
    const int tid = (int)threadIdx.x, per = (E + GEMM_THREADS - 1) / GEMM_THREADS;
    const int e0 = min(E, tid * per), e1 = min(E, e0 + per);
    int n = 0;
    for (int e = e0; e < e1; e++) n += (offsets[e + 1] - offsets[e] + GEMM_BM - 1) / GEMM_BM;
    scan[tid] = n;
    if (tid == 0) found.expert = -1;
    __syncthreads();
    for (int off = 1; off < GEMM_THREADS; off *= 2) { /* inclusive prefix sum over the threads */
        const int v = tid >= off ? scan[tid - off] : 0;
        __syncthreads();
        scan[tid] += v;
        __syncthreads();
    }
    if (tile >= scan[tid] - n && tile < scan[tid]) {
        int first = scan[tid] - n;
        for (int e = e0; e < e1; e++) {
            const int r0 = offsets[e], tiles = (offsets[e + 1] - r0 + GEMM_BM - 1) / GEMM_BM;
            if (tile < first + tiles) {
                const int row0 = r0 + (tile - first) * GEMM_BM;
                found = ExpertTile{ e, row0, min(row0 + GEMM_BM, offsets[e + 1]) };
                break;
            }
            first += tiles;
        }
    }
    __syncthreads();
    return found;
}

/**
 * Stages k-slice [k0, k0 + GEMM_BK) of n rows of a [·, K] tensor into dst[n][GEMM_BK] (float): row i is
 * src row rows[i], or zeros where rows[i] < 0 or past K. 16-byte loads when `vec` (K a multiple of 8,
 * src 16-byte aligned), element loads otherwise.
 */
static __device__ void stage_rows(float *dst, const void *src, KernelDType type, const long long *rows, int n, int K,
                                  int k0, bool vec)
{
    if (vec) {
        for (int i = (int)threadIdx.x; i < n * (GEMM_BK / 8); i += GEMM_THREADS) {
            const int r = i / (GEMM_BK / 8), k = k0 + (i % (GEMM_BK / 8)) * 8;
            float v[8] = { 0, 0, 0, 0, 0, 0, 0, 0 };
            if (rows[r] >= 0 && k < K) load8(src, type, (size_t)rows[r] * K + k, v);
            for (int j = 0; j < 8; j++) dst[r * GEMM_BK + k - k0 + j] = v[j];
        }
    } else {
        for (int i = (int)threadIdx.x; i < n * GEMM_BK; i += GEMM_THREADS) {
            const int r = i / GEMM_BK, k = k0 + i % GEMM_BK;
            dst[i] = rows[r] >= 0 && k < K ? load_elem(src, type, (size_t)rows[r] * K + k) : 0.0f;
        }
    }
}

/** acc[i][j] += Σ_k a[ty + 16i][k] · w[tx + 16j][k] over one staged slice. */
static __device__ SHARED_ONLY void tile_fma(float acc[GEMM_TM][GEMM_TN], const float *a, const float *w)
{
    const int ty = (int)threadIdx.x / 16, tx = (int)threadIdx.x % 16;
    for (int k = 0; k < GEMM_BK; k++) {
        float av[GEMM_TM], wv[GEMM_TN];
#pragma unroll
        for (int i = 0; i < GEMM_TM; i++) av[i] = a[(ty + 16 * i) * GEMM_BK + k];
#pragma unroll
        for (int j = 0; j < GEMM_TN; j++) wv[j] = w[(tx + 16 * j) * GEMM_BK + k];
#pragma unroll
        for (int i = 0; i < GEMM_TM; i++)
#pragma unroll
            for (int j = 0; j < GEMM_TN; j++) acc[i][j] += av[i] * wv[j];
    }
}

/**
 * acc = A_tile · W_tileᵀ over K: A rows a_rows[GEMM_BM] and weight rows w_rows[GEMM_BN] (−1: zero rows),
 * both [·, K] of type, staged GEMM_BK columns at a time (16-byte loads when vec).
 */
static __device__ void tile_gemm(float acc[GEMM_TM][GEMM_TN], const void *A, const long long *a_rows, const void *W,
                                 const long long *w_rows, KernelDType type, int K, bool vec)
{
    __shared__ float a_s[GEMM_BM * GEMM_BK], w_s[GEMM_BN * GEMM_BK];
    for (int i = 0; i < GEMM_TM; i++)
        for (int j = 0; j < GEMM_TN; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += GEMM_BK) {
        stage_rows(a_s, A, type, a_rows, GEMM_BM, K, k0, vec);
        stage_rows(w_s, W, type, w_rows, GEMM_BN, K, k0, vec);
        __syncthreads();
        tile_fma(acc, a_s, w_s);
        __syncthreads();
    }
}

// ANCHOR: moe_gemm_v4
/**
 * Block (tile, n): hidden units [n·64, n·64 + 64) of the tile's rows. Its weight rows are expert e's
 * 64 W_gate rows then the matching 64 W_up rows, so a thread holds both halves of its units
 * (columns j and j + 4 of its accumulators) and applies SwiGLU in the epilogue:
 * hidden[r, i] = silu(g) · u, rounded once to the weights' type.
 */
__global__ void moe_gemm_v4_gate_up_kernel(void *hidden, const void *xp, const int *offsets, const void *gate_up,
                                           KernelDType w_type, int E, int D, int I, bool vec)
{
    __shared__ long long a_rows[GEMM_BM], w_rows[GEMM_BN];
    const ExpertTile t = expert_tile(offsets, E, (int)blockIdx.x);
    if (t.expert < 0) return;
    const int n0 = (int)blockIdx.y * (GEMM_BN / 2);
    for (int i = (int)threadIdx.x; i < GEMM_BM; i += GEMM_THREADS) a_rows[i] = t.row0 + i < t.row1 ? t.row0 + i : -1;
    for (int i = (int)threadIdx.x; i < GEMM_BN; i += GEMM_THREADS) {
        const int unit = n0 + i % (GEMM_BN / 2), up = i / (GEMM_BN / 2);
        w_rows[i] = unit < I ? (long long)t.expert * 2 * I + (long long)up * I + unit : -1;
    }
    __syncthreads();
    float acc[GEMM_TM][GEMM_TN];
    tile_gemm(acc, xp, a_rows, gate_up, w_rows, w_type, D, vec);
    const int ty = (int)threadIdx.x / 16, tx = (int)threadIdx.x % 16;
    for (int i = 0; i < GEMM_TM; i++) {
        const int r = t.row0 + ty + 16 * i;
        for (int j = 0; j < GEMM_TN / 2; j++) {
            const int unit = n0 + tx + 16 * j;
            if (r < t.row1 && unit < I)
                store_elem(hidden, w_type, (size_t)r * I + unit, swiglu_unit(acc[i][j], acc[i][j + GEMM_TN / 2]));
        }
    }
}

/** Block (tile, n): out[r, d] = (W_down,e hidden_r)_d for d ∈ [n·128, n·128 + 128) of the tile's rows. */
__global__ void moe_gemm_v4_down_kernel(float *out, const void *hidden, const int *offsets, const void *down,
                                        KernelDType w_type, int E, int D, int I, bool vec)
{
    __shared__ long long a_rows[GEMM_BM], w_rows[GEMM_BN];
    const ExpertTile t = expert_tile(offsets, E, (int)blockIdx.x);
    if (t.expert < 0) return;
    const int d0 = (int)blockIdx.y * GEMM_BN;
    for (int i = (int)threadIdx.x; i < GEMM_BM; i += GEMM_THREADS) a_rows[i] = t.row0 + i < t.row1 ? t.row0 + i : -1;
    for (int i = (int)threadIdx.x; i < GEMM_BN; i += GEMM_THREADS)
        w_rows[i] = d0 + i < D ? (long long)t.expert * D + d0 + i : -1;
    __syncthreads();
    float acc[GEMM_TM][GEMM_TN];
    tile_gemm(acc, hidden, a_rows, down, w_rows, w_type, I, vec);
    const int ty = (int)threadIdx.x / 16, tx = (int)threadIdx.x % 16;
    for (int i = 0; i < GEMM_TM; i++) {
        const int r = t.row0 + ty + 16 * i;
        for (int j = 0; j < GEMM_TN; j++) {
            const int d = d0 + tx + 16 * j;
            if (r < t.row1 && d < D) out[(size_t)r * D + d] = acc[i][j];
        }
    }
}
// ANCHOR_END: moe_gemm_v4

/** Grid columns for rows permuted rows over E experts: every tile whatever the offsets turn out to be. */
static unsigned int gemm_tiles(int rows, int E)
{
    return blocks_for((size_t)rows, GEMM_BM) + (unsigned int)(E < rows ? E : rows);
}

extern "C" cudaError_t moe_experts_v4(float *out, void *hidden, const void *xp, const int *offsets, const void *gate_up,
                                      const void *down, KernelDType w_type, int rows, int E, int D, int I,
                                      cudaStream_t stream)
{
    if (rows < 1 || E < 1 || D < 1 || I < 1) return cudaErrorInvalidValue;
    const unsigned int tiles = gemm_tiles(rows, E);
    LAUNCH(moe_gemm_v4_gate_up_kernel, dim3(tiles, blocks_for((size_t)I, GEMM_BN / 2)), dim3(GEMM_THREADS), 0, stream,
           hidden, xp, offsets, gate_up, w_type, E, D, I, D % 8 == 0 && aligned16(xp) && aligned16(gate_up));
    LAUNCH(moe_gemm_v4_down_kernel, dim3(tiles, blocks_for((size_t)D, GEMM_BN)), dim3(GEMM_THREADS), 0, stream, out,
           hidden, offsets, down, w_type, E, D, I, I % 8 == 0 && aligned16(hidden) && aligned16(down));
    return cudaGetLastError();
}
