// Kernels of the dense layers on the GPU (dense_cuda.hpp): bias add, bias gradient, the head
// split / merge of attention and its causal softmax forward and backward. The products are
// cuBLAS calls in dense_cuda.cpp. Element-wise kernels use 1D grid-stride loops over int64
// indices and row kernels one warp per row, also grid-stride, so no grid dimension depends on
// B NH T beyond gridDim.x (capped below).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda_check.hpp"
#include "dense_cuda.hpp"
#include "warp_reduce.cuh"

namespace moebench::dense_detail {
namespace {

using cuda_detail::kFullMask;
using cuda_detail::kWarpSize;
using cuda_detail::warp_max;
using cuda_detail::warp_sum;


constexpr int kBlock = 256;
constexpr int kWarpsPerBlock = kBlock / kWarpSize;
constexpr int64_t kMaxBlocks = 1 << 20;  // grid-stride loops cover the rest

unsigned blocks_for(int64_t items, int per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::min(blocks, kMaxBlocks));
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t total_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// out [N, OC] += bias [OC].
__global__ void add_bias_kernel(float* out, const float* bias, int64_t count, int OC) {
  for (int64_t i = global_thread(); i < count; i += total_threads()) out[i] += bias[i % OC];
}

// One block (32 x 32 threads) per 32 columns; grid-stride over column strips. Thread (x, y)
// sums column c = strip + x over rows y, y + 32, y + 64, ... in order, then the 32 partial
// sums of a column are added in a fixed tree (16 apart, 8 apart, ...). Every column's sum has
// one order, whatever the scheduling. Speed: N OC floats are read once, coalesced (32 columns
// = 128 bytes per warp load), with 32 warps per block and the loop unrolled so that several
// loads are in flight; OC / 32 blocks (24 for OC = 768) stream the matrix far faster than the
// dweight product that reads it too.
__global__ void bias_grad_kernel(float* dbias, const float* dout, int64_t N, int OC) {
  __shared__ float partial[kWarpSize][kWarpSize + 1];
  const int x = static_cast<int>(threadIdx.x), y = static_cast<int>(threadIdx.y);
  for (int64_t strip = int64_t{blockIdx.x} * kWarpSize; strip < OC;
       strip += int64_t{gridDim.x} * kWarpSize) {
    const int64_t c = strip + x;
    float sum = 0.0f;
    if (c < OC) {
#pragma unroll 8
      for (int64_t r = y; r < N; r += kWarpSize) sum += dout[r * OC + c];
    }
    partial[y][x] = sum;
    __syncthreads();
    for (int half = kWarpSize / 2; half > 0; half >>= 1) {
      if (y < half) partial[y][x] += partial[y + half][x];
      __syncthreads();
    }
    if (y == 0 && c < OC) dbias[c] += partial[0][x];
    __syncthreads();  // partial is rewritten by the next strip
  }
}

// dst [B, NH, T, hs] (index i = ((b NH + h) T + t) hs + j) from src + (b T + t) ld + h hs + j.
__global__ void split_heads_kernel(float* dst, const float* src, int64_t ld, int64_t count, int T,
                                   int NH, int hs) {
  for (int64_t i = global_thread(); i < count; i += total_threads()) {
    const int64_t j = i % hs;
    const int64_t t = (i / hs) % T;
    const int64_t h = (i / (int64_t{hs} * T)) % NH;
    const int64_t b = i / (int64_t{hs} * T * NH);
    dst[i] = src[(b * T + t) * ld + h * hs + j];
  }
}

// The inverse of split_heads: dst + (b T + t) ld + h hs + j  (=, or +=) src[i].
__global__ void merge_heads_kernel(float* dst, int64_t ld, const float* src, int64_t count, int T,
                                   int NH, int hs, int accumulate) {
  for (int64_t i = global_thread(); i < count; i += total_threads()) {
    const int64_t j = i % hs;
    const int64_t t = (i / hs) % T;
    const int64_t h = (i / (int64_t{hs} * T)) % NH;
    const int64_t b = i / (int64_t{hs} * T * NH);
    float* at = dst + (b * T + t) * ld + h * hs + j;
    *at = accumulate ? *at + src[i] : src[i];
  }
}

// One warp per row r of att [rows, T] (query t = r mod T). The scores of t2 <= t are scaled
// (score = s * scale rounded to fp32 as the CPU's float product; __fmul_rn keeps nvcc from
// fusing it into the subtraction, so the exponents are <= 0 exactly), shifted by their
// maximum, exponentiated with expf and normalised by the reciprocal of their fp32 sum;
// t2 > t is set to +0. Each lane keeps its own elements (t2 = lane, lane + 32, ...): it reads
// back only what it wrote.
__global__ void causal_softmax_kernel(float* att, int64_t rows, int T, float scale) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t first = global_thread() / kWarpSize;
  const int64_t warps = total_threads() / kWarpSize;
  for (int64_t r = first; r < rows; r += warps) {  // warp-uniform: all lanes shuffle together
    float* row = att + r * T;
    const int t = static_cast<int>(r % T);
    float maximum = -INFINITY;
    for (int t2 = lane; t2 <= t; t2 += kWarpSize) {
      maximum = fmaxf(maximum, __fmul_rn(row[t2], scale));
    }
    maximum = warp_max(maximum);
    float sum = 0.0f;
    for (int t2 = lane; t2 <= t; t2 += kWarpSize) {
      const float e = expf(__fmul_rn(row[t2], scale) - maximum);  // <= 0: e <= 1
      row[t2] = e;
      sum += e;
    }
    const float inverse = 1.0f / warp_sum(sum);  // >= 1 term equal to 1: sum >= 1
    for (int t2 = lane; t2 < T; t2 += kWarpSize) row[t2] = t2 <= t ? row[t2] * inverse : 0.0f;
  }
}

// One warp per row: d[t2] = att[t2] (d[t2] - sum_{j <= t} att[j] d[j]) scale for t2 <= t, and
// 0 for t2 > t (dS feeds two full-square products).
__global__ void causal_softmax_backward_kernel(float* d, const float* att, int64_t rows, int T,
                                               float scale) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t first = global_thread() / kWarpSize;
  const int64_t warps = total_threads() / kWarpSize;
  for (int64_t r = first; r < rows; r += warps) {
    float* d_row = d + r * T;
    const float* p_row = att + r * T;
    const int t = static_cast<int>(r % T);
    float weighted = 0.0f;
    for (int t2 = lane; t2 <= t; t2 += kWarpSize) weighted += p_row[t2] * d_row[t2];
    weighted = warp_sum(weighted);
    for (int t2 = lane; t2 < T; t2 += kWarpSize) {
      d_row[t2] = t2 <= t ? p_row[t2] * (d_row[t2] - weighted) * scale : 0.0f;
    }
  }
}

}  // namespace

void launch_add_bias(float* out, const float* bias, int64_t N, int OC, CUstream_st* stream) {
  const int64_t count = N * OC;
  if (count == 0) return;
  add_bias_kernel<<<blocks_for(count, kBlock), kBlock, 0, stream>>>(out, bias, count, OC);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void launch_bias_grad(float* dbias, const float* dout, int64_t N, int OC, CUstream_st* stream) {
  if (N == 0 || OC == 0) return;
  bias_grad_kernel<<<blocks_for(OC, kWarpSize), dim3(kWarpSize, kWarpSize), 0, stream>>>(
      dbias, dout, N, OC);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void launch_split_heads(float* dst, const float* src, int64_t ld, int B, int T, int NH, int hs,
                        CUstream_st* stream) {
  const int64_t count = int64_t{B} * NH * T * hs;
  if (count == 0) return;
  split_heads_kernel<<<blocks_for(count, kBlock), kBlock, 0, stream>>>(dst, src, ld, count, T, NH,
                                                                       hs);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void launch_merge_heads(float* dst, int64_t ld, const float* src, int B, int T, int NH, int hs,
                        bool accumulate, CUstream_st* stream) {
  const int64_t count = int64_t{B} * NH * T * hs;
  if (count == 0) return;
  merge_heads_kernel<<<blocks_for(count, kBlock), kBlock, 0, stream>>>(dst, ld, src, count, T, NH,
                                                                       hs, accumulate ? 1 : 0);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void launch_causal_softmax(float* att, int64_t rows, int T, float scale, CUstream_st* stream) {
  if (rows == 0) return;
  causal_softmax_kernel<<<blocks_for(rows, kWarpsPerBlock), kBlock, 0, stream>>>(att, rows, T,
                                                                                 scale);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void launch_causal_softmax_backward(float* d, const float* att, int64_t rows, int T, float scale,
                                    CUstream_st* stream) {
  if (rows == 0) return;
  causal_softmax_backward_kernel<<<blocks_for(rows, kWarpsPerBlock), kBlock, 0, stream>>>(
      d, att, rows, T, scale);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

}  // namespace moebench::dense_detail
