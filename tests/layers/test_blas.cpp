// blas.hpp: single-threaded BLAS calls, the tiling of sgemm_parallel, thread-count
// independence.
#include <cblas.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <vector>

#include "moebench/blas.hpp"
#include "moebench/check.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

std::vector<float> normal(size_t n, uint64_t stream) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(random_normal(5, stream, i));
  return v;
}

// Element (i, j) of op(X) for X stored row-major with row stride ld.
float at(const std::vector<float>& x, bool transpose, int64_t ld, int64_t i, int64_t j) {
  return transpose ? x[static_cast<size_t>(j * ld + i)] : x[static_cast<size_t>(i * ld + j)];
}

// Every element of the result lies in exactly one tile, and tiles stay inside [m, n].
TEST(GemmTiles, CoverTheResultOnce) {
  for (auto [m, n] : {std::pair<int64_t, int64_t>{1, 1}, {64, 256}, {65, 257}, {1000, 3},
                      {3, 1000}, {640, 512}}) {
    std::vector<int> hits(static_cast<size_t>(m * n), 0);
    const GemmTiling tiling = gemm_tiling(m, n);
    const int64_t tiles = tiling.count();
    for (int64_t t = 0; t < tiles; ++t) {
      const GemmTile tile = tiling.tile(t);
      ASSERT_GT(tile.rows, 0);
      ASSERT_GT(tile.cols, 0);
      ASSERT_LE(tile.row + tile.rows, m);
      ASSERT_LE(tile.col + tile.cols, n);
      for (int64_t i = tile.row; i < tile.row + tile.rows; ++i) {
        for (int64_t j = tile.col; j < tile.col + tile.cols; ++j) ++hits[static_cast<size_t>(i * n + j)];
      }
    }
    EXPECT_TRUE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }))
        << m << " x " << n;
  }
  EXPECT_EQ(gemm_tiling(0, 5).count(), 0);
}

// Large tiles first, halved (columns first) until there are kGemmMinTiles, within the bounds.
TEST(GemmTiles, StartLargeAndSplitUntilThereAreEnough) {
  const GemmTiling big = gemm_tiling(1024, 384);  // 8 row tiles of the largest size already
  EXPECT_EQ(big.tile_rows, kGemmTileRowsMax);
  EXPECT_EQ(big.tile_cols, kGemmTileColsMax);
  EXPECT_EQ(big.count(), 8);
  const GemmTiling wide = gemm_tiling(130, 300);  // 2 x 1 -> columns halved once: 2 x 2
  EXPECT_EQ(wide.tile_rows, 128);
  EXPECT_EQ(wide.tile_cols, 256);
  EXPECT_EQ(wide.count(), 4);
  const GemmTiling weight = gemm_tiling(128, 384);  // columns to 128 (3), then rows to 64 (6)
  EXPECT_EQ(weight.tile_rows, 64);
  EXPECT_EQ(weight.tile_cols, 128);
  EXPECT_EQ(weight.count(), 6);
  const GemmTiling small = gemm_tiling(20, 100);  // cannot split: one tile
  EXPECT_EQ(small.count(), 1);
  for (auto [m, n] : {std::pair<int64_t, int64_t>{1, 1}, {100, 5000}, {5000, 100}, {64, 64}}) {
    const GemmTiling t = gemm_tiling(m, n);
    EXPECT_GE(t.tile_rows, kGemmTileRowsMin);
    EXPECT_LE(t.tile_rows, kGemmTileRowsMax);
    EXPECT_GE(t.tile_cols, kGemmTileColsMin);
    EXPECT_LE(t.tile_cols, kGemmTileColsMax);
  }
}

// All four transpose cases, with leading dimensions wider than the operands (views into larger
// matrices, as attention and the experts use them), alpha != 1 and beta != 0, on a shape of
// several tiles with ragged edges, against a double-precision loop. Tolerance: fp32 sums over
// K = 150 terms of O(1) products, ~sqrt(K) 2^-24 * |C| ~ 1e-6 relative; 1e-4 of the result's
// scale catches any offset, transpose or stride error (O(1) of the scale).
TEST(SgemmParallel, MatchesALoopInEveryTransposeCase) {
  const int64_t m = 130, n = 300, k = 150, pad = 7;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      const std::vector<float> a = normal(static_cast<size_t>((ta ? k : m) * lda), 1);
      const std::vector<float> b = normal(static_cast<size_t>((tb ? n : k) * ldb), 2);
      std::vector<float> c = normal(static_cast<size_t>(m * ldc), 3);
      const std::vector<float> c0 = c;
      const float alpha = 0.75f, beta = -0.5f;
      sgemm_parallel(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
      double worst = 0.0, scale = 0.0;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < ldc; ++j) {
          const size_t index = static_cast<size_t>(i * ldc + j);
          if (j >= n) {  // padding columns are not touched
            ASSERT_EQ(c[index], c0[index]) << "padding written at " << i << ", " << j;
            continue;
          }
          double sum = 0.0;
          for (int64_t p = 0; p < k; ++p) {
            sum += double{at(a, ta, lda, i, p)} * double{at(b, tb, ldb, p, j)};
          }
          const double want = alpha * sum + beta * double{c0[index]};
          worst = std::max(worst, std::fabs(double{c[index]} - want));
          scale = std::max(scale, std::fabs(want));
        }
      }
      EXPECT_LE(worst, 1e-4 * scale) << "transpose_a " << ta << " transpose_b " << tb;
    }
  }
}

// The split depends on the shape only, so one thread and a team give the same bits.
TEST(SgemmParallel, ResultDoesNotDependOnTheThreadCount) {
  const int64_t m = 300, n = 520, k = 96;
  const std::vector<float> a = normal(static_cast<size_t>(m * k), 4);
  const std::vector<float> b = normal(static_cast<size_t>(k * n), 5);
  const int default_threads = omp_get_max_threads();
  std::vector<std::vector<float>> results;
  for (int threads : {1, std::max(default_threads, 2)}) {
    omp_set_num_threads(threads);
    std::vector<float> c(static_cast<size_t>(m * n), 1.0f);
    sgemm_parallel(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 1.0f, c.data(), n);
    results.push_back(c);
  }
  omp_set_num_threads(default_threads);
  EXPECT_EQ(results[0], results[1]);
}

TEST(Sgemm, RejectsDimensionsBeyondThe32BitInterface) {
  float x = 0.0f;
  EXPECT_THROW(sgemm(false, false, 1, int64_t{INT_MAX} + 1, 1, 1.0f, &x, 1, &x, 1, 0.0f, &x, 1),
               Error);
}

TEST(Sgemm, EmptyResultIsANoOp) {
  std::vector<float> c = {3.0f};
  sgemm(false, false, 0, 1, 4, 1.0f, nullptr, 4, nullptr, 1, 0.0f, c.data(), 1);
  sgemm_parallel(false, false, 1, 0, 4, 1.0f, nullptr, 4, nullptr, 1, 0.0f, c.data(), 1);
  EXPECT_EQ(c[0], 3.0f);
}

// The pthread OpenBLAS is made single-threaded (one pool of threads: OpenMP's).
TEST(BlasThreads, PthreadBuildRunsOneThreadPerCall) {
  const int default_threads = omp_get_max_threads();
  set_compute_threads(2);
  if (openblas_get_parallel() == 1) {
    EXPECT_EQ(openblas_get_num_threads(), 1);
  }
  EXPECT_EQ(omp_get_max_threads(), 2);
  EXPECT_THROW(set_compute_threads(0), Error);
  omp_set_num_threads(default_threads);
}

}  // namespace
}  // namespace moebench
