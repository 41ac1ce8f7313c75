/**
 * \file mla_decode_split_off_by_one.cu
 * \brief Kernel lab example (deliberately wrong): split-sequence absorbed MLA decode whose splits overlap by one key.
 *
 * Flash-decoding over the latent cache (paper §2.1.2, absorbed form): the
 * keys j ≤ pos0 + t of each query are cut into splits of 64; one warp per
 * (split, head, token) runs an online softmax over its split and writes a
 * partial (m, l, acc[d_c]); a second kernel merges the splits. The last key
 * of every split but the final one is the first key of the next split as
 * well, so that key is counted twice. With one split (context ≤ 64 keys) the
 * result is right; beyond, it is not.
 *
 *     make check-kernel COMPONENT=mla_decode SRC=kernels/examples/mla_decode_split_off_by_one.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

/** Keys of the cache one split covers. */
#define KEYS_PER_SPLIT  64
/** Latent dims per lane: d_c ≤ 512 over 32 lanes. */
#define MAX_DC_PER_LANE (512 / 32)
/** RoPE dims per lane: d_r ≤ 64 over 32 lanes. */
#define MAX_DR_PER_LANE (64 / 32)

/** Element i of the cache as float (float32 or bfloat16 storage). */
static __device__ float cache_at(const void *cache, KernelDType type, size_t i)
{
    return type == KERNEL_F32 ? static_cast<const float *>(cache)[i]
                              : __bfloat162float(static_cast<const __nv_bfloat16 *>(cache)[i]);
}

// ANCHOR: split_off_by_one
/**
 * Block (split, h, t) of one warp. Lane l holds q^L_c, q^R_c and the accumulator for dims c = l + 32·i.
 * Online softmax over the split's keys: m' = max(m, s_j), l' = l·e^{m−m'} + e^{s_j−m'},
 * acc' = acc·e^{m−m'} + e^{s_j−m'}·ĉ_j. Partial record: [acc (d_c) ; m ; l].
 */
__global__ void decode_split_kernel(float *partial, const float *q_lat, const float *q, const void *cache,
                                    KernelDType cache_type, MlaDims dims, int pos0, int n_split)
{
    const int split = (int)blockIdx.x, h = (int)blockIdx.y, t = (int)blockIdx.z, lane = (int)threadIdx.x;
    const int dc = dims.d_c, dr = dims.d_r, width = dc + dr, n_keys = pos0 + t + 1;
    const float *ql = q_lat + ((size_t)t * dims.n_h + h) * dc;
    const float *qr = q + ((size_t)t * dims.n_h + h) * (dims.d_n + dr) + dims.d_n;
    float q_l[MAX_DC_PER_LANE], q_r[MAX_DR_PER_LANE], acc[MAX_DC_PER_LANE];
    for (int i = 0; i < MAX_DC_PER_LANE; i++) {
        q_l[i] = lane + 32 * i < dc ? ql[lane + 32 * i] : 0.0f;
        acc[i] = 0.0f;
    }
    for (int i = 0; i < MAX_DR_PER_LANE; i++) q_r[i] = lane + 32 * i < dr ? qr[lane + 32 * i] : 0.0f;
    const int first = split * KEYS_PER_SPLIT;
    /* BUG (deliberate): `last` should be min(first + KEYS_PER_SPLIT, n_keys) − 1; this makes the
     * first key of the next split this split's last one too, so it is counted twice. */
    const int last = min(first + KEYS_PER_SPLIT, n_keys - 1);
    float m = -INFINITY, l = 0.0f;
    for (int j = first; j <= last; j++) {
        const size_t row = (size_t)j * width;
        float c_hat[MAX_DC_PER_LANE], dot = 0.0f;
        for (int i = 0; i < MAX_DC_PER_LANE; i++) {
            c_hat[i] = lane + 32 * i < dc ? cache_at(cache, cache_type, row + lane + 32 * i) : 0.0f;
            dot += q_l[i] * c_hat[i]; /* q^L·ĉ_j */
        }
        for (int i = 0; i < MAX_DR_PER_LANE; i++)
            if (lane + 32 * i < dr)
                dot += q_r[i] * cache_at(cache, cache_type, row + dc + lane + 32 * i); /* q^R·k^R_j */
        for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        const float s = dims.scale * dot, m_new = fmaxf(m, s);
        const float rescale = expf(m - m_new), p = expf(s - m_new);
        l = l * rescale + p;
        for (int i = 0; i < MAX_DC_PER_LANE; i++) acc[i] = acc[i] * rescale + p * c_hat[i];
        m = m_new;
    }
    float *out = partial + (((size_t)t * dims.n_h + h) * n_split + split) * (dc + 2);
    for (int i = 0; i < MAX_DC_PER_LANE; i++)
        if (lane + 32 * i < dc) out[lane + 32 * i] = acc[i];
    if (lane == 0) {
        out[dc] = m; /* −∞ for a split past this token's keys */
        out[dc + 1] = l;
    }
}
// ANCHOR_END: split_off_by_one

/** Block (h, t): o^L = Σ_s e^{m_s−M} acc_s / Σ_s e^{m_s−M} l_s, M = max_s m_s, over splits that saw a key. */
__global__ void decode_merge_kernel(float *o_lat, const float *partial, MlaDims dims, int n_split)
{
    const int h = (int)blockIdx.x, t = (int)blockIdx.y, dc = dims.d_c;
    const float *rec = partial + ((size_t)t * dims.n_h + h) * n_split * (dc + 2);
    float M = -INFINITY, L = 0.0f;
    for (int s = 0; s < n_split; s++) M = fmaxf(M, rec[(size_t)s * (dc + 2) + dc]);
    for (int s = 0; s < n_split; s++) {
        const float m_s = rec[(size_t)s * (dc + 2) + dc];
        if (m_s > -INFINITY) L += expf(m_s - M) * rec[(size_t)s * (dc + 2) + dc + 1];
    }
    for (int c = (int)threadIdx.x; c < dc; c += (int)blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < n_split; s++) {
            const float m_s = rec[(size_t)s * (dc + 2) + dc];
            if (m_s > -INFINITY) v += expf(m_s - M) * rec[(size_t)s * (dc + 2) + c];
        }
        o_lat[((size_t)t * dims.n_h + h) * dc + c] = v / L;
    }
}

extern "C" cudaError_t lab_mla_decode(float *o_lat, const float *q_lat, const float *q, const void *cache,
                                      KernelDType cache_type, MlaDims dims, int pos0, int T, float *partial,
                                      cudaStream_t stream)
{
    if (dims.d_c > 32 * MAX_DC_PER_LANE || dims.d_r > 32 * MAX_DR_PER_LANE) return cudaErrorInvalidValue;
    const int n_split = (pos0 + T + KEYS_PER_SPLIT - 1) / KEYS_PER_SPLIT;
    LAUNCH(decode_split_kernel, dim3((unsigned)n_split, (unsigned)dims.n_h, (unsigned)T), dim3(32), 0, stream, partial,
           q_lat, q, cache, cache_type, dims, pos0, n_split);
    LAUNCH(decode_merge_kernel, dim3((unsigned)dims.n_h, (unsigned)T), dim3(128), 0, stream, o_lat, partial, dims,
           n_split);
    return cudaGetLastError();
}
