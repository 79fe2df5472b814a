// LayerNorm over the last axis (forward and backward). See layers.hpp.
//
// Row statistics are accumulated in double (C terms), so mean and rstd carry one float
// rounding whatever C is. The backward pass runs in one parallel region with two loops:
// rows for dinp (each row independent), then column blocks for dweight and dbias (one thread
// per block sums its columns in row order: no races, no atomics, thread-count independent).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "moebench/layers.hpp"

namespace moebench {
namespace {

constexpr double kEps = 1e-5;
constexpr int64_t kParallelThreshold = 32768;  // floats of work
// Columns per dweight/dbias work item: small enough that C = 128 gives two threads work (one
// 256-column block left one thread summing all rows while the other waited).
constexpr int64_t kColumnBlock = 64;

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int B, int T, int C) {
  const int64_t rows = static_cast<int64_t>(B) * T;
#pragma omp parallel for schedule(static) if (rows * C >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = inp + r * C;  // [C]
    float* y = out + r * C;        // [C]
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += x[c];
    const double m = sum / C;
    double sum_sq = 0.0;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t c = 0; c < C; ++c) {
      const double centred = x[c] - m;
      sum_sq += centred * centred;
    }
    const double s = 1.0 / std::sqrt(sum_sq / C + kEps);
    const auto m_f = static_cast<float>(m);
    const auto s_f = static_cast<float>(s);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - m_f) * s_f * weight[c] + bias[c];
    mean[r] = m_f;
    rstd[r] = s_f;
  }
}

// With norm = (x - mean) rstd and dnorm = weight * dout (per row):
//   dinp    += rstd (dnorm - mean_c(dnorm) - norm * mean_c(dnorm * norm))
//   dweight += sum_rows dout * norm;   dbias += sum_rows dout
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int B, int T, int C) {
  const int64_t rows = static_cast<int64_t>(B) * T;
  const int64_t blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel if (rows * C >= kParallelThreshold)
  {
#pragma omp for schedule(static) nowait
    for (int64_t r = 0; r < rows; ++r) {
      const float* x = inp + r * C;    // [C]
      const float* dy = dout + r * C;  // [C]
      float* dx = dinp + r * C;        // [C]
      const float m = mean[r];
      const float s = rstd[r];
      double dnorm_sum = 0.0;
      double dnorm_norm_sum = 0.0;
#pragma omp simd reduction(+ : dnorm_sum, dnorm_norm_sum)
      for (int64_t c = 0; c < C; ++c) {
        const float norm = (x[c] - m) * s;
        const float dnorm = weight[c] * dy[c];
        dnorm_sum += dnorm;
        dnorm_norm_sum += dnorm * norm;
      }
      const auto dnorm_mean = static_cast<float>(dnorm_sum / C);
      const auto dnorm_norm_mean = static_cast<float>(dnorm_norm_sum / C);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float norm = (x[c] - m) * s;
        const float dnorm = weight[c] * dy[c];
        dx[c] += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
      }
    }
#pragma omp for schedule(static)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t first = block * kColumnBlock;
      const int64_t width = std::min(kColumnBlock, C - first);
      float weight_sum[kColumnBlock] = {};
      float bias_sum[kColumnBlock] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const float* x = inp + r * C + first;    // [width]
        const float* dy = dout + r * C + first;  // [width]
        const float m = mean[r];
        const float s = rstd[r];
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) {
          weight_sum[c] += dy[c] * ((x[c] - m) * s);
          bias_sum[c] += dy[c];
        }
      }
      for (int64_t c = 0; c < width; ++c) {
        dweight[first + c] += weight_sum[c];
        dbias[first + c] += bias_sum[c];
      }
    }
  }
}

}  // namespace moebench
