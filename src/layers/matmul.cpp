// Linear layer and tied output head on OpenBLAS sgemm. See layers.hpp.
//
// Threads: every product is split into tiles of its result (blas.hpp), run under OpenMP with
// one single-threaded BLAS call per tile; the forward bias is written into each tile by the
// thread that then multiplies into it.
#include <algorithm>
#include <cstdint>

#include "moebench/blas.hpp"
#include "moebench/layers.hpp"

namespace moebench {
namespace {

constexpr int64_t kParallelThreshold = 32768;  // floats of elementwise work
// Bias-gradient columns per work item: small enough that OC = 128 gives two threads work.
constexpr int64_t kColumnBlock = 64;

// sums [cols] += column sums of matrix [rows, cols]; each column summed in row order by one
// thread.
void accumulate_column_sums(float* sums, const float* matrix, int64_t rows, int64_t cols) {
  const int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelThreshold)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t first = block * kColumnBlock;
    const int64_t width = std::min(kColumnBlock, cols - first);
    float partial[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = matrix + r * cols + first;  // [width]
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) partial[c] += row[c];
    }
    for (int64_t c = 0; c < width; ++c) sums[first + c] += partial[c];
  }
}

}  // namespace

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC) {
  if (N == 0) return;
  if (bias == nullptr) {
    sgemm_parallel(false, false, N, OC, C, 1.0f, inp, C, weight, OC, 0.0f, out, OC);
    return;
  }
  // out = bias in every row of the tile, then out += inp W over the tile.
  const GemmTiling tiling = gemm_tiling(N, OC);
  const int64_t tiles = tiling.count();
  blas_single_threaded();
#pragma omp parallel for schedule(dynamic) if (tiles > 1)
  for (int64_t t = 0; t < tiles; ++t) {
    const GemmTile tile = tiling.tile(t);
    for (int64_t r = tile.row; r < tile.row + tile.rows; ++r) {
      std::copy(bias + tile.col, bias + tile.col + tile.cols, out + r * OC + tile.col);
    }
    sgemm_tile(tile, false, false, C, 1.0f, inp, C, weight, OC, 1.0f, out, OC);
  }
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
  if (N == 0) return;
  sgemm_parallel(false, true, N, C, OC, 1.0f, dout, OC, weight, OC, 1.0f, dinp, C);  // dout W^T
  sgemm_parallel(true, false, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);  // inp^T dout
  if (dbias != nullptr) accumulate_column_sums(dbias, dout, N, OC);
}

void lm_head_forward(float* logits, const float* inp, const float* wte, int N, int C, int V) {
  if (N == 0) return;
  sgemm_parallel(false, true, N, V, C, 1.0f, inp, C, wte, C, 0.0f, logits, V);  // inp wte^T
}

void lm_head_backward(float* dinp, float* dwte, const float* dlogits, const float* inp,
                      const float* wte, int N, int C, int V) {
  if (N == 0) return;
  sgemm_parallel(false, false, N, C, V, 1.0f, dlogits, V, wte, C, 1.0f, dinp, C);  // dlogits wte
  sgemm_parallel(true, false, V, C, N, 1.0f, dlogits, V, inp, C, 1.0f, dwte, C);   // dlogits^T inp
}

}  // namespace moebench
