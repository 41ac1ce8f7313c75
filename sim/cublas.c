/**
 * \file cublas.c
 * \brief The simulated cuBLAS: GEMMs with cuBLAS's column-major conventions, computed by OpenBLAS.
 *
 * cuBLAS and OpenBLAS's CBLAS interface share the column-major convention
 * (element (i, j) of a matrix with leading dimension ld is at i + j·ld), so
 * a float32 cublasGemmEx is one cblas_sgemm with the same arguments. bf16
 * operands are widened to float32 scratch copies first; a bf16 C is widened,
 * computed and rounded back (nearest even), touching only its m × n entries.
 *
 * Arguments are checked when the call is made, with cuBLAS's status codes
 * (sizes, leading dimensions, operations → CUBLAS_STATUS_INVALID_VALUE;
 * unsupported types → CUBLAS_STATUS_NOT_SUPPORTED), plus what a GPU would
 * only show as a crash: every matrix must lie inside one device allocation
 * of the handle's device. The product runs when the handle's stream runs.
 */
#include "sim_internal.h"
#include "cublas_v2.h"
#include "sim.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDLE_MAGIC 0x43424c53u /**< "CBLS": marks a live handle */

/** A cuBLAS handle: the device it belongs to and the stream its work goes to. */
struct cublasContext {
    unsigned int magic;  /**< HANDLE_MAGIC while alive */
    int device;          /**< device current at cublasCreate */
    cudaStream_t stream; /**< as given to cublasSetStream (NULL: legacy default stream) */
};

/* ------------------------------------------------------------------------------------------ */
/* status names                                                                                */

const char *cublasGetStatusName(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    }
    return "unknown error";
}

/* ------------------------------------------------------------------------------------------ */
/* handles                                                                                     */

static cublasStatus_t check_handle(const char *call, cublasHandle_t h)
{
    if (!h || h->magic != HANDLE_MAGIC) {
        sim_detail("%s: %p is not a live cuBLAS handle", call, (void *)h);
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    int count = 0;
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    if (cudaGetDeviceCount(&count) != cudaSuccess) return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasHandle_t h = calloc(1, sizeof *h);
    if (!h) return CUBLAS_STATUS_ALLOC_FAILED;
    h->magic = HANDLE_MAGIC;
    h->device = sim_current_device();
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    cublasStatus_t st = check_handle("cublasDestroy", handle);
    if (st) return st;
    handle->magic = 0;
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    cublasStatus_t st = check_handle("cublasSetStream", handle);
    if (st) return st;
    if (!sim_resolve_stream_on("cublasSetStream", stream, handle->device)) return CUBLAS_STATUS_INVALID_VALUE;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t *stream)
{
    cublasStatus_t st = check_handle("cublasGetStream", handle);
    if (st) return st;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    (void)mode;
    return check_handle("cublasSetMathMode", handle);
}

/* ------------------------------------------------------------------------------------------ */
/* one GEMM                                                                                    */

/** One problem C = alpha · op(A) · op(B) + beta · C, with the element types of its matrices. */
typedef struct {
    cublasOperation_t ta, tb; /**< operations */
    int m, n, k;              /**< op(A) is m × k, op(B) k × n */
    float alpha, beta;        /**< scalars, read at call time */
    const void *A, *B;        /**< operands */
    void *C;                  /**< result */
    int lda, ldb, ldc;        /**< leading dimensions */
    cudaDataType at, bt, ct;  /**< element types */
} Gemm;

static size_t type_size(cudaDataType t)
{
    return t == CUDA_R_16BF ? 2 : 4;
}

/** Number of elements spanned by a rows × cols column-major matrix with leading dimension ld. */
static size_t span(int rows, int cols, int ld)
{
    return rows == 0 || cols == 0 ? 0 : (size_t)(cols - 1) * (size_t)ld + (size_t)rows;
}

static float bf16_to_float(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/** Round to nearest even, NaN → 0x7fff (as __float2bfloat16). */
static uint16_t float_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/** A float32 view of n elements of x: x itself for CUDA_R_32F, else a widened copy in *scratch. */
static const float *as_float(const void *x, cudaDataType t, size_t n, float **scratch)
{
    if (t == CUDA_R_32F) return x;
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f) return NULL;
    for (size_t i = 0; i < n; i++) f[i] = bf16_to_float(((const uint16_t *)x)[i]);
    *scratch = f;
    return f;
}

static CBLAS_TRANSPOSE cblas_op(cublasOperation_t op)
{
    return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
}

/** Computes one problem on the host; returns 0, or −1 when scratch memory runs out. */
static int gemm_run(const Gemm *g)
{
    if (g->m == 0 || g->n == 0) return 0;
    int arows = g->ta == CUBLAS_OP_N ? g->m : g->k, acols = g->ta == CUBLAS_OP_N ? g->k : g->m;
    int brows = g->tb == CUBLAS_OP_N ? g->k : g->n, bcols = g->tb == CUBLAS_OP_N ? g->n : g->k;
    float *sa = NULL, *sb = NULL, *sc = NULL;
    const float *a = as_float(g->A, g->at, span(arows, acols, g->lda), &sa);
    const float *b = as_float(g->B, g->bt, span(brows, bcols, g->ldb), &sb);
    float *c = g->C;
    size_t cn = span(g->m, g->n, g->ldc);
    sim_count_range(g->A, span(arows, acols, g->lda) * type_size(g->at), 0);
    sim_count_range(g->B, span(brows, bcols, g->ldb) * type_size(g->bt), 0);
    if (g->beta != 0.0f) sim_count_range(g->C, cn * type_size(g->ct), 0);
    sim_count_range(g->C, cn * type_size(g->ct), 1);
    if (g->ct == CUDA_R_16BF) {
        c = sc = calloc(cn, sizeof *c);
        if (c && g->beta != 0.0f)
            for (int j = 0; j < g->n; j++)
                for (int i = 0; i < g->m; i++)
                    c[(size_t)j * g->ldc + i] = bf16_to_float(((const uint16_t *)g->C)[(size_t)j * g->ldc + i]);
    }
    int rc = -1;
    if (a && b && c) {
        /* cuBLAS does not read C when beta is 0, so a NaN there must not survive (0 · NaN = NaN). */
        if (g->beta == 0.0f)
            for (int j = 0; j < g->n; j++) memset(c + (size_t)j * g->ldc, 0, (size_t)g->m * sizeof *c);
        cblas_sgemm(CblasColMajor, cblas_op(g->ta), cblas_op(g->tb), g->m, g->n, g->k, g->alpha, a, g->lda, b, g->ldb,
                    g->beta, c, g->ldc);
        if (g->ct == CUDA_R_16BF)
            for (int j = 0; j < g->n; j++)
                for (int i = 0; i < g->m; i++)
                    ((uint16_t *)g->C)[(size_t)j * g->ldc + i] = float_to_bf16(c[(size_t)j * g->ldc + i]);
        rc = 0;
    }
    free(sa);
    free(sb);
    free(sc);
    return rc;
}

/** Checks what cuBLAS checks for one problem: operations, sizes, leading dimensions. */
static cublasStatus_t check_shape(const char *call, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  int lda, int ldb, int ldc)
{
    int arows = ta == CUBLAS_OP_N ? m : k, brows = tb == CUBLAS_OP_N ? k : n;
    if ((unsigned)ta > CUBLAS_OP_C || (unsigned)tb > CUBLAS_OP_C) {
        sim_detail("%s: transa %d / transb %d is not a cublasOperation_t", call, (int)ta, (int)tb);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m < 0 || n < 0 || k < 0) {
        sim_detail("%s: negative size m=%d n=%d k=%d", call, m, n, k);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1)) {
        sim_detail(
            "%s: leading dimensions lda=%d ldb=%d ldc=%d, need lda ≥ %d (rows of A as stored), ldb ≥ %d, ldc ≥ %d",
            call, lda, ldb, ldc, arows, brows, m);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/** Accepts the float32 compute types and the (A, B, C) type combinations the simulator computes. */
static cublasStatus_t check_types(const char *call, cudaDataType at, cudaDataType bt, cudaDataType ct,
                                  cublasComputeType_t compute)
{
    int compute_ok = compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC ||
                     compute == CUBLAS_COMPUTE_32F_FAST_16BF || compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    int types_ok = at == bt &&
                   (at == CUDA_R_32F ? ct == CUDA_R_32F : at == CUDA_R_16BF && (ct == CUDA_R_16BF || ct == CUDA_R_32F));
    if (!compute_ok || !types_ok) {
        sim_detail("%s: types A=%d B=%d C=%d with compute type %d are not simulated "
                   "(want 32F/32F/32F, 16BF/16BF/16BF or 16BF/16BF/32F with CUBLAS_COMPUTE_32F*)",
                   call, (int)at, (int)bt, (int)ct, (int)compute);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/** One matrix of count elements of type t must lie inside a device allocation of device dev. */
static int matrix_ok(const char *call, const char *name, const void *p, size_t elems, cudaDataType t, int dev)
{
    char why[256];
    if (elems == 0 || sim_device_range_ok(p, elems * type_size(t), dev, why, sizeof why)) return 1;
    sim_detail("%s: matrix %s: %s", call, name, why);
    return 0;
}

/** Checks pointers of problem g (batch copies `batch` apart by the strides, in elements). */
static cublasStatus_t check_pointers(const char *call, const Gemm *g, int dev, int batch, long long sa, long long sb,
                                     long long sc)
{
    int arows = g->ta == CUBLAS_OP_N ? g->m : g->k, acols = g->ta == CUBLAS_OP_N ? g->k : g->m;
    int brows = g->tb == CUBLAS_OP_N ? g->k : g->n, bcols = g->tb == CUBLAS_OP_N ? g->n : g->k;
    size_t extra = (size_t)(batch - 1);
    if (g->m == 0 || g->n == 0) return CUBLAS_STATUS_SUCCESS;
    size_t na = g->k ? span(arows, acols, g->lda) + extra * (size_t)sa : 0;
    size_t nb = g->k ? span(brows, bcols, g->ldb) + extra * (size_t)sb : 0;
    size_t nc = span(g->m, g->n, g->ldc) + extra * (size_t)sc;
    if (!matrix_ok(call, "A", g->A, na, g->at, dev) || !matrix_ok(call, "B", g->B, nb, g->bt, dev) ||
        !matrix_ok(call, "C", g->C, nc, g->ct, dev))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* queued work                                                                                 */

/** A queued strided batch (a plain GEMM is a batch of one). */
typedef struct {
    SimOp op;             /**< base */
    Gemm g;               /**< the first problem */
    long long sa, sb, sc; /**< strides in elements */
    int batch;            /**< number of problems */
} BatchOp;

static void run_batch(SimOp *op)
{
    BatchOp *b = (BatchOp *)op;
    const dim3 one = { 1, 1, 1 };
    sim_count_begin(SIM_REC_GEMM, "cublasGemm", op->device, op->stream, one, one);
    for (int i = 0; i < b->batch; i++) {
        Gemm g = b->g;
        g.A = (const char *)g.A + (size_t)i * (size_t)b->sa * type_size(g.at);
        g.B = (const char *)g.B + (size_t)i * (size_t)b->sb * type_size(g.bt);
        g.C = (char *)g.C + (size_t)i * (size_t)b->sc * type_size(g.ct);
        if (gemm_run(&g) != 0) {
            sim_device_fault(op->device, cudaErrorMemoryAllocation, "cuBLAS GEMM: out of host scratch memory");
            break;
        }
    }
    sim_count_end();
}

static void release_free(SimOp *op)
{
    free(op);
}

/** The stream a call on handle h queues on, or NULL (detail recorded). */
static cudaStream_t handle_stream(const char *call, cublasHandle_t h)
{
    return sim_resolve_stream_on(call, h->stream, h->device);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                                          int lda, long long int strideA, const void *B, cudaDataType Btype, int ldb,
                                          long long int strideB, const void *beta, void *C, cudaDataType Ctype, int ldc,
                                          long long int strideC, int batchCount, cublasComputeType_t computeType,
                                          cublasGemmAlgo_t algo)
{
    static const char call[] = "cublasGemmStridedBatchedEx";
    (void)algo;
    cublasStatus_t st = check_handle(call, handle);
    if (st || (st = check_shape(call, transa, transb, m, n, k, lda, ldb, ldc)) ||
        (st = check_types(call, Atype, Btype, Ctype, computeType)))
        return st;
    if (!alpha || !beta || batchCount < 0 || strideA < 0 || strideB < 0 || strideC < 0) {
        sim_detail("%s: NULL alpha/beta, or negative batch count or stride", call);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    Gemm g = { transa, transb, m,     n,     k,    *(const float *)alpha, *(const float *)beta, A, B, C, lda,
               ldb,    ldc,    Atype, Btype, Ctype };
    if ((st = check_pointers(call, &g, handle->device, batchCount, strideA, strideB, strideC))) return st;
    cudaStream_t s = handle_stream(call, handle);
    if (!s) return CUBLAS_STATUS_INVALID_VALUE;
    BatchOp *op = malloc(sizeof *op);
    if (!op) return CUBLAS_STATUS_ALLOC_FAILED;
    op->op.run = run_batch;
    op->op.release = release_free;
    op->g = g;
    op->sa = strideA;
    op->sb = strideB;
    op->sc = strideC;
    op->batch = batchCount;
    sim_enqueue(s, &op->op);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo)
{
    return cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta,
                                      C, Ctype, ldc, 0, 1, computeType, algo);
}

/** A queued grouped batch: per-group shapes copied at call time, pointer arrays read at run time. */
typedef struct {
    SimOp op;                  /**< base */
    int groups;                /**< group count */
    Gemm *shape;               /**< per group: operations, sizes, scalars, leading dimensions, types */
    int *size;                 /**< per group: number of problems */
    const void *const *Aarray; /**< device array of A pointers, one per problem */
    const void *const *Barray; /**< device array of B pointers */
    void *const *Carray;       /**< device array of C pointers */
} GroupedOp;

static void run_grouped(SimOp *op)
{
    GroupedOp *g = (GroupedOp *)op;
    static const char call[] = "cublasGemmGroupedBatchedEx";
    size_t p = 0;
    const dim3 unit = { 1, 1, 1 };
    sim_count_begin(SIM_REC_GEMM, "cublasGemmGrouped", op->device, op->stream, unit, unit);
    for (int gi = 0; gi < g->groups; gi++) {
        for (int j = 0; j < g->size[gi]; j++, p++) {
            Gemm one = g->shape[gi];
            one.A = g->Aarray[p];
            one.B = g->Barray[p];
            one.C = g->Carray[p];
            if (check_pointers(call, &one, op->device, 1, 0, 0, 0) != CUBLAS_STATUS_SUCCESS) {
                char why[1024];
                snprintf(why, sizeof why, "%s", sim_last_detail());
                sim_device_fault(op->device, cudaErrorIllegalAddress, "problem %zu (group %d) of %s", p, gi, why);
                sim_count_end();
                return;
            }
            if (gemm_run(&one) != 0) {
                sim_device_fault(op->device, cudaErrorMemoryAllocation, "%s: out of host scratch memory", call);
                sim_count_end();
                return;
            }
        }
    }
    sim_count_end();
}

static void release_grouped(SimOp *op)
{
    GroupedOp *g = (GroupedOp *)op;
    free(g->shape);
    free(g->size);
    free(g);
}

cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t handle, const cublasOperation_t transa_array[],
                                          const cublasOperation_t transb_array[], const int m_array[],
                                          const int n_array[], const int k_array[], const void *alpha_array,
                                          const void *const Aarray[], cudaDataType_t Atype, const int lda_array[],
                                          const void *const Barray[], cudaDataType_t Btype, const int ldb_array[],
                                          const void *beta_array, void *const Carray[], cudaDataType_t Ctype,
                                          const int ldc_array[], int group_count, const int group_size[],
                                          cublasComputeType_t computeType)
{
    static const char call[] = "cublasGemmGroupedBatchedEx";
    cublasStatus_t st = check_handle(call, handle);
    if (st || (st = check_types(call, Atype, Btype, Ctype, computeType))) return st;
    if (group_count < 0 ||
        (group_count > 0 && (!transa_array || !transb_array || !m_array || !n_array || !k_array || !alpha_array ||
                             !beta_array || !lda_array || !ldb_array || !ldc_array || !group_size))) {
        sim_detail("%s: negative group count or NULL per-group array", call);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    size_t problems = 0;
    for (int g = 0; g < group_count; g++) {
        if ((st = check_shape(call, transa_array[g], transb_array[g], m_array[g], n_array[g], k_array[g], lda_array[g],
                              ldb_array[g], ldc_array[g])))
            return st;
        if (group_size[g] < 0) {
            sim_detail("%s: group %d has negative size %d", call, g, group_size[g]);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        problems += (size_t)group_size[g];
    }
    if (problems == 0) return CUBLAS_STATUS_SUCCESS;
    char why[256];
    const char *bad =
        !sim_device_range_ok(Aarray, problems * sizeof *Aarray, handle->device, why, sizeof why)   ? "Aarray"
        : !sim_device_range_ok(Barray, problems * sizeof *Barray, handle->device, why, sizeof why) ? "Barray"
        : !sim_device_range_ok(Carray, problems * sizeof *Carray, handle->device, why, sizeof why) ? "Carray"
                                                                                                   : NULL;
    if (bad) {
        sim_detail("%s: %s must be a device array of %zu pointers: %s", call, bad, problems, why);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    cudaStream_t s = handle_stream(call, handle);
    if (!s) return CUBLAS_STATUS_INVALID_VALUE;
    GroupedOp *op = calloc(1, sizeof *op);
    if (op) {
        op->shape = malloc((size_t)group_count * sizeof *op->shape);
        op->size = malloc((size_t)group_count * sizeof *op->size);
    }
    if (!op || !op->shape || !op->size) {
        if (op) release_grouped(&op->op);
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    for (int g = 0; g < group_count; g++) {
        op->shape[g] = (Gemm){ transa_array[g],
                               transb_array[g],
                               m_array[g],
                               n_array[g],
                               k_array[g],
                               ((const float *)alpha_array)[g],
                               ((const float *)beta_array)[g],
                               NULL,
                               NULL,
                               NULL,
                               lda_array[g],
                               ldb_array[g],
                               ldc_array[g],
                               Atype,
                               Btype,
                               Ctype };
        op->size[g] = group_size[g];
    }
    op->op.run = run_grouped;
    op->op.release = release_grouped;
    op->groups = group_count;
    op->Aarray = Aarray;
    op->Barray = Barray;
    op->Carray = Carray;
    sim_enqueue(s, &op->op);
    return CUBLAS_STATUS_SUCCESS;
}
