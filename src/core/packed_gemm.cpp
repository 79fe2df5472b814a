// Small products against a packed B operand. See packed_gemm.hpp.
//
// sgemm_packed walks C in passes of 12 rows; within a pass, panel by panel (32 columns), a
// micro-tile keeps its 12 x 32 results in registers for the whole k loop: per step p, two
// vector loads of the panel's row p and one broadcast of op(A)[i, p] per row feed 24 FMAs.
// op(A) is read in place: for A as stored, row i's elements are consecutive; for A^T, the 12
// rows' elements of step p are consecutive.
#include "moebench/packed_gemm.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "moebench/blas.hpp"
#include "moebench/check.hpp"

namespace moebench {
namespace {

constexpr int64_t kPanel = kPackedPanelCols;
constexpr int64_t kRowsPerPass = 12;

int64_t panel_count(int64_t n) { return ceil_div(n, kPanel); }

// op(A)[i, p] for A stored as is (row stride lda) or transposed.
template <bool kTransA>
inline float a_at(const float* a, int64_t lda, int64_t i, int64_t p) {
  return kTransA ? a[p * lda + i] : a[i * lda + p];
}

// The first row of op(A) from row i on.
inline const float* a_rows_from(bool transpose_a, const float* a, int64_t lda, int64_t i) {
  return transpose_a ? a + i : a + i * lda;
}

// One micro-tile of the portable kernel: rows [0, kRows) x the panel's columns [0, cols).
template <int kRows, bool kTransA>
void tile_portable(int64_t k, float alpha, const float* a, int64_t lda, const float* panel,
                   float* c, int64_t ldc, int64_t cols, bool accumulate) {
  float acc[kRows][kPanel] = {};
  for (int64_t p = 0; p < k; ++p) {
    const float* b = panel + p * kPanel;
    for (int i = 0; i < kRows; ++i) {
      const float av = a_at<kTransA>(a, lda, i, p);
#pragma omp simd
      for (int64_t q = 0; q < kPanel; ++q) acc[i][q] += av * b[q];
    }
  }
  for (int i = 0; i < kRows; ++i) {
    for (int64_t q = 0; q < cols; ++q) {
      c[i * ldc + q] = alpha * acc[i][q] + (accumulate ? c[i * ldc + q] : 0.0f);
    }
  }
}

template <bool kTransA>
void panel_portable(int64_t m, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* panel, float* c, int64_t ldc, int64_t cols, bool accumulate) {
  constexpr int kRows = 4;
  int64_t i = 0;
  for (; i + kRows <= m; i += kRows) {
    tile_portable<kRows, kTransA>(k, alpha, a_rows_from(kTransA, a, lda, i), lda, panel,
                                  c + i * ldc, ldc, cols, accumulate);
  }
  for (; i < m; ++i) {
    tile_portable<1, kTransA>(k, alpha, a_rows_from(kTransA, a, lda, i), lda, panel, c + i * ldc,
                              ldc, cols, accumulate);
  }
}

#if defined(__AVX512F__)
// One micro-tile: rows [0, kRows) x 32 columns in 2 kRows zmm accumulators; mask0 / mask1 are
// the valid columns of the panel's two halves (C is neither read nor written past them).
template <int kRows, bool kTransA>
inline void tile_avx512(int64_t k, float alpha, const float* a, int64_t lda, const float* panel,
                        float* c, int64_t ldc, __mmask16 mask0, __mmask16 mask1,
                        bool accumulate) {
  // The accumulators start from loads under an empty mask (zeros, touching no memory): a loop
  // of setzero is turned into a memset of the array by GCC's loop distribution, which keeps
  // the accumulators in memory (a memset call in every tile, seen in perf). They live in
  // registers only if the row loops are unrolled.
  __m512 low[kRows], high[kRows];
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
    low[i] = _mm512_maskz_loadu_ps(0, c);
    high[i] = _mm512_maskz_loadu_ps(0, c);
  }
  for (int64_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_loadu_ps(panel + p * kPanel);
    const __m512 b1 = _mm512_loadu_ps(panel + p * kPanel + 16);
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
      const __m512 av = _mm512_set1_ps(a_at<kTransA>(a, lda, i, p));
      low[i] = _mm512_fmadd_ps(av, b0, low[i]);
      high[i] = _mm512_fmadd_ps(av, b1, high[i]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha);
  const __mmask16 load0 = accumulate ? mask0 : 0;
  const __mmask16 load1 = accumulate ? mask1 : 0;
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
    const __m512 old0 = _mm512_maskz_loadu_ps(load0, c + i * ldc);
    const __m512 old1 = _mm512_maskz_loadu_ps(load1, c + i * ldc + 16);
    _mm512_mask_storeu_ps(c + i * ldc, mask0, _mm512_fmadd_ps(scale, low[i], old0));
    _mm512_mask_storeu_ps(c + i * ldc + 16, mask1, _mm512_fmadd_ps(scale, high[i], old1));
  }
}

// The rows of a pass: 12 (24 accumulators, 2 panel registers and a broadcast fit the 32 zmm
// registers), or the last m % 12.
template <bool kTransA>
void rows_avx512(int64_t rows, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* panel, float* c, int64_t ldc, __mmask16 mask0, __mmask16 mask1,
                 bool accumulate) {
  switch (rows) {
#define MOEBENCH_ROWS(R) \
  case R:                \
    return tile_avx512<R, kTransA>(k, alpha, a, lda, panel, c, ldc, mask0, mask1, accumulate);
    MOEBENCH_ROWS(1) MOEBENCH_ROWS(2) MOEBENCH_ROWS(3) MOEBENCH_ROWS(4) MOEBENCH_ROWS(5)
    MOEBENCH_ROWS(6) MOEBENCH_ROWS(7) MOEBENCH_ROWS(8) MOEBENCH_ROWS(9) MOEBENCH_ROWS(10)
    MOEBENCH_ROWS(11) MOEBENCH_ROWS(12)
#undef MOEBENCH_ROWS
    default:
      MOEBENCH_CHECK(false, "sgemm_packed: a pass of " + std::to_string(rows) + " rows");
  }
}
static_assert(kRowsPerPass == 12, "rows_avx512 has a case for every pass height");

template <bool kTransA>
void panel_avx512(int64_t m, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* panel, float* c, int64_t ldc, int64_t cols, bool accumulate) {
  const auto mask = [](int64_t valid) {
    return static_cast<__mmask16>(valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : (1u << valid) - 1u);
  };
  rows_avx512<kTransA>(m, k, alpha, a, lda, panel, c, ldc, mask(cols), mask(cols - 16),
                       accumulate);
}
#endif

using PanelKernel = void (*)(int64_t m, int64_t k, float alpha, const float* a, int64_t lda,
                             const float* panel, float* c, int64_t ldc, int64_t cols,
                             bool accumulate);

// Passes of kRowsPerPass rows, each over all panels (its rows of op(A) stay in L1).
void sgemm_packed_with(PanelKernel kernel, bool transpose_a, int64_t m, int64_t n, int64_t k,
                       float alpha, const float* a, int64_t lda, const float* packed_b,
                       bool accumulate, float* c, int64_t ldc) {
  MOEBENCH_CHECK(m >= 0 && n >= 0 && k >= 0,
                 "sgemm_packed: negative dimension (m " + std::to_string(m) + ", n " +
                     std::to_string(n) + ", k " + std::to_string(k) + ")");
  for (int64_t row = 0; row < m; row += kRowsPerPass) {
    const int64_t rows = std::min(kRowsPerPass, m - row);
    const float* a_rows = a_rows_from(transpose_a, a, lda, row);
    for (int64_t panel = 0; panel < panel_count(n); ++panel) {
      const int64_t col = panel * kPanel;
      kernel(rows, k, alpha, a_rows, lda, packed_b + panel * k * kPanel, c + row * ldc + col,
             ldc, std::min(kPanel, n - col), accumulate);
    }
  }
}

}  // namespace

int64_t packed_b_floats(int64_t k, int64_t n) { return panel_count(n) * kPanel * k; }

void pack_b(bool transpose_b, int64_t k, int64_t n, const float* b, int64_t ldb, float* packed) {
  for (int64_t panel = 0; panel < panel_count(n); ++panel) {
    float* out = packed + panel * k * kPanel;
    const int64_t col = panel * kPanel;
    const int64_t cols = std::min(kPanel, n - col);
    if (cols < kPanel) std::fill(out, out + k * kPanel, 0.0f);
    if (transpose_b) {  // op(B)[p, col + q] = b[(col + q) ldb + p]
      const float* source = b + col * ldb;  // row `col` of B
      for (int64_t q = 0; q < cols; ++q) {  // read rows of B in order, write columns
        for (int64_t p = 0; p < k; ++p) out[p * kPanel + q] = source[q * ldb + p];
      }
    } else if (cols == kPanel) {
      for (int64_t p = 0; p < k; ++p) {  // a plain loop: copy_n calls memmove for each row
        const float* source = b + p * ldb + col;
        float* target = out + p * kPanel;
#pragma omp simd
        for (int64_t q = 0; q < kPanel; ++q) target[q] = source[q];
      }
    } else {
      for (int64_t p = 0; p < k; ++p) std::copy_n(b + p * ldb + col, cols, out + p * kPanel);
    }
  }
}

void sgemm_packed(bool transpose_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* packed_b, bool accumulate, float* c, int64_t ldc) {
#if defined(__AVX512F__)
  sgemm_packed_with(transpose_a ? panel_avx512<true> : panel_avx512<false>, transpose_a, m, n, k,
                    alpha, a, lda, packed_b, accumulate, c, ldc);
#else
  detail::sgemm_packed_portable(transpose_a, m, n, k, alpha, a, lda, packed_b, accumulate, c,
                                ldc);
#endif
}

void PackedBuffer::Free::operator()(float* p) const { std::free(p); }

float* PackedBuffer::reserve(int64_t floats) {
  if (floats > capacity_) {
    const auto bytes = static_cast<size_t>((floats * 4 + 63) / 64 * 64);
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    MOEBENCH_CHECK(data_ != nullptr, "out of memory: packed matrix buffer of " +
                                         std::to_string(bytes) + " bytes");
    capacity_ = floats;
  }
  return data_.get();
}

namespace detail {
void sgemm_packed_portable(bool transpose_a, int64_t m, int64_t n, int64_t k, float alpha,
                           const float* a, int64_t lda, const float* packed_b, bool accumulate,
                           float* c, int64_t ldc) {
  sgemm_packed_with(transpose_a ? panel_portable<true> : panel_portable<false>, transpose_a, m,
                    n, k, alpha, a, lda, packed_b, accumulate, c, ldc);
}

}  // namespace detail

}  // namespace moebench
