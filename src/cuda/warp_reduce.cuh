// Warp-level building blocks shared by the kernels: the warp size and full mask, and butterfly
// reductions (every lane ends with the same value, combined in a fixed order, so the result
// does not depend on scheduling).
#pragma once

#include <cuda_runtime.h>

namespace moebench::cuda_detail {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;

__device__ __forceinline__ float warp_max(float value) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    value = fmaxf(value, __shfl_xor_sync(kFullMask, value, offset));
  }
  return value;
}

// float or double.
template <typename Real>
__device__ __forceinline__ Real warp_sum(Real value) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    value += __shfl_xor_sync(kFullMask, value, offset);
  }
  return value;
}

}  // namespace moebench::cuda_detail
