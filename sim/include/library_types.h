/**
 * \file library_types.h
 * \brief Element types shared by the CUDA libraries (the subset the simulator's cuBLAS accepts).
 */
#ifndef DSV2_SIM_LIBRARY_TYPES_H
#define DSV2_SIM_LIBRARY_TYPES_H

/** Element type of a matrix (values as in the CUDA 13 library_types.h). */
typedef enum cudaDataType_t {
    CUDA_R_32F = 0,  /**< float */
    CUDA_R_64F = 1,  /**< double (declared so callers can name it; GEMMs reject it) */
    CUDA_R_16F = 2,  /**< half (declared so callers can name it; GEMMs reject it) */
    CUDA_R_16BF = 14 /**< __nv_bfloat16 */
} cudaDataType;

/** The real header's second name for the same enum. */
typedef cudaDataType cudaDataType_t;

#endif
