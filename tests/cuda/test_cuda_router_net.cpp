// GPU router networks (src/cuda/router_net_kernels.cu) against router_forward /
// router_backward (src/routing/router_net.cpp) for the three architectures: logits, saved
// activations, and the increments of d_x and d_params (both accumulated).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "gpu_test_support.hpp"
#include "moebench/router_net.hpp"
#include "router_net_cuda.hpp"

namespace moebench {
namespace {

const bool registered = test::register_gpu_environment();

// Relative to the largest reference value of each tensor. Both sides sum fp32 products in
// different orders (OpenBLAS vs cuBLAS) over K = d, h or T (<= 300) terms through up to three
// chained products, and GELU uses CUDA's expf against the CPU's exp (a few ulp): rounding
// ~ sqrt(K) 2^-24 ~ 1e-6 of the scale. 1e-4 is far above it and far below what a transposed
// operand, a wrong leading dimension, a missing GELU' or a lost accumulation gives (O(1)).
constexpr double kTolerance = 1e-4;

using test::normal;

void check_router(RouterArch arch, int T, int d, int h, int E) {
  SCOPED_TRACE(std::string(to_string(arch)) + " T=" + std::to_string(T));
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  const RouterNetShape shape{arch, d, h, E};
  const size_t P = static_cast<size_t>(router_param_count(shape));
  const size_t A = static_cast<size_t>(router_activation_floats_per_token(shape)) * T;
  std::vector<float> params(P);
  router_params_init(params.data(), shape, 11);
  const std::vector<float> x = normal(static_cast<size_t>(T) * d, 12, 0);
  const std::vector<float> d_logits = normal(static_cast<size_t>(T) * E, 12, 1);
  const std::vector<float> dx_init = normal(x.size(), 12, 2);
  const std::vector<float> dp_init = normal(P, 12, 3);

  std::vector<float> logits(static_cast<size_t>(T) * E), saved(A), scratch(A);
  std::vector<float> dx = dx_init, dp = dp_init;
  router_forward(logits.data(), saved.data(), x.data(), params.data(), T, shape);
  router_backward(dx.data(), dp.data(), scratch.data(), d_logits.data(), x.data(), saved.data(),
                  params.data(), T, shape);

  DeviceArray<float> p_dev = test::to_device(params, stream);
  DeviceArray<float> x_dev = test::to_device(x, stream);
  DeviceArray<float> dz_dev = test::to_device(d_logits, stream);
  DeviceArray<float> dx_dev = test::to_device(dx_init, stream);
  DeviceArray<float> dp_dev = test::to_device(dp_init, stream);
  // NaN-poisoned outputs: an entry the kernels do not write fails the comparison.
  DeviceArray<float> z_dev = test::to_device(std::vector<float>(logits.size(), NAN), stream);
  DeviceArray<float> saved_dev = test::to_device(std::vector<float>(A, NAN), stream);
  DeviceArray<float> scratch_dev(A);
  cuda_router_forward(context.blas(), stream, z_dev.data(), saved_dev.data(), x_dev.data(),
                      p_dev.data(), T, shape);
  cuda_router_backward(context.blas(), stream, dx_dev.data(), dp_dev.data(), scratch_dev.data(),
                       dz_dev.data(), x_dev.data(), saved_dev.data(), p_dev.data(), T, shape);

  const double z_diff = test::relative_max_diff(test::to_host(z_dev.data(), logits.size(), stream),
                                                logits);
  EXPECT_LE(z_diff, kTolerance) << "logits";
  if (A > 0) {
    EXPECT_LE(test::relative_max_diff(test::to_host(saved_dev.data(), A, stream), saved),
              kTolerance)
        << "saved activations";
  }
  // Increments, so that an overwrite instead of += shows.
  const double dx_diff = test::relative_max_diff(
      test::minus(test::to_host(dx_dev.data(), dx.size(), stream), dx_init), test::minus(dx, dx_init));
  const double dp_diff = test::relative_max_diff(
      test::minus(test::to_host(dp_dev.data(), P, stream), dp_init), test::minus(dp, dp_init));
  EXPECT_LE(dx_diff, kTolerance) << "d_x increment";
  EXPECT_LE(dp_diff, kTolerance) << "d_params increment";
  std::printf("  router %s T=%d: max rel diff logits %.2g, d_x %.2g, d_params %.2g\n",
              to_string(arch), T, z_diff, dx_diff, dp_diff);
}

TEST(CudaRouterNet, Linear) {
  check_router(RouterArch::linear, 300, 96, 0, 24);
  check_router(RouterArch::linear, 1, 60, 0, 7);
}

TEST(CudaRouterNet, Mlp) {
  check_router(RouterArch::mlp, 300, 96, 64, 24);
  check_router(RouterArch::mlp, 5, 60, 33, 7);
}

TEST(CudaRouterNet, MlpHadamard) {
  check_router(RouterArch::mlp_hadamard, 300, 96, 64, 24);
  check_router(RouterArch::mlp_hadamard, 5, 60, 33, 7);
}

// T = 0 touches nothing: outputs keep their poison, gradients their values.
TEST(CudaRouterNet, NoTokens) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  const RouterNetShape shape{RouterArch::mlp_hadamard, 16, 8, 4};
  const std::vector<float> params(static_cast<size_t>(router_param_count(shape)), 0.5f);
  DeviceArray<float> p_dev = test::to_device(params, stream);
  DeviceArray<float> dp_dev = test::to_device(params, stream);
  cuda_router_backward(context.blas(), stream, nullptr, dp_dev.data(), nullptr, nullptr, nullptr,
                       nullptr, p_dev.data(), 0, shape);
  cuda_router_forward(context.blas(), stream, nullptr, nullptr, nullptr, p_dev.data(), 0, shape);
  EXPECT_EQ(test::to_host(dp_dev.data(), params.size(), stream), params);
}

}  // namespace
}  // namespace moebench
