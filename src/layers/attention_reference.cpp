// Reference causal multi-head self-attention (forward and backward): plain loops over the
// causal pairs only, parallelised with OpenMP over (batch, head) pairs: every pair owns its
// rows of att, its head's columns of out and of dqkv, and its scratch row, so threads never
// share an output element and every sum runs in a fixed order. See layers.hpp. The fast path
// (attention.cpp, BLAS) is tested against it.
#include <cmath>
#include <cstdint>
#include <string>

#include "moebench/check.hpp"
#include "moebench/fast_exp.hpp"
#include "moebench/layers.hpp"

namespace moebench {
namespace {

constexpr int64_t kParallelThreshold = 32768;  // multiply-adds of work

void check_shape(int C, int NH) {
  MOEBENCH_CHECK(NH > 0 && C % NH == 0, "attention: channels " + std::to_string(C) +
                                            " are not divisible by heads " + std::to_string(NH));
}

inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y [n] += alpha x [n]
inline void axpy(float* y, float alpha, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace

void attention_forward_reference(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  check_shape(C, NH);
  const int64_t hs = C / NH;
  const int64_t C3 = 3 * int64_t{C};
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hs)));
  const int64_t work = int64_t{B} * NH * T * T * hs;
#pragma omp parallel for collapse(2) schedule(static) if (work >= kParallelThreshold)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* head = qkv + int64_t{b} * T * C3 + h * hs;  // row t: head + t * C3
      for (int t = 0; t < T; ++t) {
        const float* q = head + t * C3;                          // [hs]
        float* row = att + ((int64_t{b} * NH + h) * T + t) * T;  // [T]
        for (int t2 = 0; t2 <= t; ++t2) row[t2] = dot(q, head + t2 * C3 + C, hs) * scale;
        const float row_maximum = row_max(row, t + 1);
        fast_exp_shifted(row, row, row_maximum, t + 1);
        const auto inverse_sum = static_cast<float>(1.0 / row_sum(row, t + 1));
        for (int t2 = 0; t2 <= t; ++t2) row[t2] *= inverse_sum;
        for (int t2 = t + 1; t2 < T; ++t2) row[t2] = 0.0f;  // masked (future) positions

        float* o = out + (int64_t{b} * T + t) * C + h * hs;  // [hs]
        for (int64_t i = 0; i < hs; ++i) o[i] = 0.0f;
        for (int t2 = 0; t2 <= t; ++t2) axpy(o, row[t2], head + t2 * C3 + 2 * C, hs);
      }
    }
  }
}

// Per query t of head h, with a = att[b, h, t, :] and s = q_t . k_t2 * scale:
//   datt[t2] = dout_t . v_t2                 dv_t2 += a[t2] dout_t
//   ds[t2]   = a[t2] (datt[t2] - sum_j a[j] datt[j])      (softmax backward)
//   dq_t += scale ds[t2] k_t2                dk_t2 += scale ds[t2] q_t
void attention_backward_reference(float* dqkv, float* scratch, const float* dout, const float* qkv,
                                  const float* att, int B, int T, int C, int NH) {
  check_shape(C, NH);
  const int64_t hs = C / NH;
  const int64_t C3 = 3 * int64_t{C};
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hs)));
  const int64_t work = int64_t{B} * NH * T * T * hs;
#pragma omp parallel for collapse(2) schedule(static) if (work >= kParallelThreshold)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const int64_t offset = int64_t{b} * T * C3 + h * hs;
      const float* head = qkv + offset;  // q of row t at head + t * C3, k at + C, v at + 2C
      float* dhead = dqkv + offset;
      float* datt = scratch + (int64_t{b} * NH + h) * T;  // [T]
      for (int t = 0; t < T; ++t) {
        const float* row = att + ((int64_t{b} * NH + h) * T + t) * T;  // [T]
        const float* dy = dout + (int64_t{b} * T + t) * C + h * hs;    // [hs]
        double weighted = 0.0;                                         // sum_j a[j] datt[j]
        for (int t2 = 0; t2 <= t; ++t2) {
          datt[t2] = dot(dy, head + t2 * C3 + 2 * C, hs);
          axpy(dhead + t2 * C3 + 2 * C, row[t2], dy, hs);
          weighted += double{row[t2]} * double{datt[t2]};
        }
        const auto weighted_f = static_cast<float>(weighted);
        const float* q = head + t * C3;
        float* dq = dhead + t * C3;
        for (int t2 = 0; t2 <= t; ++t2) {
          const float dscore = row[t2] * (datt[t2] - weighted_f) * scale;
          axpy(dq, dscore, head + t2 * C3 + C, hs);
          axpy(dhead + t2 * C3 + C, dscore, q, hs);
        }
      }
    }
  }
}

}  // namespace moebench
