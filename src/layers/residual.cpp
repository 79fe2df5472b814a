// Residual connection (forward and backward). See layers.hpp.
#include <cstdint>

#include "moebench/layers.hpp"

namespace moebench {
namespace {
constexpr int64_t kParallelThreshold = 65536;  // floats; below this one thread is faster
}  // namespace

void residual_forward(float* out, const float* inp1, const float* inp2, int64_t N) {
#pragma omp parallel for simd schedule(static) if (N >= kParallelThreshold)
  for (int64_t i = 0; i < N; ++i) out[i] = inp1[i] + inp2[i];
}

void residual_backward(float* dinp1, float* dinp2, const float* dout, int64_t N) {
#pragma omp parallel for simd schedule(static) if (N >= kParallelThreshold)
  for (int64_t i = 0; i < N; ++i) {
    dinp1[i] += dout[i];
    dinp2[i] += dout[i];
  }
}

}  // namespace moebench
