#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <vector>

#include "moebench/fast_exp.hpp"

namespace moebench {
namespace {

TEST(FastExp, RelativeErrorBelowTwoUlpOverTheRange) {
  double worst = 0.0;
  for (double x = -87.0; x <= 88.0; x += 0.001237) {
    const double exact = std::exp(static_cast<double>(static_cast<float>(x)));
    const double error = std::abs(fast_exp(static_cast<float>(x)) - exact) / exact;
    worst = std::max(worst, error);
  }
  EXPECT_LT(worst, 2e-7) << "worst relative error " << worst;
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
}

TEST(FastExp, VectorLanesEqualScalar) {
  std::vector<float> in(37), out(37);
  for (size_t i = 0; i < in.size(); ++i) in[i] = -40.0f + 2.3f * static_cast<float>(i);
  fast_exp_shifted(out.data(), in.data(), 1.5f, static_cast<int>(in.size()));
  // Lanes and the scalar tail may differ by an ulp (FMA contraction differs between them).
  for (size_t i = 0; i < in.size(); ++i) {
    const float scalar = fast_exp(in[i] - 1.5f);
    EXPECT_NEAR(out[i], scalar, 2e-7f * scalar) << i;
  }
}

// Every length, so every tail (n % 16) goes through the padded vector: values within an ulp
// of the scalar kernel, nothing written at or past n, and in place (out == in) as well (each
// inlined copy may contract into FMAs differently, so the bits may differ by an ulp).
TEST(FastExp, ShiftedRowsOfEveryLength) {
  for (int n = 0; n <= 40; ++n) {
    std::vector<float> in(48), out(48, -7.0f);
    for (size_t i = 0; i < in.size(); ++i) in[i] = -20.0f + 0.7f * static_cast<float>(i);
    fast_exp_shifted(out.data(), in.data(), 2.0f, n);
    std::vector<float> in_place = in;
    fast_exp_shifted(in_place.data(), in_place.data(), 2.0f, n);
    for (int i = 0; i < 48; ++i) {
      const auto at = static_cast<size_t>(i);
      if (i >= n) {
        ASSERT_EQ(out[at], -7.0f) << "n " << n << ": wrote element " << i;
        ASSERT_EQ(in_place[at], in[at]) << "n " << n << ": wrote element " << i;
        continue;
      }
      const float scalar = fast_exp(in[at] - 2.0f);
      ASSERT_NEAR(out[at], scalar, 2e-7f * scalar) << "n " << n << " element " << i;
      ASSERT_NEAR(in_place[at], scalar, 2e-7f * scalar) << "n " << n << " element " << i;
    }
  }
}

TEST(FastExp, ClampsOutsideTheRange) {
  EXPECT_GT(fast_exp(-1000.0f), 0.0f);
  EXPECT_LT(fast_exp(-1000.0f), 1e-37f);
  EXPECT_TRUE(std::isfinite(fast_exp(1000.0f)));
}

}  // namespace
}  // namespace moebench

namespace moebench {
namespace {

TEST(RowReductions, MaxAndSumMatchPlainLoops) {
  for (int n : {1, 5, 16, 17, 40, 256, 259}) {
    std::vector<float> x(n);
    for (int i = 0; i < n; ++i) x[i] = std::sin(1.7f * static_cast<float>(i)) * 3.0f + 0.01f * static_cast<float>(i);
    float best = x[0];
    double sum = 0.0;
    for (float v : x) {
      best = std::max(best, v);
      sum += v;
    }
    EXPECT_EQ(row_max(x.data(), n), best) << n;
    EXPECT_NEAR(row_sum(x.data(), n), sum, 1e-5 * (1.0 + std::abs(sum))) << n;
  }
}

}  // namespace
}  // namespace moebench
