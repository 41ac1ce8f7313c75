/**
 * \file moe_ffn_gate_up_swapped.cu
 * \brief Kernel lab example (wrong): an expert FFN that applies SiLU to the up projection instead of the gate.
 *
 * SwiGLU is W_down(silu(W_gate x) ⊙ W_up x), and the contract stores each
 * expert's W_gate rows first, then its W_up rows. This kernel reads the two
 * halves the other way round — silu(W_up x) ⊙ W_gate x — a slip that type
 * checks and keeps every shape finite. The lab reports a numerical mismatch
 * in y at every shape.
 *
 *     make check-kernel COMPONENT=moe_ffn SRC=kernels/examples/moe_ffn_gate_up_swapped.cu
 */
#include "dsv2_launch.h"
#include "contract.h"

#include <math.h>

/** Element i of a weight tensor of type wt. */
__device__ float load(const void *w, KernelDType wt, size_t i)
{
    return wt == KERNEL_F32 ? ((const float *)w)[i] : __bfloat162float(((const __nv_bfloat16 *)w)[i]);
}

/** Thread (t, u): hidden unit u of token t, u < K·I for the routed slots, then I_s for the shared expert. */
__global__ void ffn_hidden_swapped_kernel(float *hidden, const float *x, const int *idx, const void *gate_up,
                                          const void *shared_gate_up, KernelDType wt, int T, int D, int I, int K,
                                          int I_s)
{
    const int width = K * I + I_s;
    const size_t n = (size_t)T * width;
    const size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (at >= n) return;
    const int t = (int)(at / width), u = (int)(at % width);
    const void *w = u < K * I ? gate_up : shared_gate_up;
    const int rows = u < K * I ? I : I_s, i = u < K * I ? u % I : u - K * I;
    const size_t base = u < K * I ? (size_t)idx[t * K + u / I] * 2 * I * D : 0;
    float a = 0.0f, b = 0.0f; /* a from the gate rows, b from the up rows */
    for (int d = 0; d < D; d++) {
        a += load(w, wt, base + (size_t)i * D + d) * x[(size_t)t * D + d];
        b += load(w, wt, base + (size_t)(rows + i) * D + d) * x[(size_t)t * D + d];
    }
    hidden[at] = b / (1.0f + expf(-b)) * a; /* the bug: silu of the up projection */
}

/** Thread (t, d): y[t, d] = Σ_k weight[t, k] · down_{idx[t, k]}[d] · h_k + shared_down[d] · h_s. */
__global__ void ffn_out_kernel(float *y, const float *hidden, const int *idx, const float *weight, const void *down,
                               const void *shared_down, KernelDType wt, int T, int D, int I, int K, int I_s)
{
    const size_t at = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (at >= (size_t)T * D) return;
    const int t = (int)(at / D), d = (int)(at % D);
    const float *h = hidden + (size_t)t * (K * I + I_s);
    float acc = 0.0f;
    for (int k = 0; k < K; k++) {
        const size_t base = ((size_t)idx[t * K + k] * D + d) * I;
        float o = 0.0f;
        for (int i = 0; i < I; i++) o += load(down, wt, base + i) * h[k * I + i];
        acc += weight[t * K + k] * o;
    }
    for (int i = 0; i < I_s; i++) acc += load(shared_down, wt, (size_t)d * I_s + i) * h[K * I + i];
    y[at] = acc;
}

extern "C" cudaError_t lab_moe_ffn(float *y, const float *x, const int *idx, const float *weight, const void *gate_up,
                                   const void *down, const void *shared_gate_up, const void *shared_down,
                                   KernelDType w_type, int T, int D, int I, int K, int I_s, float *hidden,
                                   cudaStream_t stream)
{
    const size_t n_hidden = (size_t)T * (K * I + I_s), n_out = (size_t)T * D;
    LAUNCH(ffn_hidden_swapped_kernel, dim3((unsigned)((n_hidden + 127) / 128)), dim3(128), 0, stream, hidden, x, idx,
           gate_up, shared_gate_up, w_type, T, D, I, K, I_s);
    LAUNCH(ffn_out_kernel, dim3((unsigned)((n_out + 127) / 128)), dim3(128), 0, stream, y, hidden, idx, weight, down,
           shared_down, w_type, T, D, I, K, I_s);
    return cudaGetLastError();
}
