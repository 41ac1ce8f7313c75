/**
 * \file context.c
 * \brief The device context (stream, cuBLAS handle), checked calls, weight upload and the cuBLAS GEMM.
 */
#include "fast.h"

#include "dtype.h"
#include "error.h"

#include <stdlib.h>
#include <string.h>

int fast_check_cuda(cudaError_t err, const char *call, const char *file, int line)
{
    if (err == cudaSuccess) return 0;
    return ds_error("%s failed: %s (%s) at %s:%d", call, cudaGetErrorName(err), cudaGetErrorString(err), file, line);
}

int fast_check_blas(cublasStatus_t st, const char *call, const char *file, int line)
{
    if (st == CUBLAS_STATUS_SUCCESS) return 0;
    return ds_error("%s failed: %s (%s) at %s:%d", call, cublasGetStatusName(st), cublasGetStatusString(st), file,
                    line);
}

size_t fast_context_bytes(KernelDType wtype, size_t stage_elems)
{
    return stage_elems * kernel_dtype_size(wtype);
}

int fast_context_init(FastContext *ctx, bool bf16, size_t stage_elems)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->bf16 = bf16;
    ctx->wtype = bf16 ? KERNEL_BF16 : KERNEL_F32;
    ctx->stage_elems = stage_elems;
    /* a blocking stream: callers' plain cudaMemset/cudaMemcpy on the legacy default stream stay ordered with it */
    CUDA_TRY(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamDefault));
    BLAS_TRY(cublasCreate(&ctx->blas));
    BLAS_TRY(cublasSetStream(ctx->blas, ctx->stream));
    if (stage_elems) CUDA_TRY(cudaMalloc(&ctx->stage, fast_context_bytes(ctx->wtype, stage_elems)));
    return 0;
}

void fast_context_free(FastContext *ctx)
{
    if (ctx->stream) cudaStreamSynchronize(ctx->stream);
    cudaFree(ctx->stage);
    if (ctx->blas) cublasDestroy(ctx->blas);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    memset(ctx, 0, sizeof *ctx);
}

/* Converts n elements of src (element offset i) to the device type into dst (host). */
static void to_wtype(void *dst, KernelDType wtype, const Mat *src, size_t i, size_t n)
{
    if (wtype == KERNEL_F32) {
        dtype_widen(dst, src->data, src->dtype, i, n);
    } else if (src->dtype == DT_BF16) {
        memcpy(dst, (const uint16_t *)src->data + i, n * 2); /* bf16 as stored */
    } else {
        uint16_t *d = dst;
        float tmp[256];
        for (size_t k = 0; k < n; k += 256) {
            const size_t m = n - k < 256 ? n - k : 256;
            dtype_widen(tmp, src->data, src->dtype, i + k, m);
            for (size_t j = 0; j < m; j++) d[k + j] = f32_to_bf16(tmp[j]);
        }
    }
}

void fast_buffer_bytes(const size_t (*n)[2], int count, size_t *bytes)
{
    for (int i = 0; i < count; i++)
        bytes[i] = (n[i][0] ? n[i][0] : 1) * n[i][1]; /* at least one element: cudaMalloc(0) gives NULL */
}

size_t fast_mat_bytes(KernelDType wtype, int64_t rows, int64_t cols)
{
    return (size_t)rows * (size_t)cols * kernel_dtype_size(wtype);
}

int fast_mat_upload(FastContext *ctx, FastMat *out, const Mat *const *parts, int n_parts)
{
    memset(out, 0, sizeof *out);
    const int cols = parts[0]->cols;
    int rows = 0;
    for (int p = 0; p < n_parts; p++) {
        if (parts[p]->cols != cols)
            return ds_error("fast_mat_upload: part %d has %d columns, part 0 has %d", p, parts[p]->cols, cols);
        rows += parts[p]->rows;
    }
    const size_t esz = kernel_dtype_size(ctx->wtype);
    CUDA_TRY(cudaMalloc(&out->data, fast_mat_bytes(ctx->wtype, rows, cols)));
    out->dtype = ctx->wtype;
    out->rows = rows;
    out->cols = cols;
    size_t max_part = 0;
    for (int p = 0; p < n_parts; p++)
        if ((size_t)parts[p]->rows * cols > max_part) max_part = (size_t)parts[p]->rows * cols;
    void *host = malloc(max_part * esz);
    if (!host) return ds_error("fast_mat_upload: out of host memory (%zu bytes)", max_part * esz);
    size_t row0 = 0;
    int rc = 0;
    for (int p = 0; p < n_parts && rc == 0; p++) {
        const size_t n = (size_t)parts[p]->rows * cols;
        to_wtype(host, ctx->wtype, parts[p], 0, n);
        rc = fast_check_cuda(cudaMemcpy((char *)out->data + row0 * cols * esz, host, n * esz, cudaMemcpyHostToDevice),
                             "cudaMemcpy(weights)", __FILE__, __LINE__);
        row0 += (size_t)parts[p]->rows;
    }
    free(host);
    return rc;
}

int fast_vec_upload(float **out, const float *host, size_t n)
{
    *out = NULL;
    if (n == 0) return 0;
    CUDA_TRY(cudaMalloc((void **)out, n * sizeof(float)));
    CUDA_TRY(cudaMemcpy(*out, host, n * sizeof(float), cudaMemcpyHostToDevice));
    return 0;
}

void fast_mat_free(FastMat *m)
{
    cudaFree(m->data);
    memset(m, 0, sizeof *m);
}

static cudaDataType blas_type(KernelDType t)
{
    return t == KERNEL_F32 ? CUDA_R_32F : CUDA_R_16BF;
}

// ANCHOR: fast_gemm
int fast_gemm(FastContext *ctx, float *y, const void *x, KernelDType x_type, int ldx, const void *W, KernelDType w_type,
              int rows, int cols, int T)
{
    if (T == 0) return 0;
    if (x_type != w_type)
        return ds_error("fast_gemm: activation and weight types differ (%d, %d)", (int)x_type, (int)w_type);
    /* Row-major y[T, rows] = x[T, cols] · W[rows, cols]ᵀ is, in cuBLAS's column-major terms,
     * yᵀ (rows × T) = op_T(W as cols × rows) · xᵀ (cols × T). */
    const float one = 1.0f, zero = 0.0f;
    BLAS_TRY(cublasGemmEx(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, T, cols, &one, W, blas_type(w_type), cols, x,
                          blas_type(x_type), ldx, &zero, y, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}
// ANCHOR_END: fast_gemm

// ANCHOR: fast_linear
int fast_linear(FastContext *ctx, float *y, const float *x, const FastMat *W, int T)
{
    const void *xin = x;
    if (W->dtype != KERNEL_F32) { /* cuBLAS wants A and B of one type */
        const size_t n = (size_t)T * W->cols;
        if (n > ctx->stage_elems)
            return ds_error("fast_linear: %zu activations exceed the staging buffer of %zu", n, ctx->stage_elems);
        CUDA_TRY(convert_forward_v2(ctx->stage, W->dtype, x, n, ctx->stream));
        xin = ctx->stage;
    }
    return fast_gemm(ctx, y, xin, W->dtype, W->cols, W->data, W->dtype, W->rows, W->cols, T);
}
// ANCHOR_END: fast_linear
