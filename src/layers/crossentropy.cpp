// Softmax + cross-entropy (forward) and their fused backward. See layers.hpp.
#include <cmath>
#include <cstdint>
#include <string>

#include "moebench/check.hpp"
#include "moebench/fast_exp.hpp"
#include "moebench/layers.hpp"

namespace moebench {
namespace {

constexpr int64_t kParallelThreshold = 32768;  // floats of work

void check_targets(const int32_t* targets, int N, int V) {
  for (int n = 0; n < N; ++n) {
    MOEBENCH_CHECK(targets[n] >= 0 && targets[n] < V,
                   "cross-entropy target " + std::to_string(targets[n]) + " at row " +
                       std::to_string(n) + " is outside the vocabulary [0, " + std::to_string(V) +
                       ")");
  }
}

}  // namespace

void crossentropy_softmax_forward(float* losses, float* probs, const float* logits,
                                  const int32_t* targets, int N, int V) {
  check_targets(targets, N, V);
#pragma omp parallel for schedule(static) if (int64_t{N} * V >= kParallelThreshold)
  for (int n = 0; n < N; ++n) {
    const float* z = logits + int64_t{n} * V;  // [V]
    float* p = probs + int64_t{n} * V;         // [V]
    const float maximum = row_max(z, V);
    fast_exp_shifted(p, z, maximum, V);
    const double sum = row_sum(p, V);
    const auto inverse_sum = static_cast<float>(1.0 / sum);
#pragma omp simd
    for (int v = 0; v < V; ++v) p[v] *= inverse_sum;
    // -log softmax(z)[target] = log sum_j exp(z_j - max) - (z_target - max)
    losses[n] = static_cast<float>(std::log(sum) - (double{z[targets[n]]} - double{maximum}));
  }
}

void crossentropy_softmax_backward(float* dlogits, const float* probs, const int32_t* targets,
                                   float dloss, int N, int V) {
  check_targets(targets, N, V);
  const float scale = dloss / static_cast<float>(N);
#pragma omp parallel for schedule(static) if (int64_t{N} * V >= kParallelThreshold)
  for (int n = 0; n < N; ++n) {
    const float* p = probs + int64_t{n} * V;  // [V]
    float* g = dlogits + int64_t{n} * V;      // [V] (may be p)
#pragma omp simd
    for (int v = 0; v < V; ++v) g[v] = p[v] * scale;
    g[targets[n]] -= scale;
  }
}

}  // namespace moebench
