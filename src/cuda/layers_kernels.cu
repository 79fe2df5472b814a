// Dense layers on the GPU: embedding, LayerNorm, residual, softmax cross-entropy, AdamW, sum
// of squares. Semantics, determinism and exactness: layers_cuda.hpp; the CPU originals:
// src/layers/encoder.cpp, layernorm.cpp, residual.cpp, crossentropy.cpp, adamw.cpp.
//
// Kernel shapes:
//  - row-wise elementwise (embedding): grid (rows, column blocks), kColumnThreads threads, each
//    thread W = 4 consecutive columns (one float4) when C % 4 == 0 and the pointers are 16-byte
//    aligned, else W = 1;
//  - LayerNorm forward and dinp: one warp per row, the row sums in double;
//  - column sums (dwte, dwpe, LayerNorm's dweight/dbias): one thread per column walks its rows
//    in order, so consecutive threads read consecutive addresses of each row;
//  - softmax cross-entropy: one block of kBlock threads per row, block reductions through a
//    fixed tree (warp butterflies, then the warps' results in warp order);
//  - flat elementwise (residual, AdamW): grid-stride loops.
// Every block reduction below assumes blockDim.x == kBlock (all their launches use it).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda_check.hpp"
#include "layers_cuda.hpp"
#include "moebench/check.hpp"
#include "warp_reduce.cuh"

namespace moebench {
namespace {

using cuda_detail::kFullMask;
using cuda_detail::kWarpSize;
using cuda_detail::warp_max;
using cuda_detail::warp_sum;

constexpr int kBlock = 256;                         // threads per block unless stated
constexpr int kWarpsPerBlock = kBlock / kWarpSize;  // rows per block in warp-per-row kernels
constexpr int kColumnThreads = 128;                 // threads per block along a row's columns
constexpr int kMaxGridStrideBlocks = 8192;          // grid-stride kernels: enough to fill a GPU
constexpr unsigned kMaxGridY = 65535;
constexpr double kLayerNormEps = 1e-5;  // as layernorm.cpp

int grid_size(int64_t items, int64_t per_block, const char* what) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  MOEBENCH_CHECK(blocks <= INT_MAX, std::string(what) + ": grid too large");
  return static_cast<int>(blocks);
}

// Blocks of kColumnThreads threads covering C columns, `width` columns per thread (gridDim.y).
unsigned column_blocks(int C, int width, const char* what) {
  const int64_t groups = (int64_t{C} + width - 1) / width;
  const int64_t blocks = (groups + kColumnThreads - 1) / kColumnThreads;
  MOEBENCH_CHECK(blocks <= kMaxGridY, std::string(what) + ": too many columns for one grid");
  return static_cast<unsigned>(blocks);
}

// Grid of a grid-stride loop over `items` work items of kBlock threads each (at least 1).
int grid_stride_blocks(int64_t items) {
  const int64_t blocks = (items + kBlock - 1) / kBlock;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, kMaxGridStrideBlocks));
}

bool aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

void check_shape(bool condition, const char* function) {
  MOEBENCH_CHECK(condition, std::string(function) + ": sizes must not be negative");
}

// ---- device helpers -------------------------------------------------------------------

// W consecutive floats at p (16-byte aligned when W == 4).
template <int W>
__device__ __forceinline__ void load(float (&values)[W], const float* p) {
  if constexpr (W == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    values[0] = q.x;
    values[1] = q.y;
    values[2] = q.z;
    values[3] = q.w;
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) values[k] = p[k];
  }
}

template <int W>
__device__ __forceinline__ void store(float* p, const float (&values)[W]) {
  if constexpr (W == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(values[0], values[1], values[2], values[3]);
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) p[k] = values[k];
  }
}

// Over the block (blockDim.x == kBlock, every thread calls): cuda_detail::block_reduce.
// shared [kWarpsPerBlock].
__device__ __forceinline__ double block_sum(double value, double* shared) {
  return cuda_detail::block_reduce<kWarpsPerBlock>(value, shared, 0.0, cuda_detail::Sum{});
}

__device__ __forceinline__ float block_max(float value, float* shared) {
  return cuda_detail::block_reduce<kWarpsPerBlock>(value, shared, -INFINITY, cuda_detail::Max{});
}

// ---- embedding -------------------------------------------------------------------------

// Grid (B T rows, column blocks): out[r, c .. c+W) = wte[token, ...] + wpe[r % T, ...];
// NaN for a token outside [0, V) (never read out of bounds).
template <int W>
__global__ void encoder_forward_kernel(float* out, const int32_t* tokens, const float* wte,
                                       const float* wpe, int T, int C, int V) {
  const int64_t r = blockIdx.x;
  const int c = static_cast<int>(blockIdx.y * blockDim.x + threadIdx.x) * W;
  if (c >= C) return;  // C % W == 0, so c < C means c + W <= C
  const int32_t token = tokens[r];
  float sum[W];
  if (token < 0 || token >= V) {
#pragma unroll
    for (int k = 0; k < W; ++k) sum[k] = NAN;
  } else {
    float position[W];
    load(sum, wte + int64_t{token} * C + c);
    load(position, wpe + (r % T) * C + c);
#pragma unroll
    for (int k = 0; k < W; ++k) sum[k] += position[k];
  }
  store(out + r * C + c, sum);
}

// Grid (D distinct tokens, column blocks): dwte[token[d], c ..] += the rows of token d, added
// one at a time in row order. index = [token D | offsets D + 1 | rows].
template <int W>
__global__ void encoder_backward_token_kernel(float* dwte, const float* dout, const int32_t* index,
                                              int distinct, int C) {
  const int d = static_cast<int>(blockIdx.x);
  const int c = static_cast<int>(blockIdx.y * blockDim.x + threadIdx.x) * W;
  if (c >= C) return;
  const int32_t* offsets = index + distinct;      // [D + 1]
  const int32_t* rows = offsets + distinct + 1;   // [B T]
  float* grad = dwte + int64_t{index[d]} * C + c;
  float sum[W];
  load(sum, grad);
  const int32_t last = offsets[d + 1];
  for (int32_t i = offsets[d]; i < last; ++i) {
    float g[W];
    load(g, dout + int64_t{rows[i]} * C + c);
#pragma unroll
    for (int k = 0; k < W; ++k) sum[k] += g[k];
  }
  store(grad, sum);
}

// Grid (T, column blocks): dwpe[t, c ..] += dout[b, t, c ..], b = 0, 1, ... in order.
template <int W>
__global__ void encoder_backward_position_kernel(float* dwpe, const float* dout, int B, int T,
                                                 int C) {
  const int64_t t = blockIdx.x;
  const int c = static_cast<int>(blockIdx.y * blockDim.x + threadIdx.x) * W;
  if (c >= C) return;
  float* grad = dwpe + t * C + c;
  float sum[W];
  load(sum, grad);
  for (int b = 0; b < B; ++b) {
    float g[W];
    load(g, dout + (int64_t{b} * T + t) * C + c);
#pragma unroll
    for (int k = 0; k < W; ++k) sum[k] += g[k];
  }
  store(grad, sum);
}

// ---- LayerNorm ---------------------------------------------------------------------------

// One warp per row, as layernorm_forward: mean and variance (two passes) in double.
__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp,
                                         const float* weight, const float* bias, int64_t rows,
                                         int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t r = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (r >= rows) return;  // the whole warp leaves together
  const float* x = inp + r * C;  // [C]
  float* y = out + r * C;        // [C]
  double sum = 0.0;
  for (int c = lane; c < C; c += kWarpSize) sum += x[c];
  const double m = warp_sum(sum) / C;
  double sum_sq = 0.0;
  for (int c = lane; c < C; c += kWarpSize) {
    const double centred = x[c] - m;
    sum_sq += centred * centred;
  }
  const double s = 1.0 / sqrt(warp_sum(sum_sq) / C + kLayerNormEps);
  const auto m_f = static_cast<float>(m);
  const auto s_f = static_cast<float>(s);
  for (int c = lane; c < C; c += kWarpSize) y[c] = (x[c] - m_f) * s_f * weight[c] + bias[c];
  if (lane == 0) {
    mean[r] = m_f;
    rstd[r] = s_f;
  }
}

// One warp per row: dinp += rstd (dnorm - mean_c(dnorm) - norm mean_c(dnorm norm)), the two
// means summed in double (layernorm_backward's formula).
__global__ void layernorm_backward_input_kernel(float* dinp, const float* dout, const float* inp,
                                                const float* weight, const float* mean,
                                                const float* rstd, int64_t rows, int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t r = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (r >= rows) return;
  const float* x = inp + r * C;    // [C]
  const float* dy = dout + r * C;  // [C]
  float* dx = dinp + r * C;        // [C]
  const float m = mean[r];
  const float s = rstd[r];
  double dnorm_sum = 0.0;
  double dnorm_norm_sum = 0.0;
  for (int c = lane; c < C; c += kWarpSize) {
    const float norm = (x[c] - m) * s;
    const float dnorm = weight[c] * dy[c];
    dnorm_sum += dnorm;
    dnorm_norm_sum += dnorm * norm;
  }
  const auto dnorm_mean = static_cast<float>(warp_sum(dnorm_sum) / C);
  const auto dnorm_norm_mean = static_cast<float>(warp_sum(dnorm_norm_sum) / C);
  for (int c = lane; c < C; c += kWarpSize) {
    const float norm = (x[c] - m) * s;
    const float dnorm = weight[c] * dy[c];
    dx[c] += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
  }
}

// Grid (row chunks, column blocks), kColumnThreads threads: for chunk k and column c,
//   partial[0, k, c] = sum over the chunk's rows, in order, of dout * norm
//   partial[1, k, c] = sum over the chunk's rows, in order, of dout
// partial [2, chunks, C].
__global__ void layernorm_backward_partial_kernel(float* partial, const float* dout,
                                                  const float* inp, const float* mean,
                                                  const float* rstd, int64_t rows, int C,
                                                  int64_t chunks) {
  const int64_t chunk = blockIdx.x;
  const int c = static_cast<int>(blockIdx.y * blockDim.x + threadIdx.x);
  if (c >= C) return;
  const int64_t first = chunk * kLayerNormRowChunk;
  const int64_t last = first + kLayerNormRowChunk < rows ? first + kLayerNormRowChunk : rows;
  float weight_sum = 0.0f;
  float bias_sum = 0.0f;
  for (int64_t r = first; r < last; ++r) {
    const float dy = dout[r * C + c];
    weight_sum += dy * ((inp[r * C + c] - mean[r]) * rstd[r]);
    bias_sum += dy;
  }
  partial[chunk * C + c] = weight_sum;
  partial[(chunks + chunk) * C + c] = bias_sum;
}

// One thread per column: dweight[c] += the chunks' sums in chunk order; dbias likewise.
__global__ void layernorm_backward_sum_kernel(float* dweight, float* dbias, const float* partial,
                                              int C, int64_t chunks) {
  const int c = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (c >= C) return;
  float weight_sum = 0.0f;
  float bias_sum = 0.0f;
  for (int64_t k = 0; k < chunks; ++k) {
    weight_sum += partial[k * C + c];
    bias_sum += partial[(chunks + k) * C + c];
  }
  dweight[c] += weight_sum;
  dbias[c] += bias_sum;
}

// ---- residual ----------------------------------------------------------------------------

// Groups of W elements grid-stride; thread 0 of block 0 also takes the last n % W. out may
// alias either input: each element is read and written by one thread.
template <int W>
__global__ void residual_forward_kernel(float* out, const float* inp1, const float* inp2,
                                        int64_t n) {
  const int64_t groups = n / W;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < groups; i += stride) {
    float a[W], b[W];
    load(a, inp1 + i * W);
    load(b, inp2 + i * W);
#pragma unroll
    for (int k = 0; k < W; ++k) a[k] += b[k];
    store(out + i * W, a);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    for (int64_t i = groups * W; i < n; ++i) out[i] = inp1[i] + inp2[i];
  }
}

template <int W>
__global__ void residual_backward_kernel(float* dinp1, float* dinp2, const float* dout,
                                         int64_t n) {
  const int64_t groups = n / W;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < groups; i += stride) {
    float g[W], a[W], b[W];
    load(g, dout + i * W);
    load(a, dinp1 + i * W);
    load(b, dinp2 + i * W);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      a[k] += g[k];
      b[k] += g[k];
    }
    store(dinp1 + i * W, a);
    store(dinp2 + i * W, b);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    for (int64_t i = groups * W; i < n; ++i) {
      dinp1[i] += dout[i];
      dinp2[i] += dout[i];
    }
  }
}

// ---- softmax cross-entropy ---------------------------------------------------------------

// One block per row n: p = expf(z - max) / sum (sum in double, where the CPU adds 16 float
// lanes and combines them in double; then multiplied by the float 1 / sum as the CPU); loss = log(sum) - (z[target] - max) in double. The exponentials are
// recomputed in the last pass rather than stored and reread.
__global__ void crossentropy_forward_kernel(float* losses, float* probs, const float* logits,
                                            const int32_t* targets, int V) {
  __shared__ float max_shared[kWarpsPerBlock];
  __shared__ double sum_shared[kWarpsPerBlock];
  const int64_t n = blockIdx.x;
  const float* z = logits + n * V;  // [V]
  float* p = probs + n * V;         // [V]
  float local_max = -INFINITY;
  for (int v = threadIdx.x; v < V; v += kBlock) local_max = fmaxf(local_max, z[v]);
  const float maximum = block_max(local_max, max_shared);
  double local_sum = 0.0;
  for (int v = threadIdx.x; v < V; v += kBlock) local_sum += expf(z[v] - maximum);
  const double sum = block_sum(local_sum, sum_shared);
  const auto inverse_sum = static_cast<float>(1.0 / sum);
  for (int v = threadIdx.x; v < V; v += kBlock) p[v] = expf(z[v] - maximum) * inverse_sum;
  if (threadIdx.x == 0) {
    const int32_t target = targets[n];
    losses[n] = target >= 0 && target < V
                    ? static_cast<float>(log(sum) - (double{z[target]} - double{maximum}))
                    : NAN;
  }
}

// One block per row: g = p * scale, minus scale at the target, as two rounded operations
// (__fmul_rn / __fsub_rn are never fused), the CPU's bits. NaN rows for a bad target.
// dlogits may be probs: each element is read, then written, by one thread.
__global__ void crossentropy_backward_kernel(float* dlogits, const float* probs,
                                             const int32_t* targets, float scale, int V) {
  const int64_t n = blockIdx.x;
  const int32_t target = targets[n];
  const bool valid = target >= 0 && target < V;
  const float* p = probs + n * V;  // [V]
  float* g = dlogits + n * V;      // [V]
  for (int v = threadIdx.x; v < V; v += kBlock) {
    float value = __fmul_rn(p[v], scale);
    if (v == target) value = __fsub_rn(value, scale);
    g[v] = valid ? value : NAN;
  }
}

// ---- AdamW ---------------------------------------------------------------------------------

// adamw_loop of adamw.cpp, element by element, the same operations in the same order.
__global__ void adamw_kernel(float* params, float* m, float* v, const float* grads,
                             const uint8_t* decay_mask, int64_t n, AdamWSettings s,
                             float m_correction, float v_correction) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = grads[i] * s.grad_scale;
    const float m_new = s.beta1 * m[i] + (1.0f - s.beta1) * g;
    const float v_new = s.beta2 * v[i] + (1.0f - s.beta2) * g * g;
    m[i] = m_new;
    v[i] = v_new;
    const float m_hat = m_new * m_correction;
    const float v_hat = v_new * v_correction;
    const float wd = decay_mask == nullptr || decay_mask[i] != 0 ? s.weight_decay : 0.0f;
    params[i] -= s.learning_rate * (m_hat / (sqrtf(v_hat) + s.eps) + wd * params[i]);
  }
}

// ---- sum of squares ------------------------------------------------------------------------

// Block b: partial[b] = sum of values[i]^2 over [b kSquaresBlock, (b + 1) kSquaresBlock) ∩ [0, n)
// (the square of a float is exact in double).
__global__ void squares_partial_kernel(double* partial, const float* values, int64_t n) {
  __shared__ double shared[kWarpsPerBlock];
  const int64_t first = int64_t{blockIdx.x} * kSquaresBlock;
  const int64_t last = first + kSquaresBlock < n ? first + kSquaresBlock : n;
  double sum = 0.0;
  for (int64_t i = first + threadIdx.x; i < last; i += kBlock) {
    const double x = values[i];
    sum += x * x;
  }
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// One block: *result = the partials added the same way (0 when there are none).
__global__ void squares_total_kernel(double* result, const double* partial, int64_t count) {
  __shared__ double shared[kWarpsPerBlock];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kBlock) sum += partial[i];
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) *result = sum;
}

}  // namespace

// ---- host-side checks and the embedding's backward index ---------------------------------

void check_token_ids(const int32_t* tokens, int64_t count, int V) {
  for (int64_t r = 0; r < count; ++r) {
    MOEBENCH_CHECK(tokens[r] >= 0 && tokens[r] < V,
                   "token " + std::to_string(tokens[r]) + " at position " + std::to_string(r) +
                       " is outside the vocabulary [0, " + std::to_string(V) + ")");
  }
}

void check_crossentropy_targets(const int32_t* targets, int N, int V) {
  for (int n = 0; n < N; ++n) {
    MOEBENCH_CHECK(targets[n] >= 0 && targets[n] < V,
                   "cross-entropy target " + std::to_string(targets[n]) + " at row " +
                       std::to_string(n) + " is outside the vocabulary [0, " + std::to_string(V) +
                       ")");
  }
}

void build_encoder_backward_index(EncoderBackwardIndex& index, const int32_t* tokens, int B, int T,
                                  int V) {
  check_shape(B >= 0 && T >= 0 && V >= 0, "build_encoder_backward_index");
  const int64_t rows = int64_t{B} * T;
  MOEBENCH_CHECK(rows <= INT32_MAX, "build_encoder_backward_index: B T must fit in int32");
  check_token_ids(tokens, rows, V);
  // Counting sort by token: occurrences, then each token's first slot, then the rows in order.
  std::vector<int32_t>& cursor = index.cursor;  // [V]
  cursor.assign(static_cast<size_t>(V), 0);
  int distinct = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (cursor[static_cast<size_t>(tokens[r])]++ == 0) ++distinct;
  }
  index.distinct = distinct;
  index.rows = static_cast<int>(rows);
  index.packed.reserve(static_cast<size_t>(cuda_encoder_backward_index_ints(B, T)));  // D <= B T
  index.packed.resize(static_cast<size_t>(2 * int64_t{distinct} + 1 + rows));
  int32_t* token = index.packed.data();          // [D]
  int32_t* offsets = token + distinct;           // [D + 1]
  int32_t* row_list = offsets + distinct + 1;    // [B T]
  int d = 0;
  int32_t offset = 0;
  for (int32_t v = 0; v < V; ++v) {
    const int32_t count = cursor[static_cast<size_t>(v)];
    if (count == 0) continue;
    token[d] = v;
    offsets[d] = offset;
    cursor[static_cast<size_t>(v)] = offset;  // from here on: the token's next free slot
    offset += count;
    ++d;
  }
  offsets[distinct] = offset;  // == rows
  for (int64_t r = 0; r < rows; ++r) {
    row_list[cursor[static_cast<size_t>(tokens[r])]++] = static_cast<int32_t>(r);
  }
}

int64_t cuda_encoder_backward_index_ints(int B, int T) { return 3 * int64_t{B} * T + 1; }

void upload_encoder_backward_index(int32_t* device_index, const EncoderBackwardIndex& index,
                                   CUstream_st* stream) {
  if (index.packed.empty()) return;
  copy_to_device(device_index, index.packed.data(), index.packed.size() * sizeof(int32_t),
                 stream);
}

// ---- embedding -------------------------------------------------------------------------

void cuda_encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                          int B, int T, int C, int V, CUstream_st* stream) {
  check_shape(B >= 0 && T >= 0 && C >= 0 && V >= 0, "cuda_encoder_forward");
  const int64_t rows = int64_t{B} * T;
  if (rows == 0 || C == 0) return;
  const bool vector = C % 4 == 0 && aligned16(out) && aligned16(wte) && aligned16(wpe);
  const int width = vector ? 4 : 1;
  const dim3 grid(static_cast<unsigned>(grid_size(rows, 1, "cuda_encoder_forward")),
                  column_blocks(C, width, "cuda_encoder_forward"));
  if (vector) {
    encoder_forward_kernel<4><<<grid, kColumnThreads, 0, stream>>>(out, tokens, wte, wpe, T, C, V);
  } else {
    encoder_forward_kernel<1><<<grid, kColumnThreads, 0, stream>>>(out, tokens, wte, wpe, T, C, V);
  }
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void cuda_encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* device_index,
                           int distinct_tokens, int B, int T, int C, CUstream_st* stream) {
  check_shape(B >= 0 && T >= 0 && C >= 0, "cuda_encoder_backward");
  const int64_t rows = int64_t{B} * T;
  MOEBENCH_CHECK(distinct_tokens >= 0 && distinct_tokens <= rows &&
                     (rows == 0 || distinct_tokens > 0),
                 "cuda_encoder_backward: the index's distinct-token count does not fit B T");
  if (rows == 0 || C == 0) return;
  const bool vector = C % 4 == 0 && aligned16(dwte) && aligned16(dwpe) && aligned16(dout);
  const int width = vector ? 4 : 1;
  const unsigned columns = column_blocks(C, width, "cuda_encoder_backward");
  const dim3 token_grid(static_cast<unsigned>(distinct_tokens), columns);
  const dim3 position_grid(static_cast<unsigned>(T), columns);
  if (vector) {
    encoder_backward_token_kernel<4><<<token_grid, kColumnThreads, 0, stream>>>(
        dwte, dout, device_index, distinct_tokens, C);
    MOEBENCH_CUDA_LAUNCH_CHECK();
    encoder_backward_position_kernel<4><<<position_grid, kColumnThreads, 0, stream>>>(dwpe, dout,
                                                                                     B, T, C);
    MOEBENCH_CUDA_LAUNCH_CHECK();
  } else {
    encoder_backward_token_kernel<1><<<token_grid, kColumnThreads, 0, stream>>>(
        dwte, dout, device_index, distinct_tokens, C);
    MOEBENCH_CUDA_LAUNCH_CHECK();
    encoder_backward_position_kernel<1><<<position_grid, kColumnThreads, 0, stream>>>(dwpe, dout,
                                                                                     B, T, C);
    MOEBENCH_CUDA_LAUNCH_CHECK();
  }
}

// ---- LayerNorm ---------------------------------------------------------------------------

void cuda_layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                            const float* weight, const float* bias, int B, int T, int C,
                            CUstream_st* stream) {
  check_shape(B >= 0 && T >= 0 && C > 0, "cuda_layernorm_forward");
  const int64_t rows = int64_t{B} * T;
  if (rows == 0) return;
  layernorm_forward_kernel<<<grid_size(rows, kWarpsPerBlock, "cuda_layernorm_forward"), kBlock, 0,
                             stream>>>(out, mean, rstd, inp, weight, bias, rows, C);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

int64_t cuda_layernorm_backward_scratch_floats(int B, int T, int C) {
  const int64_t chunks = (int64_t{B} * T + kLayerNormRowChunk - 1) / kLayerNormRowChunk;
  return 2 * chunks * C;
}

void cuda_layernorm_backward(float* dinp, float* dweight, float* dbias, float* scratch,
                             const float* dout, const float* inp, const float* weight,
                             const float* mean, const float* rstd, int B, int T, int C,
                             CUstream_st* stream) {
  check_shape(B >= 0 && T >= 0 && C > 0, "cuda_layernorm_backward");
  const int64_t rows = int64_t{B} * T;
  if (rows == 0) return;
  layernorm_backward_input_kernel<<<grid_size(rows, kWarpsPerBlock, "cuda_layernorm_backward"),
                                    kBlock, 0, stream>>>(dinp, dout, inp, weight, mean, rstd,
                                                         rows, C);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  const int64_t chunks = (rows + kLayerNormRowChunk - 1) / kLayerNormRowChunk;
  const dim3 partial_grid(
      static_cast<unsigned>(grid_size(chunks, 1, "cuda_layernorm_backward")),
      column_blocks(C, 1, "cuda_layernorm_backward"));
  layernorm_backward_partial_kernel<<<partial_grid, kColumnThreads, 0, stream>>>(
      scratch, dout, inp, mean, rstd, rows, C, chunks);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  layernorm_backward_sum_kernel<<<grid_size(C, kBlock, "cuda_layernorm_backward"), kBlock, 0,
                                  stream>>>(dweight, dbias, scratch, C, chunks);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

// ---- residual ----------------------------------------------------------------------------

void cuda_residual_forward(float* out, const float* inp1, const float* inp2, int64_t N,
                           CUstream_st* stream) {
  check_shape(N >= 0, "cuda_residual_forward");
  if (N == 0) return;
  if (aligned16(out) && aligned16(inp1) && aligned16(inp2)) {
    residual_forward_kernel<4><<<grid_stride_blocks(N / 4), kBlock, 0, stream>>>(out, inp1, inp2,
                                                                                 N);
  } else {
    residual_forward_kernel<1><<<grid_stride_blocks(N), kBlock, 0, stream>>>(out, inp1, inp2, N);
  }
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void cuda_residual_backward(float* dinp1, float* dinp2, const float* dout, int64_t N,
                            CUstream_st* stream) {
  check_shape(N >= 0, "cuda_residual_backward");
  if (N == 0) return;
  if (aligned16(dinp1) && aligned16(dinp2) && aligned16(dout)) {
    residual_backward_kernel<4><<<grid_stride_blocks(N / 4), kBlock, 0, stream>>>(dinp1, dinp2,
                                                                                  dout, N);
  } else {
    residual_backward_kernel<1><<<grid_stride_blocks(N), kBlock, 0, stream>>>(dinp1, dinp2, dout,
                                                                              N);
  }
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

// ---- softmax cross-entropy ---------------------------------------------------------------

void cuda_crossentropy_softmax_forward(float* losses, float* probs, const float* logits,
                                       const int32_t* targets, int N, int V, CUstream_st* stream) {
  check_shape(N >= 0 && V > 0, "cuda_crossentropy_softmax_forward");
  if (N == 0) return;
  crossentropy_forward_kernel<<<static_cast<unsigned>(N), kBlock, 0, stream>>>(losses, probs,
                                                                              logits, targets, V);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void cuda_crossentropy_softmax_backward(float* dlogits, const float* probs,
                                        const int32_t* targets, float dloss, int N, int V,
                                        CUstream_st* stream) {
  check_shape(N >= 0 && V > 0, "cuda_crossentropy_softmax_backward");
  if (N == 0) return;
  const float scale = dloss / static_cast<float>(N);  // as crossentropy_softmax_backward
  crossentropy_backward_kernel<<<static_cast<unsigned>(N), kBlock, 0, stream>>>(
      dlogits, probs, targets, scale, V);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

// ---- AdamW ---------------------------------------------------------------------------------

void cuda_adamw_update(float* params, float* m, float* v, const float* grads,
                       const uint8_t* decay_mask, int64_t n, const AdamWSettings& settings,
                       int step, CUstream_st* stream) {
  MOEBENCH_CHECK(step >= 1,
                 "cuda_adamw_update: step must count from 1 (got " + std::to_string(step) + ")");
  check_shape(n >= 0, "cuda_adamw_update");
  if (n == 0) return;
  // As adamw_update: the bias corrections in double, then rounded to float once.
  const auto m_correction =
      static_cast<float>(1.0 / (1.0 - std::pow(double{settings.beta1}, step)));
  const auto v_correction =
      static_cast<float>(1.0 / (1.0 - std::pow(double{settings.beta2}, step)));
  adamw_kernel<<<grid_stride_blocks(n), kBlock, 0, stream>>>(params, m, v, grads, decay_mask, n,
                                                             settings, m_correction, v_correction);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

// ---- sum of squares ------------------------------------------------------------------------

int64_t cuda_sum_of_squares_scratch_doubles(int64_t n) {
  return (n + kSquaresBlock - 1) / kSquaresBlock;
}

void cuda_sum_of_squares(double* result, double* scratch, const float* values, int64_t n,
                         CUstream_st* stream) {
  check_shape(n >= 0, "cuda_sum_of_squares");
  const int64_t blocks = cuda_sum_of_squares_scratch_doubles(n);
  if (blocks > 0) {
    squares_partial_kernel<<<grid_size(blocks, 1, "cuda_sum_of_squares"), kBlock, 0, stream>>>(
        scratch, values, n);
    MOEBENCH_CUDA_LAUNCH_CHECK();
  }
  squares_total_kernel<<<1, kBlock, 0, stream>>>(result, scratch, blocks);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

}  // namespace moebench
