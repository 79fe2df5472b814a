// Routing metrics (DESIGN §4). See metrics.hpp.
#include "moebench/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "moebench/check.hpp"
#include "moebench/fast_exp.hpp"

namespace moebench {

namespace {
constexpr int kTokenBlock = 256;  // tokens per partial sum of routing_stats_add
}  // namespace

void RoutingStats::reset(int num_experts) {
  *this = RoutingStats{};
  demand.assign(num_experts, 0);
  load.assign(num_experts, 0);
}

void routing_stats_add(RoutingStats& stats, const RoutingPlan& plan, const float* logits,
                       const RoutingConfig& config) {
  const int T = plan.num_tokens, E = plan.num_experts, slots = plan.slots;
  MOEBENCH_CHECK(static_cast<int>(stats.load.size()) == E, "RoutingStats::reset(E) first");
  stats.learned_router = has_learned_router(config.router);
  MOEBENCH_CHECK(!stats.learned_router || logits != nullptr, "learned routers need logits");
  stats.groups += 1;
  stats.tokens += T;
  stats.requested += static_cast<int64_t>(T) * config.top_k;
  for (int e = 0; e < E; ++e) {
    stats.demand[e] += plan.demand[e];
    stats.load[e] += plan.load[e];
    stats.kept += plan.load[e];
  }
  stats.aux_loss_sum += plan.aux_loss;
  stats.z_loss_sum += plan.z_loss;
  // For token choice the selected experts are all entries (kept or not); for expert choice
  // a token's experts are those it kept.
  const bool token_choice = is_token_choice(config.router);

  // Tokens in fixed blocks: each block summed in token order, the block sums added in block
  // order (the ordered clause), so the sums do not depend on the thread count.
  const int blocks = (T + kTokenBlock - 1) / kTokenBlock;
  int64_t without_slot = 0;
  double router_entropy = 0.0, gate_entropy = 0.0, topk_prob = 0.0;
#pragma omp parallel for ordered schedule(static, 1) reduction(+ : without_slot)
  for (int block = 0; block < blocks; ++block) {
    double block_router = 0.0, block_gate = 0.0, block_topk = 0.0;
    const int last = std::min(T, (block + 1) * kTokenBlock);
    for (int t = block * kTokenBlock; t < last; ++t) {
      const int64_t base = static_cast<int64_t>(t) * slots;
      double gate_sum = 0.0;
      int kept = 0;
      for (int s = 0; s < slots; ++s) {
        if (plan.kept[base + s]) {
          gate_sum += plan.gate[base + s];
          ++kept;
        }
      }
      if (kept == 0) {
        ++without_slot;
      } else if (gate_sum > 0.0) {
        double h = 0.0;
        for (int s = 0; s < slots; ++s) {
          if (!plan.kept[base + s]) continue;
          const double q = plan.gate[base + s] / gate_sum;
          if (q > 0.0) h -= q * std::log(q);
        }
        block_gate += h;
      }
      if (logits != nullptr && has_learned_router(config.router)) {
        // Softmax of the row via fast_exp into a per-thread scratch row (allocated once).
        thread_local std::vector<float> weights;
        weights.resize(E);
        const float* z = logits + static_cast<int64_t>(t) * E;
        const float max_z = row_max(z, E);
        fast_exp_shifted(weights.data(), z, max_z, E);
        const double sum = row_sum(weights.data(), E);
        float weighted_lanes = 0.0f;  // sum_e w_e (z_e - max z); vectorises as a float reduction
#pragma omp simd reduction(+ : weighted_lanes)
        for (int e = 0; e < E; ++e) weighted_lanes += weights[e] * (z[e] - max_z);
        const double weighted = weighted_lanes;
        // H(p) = log sum - sum_e p_e x_e with x = z - max z
        block_router += std::log(sum) - weighted / sum;
        double mass = 0.0;
        for (int s = 0; s < slots; ++s) {
          const int e = plan.expert[base + s];
          if (e >= 0 && (token_choice || plan.kept[base + s])) mass += weights[e];
        }
        block_topk += mass / sum;
      }
    }
#pragma omp ordered
    {
      router_entropy += block_router;
      gate_entropy += block_gate;
      topk_prob += block_topk;
    }
  }
  stats.tokens_without_slot += without_slot;
  stats.router_entropy_sum += router_entropy;
  stats.gate_entropy_sum += gate_entropy;
  stats.topk_prob_sum += topk_prob;
}

void routing_stats_allreduce(RoutingStats& stats, MPI_Comm comm) {
  int64_t counts[5] = {stats.groups, stats.tokens, stats.requested, stats.kept,
                       stats.tokens_without_slot};
  double sums[5] = {stats.router_entropy_sum, stats.gate_entropy_sum, stats.topk_prob_sum,
                    stats.aux_loss_sum, stats.z_loss_sum};
  MOEBENCH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, counts, 5, MPI_INT64_T, MPI_SUM, comm));
  MOEBENCH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, sums, 5, MPI_DOUBLE, MPI_SUM, comm));
  const int E = static_cast<int>(stats.load.size());
  MOEBENCH_MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, stats.demand.data(), E, MPI_INT64_T, MPI_SUM, comm));
  MOEBENCH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, stats.load.data(), E, MPI_INT64_T, MPI_SUM, comm));
  stats.groups = counts[0];
  stats.tokens = counts[1];
  stats.requested = counts[2];
  stats.kept = counts[3];
  stats.tokens_without_slot = counts[4];
  stats.router_entropy_sum = sums[0];
  stats.gate_entropy_sum = sums[1];
  stats.topk_prob_sum = sums[2];
  stats.aux_loss_sum = sums[3];
  stats.z_loss_sum = sums[4];
}

RoutingMetrics routing_metrics(const RoutingStats& stats) {
  RoutingMetrics m;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const int E = static_cast<int>(stats.load.size());
  const double tokens = static_cast<double>(stats.tokens);
  m.drop_rate = stats.requested > 0
                    ? 1.0 - static_cast<double>(stats.kept) / static_cast<double>(stats.requested)
                    : 0.0;
  m.token_drop_rate = stats.tokens > 0 ? static_cast<double>(stats.tokens_without_slot) / tokens : 0.0;
  double mean = 0.0, max_load = 0.0;
  for (int e = 0; e < E; ++e) {
    mean += static_cast<double>(stats.load[e]);
    max_load = std::max(max_load, static_cast<double>(stats.load[e]));
    if (stats.load[e] == 0) ++m.unused_experts;
  }
  mean /= std::max(E, 1);
  double variance = 0.0;
  for (int e = 0; e < E; ++e) {
    const double diff = static_cast<double>(stats.load[e]) - mean;
    variance += diff * diff;
  }
  variance /= std::max(E, 1);
  m.load_cv = mean > 0.0 ? std::sqrt(variance) / mean : 0.0;
  m.max_load_ratio = mean > 0.0 ? max_load / mean : 0.0;
  const double with_slot = static_cast<double>(stats.tokens - stats.tokens_without_slot);
  m.gate_entropy = with_slot > 0.0 ? stats.gate_entropy_sum / with_slot : 0.0;
  m.router_entropy = stats.learned_router && tokens > 0 ? stats.router_entropy_sum / tokens : nan;
  m.mean_topk_prob = stats.learned_router && tokens > 0 ? stats.topk_prob_sum / tokens : nan;
  const double groups = static_cast<double>(std::max<int64_t>(stats.groups, 1));
  m.aux_loss = stats.aux_loss_sum / groups;
  m.z_loss = stats.z_loss_sum / groups;
  return m;
}

}  // namespace moebench
