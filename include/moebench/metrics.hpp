// Routing metrics (DESIGN §4). Statistics are sums, so they add over groups and across ranks
// (routing_stats_allreduce) before the ratios are taken (routing_metrics).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "moebench/routing.hpp"

namespace moebench {

struct RoutingStats {
  int64_t groups = 0;
  int64_t tokens = 0;                // T summed over groups
  int64_t requested = 0;             // T * k summed over groups
  int64_t kept = 0;                  // kept assignments
  int64_t tokens_without_slot = 0;   // tokens with no kept assignment
  std::vector<int64_t> demand;       // [E]
  std::vector<int64_t> load;         // [E]
  double router_entropy_sum = 0.0;   // sum over tokens of H(p_t), nats
  double gate_entropy_sum = 0.0;     // sum over tokens with a kept assignment of H(gates)
  double topk_prob_sum = 0.0;        // sum over tokens of p-mass of the selected experts
  double aux_loss_sum = 0.0;         // sum over groups
  double z_loss_sum = 0.0;           // sum over groups
  bool learned_router = true;        // false for hash: entropy and top-k mass do not apply

  void reset(int num_experts);
};

// Adds one group's plan. `logits` [T, E] is needed for learned routers (entropies and
// top-k mass are computed from softmax(logits) here, outside any timed region).
void routing_stats_add(RoutingStats& stats, const RoutingPlan& plan, const float* logits,
                       const RoutingConfig& config);

// Sums the statistics of all ranks of `comm` (in place, on every rank).
void routing_stats_allreduce(RoutingStats& stats, MPI_Comm comm);

struct RoutingMetrics {
  double drop_rate = 0.0;        // 1 - kept / requested
  double token_drop_rate = 0.0;  // tokens with no kept assignment / tokens
  double load_cv = 0.0;          // std(load) / mean(load) (population std)
  double max_load_ratio = 0.0;   // max(load) / mean(load)
  int unused_experts = 0;        // experts with load 0
  double router_entropy = 0.0;   // mean over tokens of H(p_t); NaN for hash
  double gate_entropy = 0.0;     // mean over tokens with a kept assignment of H(w / sum w)
  double mean_topk_prob = 0.0;   // mean over tokens of sum of p over selected experts; NaN for hash
  double aux_loss = 0.0;         // mean over groups
  double z_loss = 0.0;           // mean over groups
};

RoutingMetrics routing_metrics(const RoutingStats& stats);

}  // namespace moebench
