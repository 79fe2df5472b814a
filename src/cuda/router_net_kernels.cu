// Router networks on cuBLAS plus element-wise GELU kernels. See router_net_cuda.hpp; the CPU
// original, whose order of products this follows: src/routing/router_net.cpp.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.hpp"
#include "moebench/check.hpp"
#include "gelu_device.cuh"
#include "router_net_cuda.hpp"
#include "row_major_gemm.hpp"

namespace moebench {
namespace {

using cuda_detail::gelu_derivative_device;
using cuda_detail::gelu_device;
using cuda_detail::row_major_sgemm;

constexpr int kBlock = 256;

int grid_for(int64_t n) {
  // A grid-stride loop covers the rest: a few waves of blocks are enough to fill the device.
  constexpr int64_t kMaxBlocks = 65536;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  return static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// act = GELU(pre); with prod: prod = act * b (mlp_hadamard).
__global__ void gelu_forward_kernel(float* act, float* prod, const float* pre, const float* b,
                                    int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float a = gelu_device(pre[i]);
    act[i] = a;
    if (prod != nullptr) prod[i] = a * b[i];
  }
}

// mlp: d_a = d_act * GELU'(pre), in place.
__global__ void gelu_backward_kernel(float* d_a, const float* pre, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    d_a[i] *= gelu_derivative_device(pre[i]);
  }
}

// mlp_hadamard: from d_prod, d_b = d_prod * act and d_a = d_prod * b * GELU'(pre)
// (the CPU's order of the two products).
__global__ void hadamard_backward_kernel(float* d_a, float* d_b, const float* d_prod,
                                         const float* pre, const float* act, const float* b,
                                         int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    d_b[i] = d_prod[i] * act[i];
    d_a[i] = d_prod[i] * b[i] * gelu_derivative_device(pre[i]);
  }
}

// The parameter blocks of router_net.cpp's layout: linear W; mlp W1, W2; mlp_hadamard Wa,
// Wb, Wo.
template <typename Pointer>
struct Carved {
  Pointer a = nullptr, b = nullptr, out = nullptr;
};

template <typename Pointer>
Carved<Pointer> carve(Pointer params, const RouterNetShape& s) {
  const int64_t d = s.d_model, h = s.hidden;
  Carved<Pointer> carved;
  carved.a = params;
  if (s.arch == RouterArch::mlp) carved.out = params + d * h;
  if (s.arch == RouterArch::mlp_hadamard) {
    carved.b = params + d * h;
    carved.out = params + 2 * d * h;
  }
  return carved;
}

// The shape every router needs, and the handle on the kernels' stream (the products and the
// element-wise kernels must be ordered on one stream).
void check_call(cublasContext* blas, CUstream_st* stream, int num_tokens,
                const RouterNetShape& s) {
  MOEBENCH_CHECK(num_tokens >= 0 && s.d_model > 0 && s.num_experts > 0 &&
                     (s.arch == RouterArch::linear || s.hidden > 0),
                 "router network: tokens must be >= 0 and d_model, hidden, experts > 0");
  cudaStream_t bound = nullptr;
  MOEBENCH_CUBLAS_CHECK(cublasGetStream(blas, &bound));
  MOEBENCH_CHECK(bound == stream, "the cuBLAS handle must be bound to the router's stream");
}

}  // namespace

void cuda_router_forward(cublasContext* blas, CUstream_st* stream, float* logits, float* saved,
                         const float* x, const float* params, int num_tokens,
                         const RouterNetShape& s) {
  check_call(blas, stream, num_tokens, s);
  const int T = num_tokens, d = s.d_model, h = s.hidden, E = s.num_experts;
  if (T == 0) return;
  const Carved<const float*> w = carve(params, s);
  if (s.arch == RouterArch::linear) {
    row_major_sgemm(blas, false, false, T, E, d, 1.0f, x, w.a, 0.0f, logits);
    return;
  }
  const int64_t th = int64_t{T} * h;
  float* a_pre = saved;       // [T, h]
  float* a_act = saved + th;  // [T, h]
  row_major_sgemm(blas, false, false, T, h, d, 1.0f, x, w.a, 0.0f, a_pre);
  if (s.arch == RouterArch::mlp) {
    gelu_forward_kernel<<<grid_for(th), kBlock, 0, stream>>>(a_act, nullptr, a_pre, nullptr, th);
    MOEBENCH_CUDA_LAUNCH_CHECK();
    row_major_sgemm(blas, false, false, T, E, h, 1.0f, a_act, w.out, 0.0f, logits);
    return;
  }
  float* b = saved + 2 * th;     // [T, h]  x Wb
  float* prod = saved + 3 * th;  // [T, h]  GELU(x Wa) * (x Wb)
  row_major_sgemm(blas, false, false, T, h, d, 1.0f, x, w.b, 0.0f, b);
  gelu_forward_kernel<<<grid_for(th), kBlock, 0, stream>>>(a_act, prod, a_pre, b, th);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  row_major_sgemm(blas, false, false, T, E, h, 1.0f, prod, w.out, 0.0f, logits);
}

void cuda_router_backward(cublasContext* blas, CUstream_st* stream, float* d_x, float* d_params,
                          float* scratch, const float* d_logits, const float* x,
                          const float* saved, const float* params, int num_tokens,
                          const RouterNetShape& s) {
  check_call(blas, stream, num_tokens, s);
  const int T = num_tokens, d = s.d_model, h = s.hidden, E = s.num_experts;
  if (T == 0) return;
  const Carved<const float*> w = carve(params, s);
  const Carved<float*> dw = carve(d_params, s);
  if (s.arch == RouterArch::linear) {
    row_major_sgemm(blas, true, false, d, E, T, 1.0f, x, d_logits, 1.0f, dw.a);  // dW += x^T dz
    row_major_sgemm(blas, false, true, T, d, E, 1.0f, d_logits, w.a, 1.0f, d_x);  // dx += dz W^T
    return;
  }
  const int64_t th = int64_t{T} * h;
  const float* a_pre = saved;
  const float* a_act = saved + th;
  float* d_a = scratch;  // [T, h]
  if (s.arch == RouterArch::mlp) {
    row_major_sgemm(blas, true, false, h, E, T, 1.0f, a_act, d_logits, 1.0f, dw.out);  // dW2 +=
    row_major_sgemm(blas, false, true, T, h, E, 1.0f, d_logits, w.out, 0.0f, d_a);     // d act
    gelu_backward_kernel<<<grid_for(th), kBlock, 0, stream>>>(d_a, a_pre, th);
    MOEBENCH_CUDA_LAUNCH_CHECK();
    row_major_sgemm(blas, true, false, d, h, T, 1.0f, x, d_a, 1.0f, dw.a);  // dW1 += x^T d pre
    row_major_sgemm(blas, false, true, T, d, h, 1.0f, d_a, w.a, 1.0f, d_x);  // dx += d pre W1^T
    return;
  }
  const float* b = saved + 2 * th;
  const float* prod = saved + 3 * th;
  float* d_prod = scratch + th;   // [T, h]
  float* d_b = scratch + 2 * th;  // [T, h]
  row_major_sgemm(blas, true, false, h, E, T, 1.0f, prod, d_logits, 1.0f, dw.out);  // dWo +=
  row_major_sgemm(blas, false, true, T, h, E, 1.0f, d_logits, w.out, 0.0f, d_prod);
  hadamard_backward_kernel<<<grid_for(th), kBlock, 0, stream>>>(d_a, d_b, d_prod, a_pre, a_act,
                                                                b, th);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  row_major_sgemm(blas, true, false, d, h, T, 1.0f, x, d_a, 1.0f, dw.a);
  row_major_sgemm(blas, true, false, d, h, T, 1.0f, x, d_b, 1.0f, dw.b);
  row_major_sgemm(blas, false, true, T, d, h, 1.0f, d_a, w.a, 1.0f, d_x);
  row_major_sgemm(blas, false, true, T, d, h, 1.0f, d_b, w.b, 1.0f, d_x);
}

}  // namespace moebench
