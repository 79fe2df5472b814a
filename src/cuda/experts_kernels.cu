// Expert FFNs on cuBLAS plus bias / GELU kernels. See experts_cuda.hpp; the CPU original:
// src/experts/experts_fast.cpp.
//
// Row-major [rows, cols] is column-major [cols, rows], so every row-major product
// C = A B is computed as the column-major C^T = B^T A^T. Per expert e with r rows:
//   forward   hidden_pre = in W1          sgemm(N, N, m=h, n=r, k=d, W1 ld h, in ld d,  pre ld h)
//             out = act W2                sgemm(N, N, m=d, n=r, k=h, W2 ld d, act ld h, out ld d)
//   backward  dW2 += act^T dy             sgemm(N, T, m=d, n=h, k=r, dy ld d, act ld h, dW2 ld d)
//             dh = dy W2^T                sgemm(T, N, m=h, n=r, k=d, W2 ld d, dy ld d,  dh ld h)
//             dW1 += in^T dh              sgemm(N, T, m=h, n=d, k=r, dh ld h, in ld d,  dW1 ld h)
//             d_in = dh W1^T              sgemm(T, N, m=d, n=r, k=h, W1 ld h, dh ld h,  dx ld d)
// GemmPrecision::bf16 makes the same calls as cublasGemmEx with A and B the bf16 copies (same
// layouts and leading dimensions; a row operand's copy starts at the call's first row) and C
// the same fp32 buffer: only the data types change.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda_check.hpp"
#include "experts_cuda.hpp"
#include "gelu_device.cuh"

namespace moebench {
namespace {

using cuda_detail::gelu_derivative_device;
using cuda_detail::gelu_device;

constexpr int kBlock = 256;
// Conversion grid: a grid-stride loop; 4096 blocks of 256 cover an H100/H200 several times.
constexpr int64_t kMaxConvertBlocks = 4096;

// The expert owning row r: the last e with offsets[e] <= r (empty experts skipped).
__device__ __forceinline__ int expert_of_row(const int64_t* offsets, int num_experts, int64_t r) {
  int lo = 0, hi = num_experts;  // offsets[lo] <= r < offsets[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (offsets[mid] <= r) lo = mid; else hi = mid;
  }
  return lo;
}

// One block per row r in [first, last): pre[r, :] += b1[e, :]; act[r, :] = GELU(pre[r, :]).
__global__ void bias_gelu_kernel(float* pre, float* act, const float* b1, const int64_t* offsets,
                                 int num_experts, int64_t first, int h) {
  const int64_t r = first + blockIdx.x;
  const float* bias = b1 + static_cast<int64_t>(expert_of_row(offsets, num_experts, r)) * h;
  float* pre_row = pre + r * h;
  float* act_row = act + r * h;
  for (int c = threadIdx.x; c < h; c += blockDim.x) {
    const float u = pre_row[c] + bias[c];
    pre_row[c] = u;
    act_row[c] = gelu_device(u);
  }
}

// One block per row: out[r, :] += b2[e, :].
__global__ void bias_add_kernel(float* out, const float* b2, const int64_t* offsets,
                                int num_experts, int64_t first, int d) {
  const int64_t r = first + blockIdx.x;
  const float* bias = b2 + static_cast<int64_t>(expert_of_row(offsets, num_experts, r)) * d;
  float* row = out + r * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) row[c] += bias[c];
}

// Grid (column blocks, E): one thread per (expert, column) walks the expert's rows in order.
// with_gelu: grad[r, c] *= GELU'(pre[r, c]) first (otherwise grad is only read).
// bias_grad[e, c] += sum over the expert's rows of grad[r, c].
__global__ void column_sum_kernel(float* bias_grad, float* grad, const float* pre,
                                  const int64_t* offsets, int cols, int with_gelu) {
  const int e = blockIdx.y;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float sum = 0.0f;
  for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
    const int64_t at = r * cols + c;
    float g = grad[at];
    if (with_gelu) {
      g *= gelu_derivative_device(pre[at]);
      grad[at] = g;
    }
    sum += g;
  }
  bias_grad[static_cast<int64_t>(e) * cols + c] += sum;
}

// out[i] = bf16(in[i]) (round to nearest even) for i in [0, count).
__global__ void to_bf16_kernel(__nv_bfloat16* out, const float* in, int64_t count) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    out[i] = __float2bfloat16_rn(in[i]);
  }
}

int checked_int(int64_t value, const char* what) {
  MOEBENCH_CHECK(value >= 0 && value <= INT_MAX,
                 std::string(what) + " does not fit cuBLAS's 32-bit sizes");
  return static_cast<int>(value);
}

cublasOperation_t operation(bool transpose) { return transpose ? CUBLAS_OP_T : CUBLAS_OP_N; }

}  // namespace

const char* to_string(ExpertGemm gemm) {
  return gemm == ExpertGemm::per_expert ? "per_expert" : "grouped";
}

CudaExperts::CudaExperts(const ExpertShape& shape, cublasContext* blas, CUstream_st* stream,
                         ExpertGemm gemm, GemmPrecision precision)
    : shape_(shape), blas_(blas), stream_(stream), gemm_(gemm), precision_(precision) {
  MOEBENCH_CHECK(shape.num_experts >= 0 && shape.d_model > 0 && shape.d_hidden > 0,
                 "expert shape must be positive");
  cudaStream_t bound = nullptr;
  MOEBENCH_CUBLAS_CHECK(cublasGetStream(blas, &bound));
  MOEBENCH_CHECK(bound == stream, "the cuBLAS handle must be bound to the experts' stream");
  const size_t E = static_cast<size_t>(shape.num_experts);
  device_offsets_.resize(E + 1);
  pointers_.resize(3 * E);
  a_.assign(E, nullptr);
  b_.assign(E, nullptr);
  c_.assign(E, nullptr);
  transa_.assign(E, CUBLAS_OP_N);
  transb_.assign(E, CUBLAS_OP_N);
  for (auto* v : {&m_, &n_, &k_, &lda_, &ldb_, &ldc_}) v->assign(E, 0);
  group_size_.assign(E, 1);
  alpha_.assign(E, 1.0f);
  beta_.assign(E, 0.0f);
  host_pointers_.assign(3 * E, nullptr);
}

void CudaExperts::reserve(int64_t max_rows) {
  MOEBENCH_CHECK(max_rows >= 0, "CudaExperts::reserve: max_rows must be non-negative");
  const size_t E = static_cast<size_t>(shape_.num_experts);
  const size_t d = static_cast<size_t>(shape_.d_model), h = static_cast<size_t>(shape_.d_hidden);
  weights_bf16_.resize(E * d * h);  // no-op after the first call
  if (max_rows <= reserved_rows_) return;
  rows_d_bf16_.resize(static_cast<size_t>(max_rows) * d);
  rows_h_bf16_.resize(static_cast<size_t>(max_rows) * h);
  reserved_rows_ = max_rows;
}

void CudaExperts::check_rows_reserved(int64_t rows) const {
  MOEBENCH_CHECK(rows <= reserved_rows_,
                 "CudaExperts: bf16 GEMMs over " + std::to_string(rows) +
                     " rows need reserve(" + std::to_string(rows) + ") first (reserved: " +
                     std::to_string(reserved_rows_) + " rows)");
}

const void* CudaExperts::weights_operand(const float* weights) {
  if (precision_ == GemmPrecision::fp32) return weights;
  const int64_t count = int64_t{shape_.num_experts} * shape_.d_model * shape_.d_hidden;
  MOEBENCH_CHECK(count > 0 && static_cast<size_t>(count) <= weights_bf16_.size(),
                 "CudaExperts: bf16 weight scratch not reserved");
  const int64_t blocks = std::min<int64_t>((count + kBlock - 1) / kBlock, kMaxConvertBlocks);
  to_bf16_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream_>>>(weights_bf16_.data(),
                                                                          weights, count);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  return weights_bf16_.data();
}

const void* CudaExperts::rows_operand(const float* rows, int cols, int64_t first, int64_t last,
                                      DeviceArray<__nv_bfloat16>& scratch) {
  const float* from = rows + first * cols;
  if (precision_ == GemmPrecision::fp32) return from;
  const int64_t count = (last - first) * cols;
  MOEBENCH_CHECK(count > 0 && static_cast<size_t>(count) <= scratch.size(),
                 "CudaExperts: bf16 row scratch smaller than the call");
  const int64_t blocks = std::min<int64_t>((count + kBlock - 1) / kBlock, kMaxConvertBlocks);
  to_bf16_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream_>>>(scratch.data(), from,
                                                                          count);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  return scratch.data();
}

const void* CudaExperts::operand_at(const void* operand, int64_t index) const {
  const int64_t element_bytes = precision_ == GemmPrecision::fp32
                                    ? int64_t{sizeof(float)}
                                    : int64_t{sizeof(__nv_bfloat16)};
  return static_cast<const char*>(operand) + index * element_bytes;
}

void CudaExperts::upload_offsets(const int64_t* row_offsets) {
  for (int e = 0; e < shape_.num_experts; ++e) {
    MOEBENCH_CHECK(row_offsets[e] >= 0 && row_offsets[e] <= row_offsets[e + 1],
                   "expert row offsets must be non-decreasing");
  }
  copy_to_device(device_offsets_.data(), row_offsets, device_offsets_.bytes(), stream_);
}

void CudaExperts::run(const Product& p, const int64_t* row_offsets) {
  const float one = 1.0f;
  int groups = 0;
  const int E = shape_.num_experts;
  // bf16 runs one cublasGemmEx per expert on both paths: cublasGemmGroupedBatchedEx takes bf16
  // A/B only with a bf16 C (experts_cuda.hpp).
  const bool bf16 = precision_ == GemmPrecision::bf16;
  const bool call_per_expert = gemm_ == ExpertGemm::per_expert || bf16;
  for (int e = 0; e < E; ++e) {
    const int rows = checked_int(row_offsets[e + 1] - row_offsets[e], "an expert's row count");
    if (rows == 0) continue;
    const int m = p.m;
    const int n = p.rows_dim == 1 ? rows : p.n;
    const int k = p.rows_dim == 2 ? rows : p.k;
    if (bf16) {
      MOEBENCH_CUBLAS_CHECK(cublasGemmEx(blas_, operation(p.transpose_a), operation(p.transpose_b),
                                         m, n, k, &one, a_[e], CUDA_R_16BF, p.lda, b_[e],
                                         CUDA_R_16BF, p.ldb, &p.beta, c_[e], CUDA_R_32F, p.ldc,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      continue;
    }
    if (gemm_ == ExpertGemm::per_expert) {
      MOEBENCH_CUBLAS_CHECK(cublasSgemm(blas_, operation(p.transpose_a), operation(p.transpose_b),
                                        m, n, k, &one, static_cast<const float*>(a_[e]), p.lda,
                                        static_cast<const float*>(b_[e]), p.ldb, &p.beta, c_[e],
                                        p.ldc));
      continue;
    }
    transa_[groups] = operation(p.transpose_a);
    transb_[groups] = operation(p.transpose_b);
    m_[groups] = m;
    n_[groups] = n;
    k_[groups] = k;
    lda_[groups] = p.lda;
    ldb_[groups] = p.ldb;
    ldc_[groups] = p.ldc;
    alpha_[groups] = 1.0f;
    beta_[groups] = p.beta;
    group_size_[groups] = 1;
    // fp32 operands here; cuBLAS reads A and B only.
    host_pointers_[groups] = const_cast<float*>(static_cast<const float*>(a_[e]));
    host_pointers_[E + groups] = const_cast<float*>(static_cast<const float*>(b_[e]));
    host_pointers_[2 * E + groups] = c_[e];
    ++groups;
  }
  if (call_per_expert || groups == 0) return;
  // The pointer arrays live in device memory; the copy is ordered before the GEMM on the
  // stream, and the next product's copy after it, so one device array serves every call.
  copy_to_device(pointers_.data(), host_pointers_.data(), pointers_.bytes(), stream_);
  const float* const* a = pointers_.data();
  const float* const* b = pointers_.data() + E;
  float* const* c = pointers_.data() + 2 * E;
  MOEBENCH_CUBLAS_CHECK(cublasSgemmGroupedBatched(
      blas_, transa_.data(), transb_.data(), m_.data(), n_.data(), k_.data(), alpha_.data(), a,
      lda_.data(), b, ldb_.data(), beta_.data(), c, ldc_.data(), groups, group_size_.data()));
}

void CudaExperts::forward(float* out, ExpertActivations saved, const float* in,
                          const ExpertParams& params, const int64_t* row_offsets) {
  const int E = shape_.num_experts;
  const int d = shape_.d_model, h = shape_.d_hidden;
  const int64_t first = row_offsets[0], last = row_offsets[E];
  if (E == 0 || last == first) return;
  if (precision_ == GemmPrecision::bf16) check_rows_reserved(last - first);
  upload_offsets(row_offsets);
  const void* w1 = weights_operand(params.w1);
  const void* x = rows_operand(in, d, first, last, rows_d_bf16_);
  for (int e = 0; e < E; ++e) {  // hidden_pre = in W1
    a_[e] = operand_at(w1, static_cast<int64_t>(e) * d * h);
    b_[e] = operand_at(x, (row_offsets[e] - first) * d);
    c_[e] = saved.hidden_pre + row_offsets[e] * h;
  }
  run({false, false, h, 0, d, 1, h, d, h, 0.0f}, row_offsets);
  const unsigned rows = static_cast<unsigned>(checked_int(last - first, "the expert row count"));
  bias_gelu_kernel<<<rows, kBlock, 0, stream_>>>(saved.hidden_pre, saved.hidden_act, params.b1,
                                                  device_offsets_.data(), E, first, h);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  const void* w2 = weights_operand(params.w2);  // after in W1: reuses the weight scratch
  const void* act = rows_operand(saved.hidden_act, h, first, last, rows_h_bf16_);
  for (int e = 0; e < E; ++e) {  // out = act W2
    a_[e] = operand_at(w2, static_cast<int64_t>(e) * h * d);
    b_[e] = operand_at(act, (row_offsets[e] - first) * h);
    c_[e] = out + row_offsets[e] * d;
  }
  run({false, false, d, 0, h, 1, d, h, d, 0.0f}, row_offsets);
  bias_add_kernel<<<rows, kBlock, 0, stream_>>>(out, params.b2, device_offsets_.data(), E, first,
                                                 d);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void CudaExperts::backward(float* d_in, ExpertParams grads, float* d_hidden, const float* d_out,
                           const float* in, ExpertActivations saved, const ExpertParams& params,
                           const int64_t* row_offsets) {
  const int E = shape_.num_experts;
  const int d = shape_.d_model, h = shape_.d_hidden;
  const int64_t first = row_offsets[0], last = row_offsets[E];
  if (E == 0 || last == first) return;
  if (precision_ == GemmPrecision::bf16) check_rows_reserved(last - first);
  upload_offsets(row_offsets);
  const void* dy = rows_operand(d_out, d, first, last, rows_d_bf16_);
  const void* act = rows_operand(saved.hidden_act, h, first, last, rows_h_bf16_);
  for (int e = 0; e < E; ++e) {  // dW2 += act^T dy
    a_[e] = operand_at(dy, (row_offsets[e] - first) * d);
    b_[e] = operand_at(act, (row_offsets[e] - first) * h);
    c_[e] = grads.w2 + static_cast<int64_t>(e) * h * d;
  }
  run({false, true, d, h, 0, 2, d, h, d, 1.0f}, row_offsets);
  const void* w2 = weights_operand(params.w2);
  for (int e = 0; e < E; ++e) {  // dh = dy W2^T
    a_[e] = operand_at(w2, static_cast<int64_t>(e) * h * d);
    b_[e] = operand_at(dy, (row_offsets[e] - first) * d);
    c_[e] = d_hidden + row_offsets[e] * h;
  }
  run({true, false, h, 0, d, 1, d, d, h, 0.0f}, row_offsets);
  // dh *= GELU'(pre); db1 += column sums of dh; db2 += column sums of dy.
  column_sum_kernel<<<dim3((h + kBlock - 1) / kBlock, E), kBlock, 0, stream_>>>(
      grads.b1, d_hidden, saved.hidden_pre, device_offsets_.data(), h, 1);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  column_sum_kernel<<<dim3((d + kBlock - 1) / kBlock, E), kBlock, 0, stream_>>>(
      grads.b2, const_cast<float*>(d_out), nullptr, device_offsets_.data(), d, 0);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  // The scratch of act, dy and W2 is reused from here: their products are enqueued before.
  const void* dh = rows_operand(d_hidden, h, first, last, rows_h_bf16_);  // after GELU'
  const void* x = rows_operand(in, d, first, last, rows_d_bf16_);
  for (int e = 0; e < E; ++e) {  // dW1 += in^T dh
    a_[e] = operand_at(dh, (row_offsets[e] - first) * h);
    b_[e] = operand_at(x, (row_offsets[e] - first) * d);
    c_[e] = grads.w1 + static_cast<int64_t>(e) * d * h;
  }
  run({false, true, h, d, 0, 2, h, d, h, 1.0f}, row_offsets);
  const void* w1 = weights_operand(params.w1);
  for (int e = 0; e < E; ++e) {  // d_in = dh W1^T
    a_[e] = operand_at(w1, static_cast<int64_t>(e) * d * h);
    b_[e] = operand_at(dh, (row_offsets[e] - first) * h);
    c_[e] = d_in + row_offsets[e] * d;
  }
  run({true, false, d, 0, h, 1, h, h, d, 0.0f}, row_offsets);
}

}  // namespace moebench
