// The local experts' FFNs on the GPU (experts.hpp): y = GELU(x W1[e] + b1[e]) W2[e] + b2[e]
// over the rows each expert owns, expert-major. Products go to cuBLAS, one call per expert
// (ExpertGemm::per_expert) or one grouped call per product (ExpertGemm::grouped), in one of
// two precisions (GemmPrecision):
//   fp32  cublasSgemm / cublasSgemmGroupedBatched in fp32 (no TF32).
//   bf16  every product's operands are rounded to bf16 (round to nearest even) by a conversion
//         kernel into scratch owned here, and cublasGemmEx multiplies them with fp32
//         accumulation into the same fp32 outputs (A/B CUDA_R_16BF, C CUDA_R_32F,
//         CUBLAS_COMPUTE_32F). cuBLAS's grouped GEMM (cublasGemmGroupedBatchedEx) takes bf16
//         A/B only with a bf16 C, which would round the outputs and the accumulated weight
//         gradients, so in bf16 ExpertGemm::grouped also runs one cublasGemmEx per expert.
//         Weights are converted on every call (the optimizer changes them every step).
// Bias, GELU (tanh form, via 0.5 (1 + tanh z) = 1 / (1 + exp(-2 z)) as the CPU fast path) and
// the bias gradients are fp32 kernels here in both precisions.
//
// Layouts and contracts are those of experts_forward / experts_backward: parameters are
// ExpertParams views into *device* memory ([E_local, d, h] row-major W1, ...), rows are
// grouped by row_offsets (a *host* array [E_local + 1]; the GEMM sizes are needed on the host
// anyway), backward overwrites d_in and accumulates (+=) into grads. Bias gradients are
// summed per column in row order by one thread, so results do not depend on the launch.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>

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
              ExpertGemm gemm = ExpertGemm::per_expert,
              GemmPrecision precision = GemmPrecision::fp32);

  // Allocates the bf16 operand scratch (below) for calls of up to max_rows rows
  // (row_offsets[E_local] - row_offsets[0]). Needed only for GemmPrecision::bf16, whose
  // forward and backward refuse (moebench::Error, before any device work) a call with more
  // rows than reserved. Call it outside the step loop: it allocates on the first call and
  // whenever max_rows exceeds what is reserved, never otherwise.
  void reserve(int64_t max_rows);
  int64_t reserved_rows() const { return reserved_rows_; }

  // out [N, d]; saved.hidden_pre, saved.hidden_act [N, h]; in [N, d]. Device pointers.
  void forward(float* out, ExpertActivations saved, const float* in, const ExpertParams& params,
               const int64_t* row_offsets);
  // d_in [N, d] (overwritten); grads accumulated; d_hidden [N, h] scratch. Device pointers.
  void backward(float* d_in, ExpertParams grads, float* d_hidden, const float* d_out,
                const float* in, ExpertActivations saved, const ExpertParams& params,
                const int64_t* row_offsets);

  ExpertGemm gemm() const { return gemm_; }
  void set_gemm(ExpertGemm gemm) { gemm_ = gemm; }
  GemmPrecision precision() const { return precision_; }
  void set_precision(GemmPrecision precision) { precision_ = precision; }

 private:
  // One product of the FFN for every expert with rows > 0, in column-major cuBLAS terms:
  // C_e = op(A_e) op(B_e) + beta C_e with the expert's row count as n (rows_dim 1) or k
  // (rows_dim 2). The caller fills a_, b_ (operands: fp32 or bf16 as precision_ says) and c_
  // (fp32) [E_local] first.
  struct Product {
    bool transpose_a = false, transpose_b = false;
    int m = 0, n = 0, k = 0;  // the one named by rows_dim is replaced by the expert's rows
    int rows_dim = 1;
    int lda = 0, ldb = 0, ldc = 0;
    float beta = 0.0f;
  };
  void run(const Product& product, const int64_t* row_offsets);
  void upload_offsets(const int64_t* row_offsets);
  void check_rows_reserved(int64_t rows) const;
  // The operands cuBLAS reads. fp32: the caller's buffer itself. bf16: a copy converted into
  // `scratch` now (stream-ordered after the products that read the scratch before).
  // weights_operand: all of a [E_local, ., .] weight tensor (weights_bf16_).
  // rows_operand: rows [first, last) of a [N, cols] buffer, starting at that buffer's row
  // `first` (the copy holds row first at its row 0).
  const void* weights_operand(const float* weights);
  const void* rows_operand(const float* rows, int cols, int64_t first, int64_t last,
                           DeviceArray<__nv_bfloat16>& scratch);
  // Element `index` of an operand returned above, counted in its own element type.
  const void* operand_at(const void* operand, int64_t index) const;

  ExpertShape shape_;
  cublasContext* blas_;
  CUstream_st* stream_;
  ExpertGemm gemm_;
  GemmPrecision precision_;
  DeviceArray<int64_t> device_offsets_;  // [E_local + 1]
  DeviceArray<float*> pointers_;         // [3, E_local]  grouped: the A, B and C arrays
  // bf16 operand copies, sized by reserve() (2 (E_local d h + max_rows (d + h)) bytes). One
  // weight tensor and one row operand of each width at a time: forward in, W1 | act, W2;
  // backward d_out, act, W2 | d_hidden, in, W1.
  int64_t reserved_rows_ = 0;
  DeviceArray<__nv_bfloat16> weights_bf16_;  // [E_local, d, h] or [E_local, h, d]: W1 or W2
  DeviceArray<__nv_bfloat16> rows_d_bf16_;   // [max_rows, d]: in or d_out
  DeviceArray<__nv_bfloat16> rows_h_bf16_;   // [max_rows, h]: hidden_act or d_hidden
  // Host scratch, sized once.
  std::vector<const void*> a_, b_;       // [E_local]
  std::vector<float*> c_;                // [E_local]
  std::vector<cublasOperation_t> transa_, transb_;                        // [E_local]
  std::vector<int> m_, n_, k_, lda_, ldb_, ldc_, group_size_;              // [E_local]
  std::vector<float> alpha_, beta_;      // [E_local]
  std::vector<float*> host_pointers_;    // [3, E_local]
};

}  // namespace moebench
