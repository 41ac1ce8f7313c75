/**
 * \file layers.c
 * \brief The components on the device: SwiGLU, MoE (permuted by expert; a grouped kernel for small steps, a
 *        grouped GEMM for prompts) and MLA (absorbed over the latent cache: the split decode for steps, the
 *        tiled prompt kernel of fast/prefill.c for chunks).
 */
#include "fast.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

static int imax(int a, int b)
{
    return a > b ? a : b;
}

/* Widest FFN hidden layer of cfg: dense, one expert, or the fused shared experts. */
static int ffn_width(const ModelConfig *cfg)
{
    return imax(cfg->intermediate_size,
                imax(cfg->moe_intermediate_size, cfg->n_shared_experts * cfg->moe_intermediate_size));
}

/* Ints before the decode's partials: its (token, head group) counters and the staged products' counters, rounded
 * up to 4 so that the partials start on a 16-byte boundary (the decode stores them as float4). */
static size_t decode_counter_ints(int n_h, int max_T)
{
    return (mla_decode_v3_counters(n_h, max_T) + GEMV_V3_COUNTER_INTS + 3) / 4 * 4;
}

/* Elements of FastScratch.hidden: a MoE step's routed rows (I_e each) then its T shared rows (N_s·I_e),
 * or T rows of the dense FFN, whichever is larger. */
static size_t hidden_elems(const ModelConfig *cfg, size_t T, size_t rows)
{
    const size_t I_e = cfg->moe_intermediate_size, moe = rows * I_e + T * cfg->n_shared_experts * I_e;
    const size_t dense = T * ffn_width(cfg);
    return moe > dense ? moe : dense;
}

size_t fast_stage_elems(const ModelConfig *cfg, int max_T)
{
    const int nh = cfg->num_attention_heads, dq = config_qk_head_dim(cfg), dc = cfg->kv_lora_rank;
    int w = imax(cfg->hidden_size, imax(cfg->q_lora_rank, dc));
    w = imax(w, imax(nh * cfg->v_head_dim, imax(nh * dq, nh * dc)));
    return (size_t)max_T * w;
}

// ANCHOR: fast_scratch_sizes
int fast_scratch_sizes(const ModelConfig *cfg, KernelDType wtype, int max_T, int max_ctx,
                       size_t bytes[FAST_SCRATCH_BUFFERS])
{
    const size_t T = (size_t)max_T, D = cfg->hidden_size, E = cfg->n_routed_experts;
    const size_t K = cfg->num_experts_per_tok > 0 ? cfg->num_experts_per_tok : 1, I = ffn_width(cfg);
    const size_t nh = cfg->num_attention_heads, dq = config_qk_head_dim(cfg), dc = cfg->kv_lora_rank;
    const size_t dr = cfg->qk_rope_head_dim, dn = cfg->qk_nope_head_dim, dv = cfg->v_head_dim;
    const size_t esz = kernel_dtype_size(wtype), rows = T * K;
    const MlaDims dims = { (int)nh, (int)dn, (int)dr, (int)dv, (int)dc, 0.0f };
    /* elements and element size of each buffer, in FastScratch's field order (logits … partial) */
    const size_t n[FAST_SCRATCH_BUFFERS][2] = {
        { moe_route_v4_floats((int)E, (int)D, (int)T), 4 },
        { rows, 4 },
        { rows, 4 },
        { E, 4 },
        { 2 * E + 2 + (T > MOE_V5_COUNTERS ? T : MOE_V5_COUNTERS), 4 },
        { rows, 4 },
        { rows, 4 },
        { rows * D, esz },
        { T * 2 * I, 4 },
        { hidden_elems(cfg, T, rows), esz },
        { rows * D, 4 },
        { T * D, 4 },
        { T * nh * dq, 4 },
        { T * (cfg->q_lora_rank ? cfg->q_lora_rank : 1), 4 },
        { T * (dc + dr), 4 },
        { T * nh * dv, 4 },
        { T * nh * dc, 4 },
        { T * nh * dc, 4 },
        { decode_counter_ints(dims.n_h, max_T) + mla_decode_v3_partial_floats(dims, max_T, max_ctx), 4 }
    };
    fast_buffer_bytes(n, FAST_SCRATCH_BUFFERS, bytes);
    return FAST_SCRATCH_BUFFERS;
}
// ANCHOR_END: fast_scratch_sizes

size_t fast_scratch_bytes(const ModelConfig *cfg, KernelDType wtype, int max_T, int max_ctx)
{
    size_t bytes[FAST_SCRATCH_BUFFERS], sum = 0;
    fast_scratch_sizes(cfg, wtype, max_T, max_ctx, bytes);
    for (int i = 0; i < FAST_SCRATCH_BUFFERS; i++) sum += bytes[i];
    return sum;
}

int fast_scratch_init(FastScratch *s, const FastContext *ctx, const ModelConfig *cfg, int max_T, int max_ctx)
{
    memset(s, 0, sizeof *s);
    s->max_T = max_T;
    s->max_ctx = max_ctx;
    /* the device router's limits, refused here once rather than by a failed launch in every MoE layer */
    if (cfg->n_routed_experts > ROUTER_MAX_E)
        return ds_error("fast_scratch_init: n_routed_experts = %d exceeds the device router's %d",
                        cfg->n_routed_experts, ROUTER_MAX_E);
    if (cfg->n_routed_experts > 0 && cfg->n_group > ROUTER_MAX_G)
        return ds_error("fast_scratch_init: n_group = %d exceeds the device router's %d", cfg->n_group, ROUTER_MAX_G);
    /* the grouped experts stage one input row (hidden_size) or hidden row (the widest expert) in 48 KB */
    if (cfg->n_routed_experts > 0 && cfg->hidden_size > MOE_V4_MAX_WIDTH)
        return ds_error("fast_scratch_init: hidden_size = %d exceeds the grouped experts' %d", cfg->hidden_size,
                        MOE_V4_MAX_WIDTH);
    if (cfg->n_routed_experts > 0 &&
        imax(cfg->moe_intermediate_size, cfg->n_shared_experts * cfg->moe_intermediate_size) > MOE_V4_MAX_WIDTH)
        return ds_error(
            "fast_scratch_init: moe_intermediate_size = %d × %d shared experts exceeds the grouped experts' %d",
            cfg->moe_intermediate_size, cfg->n_shared_experts, MOE_V4_MAX_WIDTH);
    void **dst[FAST_SCRATCH_BUFFERS] = { (void **)&s->logits,     (void **)&s->idx,
                                         (void **)&s->weight,     (void **)&s->counts,
                                         (void **)&s->offsets,    (void **)&s->slot_row,
                                         (void **)&s->row_token,  &s->xp,
                                         (void **)&s->gu,         &s->hidden,
                                         (void **)&s->expert_out, (void **)&s->shared_out,
                                         (void **)&s->q,          (void **)&s->c_q,
                                         (void **)&s->kv,         (void **)&s->o,
                                         (void **)&s->q_lat,      (void **)&s->o_lat,
                                         (void **)&s->partial };
    size_t bytes[FAST_SCRATCH_BUFFERS];
    fast_scratch_sizes(cfg, ctx->wtype, max_T, max_ctx, bytes);
    for (int i = 0; i < FAST_SCRATCH_BUFFERS; i++) CUDA_TRY(cudaMalloc(dst[i], bytes[i]));
    const MlaDims dims = { cfg->num_attention_heads, cfg->qk_nope_head_dim, cfg->qk_rope_head_dim,
                           cfg->v_head_dim,          cfg->kv_lora_rank,     0.0f };
    /* the decode's (token, head group) counters and the staged products' counters lead the partials; zero once,
     * every launch leaves them zero */
    CUDA_TRY(cudaMemset(s->partial, 0, sizeof(int) * decode_counter_ints(dims.n_h, max_T)));
    /* the grouped MoE's counters (moe_route_v4's after the offsets and active experts, then moe_ffn_v5's or
     * moe_combine_v4's) */
    CUDA_TRY(cudaMemset(s->offsets, 0, bytes[4]));
    return 0;
}

void fast_scratch_free(FastScratch *s)
{
    void *dev[] = { s->logits, s->idx, s->weight, s->counts,     s->offsets,    s->slot_row, s->row_token,
                    s->xp,     s->gu,  s->hidden, s->expert_out, s->shared_out, s->q,        s->c_q,
                    s->kv,     s->o,   s->q_lat,  s->o_lat,      s->partial };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    memset(s, 0, sizeof *s);
}

// ANCHOR: fast_swiglu
int fast_swiglu_forward(FastContext *ctx, float *y, const float *x, const FastSwiglu *w, int T, FastScratch *s)
{
    const int I = w->down.cols;
    if (fast_linear(ctx, s->gu, x, &w->gate_up, T)) /* [W_gate x | W_up x], [T, 2I] */
        return -1;
    CUDA_TRY(swiglu_forward_v2(s->hidden, ctx->wtype, s->gu, T, I, ctx->stream));
    return fast_gemm(ctx, y, s->hidden, ctx->wtype, I, w->down.data, w->down.dtype, w->down.rows, I, T);
}
// ANCHOR_END: fast_swiglu

// ANCHOR: fast_moe
int fast_moe_forward_experts(FastContext *ctx, float *y, const float *x, const FastMoe *w, const ModelConfig *cfg,
                             int T, FastScratch *s, FastMoeExperts how, const FastResidualNorm *tail)
{
    const int D = cfg->hidden_size, E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    const int I = cfg->moe_intermediate_size;
    const RouterParams p = { E,
                             K,
                             cfg->n_group,
                             cfg->topk_group,
                             (int)cfg->topk_method,
                             (int)cfg->scoring_func,
                             cfg->norm_topk_prob,
                             cfg->routed_scaling_factor };

    const bool grouped = how == FAST_MOE_GROUPED || (how == FAST_MOE_AUTO && T * K <= FAST_MOE_GROUPED_MAX_ROWS);
    const int I_s = w->shared.down.data ? w->shared.down.cols : 0;

    if (grouped) {
        /* small steps in two launches, none waiting for the host (a decode step can be captured):
         * 1. g = W_gate b_t, s_{i,t}, top-K, weights and the permutation by expert, in one launch */
        CUDA_TRY(FAST_MOE_ROUTE(s->idx, s->weight, s->offsets, s->slot_row, s->row_token, s->logits, x, w->router,
                                w->bias, p, T, D, ctx->stream));
        /* 2. stages of one launch: the active experts on their rows and the shared experts on every token
         *    (gate/up with SwiGLU, reading the tokens' rows in place), then per slice of D the down rows and
         *    y_t = Σ_k g_{k,t} FFN_{e_k}(b_t) + shared in a fixed order; with a tail, h += y and the next norm */
        const MoeFfn f = { .y = y,
                           .h = tail ? tail->h : NULL,
                           .a = tail ? tail->a : NULL,
                           .norm = tail ? tail->norm : NULL,
                           .eps = tail ? tail->eps : 0.0f,
                           .out = s->expert_out,
                           .shared_out = I_s ? s->shared_out : NULL,
                           .hidden = s->hidden,
                           .shared_hidden = (char *)s->hidden + (size_t)T * K * I * kernel_dtype_size(ctx->wtype),
                           .x = x,
                           .row_token = s->row_token,
                           .offsets = s->offsets,
                           .slot_row = s->slot_row,
                           .weight = s->weight,
                           .gate_up = w->gate_up.data,
                           .down = w->down.data,
                           .shared_gate_up = I_s ? w->shared.gate_up.data : NULL,
                           .shared_down = I_s ? w->shared.down.data : NULL,
                           .w_type = ctx->wtype,
                           .T = T,
                           .K = K,
                           .E = E,
                           .D = D,
                           .I = I,
                           .I_s = I_s,
                           .counters = s->offsets + 2 * E + 2 };
        CUDA_TRY(FAST_MOE_FFN(f, ctx->stream));
        return 0;
    }

    /* a prompt's shared experts first, as GEMMs: they use the same gate/up and hidden buffers as the routed ones */
    if (I_s && fast_swiglu_forward(ctx, s->shared_out, x, &w->shared, T, s)) return -1;

    /* 1. route: g = W_gate b_t in float32, then s_{i,t}, top-K and weights in one kernel */
    if (fast_gemm(ctx, s->logits, x, KERNEL_F32, D, w->router, KERNEL_F32, E, D, T)) return -1;
    CUDA_TRY(FAST_ROUTER(s->idx, s->weight, s->logits, s->logits, w->bias, p, T, ctx->stream));

    /* 2. permute (token, slot) pairs by expert */
    CUDA_TRY(moe_permute_v2(s->counts, s->offsets, s->slot_row, s->row_token, s->idx, T, K, E, ctx->stream));

    /* 3. prompts gather the rows into one grouped GEMM pair, offsets read on the device */
    CUDA_TRY(moe_gather_v2(s->xp, ctx->wtype, x, s->row_token, T * K, D, ctx->stream));
    CUDA_TRY(FAST_MOE_GEMM(s->expert_out, s->hidden, s->xp, s->offsets, w->gate_up.data, w->down.data, ctx->wtype,
                           T * K, E, D, I, ctx->stream));

    /* 4. y_t = Σ_k g_{k,t} FFN_{e_k}(b_t) in slot order, + shared; then the tail, if any */
    CUDA_TRY(
        moe_combine_v2(y, s->expert_out, s->slot_row, s->weight, I_s ? s->shared_out : NULL, T, K, D, ctx->stream));
    if (tail) CUDA_TRY(FAST_RMSNORM_RESIDUAL(tail->a, tail->h, y, tail->norm, T, D, tail->eps, ctx->stream));
    return 0;
}
// ANCHOR_END: fast_moe

int fast_gemm_heads(FastContext *ctx, cublasOperation_t opA, int m, int n, int k, const void *A, KernelDType type,
                    int lda, long long strideA, const void *B, int ldb, long long strideB, float *C, int ldc,
                    long long strideC, int heads)
{
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType t = type == KERNEL_F32 ? CUDA_R_32F : CUDA_R_16BF;
    BLAS_TRY(cublasGemmStridedBatchedEx(ctx->blas, opA, CUBLAS_OP_N, m, n, k, &one, A, t, lda, strideA, B, t, ldb,
                                        strideB, &zero, C, CUDA_R_32F, ldc, strideC, heads, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* x in the weights' type: x itself in float32 mode, else its bf16 copy in ctx->stage. */
static const void *staged(FastContext *ctx, const float *x, size_t n)
{
    if (ctx->wtype == KERNEL_F32) return x;
    if (n > ctx->stage_elems) {
        ds_error("fast_mla_forward: %zu activations exceed the staging buffer of %zu", n, ctx->stage_elems);
        return NULL;
    }
    if (fast_check_cuda(convert_forward_v2(ctx->stage, ctx->wtype, x, n, ctx->stream), "convert_forward_v2", __FILE__,
                        __LINE__))
        return NULL;
    return ctx->stage;
}

/* One product of the decode path: y (rows < split) and y2 (the rest) = W x for T tokens, x float32 [T, W->cols]. */
static Gemv gemv_of(const FastMat *W, const void *x, KernelDType x_type, int T, float *y, int ldy, int split, float *y2,
                    int ldy2)
{
    return (Gemv){ .W = W->data,
                   .w_type = W->dtype,
                   .rows = W->rows,
                   .cols = W->cols,
                   .group = W->rows,
                   .x = x,
                   .x_type = x_type,
                   .ldx = W->cols,
                   .y = y,
                   .y2 = y2,
                   .ldy = ldy,
                   .ldy2 = ldy2,
                   .split = split,
                   .T = T };
}

// ANCHOR: fast_mla_decode
/*
 * The absorbed form for a decode step of T ≤ FAST_DECODE_MAX_T tokens in three launches, the first and the
 * last in stages (kernels/stage.cuh), each over a few hundred blocks where the shapes allow:
 *   1. [c^KV ; k^R_raw ; q] = [W^DKV; W^KR; W^Q] a_t (or c^Q with W^DQ), then in its last block the cache
 *      row [RMSNorm(c^KV) ; RoPE(k^R)] and RoPE of q^R (or RMSNorm of c^Q); with query compression a
 *      stage q = W^UQ c^Q with RoPE of q^R in its last block; then a stage q^L_{t,h} = W^UK_hᵀ q^N_{t,h};
 *   2. mla_decode_v3: o^L over the cache, each row read once per 16 heads;
 *   3. o_{t,h} = W^UV_h o^L_{t,h} for all heads, then a stage out = W^O o with the fused tail
 *      (h += out; a = RMSNorm(h)) in its last block.
 */
static int mla_decode_step(FastContext *ctx, float *out, const float *a, const FastMla *w, void *cache,
                           const ModelConfig *cfg, const Rope *rope, const float *inv_freq, const FastPositions *at,
                           int T, FastScratch *s, const FastResidualNorm *tail)
{
    const int nh = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int dv = cfg->v_head_dim, dc = cfg->kv_lora_rank, dq = dn + dr, dcq = cfg->q_lora_rank;
    const MlaDims dims = { nh, dn, dr, dv, dc, rope->softmax_scale };
    /* the stages' counters follow the decode's; launches 1 and 3 use them in turn, each leaves them zero */
    int *counters = (int *)s->partial + mla_decode_v3_counters(nh, s->max_T);
    Gemv in[2] = { gemv_of(&w->in_proj, a, KERNEL_F32, T, s->kv, dc + dr, dc + dr, dcq ? s->c_q : s->q,
                           dcq ? dcq : nh * dq),
                   gemv_of(&w->q_b_proj, s->c_q, KERNEL_F32, T, s->q, nh * dq, nh * dq, NULL, 0) };
    GemvTail in_tail[2] = { { .kind = GEMV_TAIL_LATENT,
                              .cache = cache,
                              .cache_type = ctx->wtype,
                              .kv_a_norm = w->kv_a_norm,
                              .latent_eps = LATENT_NORM_EPS,
                              .dims = dims,
                              .inv_freq = inv_freq,
                              .cos_sin_scale = rope->cos_sin_scale,
                              .pos = at->pos,
                              .base = at->base,
                              .q_norm = dcq ? w->q_a_norm : NULL,
                              .q_width = dcq } };
    in_tail[1] = in_tail[0];
    in_tail[1].kind = GEMV_TAIL_ROPE_Q;
    const GemvAbsorb absorb = { s->q_lat, s->q, w->kv_b_proj.data, w->kv_b_proj.dtype, dims, T };
    CUDA_TRY(gemv_forward_v3(in, in_tail, dcq ? 2 : 1, &absorb, counters, ctx->stream));
    /* o^L in the weights' type (the W^UV product rounds its operand to it in any case) */
    void *ol = ctx->wtype == KERNEL_F32 ? (void *)s->o_lat : ctx->stage;
    CUDA_TRY(mla_decode_at_v3(ol, ctx->wtype, s->q_lat, s->q, cache, ctx->wtype, dims, at->pos, at->base, T,
                              at->max_ctx, s->partial + decode_counter_ints(nh, s->max_T), (int *)s->partial,
                              ctx->stream));
    /* W^UV_h: rows h·(d_n + d_v) + d_n … of kv_b, one group of d_v output rows per head, x = o^L_h */
    const int D = cfg->hidden_size;
    Gemv uv_o[2] = { gemv_of(&w->kv_b_proj, ol, ctx->wtype, T, s->o, nh * dv, nh * dv, NULL, 0),
                     gemv_of(&w->o_proj, s->o, KERNEL_F32, T, out, D, D, NULL, 0) };
    uv_o[0].rows = nh * dv;
    uv_o[0].group = dv;
    uv_o[0].w_row0 = dn;
    uv_o[0].w_group_stride = dn + dv;
    uv_o[0].ldx = nh * dc;
    uv_o[0].x_group_stride = dc;
    const GemvTail uv_o_tail[2] = { { .kind = GEMV_TAIL_NONE },
                                    tail ? (GemvTail){ .kind = GEMV_TAIL_RESIDUAL_NORM,
                                                       .h = tail->h,
                                                       .a = tail->a,
                                                       .norm = tail->norm,
                                                       .eps = tail->eps }
                                         : (GemvTail){ .kind = GEMV_TAIL_NONE } };
    CUDA_TRY(gemv_forward_v3(uv_o, uv_o_tail, 2, NULL, counters, ctx->stream));
    return 0;
}
// ANCHOR_END: fast_mla_decode

/* Whether the decode path takes a call of T tokens: few tokens, and every product within gemv_v2's stage. */
static bool decode_path(const FastMla *w, const ModelConfig *cfg, int T)
{
    const Gemv in = { .w_type = w->in_proj.dtype, .rows = 1, .cols = w->in_proj.cols, .T = T };
    const Gemv o = { .w_type = w->o_proj.dtype, .rows = 1, .cols = w->o_proj.cols, .T = T };
    const Gemv q = { .w_type = w->kv_b_proj.dtype, .rows = 1, .cols = cfg->q_lora_rank, .T = T };
    const Gemv uv = { .w_type = w->kv_b_proj.dtype, .rows = 1, .cols = cfg->kv_lora_rank, .T = T };
    return T <= FAST_DECODE_MAX_T && w->in_proj.data && cfg->qk_nope_head_dim <= 128 && gemv_v2_supports(&in) &&
           gemv_v2_supports(&o) && (!cfg->q_lora_rank || gemv_v2_supports(&q)) && gemv_v2_supports(&uv);
}

// ANCHOR: fast_mla
int fast_mla_forward(FastContext *ctx, float *out, const float *a, const FastMla *w, void *cache,
                     const ModelConfig *cfg, const Rope *rope, const float *inv_freq, const FastPositions *at, int T,
                     bool absorbed, FastScratch *s, const FastResidualNorm *tail)
{
    const int nh = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int dv = cfg->v_head_dim, dc = cfg->kv_lora_rank, dq = dn + dr, pos0 = at->pos0;
    const MlaDims dims = { nh, dn, dr, dv, dc, rope->softmax_scale };
    const size_t esz = kernel_dtype_size(ctx->wtype);
    const char *kv_b = w->kv_b_proj.data;

    if (absorbed && (T > s->max_T || at->max_ctx > s->max_ctx))
        return ds_error("fast_mla_forward: %d tokens over %d positions exceed the scratch's %d over %d", T, at->max_ctx,
                        s->max_T, s->max_ctx);
    if (!absorbed && pos0 < 0)
        return ds_error("fast_mla_forward: the expanded form needs one sequence's consecutive positions");
    if (absorbed && decode_path(w, cfg, T))
        return mla_decode_step(ctx, out, a, w, cache, cfg, rope, inv_freq, at, T, s, tail);
    /* the latent path: [c^KV_t ; k^R_raw_t] = W^DKV/W^KR a_t, normalised and rotated into row base_t + pos_t */
    if (fast_linear(ctx, s->kv, a, &w->kv_a_proj, T)) return -1;
    CUDA_TRY(FAST_WRITE_LATENTS(cache, ctx->wtype, s->kv, w->kv_a_norm, inv_freq, rope->cos_sin_scale, dims, at->pos,
                                at->base, T, LATENT_NORM_EPS, ctx->stream));

    /* queries q_t = [q^N ; q^R] per head, q^R rotated in place */
    if (cfg->q_lora_rank) {
        if (fast_linear(ctx, s->c_q, a, &w->q_a_proj, T)) return -1;
        CUDA_TRY(FAST_RMSNORM(s->c_q, s->c_q, w->q_a_norm, T, cfg->q_lora_rank, LATENT_NORM_EPS, ctx->stream));
        if (fast_linear(ctx, s->q, s->c_q, &w->q_b_proj, T)) return -1;
    } else if (fast_linear(ctx, s->q, a, &w->q_proj, T)) {
        return -1;
    }
    CUDA_TRY(FAST_ROPE(s->q + dn, inv_freq, rope->cos_sin_scale, dr, T, nh, nh * dq, dq, at->pos, ctx->stream));

    if (absorbed) {
        /* q^L_{t,h} = W^UK_hᵀ q^N_{t,h}: per head, (d_c × T) = (W^UK_h as d_c × d_n) · (q^N_h as d_n × T) */
        const void *q_in = staged(ctx, s->q, (size_t)T * nh * dq);
        if (!q_in || fast_gemm_heads(ctx, CUBLAS_OP_N, dc, T, dn, kv_b, ctx->wtype, dc, (long long)(dn + dv) * dc, q_in,
                                     nh * dq, dq, s->q_lat, nh * dc, dc, nh))
            return -1;
        /* each token over its own sequence's rows, one read of each row per 16 heads; the splits a token
         * uses follow its length on the device, the grid only T and max_ctx. o^L comes out in the weights'
         * type, in bf16 mode straight into the staging buffer the W^UV GEMM reads (q_in is consumed) */
        void *ol_in = ctx->wtype == KERNEL_F32 ? (void *)s->o_lat : ctx->stage;
        if (ctx->wtype != KERNEL_F32 && (size_t)T * nh * dc > ctx->stage_elems)
            return ds_error("fast_mla_forward: %zu activations exceed the staging buffer of %zu", (size_t)T * nh * dc,
                            ctx->stage_elems);
        CUDA_TRY(mla_decode_at_v3(ol_in, ctx->wtype, s->q_lat, s->q, cache, ctx->wtype, dims, at->pos, at->base, T,
                                  at->max_ctx, s->partial + decode_counter_ints(nh, s->max_T), (int *)s->partial,
                                  ctx->stream));
        /* o_{t,h} = W^UV_h o^L_{t,h}: (d_v × T) = op_T(W^UV_h as d_c × d_v) · (o^L_h as d_c × T) */
        if (fast_gemm_heads(ctx, CUBLAS_OP_T, dv, T, dc, kv_b + (size_t)dn * dc * esz, ctx->wtype, dc,
                            (long long)(dn + dv) * dc, ol_in, nh * dc, dc, s->o, nh * dv, dv, nh))
            return -1;
    } else if (fast_mla_prefill(ctx, w, cache, dims, at, T, s)) { /* prompt chunks: fast/prefill.c */
        return -1;
    }
    if (fast_linear(ctx, out, s->o, &w->o_proj, T)) /* W^O [o_{t,1}; …; o_{t,n_h}] */
        return -1;
    if (tail)
        CUDA_TRY(FAST_RMSNORM_RESIDUAL(tail->a, tail->h, out, tail->norm, T, cfg->hidden_size, tail->eps, ctx->stream));
    return 0;
}
// ANCHOR_END: fast_mla
