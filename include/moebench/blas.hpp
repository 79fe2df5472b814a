// BLAS on one thread per call, parallelism from OpenMP.
//
// Every matrix product of the CPU backend goes through these functions, except attention's
// small per-head products (packed_gemm.hpp). Each BLAS call runs on the thread that makes it;
// the cores are shared out by OpenMP regions that issue independent calls: the tiles of one
// product (sgemm_parallel), the row blocks of the expert FFNs. One pool of threads then does
// all the work (attention's (batch, head) pairs are items of such a region too): the elementwise
// passes run next to the products that feed them, on data still in cache, and no second pool
// (the pthread OpenBLAS's own) spins while the other computes.
//
// Determinism: a product is split into tiles of C by its shape alone (never by the thread
// count), and every element of C is computed by one BLAS call over the full K in one order, so
// results do not depend on the number of threads.
#pragma once

#include <cstdint>

namespace moebench {

// Sets OpenMP to `threads` and makes every BLAS call single-threaded (process-wide). Commands
// call it once at start; every function here that opens a parallel region calls
// blas_single_threaded() first, so library callers that never call it get the same behaviour.
void set_compute_threads(int threads);

// Makes the pthread OpenBLAS single-threaded if it is not (an OpenMP OpenBLAS already runs on
// one thread inside a parallel region). Cheap; call before opening a region that calls BLAS.
// Not thread-safe: call it outside parallel regions.
void blas_single_threaded();

// C [m, n] = alpha op(A) op(B) + beta C, row-major, one BLAS call on the calling thread.
// op(A) is [m, k], op(B) is [k, n]; lda, ldb, ldc are the row strides as stored. Dimensions
// must fit the 32-bit BLAS interface (else moebench::Error). m, n or k == 0 is allowed.
void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

// A block of C: rows [row, row + rows), columns [col, col + cols).
struct GemmTile {
  int64_t row = 0, rows = 0, col = 0, cols = 0;
};

// The tiling of an [m, n] result used by sgemm_parallel, fixed by (m, n) alone. Larger tiles
// repack less (single-threaded 128 x 512 tiles run 5-22 % faster than 64 x 256 ones at the
// quickstart model's products: bench/bench_layers), so tiles start at kGemmTileRowsMax x
// kGemmTileColsMax and are halved, columns first, while the result has fewer than
// kGemmMinTiles of them, down to kGemmTileRowsMin x kGemmTileColsMin. Tiles are numbered
// row-major; edge tiles are smaller.
inline constexpr int64_t kGemmTileRowsMax = 128, kGemmTileRowsMin = 32;
inline constexpr int64_t kGemmTileColsMax = 512, kGemmTileColsMin = 128;
inline constexpr int64_t kGemmMinTiles = 4;
struct GemmTiling {
  int64_t m = 0, n = 0;  // the result's shape
  int64_t tile_rows = 0, tile_cols = 0, row_tiles = 0, col_tiles = 0;
  int64_t count() const { return row_tiles * col_tiles; }
  GemmTile tile(int64_t index) const;  // index in [0, count())
};
GemmTiling gemm_tiling(int64_t m, int64_t n);

// ceil(a / b) for a >= 0, b > 0: blocks of b that cover a.
inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The product of sgemm, its tiles run in one OpenMP region (one BLAS call per tile).
// Must not be called from inside a parallel region.
void sgemm_parallel(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                    float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                    float beta, float* c, int64_t ldc);

// One tile of the product: the call sgemm_parallel makes for `tile` (A and B offset to the
// tile's rows and columns). For callers that run their own epilogue beside each tile.
void sgemm_tile(const GemmTile& tile, bool transpose_a, bool transpose_b, int64_t k, float alpha,
                const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                int64_t ldc);

}  // namespace moebench
