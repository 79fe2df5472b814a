// Row-major products on cuBLAS (column-major). A row-major [rows, cols] matrix, as stored, is
// the column-major [cols, rows] one: its transpose. So the row-major product
//   C [m, n] = alpha op(A) [m, k] op(B) [k, n] + beta C
// is the column-major C^T = op(B)^T op(A)^T, i.e. cublasSgemm(op_b, op_a, n, m, k, B, A, C)
// with each operand's cuBLAS operation being its row-major transpose flag and every leading
// dimension the row length of the matrix as stored: lda = trans_a ? m : k,
// ldb = trans_b ? k : n, ldc = n.
#pragma once

#include <cublas_v2.h>

#include <algorithm>

#include "cuda_check.hpp"

namespace moebench::cuda_detail {

// Dense, row-major operands (leading dimensions = stored row lengths); on the handle's stream.
inline void row_major_sgemm(cublasContext* blas, bool trans_a, bool trans_b, int m, int n, int k,
                            float alpha, const float* a, const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  // With k = 0 (C = beta C) a stored row length can be 0; cuBLAS wants leading dimensions >= 1.
  const int lda = std::max(1, trans_a ? m : k), ldb = std::max(1, trans_b ? k : n);
  MOEBENCH_CUBLAS_CHECK(cublasSgemm(blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb,
                                    a, lda, &beta, c, n));
}

}  // namespace moebench::cuda_detail
