// GPU expert FFNs (src/cuda/experts_kernels.cu, both GEMM paths) against the CPU reference
// experts_forward_reference / experts_backward_reference (plain loops, double accumulation),
// and the device context's description of itself.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <numeric>
#include <vector>

#include "experts_cuda.hpp"
#include "gpu_test_support.hpp"
#include "moebench/experts.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

const bool registered = test::register_gpu_environment();

// Tolerance, relative to the largest reference value of each tensor. The reference sums in
// double; cuBLAS sums fp32 products over K = d or h (<= 1024) terms, and over an expert's rows
// (<= 400) for the weight gradients, through two chained products and GELU'. Rounding grows
// like sqrt(K) 2^-24 ~ 2e-6 of the scale for random data (worst case K 2^-24 ~ 6e-5); the GPU
// GELU (expf, <= 2 ulp) adds a few ulp. 1e-4 is above the worst case, while a transposed
// operand, a wrong leading dimension, a missing bias or a lost accumulation is O(1).
constexpr double kTolerance = 1e-4;

void fill_normal(std::vector<float>& values, uint64_t seed, uint64_t stream, double stddev) {
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = static_cast<float>(stddev * random_normal(seed, stream, i));
  }
}

struct Problem {
  ExpertShape shape;
  std::vector<int64_t> row_offsets;  // [E + 1]
  int64_t rows = 0;
  std::vector<float> params, grad_init, in, d_out;

  Problem(ExpertShape s, const std::vector<int64_t>& counts, uint64_t seed)
      : shape(s), row_offsets(counts.size() + 1, 0) {
    std::partial_sum(counts.begin(), counts.end(), row_offsets.begin() + 1);
    rows = row_offsets.back();
    params.resize(static_cast<size_t>(expert_param_count(shape)));
    expert_params_init(expert_params_view(params.data(), shape), shape, seed, 0);
    ExpertParams view = expert_params_view(params.data(), shape);
    for (int64_t j = 0; j < int64_t{shape.num_experts} * shape.d_hidden; ++j) {
      view.b1[j] = static_cast<float>(0.5 * random_normal(seed, 1000, static_cast<uint64_t>(j)));
    }
    for (int64_t j = 0; j < int64_t{shape.num_experts} * shape.d_model; ++j) {
      view.b2[j] = static_cast<float>(0.5 * random_normal(seed, 1001, static_cast<uint64_t>(j)));
    }
    grad_init.resize(params.size());
    fill_normal(grad_init, seed, 1004, 1.0);  // non-zero: gradients must be accumulated
    in.resize(static_cast<size_t>(rows * shape.d_model));
    d_out.resize(in.size());
    fill_normal(in, seed, 1002, 1.0);
    fill_normal(d_out, seed, 1003, 1.0);
  }
};

struct Outputs {
  std::vector<float> out, hidden_pre, hidden_act, d_in, grads;
};

Outputs run_reference(const Problem& p) {
  Outputs r;
  const size_t nh = static_cast<size_t>(p.rows * p.shape.d_hidden);
  r.out.resize(p.in.size());
  r.hidden_pre.resize(nh);
  r.hidden_act.resize(nh);
  r.d_in.resize(p.in.size());
  r.grads = p.grad_init;
  std::vector<float> params = p.params, d_hidden(nh);
  const ExpertParams view = expert_params_view(params.data(), p.shape);
  experts_forward_reference(r.out.data(), {r.hidden_pre.data(), r.hidden_act.data()}, p.in.data(),
                            view, p.row_offsets.data(), p.shape);
  experts_backward_reference(r.d_in.data(), expert_params_view(r.grads.data(), p.shape),
                             d_hidden.data(), p.d_out.data(), p.in.data(),
                             {r.hidden_pre.data(), r.hidden_act.data()}, view,
                             p.row_offsets.data(), p.shape);
  return r;
}

Outputs run_gpu(const Problem& p, ExpertGemm gemm, CudaContext& context) {
  CUstream_st* stream = context.compute_stream();
  const size_t nd = p.in.size(), nh = static_cast<size_t>(p.rows * p.shape.d_hidden);
  DeviceArray<float> params = test::to_device(p.params, stream);
  DeviceArray<float> grads = test::to_device(p.grad_init, stream);
  DeviceArray<float> in = test::to_device(p.in, stream);
  DeviceArray<float> d_out = test::to_device(p.d_out, stream);
  DeviceArray<float> out(nd), pre(nh), act(nh), d_in(nd), d_hidden(nh);
  CudaExperts experts(p.shape, context.blas(), stream, gemm);
  const ExpertParams view = expert_params_view(params.data(), p.shape);
  experts.forward(out.data(), {pre.data(), act.data()}, in.data(), view, p.row_offsets.data());
  experts.backward(d_in.data(), expert_params_view(grads.data(), p.shape), d_hidden.data(),
                   d_out.data(), in.data(), {pre.data(), act.data()}, view, p.row_offsets.data());
  Outputs r;
  r.out = test::to_host(out.data(), nd, stream);
  r.hidden_pre = test::to_host(pre.data(), nh, stream);
  r.hidden_act = test::to_host(act.data(), nh, stream);
  r.d_in = test::to_host(d_in.data(), nd, stream);
  r.grads = test::to_host(grads.data(), p.grad_init.size(), stream);
  return r;
}

void expect_gpu_matches_reference(const Problem& p, const Outputs& want, ExpertGemm gemm,
                                  CudaContext& context) {
  SCOPED_TRACE(to_string(gemm));
  const Outputs got = run_gpu(p, gemm, context);
  auto check = [](const char* name, const std::vector<float>& g, const std::vector<float>& w) {
    const double diff = test::relative_max_diff(g, w);
    EXPECT_LE(diff, kTolerance) << name << ": max |gpu - reference| / max |reference|";
    std::printf("  %-10s max rel diff %.3g\n", name, diff);
  };
  std::printf(" %s, E=%d d=%d h=%d N=%lld\n", to_string(gemm), p.shape.num_experts,
              p.shape.d_model, p.shape.d_hidden, static_cast<long long>(p.rows));
  check("out", got.out, want.out);
  check("hidden_pre", got.hidden_pre, want.hidden_pre);
  check("hidden_act", got.hidden_act, want.hidden_act);
  check("d_in", got.d_in, want.d_in);
  // Gradients: compare the change, so the random start does not hide a missing term.
  const size_t E = static_cast<size_t>(p.shape.num_experts), d = static_cast<size_t>(p.shape.d_model),
               h = static_cast<size_t>(p.shape.d_hidden);
  size_t offset = 0;
  for (auto [name, count] : {std::pair{"grad w1", E * d * h}, std::pair{"grad b1", E * h},
                             std::pair{"grad w2", E * h * d}, std::pair{"grad b2", E * d}}) {
    std::vector<float> g(count), w(count);
    for (size_t i = 0; i < count; ++i) {
      g[i] = got.grads[offset + i] - p.grad_init[offset + i];
      w[i] = want.grads[offset + i] - p.grad_init[offset + i];
    }
    check(name, g, w);
    offset += count;
  }
}

TEST(CudaExperts, MatchReferenceWithUnevenAndEmptyExperts) {
  MOEBENCH_REQUIRE_GPU();
  // d and h not multiples of the GEMM tiles; expert 1 empty.
  const Problem problem({4, 60, 150}, {37, 0, 101, 5}, 31);
  const Outputs want = run_reference(problem);
  expect_gpu_matches_reference(problem, want, ExpertGemm::per_expert, context);
  expect_gpu_matches_reference(problem, want, ExpertGemm::grouped, context);
}

TEST(CudaExperts, MatchReferenceAtModelSizes) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({8, 256, 1024}, {200, 13, 0, 400, 96, 250, 1, 160}, 32);
  const Outputs want = run_reference(problem);
  expect_gpu_matches_reference(problem, want, ExpertGemm::per_expert, context);
  expect_gpu_matches_reference(problem, want, ExpertGemm::grouped, context);
}

TEST(CudaExperts, AllExpertsEmptyIsANoOp) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({3, 16, 32}, {0, 0, 0}, 33);
  const Outputs got = run_gpu(problem, ExpertGemm::grouped, context);
  EXPECT_EQ(got.grads, problem.grad_init);  // nothing accumulated
}

TEST(CudaContext, DescribesItsDevice) {
  MOEBENCH_REQUIRE_GPU();
  const CudaDeviceInfo& info = context.info();
  std::printf("  device %d: %s, sm_%d%d, %d SMs, %.1f GiB, peak DRAM %.0f GB/s\n", info.device,
              info.name.c_str(), info.compute_major, info.compute_minor, info.multiprocessors,
              static_cast<double>(info.global_memory_bytes) / (1 << 30),
              info.peak_memory_bandwidth_gbs);
  EXPECT_FALSE(info.name.empty());
  // __match_any_sync (the capacity ranks) needs compute capability 7.0 or later.
  EXPECT_GE(info.compute_major, 7);
  EXPECT_GT(info.multiprocessors, 0);
  EXPECT_GT(info.peak_memory_bandwidth_gbs, 100.0);
  EXPECT_NE(context.compute_stream(), context.comm_stream());
  EXPECT_NE(context.nccl(), nullptr);
  EXPECT_NE(context.blas(), nullptr);
}

// Runs where no GPU is visible (the CI machine): the context refuses with a UsageError that
// names --backend cuda and the fix, on every rank.
TEST(CudaContext, NoDeviceIsAUsageError) {
  const std::string reason = cuda_unavailable_reason(MPI_COMM_WORLD);
  if (reason.empty()) GTEST_SKIP() << "a GPU is visible; this test covers machines without one";
  try {
    CudaContext context(MPI_COMM_WORLD);
    ADD_FAILURE() << "CudaContext came up although: " << reason;
  } catch (const UsageError& error) {
    const std::string message = error.what();
    EXPECT_EQ(message.rfind("--backend cuda: ", 0), 0u) << message;
    EXPECT_NE(message.find("--backend cpu"), std::string::npos) << message;
    std::printf("  %s\n", message.c_str());
  }
}

}  // namespace
}  // namespace moebench
