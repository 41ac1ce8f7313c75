/**
 * \file prefill.c
 * \brief The attention of prompt chunks on the device: MLA in the absorbed form over tiles of the latent
 *        cache (FAST_MLA_PREFILL), so a chunk's memory does not grow with the context and nothing waits
 *        for the host. (The routed experts of a chunk run as one grouped GEMM pair: FAST_MOE_GEMM in
 *        fast_moe_forward_experts().)
 */
#include "fast.h"

#include "error.h"

// ANCHOR: fast_mla_prefill
int fast_mla_prefill(FastContext *ctx, const FastMla *w, const void *cache, MlaDims dims, const FastPositions *at,
                     int T, FastScratch *s)
{
    const int nh = dims.n_h, dn = dims.d_n, dr = dims.d_r, dv = dims.d_v, dc = dims.d_c, dq = dn + dr;
    const size_t esz = kernel_dtype_size(ctx->wtype), n_q = (size_t)T * nh * dq, n_lat = (size_t)T * nh * dc;
    const char *kv_b = w->kv_b_proj.data;
    const bool bf16 = ctx->wtype != KERNEL_F32;
    if (!mla_prefill_supported(dims))
        return ds_error("fast_mla_prefill: kv_lora_rank %d or qk_rope_head_dim %d exceeds the prompt kernel's 512 / 64",
                        dc, dr);
    if (T > s->max_T || (bf16 && (n_q > ctx->stage_elems || n_lat > ctx->stage_elems)))
        return ds_error("fast_mla_prefill: %d tokens exceed the scratch's %d or the staging buffer of %zu", T, s->max_T,
                        ctx->stage_elems);
    /* q^L_{t,h} = W^UK_hᵀ q^N_{t,h}: per head, (d_c × T) = (W^UK_h as d_c × d_n) · (q^N_h as d_n × T) */
    const void *q_in = s->q;
    if (bf16) {
        CUDA_TRY(convert_forward_v2(ctx->stage, ctx->wtype, s->q, n_q, ctx->stream));
        q_in = ctx->stage;
    }
    if (fast_gemm_heads(ctx, CUBLAS_OP_N, dc, T, dn, kv_b, ctx->wtype, dc, (long long)(dn + dv) * dc, q_in, nh * dq, dq,
                        s->q_lat, nh * dc, dc, nh))
        return -1;
    /* o^L_{t,h} over the token's own rows, online softmax over tiles of 16 rows shared by a block's heads;
     * in bf16 mode straight into the staging buffer the W^UV GEMM reads (q_in is consumed) */
    void *o_lat = bf16 ? ctx->stage : (void *)s->o_lat;
    CUDA_TRY(FAST_MLA_PREFILL(o_lat, ctx->wtype, s->q_lat, s->q, cache, ctx->wtype, dims, at->pos, at->base, T,
                              ctx->stream));
    /* o_{t,h} = W^UV_h o^L_{t,h}: (d_v × T) = op_T(W^UV_h as d_c × d_v) · (o^L_h as d_c × T) */
    return fast_gemm_heads(ctx, CUBLAS_OP_T, dv, T, dc, kv_b + (size_t)dn * dc * esz, ctx->wtype, dc,
                           (long long)(dn + dv) * dc, o_lat, nh * dc, dc, s->o, nh * dv, dv, nh);
}
// ANCHOR_END: fast_mla_prefill
