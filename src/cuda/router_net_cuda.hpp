// The router networks (router_net.hpp) on the GPU: hidden states x [T, d] -> logits z [T, E]
//   linear        z = x W
//   mlp           z = GELU(x W1) W2
//   mlp_hadamard  z = (GELU(x Wa) ⊙ (x Wb)) Wo
// with router_forward / router_backward's parameter layout, saved activations and contracts:
// the products run on cuBLAS in fp32 (row_major_gemm.hpp), GELU and the Hadamard product are
// element-wise kernels (gelu_device.cuh). Every pointer is device memory; the cuBLAS handle
// must be bound to `stream` (CudaContext binds its handle to the compute stream). Asynchronous.
#pragma once

#include "moebench/cuda.hpp"
#include "moebench/router_net.hpp"

namespace moebench {

// logits [T, E]; saved [T, router_activation_floats_per_token]; x [T, d].
void cuda_router_forward(cublasContext* blas, CUstream_st* stream, float* logits, float* saved,
                         const float* x, const float* params, int num_tokens,
                         const RouterNetShape& shape);

// d_x [T, d] and d_params are accumulated (+=), as router_backward. scratch holds
// router_activation_floats_per_token floats per token (contents undefined after).
void cuda_router_backward(cublasContext* blas, CUstream_st* stream, float* d_x, float* d_params,
                          float* scratch, const float* d_logits, const float* x,
                          const float* saved, const float* params, int num_tokens,
                          const RouterNetShape& shape);

}  // namespace moebench
