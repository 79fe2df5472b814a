// Linear layer and tied output head on OpenBLAS sgemm. See layers.hpp.
//
// Threads: OpenBLAS's own pthreads inside each sgemm, OpenMP for the bias passes; they take
// turns (see experts_fast.cpp for why the two pools are never nested).
#include <cblas.h>

#include <algorithm>
#include <cstdint>

#include "moebench/layers.hpp"

namespace moebench {
namespace {

constexpr int64_t kParallelThreshold = 32768;  // floats of elementwise work
constexpr int64_t kColumnBlock = 256;          // bias-gradient columns per work item

// C [m, n] = op(A) op(B) + beta C, row-major, with leading dimensions given.
void sgemm(bool transpose_a, bool transpose_b, int m, int n, int k, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

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
  if (bias != nullptr) {  // out = bias in every row, then out += inp W
#pragma omp parallel for schedule(static) if (int64_t{N} * OC >= kParallelThreshold)
    for (int64_t r = 0; r < N; ++r) std::copy(bias, bias + OC, out + r * OC);
  }
  sgemm(false, false, N, OC, C, inp, C, weight, OC, bias != nullptr ? 1.0f : 0.0f, out, OC);
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
  if (N == 0) return;
  sgemm(false, true, N, C, OC, dout, OC, weight, OC, 1.0f, dinp, C);  // dinp += dout W^T
  sgemm(true, false, C, OC, N, inp, C, dout, OC, 1.0f, dweight, OC);  // dW += inp^T dout
  if (dbias != nullptr) accumulate_column_sums(dbias, dout, N, OC);
}

void lm_head_forward(float* logits, const float* inp, const float* wte, int N, int C, int V) {
  if (N == 0) return;
  sgemm(false, true, N, V, C, inp, C, wte, C, 0.0f, logits, V);  // logits = inp wte^T
}

void lm_head_backward(float* dinp, float* dwte, const float* dlogits, const float* inp,
                      const float* wte, int N, int C, int V) {
  if (N == 0) return;
  sgemm(false, false, N, C, V, dlogits, V, wte, C, 1.0f, dinp, C);  // dinp += dlogits wte
  sgemm(true, false, V, C, N, dlogits, V, inp, C, 1.0f, dwte, C);   // dwte += dlogits^T inp
}

}  // namespace moebench
