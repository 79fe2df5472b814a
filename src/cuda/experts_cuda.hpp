// The local experts' FFNs on the GPU (experts.hpp): y = GELU(x W1[e] + b1[e]) W2[e] + b2[e]
// over the rows each expert owns, expert-major. Products go to cuBLAS in fp32 (no TF32), one
// sgemm per expert (ExpertGemm::per_expert) or one cublasSgemmGroupedBatched call per product
// (ExpertGemm::grouped); bias, GELU (tanh form, via 0.5 (1 + tanh z) = 1 / (1 + exp(-2 z)) as
// the CPU fast path) and the bias gradients are kernels here.
//
// Layouts and contracts are those of experts_forward / experts_backward: parameters are
// ExpertParams views into *device* memory ([E_local, d, h] row-major W1, ...), rows are
// grouped by row_offsets (a *host* array [E_local + 1]; the GEMM sizes are needed on the host
// anyway), backward overwrites d_in and accumulates (+=) into grads. Bias gradients are
// summed per column in row order by one thread, so results do not depend on the launch.
#pragma once

#include <cublas_v2.h>

#include <cstdint>
#include <vector>

#include "moebench/cuda.hpp"
#include "moebench/experts.hpp"

namespace moebench {

enum class ExpertGemm { per_expert, grouped };
const char* to_string(ExpertGemm gemm);

class CudaExperts {
 public:
  // `blas` must be bound to `stream` (CudaContext binds its handle to the compute stream).
  CudaExperts(const ExpertShape& shape, cublasContext* blas, CUstream_st* stream,
              ExpertGemm gemm = ExpertGemm::per_expert);

  // out [N, d]; saved.hidden_pre, saved.hidden_act [N, h]; in [N, d]. Device pointers.
  void forward(float* out, ExpertActivations saved, const float* in, const ExpertParams& params,
               const int64_t* row_offsets);
  // d_in [N, d] (overwritten); grads accumulated; d_hidden [N, h] scratch. Device pointers.
  void backward(float* d_in, ExpertParams grads, float* d_hidden, const float* d_out,
                const float* in, ExpertActivations saved, const ExpertParams& params,
                const int64_t* row_offsets);

  ExpertGemm gemm() const { return gemm_; }
  void set_gemm(ExpertGemm gemm) { gemm_ = gemm; }

 private:
  // One product of the FFN for every expert with rows > 0, in column-major cuBLAS terms:
  // C_e = op(A_e) op(B_e) + beta C_e with the expert's row count as n (rows_dim 1) or k
  // (rows_dim 2). The caller fills a_, b_, c_ [E_local] first.
  struct Product {
    bool transpose_a = false, transpose_b = false;
    int m = 0, n = 0, k = 0;  // the one named by rows_dim is replaced by the expert's rows
    int rows_dim = 1;
    int lda = 0, ldb = 0, ldc = 0;
    float beta = 0.0f;
  };
  void run(const Product& product, const int64_t* row_offsets);
  void upload_offsets(const int64_t* row_offsets);

  ExpertShape shape_;
  cublasContext* blas_;
  CUstream_st* stream_;
  ExpertGemm gemm_;
  DeviceArray<int64_t> device_offsets_;  // [E_local + 1]
  DeviceArray<float*> pointers_;         // [3, E_local]  grouped: the A, B and C arrays
  // Host scratch, sized once.
  std::vector<const float*> a_, b_;      // [E_local]
  std::vector<float*> c_;                // [E_local]
  std::vector<cublasOperation_t> transa_, transb_;                        // [E_local]
  std::vector<int> m_, n_, k_, lda_, ldb_, ldc_, group_size_;              // [E_local]
  std::vector<float> alpha_, beta_;      // [E_local]
  std::vector<float*> host_pointers_;    // [3, E_local]
};

}  // namespace moebench
