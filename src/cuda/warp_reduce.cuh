// Warp- and block-level building blocks shared by the kernels: the warp size and full mask,
// butterfly reductions (every lane ends with the same value, combined in a fixed order, so the
// result does not depend on scheduling) and a block reduction built on them.
#pragma once

#include <cuda_runtime.h>

namespace moebench::cuda_detail {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;

struct Sum {
  template <typename Real>
  __device__ __forceinline__ Real operator()(Real a, Real b) const { return a + b; }
};
struct Max {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Butterfly over the warp: combine(value, the partner lane's value) at strides 16, 8, ..., 1.
template <typename Real, typename Combine>
__device__ __forceinline__ Real warp_reduce(Real value, Combine combine) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    value = combine(value, __shfl_xor_sync(kFullMask, value, offset));
  }
  return value;
}

__device__ __forceinline__ float warp_max(float value) { return warp_reduce(value, Max{}); }

// float or double.
template <typename Real>
__device__ __forceinline__ Real warp_sum(Real value) {
  return warp_reduce(value, Sum{});
}

// Over a block of kWarps full warps (every thread calls): each warp reduces its lanes, then
// every warp reduces the kWarps warp results in the same tree, so all threads return the same
// value. shared [kWarps]; free again when this returns. identity: the value that changes
// nothing (0 for sums, -inf for maxima).
template <int kWarps, typename Real, typename Combine>
__device__ __forceinline__ Real block_reduce(Real value, Real* shared, Real identity,
                                             Combine combine) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  value = warp_reduce(value, combine);
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  value = lane < kWarps ? shared[lane] : identity;
  value = warp_reduce(value, combine);
  __syncthreads();
  return value;
}

}  // namespace moebench::cuda_detail
