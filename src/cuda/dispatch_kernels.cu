// Permute / unpermute / combine kernels. See dispatch_cuda.hpp; the CPU original:
// src/dispatch/dispatcher.cpp.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cuda_check.hpp"
#include "dispatch_cuda.hpp"
#include "warp_reduce.cuh"

namespace moebench {
namespace {

using cuda_detail::kFullMask;
using cuda_detail::kWarpSize;

constexpr int kBlock = 256;
constexpr int kWarpsPerBlock = kBlock / kWarpSize;

int blocks_for(int64_t items, int per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  MOEBENCH_CHECK(blocks <= INT_MAX, "grid too large");
  return static_cast<int>(blocks);
}

// Rows move as float4 when every row starts 16-byte aligned (d % 4 == 0, aligned bases).
bool vector_rows(int d_model, const void* a, const void* b) {
  const auto misaligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) % 16) != 0; };
  return d_model % 4 == 0 && !misaligned(a) && !misaligned(b);
}

// One warp copies one row of d floats.
__device__ __forceinline__ void warp_copy_row(float* dst, const float* src, int d, bool vec4,
                                              int lane) {
  if (vec4) {
    float4* dst4 = reinterpret_cast<float4*>(dst);
    const float4* src4 = reinterpret_cast<const float4*>(src);
    for (int c = lane; c < d / 4; c += kWarpSize) dst4[c] = src4[c];
  } else {
    for (int c = lane; c < d; c += kWarpSize) dst[c] = src[c];
  }
}

// One warp: send_offsets [E + 1] = exclusive prefix sums of load (ragged) or e C (padded).
__global__ void send_offsets_kernel(int64_t* send_offsets, const int32_t* load, int num_experts,
                                    int capacity, int padded) {
  const int lane = threadIdx.x;
  int64_t carry = 0;
  for (int base = 0; base < num_experts; base += kWarpSize) {
    const int e = base + lane;
    const int64_t value = e < num_experts ? (padded ? capacity : load[e]) : 0;
    int64_t inclusive = value;
#pragma unroll
    for (int offset = 1; offset < kWarpSize; offset <<= 1) {
      const int64_t up = __shfl_up_sync(kFullMask, inclusive, offset);
      if (lane >= offset) inclusive += up;
    }
    if (e < num_experts) send_offsets[e] = carry + inclusive - value;
    carry += __shfl_sync(kFullMask, inclusive, kWarpSize - 1);
  }
  if (lane == 0) send_offsets[num_experts] = carry;
}

// One warp per plan entry.
__global__ void permute_kernel(float* send, const float* x, const int32_t* expert,
                               const uint8_t* kept, const int32_t* position,
                               const int64_t* send_offsets, int64_t entries, int slots, int d,
                               int vec4) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t entry = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (entry >= entries || !kept[entry]) return;
  const int64_t t = entry / slots;
  const int64_t row = send_offsets[expert[entry]] + position[entry];
  warp_copy_row(send + row * d, x + t * d, d, vec4 != 0, lane);
}

// One warp per row of the padded layout [E, C].
__global__ void zero_padding_kernel(float* send, const int64_t* send_offsets, const int32_t* load,
                                    int num_experts, int capacity, int d) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t slot = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (slot >= static_cast<int64_t>(num_experts) * capacity) return;
  const int e = static_cast<int>(slot / capacity);
  const int within = static_cast<int>(slot % capacity);
  if (within < load[e]) return;
  float* row = send + (send_offsets[e] + within) * d;
  for (int c = lane; c < d; c += kWarpSize) row[c] = 0.0f;
}

// One warp per token; lanes own columns. Same order of additions as the CPU loop.
__global__ void gather_kernel(float* out, const float* rows, const int32_t* expert,
                              const uint8_t* kept, const int32_t* position, const float* gate,
                              const int64_t* send_offsets, int num_tokens, int slots, int d,
                              int use_gates, int accumulate) {
  const int lane = threadIdx.x % kWarpSize;
  const int t = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (t >= num_tokens) return;
  const int64_t base = static_cast<int64_t>(t) * slots;
  float* token = out + static_cast<int64_t>(t) * d;
  for (int c = lane; c < d; c += kWarpSize) {
    float sum = accumulate ? token[c] : 0.0f;
    for (int s = 0; s < slots; ++s) {
      if (!kept[base + s]) continue;
      const float weight = use_gates ? gate[base + s] : 1.0f;
      const int64_t row = send_offsets[expert[base + s]] + position[base + s];
      sum += weight * rows[row * d + c];
    }
    token[c] = sum;
  }
}

// One warp per plan entry.
__global__ void combine_backward_kernel(float* send_grad, float* d_gate, const float* dy,
                                        const float* returned_rows, const int32_t* expert,
                                        const uint8_t* kept, const int32_t* position,
                                        const float* gate, const int64_t* send_offsets,
                                        int64_t entries, int slots, int d) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t entry = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (entry >= entries) return;
  if (!kept[entry]) {
    if (lane == 0) d_gate[entry] = 0.0f;
    return;
  }
  const int64_t t = entry / slots;
  const int64_t row = send_offsets[expert[entry]] + position[entry];
  const float* grad = dy + t * d;
  const float* returned = returned_rows + row * d;
  float* send = send_grad + row * d;
  const float g = gate[entry];
  float dot = 0.0f;
  for (int c = lane; c < d; c += kWarpSize) {
    dot += grad[c] * returned[c];
    send[c] = g * grad[c];
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    dot += __shfl_xor_sync(kFullMask, dot, offset);
  }
  if (lane == 0) d_gate[entry] = dot;
}

// Grid (blocks, y): CUDA block (b, y) copies a strided share of block b's rows * d floats.
__global__ void copy_blocks_kernel(float* dst, const float* src, const int64_t* dst_row,
                                   const int64_t* src_row, const int32_t* rows, int d) {
  const int b = blockIdx.x;
  const int64_t count = static_cast<int64_t>(rows[b]) * d;
  float* to = dst + dst_row[b] * d;
  const float* from = src + src_row[b] * d;
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    to[i] = from[i];
  }
}

}  // namespace

void cuda_send_offsets(int64_t* send_offsets, const DeviceRoutingPlan& plan, bool padded,
                       CUstream_st* stream) {
  send_offsets_kernel<<<1, kWarpSize, 0, stream>>>(send_offsets, plan.load.data(),
                                                   plan.num_experts, plan.capacity, padded ? 1 : 0);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void cuda_permute(float* send, const float* x, const DeviceRoutingPlan& plan,
                  const int64_t* send_offsets, int d_model, CUstream_st* stream) {
  const int64_t entries = static_cast<int64_t>(plan.num_tokens) * plan.slots;
  if (entries == 0) return;
  permute_kernel<<<blocks_for(entries, kWarpsPerBlock), kBlock, 0, stream>>>(
      send, x, plan.expert.data(), plan.kept.data(), plan.position.data(), send_offsets, entries,
      plan.slots, d_model, vector_rows(d_model, send, x) ? 1 : 0);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void cuda_zero_padding_rows(float* send, const DeviceRoutingPlan& plan,
                            const int64_t* send_offsets, int d_model, CUstream_st* stream) {
  const int64_t rows = static_cast<int64_t>(plan.num_experts) * plan.capacity;
  if (rows == 0) return;
  zero_padding_kernel<<<blocks_for(rows, kWarpsPerBlock), kBlock, 0, stream>>>(
      send, send_offsets, plan.load.data(), plan.num_experts, plan.capacity, d_model);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void cuda_gather_to_tokens(float* out, const float* rows, const DeviceRoutingPlan& plan,
                           const int64_t* send_offsets, int d_model, bool use_gates,
                           bool accumulate, CUstream_st* stream) {
  if (plan.num_tokens == 0) return;
  gather_kernel<<<blocks_for(plan.num_tokens, kWarpsPerBlock), kBlock, 0, stream>>>(
      out, rows, plan.expert.data(), plan.kept.data(), plan.position.data(), plan.gate.data(),
      send_offsets, plan.num_tokens, plan.slots, d_model, use_gates ? 1 : 0, accumulate ? 1 : 0);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void cuda_combine_backward(float* send_grad, float* d_gate, const float* dy,
                           const float* returned_rows, const DeviceRoutingPlan& plan,
                           const int64_t* send_offsets, int d_model, CUstream_st* stream) {
  const int64_t entries = static_cast<int64_t>(plan.num_tokens) * plan.slots;
  if (entries == 0) return;
  combine_backward_kernel<<<blocks_for(entries, kWarpsPerBlock), kBlock, 0, stream>>>(
      send_grad, d_gate, dy, returned_rows, plan.expert.data(), plan.kept.data(),
      plan.position.data(), plan.gate.data(), send_offsets, entries, plan.slots, d_model);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void cuda_copy_blocks(float* dst, const float* src, const int64_t* dst_row,
                      const int64_t* src_row, const int32_t* rows, int blocks, int d_model,
                      CUstream_st* stream) {
  if (blocks == 0) return;
  constexpr int kSharesPerBlock = 16;  // CUDA blocks per copied block
  copy_blocks_kernel<<<dim3(static_cast<unsigned>(blocks), kSharesPerBlock), kBlock, 0, stream>>>(
      dst, src, dst_row, src_row, rows, d_model);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

}  // namespace moebench
