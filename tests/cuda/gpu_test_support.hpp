// Shared by the GPU tests (tests/cuda): one CudaContext per test binary over MPI_COMM_WORLD,
// created by a gtest environment inside RUN_ALL_TESTS (so after MPI_Init and destroyed before
// MPI_Finalize), the skip when no GPU is visible, and host <-> device helpers.
//
// Every GPU test starts with MOEBENCH_REQUIRE_GPU(). Without a usable device it calls
// GTEST_SKIP() with "no CUDA device visible on rank ... (<why>)" (or "fewer CUDA devices
// than ranks ..." when several ranks would share one GPU); the decision is collective, so all
// ranks skip together. At the end, if no GPU was usable and no test failed on any rank, rank 0
// prints one line "GPU tests skipped: <reason>", which CTest's SKIP_REGULAR_EXPRESSION
// (tests/CMakeLists.txt) turns into "skipped". CTest lets that expression win over the exit
// code, so the line is printed only when nothing failed: a failing test is never reported as
// skipped. A context that fails to come up on a machine with GPUs is a failure, not a skip.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/cuda.hpp"
#include "moebench/random.hpp"
#include "moebench/routing.hpp"

namespace moebench::test {

// "no CUDA device is visible on rank ..." -> "no CUDA device visible on rank ...".
inline std::string gpu_skip_message(const std::string& reason) {
  const std::string prefix = "no CUDA device is visible";
  if (reason.rfind(prefix, 0) == 0) return "no CUDA device visible" + reason.substr(prefix.size());
  return reason;
}

class GpuEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    try {
      reason_ = cuda_unavailable_reason(MPI_COMM_WORLD);
      if (reason_.empty()) context_ = std::make_unique<CudaContext>(MPI_COMM_WORLD);
    } catch (const std::exception& error) {
      setup_error_ = error.what();
    }
  }
  void TearDown() override {
    context_.reset();
    if (reason_.empty()) return;
    int failed = ::testing::UnitTest::GetInstance()->failed_test_count() > 0 ? 1 : 0;
    int any_failed = 0;
    MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (any_failed == 0 && rank == 0) {
      std::printf("GPU tests skipped: %s\n", gpu_skip_message(reason_).c_str());
      std::fflush(stdout);
    }
  }

  static GpuEnvironment*& instance() {
    static GpuEnvironment* environment = nullptr;
    return environment;
  }
  const std::string& reason() const { return reason_; }
  const std::string& setup_error() const { return setup_error_; }
  CudaContext* context() { return context_.get(); }

 private:
  std::string reason_;
  std::string setup_error_;
  std::unique_ptr<CudaContext> context_;
};

// Registered once per binary by a static initialiser in each test file's translation unit
// (idempotent; gtest owns the environment).
inline bool register_gpu_environment() {
  if (GpuEnvironment::instance() == nullptr) {
    GpuEnvironment::instance() = new GpuEnvironment();
    ::testing::AddGlobalTestEnvironment(GpuEnvironment::instance());
  }
  return true;
}

}  // namespace moebench::test

// Skips the test (all ranks alike) without a usable GPU; fails it when the context could not
// be created; otherwise declares `CudaContext& context`.
#define MOEBENCH_REQUIRE_GPU()                                                               \
  ::moebench::test::GpuEnvironment* moebench_env_ = ::moebench::test::GpuEnvironment::instance(); \
  ASSERT_NE(moebench_env_, nullptr);                                                         \
  if (!moebench_env_->reason().empty()) {                                                    \
    GTEST_SKIP() << ::moebench::test::gpu_skip_message(moebench_env_->reason());             \
  }                                                                                          \
  ASSERT_TRUE(moebench_env_->setup_error().empty())                                          \
      << "CUDA context: " << moebench_env_->setup_error();                                   \
  ::moebench::CudaContext& context = *moebench_env_->context();                              \
  (void)context

namespace moebench::test {

// A routing configuration without balancing: router, E, k, capacity factor.
inline RoutingConfig make_config(RouterKind router, int E, int k, double cf) {
  RoutingConfig config;
  config.router = router;
  config.num_experts = E;
  config.top_k = k;
  config.capacity_factor = cf;
  config.balance = BalanceKind::none;
  return config;
}

template <typename T>
DeviceArray<T> to_device(const std::vector<T>& host, CUstream_st* stream) {
  DeviceArray<T> device(host.size());
  copy_to_device(device.data(), host.data(), host.size() * sizeof(T), stream);
  return device;
}

template <typename T>
std::vector<T> to_host(const T* device, size_t count, CUstream_st* stream) {
  std::vector<T> host(count);
  copy_to_host(host.data(), device, count * sizeof(T), stream);
  return host;
}

// max |got - want| over the arrays (NaN anywhere makes it NaN).
inline double max_abs_diff(const float* got, const float* want, size_t count) {
  double diff = 0.0;
  for (size_t i = 0; i < count; ++i) {
    const double delta = std::fabs(double{got[i]} - double{want[i]});
    if (std::isnan(delta)) return NAN;
    diff = std::max(diff, delta);
  }
  return diff;
}

inline double max_abs(const float* values, size_t count) {
  double result = 0.0;
  for (size_t i = 0; i < count; ++i) result = std::max(result, std::fabs(double{values[i]}));
  return result;
}

// count standard normal floats from (seed, stream).
inline std::vector<float> normal(size_t count, uint64_t seed, uint64_t stream) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = static_cast<float>(random_normal(seed, stream, i));
  return values;
}

// values - base, element by element: what an accumulating output added.
inline std::vector<float> minus(const std::vector<float>& values, const std::vector<float>& base) {
  std::vector<float> result(values.size());
  for (size_t i = 0; i < values.size(); ++i) result[i] = values[i] - base[i];
  return result;
}

// true on every rank of MPI_COMM_WORLD (a collective: every rank calls it). Tests that go on
// to collective work check with it, so that every rank stops or none: a rank returning alone
// would leave the others waiting in an exchange.
inline bool all_ranks(bool value) {
  int local = value ? 1 : 0, all = 0;
  EXPECT_EQ(MPI_Allreduce(&local, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), MPI_SUCCESS);
  return all == 1;
}

// max |got - want| / max |want|.
inline double relative_max_diff(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  const size_t n = std::min(got.size(), want.size());
  return max_abs_diff(got.data(), want.data(), n) / std::max(max_abs(want.data(), n), 1e-30);
}

}  // namespace moebench::test
