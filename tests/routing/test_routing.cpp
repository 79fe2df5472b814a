// Hand-worked routing cases: selection, capacity, both drop policies, expert choice, hash,
// gates, metrics and validation. Every expected value below is derived in the comment beside it.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/metrics.hpp"
#include "moebench/random.hpp"
#include "moebench/routing.hpp"

namespace moebench {
namespace {

RoutingConfig make_config(RouterKind router, int E, int k, double cf) {
  RoutingConfig config;
  config.router = router;
  config.num_experts = E;
  config.top_k = k;
  config.capacity_factor = cf;
  return config;
}

RoutingPlan route_plan(const RoutingConfig& config, const std::vector<float>& logits, int T,
                       const std::vector<int32_t>* ids = nullptr, const float* bias = nullptr) {
  RoutingPlan plan;
  plan.reserve(config, T);
  route(plan, logits.empty() ? nullptr : logits.data(), ids ? ids->data() : nullptr, bias, T,
        config);
  return plan;
}

// Logits that make expert `e` the clear argmax for each token, with `boost` added to it.
std::vector<float> one_hot_logits(const std::vector<int>& winners, int E,
                                  const std::vector<float>& boost = {}) {
  std::vector<float> z(winners.size() * E, 0.0f);
  for (size_t t = 0; t < winners.size(); ++t) {
    z[t * E + winners[t]] = 3.0f + (boost.empty() ? 0.0f : boost[t]);
  }
  return z;
}

TEST(Capacity, FormulaRoundsUpAndFloorsAtOne) {
  // C = max(1, ceil(CF * T * k / E))
  EXPECT_EQ(expert_capacity(make_config(RouterKind::topk_hard, 4, 1, 1.0), 8), 2);
  EXPECT_EQ(expert_capacity(make_config(RouterKind::topk_hard, 4, 2, 1.25), 8), 5);  // 5.0
  EXPECT_EQ(expert_capacity(make_config(RouterKind::topk_hard, 64, 1, 1.1), 640 * 64 / 64 * 1), 11);
  // 1.1 * 640 = 704.0000000000001 in doubles: still 704, not 705.
  EXPECT_EQ(expert_capacity(make_config(RouterKind::topk_hard, 1, 1, 1.1), 640), 704);
  EXPECT_EQ(expert_capacity(make_config(RouterKind::topk_hard, 64, 1, 0.01), 10), 1);
  // dropless: never binding
  EXPECT_EQ(expert_capacity(make_config(RouterKind::topk_hard, 4, 2, 0.0), 10), 20);
}

// T = 6, E = 3, k = 1, CF = 1 -> C = 2. Argmax experts: 0 0 0 1 2 0.
TEST(Top1, PositionPolicyKeepsEarliestTokens) {
  const auto config = make_config(RouterKind::top1, 3, 1, 1.0);
  const auto z = one_hot_logits({0, 0, 0, 1, 2, 0}, 3);
  const RoutingPlan plan = route_plan(config, z, 6);
  EXPECT_EQ(plan.capacity, 2);
  const std::vector<uint8_t> kept = {1, 1, 0, 1, 1, 0};
  const std::vector<int32_t> position = {0, 1, -1, 0, 0, -1};
  for (int t = 0; t < 6; ++t) {
    EXPECT_EQ(plan.kept[t], kept[t]) << "token " << t;
    EXPECT_EQ(plan.position[t], position[t]) << "token " << t;
  }
  EXPECT_EQ(plan.demand, (std::vector<int64_t>{4, 1, 1}));
  EXPECT_EQ(plan.load, (std::vector<int64_t>{2, 1, 1}));
  // Switch gate: p of the chosen expert = e^3 / (e^3 + 2)
  const float p = std::exp(3.0f) / (std::exp(3.0f) + 2.0f);
  EXPECT_NEAR(plan.gate[0], p, 1e-6);

  RoutingStats stats;
  stats.reset(3);
  routing_stats_add(stats, plan, z.data(), config);
  const RoutingMetrics m = routing_metrics(stats);
  EXPECT_DOUBLE_EQ(m.drop_rate, 2.0 / 6.0);
  EXPECT_DOUBLE_EQ(m.token_drop_rate, 2.0 / 6.0);
  // load [2,1,1]: mean 4/3, population std sqrt(2/9) -> cv = sqrt(2/9) / (4/3)
  EXPECT_NEAR(m.load_cv, std::sqrt(2.0 / 9.0) / (4.0 / 3.0), 1e-12);
  EXPECT_NEAR(m.max_load_ratio, 1.5, 1e-12);
  EXPECT_EQ(m.unused_experts, 0);
  // one kept gate per kept token -> normalised weight 1 -> entropy 0
  EXPECT_NEAR(m.gate_entropy, 0.0, 1e-12);
  // every token's selected mass is p
  EXPECT_NEAR(m.mean_topk_prob, p, 1e-6);
  // H(p) for p = (p, q, q), q = 1 / (e^3 + 2)
  const double q = 1.0 / (std::exp(3.0) + 2.0), pp = std::exp(3.0) * q;
  EXPECT_NEAR(m.router_entropy, -(pp * std::log(pp) + 2 * q * std::log(q)), 1e-6);
}

TEST(Top1, ProbPolicyKeepsMostConfidentTokens) {
  // Expert 0 is wanted by tokens 0, 1, 2, 5 with rising confidence 0 < 1 < ... boosts below:
  // token 5 (boost 3) and token 2 (boost 2) win the two slots.
  auto config = make_config(RouterKind::top1, 3, 1, 1.0);
  config.drop_policy = DropPolicy::prob;
  const auto z = one_hot_logits({0, 0, 0, 1, 2, 0}, 3, {0.5f, 0.0f, 2.0f, 0.0f, 0.0f, 3.0f});
  const RoutingPlan plan = route_plan(config, z, 6);
  EXPECT_EQ((std::vector<uint8_t>(plan.kept.begin(), plan.kept.begin() + 6)),
            (std::vector<uint8_t>{0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(plan.position[5], 0);  // the most probable token takes the first slot
  EXPECT_EQ(plan.position[2], 1);
}

TEST(Top1, HardGatesGiveOne) {
  auto config = make_config(RouterKind::top1, 3, 1, 1.0);
  config.hard_gates = true;
  const RoutingPlan plan = route_plan(config, one_hot_logits({1, 2}, 3), 2);
  EXPECT_EQ(plan.gate[0], 1.0f);
  EXPECT_EQ(plan.gate[1], 1.0f);
}

// T = 4, E = 4, k = 2, CF = 1 -> C = 2. Choices (first, second): t0 (0,1), t1 (0,2),
// t2 (0,1), t3 (1,0). Choice-major: first choices fill expert 0 with t0, t1 (t2 dropped)
// and expert 1 with t3; second choices: t0 -> 1 (slot 1), t1 -> 2 (slot 0), t2 -> 1 (full),
// t3 -> 0 (full).
TEST(TopkHard, ChoiceMajorFilling) {
  const auto config = make_config(RouterKind::topk_hard, 4, 2, 1.0);
  const std::vector<float> z = {
      3, 2, 0, 0,  // t0: 0 then 1
      3, 0, 2, 0,  // t1: 0 then 2
      3, 2, 0, 0,  // t2: 0 then 1
      2, 3, 0, 0,  // t3: 1 then 0
  };
  const RoutingPlan plan = route_plan(config, z, 4);
  EXPECT_EQ(plan.capacity, 2);
  EXPECT_EQ(plan.expert, (std::vector<int32_t>{0, 1, 0, 2, 0, 1, 1, 0}));
  EXPECT_EQ(plan.kept, (std::vector<uint8_t>{1, 1, 1, 1, 0, 0, 1, 0}));
  EXPECT_EQ(plan.position, (std::vector<int32_t>{0, 1, 1, 0, -1, -1, 0, -1}));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(plan.gate[i], 0.5f);
  EXPECT_EQ(plan.demand, (std::vector<int64_t>{4, 3, 1, 0}));
  EXPECT_EQ(plan.load, (std::vector<int64_t>{2, 2, 1, 0}));

  RoutingStats stats;
  stats.reset(4);
  routing_stats_add(stats, plan, z.data(), config);
  const RoutingMetrics m = routing_metrics(stats);
  EXPECT_DOUBLE_EQ(m.drop_rate, 3.0 / 8.0);
  EXPECT_DOUBLE_EQ(m.token_drop_rate, 1.0 / 4.0);
  EXPECT_EQ(m.unused_experts, 1);
  // tokens with a kept slot: t0, t1 (two equal gates: log 2), t3 (one gate: 0)
  EXPECT_NEAR(m.gate_entropy, 2.0 * std::log(2.0) / 3.0, 1e-12);
  // load [2,2,1,0]: mean 1.25, max ratio 1.6
  EXPECT_NEAR(m.max_load_ratio, 1.6, 1e-12);
}

TEST(TopkHard, DroplessKeepsEverything) {
  const auto config = make_config(RouterKind::topk_hard, 4, 2, 0.0);
  const std::vector<float> z = {3, 2, 0, 0, 3, 0, 2, 0, 3, 2, 0, 0, 2, 3, 0, 0};
  const RoutingPlan plan = route_plan(config, z, 4);
  EXPECT_EQ(plan.kept_assignments(), 8);
  EXPECT_EQ(plan.position[4], 2);  // t2's first choice is expert 0's third row
}

TEST(TopkHard, TiesGoToTheLowerExpert) {
  const auto config = make_config(RouterKind::topk_hard, 4, 2, 0.0);
  const RoutingPlan plan = route_plan(config, {1, 1, 1, 1}, 1);
  EXPECT_EQ(plan.expert[0], 0);
  EXPECT_EQ(plan.expert[1], 1);
}

// The vectorised selection (block maxima, candidate masks) against a plain stable sort, on
// rows full of ties (logits rounded to quarters) and sizes that exercise the tail handling.
TEST(TopkHard, SelectionMatchesSortReferenceWithTies) {
  for (int E : {3, 16, 64, 70, 100, 256}) {
    for (int k : {1, 2, 4, 8}) {
      if (k > E) continue;
      for (bool with_bias : {false, true}) {
        auto config = make_config(RouterKind::topk_hard, E, k, 0.0);
        if (with_bias) config.balance = BalanceKind::bias;
        const int T = 40;
        std::vector<float> z(static_cast<size_t>(T) * E), bias(E);
        for (size_t i = 0; i < z.size(); ++i) {
          z[i] = std::round(static_cast<float>(random_normal(11, E * 100 + k, i)) * 4.0f) / 4.0f;
        }
        for (int e = 0; e < E; ++e) bias[e] = with_bias ? 0.25f * static_cast<float>(e % 3) : 0.0f;
        const RoutingPlan plan = route_plan(config, z, T, nullptr, with_bias ? bias.data() : nullptr);
        for (int t = 0; t < T; ++t) {
          std::vector<int> order(E);
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
            return z[t * E + a] + bias[a] > z[t * E + b] + bias[b];
          });
          for (int j = 0; j < k; ++j) {
            ASSERT_EQ(plan.expert[t * k + j], order[j])
                << "E=" << E << " k=" << k << " bias=" << with_bias << " token " << t << " choice " << j;
          }
        }
      }
    }
  }
}

TEST(TopkHard, SelectionBiasChangesSelectionNotGates) {
  auto config = make_config(RouterKind::topk_hard, 3, 1, 0.0);
  config.balance = BalanceKind::bias;
  const std::vector<float> bias = {0.0f, 0.0f, 5.0f};
  const RoutingPlan plan = route_plan(config, {2, 1, 0}, 1, nullptr, bias.data());
  EXPECT_EQ(plan.expert[0], 2);
  EXPECT_EQ(plan.gate[0], 1.0f);
}

TEST(Softk, GatesAreSoftmaxOfSelectedLogitsOverTemperature) {
  auto config = make_config(RouterKind::softk, 3, 2, 0.0);
  const std::vector<float> z = {1, 2, 0};
  RoutingPlan plan = route_plan(config, z, 1);
  EXPECT_EQ(plan.expert[0], 1);
  EXPECT_EQ(plan.expert[1], 0);
  const double e = std::exp(1.0);
  EXPECT_NEAR(plan.gate[0], e / (e + 1), 1e-6);
  EXPECT_NEAR(plan.gate[1], 1 / (e + 1), 1e-6);
  config.temperature = 2.0f;  // softmax([2, 1] / 2)
  plan = route_plan(config, z, 1);
  const double h = std::exp(0.5);
  EXPECT_NEAR(plan.gate[0], h / (h + 1), 1e-6);
}

TEST(Softk, RenormAfterDropGivesKeptChoicesAllTheWeight) {
  // T = 2, E = 3, k = 2, CF = 0.75 -> C = ceil(0.75 * 2 * 2 / 3) = 1.
  // Choices: t0 (0, then 1), t1 (1, then 2). First choices: t0 -> 0 kept, t1 -> 1 kept.
  // Second choices: t0 -> 1 is full (dropped), t1 -> 2 kept.
  const std::vector<float> z = {2, 1, 0, 0, 2, 1};
  auto config = make_config(RouterKind::softk, 3, 2, 0.75);
  RoutingPlan plan = route_plan(config, z, 2);
  EXPECT_EQ(plan.kept, (std::vector<uint8_t>{1, 0, 1, 1}));
  // Without renormalisation t0 keeps its pre-drop gate softmax([2, 1])[0] = e / (e + 1).
  const double e = std::exp(1.0);
  EXPECT_NEAR(plan.gate[0], e / (e + 1), 1e-6);
  // With it, the kept choice carries all the weight and the dropped one none.
  config.renorm_after_drop = true;
  plan = route_plan(config, z, 2);
  EXPECT_FLOAT_EQ(plan.gate[0], 1.0f);
  EXPECT_EQ(plan.gate[1], 0.0f);
  EXPECT_NEAR(plan.gate[2], e / (e + 1), 1e-6);  // t1 kept both: unchanged
}

TEST(Hash, MatchesTheDocumentedFormula) {
  // expert_j = (id * 2654435761 + 40503 + j * 7919) mod E, probing past repeats.
  int experts[4];
  hash_experts(experts, 5, 8, 2);
  EXPECT_EQ(experts[0], 4);
  EXPECT_EQ(experts[1], 3);
  hash_experts(experts, 123456, 64, 4);
  EXPECT_EQ((std::vector<int>(experts, experts + 4)), (std::vector<int>{55, 38, 21, 4}));
  // E = 2 * 7919: j = 2 lands on j = 0's expert and probes to the next one.
  hash_experts(experts, 7, 15838, 3);
  EXPECT_EQ((std::vector<int>(experts, experts + 3)), (std::vector<int>{12582, 4663, 12583}));
  hash_experts(experts, 0, 4, 4);
  EXPECT_EQ((std::vector<int>(experts, experts + 4)), (std::vector<int>{3, 2, 1, 0}));
}

TEST(Hash, PlanUsesTokenIdsAndUniformGates) {
  const auto config = make_config(RouterKind::hash, 8, 2, 0.0);
  const std::vector<int32_t> ids = {5, 5, 123456};
  const RoutingPlan plan = route_plan(config, {}, 3, &ids);
  EXPECT_EQ(plan.expert[0], 4);
  EXPECT_EQ(plan.expert[1], 3);
  EXPECT_EQ(plan.expert[2], 4);  // same id, same experts
  EXPECT_EQ(plan.gate[5], 0.5f);
  RoutingStats stats;
  stats.reset(8);
  routing_stats_add(stats, plan, nullptr, config);
  EXPECT_TRUE(std::isnan(routing_metrics(stats).router_entropy));
}

// Expert choice: T = 4, E = 2, k = 1, CF = 1 -> C = 2.
// p[:,0] = (0.881, 0.5, 0.047, 0.378) -> expert 0 takes t0, t1;
// p[:,1] = (0.119, 0.5, 0.953, 0.622) -> expert 1 takes t2, t3.
TEST(ExpertChoice, EachExpertTakesItsTopCTokens) {
  const auto config = make_config(RouterKind::expert_choice, 2, 1, 1.0);
  const std::vector<float> z = {2, 0, 1, 1, 0, 3, 0, 0.5f};
  const RoutingPlan plan = route_plan(config, z, 4);
  EXPECT_EQ(plan.capacity, 2);
  EXPECT_EQ(plan.expert, (std::vector<int32_t>{0, 0, 1, 1}));
  EXPECT_EQ(plan.kept, (std::vector<uint8_t>{1, 1, 1, 1}));
  EXPECT_EQ(plan.position, (std::vector<int32_t>{0, 1, 0, 1}));
  EXPECT_NEAR(plan.gate[0], 1.0 / (1.0 + std::exp(-2.0)), 1e-6);  // p[0, 0]
  EXPECT_EQ(plan.demand, (std::vector<int64_t>{2, 2}));
}

TEST(ExpertChoice, PerTokenLimitKeepsHighestLogits) {
  // CF = 2 -> C = 4: both experts take all four tokens; the limit k = 1 keeps each token's
  // higher logit (tie -> lower expert): t0 -> 0, t1 -> 0, t2 -> 1, t3 -> 1.
  auto config = make_config(RouterKind::expert_choice, 2, 1, 2.0);
  const std::vector<float> z = {2, 0, 1, 1, 0, 3, 0, 0.5f};
  RoutingPlan plan = route_plan(config, z, 4);
  EXPECT_EQ(plan.expert, (std::vector<int32_t>{0, 0, 1, 1}));
  EXPECT_EQ(plan.load, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(plan.demand, (std::vector<int64_t>{4, 4}));
  // No limit: every token keeps both, ranked by its logits.
  config.ec_max_per_token = 0;
  plan = route_plan(config, z, 4);
  EXPECT_EQ(plan.slots, 2);
  EXPECT_EQ(plan.expert, (std::vector<int32_t>{0, 1, 0, 1, 1, 0, 1, 0}));
  EXPECT_EQ(plan.kept_assignments(), 8);
  RoutingStats stats;
  stats.reset(2);
  routing_stats_add(stats, plan, z.data(), config);
  EXPECT_DOUBLE_EQ(routing_metrics(stats).drop_rate, 1.0 - 8.0 / 4.0);  // documented: < 0
}

TEST(ExpertChoice, TiesGoToTheLowerToken) {
  // E = 1: every p is 1. CF = 0.5, T = 3 -> C = ceil(1.5) = 2 -> tokens 0 and 1.
  const auto config = make_config(RouterKind::expert_choice, 1, 1, 0.5);
  const RoutingPlan plan = route_plan(config, {0, 0, 0}, 3);
  EXPECT_EQ(plan.kept, (std::vector<uint8_t>{1, 1, 0}));
  EXPECT_EQ(plan.expert[2], -1);
  RoutingStats stats;
  stats.reset(1);
  routing_stats_add(stats, plan, std::vector<float>{0, 0, 0}.data(), config);
  EXPECT_DOUBLE_EQ(routing_metrics(stats).token_drop_rate, 1.0 / 3.0);
}

// The metrics' floating-point sums (router and gate entropy, top-k mass) do not depend on the
// thread count: 1, 2, 3 and 5 threads give the same bits over 1000 tokens (several 256-token
// blocks and a ragged last one) with drops.
TEST(Metrics, SumsDoNotDependOnTheThreadCount) {
  const int T = 1000, E = 16;
  auto config = make_config(RouterKind::softk, E, 2, 1.0);
  std::vector<float> z(static_cast<size_t>(T) * E);
  for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>(2.0 * random_normal(11, 1, i));
  const RoutingPlan plan = route_plan(config, z, T);
  const int saved = omp_get_max_threads();
  std::vector<RoutingStats> results;
  for (int threads : {1, 2, 3, 5}) {
    omp_set_num_threads(threads);
    RoutingStats stats;
    stats.reset(E);
    routing_stats_add(stats, plan, z.data(), config);
    results.push_back(stats);
  }
  omp_set_num_threads(saved);
  EXPECT_GT(results[0].tokens_without_slot + results[0].kept, 0);
  EXPECT_GT(results[0].router_entropy_sum, 0.0);
  for (const RoutingStats& r : results) {
    EXPECT_EQ(r.router_entropy_sum, results[0].router_entropy_sum);
    EXPECT_EQ(r.gate_entropy_sum, results[0].gate_entropy_sum);
    EXPECT_EQ(r.topk_prob_sum, results[0].topk_prob_sum);
    EXPECT_EQ(r.tokens_without_slot, results[0].tokens_without_slot);
  }
}

TEST(Balance, AuxLossMatchesHandValue) {
  // T = 2, E = 2, k = 1, logits (0, 0) and (ln 3, 0): p = (0.5, 0.5), (0.75, 0.25).
  // Both tokens choose expert 0 (tie -> lower), f = (1, 0), P_0 = 0.625.
  // aux = alpha * E * f_0 * P_0 = 0.01 * 2 * 0.625 = 0.0125
  auto config = make_config(RouterKind::topk_hard, 2, 1, 0.0);
  config.balance = BalanceKind::aux;
  config.z_loss_coeff = 0.1f;
  const std::vector<float> z = {0, 0, static_cast<float>(std::log(3.0)), 0};
  const RoutingPlan plan = route_plan(config, z, 2);
  EXPECT_NEAR(plan.aux_loss, 0.0125, 1e-7);
  // z-loss = beta * mean(lse^2), lse = ln 2 and ln 4
  const double l1 = std::log(2.0), l2 = std::log(4.0);
  EXPECT_NEAR(plan.z_loss, 0.1 * (l1 * l1 + l2 * l2) / 2, 1e-6);
}

// An empty group: no assignments and losses of 0 (not 0 / 0), as on the GPU.
TEST(Balance, EmptyGroupHasZeroLosses) {
  auto config = make_config(RouterKind::topk_hard, 4, 2, 1.0);
  config.balance = BalanceKind::aux;
  config.z_loss_coeff = 0.1f;
  RoutingPlan plan;
  plan.reserve(config, 4);
  const std::vector<float> z(16, 0.5f);
  route(plan, z.data(), nullptr, nullptr, 0, config);
  EXPECT_EQ(plan.aux_loss, 0.0f);
  EXPECT_EQ(plan.z_loss, 0.0f);
  for (int e = 0; e < 4; ++e) EXPECT_EQ(plan.load[e], 0) << e;
}

TEST(Balance, SelectionBiasMovesTowardsUnderloadedExperts) {
  auto config = make_config(RouterKind::topk_hard, 3, 1, 1.0);
  config.balance = BalanceKind::bias;
  config.bias_update_rate = 0.25f;
  std::vector<float> bias = {0, 0, 0};
  const std::vector<int64_t> demand = {3, 2, 1};  // mean 2
  update_selection_bias(bias.data(), demand.data(), config);
  EXPECT_EQ(bias, (std::vector<float>{-0.25f, 0.0f, 0.25f}));
}

void expect_usage_error(const RoutingConfig& config, const std::string& fragment) {
  try {
    validate_routing_config(config);
    ADD_FAILURE() << "no error for a config that should mention '" << fragment << "'";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
  }
}

TEST(Validation, NamesTheOptionAndTheFix) {
  expect_usage_error(make_config(RouterKind::topk_hard, 4, 5, 1.0), "--top-k 5 exceeds --experts 4");
  expect_usage_error(make_config(RouterKind::top1, 4, 2, 1.0), "use --top-k 1");
  expect_usage_error(make_config(RouterKind::expert_choice, 4, 1, 0.0), "expert_choice needs");
  auto hash = make_config(RouterKind::hash, 4, 1, 1.0);
  hash.balance = BalanceKind::aux;
  expect_usage_error(hash, "--balance none");
  auto softk = make_config(RouterKind::softk, 4, 2, 1.0);
  softk.temperature = 0.0f;
  expect_usage_error(softk, "--temperature");
  EXPECT_NO_THROW(validate_routing_config(make_config(RouterKind::softk, 4, 2, 1.0)));
  EXPECT_EQ(parse_balance_kind("--balance", "auto", RouterKind::hash), BalanceKind::none);
  EXPECT_EQ(parse_balance_kind("--balance", "auto", RouterKind::softk), BalanceKind::aux);
  EXPECT_THROW(parse_router_kind("--router", "top2"), UsageError);
}

}  // namespace
}  // namespace moebench
