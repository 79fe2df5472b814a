// Causal multi-head self-attention on BLAS (see layers.hpp). Per (batch, head) pair the four
// products of forward and five of backward are sgemms over the whole T x T square with the
// head's strided views of qkv (leading dimension 3C), so nothing is copied; the masked half
// is computed and then zeroed, twice the causal FLOPs at BLAS speed instead of the reference's
// hs-long dot products. The pairs' products run one after another, each a threaded sgemm
// (the pthread OpenBLAS must not be called from an OpenMP region; see experts_fast.cpp),
// and the row-wise softmax and its backward run for all pairs in one OpenMP region between
// them. Every element is computed by one thread in a fixed order: results do not depend on
// the thread count.
#include <cblas.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "moebench/check.hpp"
#include "moebench/fast_exp.hpp"
#include "moebench/layers.hpp"

namespace moebench {
namespace {

constexpr int64_t kParallelThreshold = 16384;  // row elements of softmax work

void check_shape(int C, int NH) {
  MOEBENCH_CHECK(NH > 0 && C % NH == 0, "attention: channels " + std::to_string(C) +
                                            " are not divisible by heads " + std::to_string(NH));
}

}  // namespace

int64_t attention_backward_scratch_floats(int B, int T, int NH) {
  return int64_t{B} * NH * T * T;
}

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  check_shape(C, NH);
  const int hs = C / NH, C3 = 3 * C;
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hs)));
  const int64_t square = int64_t{T} * T;
  // S = scale Q K^T for every pair.
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* q = qkv + int64_t{b} * T * C3 + int64_t{h} * hs;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, q + C, C3,
                  0.0f, att + (int64_t{b} * NH + h) * square, T);
    }
  }
  // Causal softmax of every row in place; the future positions become 0.
  const int64_t rows = int64_t{B} * NH * T;
#pragma omp parallel for schedule(static) if (rows * T >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = att + r * T;
    const int t = static_cast<int>(r % T);
    const float row_maximum = row_max(row, t + 1);
    fast_exp_shifted(row, row, row_maximum, t + 1);
    const auto inverse_sum = static_cast<float>(1.0 / row_sum(row, t + 1));
    for (int t2 = 0; t2 <= t; ++t2) row[t2] *= inverse_sum;
    for (int t2 = t + 1; t2 < T; ++t2) row[t2] = 0.0f;
  }
  // out[b, :, head h] = P V.
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* v = qkv + int64_t{b} * T * C3 + 2 * C + int64_t{h} * hs;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f,
                  att + (int64_t{b} * NH + h) * square, T, v, C3, 0.0f,
                  out + int64_t{b} * T * C + int64_t{h} * hs, C);
    }
  }
}

// With P = att and dP = dout V^T: dS = P (dP - rowsum(P dP)) scale (softmax backward, scale
// of the scores folded in), dQ += dS K, dK += dS^T Q, dV += P^T dout.
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH) {
  check_shape(C, NH);
  const int hs = C / NH, C3 = 3 * C;
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hs)));
  const int64_t square = int64_t{T} * T;
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* v = qkv + int64_t{b} * T * C3 + 2 * C + int64_t{h} * hs;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f,
                  dout + int64_t{b} * T * C + int64_t{h} * hs, C, v, C3, 0.0f,
                  scratch + (int64_t{b} * NH + h) * square, T);
    }
  }
  const int64_t rows = int64_t{B} * NH * T;
#pragma omp parallel for schedule(static) if (rows * T >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = att + r * T;
    float* d = scratch + r * T;  // dP in, dS out
    const int t = static_cast<int>(r % T);
    float weighted = 0.0f;
#pragma omp simd reduction(+ : weighted)
    for (int t2 = 0; t2 <= t; ++t2) weighted += p[t2] * d[t2];
#pragma omp simd
    for (int t2 = 0; t2 <= t; ++t2) d[t2] = p[t2] * (d[t2] - weighted) * scale;
    for (int t2 = t + 1; t2 < T; ++t2) d[t2] = 0.0f;
  }
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const int64_t pair = (int64_t{b} * NH + h) * square;
      const int64_t offset = int64_t{b} * T * C3 + int64_t{h} * hs;
      const float *q = qkv + offset, *k = q + C, *dy = dout + int64_t{b} * T * C + int64_t{h} * hs;
      float *dq = dqkv + offset, *dk = dq + C, *dv = dq + 2 * C;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, scratch + pair, T, k,
                  C3, 1.0f, dq, C3);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, scratch + pair, T, q,
                  C3, 1.0f, dk, C3);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, att + pair, T, dy, C,
                  1.0f, dv, C3);
    }
  }
}

}  // namespace moebench
