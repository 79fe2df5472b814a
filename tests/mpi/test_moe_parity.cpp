// Expert-parallel parity: under mpirun with P ranks, rank r routes group r through the layer
// with experts sharded over the ranks; every rank also runs a single-process reference
// (MPI_COMM_SELF, all experts local) over all P groups. Routing decisions must match exactly,
// outputs and gradients within 1e-5 relative; ragged and padded dispatch must agree.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "moebench/metrics.hpp"
#include "moebench/moe_layer.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

constexpr int kTokens = 24, kModel = 8, kHidden = 12, kExperts = 8;

struct Result {
  RoutingPlan plan;
  std::vector<float> y, dx, router_grads, expert_grads;
  RoutingStats stats;
  std::vector<std::vector<int64_t>> bytes;
};

void make_group(int group, std::vector<float>& x, std::vector<float>& dy, std::vector<int32_t>& ids) {
  x.resize(kTokens * kModel);
  dy.resize(kTokens * kModel);
  ids.resize(kTokens);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>(random_normal(5, 100 + group, i));
    dy[i] = static_cast<float>(random_normal(5, 200 + group, i));
  }
  for (int t = 0; t < kTokens; ++t) ids[t] = static_cast<int32_t>(random_bits(5, 300 + group, t) % 1000);
}

// Runs group(s) through a layer on `comm`; `groups` lists the groups this process routes in
// order, and the result keeps the outputs of group `keep` and the parameter gradients summed
// over the groups.
Result run(const MoELayerConfig& config, MPI_Comm comm, const std::vector<int>& groups, int keep) {
  MoELayer layer(config, comm, kTokens);
  Result result;
  result.stats.reset(kExperts);
  std::vector<float> x, dy, y(kTokens * kModel), dx(kTokens * kModel);
  std::vector<int32_t> ids;
  for (int group : groups) {
    make_group(group, x, dy, ids);
    layer.forward(y.data(), x.data(), ids.data(), kTokens);
    routing_stats_add(result.stats, layer.plan(), layer.logits(), config.routing);
    layer.backward(dx.data(), dy.data());
    if (group == keep) {
      result.plan = layer.plan();
      result.y = y;
      result.dx = dx;
    }
    // backward() overwrites the parameter gradients: sum them over the groups here.
    const auto add = [](std::vector<float>& sum, const std::vector<float>& grads) {
      sum.resize(grads.size(), 0.0f);
      for (size_t i = 0; i < grads.size(); ++i) sum[i] += grads[i];
    };
    add(result.router_grads, layer.router_grads());
    add(result.expert_grads, layer.expert_grads());
  }
  result.bytes = layer.dispatcher().bytes_sent();
  return result;
}

// max |a - b| / max(max |b|, tiny): relative to the scale of the reference.
double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0, scale = 1e-30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
  }
  return diff / scale;
}

struct ParityCase {
  RouterKind router;
  RouterArch arch;
  int top_k;
  double capacity_factor;
  bool renorm;
};

class Parity : public ::testing::TestWithParam<ParityCase> {};

TEST_P(Parity, ShardedLayerMatchesSingleProcessReference) {
  const ParityCase c = GetParam();
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ASSERT_EQ(kExperts % size, 0) << "run with 1, 2, 4 or 8 ranks";

  MoELayerConfig config;
  config.routing.router = c.router;
  config.routing.num_experts = kExperts;
  config.routing.top_k = c.top_k;
  config.routing.capacity_factor = c.capacity_factor;
  config.routing.renorm_after_drop = c.renorm;
  config.routing.balance = parse_balance_kind("--balance", "auto", c.router);
  config.routing.z_loss_coeff = has_learned_router(c.router) ? 0.01f : 0.0f;
  config.router_arch = c.arch;
  config.router_hidden = 6;
  config.d_model = kModel;
  config.d_hidden = kHidden;
  config.seed = 4321;

  std::vector<int> all_groups(size);
  for (int g = 0; g < size; ++g) all_groups[g] = g;
  const Result reference = run(config, MPI_COMM_SELF, all_groups, rank);

  for (DispatchMode mode : {DispatchMode::ragged, DispatchMode::padded}) {
    SCOPED_TRACE(to_string(mode));
    config.dispatch = mode;
    Result sharded = run(config, MPI_COMM_WORLD, {rank}, rank);

    // Routing decisions: exact.
    EXPECT_EQ(sharded.plan.expert, reference.plan.expert);
    EXPECT_EQ(sharded.plan.kept, reference.plan.kept);
    EXPECT_EQ(sharded.plan.position, reference.plan.position);
    EXPECT_EQ(sharded.plan.gate, reference.plan.gate);

    // Outputs and input gradients.
    EXPECT_LE(relative_difference(sharded.y, reference.y), 1e-5);
    EXPECT_LE(relative_difference(sharded.dx, reference.dx), 1e-5);

    // Router gradients: the sum over ranks equals the reference's sum over groups.
    MPI_Allreduce(MPI_IN_PLACE, sharded.router_grads.data(),
                  static_cast<int>(sharded.router_grads.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (!reference.router_grads.empty()) {
      EXPECT_LE(relative_difference(sharded.router_grads, reference.router_grads), 1e-5);
    }
    // Expert gradients: this rank's experts are a contiguous slice of the reference's.
    const size_t slice = sharded.expert_grads.size();
    ASSERT_EQ(slice * size, reference.expert_grads.size());
    // Parameters are stored per tensor (w1, b1, w2, b2) over all local experts, so compare
    // tensor by tensor.
    const ExpertShape shape{kExperts / size, kModel, kHidden};
    const int64_t sizes[4] = {static_cast<int64_t>(kModel) * kHidden, kHidden,
                              static_cast<int64_t>(kHidden) * kModel, kModel};
    int64_t local_offset = 0, global_offset = 0;
    for (int64_t per_expert : sizes) {
      const int64_t local = per_expert * shape.num_experts;
      std::vector<float> mine(sharded.expert_grads.begin() + local_offset,
                              sharded.expert_grads.begin() + local_offset + local);
      const int64_t first = global_offset + per_expert * shape.num_experts * rank;
      std::vector<float> theirs(reference.expert_grads.begin() + first,
                                reference.expert_grads.begin() + first + local);
      EXPECT_LE(relative_difference(mine, theirs), 1e-5);
      local_offset += local;
      global_offset += per_expert * kExperts;
    }

    // Global metrics: counts add up exactly to the reference's over all groups.
    routing_stats_allreduce(sharded.stats, MPI_COMM_WORLD);
    EXPECT_EQ(sharded.stats.load, reference.stats.load);
    EXPECT_EQ(sharded.stats.demand, reference.stats.demand);
    EXPECT_EQ(sharded.stats.tokens_without_slot, reference.stats.tokens_without_slot);

    // Bytes on the wire: ragged sends exactly the kept rows; padded E_local * C rows per peer.
    const int local_experts = kExperts / size;
    for (int p = 0; p < size; ++p) {
      int64_t rows = 0;
      for (int le = 0; le < local_experts; ++le) {
        rows += mode == DispatchMode::ragged ? sharded.plan.load[p * local_experts + le]
                                             : sharded.plan.capacity;
      }
      EXPECT_EQ(sharded.bytes[kDispatchForward][p], rows * kModel * 4) << "peer " << p;
      EXPECT_EQ(sharded.bytes[kCombineBackward][p], rows * kModel * 4) << "peer " << p;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Routers, Parity,
    ::testing::Values(ParityCase{RouterKind::topk_hard, RouterArch::linear, 2, 1.0, false},
                      ParityCase{RouterKind::softk, RouterArch::mlp, 2, 1.25, true},
                      ParityCase{RouterKind::top1, RouterArch::mlp_hadamard, 1, 1.0, false},
                      ParityCase{RouterKind::expert_choice, RouterArch::linear, 2, 1.0, false},
                      ParityCase{RouterKind::hash, RouterArch::linear, 2, 0.9, false},
                      ParityCase{RouterKind::softk, RouterArch::linear, 4, 0.0, false}),
    [](const ::testing::TestParamInfo<ParityCase>& param_info) {
      return std::string(to_string(param_info.param.router)) + "_" +
             to_string(param_info.param.arch) + "_k" + std::to_string(param_info.param.top_k);
    });

}  // namespace
}  // namespace moebench
