// Fast expert FFN: OpenMP over blocks of rows and of columns, one single-threaded BLAS call per
// block (blas.hpp), the elementwise work beside the products that feed it.
//
// Forward, one parallel region: a work item is a block of one expert's rows (128 or 256, by
// shape: row_block_rows), and runs
//   pre = x W1 -> pre += b1, act = GELU(pre) -> out = act W2 -> out += b2
// on one thread, so the [rows, h] hidden block is still in cache when GELU reads it and when
// the second product reads act.
// Backward, one parallel region in two phases:
//  1. per row block: dh = dy W2^T -> dh *= GELU'(pre) -> dx = dh W1^T (all row-local);
//  2. per (expert, kHiddenBlock columns of h): dW2[e][cols, :] += act^T dy,
//     dW1[e][:, cols] += x^T dh, db1[e][cols] += column sums of dh, and (first block only)
//     db2[e] += column sums of dy. Each weight-gradient element is one BLAS call's sum over all
//     of the expert's rows; each bias column is summed by one thread in row order. Under
//     GradWrite::overwrite the products run with beta = 0 and the bias sums start from zero:
//     the same bits as accumulating into cleared gradients.
// Blocks are fixed sizes, never derived from the thread count, so results do not depend on it;
// uneven experts (one hot, some empty) only change how many blocks there are. Nothing here
// allocates.
//
// GELU. Evaluated through the identity
//   0.5 (1 + tanh z) = sigmoid(2 z) = 1 / (1 + exp(-2 z)),   z = sqrt(2/pi) (u + 0.044715 u^3),
// with a branch-free exp that the compiler vectorises (libm's tanhf/expf are scalar calls that
// GCC vectorises only under -ffast-math). The tests hold it to a few ulp of the exact
// double-precision gelu().
#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>

#include "experts_internal.hpp"
#include "moebench/blas.hpp"
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

// Rows of one expert per forward / backward-phase-1 work item: 128 x h floats of hidden
// activations (256 KiB at h = 512) stay in L2 between a product and the pass that reads it.
// Each item repacks the expert's weights, so when they are large (d h >= 2^18 floats: 1 MiB
// per matrix, more than L2 holds) items take 256 rows and repack half as often: 20 % more
// GFLOP/s at d = 512, h = 2048 (bench_experts, built with either size). Chosen by shape,
// never by thread count.
int64_t row_block_rows(const ExpertShape& shape) {
  return int64_t{shape.d_model} * shape.d_hidden >= (int64_t{1} << 18) ? 256 : 128;
}

// Columns of h per weight-gradient work item (backward phase 2).
constexpr int64_t kHiddenBlock = 256;

// Regions with less work than this many multiply-adds run on the calling thread: waking the
// other threads costs more.
constexpr int64_t kParallelThreshold = 1 << 18;

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

// grad[:] *= GELU'(pre[:]).   grad, pre: [cols]
MOEBENCH_ELEMENTWISE_CLONES
void gelu_backward_row(float* grad, const float* pre, int64_t cols) {
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) grad[c] *= gelu_derivative_fast(pre[c]);
}

// row[:] += bias[:].   row, bias: [cols]
void add_bias_row(float* row, const float* bias, int64_t cols) {
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
}

// sums[c] += sum of matrix[r, c] over rows [0, rows), in row order.   matrix: [rows, stride]
MOEBENCH_ELEMENTWISE_CLONES
void add_column_sums(float* sums, const float* matrix, int64_t rows, int64_t stride,
                     int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = matrix + r * stride;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) sums[c] += row[c];
  }
}

// The row blocks of all experts, numbered expert by expert.
struct RowBlock {
  int expert;
  int64_t first;  // first row (into the [N, .] buffers)
  int64_t rows;
};

int64_t row_block_count(const int64_t* row_offsets, int experts, int64_t block_rows) {
  int64_t count = 0;
  for (int e = 0; e < experts; ++e) {
    count += ceil_div(row_offsets[e + 1] - row_offsets[e], block_rows);
  }
  return count;
}

RowBlock row_block(const int64_t* row_offsets, int experts, int64_t block_rows, int64_t index) {
  for (int e = 0; e < experts; ++e) {
    const int64_t rows = row_offsets[e + 1] - row_offsets[e];
    const int64_t blocks = ceil_div(rows, block_rows);
    if (index < blocks) {
      const int64_t offset = index * block_rows;
      return RowBlock{e, row_offsets[e] + offset, std::min(block_rows, rows - offset)};
    }
    index -= blocks;
  }
  MOEBENCH_CHECK(false, "experts: row block index out of range");
  return {};
}

bool worth_threads(const int64_t* row_offsets, const ExpertShape& shape) {
  const int64_t rows = row_offsets[shape.num_experts] - row_offsets[0];
  return rows * shape.d_model * shape.d_hidden >= kParallelThreshold;
}

}  // namespace

void experts_forward(float* out, ExpertActivations saved, const float* in,
                     const ExpertParams& params, const int64_t* row_offsets,
                     const ExpertShape& shape) {
  detail::check_expert_arguments(row_offsets, shape);
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  const int64_t block_rows = row_block_rows(shape);
  const int64_t blocks = row_block_count(row_offsets, shape.num_experts, block_rows);
  blas_single_threaded();
#pragma omp parallel for schedule(dynamic) if (worth_threads(row_offsets, shape))
  for (int64_t index = 0; index < blocks; ++index) {
    const RowBlock block = row_block(row_offsets, shape.num_experts, block_rows, index);
    const detail::ExpertSlice p = detail::expert_slice(params, shape, block.expert);
    float* pre = saved.hidden_pre + block.first * h;  // [rows, h]
    float* act = saved.hidden_act + block.first * h;  // [rows, h]
    float* y = out + block.first * d;                 // [rows, d]
    sgemm(false, false, block.rows, h, d, 1.0f, in + block.first * d, d, p.w1, h, 0.0f, pre, h);
    for (int64_t r = 0; r < block.rows; ++r) add_bias_gelu_row(pre + r * h, act + r * h, p.b1, h);
    sgemm(false, false, block.rows, d, h, 1.0f, act, h, p.w2, d, 0.0f, y, d);
    for (int64_t r = 0; r < block.rows; ++r) add_bias_row(y + r * d, p.b2, d);
  }
}

void experts_backward(float* d_in, ExpertParams grads, float* d_hidden, const float* d_out,
                      const float* in, ExpertActivations saved, const ExpertParams& params,
                      const int64_t* row_offsets, const ExpertShape& shape, GradWrite write) {
  detail::check_expert_arguments(row_offsets, shape);
  const bool overwrite = write == GradWrite::overwrite;
  const float beta = overwrite ? 0.0f : 1.0f;  // of the weight-gradient products
  const int experts = shape.num_experts;
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  const int64_t block_rows = row_block_rows(shape);
  const int64_t blocks = row_block_count(row_offsets, experts, block_rows);
  const int64_t hidden_blocks = ceil_div(h, kHiddenBlock);
  blas_single_threaded();
#pragma omp parallel if (worth_threads(row_offsets, shape))
  {
    // Phase 1, row-local: dh = dy W2^T; dh *= GELU'(pre); dx = dh W1^T.
#pragma omp for schedule(dynamic)
    for (int64_t index = 0; index < blocks; ++index) {
      const RowBlock block = row_block(row_offsets, experts, block_rows, index);
      const detail::ExpertSlice p = detail::expert_slice(params, shape, block.expert);
      const float* dy = d_out + block.first * d;            // [rows, d]
      const float* pre = saved.hidden_pre + block.first * h;  // [rows, h]
      float* dh = d_hidden + block.first * h;               // [rows, h]
      sgemm(false, true, block.rows, h, d, 1.0f, dy, d, p.w2, d, 0.0f, dh, h);
      for (int64_t r = 0; r < block.rows; ++r) gelu_backward_row(dh + r * h, pre + r * h, h);
      sgemm(false, true, block.rows, d, h, 1.0f, dh, h, p.w1, h, 0.0f, d_in + block.first * d, d);
    }
    // Phase 2 (after the implicit barrier), per (expert, hidden columns): weight and bias
    // gradients, each a sum over all of the expert's rows.
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < experts * hidden_blocks; ++item) {
      const int e = static_cast<int>(item / hidden_blocks);
      const int64_t col = (item % hidden_blocks) * kHiddenBlock;
      const int64_t cols = std::min(kHiddenBlock, h - col);
      const int64_t first = row_offsets[e];
      const int64_t rows = row_offsets[e + 1] - first;
      const detail::ExpertSlice g = detail::expert_slice(grads, shape, e);
      if (overwrite) {
        // The bias sums add into zeros; an expert without rows gets zero gradients.
        std::fill(g.b1 + col, g.b1 + col + cols, 0.0f);
        if (col == 0) std::fill(g.b2, g.b2 + d, 0.0f);
        if (rows == 0) {
          std::fill(g.w2 + col * d, g.w2 + (col + cols) * d, 0.0f);
          for (int64_t i = 0; i < d; ++i) {
            std::fill(g.w1 + i * h + col, g.w1 + i * h + col + cols, 0.0f);
          }
        }
      }
      if (rows == 0) continue;
      const float* x = in + first * d;                     // [rows, d]
      const float* dy = d_out + first * d;                 // [rows, d]
      const float* act = saved.hidden_act + first * h + col;  // [rows, cols] of [rows, h]
      const float* dh = d_hidden + first * h + col;           // [rows, cols] of [rows, h]
      sgemm(true, false, cols, d, rows, 1.0f, act, h, dy, d, beta, g.w2 + col * d, d);
      sgemm(true, false, d, cols, rows, 1.0f, x, d, dh, h, beta, g.w1 + col, h);
      add_column_sums(g.b1 + col, dh, rows, h, cols);
      if (col == 0) add_column_sums(g.b2, dy, rows, d, d);
    }
  }
}

}  // namespace moebench
