// BLAS on one thread per call, parallelism from OpenMP. See blas.hpp.
#include "moebench/blas.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <string>

#include "moebench/check.hpp"

namespace moebench {
namespace {

int blas_int(int64_t value, const char* what) {
  MOEBENCH_CHECK(value >= 0 && value <= INT_MAX,
                 std::string("sgemm: ") + what + " = " + std::to_string(value) +
                     " does not fit the 32-bit BLAS interface");
  return static_cast<int>(value);
}

}  // namespace

void blas_single_threaded() {
  // openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP. The OpenMP build already
  // runs on one thread inside a parallel region, and its openblas_set_num_threads would set
  // OpenMP's thread count too, so it is left alone.
  if (openblas_get_parallel() == 1 && openblas_get_num_threads() != 1) {
    openblas_set_num_threads(1);
  }
}

void set_compute_threads(int threads) {
  MOEBENCH_CHECK(threads >= 1, "threads must be >= 1, got " + std::to_string(threads));
  omp_set_num_threads(threads);
  blas_single_threaded();
}

void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, blas_int(m, "m"), blas_int(n, "n"),
              blas_int(k, "k"), alpha, a, blas_int(lda, "lda"), b, blas_int(ldb, "ldb"), beta, c,
              blas_int(ldc, "ldc"));
}

GemmTiling gemm_tiling(int64_t m, int64_t n) {
  GemmTiling t;
  if (m <= 0 || n <= 0) return t;
  t.m = m;
  t.n = n;
  t.tile_rows = kGemmTileRowsMax;
  t.tile_cols = kGemmTileColsMax;
  const auto update = [&] {
    t.row_tiles = ceil_div(m, t.tile_rows);
    t.col_tiles = ceil_div(n, t.tile_cols);
  };
  update();
  while (t.count() < kGemmMinTiles) {
    if (t.tile_cols > kGemmTileColsMin && n > t.tile_cols / 2) {
      t.tile_cols /= 2;
    } else if (t.tile_rows > kGemmTileRowsMin && m > t.tile_rows / 2) {
      t.tile_rows /= 2;
    } else {
      break;
    }
    update();
  }
  return t;
}

GemmTile GemmTiling::tile(int64_t index) const {
  GemmTile t;
  t.row = (index / col_tiles) * tile_rows;
  t.col = (index % col_tiles) * tile_cols;
  t.rows = std::min(tile_rows, m - t.row);
  t.cols = std::min(tile_cols, n - t.col);
  return t;
}

void sgemm_tile(const GemmTile& tile, bool transpose_a, bool transpose_b, int64_t k, float alpha,
                const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                int64_t ldc) {
  // Row `row` of op(A) starts at a + row * lda (stored as is) or at column `row` (transposed);
  // column `col` of op(B) likewise.
  const float* a_tile = transpose_a ? a + tile.row : a + tile.row * lda;
  const float* b_tile = transpose_b ? b + tile.col * ldb : b + tile.col;
  sgemm(transpose_a, transpose_b, tile.rows, tile.cols, k, alpha, a_tile, lda, b_tile, ldb, beta,
        c + tile.row * ldc + tile.col, ldc);
}

void sgemm_parallel(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                    float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                    float beta, float* c, int64_t ldc) {
  const GemmTiling tiling = gemm_tiling(m, n);
  const int64_t tiles = tiling.count();
  if (tiles == 0) return;
  blas_single_threaded();
#pragma omp parallel for schedule(dynamic) if (tiles > 1)
  for (int64_t t = 0; t < tiles; ++t) {
    sgemm_tile(tiling.tile(t), transpose_a, transpose_b, k, alpha, a, lda, b, ldb, beta, c,
               ldc);
  }
}

}  // namespace moebench
