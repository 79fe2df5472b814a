// GPU routing (src/cuda/routing_kernels.cu) against the CPU reference route(): for the same
// logits, experts, kept flags, positions, demand and load must be identical; gates, p,
// logsumexp and the router losses agree within the tolerances stated below. Also the linear
// router's cuBLAS logits against router_forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gpu_test_support.hpp"
#include "moebench/random.hpp"
#include "moebench/routing.hpp"
#include "routing_cuda.hpp"

namespace moebench {
namespace {

using test::make_config;

const bool registered = test::register_gpu_environment();

// Gates and p lie in [0, 1]. The GPU's expf is within 2 ulp and the CPU's fast_exp within
// 2e-7 (relative), and both sum the softmax normaliser in double, so the two sides differ by
// a few 1e-7; 1e-6 leaves 2x margin, while a wrong expert, temperature or renormalisation
// moves a gate by >= 1e-3 for these logits.
constexpr double kGateTolerance = 1e-6;
// logsumexp (|lse| <= ~10 here), relative to max(1, |lse|): the same few-ulp argument.
constexpr double kLogsumexpTolerance = 1e-6;
// aux and z losses are sums of O(T E) such terms in double: relative 1e-5.
constexpr double kLossTolerance = 1e-5;

std::vector<float> normal_logits(int T, int E, uint64_t seed, double stddev) {
  std::vector<float> z(static_cast<size_t>(T) * E);
  for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>(stddev * random_normal(seed, 7, i));
  return z;
}

struct Case {
  std::string name;
  RoutingConfig config;
  int tokens = 0;
  std::vector<float> logits;          // [T, E] (empty for hash)
  std::vector<int32_t> token_ids;     // [T] (hash)
  std::vector<float> selection_bias;  // [E] (balance = bias)
};

// The larger of two differences, NaN winning: std::max(d, NaN) returns d, so a NaN gate or
// logsumexp would pass a tolerance check.
double worse(double worst_so_far, double difference) {
  return std::isnan(difference) || difference > worst_so_far ? difference : worst_so_far;
}

Case learned_case(std::string name, RoutingConfig config, int T, uint64_t seed, double stddev = 1.0) {
  Case c;
  c.name = std::move(name);
  c.config = config;
  c.tokens = T;
  // At least one row: route() wants a logits pointer even for an empty group.
  c.logits = normal_logits(std::max(T, 1), config.num_experts, seed, stddev);
  return c;
}

// Compares the GPU plan of `c` with route(); `plan` may be reused across calls.
void expect_plan_matches_cpu(const Case& c, DeviceRoutingPlan& plan, CudaContext& context) {
  SCOPED_TRACE(c.name);
  const RoutingConfig& config = c.config;
  const int T = c.tokens, E = config.num_experts;
  RoutingPlan cpu;
  cpu.reserve(config, std::max(T, 1));
  route(cpu, c.logits.empty() ? nullptr : c.logits.data(),
        c.token_ids.empty() ? nullptr : c.token_ids.data(),
        c.selection_bias.empty() ? nullptr : c.selection_bias.data(), T, config);

  CUstream_st* stream = context.compute_stream();
  DeviceArray<float> logits = test::to_device(c.logits, stream);
  DeviceArray<int32_t> ids = test::to_device(c.token_ids, stream);
  DeviceArray<float> bias = test::to_device(c.selection_bias, stream);
  cuda_route(plan, c.logits.empty() ? nullptr : logits.data(),
             c.token_ids.empty() ? nullptr : ids.data(),
             c.selection_bias.empty() ? nullptr : bias.data(), T, config, stream);
  RoutingPlan gpu;
  gpu.reserve(config, std::max(T, 1));
  download_plan(gpu, plan, stream);

  ASSERT_EQ(gpu.capacity, cpu.capacity);
  const size_t entries = static_cast<size_t>(T) * cpu.slots;
  int64_t expert_mismatch = 0, kept_mismatch = 0, position_mismatch = 0;
  double gate_diff = 0.0;
  bool reported = false;
  for (size_t i = 0; i < entries; ++i) {
    const bool differs = gpu.expert[i] != cpu.expert[i] || gpu.kept[i] != cpu.kept[i] ||
                         gpu.position[i] != cpu.position[i];
    expert_mismatch += gpu.expert[i] != cpu.expert[i];
    kept_mismatch += gpu.kept[i] != cpu.kept[i];
    position_mismatch += gpu.position[i] != cpu.position[i];
    if (differs && !reported) {
      reported = true;
      ADD_FAILURE() << "first difference at token " << i / cpu.slots << " slot " << i % cpu.slots
                    << ": expert " << gpu.expert[i] << " vs " << cpu.expert[i] << ", kept "
                    << int{gpu.kept[i]} << " vs " << int{cpu.kept[i]} << ", position "
                    << gpu.position[i] << " vs " << cpu.position[i] << " (gpu vs cpu)";
    }
    gate_diff = worse(gate_diff, std::fabs(double{gpu.gate[i]} - double{cpu.gate[i]}));
  }
  EXPECT_EQ(expert_mismatch, 0) << "experts differ";
  EXPECT_EQ(kept_mismatch, 0) << "kept flags differ";
  EXPECT_EQ(position_mismatch, 0) << "positions differ";
  EXPECT_EQ(gpu.demand, cpu.demand);
  EXPECT_EQ(gpu.load, cpu.load);
  EXPECT_LE(gate_diff, kGateTolerance) << "max |gate gpu - gate cpu|";

  const bool probabilities = config.router == RouterKind::top1 ||
                             config.router == RouterKind::expert_choice ||
                             config.balance == BalanceKind::aux || config.z_loss_coeff > 0.0f;
  double p_diff = 0.0, lse_diff = 0.0;
  if (probabilities) {
    p_diff = test::max_abs_diff(gpu.probs.data(), cpu.probs.data(), static_cast<size_t>(T) * E);
    for (int t = 0; t < T; ++t) {
      lse_diff = worse(lse_diff, std::fabs(double{gpu.logsumexp[t]} - cpu.logsumexp[t]) /
                                     std::max(1.0, std::fabs(double{cpu.logsumexp[t]})));
    }
    EXPECT_LE(p_diff, kGateTolerance) << "max |p gpu - p cpu|";
    EXPECT_LE(lse_diff, kLogsumexpTolerance) << "logsumexp";
  }
  auto relative = [](double got, double want) {
    return std::fabs(got - want) / std::max(std::fabs(want), 1e-30);
  };
  if (config.balance == BalanceKind::aux) {
    EXPECT_LE(relative(gpu.aux_loss, cpu.aux_loss), kLossTolerance)
        << "aux " << gpu.aux_loss << " vs " << cpu.aux_loss;
  } else {
    EXPECT_EQ(gpu.aux_loss, 0.0f);
  }
  if (config.z_loss_coeff > 0.0f) {
    EXPECT_LE(relative(gpu.z_loss, cpu.z_loss), kLossTolerance)
        << "z-loss " << gpu.z_loss << " vs " << cpu.z_loss;
  } else {
    EXPECT_EQ(gpu.z_loss, 0.0f);
  }
  std::printf("  %-34s T=%-5d E=%-4d k=%d C=%-5d kept=%-6lld gate diff %.2g, p diff %.2g\n",
              c.name.c_str(), T, E, config.top_k, cpu.capacity,
              static_cast<long long>(cpu.kept_assignments()), gate_diff, p_diff);
}

void expect_matches(const Case& c, CudaContext& context) {
  DeviceRoutingPlan plan;
  plan.reserve(c.config, std::max(c.tokens, 1));
  expect_plan_matches_cpu(c, plan, context);
}

TEST(CudaRouting, Top1) {
  MOEBENCH_REQUIRE_GPU();
  // CF 1 with uneven demand: drops; T not a multiple of the 1024-entry rank chunk.
  expect_matches(learned_case("top1 cf1", make_config(RouterKind::top1, 8, 1, 1.0), 3001, 1, 2.0),
                 context);
  RoutingConfig hard = make_config(RouterKind::top1, 64, 1, 1.25);
  hard.hard_gates = true;
  expect_matches(learned_case("top1 hard gates", hard, 4096, 2), context);
}

TEST(CudaRouting, TopkHardAcrossShapes) {
  MOEBENCH_REQUIRE_GPU();
  expect_matches(learned_case("topk_hard k2 E64", make_config(RouterKind::topk_hard, 64, 2, 1.25),
                              4113, 3), context);
  // E not a multiple of 32 and above it: lanes hold 5 or 6 experts each; heavy dropping.
  expect_matches(learned_case("topk_hard k8 E160 cf0.5",
                              make_config(RouterKind::topk_hard, 160, 8, 0.5), 2000, 4), context);
  // E < 32 and k = E: most lanes hold no expert; every expert is chosen by every token.
  expect_matches(learned_case("topk_hard k5 E5", make_config(RouterKind::topk_hard, 5, 5, 1.0), 777, 5),
                 context);
  // Dropless.
  expect_matches(learned_case("topk_hard k2 dropless", make_config(RouterKind::topk_hard, 16, 2, 0.0),
                              1500, 6), context);
  // Tiny groups.
  expect_matches(learned_case("topk_hard T1", make_config(RouterKind::topk_hard, 8, 2, 1.0), 1, 7), context);
  // 30000 x 4 entries: 118 chunks of the ordered rank, so the chunk scan carries over more
  // than one warp's pass.
  expect_matches(learned_case("topk_hard many chunks",
                              make_config(RouterKind::topk_hard, 64, 4, 1.1), 30000, 30),
                 context);
  expect_matches(learned_case("topk_hard T33", make_config(RouterKind::topk_hard, 33, 3, 1.0), 33, 8), context);
  for (int k = 1; k <= kMaxGpuTopK; ++k) {
    expect_matches(learned_case("topk_hard k" + std::to_string(k),
                                make_config(RouterKind::topk_hard, 48, k, 1.0), 1024, 100 + k),
                   context);
  }
}

TEST(CudaRouting, TiesGoToTheLowerExpert) {
  MOEBENCH_REQUIRE_GPU();
  // Logits on a coarse grid (multiples of 0.5 in [-1, 1]): most rows have exact ties in and
  // around their top k, which must go to the lower expert index as on the CPU.
  Case c = learned_case("ties k3 E16", make_config(RouterKind::topk_hard, 16, 3, 1.0), 2048, 9);
  for (float& z : c.logits) z = std::clamp(std::round(z * 2.0f) / 2.0f, -1.0f, 1.0f);
  expect_matches(c, context);
  Case all_equal = learned_case("all logits equal k4 E40", make_config(RouterKind::softk, 40, 4, 1.0), 300, 10);
  std::fill(all_equal.logits.begin(), all_equal.logits.end(), 0.25f);
  expect_matches(all_equal, context);
}

TEST(CudaRouting, Softk) {
  MOEBENCH_REQUIRE_GPU();
  RoutingConfig config = make_config(RouterKind::softk, 40, 4, 1.0);
  config.temperature = 0.7f;
  expect_matches(learned_case("softk k4 tau0.7", config, 2500, 11, 1.5), context);
  config.renorm_after_drop = true;
  config.capacity_factor = 0.75;
  expect_matches(learned_case("softk renorm after drop", config, 2500, 12, 1.5), context);
}

TEST(CudaRouting, SelectionBiasAndLosses) {
  MOEBENCH_REQUIRE_GPU();
  RoutingConfig bias = make_config(RouterKind::topk_hard, 32, 2, 1.0);
  bias.balance = BalanceKind::bias;
  Case c = learned_case("selection bias", bias, 3000, 13);
  c.selection_bias.resize(32);
  for (int e = 0; e < 32; ++e) c.selection_bias[e] = static_cast<float>(0.5 * random_normal(13, 99, e));
  expect_matches(c, context);

  RoutingConfig losses = make_config(RouterKind::softk, 24, 2, 1.25);
  losses.balance = BalanceKind::aux;
  losses.z_loss_coeff = 1e-3f;
  expect_matches(learned_case("softk aux + z-loss", losses, 2048, 14, 2.0), context);
  RoutingConfig top1 = make_config(RouterKind::top1, 16, 1, 1.0);
  top1.balance = BalanceKind::aux;
  expect_matches(learned_case("top1 aux", top1, 1000, 15), context);
}

TEST(CudaRouting, Hash) {
  MOEBENCH_REQUIRE_GPU();
  Case c;
  c.name = "hash k3 E12";
  c.config = make_config(RouterKind::hash, 12, 3, 1.0);
  c.tokens = 2000;
  c.token_ids.resize(2000);
  for (int t = 0; t < 2000; ++t) {
    // spans negative ids too (hashed as unsigned 32-bit)
    c.token_ids[t] = static_cast<int32_t>(random_bits(16, 0, t) & 0xffffffffu);
  }
  expect_matches(c, context);
}

// Expert choice's selection compares p across tokens, and the two sides' p may differ in the
// last bits (see routing_cuda.hpp), so the exact comparison uses logits whose p values are
// identical rows or far apart: every token's row is one of a few prototype rows, which puts
// many exact ties (broken towards the lower token) at the capacity boundary.
Case prototype_case(std::string name, RoutingConfig config, int T, uint64_t seed) {
  const int E = config.num_experts;
  constexpr int kPrototypes = 6;
  for (uint64_t attempt = 0;; ++attempt) {
    const std::vector<float> rows = normal_logits(kPrototypes, E, seed + 1000 * attempt, 1.5);
    // p of each prototype; the exact comparison needs the distinct values in a column at
    // least 1e-4 apart.
    bool separated = true;
    std::vector<std::vector<double>> p(kPrototypes, std::vector<double>(E));
    for (int r = 0; r < kPrototypes; ++r) {
      double sum = 0.0;
      for (int e = 0; e < E; ++e) sum += std::exp(double{rows[r * E + e]});
      for (int e = 0; e < E; ++e) p[r][e] = std::exp(double{rows[r * E + e]}) / sum;
    }
    for (int e = 0; e < E && separated; ++e) {
      for (int a = 0; a < kPrototypes; ++a) {
        for (int b = a + 1; b < kPrototypes; ++b) separated &= std::fabs(p[a][e] - p[b][e]) > 1e-4;
      }
    }
    if (!separated && attempt < 50) continue;
    Case c;
    c.name = std::move(name);
    c.config = config;
    c.tokens = T;
    c.logits.resize(static_cast<size_t>(T) * E);
    for (int t = 0; t < T; ++t) {
      const int r = static_cast<int>(random_bits(seed, 1, t) % kPrototypes);
      std::copy(rows.begin() + r * E, rows.begin() + (r + 1) * E, c.logits.begin() + static_cast<int64_t>(t) * E);
    }
    return c;
  }
}

TEST(CudaRouting, ExpertChoice) {
  MOEBENCH_REQUIRE_GPU();
  RoutingConfig config = make_config(RouterKind::expert_choice, 16, 2, 1.0);
  expect_matches(prototype_case("expert_choice k2 cf1", config, 1500, 17), context);
  config.capacity_factor = 2.0;
  config.ec_max_per_token = 1;
  expect_matches(prototype_case("expert_choice limit 1 cf2", config, 1500, 18), context);
  config.ec_max_per_token = 0;  // no limit: slots = E
  expect_matches(prototype_case("expert_choice no limit", config, 1500, 19), context);
  RoutingConfig wide = make_config(RouterKind::expert_choice, 72, 4, 1.25);
  wide.z_loss_coeff = 1e-3f;
  expect_matches(prototype_case("expert_choice E72 z-loss", wide, 3000, 20), context);
}

TEST(CudaRouting, ReusedPlanForgetsTheLastGroup) {
  MOEBENCH_REQUIRE_GPU();
  const RoutingConfig config = make_config(RouterKind::topk_hard, 32, 2, 1.0);
  DeviceRoutingPlan plan;
  plan.reserve(config, 4096);
  expect_plan_matches_cpu(learned_case("first group T4096", config, 4096, 21), plan, context);
  expect_plan_matches_cpu(learned_case("second group T1000", config, 1000, 22), plan, context);
  expect_plan_matches_cpu(learned_case("empty group", config, 0, 23), plan, context);
}

TEST(CudaRouting, RejectsWhatTheGpuPathDoesNotImplement) {
  // No device needed: validation runs on the host.
  RoutingConfig config = make_config(RouterKind::topk_hard, 64, 9, 1.0);
  EXPECT_THROW(validate_gpu_routing_config(config), UsageError);
  config.top_k = 2;
  config.drop_policy = DropPolicy::prob;
  EXPECT_THROW(validate_gpu_routing_config(config), UsageError);
  config.drop_policy = DropPolicy::position;
  EXPECT_NO_THROW(validate_gpu_routing_config(config));
}

}  // namespace
}  // namespace moebench
