/**
 * \file nccl.h
 * \brief The simulated NCCL: one communicator per simulated device, grouped send/recv and collectives.
 *
 * ncclCommInitAll() builds a clique of communicators in this process. Calls
 * are collected until the outermost ncclGroupEnd() (a call outside a group
 * is a group of one); the group is then checked as a whole — every send has
 * its recv with the same count and type, every rank posted the same
 * collectives with the same arguments — the streams involved are run, and
 * the data is moved. Errors are returned by ncclGroupEnd() and described by
 * ncclGetLastError().
 */
#ifndef DSV2_SIM_NCCL_H
#define DSV2_SIM_NCCL_H

#include <stddef.h>

#include "cuda_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NCCL_MAJOR 2  /**< version of the real NCCL whose interface this follows */
#define NCCL_MINOR 28 /**< minor version */

/** Status codes (values as in nccl.h 2.28). */
typedef enum {
    ncclSuccess = 0,            /**< no error */
    ncclUnhandledCudaError = 1, /**< a CUDA call failed */
    ncclSystemError = 2,        /**< system failure (also SIM_FAIL_COMM) */
    ncclInternalError = 3,      /**< bug in the library */
    ncclInvalidArgument = 4,    /**< bad pointer, count, type, rank, or arguments that differ between ranks */
    ncclInvalidUsage = 5        /**< unmatched send/recv, collective not posted by every rank, group misuse */
} ncclResult_t;

/** Reduction operators. */
typedef enum {
    ncclSum = 0,  /**< sum */
    ncclProd = 1, /**< product */
    ncclMax = 2,  /**< maximum */
    ncclMin = 3,  /**< minimum */
    ncclAvg = 4   /**< sum / number of ranks */
} ncclRedOp_t;

/** Element types (the subset simulated). */
typedef enum {
    ncclInt8 = 0,    /**< int8_t */
    ncclUint8 = 1,   /**< uint8_t */
    ncclInt32 = 2,   /**< int32_t */
    ncclUint32 = 3,  /**< uint32_t */
    ncclInt64 = 4,   /**< int64_t */
    ncclUint64 = 5,  /**< uint64_t */
    ncclFloat32 = 7, /**< float */
    ncclFloat64 = 8, /**< double */
    ncclBfloat16 = 9 /**< __nv_bfloat16 (reduced in float32, rounded once) */
} ncclDataType_t;

#define ncclInt    ncclInt32   /**< alias */
#define ncclFloat  ncclFloat32 /**< alias */
#define ncclDouble ncclFloat64 /**< alias */

/** One rank of a clique. */
typedef struct ncclComm *ncclComm_t;

/** Creates ndev communicators, rank i on device devlist[i] (or i when devlist is NULL). */
ncclResult_t ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist);
/** Destroys one communicator; the clique goes when its last member does. */
ncclResult_t ncclCommDestroy(ncclComm_t comm);
/** Number of ranks. */
ncclResult_t ncclCommCount(const ncclComm_t comm, int *count);
/** Device of the communicator. */
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int *device);
/** Rank of the communicator. */
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank);
/** A sentence describing result. */
const char *ncclGetErrorString(ncclResult_t result);
/** The detail of the last error (which ranks, counts, buffers); comm may be NULL. */
const char *ncclGetLastError(ncclComm_t comm);

/** Opens a group (groups nest; the outermost end executes). */
ncclResult_t ncclGroupStart(void);
/** Closes a group; at the outermost level checks, runs and completes every call in it. */
ncclResult_t ncclGroupEnd(void);

/** Sends count elements to rank peer. */
ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream);
/** Receives count elements from rank peer. */
ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream);
/** recvbuff = op over ranks of sendbuff (count elements; in place allowed). */
ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream);
/** recvbuff[r·sendcount ...] = rank r's sendbuff. */
ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream);
/** recvbuff = op over ranks of sendbuff[rank·recvcount ...]. */
ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
/** recvbuff = root's sendbuff on every rank. */
ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
