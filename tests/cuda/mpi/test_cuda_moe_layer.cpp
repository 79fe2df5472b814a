// The GPU MoE layer (CudaMoELayer, src/cuda/moe_layer_cuda.cpp) against the CPU MoELayer
// under mpirun with P = 1, 2, 4 ranks (one GPU per rank; skipped where a node has fewer GPUs
// than ranks): the same configuration and seed on both backends, every rank with its own
// tokens (a different count per rank), two forward/backward steps, compared:
//  - the parameters each backend initialises from the seed: identical bits;
//  - the routing decisions (experts, kept, positions): identical;
//  - y, dx, the router and expert gradients: within kTolerance of each tensor's scale;
//  - balance = bias: the selection bias after update_balance_bias, identical bits;
//  - the layer's router and expert timings are positive after a step and zero after a reset.
//
// Exact decisions need identical logits. For the linear router the test makes them exact on
// both sides: x holds multiples of 1/8 in [-1, 1] and the router weights multiples of 1/64,
// so every product is a multiple of 2^-9 and every partial sum (|z| < 2^6) is exact in fp32,
// whatever the order of summation. The mlp routers go through GELU (CUDA's expf against the
// CPU's exp), so their logits agree to ~1e-7 relative only, and expert choice ranks tokens by
// p, which goes through expf against fast_exp; these configurations use few tokens, where a
// decision flipping on a difference that small is improbable. It would show as a decision
// mismatch naming the rank (the same every run for these seeds): check for a near-tie there
// before suspecting the kernels.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gpu_test_support.hpp"
#include "moe_layer_cuda.hpp"
#include "moebench/moe_layer.hpp"
#include "moebench/routing.hpp"

namespace moebench {
namespace {

const bool registered = test::register_gpu_environment();

using test::all_ranks;
using test::normal;

// Relative to the largest CPU value of each tensor. The CPU sums products in double or in
// OpenBLAS's fp32 order, cuBLAS in its own, over K = d, h or an expert's rows (<= 2 * 96)
// terms through the expert FFN's two products, GELU and the router's products: rounding
// ~ sqrt(K) 2^-24 ~ 1e-6 of the scale; gates through expf add a few ulp. 1e-4 is far above
// that and far below a dropped assignment, a wrong gate, a lost router-loss gradient or an
// unwritten row (O(1) of the scale).
constexpr double kTolerance = 1e-4;
constexpr int kDModel = 32;
constexpr int kHidden = 48;

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// Multiples of 1 / scale, rounded: exact in fp32 and in every product and sum the test needs.
void quantize(std::vector<float>& values, float scale, float limit) {
  for (float& v : values) v = std::fmin(std::fmax(std::round(v * scale) / scale, -limit), limit);
}

std::vector<float> download(const DeviceArray<float>& device, CUstream_st* stream) {
  return test::to_host(device.data(), device.size(), stream);
}

// bf16 expert products: operands rounded to 8 mantissa bits (<= 2^-9 relative) before fp32
// accumulation; over K <= 48 terms and two chained products the outputs and gradients move by
// a few 1e-3 of their scale (tests/cuda/test_cuda_experts.cpp's simulation: 2e-3 to 4.5e-3 for
// the experts alone), and the router's gradient follows d_gate (a simulation of this layer with
// bf16-rounded expert operands: at most 4.3e-3 for y, 6e-3 for dx, 4.4e-3 for the router
// gradient). 3e-2 keeps a margin and is still far below a missing term or a wrong row (O(1)).
constexpr double kBf16Tolerance = 3e-2;

// Collective: every rank calls it with its own values; true when all ranks were within.
bool within(const char* what, const std::vector<float>& got, const std::vector<float>& want,
            double tolerance) {
  const double diff = test::relative_max_diff(got, want);
  const bool ok = diff <= tolerance;  // false for NaN
  EXPECT_TRUE(ok) << "rank " << world_rank() << ": " << what << " max rel diff " << diff;
  if (world_rank() == 0) std::printf("    %-14s max rel diff %.2g (rank 0)\n", what, diff);
  return all_ranks(ok);
}

// The CPU layer computes in fp32; with bf16 expert products the GPU side is compared with
// the CPU layer of the same configuration in fp32.
void run_layer_case(const std::string& name, const MoELayerConfig& config) {
  SCOPED_TRACE(name);
  const double tolerance =
      config.expert_precision == GemmPrecision::bf16 ? kBf16Tolerance : kTolerance;
  MoELayerConfig cpu_config = config;
  cpu_config.expert_precision = GemmPrecision::fp32;
  MOEBENCH_REQUIRE_GPU();
  const int rank = world_rank();
  if (rank == 0) std::printf("  %s\n", name.c_str());
  const int max_tokens = 96;
  CUstream_st* stream = context.compute_stream();
  MoELayer cpu(cpu_config, MPI_COMM_WORLD, max_tokens);
  CudaMoELayer gpu(config, context, max_tokens);
  const bool learned = has_learned_router(config.routing.router);

  // The same model from the seed on both backends.
  bool same_init = download(gpu.expert_params(), stream) == cpu.expert_params() &&
                   download(gpu.router_params(), stream) == cpu.router_params();
  EXPECT_TRUE(same_init) << "rank " << rank << ": initial parameters differ";
  ASSERT_TRUE(all_ranks(same_init));
  if (learned && config.router_arch == RouterArch::linear) {
    quantize(cpu.router_params(), 64.0f, 1.0f);
    copy_to_device(gpu.router_params().data(), cpu.router_params().data(),
                   gpu.router_params().bytes(), stream);
  }

  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const int T = max_tokens - 8 * rank - 5 * step;  // a different count on every rank
    const uint64_t base = 100 * static_cast<uint64_t>(rank) + 10 * static_cast<uint64_t>(step);
    std::vector<float> x = normal(static_cast<size_t>(T) * kDModel, 71, base);
    quantize(x, 8.0f, 1.0f);
    const std::vector<float> dy = normal(x.size(), 71, base + 1);
    std::vector<int32_t> token_ids(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t) token_ids[t] = static_cast<int32_t>((t * 37 + rank * 11 + step) % 1000);

    std::vector<float> cpu_y(x.size()), cpu_dx(x.size());
    cpu.forward(cpu_y.data(), x.data(), token_ids.data(), T);
    cpu.backward(cpu_dx.data(), dy.data());

    DeviceArray<float> x_dev = test::to_device(x, stream);
    DeviceArray<float> dy_dev = test::to_device(dy, stream);
    DeviceArray<int32_t> ids_dev = test::to_device(token_ids, stream);
    // NaN-poisoned outputs and gradients: whatever the layer does not write fails.
    const std::vector<float> poison(x.size(), NAN);
    DeviceArray<float> y_dev = test::to_device(poison, stream);
    DeviceArray<float> dx_dev = test::to_device(poison, stream);
    std::vector<float> grad_poison(gpu.expert_grads().size(), NAN);
    copy_to_device(gpu.expert_grads().data(), grad_poison.data(), gpu.expert_grads().bytes(), stream);
    grad_poison.assign(gpu.router_grads().size(), NAN);
    copy_to_device(gpu.router_grads().data(), grad_poison.data(), gpu.router_grads().bytes(), stream);

    gpu.forward(y_dev.data(), x_dev.data(), ids_dev.data(), T);
    RoutingPlan plan;
    plan.reserve(config.routing, max_tokens);
    download_plan(plan, gpu.plan(), stream);
    const bool same = plan.expert == cpu.plan().expert && plan.kept == cpu.plan().kept &&
                      plan.position == cpu.plan().position;
    EXPECT_TRUE(same) << "rank " << rank << ": routing decisions differ";
    ASSERT_TRUE(all_ranks(same)) << "routing decisions differ on some rank";
    gpu.backward(dx_dev.data(), dy_dev.data());

    bool ok = within("y", test::to_host(y_dev.data(), x.size(), stream), cpu_y, tolerance);
    ok = within("dx", test::to_host(dx_dev.data(), x.size(), stream), cpu_dx, tolerance) && ok;
    ok = within("expert grads", download(gpu.expert_grads(), stream), cpu.expert_grads(),
                tolerance) && ok;
    if (learned) {
      ok = within("router grads", download(gpu.router_grads(), stream), cpu.router_grads(),
                  tolerance) && ok;
    }
    ASSERT_TRUE(ok);

    // Both phases were timed (CUDA events, read now), and a reset clears them.
    const MoELayerTimings timings = gpu.timings();
    EXPECT_GT(timings.router, 0.0);
    EXPECT_GT(timings.experts, 0.0);
    EXPECT_TRUE(std::isfinite(timings.router) && std::isfinite(timings.experts));
    gpu.reset_counters();
    EXPECT_EQ(gpu.timings().router, 0.0);
    EXPECT_EQ(gpu.timings().experts, 0.0);

    cpu.update_balance_bias(MPI_COMM_WORLD);
    gpu.update_balance_bias(MPI_COMM_WORLD);
    const bool same_bias = gpu.selection_bias() == cpu.selection_bias();
    EXPECT_TRUE(same_bias) << "rank " << rank << ": selection bias differs";
    ASSERT_TRUE(all_ranks(same_bias));
  }
}

MoELayerConfig layer_config(RouterKind router, RouterArch arch, int k, double cf,
                            DispatchMode dispatch) {
  MoELayerConfig config;
  config.routing = test::make_config(router, 8, k, cf);
  config.router_arch = arch;
  config.router_hidden = 24;
  config.d_model = kDModel;
  config.d_hidden = kHidden;
  config.dispatch = dispatch;
  config.seed = 2024;
  return config;
}

TEST(CudaMoELayer, TopkHardLinearAuxAndZLoss) {
  MoELayerConfig config =
      layer_config(RouterKind::topk_hard, RouterArch::linear, 2, 1.0, DispatchMode::ragged);
  config.routing.balance = BalanceKind::aux;
  config.routing.z_loss_coeff = 1e-2f;
  run_layer_case("topk_hard k=2 CF 1, linear, aux + z, ragged", config);
}

TEST(CudaMoELayer, SoftkRenormalisedMlpPadded) {
  MoELayerConfig config =
      layer_config(RouterKind::softk, RouterArch::mlp, 2, 0.8, DispatchMode::padded);
  config.routing.temperature = 0.7f;
  config.routing.renorm_after_drop = true;
  run_layer_case("softk k=2 CF 0.8 renormalised, mlp, padded", config);
}

TEST(CudaMoELayer, Top1MlpHadamardWithSelectionBias) {
  MoELayerConfig config =
      layer_config(RouterKind::top1, RouterArch::mlp_hadamard, 1, 1.25, DispatchMode::ragged);
  config.routing.balance = BalanceKind::bias;
  config.routing.bias_update_rate = 0.05f;
  config.routing.z_loss_coeff = 1e-3f;
  run_layer_case("top1 CF 1.25, mlp_hadamard, bias balance + z, ragged", config);
}

// softk: the gates depend on the logits, so the router's gradient comes through d_gate from
// the bf16 experts' outputs (with topk_hard's constant gates it would be zero on both sides).
TEST(CudaMoELayer, SoftkBf16Experts) {
  MoELayerConfig config =
      layer_config(RouterKind::softk, RouterArch::linear, 2, 1.0, DispatchMode::ragged);
  config.expert_precision = GemmPrecision::bf16;
  run_layer_case("softk k=2 CF 1, linear, bf16 expert products, ragged", config);
}

TEST(CudaMoELayer, HashDropless) {
  run_layer_case("hash k=2 dropless, ragged",
                 layer_config(RouterKind::hash, RouterArch::linear, 2, 0.0, DispatchMode::ragged));
}

TEST(CudaMoELayer, ExpertChoiceLinearPadded) {
  MoELayerConfig config =
      layer_config(RouterKind::expert_choice, RouterArch::linear, 2, 1.0, DispatchMode::padded);
  config.routing.z_loss_coeff = 1e-2f;
  run_layer_case("expert_choice k=2 CF 1, linear, z, padded", config);
}

}  // namespace
}  // namespace moebench
