// Expert parameters (count, views, deterministic initialisation), the exact GELU used by the
// reference path and the dense model, and argument checks shared by both expert paths.
#include "moebench/experts.hpp"

#include <algorithm>

#include <cmath>
#include <string>

#include "experts_internal.hpp"
#include "moebench/check.hpp"
#include "moebench/random.hpp"

namespace moebench {

int64_t expert_param_count(const ExpertShape& shape) {
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  return static_cast<int64_t>(shape.num_experts) * (d * h + h + h * d + d);
}

ExpertParams expert_params_view(float* storage, const ExpertShape& shape) {
  const int64_t experts = shape.num_experts;
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  ExpertParams params;
  params.w1 = storage;                        // [E_local, d, h]
  params.b1 = params.w1 + experts * d * h;    // [E_local, h]
  params.w2 = params.b1 + experts * h;        // [E_local, h, d]
  params.b2 = params.w2 + experts * h * d;    // [E_local, d]
  return params;
}

const char* to_string(GemmPrecision precision) {
  return precision == GemmPrecision::fp32 ? "fp32" : "bf16";
}

GemmPrecision parse_gemm_precision(const std::string& option, const std::string& name) {
  if (name == "fp32") return GemmPrecision::fp32;
  if (name == "bf16") return GemmPrecision::bf16;
  throw UsageError(option + ": unknown value '" + name + "' (accepted: fp32, bf16)");
}

std::vector<uint8_t> expert_decay_mask(const ExpertShape& shape) {
  const int64_t E = shape.num_experts, d = shape.d_model, h = shape.d_hidden;
  std::vector<float> probe(static_cast<size_t>(expert_param_count(shape)), 0.0f);
  const ExpertParams view = expert_params_view(probe.data(), shape);
  std::vector<uint8_t> mask(probe.size(), 0);
  const int64_t w1 = view.w1 - probe.data(), w2 = view.w2 - probe.data();
  std::fill(mask.begin() + w1, mask.begin() + w1 + E * d * h, 1);
  std::fill(mask.begin() + w2, mask.begin() + w2 + E * h * d, 1);
  return mask;
}

// Random index layout inside stream (layer_seed, global expert index g):
//   W1[g][i][j] uses index i*h + j          for i < d, j < h   (indices [0, d*h))
//   W2[g][j][k] uses index d*h + j*d + k    for j < h, k < d   (indices [d*h, 2*d*h))
// Biases are zero and draw nothing. Nothing depends on the local position of the expert, so
// expert g has bit-identical weights on every rank layout.
void expert_params_init(ExpertParams params, const ExpertShape& shape, uint64_t layer_seed,
                        int first_global_expert) {
  MOEBENCH_CHECK(shape.num_experts >= 0 && shape.d_model > 0 && shape.d_hidden > 0,
                 "expert shape must be positive");
  MOEBENCH_CHECK(first_global_expert >= 0, "first_global_expert must be non-negative");
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  const double w1_std = 1.0 / std::sqrt(static_cast<double>(d));
  const double w2_std = 1.0 / std::sqrt(static_cast<double>(h));
  for (int e = 0; e < shape.num_experts; ++e) {
    const detail::ExpertSlice slice = detail::expert_slice(params, shape, e);
    const auto stream = static_cast<uint64_t>(first_global_expert + e);
    for (int64_t i = 0; i < d * h; ++i) {
      slice.w1[i] = static_cast<float>(
          w1_std * random_normal(layer_seed, stream, static_cast<uint64_t>(i)));
    }
    for (int64_t i = 0; i < h * d; ++i) {
      slice.w2[i] = static_cast<float>(
          w2_std * random_normal(layer_seed, stream, static_cast<uint64_t>(d * h + i)));
    }
    for (int64_t j = 0; j < h; ++j) slice.b1[j] = 0.0f;
    for (int64_t k = 0; k < d; ++k) slice.b2[k] = 0.0f;
  }
}

// Evaluated in double and rounded once, so these are the correctly rounded values of the
// formula for (almost) every float input.
namespace {
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluCubic = 0.044715;
}  // namespace

float gelu(float u) {
  const double x = u;
  const double t = std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
  return static_cast<float>(0.5 * x * (1.0 + t));
}

// d/du 0.5 u (1 + tanh z(u)) = 0.5 (1 + tanh z) + 0.5 u (1 - tanh^2 z) z'(u),
// z'(u) = sqrt(2/pi) (1 + 3 * 0.044715 u^2).
float gelu_derivative(float u) {
  const double x = u;
  const double t = std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
  const double dz = kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * x * x);
  return static_cast<float>(0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dz);
}

namespace detail {

void check_expert_arguments(const int64_t* row_offsets, const ExpertShape& shape) {
  MOEBENCH_CHECK(shape.num_experts >= 0 && shape.d_model > 0 && shape.d_hidden > 0,
                 "expert shape must be positive (num_experts " +
                     std::to_string(shape.num_experts) + ", d_model " +
                     std::to_string(shape.d_model) + ", d_hidden " +
                     std::to_string(shape.d_hidden) + ")");
  MOEBENCH_CHECK(row_offsets != nullptr, "row_offsets is null");
  MOEBENCH_CHECK(row_offsets[0] >= 0, "row_offsets[0] is negative");
  for (int e = 0; e < shape.num_experts; ++e) {
    MOEBENCH_CHECK(row_offsets[e + 1] >= row_offsets[e],
                   "row_offsets must be non-decreasing (expert " + std::to_string(e) + ")");
  }
}

}  // namespace detail
}  // namespace moebench
