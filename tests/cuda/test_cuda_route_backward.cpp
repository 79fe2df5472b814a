// cuda_route_backward (src/cuda/routing_kernels.cu) against route_backward
// (src/routing/routing.cpp). Both differentiate the same plan: the GPU's, routed by cuda_route
// and downloaded for the CPU side (its gates, p and logsumexp come from expf, which the CPU
// plan's would differ from by a few 1e-7; test_cuda_routing compares the plans themselves).
// So the two sides read identical inputs and differ only in rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gpu_test_support.hpp"
#include "moebench/check.hpp"
#include "moebench/random.hpp"
#include "moebench/routing.hpp"
#include "routing_cuda.hpp"

namespace moebench {
namespace {

using test::make_config;

const bool registered = test::register_gpu_environment();

std::vector<float> normal(size_t count, uint64_t stream, double stddev) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) {
    values[i] = static_cast<float>(stddev * random_normal(77, stream, i));
  }
  return values;
}

// Tolerance: each dz[t, e] is a sum of at most slots + 2 terms (the gates' and, through p, the
// aux and z losses'), each bounded by max(1, max |d_gate|) and formed with a few float
// roundings (2^-24 each) on either side, in another order or fused on the GPU: at most about
// 4 (slots + 2) 6e-8 max(1, max |d_gate|). 1e-6 (slots + 2) max(1, max |d_gate|) is 4x that,
// while a wrong index, sign, temperature or missing term moves dz by O(p |d_gate|), >= 1e-3
// for most entries of these cases.
void expect_backward_matches_cpu(const std::string& name, const RoutingConfig& config, int T,
                                 CudaContext& context) {
  SCOPED_TRACE(name);
  const int E = config.num_experts;
  CUstream_st* stream = context.compute_stream();
  const std::vector<float> logits = normal(static_cast<size_t>(std::max(T, 1)) * E, 1, 1.5);
  DeviceRoutingPlan plan;
  plan.reserve(config, std::max(T, 1));
  DeviceArray<float> logits_device = test::to_device(logits, stream);
  cuda_route(plan, logits_device.data(), nullptr, nullptr, T, config, stream);
  RoutingPlan host;
  host.reserve(config, std::max(T, 1));
  download_plan(host, plan, stream);

  // dL/d gate: random where kept, 0 elsewhere (as combine_backward leaves it).
  const size_t entries = static_cast<size_t>(T) * host.slots;
  std::vector<float> d_gate = normal(std::max<size_t>(entries, 1), 2, 1.0);
  for (size_t i = 0; i < entries; ++i) {
    if (!host.kept[i]) d_gate[i] = 0.0f;
  }
  std::vector<float> cpu(static_cast<size_t>(T) * E, std::nanf(""));
  route_backward(cpu.data(), d_gate.data(), host, config);

  DeviceArray<float> d_gate_device = test::to_device(d_gate, stream);
  DeviceArray<float> gpu_device(std::max<size_t>(cpu.size(), 1));
  const std::vector<float> poison(gpu_device.size(), std::nanf(""));
  copy_to_device(gpu_device.data(), poison.data(), gpu_device.bytes(), stream);
  cuda_route_backward(gpu_device.data(), d_gate_device.data(), plan, config, stream);
  std::vector<float> gpu = test::to_host(gpu_device.data(), cpu.size(), stream);

  const double scale = std::max(1.0, test::max_abs(d_gate.data(), entries));
  const double bound = 1e-6 * (host.slots + 2) * scale;
  const double diff = test::max_abs_diff(gpu.data(), cpu.data(), cpu.size());
  EXPECT_LE(diff, bound) << "max |d_logits gpu - cpu|";  // NaN (an unwritten entry) fails
  if (T > 0) {
    EXPECT_GT(test::max_abs(cpu.data(), cpu.size()), 1e-3) << "a trivial case";
  }
  std::printf("  %-32s T=%-5d E=%-4d k=%d kept=%-6lld d_logits diff %.2g (bound %.2g)\n",
              name.c_str(), T, E, config.top_k, static_cast<long long>(host.kept_assignments()),
              diff, bound);
}

TEST(CudaRouteBackward, MatchesCpuForEveryLearnedRouter) {
  MOEBENCH_REQUIRE_GPU();
  RoutingConfig top1 = make_config(RouterKind::top1, 8, 1, 1.0);  // drops
  top1.balance = BalanceKind::aux;
  top1.aux_loss_coeff = 0.01f;
  top1.z_loss_coeff = 0.001f;
  expect_backward_matches_cpu("top1 soft gates, aux, z", top1, 3001, context);

  RoutingConfig hard = make_config(RouterKind::top1, 64, 1, 1.25);
  hard.hard_gates = true;
  hard.z_loss_coeff = 0.01f;
  expect_backward_matches_cpu("top1 hard gates, z", hard, 1024, context);

  RoutingConfig topk = make_config(RouterKind::topk_hard, 64, 2, 1.25);
  topk.balance = BalanceKind::aux;
  topk.aux_loss_coeff = 0.1f;
  topk.z_loss_coeff = 0.001f;
  expect_backward_matches_cpu("topk_hard k2, aux, z", topk, 2048, context);

  RoutingConfig softk = make_config(RouterKind::softk, 16, 2, 1.0);
  softk.temperature = 0.7f;
  expect_backward_matches_cpu("softk k2 tau 0.7", softk, 1500, context);

  RoutingConfig renorm = make_config(RouterKind::softk, 16, 4, 0.8);  // heavy dropping
  renorm.renorm_after_drop = true;
  renorm.balance = BalanceKind::aux;
  renorm.aux_loss_coeff = 0.05f;
  expect_backward_matches_cpu("softk k4 renorm, aux", renorm, 1500, context);

  expect_backward_matches_cpu("softk k8 E160", make_config(RouterKind::softk, 160, 8, 1.0), 700,
                              context);

  RoutingConfig expert_choice = make_config(RouterKind::expert_choice, 32, 2, 1.0);
  expert_choice.z_loss_coeff = 0.001f;
  expect_backward_matches_cpu("expert_choice, z", expert_choice, 2000, context);

  expect_backward_matches_cpu("softk T1", make_config(RouterKind::softk, 8, 2, 1.0), 1, context);
  expect_backward_matches_cpu("softk T0", make_config(RouterKind::softk, 8, 2, 1.0), 0, context);
}

// Refusals, all before anything touches the device (they run without a GPU): hash routing
// has no logits; a plan routed under another configuration; a configuration whose gradient
// goes through p, on a plan that carries none.
TEST(CudaRouteBackward, RejectsHashRouting) {
  const RoutingConfig hash = make_config(RouterKind::hash, 8, 2, 1.0);
  DeviceRoutingPlan plan;
  EXPECT_THROW(cuda_route_backward(nullptr, nullptr, plan, hash, nullptr), Error);
}

TEST(CudaRouteBackward, RejectsAPlanOfAnotherConfiguration) {
  const RoutingConfig softk = make_config(RouterKind::softk, 8, 2, 1.0);
  DeviceRoutingPlan plan;  // never routed: 0 experts
  EXPECT_THROW(cuda_route_backward(nullptr, nullptr, plan, softk, nullptr), Error);
}

TEST(CudaRouteBackward, RejectsAPlanWithoutProbabilities) {
  const RoutingConfig top1 = make_config(RouterKind::top1, 8, 1, 1.0);  // gates are p
  DeviceRoutingPlan plan;
  plan.num_experts = 8;
  plan.slots = plan_slots(top1);
  plan.num_tokens = 4;
  plan.has_probabilities = false;
  EXPECT_THROW(cuda_route_backward(nullptr, nullptr, plan, top1, nullptr), Error);
}

}  // namespace
}  // namespace moebench
