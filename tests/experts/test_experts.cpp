// Experts: parameter layout and initialisation, GELU, the reference path against finite
// differences, and the fast (OpenBLAS + OpenMP) path against the reference.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/experts.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

void fill_normal(std::vector<float>& values, uint64_t seed, uint64_t stream, double stddev) {
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = static_cast<float>(stddev * random_normal(seed, stream, i));
  }
}

double max_abs(const std::vector<float>& values) {
  double result = 0.0;
  for (float v : values) result = std::max(result, std::fabs(double{v}));
  return result;
}

// max |got - want| / max |want|; NaN anywhere (an unwritten output) makes it NaN.
double relative_max_diff(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double diff = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double delta = std::fabs(double{got[i]} - double{want[i]});
    if (std::isnan(delta)) return std::numeric_limits<double>::quiet_NaN();
    diff = std::max(diff, delta);
  }
  return diff / std::max(max_abs(want), 1e-30);
}

// One expert group: shape, expert-major row offsets from per-expert counts, random inputs,
// parameters initialised by expert_params_init plus random (non-zero) biases so that a missing
// bias shows up.
struct Problem {
  ExpertShape shape;
  std::vector<int64_t> row_offsets;  // [E_local + 1]
  int64_t rows = 0;                  // N
  std::vector<float> param_storage;  // expert_param_count
  std::vector<float> in;             // [N, d]
  std::vector<float> d_out;          // [N, d]

  Problem(ExpertShape shape_in, const std::vector<int64_t>& counts, uint64_t seed,
          double input_scale = 1.0)
      : shape(shape_in), row_offsets(counts.size() + 1, 0) {
    std::partial_sum(counts.begin(), counts.end(), row_offsets.begin() + 1);
    rows = row_offsets.back();
    param_storage.resize(static_cast<size_t>(expert_param_count(shape)));
    expert_params_init(params(), shape, seed, 0);
    const int64_t e = shape.num_experts;
    ExpertParams p = params();
    for (int64_t j = 0; j < e * shape.d_hidden; ++j) {
      p.b1[j] = static_cast<float>(0.5 * random_normal(seed, 1000, static_cast<uint64_t>(j)));
    }
    for (int64_t k = 0; k < e * shape.d_model; ++k) {
      p.b2[k] = static_cast<float>(0.5 * random_normal(seed, 1001, static_cast<uint64_t>(k)));
    }
    in.resize(static_cast<size_t>(rows * shape.d_model));
    d_out.resize(in.size());
    fill_normal(in, seed, 1002, input_scale);
    fill_normal(d_out, seed, 1003, 1.0);
  }
  ExpertParams params() { return expert_params_view(param_storage.data(), shape); }
};

// Everything one forward + backward writes. Outputs and scratch start as NaN so that an
// element the code forgets to write (or reads before writing) shows up; gradients start from
// `grad_init` because backward accumulates.
struct Results {
  ExpertShape shape;
  std::vector<float> out, hidden_pre, hidden_act, d_in, d_hidden, grad_storage;

  Results(const Problem& problem, const std::vector<float>& grad_init)
      : shape(problem.shape),
        out(problem.in.size(), kNaN),
        hidden_pre(static_cast<size_t>(problem.rows * shape.d_hidden), kNaN),
        hidden_act(hidden_pre.size(), kNaN),
        d_in(problem.in.size(), kNaN),
        d_hidden(hidden_pre.size(), kNaN),
        grad_storage(grad_init) {}
  ExpertActivations saved() { return {hidden_pre.data(), hidden_act.data()}; }
  ExpertParams grads() { return expert_params_view(grad_storage.data(), shape); }
  std::vector<float> grad_part(size_t offset, size_t count) const {
    return {grad_storage.begin() + static_cast<std::ptrdiff_t>(offset),
            grad_storage.begin() + static_cast<std::ptrdiff_t>(offset + count)};
  }
};

enum class Path { kFast, kReference };

void run_forward(Path path, Results& r, Problem& p) {
  if (path == Path::kFast) {
    experts_forward(r.out.data(), r.saved(), p.in.data(), p.params(), p.row_offsets.data(),
                    p.shape);
  } else {
    experts_forward_reference(r.out.data(), r.saved(), p.in.data(), p.params(),
                              p.row_offsets.data(), p.shape);
  }
}

void run_backward(Path path, Results& r, Problem& p, GradWrite write = GradWrite::accumulate) {
  if (path == Path::kFast) {
    experts_backward(r.d_in.data(), r.grads(), r.d_hidden.data(), p.d_out.data(), p.in.data(),
                     r.saved(), p.params(), p.row_offsets.data(), p.shape, write);
  } else {
    experts_backward_reference(r.d_in.data(), r.grads(), r.d_hidden.data(), p.d_out.data(),
                               p.in.data(), r.saved(), p.params(), p.row_offsets.data(),
                               p.shape, write);
  }
}

// Compares every output and gradient of the fast path with the reference.
//
// Tolerance: the reference accumulates in double, so its error is one float rounding; the
// fast path sums in fp32 over K = d or h (<= 600) terms per output, and over an expert's rows
// (<= 200) for weight gradients, through two chained products and GELU' in the backward.
// Rounding in such sums grows like sqrt(K) * 2^-24 ~ 1e-6 of the tensor's scale for random
// data (worst-case bound K * 2^-24 ~ 3.6e-5), and exp_fast adds a few ulp. 1e-4 of the
// largest reference value is ~3x the worst case and ~60x the largest difference measured
// (1.7e-6), while an indexing, transpose, missing-bias or missing-accumulation bug moves
// values by O(1) of that scale.
constexpr double kFastTolerance = 1e-4;

void expect_fast_matches_reference(Problem& problem) {
  std::vector<float> grad_init(problem.param_storage.size());
  fill_normal(grad_init, 7, 2000, 1.0);  // non-zero: the gradients must be accumulated
  Results fast(problem, grad_init);
  Results reference(problem, grad_init);
  run_forward(Path::kFast, fast, problem);
  run_forward(Path::kReference, reference, problem);
  run_backward(Path::kFast, fast, problem);
  run_backward(Path::kReference, reference, problem);

  const auto check = [](const char* name, const std::vector<float>& got,
                        const std::vector<float>& want) {
    const double diff = relative_max_diff(got, want);
    EXPECT_LE(diff, kFastTolerance) << name << ": max |fast - reference| / max |reference|";
    std::printf("  %-10s max rel diff %.3g (scale %.3g)\n", name, diff, max_abs(want));
  };
  check("out", fast.out, reference.out);
  check("hidden_pre", fast.hidden_pre, reference.hidden_pre);
  check("hidden_act", fast.hidden_act, reference.hidden_act);
  // The fast GELU on its own, elementwise: act = GELU(pre) of the fast path's own pre, against
  // the exact formula. Its error is a few ulp of |u| (exp_fast and the rounding of z), far
  // below the tensor-scale tolerance above, so it gets its own bound: 8 ulp of max(|u|, 1)
  // (measured <= 3; a 1e-4 error in one exp_fast coefficient already gives ~10).
  double worst_ulps = 0.0;
  for (size_t i = 0; i < fast.hidden_pre.size(); ++i) {
    const float u = fast.hidden_pre[i];
    const double error = std::fabs(double{fast.hidden_act[i]} - double{gelu(u)});
    worst_ulps = std::max(worst_ulps, error / (std::max(std::fabs(double{u}), 1.0) * 0x1p-24));
  }
  EXPECT_LE(worst_ulps, 8.0) << "fast GELU vs gelu(), in ulp of max(|u|, 1)";
  std::printf("  fast GELU  max error %.3g ulp of max(|u|, 1)\n", worst_ulps);
  check("d_in", fast.d_in, reference.d_in);

  const ExpertShape& s = problem.shape;
  const size_t e = static_cast<size_t>(s.num_experts);
  const size_t d = static_cast<size_t>(s.d_model);
  const size_t h = static_cast<size_t>(s.d_hidden);
  size_t offset = 0;
  for (auto [name, count] : {std::pair{"grad w1", e * d * h}, std::pair{"grad b1", e * h},
                             std::pair{"grad w2", e * h * d}, std::pair{"grad b2", e * d}}) {
    // Compare the change, not the accumulated value, so the random start does not hide it.
    std::vector<float> fast_delta = fast.grad_part(offset, count);
    std::vector<float> reference_delta = reference.grad_part(offset, count);
    for (size_t i = 0; i < count; ++i) {
      fast_delta[i] -= grad_init[offset + i];
      reference_delta[i] -= grad_init[offset + i];
    }
    const double accumulated = relative_max_diff(fast.grad_part(offset, count),
                                                 reference.grad_part(offset, count));
    EXPECT_LE(accumulated, kFastTolerance) << name << " (accumulated onto a random start)";
    check(name, fast_delta, reference_delta);
    offset += count;
  }
}

TEST(ExpertParams, CountAndViewLayout) {
  const ExpertShape shape{3, 5, 7};
  EXPECT_EQ(expert_param_count(shape), 3 * (5 * 7 + 7 + 7 * 5 + 5));
  std::vector<float> storage(static_cast<size_t>(expert_param_count(shape)));
  const ExpertParams p = expert_params_view(storage.data(), shape);
  EXPECT_EQ(p.w1, storage.data());
  EXPECT_EQ(p.b1, storage.data() + 3 * 5 * 7);
  EXPECT_EQ(p.w2, storage.data() + 3 * 5 * 7 + 3 * 7);
  EXPECT_EQ(p.b2, storage.data() + 3 * 5 * 7 + 3 * 7 + 3 * 7 * 5);
  EXPECT_EQ(p.b2 + 3 * 5, storage.data() + storage.size());
}

// Expert g must get the same weights whichever rank (local group) holds it.
TEST(ExpertParams, InitDependsOnlyOnGlobalExpertIndex) {
  const int d = 8;
  const int h = 12;
  const uint64_t seed = 42;
  const ExpertShape four{4, d, h};  // global experts 0..3 on one rank
  const ExpertShape two{2, d, h};   // global experts 2..3 on another layout
  std::vector<float> storage_four(static_cast<size_t>(expert_param_count(four)));
  std::vector<float> storage_two(static_cast<size_t>(expert_param_count(two)));
  const ExpertParams p4 = expert_params_view(storage_four.data(), four);
  const ExpertParams p2 = expert_params_view(storage_two.data(), two);
  expert_params_init(p4, four, seed, 0);
  expert_params_init(p2, two, seed, 2);

  const auto same = [](const float* a, const float* b, int n) {
    return std::equal(a, a + n, b);
  };
  for (int local = 0; local < 2; ++local) {
    const int global = local + 2;
    EXPECT_TRUE(same(p4.w1 + global * d * h, p2.w1 + local * d * h, d * h)) << "w1 " << global;
    EXPECT_TRUE(same(p4.w2 + global * h * d, p2.w2 + local * h * d, h * d)) << "w2 " << global;
  }
  // Different experts, the two matrices of one expert, and other seeds must differ.
  EXPECT_FALSE(same(p4.w1, p4.w1 + d * h, d * h));
  EXPECT_FALSE(same(p4.w1, p4.w2, d * h));
  std::vector<float> storage_other(storage_two.size());
  const ExpertParams other = expert_params_view(storage_other.data(), two);
  expert_params_init(other, two, seed + 1, 2);
  EXPECT_FALSE(same(other.w1, p2.w1, d * h));
}

TEST(ExpertParams, InitScalesAndZeroBiases) {
  const ExpertShape shape{2, 64, 256};
  std::vector<float> storage(static_cast<size_t>(expert_param_count(shape)), 1.0f);
  const ExpertParams p = expert_params_view(storage.data(), shape);
  expert_params_init(p, shape, 3, 5);
  const auto moments = [](const float* values, int64_t n) {
    double sum = 0.0;
    double sum_sq = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      sum += values[i];
      sum_sq += double{values[i]} * values[i];
    }
    const double mean = sum / static_cast<double>(n);
    return std::pair{mean, std::sqrt(sum_sq / static_cast<double>(n) - mean * mean)};
  };
  const int64_t count = 2 * 64 * 256;  // 32768 samples: std estimate within ~0.4 % (1 sigma)
  const auto [mean1, std1] = moments(p.w1, count);
  const auto [mean2, std2] = moments(p.w2, count);
  EXPECT_NEAR(std1, 1.0 / std::sqrt(64.0), 0.03 / std::sqrt(64.0));
  EXPECT_NEAR(std2, 1.0 / std::sqrt(256.0), 0.03 / std::sqrt(256.0));
  EXPECT_NEAR(mean1, 0.0, 0.03 / std::sqrt(64.0));
  EXPECT_NEAR(mean2, 0.0, 0.03 / std::sqrt(256.0));
  // W1 and W2 come from disjoint counters: no correlation between them index by index
  // (n = 32768 -> the estimate's standard deviation is 0.0055).
  double cross = 0.0;
  for (int64_t i = 0; i < count; ++i) cross += double{p.w1[i]} * p.w2[i];
  EXPECT_NEAR(cross / static_cast<double>(count) / (std1 * std2), 0.0, 0.03);
  for (int64_t j = 0; j < 2 * 256; ++j) ASSERT_EQ(p.b1[j], 0.0f) << j;
  for (int64_t k = 0; k < 2 * 64; ++k) ASSERT_EQ(p.b2[k], 0.0f) << k;
}

// Values of 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))) worked out in double precision.
TEST(Gelu, MatchesHandValues) {
  EXPECT_EQ(gelu(0.0f), 0.0f);
  EXPECT_NEAR(gelu(1.0f), 0.8411919906, 1e-6);
  EXPECT_NEAR(gelu(-1.0f), -0.1588080094, 1e-6);
  EXPECT_NEAR(gelu(0.5f), 0.3457140693, 1e-6);
  EXPECT_NEAR(gelu(2.0f), 1.9545976940, 1e-6);
  EXPECT_NEAR(gelu(-3.0f), -0.0036373920, 1e-8);
  EXPECT_EQ(gelu(10.0f), 10.0f);
  EXPECT_NEAR(gelu(-10.0f), 0.0f, 1e-30);
  EXPECT_EQ(gelu_derivative(0.0f), 0.5f);
  EXPECT_NEAR(gelu_derivative(1.0f), 1.0829640838, 1e-6);
  EXPECT_NEAR(gelu_derivative(-1.0f), -0.0829640838, 1e-6);
}

// Central differences of the float gelu with step 1e-3: rounding noise ~ 2^-24 |gelu| / 1e-3
// ~ 1e-4 at |u| <= 4, truncation ~ 1e-6 |gelu'''|; an error in the derivative formula (a
// missing factor 3 or 0.5) is >= 1e-2 somewhere in this range.
TEST(Gelu, DerivativeMatchesFiniteDifferences) {
  const float step = 1e-3f;
  for (float u = -4.0f; u <= 4.0f; u += 0.125f) {
    const float up = u + step;
    const float down = u - step;
    const double numeric = (double{gelu(up)} - double{gelu(down)}) / (double{up} - double{down});
    EXPECT_NEAR(gelu_derivative(u), numeric, 3e-4) << "u = " << u;
  }
}

// Uneven rows, including empty experts at the start, the middle and the end; d and h not
// multiples of the SIMD width, h spanning three bias-gradient column blocks (256, 256, 88);
// two experts large enough for the threaded elementwise and BLAS paths, the others small.
TEST(ExpertsFast, MatchesReferenceWithUnevenRows) {
  Problem problem(ExpertShape{7, 72, 600}, {0, 150, 0, 7, 1, 200, 0}, 11);
  expect_fast_matches_reference(problem);
}

// Weights of d h = 2^18 floats take 256-row blocks (row_block_rows): an expert of 270 rows is
// a full and a ragged block, and h = 1024 four weight-gradient column blocks.
TEST(ExpertsFast, MatchesReferenceWithLargeWeights) {
  Problem problem(ExpertShape{3, 256, 1024}, {270, 0, 5}, 15);
  expect_fast_matches_reference(problem);
}

// Inputs 30x larger push pre-activations to |u| ~ 100s: GELU saturates (exp_fast clamps) and
// GELU' is 0 or 1; the fast path must still agree with the exact formula. d = 300 spans two
// column blocks of the d-sized bias gradient.
TEST(ExpertsFast, MatchesReferenceAtLargeActivations) {
  Problem problem(ExpertShape{3, 300, 96}, {33, 0, 60}, 12, 30.0);
  expect_fast_matches_reference(problem);
}

// Work is split into fixed row and column blocks, never by the thread count: one thread and a
// team give the same bits for every output and gradient (uneven experts, some of several row
// blocks, h of several column blocks with a ragged last one).
TEST(ExpertsFast, ResultDoesNotDependOnTheThreadCount) {
  Problem problem(ExpertShape{5, 40, 300}, {130, 0, 64, 1, 200}, 14);
  std::vector<float> grad_init(problem.param_storage.size());
  fill_normal(grad_init, 7, 2002, 1.0);
  const int default_threads = omp_get_max_threads();
  std::vector<Results> results;
  for (int threads : {1, std::max(default_threads, 2)}) {
    omp_set_num_threads(threads);
    results.emplace_back(problem, grad_init);
    run_forward(Path::kFast, results.back(), problem);
    run_backward(Path::kFast, results.back(), problem);
  }
  omp_set_num_threads(default_threads);
  EXPECT_EQ(results[0].out, results[1].out);
  EXPECT_EQ(results[0].hidden_act, results[1].hidden_act);
  EXPECT_EQ(results[0].d_in, results[1].d_in);
  EXPECT_EQ(results[0].grad_storage, results[1].grad_storage);
  EXPECT_NE(results[0].grad_storage, grad_init);
}

// No rows at all: nothing is written and gradients stay as they were.
TEST(ExpertsFast, AllExpertsEmptyIsANoOp) {
  Problem problem(ExpertShape{3, 8, 16}, {0, 0, 0}, 13);
  std::vector<float> grad_init(problem.param_storage.size());
  fill_normal(grad_init, 7, 2001, 1.0);
  for (Path path : {Path::kFast, Path::kReference}) {
    Results results(problem, grad_init);
    run_forward(path, results, problem);
    run_backward(path, results, problem);
    EXPECT_EQ(results.grad_storage, grad_init);
  }
}

TEST(ExpertsFast, RejectsDecreasingRowOffsets) {
  const ExpertShape shape{2, 4, 4};
  std::vector<float> storage(static_cast<size_t>(expert_param_count(shape)));
  std::vector<float> buffer(64);
  const int64_t offsets[3] = {0, 3, 2};
  const ExpertActivations saved{buffer.data(), buffer.data()};
  EXPECT_THROW(experts_forward(buffer.data(), saved, buffer.data(),
                               expert_params_view(storage.data(), shape), offsets, shape),
               Error);
  EXPECT_THROW(experts_forward_reference(buffer.data(), saved, buffer.data(),
                                         expert_params_view(storage.data(), shape), offsets,
                                         shape),
               Error);
}

// Analytic gradients of L = sum(out * R) from experts_backward_reference (d_out = R) against
// central differences of L, computed in double from the float reference forward.
// Step 1e-2 on a tiny shape (d = 4, h = 6, values O(1)): truncation error ~ step^2/6 |L'''|
// ~ 1e-5; rounding noise in L ~ sqrt(#outputs) 2^-24 ~ 3e-7, divided by 2 step -> ~2e-5.
// The denominator is the float difference actually applied. Tolerance 5e-4 (1 + |g|).
TEST(ExpertsReference, BackwardMatchesFiniteDifferences) {
  Problem problem(ExpertShape{3, 4, 6}, {2, 0, 3}, 21);
  const std::vector<float>& loss_weights = problem.d_out;  // R: [N, d]
  Results analytic(problem, std::vector<float>(problem.param_storage.size(), 0.0f));
  run_forward(Path::kReference, analytic, problem);
  run_backward(Path::kReference, analytic, problem);

  const auto loss = [&]() {
    Results r(problem, {});
    run_forward(Path::kReference, r, problem);
    double sum = 0.0;
    for (size_t i = 0; i < r.out.size(); ++i) sum += double{r.out[i]} * loss_weights[i];
    return sum;
  };
  const float step = 1e-2f;
  const auto numeric_gradient = [&](float& value) {
    const float saved_value = value;
    const float up = saved_value + step;
    const float down = saved_value - step;
    value = up;
    const double loss_up = loss();
    value = down;
    const double loss_down = loss();
    value = saved_value;
    return (loss_up - loss_down) / (double{up} - double{down});
  };

  double worst = 0.0;
  const auto check = [&](const char* name, std::vector<float>& values, size_t offset,
                         size_t count, const std::vector<float>& gradient) {
    for (size_t i = 0; i < count; ++i) {
      const double numeric = numeric_gradient(values[offset + i]);
      const double exact = gradient[offset + i];
      worst = std::max(worst, std::fabs(numeric - exact) / (1.0 + std::fabs(exact)));
      EXPECT_NEAR(exact, numeric, 5e-4 * (1.0 + std::fabs(exact))) << name << "[" << i << "]";
    }
  };
  check("d_in", problem.in, 0, problem.in.size(), analytic.d_in);
  const size_t e = 3;
  const size_t d = 4;
  const size_t h = 6;
  check("w1", problem.param_storage, 0, e * d * h, analytic.grad_storage);
  check("b1", problem.param_storage, e * d * h, e * h, analytic.grad_storage);
  check("w2", problem.param_storage, e * d * h + e * h, e * h * d, analytic.grad_storage);
  check("b2", problem.param_storage, 2 * e * d * h + e * h, e * d, analytic.grad_storage);
  std::printf("  worst |numeric - analytic| / (1 + |analytic|) = %.3g\n", worst);

  // The empty expert 1 gets exactly zero gradient; the others do not.
  const ExpertParams g = analytic.grads();
  EXPECT_TRUE(std::all_of(g.w1 + d * h, g.w1 + 2 * d * h, [](float v) { return v == 0.0f; }));
  EXPECT_TRUE(std::all_of(g.b2 + d, g.b2 + 2 * d, [](float v) { return v == 0.0f; }));
  EXPECT_GT(max_abs(analytic.grad_storage), 0.1);
}

// Backward accumulates into the gradients (+=) and overwrites d_in: two calls from zero give
// twice the gradients of one call and the same d_in. Tolerance: the second call adds the
// same products in a possibly different blocking, so a few ulp (1e-5 of scale) separate
// 2 g from g + g; overwriting instead of accumulating would miss by 50 %.
TEST(ExpertsBackward, CallingTwiceDoublesParameterGradients) {
  for (Path path : {Path::kFast, Path::kReference}) {
    Problem problem(ExpertShape{4, 24, 40}, {9, 0, 30, 2}, 31);
    Results results(problem, std::vector<float>(problem.param_storage.size(), 0.0f));
    run_forward(path, results, problem);
    run_backward(path, results, problem);
    const std::vector<float> once = results.grad_storage;
    const std::vector<float> d_in_once = results.d_in;
    std::fill(results.d_in.begin(), results.d_in.end(), 123.0f);
    run_backward(path, results, problem);
    std::vector<float> twice_expected(once.size());
    std::transform(once.begin(), once.end(), twice_expected.begin(),
                   [](float v) { return 2.0f * v; });
    EXPECT_LE(relative_max_diff(results.grad_storage, twice_expected), 1e-5)
        << (path == Path::kFast ? "fast" : "reference");
    EXPECT_EQ(results.d_in, d_in_once) << (path == Path::kFast ? "fast" : "reference");
    EXPECT_GT(max_abs(once), 0.1);
  }
}

// GradWrite::overwrite writes every gradient element whatever the buffer held (NaN here, so a
// skipped element fails the comparison), an empty expert's as zeros, and gives the bits of
// accumulating into zeros: the fast path's products differ only in beta, its bias sums only in
// where they start. h = 300 spans two weight-gradient column blocks; expert 1 is empty.
TEST(ExpertsBackward, OverwriteEqualsAccumulatingIntoZeros) {
  for (Path path : {Path::kFast, Path::kReference}) {
    const char* name = path == Path::kFast ? "fast" : "reference";
    Problem problem(ExpertShape{4, 24, 300}, {9, 0, 130, 2}, 32);
    Results accumulated(problem, std::vector<float>(problem.param_storage.size(), 0.0f));
    Results overwritten(problem, std::vector<float>(problem.param_storage.size(), kNaN));
    run_forward(path, accumulated, problem);
    run_forward(path, overwritten, problem);
    run_backward(path, accumulated, problem, GradWrite::accumulate);
    run_backward(path, overwritten, problem, GradWrite::overwrite);
    EXPECT_EQ(overwritten.grad_storage, accumulated.grad_storage) << name;
    EXPECT_EQ(overwritten.d_in, accumulated.d_in) << name;
    const ExpertParams g = overwritten.grads();
    const ExpertShape& s = problem.shape;
    const auto all_zero = [](const float* values, int64_t count) {
      return std::all_of(values, values + count, [](float v) { return v == 0.0f; });
    };
    const int64_t dh = int64_t{s.d_model} * s.d_hidden;
    EXPECT_TRUE(all_zero(g.w1 + dh, dh) && all_zero(g.w2 + dh, dh) &&
                all_zero(g.b1 + s.d_hidden, s.d_hidden) && all_zero(g.b2 + s.d_model, s.d_model))
        << name << ": the empty expert's gradients";
    EXPECT_GT(max_abs(overwritten.grad_storage), 0.1) << name;
  }
}

}  // namespace
}  // namespace moebench
