// Finite-difference gradient checks of the whole MoE layer (router network, routing, dispatch,
// experts, combine, aux and z-loss) for every strategy x router architecture, on one process.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/dispatcher.hpp"
#include "moebench/moe_layer.hpp"
#include "moebench/random.hpp"
#include "moebench/routing.hpp"

namespace moebench {
namespace {

struct Case {
  RouterKind router;
  RouterArch arch;
  bool renorm = false;
  DropPolicy policy = DropPolicy::position;
  BalanceKind balance = BalanceKind::aux;
  DispatchMode dispatch = DispatchMode::ragged;
};

std::string case_name(const Case& c) {
  return std::string(to_string(c.router)) + "/" + to_string(c.arch) + (c.renorm ? "/renorm" : "") +
         "/" + to_string(c.policy) + "/" + to_string(c.balance) + "/" + to_string(c.dispatch);
}

MoELayerConfig layer_config(const Case& c) {
  MoELayerConfig config;
  config.routing.router = c.router;
  config.routing.num_experts = 4;
  config.routing.top_k = c.router == RouterKind::top1 ? 1 : 2;
  config.routing.capacity_factor = 0.75;  // drops some assignments
  config.routing.renorm_after_drop = c.renorm;
  config.routing.drop_policy = c.policy;
  config.routing.temperature = 0.7f;
  const bool learned_token_choice = is_token_choice(c.router) && has_learned_router(c.router);
  config.routing.balance = learned_token_choice ? c.balance : BalanceKind::none;
  config.routing.aux_loss_coeff = 0.1f;  // large enough that a wrong aux gradient shows
  config.routing.z_loss_coeff = has_learned_router(c.router) ? 0.05f : 0.0f;
  config.router_arch = c.arch;
  config.router_hidden = 4;
  config.d_model = 5;
  config.d_hidden = 7;
  config.dispatch = c.dispatch;
  config.seed = 99;
  return config;
}

constexpr int kTokens = 6;

// L = sum(y * R) + aux_loss + z_loss
double objective(MoELayer& layer, const std::vector<float>& x, const std::vector<int32_t>& ids,
                 const std::vector<float>& r) {
  std::vector<float> y(x.size());
  layer.forward(y.data(), x.data(), ids.data(), kTokens);
  double sum = 0.0;
  for (size_t i = 0; i < y.size(); ++i) sum += static_cast<double>(y[i]) * r[i];
  return sum + layer.plan().aux_loss + layer.plan().z_loss;
}

bool same_decisions(const RoutingPlan& a, const RoutingPlan& b) {
  return a.expert == b.expert && a.kept == b.kept;
}

class LayerGradient : public ::testing::TestWithParam<Case> {};

TEST_P(LayerGradient, MatchesFiniteDifferences) {
  const Case c = GetParam();
  MoELayer layer(layer_config(c), MPI_COMM_SELF, kTokens);
  const int d = 5;
  std::vector<float> x(kTokens * d), r(kTokens * d);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>(random_normal(7, 1, i));
    r[i] = static_cast<float>(random_normal(7, 2, i));
  }
  const std::vector<int32_t> ids = {3, 17, 4, 250, 3, 99};

  // Analytic gradients.
  objective(layer, x, ids, r);
  const RoutingPlan reference_plan = layer.plan();
  std::vector<float> dx(x.size());
  layer.backward(dx.data(), r.data());
  const std::vector<float> router_grads = layer.router_grads();
  const std::vector<float> expert_grads = layer.expert_grads();

  // Central differences in fp32. With eps = 1e-2 the truncation error (eps^2 f'''/6) and the
  // rounding error (~1e-7 |L| / eps) are both ~1e-4 here; the tolerance allows 20x that,
  // while any wrong term in a gradient is O(0.1 - 1).
  const float eps = 1e-2f;
  int checked = 0, skipped = 0;
  double worst = 0.0;
  auto check = [&](std::vector<float>& values, const std::vector<float>& analytic,
                   const char* what) {
    for (size_t i = 0; i < values.size(); ++i) {
      const float saved = values[i];
      values[i] = saved + eps;
      const double up = objective(layer, x, ids, r);
      const bool same_up = same_decisions(layer.plan(), reference_plan);
      values[i] = saved - eps;
      const double down = objective(layer, x, ids, r);
      const bool same_down = same_decisions(layer.plan(), reference_plan);
      values[i] = saved;
      if (!same_up || !same_down) {  // a routing decision flipped: not differentiable here
        ++skipped;
        continue;
      }
      const double numeric = (up - down) / (2.0 * eps);
      const double error = std::abs(numeric - analytic[i]);
      worst = std::max(worst, error);
      EXPECT_LE(error, 2e-3 + 2e-2 * std::abs(numeric))
          << what << "[" << i << "] analytic " << analytic[i] << " numeric " << numeric;
      ++checked;
    }
  };
  check(x, dx, "dx");
  check(layer.router_params(), router_grads, "router");
  check(layer.expert_params(), expert_grads, "experts");
  EXPECT_GT(checked, 10 * (skipped + 1)) << "too many coordinates flip routing decisions";
  RecordProperty("max_abs_error", std::to_string(worst));
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (RouterArch arch : {RouterArch::linear, RouterArch::mlp, RouterArch::mlp_hadamard}) {
    for (RouterKind router : {RouterKind::top1, RouterKind::topk_hard, RouterKind::softk,
                              RouterKind::expert_choice}) {
      cases.push_back({router, arch});
    }
    cases.push_back({RouterKind::softk, arch, /*renorm=*/true, DropPolicy::prob});
  }
  cases.push_back({RouterKind::hash, RouterArch::linear});
  cases.push_back({RouterKind::topk_hard, RouterArch::linear, false, DropPolicy::position,
                   BalanceKind::bias});
  cases.push_back({RouterKind::softk, RouterArch::mlp, false, DropPolicy::position,
                   BalanceKind::aux, DispatchMode::padded});
  cases.push_back({RouterKind::expert_choice, RouterArch::linear, false, DropPolicy::position,
                   BalanceKind::none, DispatchMode::padded});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllRouters, LayerGradient, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& param_info) {
                           std::string name = case_name(param_info.param);
                           std::replace(name.begin(), name.end(), '/', '_');
                           return name;
                         });

}  // namespace
}  // namespace moebench

namespace moebench {
namespace {

// balance = bias: after a step the bias rises for experts demanded less than the mean and
// falls for those demanded more, by exactly gamma.
TEST(LayerBalanceBias, MovesTowardsUnderloadedExperts) {
  MoELayerConfig config;
  config.routing.router = RouterKind::topk_hard;
  config.routing.num_experts = 4;
  config.routing.top_k = 1;
  config.routing.balance = BalanceKind::bias;
  config.routing.bias_update_rate = 0.5f;
  config.d_model = 3;
  config.d_hidden = 4;
  MoELayer layer(config, MPI_COMM_SELF, 8);
  std::vector<float> x(8 * 3), y(8 * 3);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(random_normal(3, 3, i));
  layer.forward(y.data(), x.data(), nullptr, 8);
  const std::vector<int64_t> demand = layer.plan().demand;
  layer.update_balance_bias(MPI_COMM_SELF);
  for (int e = 0; e < 4; ++e) {
    const float expected = demand[e] > 2 ? -0.5f : (demand[e] < 2 ? 0.5f : 0.0f);  // mean 8/4
    EXPECT_EQ(layer.selection_bias()[e], expected) << "expert " << e << " demand " << demand[e];
  }
}

// Hash routing has no router: no parameters (so none in the optimizer, the checkpoint or the
// parameter table) and no logits; a learned router has its architecture's count.
TEST(LayerRouter, HashRoutingHasNoRouterParameters) {
  for (const RouterKind router : {RouterKind::hash, RouterKind::softk}) {
    const MoELayerConfig config = layer_config(Case{router, RouterArch::mlp});
    MoELayer layer(config, MPI_COMM_SELF, kTokens);
    const RouterNetShape shape{config.router_arch, config.d_model, config.router_hidden,
                               config.routing.num_experts};
    const size_t expected = router == RouterKind::hash ? 0 : size_t(router_param_count(shape));
    EXPECT_EQ(layer.router_params().size(), expected) << to_string(router);
    EXPECT_EQ(layer.router_grads().size(), expected) << to_string(router);
    std::vector<float> x(kTokens * 5), y(x.size()), dx(x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(random_normal(4, 4, i));
    const std::vector<int32_t> ids = {3, 1, 4, 1, 5, 9};
    layer.forward(y.data(), x.data(), ids.data(), kTokens);  // runs without a router
    layer.backward(dx.data(), y.data());
    EXPECT_TRUE(std::all_of(dx.begin(), dx.end(), [](float v) { return std::isfinite(v); }));
  }
}

// bf16 expert products are a GPU option: the CPU layer refuses them, naming the fix; the
// option's names parse and anything else is refused with the accepted values.
TEST(LayerConfig, CpuLayerRefusesBf16Experts) {
  MoELayerConfig config = layer_config(Case{RouterKind::softk, RouterArch::linear});
  config.expert_precision = GemmPrecision::bf16;
  try {
    MoELayer layer(config, MPI_COMM_SELF, kTokens);
    ADD_FAILURE() << "a bf16 CPU layer was built";
  } catch (const UsageError& error) {
    EXPECT_EQ(std::string(error.what()),
              "--expert-precision bf16 needs --backend cuda (the CPU experts compute in fp32)");
  }
  EXPECT_EQ(parse_gemm_precision("--expert-precision", "bf16"), GemmPrecision::bf16);
  EXPECT_EQ(parse_gemm_precision("--expert-precision", "fp32"), GemmPrecision::fp32);
  EXPECT_STREQ(to_string(GemmPrecision::bf16), "bf16");
  EXPECT_THROW(parse_gemm_precision("--expert-precision", "fp16"), UsageError);
}

// combine_backward reads the rows combine() returned for the current plan (on one rank, the
// caller's expert_out itself): before that combine it refuses instead of reading nothing.
TEST(LayerDispatcher, CombineBackwardNeedsCombineOfThePlan) {
  RoutingConfig config;
  config.router = RouterKind::topk_hard;
  config.num_experts = 4;
  config.top_k = 1;
  config.capacity_factor = 1.0;
  const int T = 4, d = 2;
  const std::vector<float> logits = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  RoutingPlan plan;
  plan.reserve(config, T);
  route(plan, logits.data(), nullptr, nullptr, T, config);
  Dispatcher dispatcher(MPI_COMM_SELF, config.num_experts, d, DispatchMode::ragged);
  dispatcher.reserve(config, T);
  std::vector<float> x(T * d, 1.0f), y(T * d), dy(T * d, 1.0f), d_gate(T * plan.slots);
  std::vector<float> rows(static_cast<size_t>(dispatcher.max_expert_rows()) * d);
  std::vector<float> d_rows(rows.size());
  dispatcher.set_plan(plan);
  EXPECT_THROW(dispatcher.combine_backward(d_rows.data(), d_gate.data(), dy.data()), Error);
  dispatcher.dispatch(rows.data(), x.data());
  dispatcher.combine(y.data(), rows.data());
  EXPECT_NO_THROW(dispatcher.combine_backward(d_rows.data(), d_gate.data(), dy.data()));
  EXPECT_EQ(d_gate, std::vector<float>(T, 2.0f));  // dy . expert_out row = 1 + 1 per token
  dispatcher.set_plan(plan);  // a new plan: its combine has not run
  EXPECT_THROW(dispatcher.combine_backward(d_rows.data(), d_gate.data(), dy.data()), Error);
}

}  // namespace
}  // namespace moebench
