// Token + position embedding (forward and backward). See layers.hpp.
#include <algorithm>
#include <cstdint>
#include <string>

#include "moebench/check.hpp"
#include "moebench/layers.hpp"

namespace moebench {
namespace {

// Below this many floats of work a parallel region costs more than it saves.
constexpr int64_t kParallelThreshold = 32768;
// encoder_backward: one thread owns a block of columns of dwte and dwpe, so no two threads
// write the same element and every sum runs in (b, t) order.
constexpr int64_t kColumnBlock = 64;

}  // namespace

void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                     int T, int C, int V) {
  const int64_t rows = static_cast<int64_t>(B) * T;
  for (int64_t r = 0; r < rows; ++r) {
    MOEBENCH_CHECK(tokens[r] >= 0 && tokens[r] < V,
                   "token " + std::to_string(tokens[r]) + " at position " + std::to_string(r) +
                       " is outside the vocabulary [0, " + std::to_string(V) + ")");
  }
#pragma omp parallel for schedule(static) if (rows * C >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = r % T;
    float* out_row = out + r * C;                           // [C]
    const float* token_row = wte + tokens[r] * int64_t{C};  // [C]
    const float* position_row = wpe + t * C;                // [C]
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out_row[c] = token_row[c] + position_row[c];
  }
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                      int T, int C) {
  const int64_t rows = static_cast<int64_t>(B) * T;
  const int64_t blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * C >= kParallelThreshold)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t first = block * kColumnBlock;
    const int64_t width = std::min<int64_t>(kColumnBlock, C - first);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = r % T;
      const float* g = dout + r * C + first;                      // [width]
      float* token_grad = dwte + tokens[r] * int64_t{C} + first;  // [width]
      float* position_grad = dwpe + t * C + first;                // [width]
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) {
        token_grad[c] += g[c];
        position_grad[c] += g[c];
      }
    }
  }
}

}  // namespace moebench
