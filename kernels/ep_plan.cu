/**
 * \file ep_plan.cu
 * \brief Expert parallelism without the host (paper §2.2.3, §3.2): every device derives its dispatch plan
 *        from the all-gathered routing, gathers its rows into fixed-capacity blocks, expands what it
 *        received to its local experts, and combines typed (float32 or bf16) payloads (fast/ep.c).
 *
 * Layout of one host-free call over N devices, device s holding T_s tokens, global token g = first[s] + t:
 *   - the dispatch buffer of source s is N blocks of T_s rows, block q row t = token t's hidden state when
 *     it has a kept expert on device q (a token reaches a device at most once, so T_s rows bound a block);
 *   - the receive buffer of device r is indexed by g: block s lands at rows [first[s], first[s + 1]);
 *   - the partials go back the same way: receiver r's row g returns to source s's row r·T_s + t.
 * Every size the exchange needs (T_s) is known to the host; which rows are real is known only on the
 * devices, and every device knows it because each holds the same gathered routing.
 */
#include "common.cuh"

/* Row of assignment (g, k) in the gathered routing ([N][T_max][K]: each device's T_max rows). */
static __device__ size_t gathered_at(const EpLayout &L, int g, int k)
{
    int s = 0;
    while (g >= L.first[s + 1]) s++;
    return ((size_t)s * L.T_max + (g - L.first[s])) * L.K + k;
}

/* Whether token g has a kept expert on device q (idx_kept holds E where an assignment was dropped). */
static __device__ bool token_on(const int *idx_kept, const EpLayout &L, int g, int q)
{
    const int per = L.E / L.N;
    for (int k = 0; k < L.K; k++) {
        const int e = idx_kept[(size_t)g * L.K + k];
        if (e < L.E && e / per == q) return true;
    }
    return false;
}

// ANCHOR: ep_plan
/**
 * One block, device r's plan (docs: fast_ep.h, "host-free steps"):
 *   A. every assignment a = g·K + k kept or dropped by drop_tokens' rule: on a device whose load exceeds the
 *      budget, the load − budget assignments first in (weight ascending, index descending) order drop;
 *   B. the local permutation: local expert j's rows are its kept assignments in token order, from
 *      expert_off[j] (counting, then a prefix sum by thread 0);
 *   C. per token g: the expanded rows of its slots on r, k ascending, padded with −1;
 *   D. per own token t: the rows of its returned partials, devices ascending, padded with −1,
 *      and for each destination q whether row (q, t) of the dispatch buffer carries t (else −1).
 */
__global__ void ep_plan_kernel(EpDevicePlan p, const int *idx_all, const float *weight_all, EpLayout L, int r)
{
    const int N = L.N, E = L.E, K = L.K, per = E / N, total = L.first[N], n = total * K;
    const int Kl = min(K, per), Kd = min(K, N), T_r = L.first[r + 1] - L.first[r];
    const int tid = (int)threadIdx.x, step = (int)blockDim.x;
    for (int a = tid; a < n; a += step) { /* A */
        const int e = idx_all[gathered_at(L, a / K, a % K)];
        bool kept = true;
        if (L.budget >= 0) {
            const int dev = e / per;
            const float w = weight_all[gathered_at(L, a / K, a % K)];
            int load = 0, before = 0;
            for (int b = 0; b < n; b++) {
                const size_t at = gathered_at(L, b / K, b % K);
                if (idx_all[at] / per != dev) continue;
                load++;
                const float wb = weight_all[at];
                before += wb < w || (wb == w && b > a);
            }
            kept = before >= load - L.budget;
        }
        p.idx_kept[a] = kept ? e : E;
    }
    __syncthreads();
    for (int j = tid; j < per; j += step) { /* B: counts */
        int c = 0;
        for (int a = 0; a < n; a++) c += p.idx_kept[a] == r * per + j;
        p.expert_off[j + 1] = c;
    }
    __syncthreads();
    if (tid == 0) {
        p.expert_off[0] = 0;
        for (int j = 0; j < per; j++) p.expert_off[j + 1] += p.expert_off[j];
    }
    __syncthreads();
    for (int j = tid; j < per; j += step) { /* B: rows, token order */
        int next = p.expert_off[j];
        for (int a = 0; a < n; a++)
            if (p.idx_kept[a] == r * per + j) {
                p.slot[a] = next;
                p.expand_row[next++] = a / K;
            }
    }
    __syncthreads();
    for (int g = tid; g < total; g += step) { /* C */
        int j = 0;
        for (int k = 0; k < K; k++) {
            const int a = g * K + k, e = p.idx_kept[a];
            if (e < E && e / per == r) {
                p.part_slot[g * Kl + j] = p.slot[a];
                p.part_weight[g * Kl + j++] = weight_all[gathered_at(L, g, k)];
            }
        }
        for (; j < Kl; j++) {
            p.part_slot[g * Kl + j] = -1;
            p.part_weight[g * Kl + j] = 0.0f;
        }
    }
    for (int t = tid; t < T_r; t += step) { /* D */
        const int g = L.first[r] + t;
        int j = 0;
        for (int q = 0; q < N; q++) {
            const bool on = token_on(p.idx_kept, L, g, q);
            p.send_token[q * T_r + t] = on ? t : -1;
            if (on) {
                p.comb_slot[t * Kd + j] = q * T_r + t;
                p.comb_weight[t * Kd + j++] = 1.0f;
            }
        }
        for (; j < Kd; j++) {
            p.comb_slot[t * Kd + j] = -1;
            p.comb_weight[t * Kd + j] = 0.0f;
        }
    }
}
// ANCHOR_END: ep_plan

/** Block r: xp[r] = x[row_token[r]] as xp_type, or zeros when row_token[r] < 0 (a padding row). */
__global__ void ep_gather_kernel(void *xp, KernelDType xp_type, const float *x, const int *row_token, int D)
{
    const size_t r = blockIdx.x;
    const int t = row_token[r];
    for (int d = (int)threadIdx.x; d < D; d += (int)blockDim.x)
        store_elem(xp, xp_type, r * D + d, t < 0 ? 0.0f : x[(size_t)t * D + d]);
}

/** Block n < offsets[experts]: xe[n] = xr[expand_row[n]], converted from xr_type to xe_type; later blocks return. */
__global__ void ep_expand_kernel(void *xe, KernelDType xe_type, const void *xr, KernelDType xr_type,
                                 const int *expand_row, const int *offsets, int experts, int D)
{
    const size_t n = blockIdx.x;
    if ((int)n >= offsets[experts]) return;
    const size_t src = (size_t)expand_row[n] * D;
    for (int d = (int)threadIdx.x; d < D; d += (int)blockDim.x)
        store_elem(xe, xe_type, n * D + d, load_elem(xr, xr_type, src + d));
}

// ANCHOR: ep_combine
/**
 * Block t: y_t = Σ_k weight[t,k] · in[slot[t,k]] over the slots ≥ 0 (float32, k ascending; in read as in_type
 * and widened), then + shared_t when shared is not NULL, stored as y_type.
 */
__global__ void ep_combine_kernel(void *y, KernelDType y_type, const void *in, KernelDType in_type, const int *slot,
                                  const float *weight, const float *shared, int K, int D)
{
    const int t = (int)blockIdx.x;
    for (int d = (int)threadIdx.x; d < D; d += (int)blockDim.x) {
        float acc = 0.0f;
        for (int k = 0; k < K; k++) {
            const int s = slot[t * K + k];
            if (s >= 0) acc += weight[t * K + k] * load_elem(in, in_type, (size_t)s * D + d);
        }
        if (shared) acc += shared[(size_t)t * D + d];
        store_elem(y, y_type, (size_t)t * D + d, acc);
    }
}
// ANCHOR_END: ep_combine

extern "C" cudaError_t ep_plan_v1(EpDevicePlan p, const int *idx_all, const float *weight_all, EpLayout L, int r,
                                  cudaStream_t stream)
{
    if (L.N < 1 || L.N > EP_MAX_DEVICES || L.E % L.N != 0 || r < 0 || r >= L.N) return cudaErrorInvalidValue;
    LAUNCH(ep_plan_kernel, dim3(1), dim3(256), 0, stream, p, idx_all, weight_all, L, r);
    return cudaGetLastError();
}

extern "C" cudaError_t ep_gather_v1(void *xp, KernelDType xp_type, const float *x, const int *row_token, int rows,
                                    int D, cudaStream_t stream)
{
    if (rows < 1) return cudaSuccess;
    LAUNCH(ep_gather_kernel, dim3((unsigned)rows), dim3(256), 0, stream, xp, xp_type, x, row_token, D);
    return cudaGetLastError();
}

extern "C" cudaError_t ep_expand_v1(void *xe, KernelDType xe_type, const void *xr, KernelDType xr_type,
                                    const int *expand_row, const int *offsets, int experts, int rows, int D,
                                    cudaStream_t stream)
{
    if (rows < 1) return cudaSuccess;
    LAUNCH(ep_expand_kernel, dim3((unsigned)rows), dim3(256), 0, stream, xe, xe_type, xr, xr_type, expand_row, offsets,
           experts, D);
    return cudaGetLastError();
}

extern "C" cudaError_t ep_combine_v1(void *y, KernelDType y_type, const void *in, KernelDType in_type, const int *slot,
                                     const float *weight, const float *shared, int rows, int K, int D,
                                     cudaStream_t stream)
{
    if (rows < 1) return cudaSuccess;
    LAUNCH(ep_combine_kernel, dim3((unsigned)rows), dim3(256), 0, stream, y, y_type, in, in_type, slot, weight, shared,
           K, D);
    return cudaGetLastError();
}
