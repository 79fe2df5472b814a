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

// The mask test is a template argument: a load of decay_mask[i] under a run-time
// `decay_mask != nullptr` inside the loop is a conditional access, and GCC then keeps the
// whole loop scalar (vsqrtss/vdivss in perf; 4.2 against 1.4 ms for the quickstart experts'
// 2.1 M parameters on 2 threads, bench/bench_layers). Both versions run the same arithmetic
// per element, so a masked element gets the same bits either way. The settings come by value:
// a local copy cannot alias the float arrays, so the compiler keeps them in registers.
template <bool kMasked>
void adamw_loop(float* params, float* m, float* v, const float* grads, const uint8_t* decay_mask,
                int64_t n, const AdamWSettings s, float m_correction, float v_correction) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i] * s.grad_scale;
    const float m_new = s.beta1 * m[i] + (1.0f - s.beta1) * g;
    const float v_new = s.beta2 * v[i] + (1.0f - s.beta2) * g * g;
    m[i] = m_new;
    v[i] = v_new;
    const float m_hat = m_new * m_correction;
    const float v_hat = v_new * v_correction;
    float wd = s.weight_decay;
    if constexpr (kMasked) wd = decay_mask[i] != 0 ? s.weight_decay : 0.0f;
    params[i] -= s.learning_rate * (m_hat / (std::sqrt(v_hat) + s.eps) + wd * params[i]);
  }
}
}  // namespace

void adamw_update(float* params, float* m, float* v, const float* grads, const uint8_t* decay_mask,
                  int64_t n, const AdamWSettings& settings, int step) {
  MOEBENCH_CHECK(step >= 1,
                 "adamw_update: step must count from 1 (got " + std::to_string(step) + ")");
  // Bias corrections in double: 1 - beta2^step is ~1e-3 at step 1 and cancels badly in float.
  const auto m_correction =
      static_cast<float>(1.0 / (1.0 - std::pow(double{settings.beta1}, step)));
  const auto v_correction =
      static_cast<float>(1.0 / (1.0 - std::pow(double{settings.beta2}, step)));
  if (decay_mask == nullptr) {
    adamw_loop<false>(params, m, v, grads, nullptr, n, settings, m_correction, v_correction);
  } else {
    adamw_loop<true>(params, m, v, grads, decay_mask, n, settings, m_correction, v_correction);
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
