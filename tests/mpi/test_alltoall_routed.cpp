// The routed pattern of `moebench alltoall` (make_routed_pattern): the matrix the benchmark
// exchanges is the real Dispatcher's bytes_sent() for the same routing plan, per router and
// layout; padded sends E_local * C * d * 4 bytes to every peer and ragged the kept rows of the
// peer's experts; the receive side is the transpose; and every exchange algorithm moves that
// matrix element for element (the check itself catches a corrupted element). Runs on 1, 2, 4
// ranks.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <string>
#include <vector>

#include "moebench/alltoall.hpp"
#include "moebench/alltoall_bench.hpp"
#include "moebench/check.hpp"
#include "moebench/dispatcher.hpp"
#include "moebench/routing.hpp"

namespace moebench {
namespace {

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  return ranks;
}

RoutedOptions small_options(RouterKind router, int top_k, DispatchMode mode) {
  RoutedOptions o;
  o.routing.router = router;
  o.routing.num_experts = 8;
  o.routing.top_k = top_k;
  o.routing.capacity_factor = 1.0;
  o.dispatch = mode;
  o.tokens = 96;
  o.d_model = 6;
  o.inputs.vocab = 1000;
  o.inputs.seed = 42;
  return o;
}

struct Case {
  RouterKind router;
  int top_k;
  std::string distribution;
};

const Case kCases[] = {{RouterKind::top1, 1, "gaussian"},     {RouterKind::topk_hard, 2, "gaussian"},
                       {RouterKind::softk, 2, "zipf"},        {RouterKind::hash, 2, "zipf"},
                       {RouterKind::expert_choice, 2, "gaussian"}, {RouterKind::topk_hard, 4, "zipf"}};

TEST(AlltoallRouted, MatrixIsTheDispatchersBytesSent) {
  const int rank = world_rank(), ranks = world_size();
  for (const Case& c : kCases) {
    for (DispatchMode mode : {DispatchMode::ragged, DispatchMode::padded}) {
      RoutedOptions o = small_options(c.router, c.top_k, mode);
      o.inputs.distribution = c.distribution;
      o.inputs.zipf_s = 1.2;
      const std::string what = std::string(to_string(c.router)) + " k=" + std::to_string(c.top_k) +
                               " " + to_string(mode) + " " + c.distribution + " rank " + std::to_string(rank);
      const RoutedPattern pattern = make_routed_pattern(o, MPI_COMM_WORLD);

      // The same plan, routed and dispatched here independently through the real Dispatcher.
      std::vector<float> logits;
      std::vector<int32_t> ids;
      make_routed_inputs(logits, ids, o, rank);
      RoutingPlan plan;
      plan.reserve(o.routing, o.tokens);
      route(plan, has_learned_router(c.router) ? logits.data() : nullptr, ids.data(), nullptr,
            o.tokens, o.routing);
      ASSERT_EQ(plan.load, pattern.plan.load) << what;
      ASSERT_EQ(plan.kept, pattern.plan.kept) << what;
      Dispatcher dispatcher(MPI_COMM_WORLD, o.routing.num_experts, o.d_model, mode);
      dispatcher.reserve(o.routing, o.tokens);
      std::vector<float> x(static_cast<size_t>(o.tokens) * o.d_model, 0.5f), y(x.size());
      std::vector<float> rows(static_cast<size_t>(dispatcher.max_expert_rows()) * o.d_model);
      dispatcher.set_plan(plan);
      dispatcher.dispatch(rows.data(), x.data());
      dispatcher.combine(y.data(), rows.data());

      const int local_experts = o.routing.num_experts / ranks;
      ASSERT_EQ(static_cast<int>(pattern.dispatch.send_counts.size()), ranks);
      for (int p = 0; p < ranks; ++p) {
        // What the benchmark's algorithms move (in floats) is exactly what the Dispatcher sent.
        EXPECT_EQ(int64_t{pattern.dispatch.send_counts[p]} * 4, dispatcher.bytes_sent()[kDispatchForward][p]) << what << " to " << p;
        EXPECT_EQ(int64_t{pattern.combine.send_counts[p]} * 4, dispatcher.bytes_sent()[kCombineForward][p]) << what << " to " << p;
        // And what the layouts say it must be.
        int64_t kept_rows = 0;
        for (int e = p * local_experts; e < (p + 1) * local_experts; ++e) kept_rows += plan.load[e];
        const int64_t ragged = kept_rows * o.d_model * 4;
        const int64_t padded = int64_t{local_experts} * plan.capacity * o.d_model * 4;
        EXPECT_EQ(pattern.ragged_bytes[p], ragged) << what << " to " << p;
        EXPECT_EQ(pattern.padded_bytes[p], padded) << what << " to " << p;
        EXPECT_EQ(int64_t{pattern.dispatch.send_counts[p]} * 4, mode == DispatchMode::padded ? padded : ragged)
            << what << " to " << p;
      }
      // The receive side is the transpose of every rank's send side, packed in rank order.
      std::vector<int> matrix(static_cast<size_t>(ranks) * ranks);
      MPI_Allgather(pattern.dispatch.send_counts.data(), ranks, MPI_INT, matrix.data(), ranks, MPI_INT,
                    MPI_COMM_WORLD);
      int64_t displ = 0;
      for (int s = 0; s < ranks; ++s) {
        EXPECT_EQ(pattern.dispatch.recv_counts[s], matrix[static_cast<size_t>(s) * ranks + rank]) << what;
        EXPECT_EQ(pattern.dispatch.recv_displs[s], displ) << what;
        EXPECT_EQ(pattern.combine.send_counts[s], pattern.dispatch.recv_counts[s]) << what;
        displ += pattern.dispatch.recv_counts[s];
      }
      EXPECT_EQ(pattern.dispatch.recv_total, displ) << what;
    }
  }
}

TEST(AlltoallRouted, EveryAlgorithmMovesTheMatrix) {
  const int rank = world_rank(), ranks = world_size();
  const RoutedPattern pattern =
      make_routed_pattern(small_options(RouterKind::topk_hard, 2, DispatchMode::ragged), MPI_COMM_WORLD);
  const int64_t elements = std::max<int64_t>({pattern.dispatch.send_total, pattern.dispatch.recv_total, 1});
  std::vector<float> send(elements), recv(elements);
  for (ExchangeAlgorithm algorithm :
       {ExchangeAlgorithm::alltoallv, ExchangeAlgorithm::pairwise, ExchangeAlgorithm::hierarchical}) {
    AlltoallvExchange exchange(MPI_COMM_WORLD, algorithm, ranks % 2 == 0 ? 2 : 1);
    for (const ExchangeCounts* counts : {&pattern.dispatch, &pattern.combine}) {
      fill_expected_blocks(send.data(), *counts, 99, rank);
      std::fill(recv.begin(), recv.end(), -1.0f);
      exchange.run(send.data(), counts->send_counts.data(), counts->send_displs.data(), recv.data(),
                   counts->recv_counts.data(), counts->recv_displs.data(), MPI_FLOAT);
      EXPECT_EQ(count_wrong_elements(recv.data(), *counts, 99, rank), 0) << to_string(algorithm);
      // The check sees a single corrupted element.
      if (counts->recv_total > 0) {
        recv[counts->recv_total / 2] += 1.0f;
        EXPECT_EQ(count_wrong_elements(recv.data(), *counts, 99, rank), 1) << to_string(algorithm);
      }
    }
  }
}

TEST(AlltoallRouted, BadCellsAreUsageErrors) {
  const int ranks = world_size();
  RoutedOptions too_many = small_options(RouterKind::topk_hard, 9, DispatchMode::ragged);  // k > E = 8
  EXPECT_THROW(make_routed_pattern(too_many, MPI_COMM_WORLD), UsageError);
  if (ranks > 1) {
    RoutedOptions uneven = small_options(RouterKind::topk_hard, 1, DispatchMode::ragged);
    uneven.routing.num_experts = ranks + 1;  // not divisible by the rank count
    try {
      make_routed_pattern(uneven, MPI_COMM_WORLD);
      ADD_FAILURE() << "E % P != 0 accepted";
    } catch (const UsageError& error) {
      EXPECT_NE(std::string(error.what()).find("--experts"), std::string::npos) << error.what();
    }
  }
}

}  // namespace
}  // namespace moebench
