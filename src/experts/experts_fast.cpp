// Fast expert FFN: one OpenBLAS sgemm per expert and product, OpenMP over elementwise work.
//
// Threading. Two thread pools share the cores: OpenBLAS's own pthreads (Debian's OpenBLAS is
// the pthread build) inside every sgemm, and OpenMP's for the elementwise passes. They take
// turns and never compute at the same time:
//  - Experts are visited one after another and each product goes to a threaded cblas_sgemm
//    (OpenBLAS itself runs small products on one thread). We do not run experts in parallel
//    under OpenMP: calling the pthread OpenBLAS from an OpenMP region would either start
//    T_omp x T_blas threads on T cores or need openblas_set_num_threads(1), a process-wide
//    switch, and one hot expert (uneven routing) would become one thread's critical path.
//  - The elementwise work of *all* experts is batched into as few OpenMP regions as the data
//    dependencies allow: forward = [sgemm x W1 for every expert] [bias + GELU, one region]
//    [sgemm act W2 for every expert] [bias, one region]; backward = [dW2 and d_hidden sgemms]
//    [GELU' + both bias gradients, one region] [dW1 and d_in sgemms]. After a region, idle
//    OpenMP workers spin before sleeping (libgomp's default, milliseconds, unless
//    OMP_WAIT_POLICY=passive) and steal cores from the next sgemm; one region per expert
//    pays that 4 x E times per step, batching 3 times whatever E is. The price is that
//    bias + GELU streams [N, h] through memory instead of finding each expert's freshly
//    written slice in cache. Measured (bench/bench_experts.cpp, 2 shared cores, E = 16,
//    d = 512, h = 2048), forward as a fraction of one 2048^3 sgemm: per-expert regions ~50 %
//    with the default wait policy and ~85 % with OMP_WAIT_POLICY=passive; batched ~75-80 %
//    with either, so batching is the choice that does not depend on the environment.
//
// GELU. Evaluated through the identity
//   0.5 (1 + tanh z) = sigmoid(2 z) = 1 / (1 + exp(-2 z)),   z = sqrt(2/pi) (u + 0.044715 u^3),
// with a branch-free exp that the compiler vectorises (libm's tanhf/expf are scalar calls that
// GCC vectorises only under -ffast-math). The tests hold it to a few ulp of the exact
// double-precision gelu().
//
// Determinism: bias gradients are summed per column by one thread in row order, so results
// do not depend on the OpenMP thread count. Nothing here allocates.
#include <cblas.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdint>
#include <string>

#include "experts_internal.hpp"
#include "moebench/check.hpp"
#include "moebench/experts.hpp"

namespace moebench {
namespace {

constexpr float kSqrt2OverPi = 0.797884560802865f;
constexpr float kGeluCubic = 0.044715f;

// In a portable x86-64 build (MOEBENCH_NATIVE=OFF: SSE2 only) the elementwise kernels are
// compiled twice, for SSE2 and for AVX2, and the loader picks the best one the CPU has
// (GCC/Clang function multiversioning): 8-wide GELU is ~3x faster than 4-wide. A build that
// already targets AVX2 or better (-march=native) uses its own ISA, and GCC may contract a*b+c
// into FMAs there, which moves results by about an ulp (the tests' bounds allow for it).
#if defined(__x86_64__) && !defined(__AVX2__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define MOEBENCH_ELEMENTWISE_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef MOEBENCH_ELEMENTWISE_CLONES
#define MOEBENCH_ELEMENTWISE_CLONES
#endif

// Elementwise passes below this many elements run on the calling thread only: a parallel
// region costs a few microseconds, more than the work.
constexpr int64_t kParallelThreshold = 32768;

// Bias-gradient work item: one expert's rows in 256 columns (1 KiB per row), summed by one
// thread into a stack accumulator.
constexpr int64_t kColumnBlock = 256;

// exp(x), with x clamped to [-80, 80] so that 1 / (1 + exp) and exp * sigmoid stay normal
// floats. Cephes expf: x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n
// built in the exponent bits; n is rounded by adding 1.5 * 2^23. The clamp compares the
// integer bit patterns: a float compare-and-select is not if-converted (so not vectorised) by
// GCC under the default -ftrapping-math. NaN becomes +-80 here, but every caller multiplies
// by u, so NaN still propagates.
inline float exp_fast(float x) {
  constexpr int32_t kLimitBits = std::bit_cast<int32_t>(80.0f);
  const int32_t bits = std::bit_cast<int32_t>(x);
  const int32_t limited = (bits & INT32_MIN) | kLimitBits;
  x = std::bit_cast<float>((bits & INT32_MAX) > kLimitBits ? limited : bits);

  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  const float shifted = x * kLog2e + kRound;
  const float n = shifted - kRound;
  const int32_t n_int = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kRound);
  float r = x - n * 0.693359375f;  // ln2 in two parts; n * the high part is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((n_int + 127) << 23);
}

// sigmoid(2 z(u)) = 0.5 (1 + tanh z(u)); also returns exp(-2 z(u)) for the derivative.
inline float gelu_gate(float u, float& exp_minus_2z) {
  const float z = kSqrt2OverPi * (u + kGeluCubic * u * u * u);
  exp_minus_2z = exp_fast(-2.0f * z);
  return 1.0f / (1.0f + exp_minus_2z);
}

inline float gelu_fast(float u) {
  float e = 0.0f;
  return u * gelu_gate(u, e);
}

// GELU'(u) = s + 0.5 u (1 - tanh^2 z) z' with s = sigmoid(2z): 1 - tanh^2 z = 4 s (1 - s) and
// 1 - s = e s (e = exp(-2z)), so GELU'(u) = s + 2 u s (e s) z', free of cancellation.
inline float gelu_derivative_fast(float u) {
  float e = 0.0f;
  const float s = gelu_gate(u, e);
  const float dz = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * u * u);
  return s + 2.0f * u * s * (e * s) * dz;
}

int blas_int(int64_t value) {
  MOEBENCH_CHECK(value <= INT_MAX, "dimension " + std::to_string(value) +
                                       " does not fit the 32-bit BLAS interface");
  return static_cast<int>(value);
}

// C[m, n] = op(A) op(B) + beta C, row-major.
void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, blas_int(m), blas_int(n), blas_int(k),
              1.0f, a, blas_int(lda), b, blas_int(ldb), beta, c, blas_int(ldc));
}

// The expert owning row r (row_offsets[e] <= r < row_offsets[e + 1]; empty experts skipped).
int expert_of_row(const int64_t* row_offsets, int num_experts, int64_t row) {
  const int64_t* end = row_offsets + num_experts + 1;
  return static_cast<int>(std::upper_bound(row_offsets, end, row) - row_offsets) - 1;
}

// pre[:] += bias; act[:] = GELU(pre[:]).   pre, act, bias: [cols]
MOEBENCH_ELEMENTWISE_CLONES
void add_bias_gelu_row(float* pre, float* act, const float* bias, int64_t cols) {
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) {
    const float u = pre[c] + bias[c];
    pre[c] = u;
    act[c] = gelu_fast(u);
  }
}

// For every row r of expert e: pre[r, :] += b1[e, :]; act[r, :] = GELU(pre[r, :]).
// pre, act: [N, h]; b1: [E_local, h]
void add_bias_gelu(float* pre, float* act, const float* b1, const int64_t* row_offsets,
                   const ExpertShape& shape) {
  const int64_t h = shape.d_hidden;
  const int64_t first = row_offsets[0];
  const int64_t last = row_offsets[shape.num_experts];
#pragma omp parallel for schedule(static) if ((last - first) * h >= kParallelThreshold)
  for (int64_t r = first; r < last; ++r) {
    const float* bias = b1 + expert_of_row(row_offsets, shape.num_experts, r) * h;
    add_bias_gelu_row(pre + r * h, act + r * h, bias, h);
  }
}

// For every row r of expert e: out[r, :] += b2[e, :].   out: [N, d]; b2: [E_local, d]
void add_bias(float* out, const float* b2, const int64_t* row_offsets, const ExpertShape& shape) {
  const int64_t d = shape.d_model;
  const int64_t first = row_offsets[0];
  const int64_t last = row_offsets[shape.num_experts];
#pragma omp parallel for schedule(static) if ((last - first) * d >= kParallelThreshold)
  for (int64_t r = first; r < last; ++r) {
    const float* bias = b2 + expert_of_row(row_offsets, shape.num_experts, r) * d;
    float* row = out + r * d;
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) row[c] += bias[c];
  }
}

// bias_grad[c] += sum of matrix[r, c] over rows [first_row, last_row), for the columns
// [first_column, first_column + width).   matrix: [N, cols]; bias_grad: [cols] (one expert's)
MOEBENCH_ELEMENTWISE_CLONES
void sum_column_block(float* bias_grad, const float* matrix, int64_t first_row,
                      int64_t last_row, int64_t cols, int64_t first_column, int64_t width) {
  float sum[kColumnBlock] = {};
  for (int64_t r = first_row; r < last_row; ++r) {
    const float* row = matrix + r * cols + first_column;
#pragma omp simd
    for (int64_t c = 0; c < width; ++c) sum[c] += row[c];
  }
  for (int64_t c = 0; c < width; ++c) bias_grad[first_column + c] += sum[c];
}

// The same block of grad: first grad *= GELU'(pre), then bias_grad += column sums of grad.
// grad, pre: [N, cols]; bias_grad: [cols] (one expert's)
MOEBENCH_ELEMENTWISE_CLONES
void gelu_backward_column_block(float* bias_grad, float* grad, const float* pre,
                                int64_t first_row, int64_t last_row, int64_t cols,
                                int64_t first_column, int64_t width) {
  float sum[kColumnBlock] = {};
  for (int64_t r = first_row; r < last_row; ++r) {
    float* grad_row = grad + r * cols + first_column;
    const float* pre_row = pre + r * cols + first_column;
#pragma omp simd
    for (int64_t c = 0; c < width; ++c) {
      grad_row[c] *= gelu_derivative_fast(pre_row[c]);
      sum[c] += grad_row[c];
    }
  }
  for (int64_t c = 0; c < width; ++c) bias_grad[first_column + c] += sum[c];
}

// d_hidden *= GELU'(hidden_pre); db1[e] += column sums of d_hidden over e's rows;
// db2[e] += column sums of d_out over e's rows. One parallel region; a work item is one
// (expert, column block), so every column is summed by one thread in row order.
// d_hidden, hidden_pre: [N, h]; d_out: [N, d]; db1: [E_local, h]; db2: [E_local, d]
void gelu_backward_and_bias_grads(float* d_hidden, float* db1, float* db2, const float* d_out,
                                  const float* hidden_pre, const int64_t* row_offsets,
                                  const ExpertShape& shape) {
  const int64_t experts = shape.num_experts;
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  const int64_t hidden_blocks = (h + kColumnBlock - 1) / kColumnBlock;
  const int64_t model_blocks = (d + kColumnBlock - 1) / kColumnBlock;
  const int64_t rows = row_offsets[experts] - row_offsets[0];
#pragma omp parallel if (rows * h >= kParallelThreshold)
  {
#pragma omp for schedule(dynamic) nowait
    for (int64_t item = 0; item < experts * hidden_blocks; ++item) {
      const int64_t e = item / hidden_blocks;
      const int64_t first_column = (item % hidden_blocks) * kColumnBlock;
      gelu_backward_column_block(db1 + e * h, d_hidden, hidden_pre, row_offsets[e],
                                 row_offsets[e + 1], h, first_column,
                                 std::min(kColumnBlock, h - first_column));
    }
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < experts * model_blocks; ++item) {
      const int64_t e = item / model_blocks;
      const int64_t first_column = (item % model_blocks) * kColumnBlock;
      sum_column_block(db2 + e * d, d_out, row_offsets[e], row_offsets[e + 1], d, first_column,
                       std::min(kColumnBlock, d - first_column));
    }
  }
}

}  // namespace

void experts_forward(float* out, ExpertActivations saved, const float* in,
                     const ExpertParams& params, const int64_t* row_offsets,
                     const ExpertShape& shape) {
  detail::check_expert_arguments(row_offsets, shape);
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  for (int e = 0; e < shape.num_experts; ++e) {  // hidden_pre = in W1
    const int64_t first = row_offsets[e];
    const int64_t rows = row_offsets[e + 1] - first;
    if (rows == 0) continue;
    sgemm(false, false, rows, h, d, in + first * d, d, params.w1 + e * d * h, h, 0.0f,
          saved.hidden_pre + first * h, h);
  }
  add_bias_gelu(saved.hidden_pre, saved.hidden_act, params.b1, row_offsets, shape);
  for (int e = 0; e < shape.num_experts; ++e) {  // out = hidden_act W2
    const int64_t first = row_offsets[e];
    const int64_t rows = row_offsets[e + 1] - first;
    if (rows == 0) continue;
    sgemm(false, false, rows, d, h, saved.hidden_act + first * h, h, params.w2 + e * h * d, d,
          0.0f, out + first * d, d);
  }
  add_bias(out, params.b2, row_offsets, shape);
}

void experts_backward(float* d_in, ExpertParams grads, float* d_hidden, const float* d_out,
                      const float* in, ExpertActivations saved, const ExpertParams& params,
                      const int64_t* row_offsets, const ExpertShape& shape) {
  detail::check_expert_arguments(row_offsets, shape);
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  for (int e = 0; e < shape.num_experts; ++e) {
    const int64_t first = row_offsets[e];
    const int64_t rows = row_offsets[e + 1] - first;
    if (rows == 0) continue;
    const float* dy = d_out + first * d;                  // [rows, d]
    const float* act = saved.hidden_act + first * h;      // [rows, h]
    float* dh = d_hidden + first * h;                     // [rows, h]
    sgemm(true, false, h, d, rows, act, h, dy, d, 1.0f, grads.w2 + e * h * d, d);  // dW2 += a^T dy
    sgemm(false, true, rows, h, d, dy, d, params.w2 + e * h * d, d, 0.0f, dh, h);  // dh = dy W2^T
  }
  gelu_backward_and_bias_grads(d_hidden, grads.b1, grads.b2, d_out, saved.hidden_pre,
                               row_offsets, shape);
  for (int e = 0; e < shape.num_experts; ++e) {
    const int64_t first = row_offsets[e];
    const int64_t rows = row_offsets[e + 1] - first;
    if (rows == 0) continue;
    const float* x = in + first * d;                      // [rows, d]
    const float* dh = d_hidden + first * h;               // [rows, h]
    float* dx = d_in + first * d;                         // [rows, d]
    sgemm(true, false, d, h, rows, x, d, dh, h, 1.0f, grads.w1 + e * d * h, h);  // dW1 += x^T dh
    sgemm(false, true, rows, d, h, dh, h, params.w1 + e * d * h, h, 0.0f, dx, d);  // dx = dh W1^T
  }
}

}  // namespace moebench
