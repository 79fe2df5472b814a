// GELU (tanh form) on the device, as the CPU fast path (include/moebench/experts.hpp, gelu and
// gelu_derivative; src/experts/experts_fast.cpp): 0.5 (1 + tanh z) = 1 / (1 + exp(-2 z)) with
// z = sqrt(2/pi) (u + 0.044715 u^3) and the exponent clamped to [-80, 80], so that every
// quotient below stays finite. Shared by the expert FFN and the router networks.
#pragma once

#include <cuda_runtime.h>

namespace moebench::cuda_detail {

constexpr float kGeluSqrt2OverPi = 0.797884560802865f;
constexpr float kGeluCubic = 0.044715f;

// exp(-2 z(u)), clamped.
__device__ __forceinline__ float gelu_exp(float u) {
  const float z = kGeluSqrt2OverPi * (u + kGeluCubic * u * u * u);
  return expf(fminf(fmaxf(-2.0f * z, -80.0f), 80.0f));
}

// GELU(u) = u sigmoid(2 z) = u / (1 + exp(-2 z)).
__device__ __forceinline__ float gelu_device(float u) { return u / (1.0f + gelu_exp(u)); }

// GELU'(u) = s + 2 u s (e s) z' with s = sigmoid(2 z), e = exp(-2 z).
__device__ __forceinline__ float gelu_derivative_device(float u) {
  const float e = gelu_exp(u);
  const float s = 1.0f / (1.0f + e);
  const float dz = kGeluSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * u * u);
  return s + 2.0f * u * s * (e * s) * dz;
}

}  // namespace moebench::cuda_detail
