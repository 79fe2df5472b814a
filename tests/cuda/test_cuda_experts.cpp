// GPU expert FFNs (src/cuda/experts_kernels.cu, both GEMM paths, fp32 and bf16 operands)
// against the CPU reference experts_forward_reference / experts_backward_reference (plain
// loops, double accumulation), and the device context's description of itself.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <numeric>
#include <string>
#include <tuple>
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

// Tolerance of the bf16 products (GemmPrecision::bf16), relative to the same largest reference
// values. bf16 keeps 8 significant bits: rounding an operand to nearest even changes it by at
// most 2^-9 ~ 2.0e-3 relative, so each product a b of a dot product moves by at most ~2^-8 and,
// for random data, a K-term sum by ~sqrt(K) 2^-9 of the typical term (fp32 accumulation adds
// only ~sqrt(K) 2^-24), i.e. ~2^-9 of the sum's own scale, a few times that at the largest
// element. The outputs chain up to three rounded products (in W1 -> act W2; dy W2^T -> GELU' ->
// dh W1^T, and dh in the weight gradients), each adding its own ~2^-9. A host simulation of
// these products with operands rounded to bf16 (same shapes, scales and row counts) gives
// max |bf16 - exact| / max |exact| of 2e-3 to 4.5e-3 per tensor, so 2e-2 leaves a margin of
// about 4. The bias gradient of b2 sums the fp32 d_out and stays at fp32 accuracy. A
// transposed operand, a wrong leading dimension or row offset, a missing bias or a lost
// accumulation is O(1); the products' shapes and leading dimensions are also pinned down at
// 1e-4 by the fp32 cases (bf16 reads its operands from converted copies, whose row offsets
// RowsStartingAfterZero checks).
constexpr double kBf16Tolerance = 2e-2;

double tolerance(GemmPrecision precision) {
  return precision == GemmPrecision::fp32 ? kTolerance : kBf16Tolerance;
}

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

  // The experts' rows start at row `first` of the buffers (rows before it are not theirs).
  Problem(ExpertShape s, const std::vector<int64_t>& counts, uint64_t seed, int64_t first = 0)
      : shape(s), row_offsets(counts.size() + 1, first) {
    std::partial_sum(counts.begin(), counts.end(), row_offsets.begin() + 1);
    for (size_t e = 1; e < row_offsets.size(); ++e) row_offsets[e] += first;
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

Outputs run_gpu(const Problem& p, ExpertGemm gemm, GemmPrecision precision,
                CudaContext& context) {
  CUstream_st* stream = context.compute_stream();
  const size_t nd = p.in.size(), nh = static_cast<size_t>(p.rows * p.shape.d_hidden);
  DeviceArray<float> params = test::to_device(p.params, stream);
  DeviceArray<float> grads = test::to_device(p.grad_init, stream);
  DeviceArray<float> in = test::to_device(p.in, stream);
  DeviceArray<float> d_out = test::to_device(p.d_out, stream);
  DeviceArray<float> out(nd), pre(nh), act(nh), d_in(nd), d_hidden(nh);
  // Zero, as the reference's: rows before the experts' first row are left alone on both sides.
  for (DeviceArray<float>* a : {&out, &pre, &act, &d_in}) fill_zero(a->data(), a->bytes(), stream);
  CudaExperts experts(p.shape, context.blas(), stream, gemm, precision);
  if (precision == GemmPrecision::bf16) experts.reserve(p.rows);
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
                                  GemmPrecision precision, CudaContext& context) {
  SCOPED_TRACE(std::string(to_string(gemm)) + " " + to_string(precision));
  const Outputs got = run_gpu(p, gemm, precision, context);
  const double limit = tolerance(precision);
  auto check = [limit](const char* name, const std::vector<float>& g,
                       const std::vector<float>& w) {
    const double diff = test::relative_max_diff(g, w);
    EXPECT_LE(diff, limit) << name << ": max |gpu - reference| / max |reference|";
    std::printf("  %-10s max rel diff %.3g (limit %.0e)\n", name, diff, limit);
  };
  std::printf(" %s %s, E=%d d=%d h=%d N=%lld\n", to_string(gemm), to_string(precision),
              p.shape.num_experts, p.shape.d_model, p.shape.d_hidden,
              static_cast<long long>(p.rows));
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
  for (ExpertGemm gemm : {ExpertGemm::per_expert, ExpertGemm::grouped}) {
    expect_gpu_matches_reference(problem, want, gemm, GemmPrecision::fp32, context);
  }
}

// The experts' rows start after row 0 of the buffers (a caller may hand over a slice): every
// operand, fp32 and bf16 copies alike, must be read from the expert's own rows.
TEST(CudaExperts, RowsStartingAfterZero) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({4, 60, 150}, {37, 0, 101, 5}, 33, /*first=*/10);
  const Outputs want = run_reference(problem);
  for (GemmPrecision precision : {GemmPrecision::fp32, GemmPrecision::bf16}) {
    for (ExpertGemm gemm : {ExpertGemm::per_expert, ExpertGemm::grouped}) {
      expect_gpu_matches_reference(problem, want, gemm, precision, context);
    }
  }
}

TEST(CudaExperts, MatchReferenceAtModelSizes) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({8, 256, 1024}, {200, 13, 0, 400, 96, 250, 1, 160}, 32);
  const Outputs want = run_reference(problem);
  for (ExpertGemm gemm : {ExpertGemm::per_expert, ExpertGemm::grouped}) {
    expect_gpu_matches_reference(problem, want, gemm, GemmPrecision::fp32, context);
  }
}

TEST(CudaExperts, Bf16MatchesReferenceWithUnevenAndEmptyExperts) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({4, 60, 150}, {37, 0, 101, 5}, 31);
  const Outputs want = run_reference(problem);
  for (ExpertGemm gemm : {ExpertGemm::per_expert, ExpertGemm::grouped}) {
    expect_gpu_matches_reference(problem, want, gemm, GemmPrecision::bf16, context);
  }
}

TEST(CudaExperts, Bf16MatchesReferenceAtModelSizes) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({8, 256, 1024}, {200, 13, 0, 400, 96, 250, 1, 160}, 32);
  const Outputs want = run_reference(problem);
  for (ExpertGemm gemm : {ExpertGemm::per_expert, ExpertGemm::grouped}) {
    expect_gpu_matches_reference(problem, want, gemm, GemmPrecision::bf16, context);
  }
}

// A bf16 mode that silently multiplied in fp32 would pass the tolerance above. The fp32 and
// bf16 runs of the same inputs must differ by more than fp32 may differ from the reference
// (kTolerance): two fp32 runs are within 2 kTolerance of each other (here identical), while
// bf16 operand rounding moves the outputs by ~2^-9 ~ 2e-3 of their scale (host simulation:
// >= 2e-3 for every tensor below), 10 times 2 kTolerance.
TEST(CudaExperts, Bf16ChangesTheResult) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({4, 60, 150}, {37, 0, 101, 5}, 34);
  // The gradients' change, as in expect_gpu_matches_reference.
  auto grad_change = [&problem](const Outputs& outputs) {
    std::vector<float> change(outputs.grads.size());
    for (size_t i = 0; i < change.size(); ++i) change[i] = outputs.grads[i] - problem.grad_init[i];
    return change;
  };
  const Outputs fp32 = run_gpu(problem, ExpertGemm::per_expert, GemmPrecision::fp32, context);
  const std::vector<float> fp32_grads = grad_change(fp32);
  for (ExpertGemm gemm : {ExpertGemm::per_expert, ExpertGemm::grouped}) {
    SCOPED_TRACE(to_string(gemm));
    const Outputs bf16 = run_gpu(problem, gemm, GemmPrecision::bf16, context);
    const std::vector<float> bf16_grads = grad_change(bf16);
    for (auto [name, got, want] : {std::tuple{"out", &bf16.out, &fp32.out},
                                   std::tuple{"hidden_pre", &bf16.hidden_pre, &fp32.hidden_pre},
                                   std::tuple{"d_in", &bf16.d_in, &fp32.d_in},
                                   std::tuple{"grads", &bf16_grads, &fp32_grads}}) {
      const double diff = test::relative_max_diff(*got, *want);
      EXPECT_GT(diff, 2 * kTolerance) << name << ": bf16 output equals the fp32 one";
      std::printf("  %s %-10s bf16 vs fp32 max rel diff %.3g\n", to_string(gemm), name, diff);
    }
  }
}

TEST(CudaExperts, Bf16RefusesMoreRowsThanReserved) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({4, 60, 150}, {37, 0, 101, 5}, 35);
  CUstream_st* stream = context.compute_stream();
  const size_t nd = problem.in.size();
  const size_t nh = static_cast<size_t>(problem.rows * problem.shape.d_hidden);
  DeviceArray<float> params = test::to_device(problem.params, stream);
  DeviceArray<float> grads = test::to_device(problem.grad_init, stream);
  DeviceArray<float> in = test::to_device(problem.in, stream);
  DeviceArray<float> d_out = test::to_device(problem.d_out, stream);
  DeviceArray<float> out(nd), pre(nh), act(nh), d_in(nd), d_hidden(nh);
  const ExpertParams view = expert_params_view(params.data(), problem.shape);
  const ExpertParams grad_view = expert_params_view(grads.data(), problem.shape);
  CudaExperts experts(problem.shape, context.blas(), stream, ExpertGemm::grouped,
                      GemmPrecision::bf16);
  auto forward = [&] {
    experts.forward(out.data(), {pre.data(), act.data()}, in.data(), view,
                    problem.row_offsets.data());
  };
  auto backward = [&] {
    experts.backward(d_in.data(), grad_view, d_hidden.data(), d_out.data(), in.data(),
                     {pre.data(), act.data()}, view, problem.row_offsets.data());
  };
  EXPECT_EQ(experts.reserved_rows(), 0);
  EXPECT_THROW(forward(), Error);  // nothing reserved
  EXPECT_THROW(backward(), Error);
  EXPECT_THROW(experts.reserve(-1), Error);
  experts.reserve(problem.rows - 1);
  EXPECT_EQ(experts.reserved_rows(), problem.rows - 1);
  EXPECT_THROW(forward(), Error);  // one row too many
  EXPECT_THROW(backward(), Error);
  EXPECT_EQ(test::to_host(grads.data(), problem.grad_init.size(), stream), problem.grad_init);
  experts.reserve(problem.rows);
  EXPECT_NO_THROW(forward());
  EXPECT_NO_THROW(backward());
  experts.reserve(1);  // fewer rows than reserved: keeps the scratch
  EXPECT_EQ(experts.reserved_rows(), problem.rows);
  // fp32 needs no reservation.
  CudaExperts fp32(problem.shape, context.blas(), stream);
  EXPECT_EQ(fp32.precision(), GemmPrecision::fp32);
  EXPECT_NO_THROW(fp32.forward(out.data(), {pre.data(), act.data()}, in.data(), view,
                               problem.row_offsets.data()));
  context.synchronize();
}

TEST(CudaExperts, AllExpertsEmptyIsANoOp) {
  MOEBENCH_REQUIRE_GPU();
  const Problem problem({3, 16, 32}, {0, 0, 0}, 33);
  for (GemmPrecision precision : {GemmPrecision::fp32, GemmPrecision::bf16}) {
    const Outputs got = run_gpu(problem, ExpertGemm::grouped, precision, context);
    EXPECT_EQ(got.grads, problem.grad_init) << to_string(precision);  // nothing accumulated
  }
}

// Runs without a GPU.
TEST(CudaExperts, NamesItsOptions) {
  EXPECT_STREQ(to_string(GemmPrecision::fp32), "fp32");
  EXPECT_STREQ(to_string(GemmPrecision::bf16), "bf16");
  EXPECT_STREQ(to_string(ExpertGemm::grouped), "grouped");
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
