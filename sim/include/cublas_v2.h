/**
 * \file cublas_v2.h
 * \brief The simulated cuBLAS: handles, streams and the GEMM entry points dsv2.c uses.
 *
 * Matrices are column-major with leading dimensions, exactly as in cuBLAS:
 * C = alpha · op(A) · op(B) + beta · C with op(A) m×k, op(B) k×n, C m×n.
 * The product is computed on the host by OpenBLAS's sgemm in float32; bf16
 * operands are widened first and a bf16 C is rounded to nearest even at the
 * end. Calls are checked when made and run when the handle's stream runs.
 * Scalars (alpha, beta) are read on the host when the call is made
 * (CUBLAS_POINTER_MODE_HOST, the default; device pointer mode is not simulated).
 */
#ifndef DSV2_SIM_CUBLAS_V2_H
#define DSV2_SIM_CUBLAS_V2_H

#include "cuda_runtime.h"
#include "library_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Status codes (values as in the CUDA 13 cublas_api.h). */
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,           /**< no error */
    CUBLAS_STATUS_NOT_INITIALIZED = 1,   /**< NULL or destroyed handle */
    CUBLAS_STATUS_ALLOC_FAILED = 3,      /**< host allocation failed */
    CUBLAS_STATUS_INVALID_VALUE = 7,     /**< bad size, leading dimension, operation or pointer */
    CUBLAS_STATUS_EXECUTION_FAILED = 13, /**< the stream had failed */
    CUBLAS_STATUS_INTERNAL_ERROR = 14,   /**< anything else */
    CUBLAS_STATUS_NOT_SUPPORTED = 15     /**< type combination not simulated */
} cublasStatus_t;

/** op(X): X as stored, or transposed (C is the same as T for real types). */
typedef enum {
    CUBLAS_OP_N = 0, /**< op(X) = X */
    CUBLAS_OP_T = 1, /**< op(X) = Xᵀ */
    CUBLAS_OP_C = 2  /**< op(X) = Xᴴ = Xᵀ for real data */
} cublasOperation_t;

/** Accumulation precision; every 32F variant is computed in plain float32 here. */
typedef enum {
    CUBLAS_COMPUTE_32F = 68,           /**< float32 */
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,  /**< float32 */
    CUBLAS_COMPUTE_32F_FAST_16BF = 75, /**< float32 here (the GPU may round inputs to bf16) */
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77  /**< float32 here (the GPU may round inputs to tf32) */
} cublasComputeType_t;

/** Algorithm hint; ignored. */
typedef enum {
    CUBLAS_GEMM_DEFAULT = -1,          /**< default */
    CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99 /**< default, tensor cores allowed */
} cublasGemmAlgo_t;

/** Math mode hint; accepted and ignored. */
typedef enum {
    CUBLAS_DEFAULT_MATH = 0,       /**< default */
    CUBLAS_PEDANTIC_MATH = 2,      /**< no shortcuts */
    CUBLAS_TF32_TENSOR_OP_MATH = 3 /**< tf32 allowed */
} cublasMath_t;

/** A cuBLAS context: the device it was created on and its stream. */
typedef struct cublasContext *cublasHandle_t;

/** Creates a handle on the current device, bound to the legacy default stream. */
cublasStatus_t cublasCreate(cublasHandle_t *handle);
/** Runs the handle's queued work and destroys it. */
cublasStatus_t cublasDestroy(cublasHandle_t handle);
/** Later calls on handle queue their work on stream. */
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
/** The handle's stream. */
cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t *stream);
/** Accepts any mode; the simulator always computes in float32. */
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
/** The enumerator's name, e.g. "CUBLAS_STATUS_INVALID_VALUE". */
const char *cublasGetStatusName(cublasStatus_t status);
/** A sentence describing status. */
const char *cublasGetStatusString(cublasStatus_t status);

/**
 * C = alpha · op(A) · op(B) + beta · C, column-major.
 * A: lda × (transa == N ? k : m); B: ldb × (transb == N ? n : k); C: ldc × n.
 * Types: (A, B, C) = (32F, 32F, 32F), (16BF, 16BF, 16BF) or (16BF, 16BF, 32F);
 * alpha and beta point to host floats.
 */
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo);

/** batchCount GEMMs of the same shape; matrix i starts i·stride elements after the first. */
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                                          int lda, long long int strideA, const void *B, cudaDataType Btype, int ldb,
                                          long long int strideB, const void *beta, void *C, cudaDataType Ctype, int ldc,
                                          long long int strideC, int batchCount, cublasComputeType_t computeType,
                                          cublasGemmAlgo_t algo);

/**
 * group_count groups of GEMMs; group g has group_size[g] problems sharing
 * transa_array[g], m_array[g], ..., alpha_array[g] (host arrays). Aarray,
 * Barray and Carray are device arrays of device pointers, one per problem,
 * groups one after another; they are read when the stream runs.
 */
cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t handle, const cublasOperation_t transa_array[],
                                          const cublasOperation_t transb_array[], const int m_array[],
                                          const int n_array[], const int k_array[], const void *alpha_array,
                                          const void *const Aarray[], cudaDataType_t Atype, const int lda_array[],
                                          const void *const Barray[], cudaDataType_t Btype, const int ldb_array[],
                                          const void *beta_array, void *const Carray[], cudaDataType_t Ctype,
                                          const int ldc_array[], int group_count, const int group_size[],
                                          cublasComputeType_t computeType);

#ifdef __cplusplus
}
#endif

#endif
