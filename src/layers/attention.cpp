// Causal multi-head self-attention (see layers.hpp). Per (batch, head) pair the T x T score
// square is cut into blocks of kQueryBlock rows: query block i only meets the keys up to its
// last row, so the products cover the causal triangle plus the masked half of the diagonal
// blocks (3/4 of the square at T = 2 blocks, about half for long sequences), and the masked
// entries are computed and then zeroed. The products have k or n = hs, the head size (32 in
// the quickstart), where OpenBLAS's small-matrix kernels were slow (figures in
// packed_gemm.hpp): they go through packed_gemm.hpp instead, the hs-wide operand (K^T, V, V^T,
// K, Q or dout) packed per pair or block into a per-thread buffer and the square's blocks read
// in place.
// The pairs are the work items of one OpenMP region: each runs its products and the row-wise
// softmax or its backward between them on one thread, so the square stays in cache. Every
// element is computed by one thread in a fixed order: results do not depend on the thread
// count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "moebench/check.hpp"
#include "moebench/fast_exp.hpp"
#include "moebench/layers.hpp"
#include "moebench/packed_gemm.hpp"

namespace moebench {
namespace {

constexpr int64_t kParallelThreshold = 1 << 18;  // multiply-adds of all pairs together
constexpr int kQueryBlock = 64;                   // rows of the score square per product

void check_shape(int C, int NH) {
  MOEBENCH_CHECK(NH > 0 && C % NH == 0, "attention: channels " + std::to_string(C) +
                                            " are not divisible by heads " + std::to_string(NH));
}

// Causal softmax of every row of one pair's square in place; the future positions become 0.
// att [T, T] holds the scaled scores on entry.
void causal_softmax_rows(float* att, int T) {
  for (int t = 0; t < T; ++t) {
    float* row = att + int64_t{t} * T;
    const float row_maximum = row_max(row, t + 1);
    fast_exp_shifted(row, row, row_maximum, t + 1);
    const auto inverse_sum = static_cast<float>(1.0 / row_sum(row, t + 1));
    for (int t2 = 0; t2 <= t; ++t2) row[t2] *= inverse_sum;
    for (int t2 = t + 1; t2 < T; ++t2) row[t2] = 0.0f;
  }
}

// Softmax backward of one pair's square: d holds dP on entry and dS = P (dP - rowsum(P dP))
// scale on exit (the scale of the scores folded in). p, d [T, T].
void causal_softmax_backward_rows(float* d, const float* p, int T, float scale) {
  for (int t = 0; t < T; ++t) {
    const float* p_row = p + int64_t{t} * T;
    float* d_row = d + int64_t{t} * T;
    float weighted = 0.0f;
#pragma omp simd reduction(+ : weighted)
    for (int t2 = 0; t2 <= t; ++t2) weighted += p_row[t2] * d_row[t2];
#pragma omp simd
    for (int t2 = 0; t2 <= t; ++t2) d_row[t2] = p_row[t2] * (d_row[t2] - weighted) * scale;
    for (int t2 = t + 1; t2 < T; ++t2) d_row[t2] = 0.0f;
  }
}

bool worth_threads(int B, int T, int C) {
  return int64_t{B} * T * T * C >= kParallelThreshold;
}

// The calling thread's buffers for packed operands: `wide` holds a [hs, T] operand (K^T or
// V^T), `tall` a [<= T, hs] one (V, K, Q or dout rows). Allocated by a thread's first pair,
// grown by a larger shape.
struct PackedOperands {
  float* wide;
  float* tall;
};
PackedOperands packed_operands(int T, int hs) {
  thread_local PackedBuffer buffer;
  const int64_t wide = packed_b_floats(hs, T);
  float* data = buffer.reserve(wide + packed_b_floats(T, hs));
  return {data, data + wide};
}

}  // namespace

int64_t attention_backward_scratch_floats(int B, int T, int NH) {
  return int64_t{B} * NH * T * T;
}

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  check_shape(C, NH);
  const int hs = C / NH, C3 = 3 * C;
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hs)));
  const int64_t square = int64_t{T} * T;
  const int pairs = B * NH;
#pragma omp parallel for schedule(dynamic) if (worth_threads(B, T, C))
  for (int pair = 0; pair < pairs; ++pair) {
    const int b = pair / NH, h = pair % NH;
    const float* q = qkv + int64_t{b} * T * C3 + int64_t{h} * hs;
    const float* k = q + C;
    const float* v = q + 2 * C;
    float* p = att + pair * square;
    const PackedOperands packed = packed_operands(T, hs);
    // S = scale Q K^T over the keys each query block can see, then the causal softmax.
    pack_b(true, hs, T, k, C3, packed.wide);  // K^T [hs, T]
    for (int row = 0; row < T; row += kQueryBlock) {
      const int rows = std::min(kQueryBlock, T - row), keys = row + rows;
      sgemm_packed(false, rows, keys, hs, scale, q + int64_t{row} * C3, C3, packed.wide, false,
                   p + int64_t{row} * T, T);
    }
    causal_softmax_rows(p, T);
    for (int row = 0; row < T; row += kQueryBlock) {  // out = P V over the visible keys
      const int rows = std::min(kQueryBlock, T - row), keys = row + rows;
      pack_b(false, keys, hs, v, C3, packed.tall);  // V [keys, hs]
      sgemm_packed(false, rows, hs, keys, 1.0f, p + int64_t{row} * T, T, packed.tall, false,
                   out + (int64_t{b} * T + row) * C + int64_t{h} * hs, C);
    }
  }
}

// With P = att and dP = dout V^T: dS = P (dP - rowsum(P dP)) scale, dQ += dS K,
// dK += dS^T Q, dV += P^T dout.
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH) {
  check_shape(C, NH);
  const int hs = C / NH, C3 = 3 * C;
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hs)));
  const int64_t square = int64_t{T} * T;
  const int pairs = B * NH;
#pragma omp parallel for schedule(dynamic) if (worth_threads(B, T, C))
  for (int pair = 0; pair < pairs; ++pair) {
    const int b = pair / NH, h = pair % NH;
    const int64_t offset = int64_t{b} * T * C3 + int64_t{h} * hs;
    const float *q = qkv + offset, *k = q + C, *v = q + 2 * C;
    const float* dy = dout + int64_t{b} * T * C + int64_t{h} * hs;
    float *dq = dqkv + offset, *dk = dq + C, *dv = dq + 2 * C;
    const float* p = att + pair * square;
    float* ds = scratch + pair * square;
    const PackedOperands packed = packed_operands(T, hs);
    pack_b(true, hs, T, v, C3, packed.wide);  // V^T [hs, T]
    for (int row = 0; row < T; row += kQueryBlock) {  // dP = dout V^T (visible keys)
      const int rows = std::min(kQueryBlock, T - row), keys = row + rows;
      sgemm_packed(false, rows, keys, hs, 1.0f, dy + int64_t{row} * C, C, packed.wide, false,
                   ds + int64_t{row} * T, T);
    }
    causal_softmax_backward_rows(ds, p, T, scale);
    for (int row = 0; row < T; row += kQueryBlock) {  // dQ += dS K
      const int rows = std::min(kQueryBlock, T - row), keys = row + rows;
      pack_b(false, keys, hs, k, C3, packed.tall);  // K [keys, hs]
      sgemm_packed(false, rows, hs, keys, 1.0f, ds + int64_t{row} * T, T, packed.tall, true,
                   dq + int64_t{row} * C3, C3);
    }
    // Keys [key, key + keys) are seen by the queries from `key` on: dK += dS^T Q and
    // dV += P^T dout over those rows (the square's blocks read transposed, in place).
    for (int key = 0; key < T; key += kQueryBlock) {
      const int keys = std::min(kQueryBlock, T - key), rows = T - key;
      const int64_t first = int64_t{key} * T + key;  // element (key, key) of the square
      pack_b(false, rows, hs, q + int64_t{key} * C3, C3, packed.tall);  // Q [rows, hs]
      sgemm_packed(true, keys, hs, rows, 1.0f, ds + first, T, packed.tall, true,
                   dk + int64_t{key} * C3, C3);
      pack_b(false, rows, hs, dy + int64_t{key} * C, C, packed.tall);  // dout [rows, hs]
      sgemm_packed(true, keys, hs, rows, 1.0f, p + first, T, packed.tall, true,
                   dv + int64_t{key} * C3, C3);
    }
  }
}

}  // namespace moebench
