// AdamW update with bias correction and masked decoupled weight decay, and the gradient's sum
// of squares for global-norm clipping. See layers.hpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "moebench/check.hpp"
#include "moebench/layers.hpp"

namespace moebench {
namespace {
constexpr int64_t kParallelThreshold = 65536;  // parameters
}  // namespace

void adamw_update(float* params, float* m, float* v, const float* grads, const uint8_t* decay_mask,
                  int64_t n, const AdamWSettings& settings, int step) {
  MOEBENCH_CHECK(step >= 1,
                 "adamw_update: step must count from 1 (got " + std::to_string(step) + ")");
  const float beta1 = settings.beta1;
  const float beta2 = settings.beta2;
  const float lr = settings.learning_rate;
  const float eps = settings.eps;
  const float decay = settings.weight_decay;
  const float grad_scale = settings.grad_scale;
  // Bias corrections in double: 1 - beta2^step is ~1e-3 at step 1 and cancels badly in float.
  const auto m_correction = static_cast<float>(1.0 / (1.0 - std::pow(double{beta1}, step)));
  const auto v_correction = static_cast<float>(1.0 / (1.0 - std::pow(double{beta2}, step)));
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i] * grad_scale;
    const float m_new = beta1 * m[i] + (1.0f - beta1) * g;
    const float v_new = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = m_new;
    v[i] = v_new;
    const float m_hat = m_new * m_correction;
    const float v_hat = v_new * v_correction;
    const float wd = decay_mask == nullptr || decay_mask[i] != 0 ? decay : 0.0f;
    params[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + wd * params[i]);
  }
}

double sum_of_squares(const float* values, int64_t n) {
  const int64_t blocks = (n + kSquaresBlock - 1) / kSquaresBlock;
  double total = 0.0;
  // ordered: block sums are added in block order whatever thread computed them.
#pragma omp parallel for ordered schedule(static, 1) if (n >= kParallelThreshold)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t first = block * kSquaresBlock;
    const int64_t last = std::min(n, first + kSquaresBlock);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = first; i < last; ++i) sum += static_cast<double>(values[i]) * values[i];
#pragma omp ordered
    total += sum;
  }
  return total;
}

}  // namespace moebench
