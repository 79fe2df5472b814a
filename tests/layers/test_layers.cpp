// Dense transformer layers: hand cases, fast (OpenBLAS) paths against their references,
// every backward against central finite differences, attention causality, and one whole
// tiny model chained forward and backward against finite differences of its mean loss.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/layers.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> normal_vector(size_t n, uint64_t stream, double stddev = 1.0,
                                 uint64_t seed = 1234) {
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) {
    values[i] = static_cast<float>(stddev * random_normal(seed, stream, i));
  }
  return values;
}

size_t size_of(int64_t n) { return static_cast<size_t>(n); }

double max_abs(const float* values, size_t n) {
  double result = 0.0;
  for (size_t i = 0; i < n; ++i) result = std::max(result, std::fabs(double{values[i]}));
  return result;
}
double max_abs(const std::vector<float>& values) { return max_abs(values.data(), values.size()); }

// max |got - want| / max |want|; NaN anywhere (an unwritten output) makes it NaN.
double relative_max_diff(const float* got, const float* want, size_t n) {
  double diff = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double delta = std::fabs(double{got[i]} - double{want[i]});
    if (std::isnan(delta)) return std::numeric_limits<double>::quiet_NaN();
    diff = std::max(diff, delta);
  }
  return diff / std::max(max_abs(want, n), 1e-30);
}
double relative_max_diff(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  return relative_max_diff(got.data(), want.data(), std::min(got.size(), want.size()));
}

// after - before, elementwise: what an accumulating backward added.
std::vector<float> added(const std::vector<float>& after, const std::vector<float>& before) {
  std::vector<float> delta(after.size());
  for (size_t i = 0; i < after.size(); ++i) delta[i] = after[i] - before[i];
  return delta;
}

// L = sum_i out[i] * weights[i], accumulated in double: the scalar whose gradient with respect
// to `out` is `weights`, so backward(dout = weights) must give dL/d(every input).
double weighted_sum(const std::vector<float>& out, const std::vector<float>& weights) {
  double sum = 0.0;
  for (size_t i = 0; i < out.size(); ++i) sum += double{out[i]} * double{weights[i]};
  return sum;
}

// ---- finite differences -------------------------------------------------------------------
//
// Central differences (L(x + s) - L(x - s)) / (x+ - x-) for every element of x, with x+ and
// x- the floats actually stored (so the rounding of x +- s does not bias the quotient). The
// layers compute in float: L carries a rounding noise of ~1e-7 relative, divided by 2s = 0.02
// that is ~1e-5 of the loss scale per element; the truncation error is s^2/6 |L'''| ~ 2e-5
// for the O(1) curvatures of these tiny problems. Measured worst error: 2.3e-4 of the largest
// gradient of its tensor (the tiny model's wqkv; every value is printed). kFdTolerance = 2e-3
// leaves ~10x margin, while any real bug (a missing scale, a transposed index, a lost term)
// changes some element by tens of percent of the tensor's scale.
constexpr double kFdStep = 1e-2;
constexpr double kFdTolerance = 2e-3;

// Compares analytic [n] with the finite-difference gradient of loss() with respect to x [n]:
// max |analytic - numeric| / max |numeric|. Restores x.
void expect_gradient(const char* name, float* x, const float* analytic, size_t n,
                     const std::function<double()>& loss) {
  std::vector<float> numeric(n);
  for (size_t i = 0; i < n; ++i) {
    const float saved = x[i];
    const auto plus = static_cast<float>(double{saved} + kFdStep);
    const auto minus = static_cast<float>(double{saved} - kFdStep);
    x[i] = plus;
    const double loss_plus = loss();
    x[i] = minus;
    const double loss_minus = loss();
    x[i] = saved;
    numeric[i] = static_cast<float>((loss_plus - loss_minus) / (double{plus} - double{minus}));
  }
  const double scale = max_abs(numeric);
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double error = std::fabs(double{analytic[i]} - double{numeric[i]});
    worst = std::isnan(error) ? error : std::max(worst, error);
    if (std::isnan(error)) break;
  }
  const double relative = worst / std::max(scale, 1e-12);
  EXPECT_LE(relative, kFdTolerance) << name << ": max |analytic - numeric| / max |numeric|, "
                                    << "gradient scale " << scale;
  EXPECT_GT(scale, 0.0) << name << ": the loss does not depend on this input";
  std::printf("  d%-8s finite-difference rel error %.2e (scale %.2e)\n", name, relative, scale);
}
void expect_gradient(const char* name, std::vector<float>& x, const std::vector<float>& analytic,
                     const std::function<double()>& loss) {
  ASSERT_EQ(x.size(), analytic.size()) << name;
  expect_gradient(name, x.data(), analytic.data(), x.size(), loss);
}

// ---- fast vs reference ------------------------------------------------------------------
//
// The references accumulate in double (one float rounding per output); the fast paths sum
// K <= 64 products in fp32 (OpenBLAS, FMA), so their error is ~sqrt(K) 2^-24 ~ 5e-7 of the
// tensor scale for random data and at most K 2^-24 sum|a b| / max|out| ~ 3e-5 in the worst
// case. 1e-4 of the largest reference value covers that (the same bound as the expert
// tests); a wrong index, transpose, missing bias or overwrite-instead-of-accumulate moves
// values by O(1) of the scale.
constexpr double kFastTolerance = 1e-4;

void expect_close(const char* name, const std::vector<float>& fast,
                  const std::vector<float>& reference) {
  const double diff = relative_max_diff(fast, reference);
  EXPECT_LE(diff, kFastTolerance) << name << ": max |fast - reference| / max |reference|";
  std::printf("  %-10s fast vs reference rel diff %.2e\n", name, diff);
}

// ---- encoder ------------------------------------------------------------------------------

TEST(Encoder, ForwardAddsTokenAndPositionRows) {
  const int B = 2, T = 3, C = 4, V = 5;
  const std::vector<int32_t> tokens = {4, 0, 4, 1, 3, 2};
  const std::vector<float> wte = normal_vector(V * C, 1);
  const std::vector<float> wpe = normal_vector((T + 1) * C, 2);
  std::vector<float> out(B * T * C, kNaN);
  encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      for (int c = 0; c < C; ++c) {
        const size_t token = static_cast<size_t>(tokens[b * T + t]);
        EXPECT_EQ(out[(b * T + t) * C + c], wte[token * C + c] + wpe[t * C + c])
            << "b " << b << " t " << t << " c " << c;
      }
    }
  }
}

TEST(Encoder, RejectsTokensOutsideTheVocabulary) {
  const int T = 2, C = 2, V = 3;
  const std::vector<float> wte(V * C, 0.0f), wpe(T * C, 0.0f);
  std::vector<float> out(T * C);
  for (int32_t bad : {-1, V}) {
    const std::vector<int32_t> tokens = {0, bad};
    EXPECT_THROW(encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), 1, T, C, V),
                 Error)
        << bad;
  }
}

TEST(Encoder, GradientMatchesFiniteDifferences) {
  const int B = 2, T = 5, C = 8, V = 11, max_T = 6;
  // Repeated tokens (3 three times) so the scatter into dwte must accumulate.
  const std::vector<int32_t> tokens = {3, 7, 3, 0, 10, 5, 3, 9, 1, 2};
  std::vector<float> wte = normal_vector(V * C, 1);
  std::vector<float> wpe = normal_vector(max_T * C, 2);
  const std::vector<float> weights = normal_vector(B * T * C, 3);
  std::vector<float> out(B * T * C);
  const auto loss = [&] {
    encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V);
    return weighted_sum(out, weights);
  };
  const std::vector<float> dwte0 = normal_vector(wte.size(), 4);  // backward must add to these
  const std::vector<float> dwpe0 = normal_vector(wpe.size(), 5);
  std::vector<float> dwte = dwte0, dwpe = dwpe0;
  encoder_backward(dwte.data(), dwpe.data(), weights.data(), tokens.data(), B, T, C);
  // Unused token rows and the unused position row (t = 5) must stay untouched: exactly 0 added.
  for (int c = 0; c < C; ++c) {
    EXPECT_EQ(dwte[4 * C + c], dwte0[4 * C + c]);
    EXPECT_EQ(dwpe[5 * C + c], dwpe0[5 * C + c]);
  }
  expect_gradient("wte", wte, added(dwte, dwte0), loss);
  expect_gradient("wpe", wpe, added(dwpe, dwpe0), loss);
}

// ---- layernorm ----------------------------------------------------------------------------

TEST(LayerNorm, NormalizesEachRowThenAppliesTheAffinePart) {
  const int B = 3, T = 4, C = 64;
  // Rows with different offsets and scales (up to 100 +- 50) so that a missing centring or
  // scaling is visible.
  std::vector<float> inp = normal_vector(B * T * C, 1);
  for (int r = 0; r < B * T; ++r) {
    const auto offset = static_cast<float>(100.0 * r / (B * T));
    const auto spread = static_cast<float>(0.5 * (r + 1));
    for (int c = 0; c < C; ++c) inp[r * C + c] = offset + spread * inp[r * C + c];
  }
  std::vector<float> ones(C, 1.0f), zeros(C, 0.0f);
  std::vector<float> out(inp.size(), kNaN), mean(B * T, kNaN), rstd(B * T, kNaN);
  layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), ones.data(), zeros.data(), B,
                    T, C);
  for (int r = 0; r < B * T; ++r) {
    double row_mean = 0.0, in_mean = 0.0;
    for (int c = 0; c < C; ++c) {
      row_mean += out[r * C + c];
      in_mean += inp[r * C + c];
    }
    row_mean /= C;
    in_mean /= C;
    double row_var = 0.0, in_var = 0.0;
    for (int c = 0; c < C; ++c) {
      row_var += (out[r * C + c] - row_mean) * (out[r * C + c] - row_mean);
      in_var += (inp[r * C + c] - in_mean) * (inp[r * C + c] - in_mean);
    }
    row_var /= C;  // biased, as LayerNorm uses
    in_var /= C;
    // var(out) = var / (var + eps) exactly; float rounding of the normalised values ~1e-7.
    EXPECT_NEAR(row_mean, 0.0, 1e-6) << "row " << r;
    EXPECT_NEAR(row_var, in_var / (in_var + 1e-5), 1e-5) << "row " << r;
    EXPECT_NEAR(mean[r], in_mean, 1e-6 * std::max(1.0, std::fabs(in_mean))) << "row " << r;
    EXPECT_NEAR(rstd[r], 1.0 / std::sqrt(in_var + 1e-5), 1e-6 / std::sqrt(in_var)) << "row " << r;
  }
  // The affine part: out' = norm * weight + bias elementwise, norm the output above.
  const std::vector<float> weight = normal_vector(C, 2), bias = normal_vector(C, 3);
  std::vector<float> affine(inp.size(), kNaN);
  layernorm_forward(affine.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                    B, T, C);
  for (int r = 0; r < B * T; ++r) {
    for (int c = 0; c < C; ++c) {
      EXPECT_NEAR(affine[r * C + c], out[r * C + c] * weight[c] + bias[c], 1e-5)
          << "row " << r << " col " << c;
    }
  }
}

TEST(LayerNorm, GradientMatchesFiniteDifferences) {
  const int B = 2, T = 5, C = 8;
  std::vector<float> inp = normal_vector(B * T * C, 1);
  std::vector<float> weight = normal_vector(C, 2), bias = normal_vector(C, 3);
  for (float& w : weight) w += 1.0f;
  const std::vector<float> weights = normal_vector(B * T * C, 4);
  std::vector<float> out(inp.size()), mean(B * T), rstd(B * T);
  const auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                      B, T, C);
    return weighted_sum(out, weights);
  };
  loss();
  const std::vector<float> dinp0 = normal_vector(inp.size(), 5);
  const std::vector<float> dweight0 = normal_vector(C, 6), dbias0 = normal_vector(C, 7);
  std::vector<float> dinp = dinp0, dweight = dweight0, dbias = dbias0;
  layernorm_backward(dinp.data(), dweight.data(), dbias.data(), weights.data(), inp.data(),
                     weight.data(), mean.data(), rstd.data(), B, T, C);
  expect_gradient("inp", inp, added(dinp, dinp0), loss);
  expect_gradient("weight", weight, added(dweight, dweight0), loss);
  expect_gradient("bias", bias, added(dbias, dbias0), loss);
}

// ---- matmul and the tied head ---------------------------------------------------------------

// Fast and reference forward + backward on one problem; gradients start from the same random
// values (both must accumulate) and are compared as accumulated and as the added part.
void expect_matmul_fast_matches_reference(int N, int C, int OC, bool with_bias) {
  const std::vector<float> inp = normal_vector(size_of(int64_t{N} * C), 1);
  const std::vector<float> weight = normal_vector(size_of(int64_t{C} * OC), 2, 0.3);
  const std::vector<float> bias = normal_vector(size_of(OC), 3);
  const std::vector<float> dout = normal_vector(size_of(int64_t{N} * OC), 4);
  const float* bias_ptr = with_bias ? bias.data() : nullptr;
  std::vector<float> out_fast(dout.size(), kNaN), out_ref(dout.size(), kNaN);
  matmul_forward(out_fast.data(), inp.data(), weight.data(), bias_ptr, N, C, OC);
  matmul_forward_reference(out_ref.data(), inp.data(), weight.data(), bias_ptr, N, C, OC);
  expect_close("out", out_fast, out_ref);

  const std::vector<float> dinp0 = normal_vector(inp.size(), 5);
  const std::vector<float> dweight0 = normal_vector(weight.size(), 6);
  const std::vector<float> dbias0 = normal_vector(bias.size(), 7);
  std::vector<float> dinp_fast = dinp0, dweight_fast = dweight0, dbias_fast = dbias0;
  std::vector<float> dinp_ref = dinp0, dweight_ref = dweight0, dbias_ref = dbias0;
  matmul_backward(dinp_fast.data(), dweight_fast.data(), with_bias ? dbias_fast.data() : nullptr,
                  dout.data(), inp.data(), weight.data(), N, C, OC);
  matmul_backward_reference(dinp_ref.data(), dweight_ref.data(),
                            with_bias ? dbias_ref.data() : nullptr, dout.data(), inp.data(),
                            weight.data(), N, C, OC);
  expect_close("dinp", added(dinp_fast, dinp0), added(dinp_ref, dinp0));
  expect_close("dweight", added(dweight_fast, dweight0), added(dweight_ref, dweight0));
  EXPECT_LE(relative_max_diff(dinp_fast, dinp_ref), kFastTolerance) << "accumulated dinp";
  EXPECT_LE(relative_max_diff(dweight_fast, dweight_ref), kFastTolerance) << "accumulated dW";
  if (with_bias) {
    expect_close("dbias", added(dbias_fast, dbias0), added(dbias_ref, dbias0));
  } else {
    EXPECT_EQ(dbias_fast, dbias0);  // untouched when there is no bias
  }
}

TEST(Matmul, FastMatchesReference) {
  std::printf(" with bias, N 37, C 29, OC 53\n");
  expect_matmul_fast_matches_reference(37, 29, 53, true);
  std::printf(" without bias, N 64, C 48, OC 17\n");
  expect_matmul_fast_matches_reference(64, 48, 17, false);
  std::printf(" with bias, N 600, C 64, OC 300 (parallel bias passes)\n");
  expect_matmul_fast_matches_reference(600, 64, 300, true);
}

// The reference itself against hand values: out = inp W + b with W stored [C, OC].
TEST(Matmul, ReferenceUsesInOutWeightLayout) {
  const std::vector<float> inp = {1, 2};       // [1, 2]
  const std::vector<float> weight = {1, 2, 3,  // [2, 3]: row i = input channel i
                                     4, 5, 6};
  const std::vector<float> bias = {0.5f, 0, -1};
  std::vector<float> out(3), out_fast(3);
  matmul_forward_reference(out.data(), inp.data(), weight.data(), bias.data(), 1, 2, 3);
  matmul_forward(out_fast.data(), inp.data(), weight.data(), bias.data(), 1, 2, 3);
  EXPECT_EQ(out, (std::vector<float>{9.5f, 12.0f, 14.0f}));
  EXPECT_EQ(out_fast, out);
}

TEST(Matmul, GradientMatchesFiniteDifferences) {
  const int N = 10, C = 8, OC = 12;
  for (bool with_bias : {true, false}) {
    std::printf(" %s bias\n", with_bias ? "with" : "without");
    std::vector<float> inp = normal_vector(N * C, 1);
    std::vector<float> weight = normal_vector(C * OC, 2, 0.3);
    std::vector<float> bias = normal_vector(OC, 3);
    const std::vector<float> weights = normal_vector(N * OC, 4);
    std::vector<float> out(N * OC);
    const auto loss = [&] {
      matmul_forward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, N, C,
                     OC);
      return weighted_sum(out, weights);
    };
    const std::vector<float> dinp0 = normal_vector(inp.size(), 5);
    const std::vector<float> dweight0 = normal_vector(weight.size(), 6);
    const std::vector<float> dbias0 = normal_vector(bias.size(), 7);
    std::vector<float> dinp = dinp0, dweight = dweight0, dbias = dbias0;
    matmul_backward(dinp.data(), dweight.data(), with_bias ? dbias.data() : nullptr, weights.data(),
                    inp.data(), weight.data(), N, C, OC);
    expect_gradient("inp", inp, added(dinp, dinp0), loss);
    expect_gradient("weight", weight, added(dweight, dweight0), loss);
    if (with_bias) expect_gradient("bias", bias, added(dbias, dbias0), loss);
  }
}

TEST(LmHead, FastMatchesReference) {
  const int N = 45, C = 24, V = 67;
  const std::vector<float> inp = normal_vector(N * C, 1);
  const std::vector<float> wte = normal_vector(V * C, 2);
  const std::vector<float> dlogits = normal_vector(N * V, 3);
  std::vector<float> logits_fast(N * V, kNaN), logits_ref(N * V, kNaN);
  lm_head_forward(logits_fast.data(), inp.data(), wte.data(), N, C, V);
  lm_head_forward_reference(logits_ref.data(), inp.data(), wte.data(), N, C, V);
  expect_close("logits", logits_fast, logits_ref);
  // logits[n, v] = inp[n] . wte[v], by hand for one entry.
  double dot = 0.0;
  for (int c = 0; c < C; ++c) dot += double{inp[2 * C + c]} * wte[5 * C + c];
  EXPECT_NEAR(logits_ref[2 * V + 5], dot, 1e-5);

  const std::vector<float> dinp0 = normal_vector(inp.size(), 4);
  const std::vector<float> dwte0 = normal_vector(wte.size(), 5);
  std::vector<float> dinp_fast = dinp0, dwte_fast = dwte0, dinp_ref = dinp0, dwte_ref = dwte0;
  lm_head_backward(dinp_fast.data(), dwte_fast.data(), dlogits.data(), inp.data(), wte.data(), N, C,
                   V);
  lm_head_backward_reference(dinp_ref.data(), dwte_ref.data(), dlogits.data(), inp.data(),
                             wte.data(), N, C, V);
  expect_close("dinp", added(dinp_fast, dinp0), added(dinp_ref, dinp0));
  expect_close("dwte", added(dwte_fast, dwte0), added(dwte_ref, dwte0));
}

TEST(LmHead, GradientMatchesFiniteDifferences) {
  const int N = 10, C = 8, V = 11;
  std::vector<float> inp = normal_vector(N * C, 1);
  std::vector<float> wte = normal_vector(V * C, 2);
  const std::vector<float> weights = normal_vector(N * V, 3);
  std::vector<float> logits(N * V);
  const auto loss = [&] {
    lm_head_forward(logits.data(), inp.data(), wte.data(), N, C, V);
    return weighted_sum(logits, weights);
  };
  const std::vector<float> dinp0 = normal_vector(inp.size(), 4);
  const std::vector<float> dwte0 = normal_vector(wte.size(), 5);
  std::vector<float> dinp = dinp0, dwte = dwte0;
  lm_head_backward(dinp.data(), dwte.data(), weights.data(), inp.data(), wte.data(), N, C, V);
  expect_gradient("inp", inp, added(dinp, dinp0), loss);
  expect_gradient("wte", wte, added(dwte, dwte0), loss);
}

// ---- attention ----------------------------------------------------------------------------

// softmax over t2 <= t of q_t . k_t2 / sqrt(hs), then the weighted sum of v, straight from the
// definition in double: the forward pass's oracle.
void attention_direct(std::vector<double>& out, std::vector<double>& att,
                      const std::vector<float>& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  out.assign(size_of(int64_t{B} * T * C), 0.0);
  att.assign(size_of(int64_t{B} * NH * T * T), 0.0);
  const auto at = [&](int b, int t, int part, int h, int i) {
    return double{qkv[size_of(((int64_t{b} * T + t) * 3 + part) * C + h * hs + i)]};
  };
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        std::vector<double> score(size_of(t + 1));
        double maximum = -1e300;
        for (int t2 = 0; t2 <= t; ++t2) {
          double dot = 0.0;
          for (int i = 0; i < hs; ++i) dot += at(b, t, 0, h, i) * at(b, t2, 1, h, i);
          score[size_of(t2)] = dot / std::sqrt(double(hs));
          maximum = std::max(maximum, score[size_of(t2)]);
        }
        double sum = 0.0;
        for (double& s : score) sum += (s = std::exp(s - maximum));
        for (int t2 = 0; t2 <= t; ++t2) {
          const double a = score[size_of(t2)] / sum;
          att[size_of(((int64_t{b} * NH + h) * T + t) * T + t2)] = a;
          for (int i = 0; i < hs; ++i) {
            out[size_of((int64_t{b} * T + t) * C + h * hs + i)] += a * at(b, t2, 2, h, i);
          }
        }
      }
    }
  }
}

using AttentionForward = void (*)(float*, float*, const float*, int, int, int, int);
using AttentionBackward = void (*)(float*, float*, const float*, const float*, const float*, int,
                                   int, int, int);

void expect_attention_matches_definition(AttentionForward forward, int B, int T, int C, int NH) {
  const std::vector<float> qkv = normal_vector(B * T * 3 * C, 1, 1.5);
  std::vector<float> out(B * T * C, kNaN), att(B * NH * T * T, kNaN);
  forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  std::vector<double> out_direct, att_direct;
  attention_direct(out_direct, att_direct, qkv, B, T, C, NH);
  // float scores and the vectorised exp (<= 2e-7 relative) against double: a few 1e-7.
  double worst_out = 0.0, worst_att = 0.0;
  for (size_t i = 0; i < out.size(); ++i) {
    worst_out = std::max(worst_out, std::fabs(out[i] - out_direct[i]));
  }
  for (size_t i = 0; i < att.size(); ++i) {
    worst_att = std::max(worst_att, std::fabs(att[i] - att_direct[i]));
  }
  EXPECT_LE(worst_out, 1e-5) << "out vs softmax(q k^T / sqrt(hs) + causal mask) v";
  EXPECT_LE(worst_att, 1e-6) << "att";
  // Masked entries are exactly zero and every row is a distribution.
  for (int row = 0; row < B * NH * T; ++row) {
    const int t = row % T;
    double sum = 0.0;
    for (int t2 = 0; t2 < T; ++t2) {
      const float a = att[size_of(int64_t{row} * T + t2)];
      if (t2 > t) {
        EXPECT_EQ(a, 0.0f) << "row " << row << " t2 " << t2;
      }
      sum += a;
    }
    EXPECT_NEAR(sum, 1.0, 1e-6) << "row " << row;
  }
  std::printf("  B %d T %d C %d NH %d: max |out - direct| %.2e, max |att - direct| %.2e\n", B, T, C,
              NH, worst_out, worst_att);
}

TEST(Attention, ForwardMatchesTheDefinition) {
  for (AttentionForward forward : {attention_forward, attention_forward_reference}) {
    expect_attention_matches_definition(forward, 2, 7, 12, 3);
    expect_attention_matches_definition(forward, 2, 64, 64, 4);  // above the parallel threshold
  }
}

// The BLAS path against the loops over causal pairs, at the quickstart's shape and an odd one:
// the same att and out, and the same dqkv (accumulated onto the same start) within float
// rounding of differently ordered sums.
TEST(Attention, FastPathMatchesTheReference) {
  // T = 128: two full query blocks; 100: a full and a ragged one; 13: one partial block.
  for (const auto& [B, T, C, NH] :
       {std::array<int, 4>{2, 128, 128, 4}, {2, 100, 48, 2}, {3, 13, 24, 3}}) {
    const std::vector<float> qkv = normal_vector(B * T * 3 * C, 4, 1.5);
    const std::vector<float> dout = normal_vector(B * T * C, 5);
    std::vector<float> out(B * T * C, kNaN), att(B * NH * T * T, kNaN);
    std::vector<float> out_ref = out, att_ref = att;
    attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    attention_forward_reference(out_ref.data(), att_ref.data(), qkv.data(), B, T, C, NH);
    std::vector<float> dqkv = normal_vector(qkv.size(), 6), dqkv_ref = dqkv;
    std::vector<float> scratch(size_of(attention_backward_scratch_floats(B, T, NH)), kNaN);
    attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), B, T, C,
                       NH);
    std::fill(scratch.begin(), scratch.end(), kNaN);
    attention_backward_reference(dqkv_ref.data(), scratch.data(), dout.data(), qkv.data(),
                                 att_ref.data(), B, T, C, NH);
    double worst_out = 0.0, worst_att = 0.0, worst_grad = 0.0, largest_grad = 0.0;
    double largest_out = 0.0;
    for (size_t i = 0; i < out.size(); ++i) {
      worst_out = std::max(worst_out, double(std::fabs(out[i] - out_ref[i])));
      largest_out = std::max(largest_out, double(std::fabs(out_ref[i])));
    }
    for (size_t i = 0; i < att.size(); ++i) worst_att = std::max(worst_att, double(std::fabs(att[i] - att_ref[i])));
    for (size_t i = 0; i < dqkv.size(); ++i) {
      worst_grad = std::max(worst_grad, double(std::fabs(dqkv[i] - dqkv_ref[i])));
      largest_grad = std::max(largest_grad, double(std::fabs(dqkv_ref[i])));
    }
    EXPECT_LE(worst_out, 2e-6 * largest_out) << "B " << B << " T " << T;
    EXPECT_LE(worst_att, 1e-6) << "B " << B << " T " << T;
    EXPECT_LE(worst_grad, 1e-5 * largest_grad) << "B " << B << " T " << T;
    std::printf("  B %d T %d C %d NH %d: fast vs reference: out %.1e att %.1e dqkv %.1e (max %.1f)\n",
                B, T, C, NH, worst_out, worst_att, worst_grad, largest_grad);
  }
}

TEST(Attention, RejectsHeadsThatDoNotDivideChannels) {
  std::vector<float> qkv(3 * 10), out(10), att(1);
  EXPECT_THROW(attention_forward(out.data(), att.data(), qkv.data(), 1, 1, 10, 3), Error);
}

// Changing everything at position t + 1 (its q, k and v) must leave every output at positions
// <= t bit-for-bit unchanged, in every batch row, and must change position t + 1 itself.
TEST(Attention, IsCausal) {
  const int B = 2, T = 6, C = 8, NH = 2;
  const std::vector<float> qkv = normal_vector(B * T * 3 * C, 1);
  std::vector<float> out(B * T * C), att(B * NH * T * T);
  attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  for (int t = 0; t + 1 < T; ++t) {
    std::vector<float> changed = qkv;
    const std::vector<float> noise = normal_vector(3 * C, 100 + t);
    for (int b = 0; b < B; ++b) {
      for (int i = 0; i < 3 * C; ++i)
        changed[size_of((b * T + t + 1) * 3 * C + i)] += noise[size_of(i)];
    }
    std::vector<float> out2(out.size()), att2(att.size());
    attention_forward(out2.data(), att2.data(), changed.data(), B, T, C, NH);
    for (int b = 0; b < B; ++b) {
      for (int t2 = 0; t2 < T; ++t2) {
        const auto first = out.begin() + (b * T + t2) * C;
        const bool same = std::equal(first, first + C, out2.begin() + (b * T + t2) * C);
        if (t2 <= t) {
          EXPECT_TRUE(same) << "changing position " << t + 1 << " moved output " << t2 << " (batch "
                            << b << ")";
        } else if (t2 == t + 1) {
          EXPECT_FALSE(same) << "position " << t + 1 << " did not react to its own input";
        }
      }
      for (int h = 0; h < NH; ++h) {
        for (int t2 = 0; t2 <= t; ++t2) {
          const auto row = ((b * NH + h) * T + t2) * T;
          EXPECT_TRUE(std::equal(att.begin() + row, att.begin() + row + T, att2.begin() + row))
              << "att row " << t2 << " changed with position " << t + 1;
        }
      }
    }
  }
}

TEST(Attention, GradientMatchesFiniteDifferences) {
  const int B = 2, T = 5, C = 8, NH = 2;
  const std::pair<AttentionForward, AttentionBackward> paths[] = {
      {attention_forward, attention_backward},
      {attention_forward_reference, attention_backward_reference}};
  for (const auto& [forward, backward] : paths) {
    std::vector<float> qkv = normal_vector(B * T * 3 * C, 1);
    const std::vector<float> weights = normal_vector(B * T * C, 2);
    std::vector<float> out(B * T * C), att(B * NH * T * T);
    const auto loss = [&] {
      forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
      return weighted_sum(out, weights);
    };
    loss();
    const std::vector<float> dqkv0 = normal_vector(qkv.size(), 3);
    std::vector<float> dqkv = dqkv0;
    std::vector<float> scratch(size_of(attention_backward_scratch_floats(B, T, NH)), kNaN);
    backward(dqkv.data(), scratch.data(), weights.data(), qkv.data(), att.data(), B, T, C, NH);
    expect_gradient("qkv", qkv, added(dqkv, dqkv0), loss);
  }
}

// ---- dense FFN ----------------------------------------------------------------------------

struct Mlp {
  int N, C, H;
  std::vector<float> inp, w1, b1, w2, b2;
  Mlp(int n, int c, int h)
      : N(n),
        C(c),
        H(h),
        inp(normal_vector(size_of(int64_t{n} * c), 1)),
        w1(normal_vector(size_of(int64_t{c} * h), 2, 1.0 / std::sqrt(c))),
        b1(normal_vector(size_of(h), 3, 0.5)),
        w2(normal_vector(size_of(int64_t{h} * c), 4, 1.0 / std::sqrt(h))),
        b2(normal_vector(size_of(c), 5, 0.5)) {}
};

TEST(GeluMlp, FastMatchesReference) {
  Mlp m(70, 32, 96);
  const std::vector<float> dout = normal_vector(m.inp.size(), 6);
  const size_t hidden = size_of(int64_t{m.N} * m.H);
  struct Run {
    std::vector<float> out, pre, act, dinp, dw1, db1, dw2, db2, d_hidden;
  };
  const std::vector<float> dw1_0 = normal_vector(m.w1.size(), 7),
                           db1_0 = normal_vector(m.b1.size(), 8);
  const std::vector<float> dw2_0 = normal_vector(m.w2.size(), 9),
                           db2_0 = normal_vector(m.b2.size(), 10);
  const auto fresh = [&] {
    return Run{std::vector<float>(m.inp.size(), kNaN),
               std::vector<float>(hidden, kNaN),
               std::vector<float>(hidden, kNaN),
               std::vector<float>(m.inp.size(), kNaN),
               dw1_0,
               db1_0,
               dw2_0,
               db2_0,
               std::vector<float>(hidden, kNaN)};
  };
  Run fast = fresh(), ref = fresh();
  gelu_mlp_forward(fast.out.data(), fast.pre.data(), fast.act.data(), m.inp.data(), m.w1.data(),
                   m.b1.data(), m.w2.data(), m.b2.data(), m.N, m.C, m.H);
  gelu_mlp_forward_reference(ref.out.data(), ref.pre.data(), ref.act.data(), m.inp.data(),
                             m.w1.data(), m.b1.data(), m.w2.data(), m.b2.data(), m.N, m.C, m.H);
  expect_close("out", fast.out, ref.out);
  expect_close("hidden_pre", fast.pre, ref.pre);
  expect_close("hidden_act", fast.act, ref.act);
  gelu_mlp_backward(fast.dinp.data(), fast.dw1.data(), fast.db1.data(), fast.dw2.data(),
                    fast.db2.data(), fast.d_hidden.data(), dout.data(), m.inp.data(),
                    fast.pre.data(), fast.act.data(), m.w1.data(), m.w2.data(), m.N, m.C, m.H);
  gelu_mlp_backward_reference(ref.dinp.data(), ref.dw1.data(), ref.db1.data(), ref.dw2.data(),
                              ref.db2.data(), ref.d_hidden.data(), dout.data(), m.inp.data(),
                              ref.pre.data(), ref.act.data(), m.w1.data(), m.w2.data(), m.N, m.C,
                              m.H);
  expect_close("dinp", fast.dinp, ref.dinp);
  expect_close("dw1", added(fast.dw1, dw1_0), added(ref.dw1, dw1_0));
  expect_close("db1", added(fast.db1, db1_0), added(ref.db1, db1_0));
  expect_close("dw2", added(fast.dw2, dw2_0), added(ref.dw2, dw2_0));
  expect_close("db2", added(fast.db2, db2_0), added(ref.db2, db2_0));
}

TEST(GeluMlp, GradientMatchesFiniteDifferences) {
  Mlp m(10, 8, 16);
  const std::vector<float> weights = normal_vector(m.inp.size(), 6);
  const size_t hidden = size_of(int64_t{m.N} * m.H);
  std::vector<float> out(m.inp.size()), pre(hidden), act(hidden);
  const auto loss = [&] {
    gelu_mlp_forward(out.data(), pre.data(), act.data(), m.inp.data(), m.w1.data(), m.b1.data(),
                     m.w2.data(), m.b2.data(), m.N, m.C, m.H);
    return weighted_sum(out, weights);
  };
  loss();
  const std::vector<float> dw1_0 = normal_vector(m.w1.size(), 7),
                           db1_0 = normal_vector(m.b1.size(), 8);
  const std::vector<float> dw2_0 = normal_vector(m.w2.size(), 9),
                           db2_0 = normal_vector(m.b2.size(), 10);
  std::vector<float> dinp(m.inp.size(), kNaN);  // overwritten, by contract
  std::vector<float> dw1 = dw1_0, db1 = db1_0, dw2 = dw2_0, db2 = db2_0, d_hidden(hidden, kNaN);
  gelu_mlp_backward(dinp.data(), dw1.data(), db1.data(), dw2.data(), db2.data(), d_hidden.data(),
                    weights.data(), m.inp.data(), pre.data(), act.data(), m.w1.data(), m.w2.data(),
                    m.N, m.C, m.H);
  expect_gradient("inp", m.inp, dinp, loss);
  expect_gradient("w1", m.w1, added(dw1, dw1_0), loss);
  expect_gradient("b1", m.b1, added(db1, db1_0), loss);
  expect_gradient("w2", m.w2, added(dw2, dw2_0), loss);
  expect_gradient("b2", m.b2, added(db2, db2_0), loss);
}

// ---- residual -----------------------------------------------------------------------------

TEST(Residual, ForwardAddsAndBackwardAccumulatesIntoBoth) {
  const int64_t N = 40;
  std::vector<float> a = normal_vector(N, 1), b = normal_vector(N, 2);
  const std::vector<float> weights = normal_vector(N, 3);
  std::vector<float> out(N, kNaN);
  residual_forward(out.data(), a.data(), b.data(), N);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], a[i] + b[i]) << i;
  const auto loss = [&] {
    residual_forward(out.data(), a.data(), b.data(), N);
    return weighted_sum(out, weights);
  };
  const std::vector<float> da0 = normal_vector(N, 4), db0 = normal_vector(N, 5);
  std::vector<float> da = da0, db = db0;
  residual_backward(da.data(), db.data(), weights.data(), N);
  expect_gradient("inp1", a, added(da, da0), loss);
  expect_gradient("inp2", b, added(db, db0), loss);
}

// ---- cross-entropy ------------------------------------------------------------------------

TEST(CrossEntropy, HandCase) {
  const int N = 3, V = 3;
  const std::vector<float> logits = {1,  2,   3,   // target 0
                                     0,  0,   0,   // target 2
                                     10, -10, 0};  // target 1: p ~ 2e-9, loss ~ 20
  const std::vector<int32_t> targets = {0, 2, 1};
  std::vector<float> losses(N, kNaN), probs(N * V, kNaN);
  crossentropy_softmax_forward(losses.data(), probs.data(), logits.data(), targets.data(), N, V);
  // -log softmax at the target, worked out in double:
  //   log(e + e^2 + e^3) - 1 = 2.40760596444438;  log 3 = 1.09861228866811;
  //   log(e^10 + e^-10 + 1) + 10 = 20.0000454009603.
  EXPECT_NEAR(losses[0], 2.40760596444438, 1e-6);
  EXPECT_NEAR(losses[1], 1.09861228866811, 1e-6);
  EXPECT_NEAR(losses[2], 20.0000454009603, 2e-5);
  EXPECT_NEAR(probs[0], 0.0900305731703805, 1e-7);
  EXPECT_NEAR(probs[1], 0.244728471054798, 1e-7);
  EXPECT_NEAR(probs[2], 0.665240955774822, 1e-7);
  for (int v = 0; v < V; ++v) EXPECT_NEAR(probs[size_of(3 + v)], 1.0 / 3.0, 1e-7);

  // dlogits = (probs - onehot) * dloss / N, written (not accumulated).
  const float dloss = 0.5f;
  std::vector<float> dlogits(N * V, 123.0f);
  crossentropy_softmax_backward(dlogits.data(), probs.data(), targets.data(), dloss, N, V);
  for (int n = 0; n < N; ++n) {
    for (int v = 0; v < V; ++v) {
      const size_t i = size_of(n * V + v);
      const double expected = (probs[i] - (v == targets[size_of(n)] ? 1.0 : 0.0)) * dloss / N;
      EXPECT_NEAR(dlogits[i], expected, 1e-7) << "row " << n << " v " << v;
    }
  }
  // In place (dlogits aliasing probs) gives the same values.
  std::vector<float> in_place = probs;
  crossentropy_softmax_backward(in_place.data(), in_place.data(), targets.data(), dloss, N, V);
  EXPECT_EQ(in_place, dlogits);
}

TEST(CrossEntropy, RejectsTargetsOutsideTheVocabulary) {
  const int N = 2, V = 4;
  const std::vector<float> logits(N * V, 0.0f);
  std::vector<float> losses(N), probs(N * V), dlogits(N * V);
  for (int32_t bad : {-1, V}) {
    const std::vector<int32_t> targets = {1, bad};
    EXPECT_THROW(crossentropy_softmax_forward(losses.data(), probs.data(), logits.data(),
                                              targets.data(), N, V),
                 Error)
        << bad;
    EXPECT_THROW(
        crossentropy_softmax_backward(dlogits.data(), probs.data(), targets.data(), 1.0f, N, V),
        Error)
        << bad;
  }
}

TEST(CrossEntropy, GradientOfMeanLossMatchesFiniteDifferences) {
  const int N = 10, V = 11;
  std::vector<float> logits = normal_vector(N * V, 1, 2.0);
  std::vector<int32_t> targets(N);
  for (int n = 0; n < N; ++n) targets[size_of(n)] = (3 * n + 1) % V;
  std::vector<float> losses(N), probs(N * V);
  const auto loss = [&] {  // the mean cross-entropy
    crossentropy_softmax_forward(losses.data(), probs.data(), logits.data(), targets.data(), N, V);
    double sum = 0.0;
    for (float l : losses) sum += l;
    return sum / N;
  };
  loss();
  std::vector<float> dlogits(N * V, kNaN);
  crossentropy_softmax_backward(dlogits.data(), probs.data(), targets.data(), 1.0f, N, V);
  // Rows of (probs - onehot) sum to 1 - 1 = 0 (float rounding of V probabilities: ~1e-7 / N).
  for (int n = 0; n < N; ++n) {
    double row = 0.0;
    for (int v = 0; v < V; ++v) row += dlogits[size_of(n * V + v)];
    EXPECT_NEAR(row, 0.0, 1e-7) << "row " << n;
  }
  expect_gradient("logits", logits, dlogits, loss);
}

// ---- AdamW --------------------------------------------------------------------------------

// Step 1 from m = v = 0: m_hat = g and v_hat = g^2, so the Adam direction is g / (|g| + eps)
// ~ sign(g) and each value below is worked out by hand (lr 0.01, wd 0.1):
//   p = 0.5,  g =  0.1 (decayed):  0.5 - 0.01 (1 + 0.1 * 0.5)     = 0.4895
//   p = -1,   g = -0.2 (no decay): -1 - 0.01 (-1)                  = -0.99
//   p = 2,    g =  0   (decayed):  2 - 0.01 (0 + 0.1 * 2)          = 1.998
//   p = 0.25, g =  3   (no decay): 0.25 - 0.01                     = 0.24
TEST(AdamW, FirstStepByHand) {
  const AdamWSettings settings{
      .learning_rate = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f};
  const std::vector<float> grads = {0.1f, -0.2f, 0.0f, 3.0f};
  const std::vector<uint8_t> mask = {1, 0, 1, 0};
  std::vector<float> params = {0.5f, -1.0f, 2.0f, 0.25f}, m(4, 0.0f), v(4, 0.0f);
  adamw_update(params.data(), m.data(), v.data(), grads.data(), mask.data(), 4, settings, 1);
  EXPECT_NEAR(params[0], 0.4895, 1e-6);
  EXPECT_NEAR(params[1], -0.99, 1e-6);
  EXPECT_NEAR(params[2], 1.998, 1e-6);
  EXPECT_NEAR(params[3], 0.24, 1e-6);
  // m = (1 - beta1) g, v = (1 - beta2) g^2 with the float betas (1 - 0.999f = 0.00099998713).
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(m[i], (1.0 - double{settings.beta1}) * grads[i], 1e-8) << i;
    EXPECT_NEAR(v[i], (1.0 - double{settings.beta2}) * grads[i] * grads[i], 1e-9) << i;
  }
  // Without a mask every element decays; with weight_decay 0 none does.
  params = {0.5f, -1.0f, 2.0f, 0.25f};
  std::fill(m.begin(), m.end(), 0.0f);
  std::fill(v.begin(), v.end(), 0.0f);
  adamw_update(params.data(), m.data(), v.data(), grads.data(), nullptr, 4, settings, 1);
  EXPECT_NEAR(params[1], -1.0 - 0.01 * (-1.0 + 0.1 * -1.0), 1e-6);  // -0.989
  EXPECT_NEAR(params[3], 0.25 - 0.01 * (1.0 + 0.1 * 0.25), 1e-6);   // 0.23975
  AdamWSettings no_decay = settings;
  no_decay.weight_decay = 0.0f;
  params = {0.5f, -1.0f, 2.0f, 0.25f};
  std::fill(m.begin(), m.end(), 0.0f);
  std::fill(v.begin(), v.end(), 0.0f);
  adamw_update(params.data(), m.data(), v.data(), grads.data(), nullptr, 4, no_decay, 1);
  EXPECT_NEAR(params[0], 0.49, 1e-6);
  EXPECT_NEAR(params[2], 2.0, 1e-6);
}

// A later step from non-zero moments, against the formula evaluated in double.
TEST(AdamW, LaterStepMatchesTheFormula) {
  const AdamWSettings settings{
      .learning_rate = 3e-3f, .beta1 = 0.8f, .beta2 = 0.95f, .eps = 1e-6f, .weight_decay = 0.05f};
  const int n = 70000, step = 3;  // above adamw.cpp's parallel threshold (65536)
  const std::vector<float> grads = normal_vector(n, 1);
  const std::vector<float> params0 = normal_vector(n, 2);
  const std::vector<float> m0 = normal_vector(n, 3, 0.1);
  std::vector<float> v0 = normal_vector(n, 4, 0.1);
  for (float& x : v0) x = x * x;
  std::vector<uint8_t> mask(n);
  for (int i = 0; i < n; ++i) mask[size_of(i)] = static_cast<uint8_t>(i % 3 != 0);
  std::vector<float> params = params0, m = m0, v = v0;
  adamw_update(params.data(), m.data(), v.data(), grads.data(), mask.data(), n, settings, step);
  for (size_t i = 0; i < size_of(n); ++i) {
    const double g = grads[i];
    const double beta1 = settings.beta1, beta2 = settings.beta2;  // the float values
    const double m1 = beta1 * m0[i] + (1.0 - beta1) * g;
    const double v1 = beta2 * v0[i] + (1.0 - beta2) * g * g;
    const double m_hat = m1 / (1.0 - std::pow(beta1, step));
    const double v_hat = v1 / (1.0 - std::pow(beta2, step));
    const double wd = mask[i] ? 0.05 : 0.0;
    const double expected =
        params0[i] - 3e-3 * (m_hat / (std::sqrt(v_hat) + 1e-6) + wd * params0[i]);
    // float arithmetic: a few ulp of m, v and the O(1) param; lr * direction is ~3e-3.
    EXPECT_NEAR(m[i], m1, 1e-6) << i;
    EXPECT_NEAR(v[i], v1, 1e-6) << i;
    EXPECT_NEAR(params[i], expected, 2e-6) << i;
  }
}

TEST(AdamW, RejectsStepZero) {
  float p = 1, m = 0, v = 0, g = 1;
  EXPECT_THROW(adamw_update(&p, &m, &v, &g, nullptr, 1, AdamWSettings{}, 0), Error);
}

// grad_scale folds averaging and clipping into the update: scaling the gradient inside gives
// the same bits as handing over the gradient already scaled (one float product either way).
TEST(AdamW, GradScaleEqualsScaledGradients) {
  const int64_t n = 100000;  // above the parallel threshold
  const std::vector<float> grads = normal_vector(size_of(n), 31);
  const std::vector<float> start = normal_vector(size_of(n), 32);
  std::vector<uint8_t> mask(size_of(n));
  for (int64_t i = 0; i < n; ++i) mask[size_of(i)] = static_cast<uint8_t>(i % 3 != 0);
  AdamWSettings settings{1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f};
  settings.grad_scale = 0.3f;
  std::vector<float> p1 = start, m1(size_of(n), 0.1f), v1(size_of(n), 0.2f);
  adamw_update(p1.data(), m1.data(), v1.data(), grads.data(), mask.data(), n, settings, 3);
  std::vector<float> scaled(grads);
  for (float& g : scaled) g *= 0.3f;
  settings.grad_scale = 1.0f;
  std::vector<float> p2 = start, m2(size_of(n), 0.1f), v2(size_of(n), 0.2f);
  adamw_update(p2.data(), m2.data(), v2.data(), scaled.data(), mask.data(), n, settings, 3);
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(m1, m2);
  EXPECT_EQ(v1, v2);
  EXPECT_NE(p1, start);
}

// adamw.cpp has one loop for a mask and one without: an all-ones mask and no mask decay every
// element alike, bit for bit, and an all-zeros mask equals weight_decay = 0.
TEST(AdamW, MaskedAndUnmaskedLoopsAgree) {
  const int64_t n = 100003;  // above the parallel threshold, with a vector tail
  const std::vector<float> grads = normal_vector(size_of(n), 41);
  const std::vector<float> start = normal_vector(size_of(n), 42);
  const AdamWSettings settings{1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f};
  AdamWSettings no_decay = settings;
  no_decay.weight_decay = 0.0f;
  const auto run = [&](const uint8_t* mask, const AdamWSettings& s) {
    std::vector<float> p = start, m(size_of(n), 0.1f), v(size_of(n), 0.2f);
    adamw_update(p.data(), m.data(), v.data(), grads.data(), mask, n, s, 2);
    return p;
  };
  const std::vector<uint8_t> ones(size_of(n), 1), zeros(size_of(n), 0);
  const std::vector<float> decayed = run(nullptr, settings);
  EXPECT_EQ(run(ones.data(), settings), decayed);
  EXPECT_EQ(run(zeros.data(), settings), run(nullptr, no_decay));
  EXPECT_NE(run(zeros.data(), settings), decayed);
}

// Against a plain double loop (the block sums differ from it by double rounding only: relative
// 1e-13 over 10^6 terms), on a length that is not a multiple of the block; and the same bits
// with one thread and a team.
TEST(SumOfSquares, MatchesADoubleLoopAndIgnoresTheThreadCount) {
  const int64_t n = 5 * kSquaresBlock + 123;
  const std::vector<float> x = normal_vector(size_of(n), 33);
  double want = 0.0;
  for (float v : x) want += double{v} * v;
  const int default_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = sum_of_squares(x.data(), n);
  omp_set_num_threads(std::max(default_threads, 2));
  const double team = sum_of_squares(x.data(), n);
  omp_set_num_threads(default_threads);
  EXPECT_NEAR(one, want, 1e-12 * want);
  EXPECT_EQ(one, team);
  EXPECT_EQ(sum_of_squares(x.data(), 0), 0.0);
  EXPECT_EQ(sum_of_squares(x.data(), 1), double{x[0]} * x[0]);
}

// ---- threads ------------------------------------------------------------------------------

// On shapes above every parallel threshold, the OpenMP paths must give bit-identical results
// with one thread and with the default team (layers.hpp promises thread-count independence:
// every sum has a fixed order). Catches races and reductions split across threads.
TEST(Threads, ParallelPathsMatchOneThreadBitForBit) {
  const int B = 4, T = 64, C = 256, NH = 4, V = 300;
  const int N = B * T;
  const std::vector<float> x = normal_vector(size_of(N * C), 1);
  const std::vector<float> qkv = normal_vector(size_of(N * 3 * C), 2);
  const std::vector<float> dout = normal_vector(size_of(N * C), 3);
  const std::vector<float> weight = normal_vector(size_of(C), 4),
                           bias = normal_vector(size_of(C), 5);
  const std::vector<float> wte = normal_vector(size_of(V * C), 6),
                           wpe = normal_vector(size_of(T * C), 7);
  const std::vector<float> logits = normal_vector(size_of(N * V), 8, 3.0);
  std::vector<int32_t> tokens(size_of(N));
  for (int n = 0; n < N; ++n) tokens[size_of(n)] = (n * 37 + 11) % V;

  struct Outputs {
    std::vector<float> ln_out, mean, rstd, dx, dweight, dbias, att_out, att, dqkv, emb, dwte, dwpe,
        losses, probs, dlogits, sum, da, db, mm_out, mm_dx, mm_dw, mm_db, head, head_dx,
        head_dwte, mlp_out, mlp_dx, mlp_dw1, mlp_db1, mlp_dw2, mlp_db2;
  };
  // Linear layer, tied head and dense FFN shapes of several tiles and row blocks.
  const int H = 4 * C;
  const std::vector<float> w_mm = normal_vector(size_of(C * 3 * C), 9),
                           b_mm = normal_vector(size_of(3 * C), 10);
  const std::vector<float> dout3 = normal_vector(size_of(N * 3 * C), 11);
  const std::vector<float> w1 = normal_vector(size_of(C * H), 12, 0.05),
                           b1 = normal_vector(size_of(H), 13),
                           w2 = normal_vector(size_of(H * C), 14, 0.05),
                           b2 = normal_vector(size_of(C), 15);
  const auto run_all = [&] {
    Outputs o;
    o.ln_out.resize(size_of(N * C));
    o.mean.resize(size_of(N));
    o.rstd.resize(size_of(N));
    layernorm_forward(o.ln_out.data(), o.mean.data(), o.rstd.data(), x.data(), weight.data(),
                      bias.data(), B, T, C);
    o.dx.assign(size_of(N * C), 0.0f);
    o.dweight.assign(size_of(C), 0.0f);
    o.dbias.assign(size_of(C), 0.0f);
    layernorm_backward(o.dx.data(), o.dweight.data(), o.dbias.data(), dout.data(), x.data(),
                       weight.data(), o.mean.data(), o.rstd.data(), B, T, C);
    o.att_out.resize(size_of(N * C));
    o.att.resize(size_of(B * NH * T * T));
    attention_forward(o.att_out.data(), o.att.data(), qkv.data(), B, T, C, NH);
    o.dqkv.assign(qkv.size(), 0.0f);
    std::vector<float> scratch(size_of(attention_backward_scratch_floats(B, T, NH)));
    attention_backward(o.dqkv.data(), scratch.data(), dout.data(), qkv.data(), o.att.data(), B, T,
                       C, NH);
    o.emb.resize(size_of(N * C));
    encoder_forward(o.emb.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V);
    o.dwte.assign(wte.size(), 0.0f);
    o.dwpe.assign(wpe.size(), 0.0f);
    encoder_backward(o.dwte.data(), o.dwpe.data(), dout.data(), tokens.data(), B, T, C);
    o.losses.resize(size_of(N));
    o.probs.resize(logits.size());
    crossentropy_softmax_forward(o.losses.data(), o.probs.data(), logits.data(), tokens.data(), N,
                                 V);
    o.dlogits.resize(logits.size());
    crossentropy_softmax_backward(o.dlogits.data(), o.probs.data(), tokens.data(), 1.0f, N, V);
    o.sum.resize(x.size());
    residual_forward(o.sum.data(), x.data(), dout.data(), N * C);
    o.da.assign(x.size(), 0.5f);
    o.db.assign(x.size(), -0.5f);
    residual_backward(o.da.data(), o.db.data(), dout.data(), N * C);
    o.mm_out.resize(size_of(N * 3 * C));
    matmul_forward(o.mm_out.data(), x.data(), w_mm.data(), b_mm.data(), N, C, 3 * C);
    o.mm_dx.assign(x.size(), 0.25f);
    o.mm_dw.assign(w_mm.size(), 0.0f);
    o.mm_db.assign(b_mm.size(), 0.0f);
    matmul_backward(o.mm_dx.data(), o.mm_dw.data(), o.mm_db.data(), dout3.data(), x.data(),
                    w_mm.data(), N, C, 3 * C);
    o.head.resize(size_of(N * V));
    lm_head_forward(o.head.data(), x.data(), wte.data(), N, C, V);
    o.head_dx.assign(x.size(), 0.0f);
    o.head_dwte.assign(wte.size(), 0.0f);
    lm_head_backward(o.head_dx.data(), o.head_dwte.data(), logits.data(), x.data(), wte.data(), N,
                     C, V);
    std::vector<float> pre(size_of(N * H)), act(size_of(N * H)), d_hidden(size_of(N * H));
    o.mlp_out.resize(x.size());
    gelu_mlp_forward(o.mlp_out.data(), pre.data(), act.data(), x.data(), w1.data(), b1.data(),
                     w2.data(), b2.data(), N, C, H);
    o.mlp_dx.resize(x.size());
    o.mlp_dw1.assign(w1.size(), 0.0f);
    o.mlp_db1.assign(b1.size(), 0.0f);
    o.mlp_dw2.assign(w2.size(), 0.0f);
    o.mlp_db2.assign(b2.size(), 0.0f);
    gelu_mlp_backward(o.mlp_dx.data(), o.mlp_dw1.data(), o.mlp_db1.data(), o.mlp_dw2.data(),
                      o.mlp_db2.data(), d_hidden.data(), dout.data(), x.data(), pre.data(),
                      act.data(), w1.data(), w2.data(), N, C, H);
    return o;
  };
  const int default_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Outputs one = run_all();
  omp_set_num_threads(std::max(default_threads, 2));  // a team even on a 1-core machine
  const Outputs team = run_all();
  omp_set_num_threads(default_threads);
  EXPECT_EQ(one.ln_out, team.ln_out);
  EXPECT_EQ(one.mean, team.mean);
  EXPECT_EQ(one.rstd, team.rstd);
  EXPECT_EQ(one.dx, team.dx);
  EXPECT_EQ(one.dweight, team.dweight);
  EXPECT_EQ(one.dbias, team.dbias);
  EXPECT_EQ(one.att_out, team.att_out);
  EXPECT_EQ(one.att, team.att);
  EXPECT_EQ(one.dqkv, team.dqkv);
  EXPECT_EQ(one.emb, team.emb);
  EXPECT_EQ(one.dwte, team.dwte);
  EXPECT_EQ(one.dwpe, team.dwpe);
  EXPECT_EQ(one.losses, team.losses);
  EXPECT_EQ(one.probs, team.probs);
  EXPECT_EQ(one.dlogits, team.dlogits);
  EXPECT_EQ(one.sum, team.sum);
  EXPECT_EQ(one.da, team.da);
  EXPECT_EQ(one.db, team.db);
  EXPECT_EQ(one.mm_out, team.mm_out);
  EXPECT_EQ(one.mm_dx, team.mm_dx);
  EXPECT_EQ(one.mm_dw, team.mm_dw);
  EXPECT_EQ(one.mm_db, team.mm_db);
  EXPECT_EQ(one.head, team.head);
  EXPECT_EQ(one.head_dx, team.head_dx);
  EXPECT_EQ(one.head_dwte, team.head_dwte);
  EXPECT_EQ(one.mlp_out, team.mlp_out);
  EXPECT_EQ(one.mlp_dx, team.mlp_dx);
  EXPECT_EQ(one.mlp_dw1, team.mlp_dw1);
  EXPECT_EQ(one.mlp_db1, team.mlp_db1);
  EXPECT_EQ(one.mlp_dw2, team.mlp_dw2);
  EXPECT_EQ(one.mlp_db2, team.mlp_db2);
}

// ---- a whole tiny model ---------------------------------------------------------------------
//
// encoder -> [LN1 -> qkv matmul -> attention -> proj matmul -> residual -> LN2 -> gelu_mlp ->
// residual] -> LN_f -> tied head -> mean cross-entropy, backward through the same chain with
// the gradient conventions of layers.hpp (accumulate, except gelu_mlp's dinp and dlogits).
// Checks that the pieces compose: every parameter's gradient against finite differences of
// the mean loss.
struct TinyModel {
  static constexpr int B = 2, T = 5, C = 8, NH = 2, V = 11, H = 16, max_T = 6;
  static constexpr int N = B * T;
  // Parameter tensors, carved from one vector in this order.
  enum Tensor {
    wte,
    wpe,
    ln1w,
    ln1b,
    wqkv,
    bqkv,
    wproj,
    bproj,
    ln2w,
    ln2b,
    w1,
    b1,
    w2,
    b2,
    lnfw,
    lnfb,
    kTensors
  };
  static constexpr const char* kNames[kTensors] = {"wte",   "wpe",   "ln1w", "ln1b", "wqkv", "bqkv",
                                                   "wproj", "bproj", "ln2w", "ln2b", "w1",   "b1",
                                                   "w2",    "b2",    "lnfw", "lnfb"};
  static constexpr int64_t kSizes[kTensors] = {V * C, max_T* C, C,    C, C * 3 * C, 3 * C, C* C, C,
                                               C,     C,        C* H, H, H* C,      C,     C,    C};
  int64_t offset[kTensors + 1] = {};
  std::vector<float> params, grads;
  std::vector<int32_t> tokens, targets;

  // Activations [N, .] and saved statistics.
  std::vector<float> x0, l1, mean1, rstd1, qkv, att, a, p, x1, l2, mean2, rstd2, pre, act, f, x2,
      lf, meanf, rstdf, logits, probs, losses;

  TinyModel() {
    for (int i = 0; i < kTensors; ++i) offset[i + 1] = offset[i] + kSizes[i];
    params.resize(size_of(offset[kTensors]));
    for (int i = 0; i < kTensors; ++i) {
      const bool is_norm_weight = i == ln1w || i == ln2w || i == lnfw;
      for (int64_t j = 0; j < kSizes[i]; ++j) {
        const double r = random_normal(77, static_cast<uint64_t>(i), static_cast<uint64_t>(j));
        param(i)[j] = static_cast<float>(is_norm_weight ? 1.0 + 0.3 * r : 0.5 * r);
      }
    }
    for (int n = 0; n < N; ++n) {
      tokens.push_back((5 * n + 2) % V);
      targets.push_back((7 * n + 3) % V);
    }
    for (auto* buffer : {&x0, &l1, &a, &p, &x1, &l2, &f, &x2, &lf}) buffer->resize(N * C);
    for (auto* buffer : {&mean1, &rstd1, &mean2, &rstd2, &meanf, &rstdf, &losses})
      buffer->resize(N);
    qkv.resize(N * 3 * C);
    att.resize(B * NH * T * T);
    pre.resize(N * H);
    act.resize(N * H);
    logits.resize(N * V);
    probs.resize(N * V);
  }
  float* param(int i) { return params.data() + offset[i]; }
  float* grad(int i) { return grads.data() + offset[i]; }

  double forward() {
    encoder_forward(x0.data(), tokens.data(), param(wte), param(wpe), B, T, C, V);
    layernorm_forward(l1.data(), mean1.data(), rstd1.data(), x0.data(), param(ln1w), param(ln1b), B,
                      T, C);
    matmul_forward(qkv.data(), l1.data(), param(wqkv), param(bqkv), N, C, 3 * C);
    attention_forward(a.data(), att.data(), qkv.data(), B, T, C, NH);
    matmul_forward(p.data(), a.data(), param(wproj), param(bproj), N, C, C);
    residual_forward(x1.data(), x0.data(), p.data(), N * C);
    layernorm_forward(l2.data(), mean2.data(), rstd2.data(), x1.data(), param(ln2w), param(ln2b), B,
                      T, C);
    gelu_mlp_forward(f.data(), pre.data(), act.data(), l2.data(), param(w1), param(b1), param(w2),
                     param(b2), N, C, H);
    residual_forward(x2.data(), x1.data(), f.data(), N * C);
    layernorm_forward(lf.data(), meanf.data(), rstdf.data(), x2.data(), param(lnfw), param(lnfb), B,
                      T, C);
    lm_head_forward(logits.data(), lf.data(), param(wte), N, C, V);
    crossentropy_softmax_forward(losses.data(), probs.data(), logits.data(), targets.data(), N, V);
    double sum = 0.0;
    for (float l : losses) sum += l;
    return sum / N;
  }

  void backward() {
    grads.assign(params.size(), 0.0f);
    std::vector<float> dlogits(N * V), dlf(N * C, 0.0f), dx2(N * C, 0.0f), dx1(N * C, 0.0f),
        df(N * C, 0.0f), dl2(N * C, kNaN), d_hidden(N * H), dx0(N * C, 0.0f), dp(N * C, 0.0f),
        da(N * C, 0.0f), dqkv(N * 3 * C, 0.0f), dl1(N * C, 0.0f),
        scratch(size_of(attention_backward_scratch_floats(B, T, NH)));
    crossentropy_softmax_backward(dlogits.data(), probs.data(), targets.data(), 1.0f, N, V);
    lm_head_backward(dlf.data(), grad(wte), dlogits.data(), lf.data(), param(wte), N, C, V);
    layernorm_backward(dx2.data(), grad(lnfw), grad(lnfb), dlf.data(), x2.data(), param(lnfw),
                       meanf.data(), rstdf.data(), B, T, C);
    residual_backward(dx1.data(), df.data(), dx2.data(), N * C);
    gelu_mlp_backward(dl2.data(), grad(w1), grad(b1), grad(w2), grad(b2), d_hidden.data(),
                      df.data(), l2.data(), pre.data(), act.data(), param(w1), param(w2), N, C, H);
    layernorm_backward(dx1.data(), grad(ln2w), grad(ln2b), dl2.data(), x1.data(), param(ln2w),
                       mean2.data(), rstd2.data(), B, T, C);
    residual_backward(dx0.data(), dp.data(), dx1.data(), N * C);
    matmul_backward(da.data(), grad(wproj), grad(bproj), dp.data(), a.data(), param(wproj), N, C,
                    C);
    attention_backward(dqkv.data(), scratch.data(), da.data(), qkv.data(), att.data(), B, T, C, NH);
    matmul_backward(dl1.data(), grad(wqkv), grad(bqkv), dqkv.data(), l1.data(), param(wqkv), N, C,
                    3 * C);
    layernorm_backward(dx0.data(), grad(ln1w), grad(ln1b), dl1.data(), x0.data(), param(ln1w),
                       mean1.data(), rstd1.data(), B, T, C);
    encoder_backward(grad(wte), grad(wpe), dx0.data(), tokens.data(), B, T, C);
  }
};

TEST(TinyModel, EveryParameterGradientMatchesFiniteDifferences) {
  TinyModel model;
  const double loss = model.forward();
  EXPECT_TRUE(std::isfinite(loss));
  std::printf("  mean loss %.4f (log V = %.4f)\n", loss, std::log(double{TinyModel::V}));
  model.backward();
  const auto forward = [&] { return model.forward(); };
  for (int i = 0; i < TinyModel::kTensors; ++i) {
    if (i == TinyModel::wpe) {
      // Row max_T - 1 = 5 is never used (T = 5): its gradient must be exactly zero; check the
      // used rows by finite differences.
      for (int c = 0; c < TinyModel::C; ++c) {
        EXPECT_EQ(model.grad(i)[5 * TinyModel::C + c], 0.0f);
      }
      expect_gradient("wpe", model.param(i), model.grad(i), size_of(5 * TinyModel::C), forward);
      continue;
    }
    expect_gradient(TinyModel::kNames[i], model.param(i), model.grad(i),
                    size_of(TinyModel::kSizes[i]), forward);
  }
}

}  // namespace
}  // namespace moebench
