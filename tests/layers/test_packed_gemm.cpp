// packed_gemm.hpp: the packed layout, both kernels against a double-precision product on
// ragged shapes, strides, transposes, alpha and accumulation, and the row-split independence
// attention relies on.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "moebench/packed_gemm.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

std::vector<float> normal(int64_t n, uint64_t stream) {
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(random_normal(7, stream, i));
  return v;
}

size_t at(int64_t i) { return static_cast<size_t>(i); }

using Kernel = std::function<void(bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                  const float*, bool, float*, int64_t)>;

struct NamedKernel {
  const char* name;
  Kernel run;
};

std::vector<NamedKernel> kernels() {
  return {{"sgemm_packed", sgemm_packed}, {"portable", detail::sgemm_packed_portable}};
}

// Panel j holds op(B)'s columns [32 j, 32 j + 32) as [k, 32] rows, zero past n; B stored as is
// and B^T stored transposed pack to the same buffer.
TEST(PackedGemm, PackedLayout) {
  const int64_t k = 3, n = 70;  // 3 panels, the last with 6 columns
  const std::vector<float> b = normal(k * n, 1);      // op(B) [k, n], row stride n
  std::vector<float> bt(at(n * k));                   // the same matrix stored [n, k]
  for (int64_t p = 0; p < k; ++p) {
    for (int64_t j = 0; j < n; ++j) bt[at(j * k + p)] = b[at(p * n + j)];
  }
  ASSERT_EQ(packed_b_floats(k, n), 3 * 32 * k);
  std::vector<float> packed(at(packed_b_floats(k, n)), -1.0f);
  pack_b(false, k, n, b.data(), n, packed.data());
  for (int64_t panel = 0; panel < 3; ++panel) {
    for (int64_t p = 0; p < k; ++p) {
      for (int64_t q = 0; q < 32; ++q) {
        const int64_t j = panel * 32 + q;
        const float expected = j < n ? b[at(p * n + j)] : 0.0f;
        ASSERT_EQ(packed[at((panel * k + p) * 32 + q)], expected) << panel << " " << p << " " << q;
      }
    }
  }
  std::vector<float> from_transposed(packed.size(), -1.0f);
  pack_b(true, k, n, bt.data(), k, from_transposed.data());
  EXPECT_EQ(from_transposed, packed);
}

// C = alpha op(A) op(B) (+ C) against a double loop, with row strides wider than the
// matrices: every micro-tile height (1 to 13 rows and 64), full, partial and single-column
// panels, k = 0, both transposes, and the padding columns of C untouched.
TEST(PackedGemm, BothKernelsMatchADoubleProduct) {
  for (const NamedKernel& kernel : kernels()) {
    for (const int64_t m : {1, 5, 12, 13, 25, 64}) {
      for (const int64_t n : {1, 16, 17, 32, 33, 70}) {
        for (const int64_t k : {0, 1, 7, 128}) {
          for (const bool transpose_a : {false, true}) {
            for (const bool transpose_b : {false, true}) {
              for (const bool accumulate : {false, true}) {
                const float alpha = accumulate ? 1.0f : 0.375f;
                const int64_t lda = (transpose_a ? m : k) + 3;
                const int64_t ldb = (transpose_b ? k : n) + 2, ldc = n + 5;
                const std::vector<float> a = normal((transpose_a ? k : m) * lda, 2);
                const std::vector<float> b = normal((transpose_b ? n : k) * ldb, 3);
                const std::vector<float> c0 = normal(m * ldc, 4);
                std::vector<float> packed(at(packed_b_floats(k, n)));
                pack_b(transpose_b, k, n, b.data(), ldb, packed.data());
                std::vector<float> c = c0;
                kernel.run(transpose_a, m, n, k, alpha, a.data(), lda, packed.data(), accumulate,
                           c.data(), ldc);
                for (int64_t i = 0; i < m; ++i) {
                  for (int64_t j = 0; j < ldc; ++j) {
                    const size_t index = at(i * ldc + j);
                    if (j >= n) {
                      ASSERT_EQ(c[index], c0[index]) << kernel.name << ": wrote past n";
                      continue;
                    }
                    double sum = 0.0, magnitude = 0.0;
                    for (int64_t p = 0; p < k; ++p) {
                      const double av = transpose_a ? a[at(p * lda + i)] : a[at(i * lda + p)];
                      const double bv = transpose_b ? b[at(j * ldb + p)] : b[at(p * ldb + j)];
                      sum += av * bv;
                      magnitude += std::fabs(av * bv);
                    }
                    const double expected = alpha * sum + (accumulate ? c0[index] : 0.0);
                    magnitude = alpha * magnitude + (accumulate ? std::fabs(c0[index]) : 0.0);
                    // float accumulation of k + 1 terms: |error| <= (k + 2) u sum |terms|
                    ASSERT_NEAR(c[index], expected,
                                1e-7 * (static_cast<double>(k) + 2) * magnitude + 1e-30)
                        << kernel.name << " m " << m << " n " << n << " k " << k << " transpose_a "
                        << transpose_a << " transpose_b " << transpose_b << " accumulate "
                        << accumulate << " at " << i << ", " << j;
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

// An element of C does not depend on which rows share its call (attention splits the square
// into query blocks), nor on how many of the packed columns a call uses.
TEST(PackedGemm, RowBlocksAndColumnPrefixesGiveTheBitsOfTheWholeProduct) {
  const int64_t m = 100, n = 70, k = 64;
  const std::vector<float> a = normal(m * k, 5);
  const std::vector<float> b = normal(k * n, 6);
  std::vector<float> packed(at(packed_b_floats(k, n)));
  pack_b(false, k, n, b.data(), n, packed.data());
  for (const NamedKernel& kernel : kernels()) {
    for (const bool transpose_a : {false, true}) {
      // transposed: A stored [k, m]
      const int64_t lda = transpose_a ? m : k;
      std::vector<float> whole(at(m * n)), blocks(whole.size()), prefix(whole.size());
      kernel.run(transpose_a, m, n, k, 0.5f, a.data(), lda, packed.data(), false, whole.data(), n);
      for (int64_t first = 0; first < m; first += 7) {  // blocks of 7: every pass height
        const int64_t rows = std::min<int64_t>(7, m - first);
        const float* a_block = transpose_a ? a.data() + first : a.data() + first * lda;
        kernel.run(transpose_a, rows, n, k, 0.5f, a_block, lda, packed.data(), false,
                   blocks.data() + first * n, n);
      }
      EXPECT_EQ(blocks, whole) << kernel.name << " transpose_a " << transpose_a;
      kernel.run(transpose_a, m, 40, k, 0.5f, a.data(), lda, packed.data(), false, prefix.data(),
                 n);  // the first 40 columns only
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < 40; ++j) {
          ASSERT_EQ(prefix[at(i * n + j)], whole[at(i * n + j)]) << kernel.name << " " << i;
        }
      }
    }
  }
}

TEST(PackedGemm, BufferIsAlignedAndGrows) {
  PackedBuffer buffer;
  float* small = buffer.reserve(10);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small) % 64, 0u);
  EXPECT_EQ(buffer.reserve(5), small);  // large enough already: kept
  float* large = buffer.reserve(100000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large) % 64, 0u);
  large[99999] = 1.0f;  // writable to the end
  EXPECT_EQ(buffer.data(), large);
}

}  // namespace
}  // namespace moebench
