// NCCL exchanges and the GPU dispatcher under mpirun with P = 1, 2, 4 ranks (one GPU per rank;
// skipped where a node has fewer GPUs than ranks):
//  - nccl_alltoallv / nccl_alltoall against MPI_Alltoallv / MPI_Alltoall of the same data
//    (bit-exact: nothing is computed);
//  - nccl_allreduce_average against MPI_Allreduce / P;
//  - CudaDispatcher against the CPU Dispatcher (ragged and padded, token choice with drops):
//    routing plans on each side from the same logits, then dispatch, combine,
//    combine_backward and dispatch_backward compared (tolerances below). On one rank this is
//    the path without exchange (rows packed into and read from the expert-major buffers);
//  - combine_backward refused before combine of the current plan, as on the CPU;
//  - the phase timers: pending event pairs resolved by timings(), dropped by reset_counters(),
//    and a ring that stays bounded over more phases than it holds.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "dispatcher_cuda.hpp"
#include "exchange_nccl.hpp"
#include "gpu_test_support.hpp"
#include "moebench/dispatcher.hpp"
#include "moebench/random.hpp"
#include "moebench/routing.hpp"
#include "routing_cuda.hpp"

namespace moebench {
namespace {

const bool registered = test::register_gpu_environment();

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// Rows rank `from` sends rank `to` (0 included, uneven).
int64_t rows_between(int from, int to, int round) { return (from * 7 + to * 3 + round * 5) % 11; }

// A value every receiver can predict: exact in float (< 2^24).
float payload(int from, int to, int64_t index) {
  return static_cast<float>((from * 131 + to * 31 + index * 7) % 1000003);
}

TEST(CudaExchange, AlltoallvMatchesMpi) {
  MOEBENCH_REQUIRE_GPU();
  const int rank = world_rank(), P = world_size();
  constexpr int kWidth = 13;  // floats per row
  for (int round = 0; round < 3; ++round) {
    std::vector<int64_t> send_counts(P), send_displs(P), recv_counts(P), recv_displs(P);
    std::vector<int> mpi_sc(P), mpi_sd(P), mpi_rc(P), mpi_rd(P);
    int64_t send_total = 0, recv_total = 0;
    for (int p = 0; p < P; ++p) {
      send_counts[p] = rows_between(rank, p, round) * kWidth;
      recv_counts[p] = rows_between(p, rank, round) * kWidth;
      send_displs[p] = send_total;
      recv_displs[p] = recv_total;
      send_total += send_counts[p];
      recv_total += recv_counts[p];
      mpi_sc[p] = static_cast<int>(send_counts[p]);
      mpi_sd[p] = static_cast<int>(send_displs[p]);
      mpi_rc[p] = static_cast<int>(recv_counts[p]);
      mpi_rd[p] = static_cast<int>(recv_displs[p]);
    }
    std::vector<float> send(static_cast<size_t>(send_total));
    for (int p = 0; p < P; ++p) {
      for (int64_t i = 0; i < send_counts[p]; ++i) send[send_displs[p] + i] = payload(rank, p, i);
    }
    std::vector<float> want(static_cast<size_t>(recv_total), -1.0f);
    ASSERT_EQ(MPI_Alltoallv(send.data(), mpi_sc.data(), mpi_sd.data(), MPI_FLOAT, want.data(),
                            mpi_rc.data(), mpi_rd.data(), MPI_FLOAT, MPI_COMM_WORLD),
              MPI_SUCCESS);

    CUstream_st* comm = context.comm_stream();
    DeviceArray<float> send_device = test::to_device(send, comm);
    std::vector<float> sentinel(want.size(), -1.0f);
    DeviceArray<float> recv_device = test::to_device(sentinel, comm);
    nccl_alltoallv(send_device.data(), send_counts.data(), send_displs.data(), recv_device.data(),
                   recv_counts.data(), recv_displs.data(), ncclFloat32, context.nccl(), comm);
    const std::vector<float> got = test::to_host(recv_device.data(), want.size(), comm);
    EXPECT_EQ(got, want) << "round " << round;
  }

  // The fixed-size exchange (row counts): 3 int32 per peer.
  std::vector<int32_t> counts(static_cast<size_t>(P) * 3), want(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) counts[i] = static_cast<int32_t>(rank * 1000 + i);
  ASSERT_EQ(MPI_Alltoall(counts.data(), 3, MPI_INT32_T, want.data(), 3, MPI_INT32_T, MPI_COMM_WORLD),
            MPI_SUCCESS);
  CUstream_st* comm = context.comm_stream();
  DeviceArray<int32_t> counts_device = test::to_device(counts, comm);
  DeviceArray<int32_t> received(counts.size());
  nccl_alltoall(counts_device.data(), received.data(), 3, ncclInt32, context.nccl(), comm);
  EXPECT_EQ(test::to_host(received.data(), counts.size(), comm), want);
}

// Averages of P values summed in another order than MPI's: relative 1e-6 (a few ulp).
TEST(CudaExchange, AllreduceAverageMatchesMpi) {
  MOEBENCH_REQUIRE_GPU();
  const int rank = world_rank(), P = world_size();
  std::vector<float> grads(1000);
  for (size_t i = 0; i < grads.size(); ++i) {
    grads[i] = static_cast<float>(random_normal(8, static_cast<uint64_t>(rank), i));
  }
  std::vector<float> want(grads.size());
  ASSERT_EQ(MPI_Allreduce(grads.data(), want.data(), static_cast<int>(grads.size()), MPI_FLOAT,
                          MPI_SUM, MPI_COMM_WORLD),
            MPI_SUCCESS);
  for (float& v : want) v /= static_cast<float>(P);
  CUstream_st* comm = context.comm_stream();
  DeviceArray<float> device = test::to_device(grads, comm);
  nccl_allreduce_average(device.data(), grads.size(), context.nccl(), comm);
  const std::vector<float> got = test::to_host(device.data(), grads.size(), comm);
  EXPECT_LE(test::relative_max_diff(got, want), 1e-6);
}

// ---- CudaDispatcher against the CPU Dispatcher -----------------------------------------------

using test::all_ranks;
using test::normal;

constexpr int kTokens = 700;

// One step through both dispatchers (reserved for config and kTokens) with the data and
// logits of `pass`, compared.
void expect_pass_matches_cpu(const RoutingConfig& config, DispatchMode mode, int d,
                             CudaContext& context, Dispatcher& cpu, CudaDispatcher& gpu,
                             int pass) {
  SCOPED_TRACE("pass " + std::to_string(pass));
  const int rank = world_rank();
  const int E = config.num_experts;
  const uint64_t stream_base = 1000 * static_cast<uint64_t>(rank) + 10 * uint64_t(pass);
  const std::vector<float> logits = normal(static_cast<size_t>(kTokens) * E, 41, stream_base);
  const std::vector<float> x = normal(static_cast<size_t>(kTokens) * d, 41, stream_base + 1);
  const std::vector<float> dy = normal(x.size(), 41, stream_base + 2);
  const std::vector<float> dx_start = normal(x.size(), 41, stream_base + 3);

  // Both plans. Their decisions must agree exactly; the gates may not (CUDA's expf is not
  // glibc's, and softk's gates go through it), so the CPU side takes the GPU's gates: this
  // test is about moving and weighting rows, tests/cuda/test_cuda_routing.cpp about gates.
  RoutingPlan cpu_plan;
  cpu_plan.reserve(config, kTokens);
  route(cpu_plan, logits.data(), nullptr, nullptr, kTokens, config);
  CUstream_st* stream = context.compute_stream();
  DeviceRoutingPlan gpu_plan;
  gpu_plan.reserve(config, kTokens);
  DeviceArray<float> logits_device = test::to_device(logits, stream);
  cuda_route(gpu_plan, logits_device.data(), nullptr, nullptr, kTokens, config, stream);
  {
    RoutingPlan from_gpu;
    from_gpu.reserve(config, kTokens);
    download_plan(from_gpu, gpu_plan, stream);
    const bool same = from_gpu.expert == cpu_plan.expert && from_gpu.kept == cpu_plan.kept &&
                      from_gpu.position == cpu_plan.position;
    EXPECT_TRUE(same) << "rank " << rank << ": routing decisions differ";
    // Every rank stops, or none: a rank returning alone would leave the others waiting in the
    // dispatchers' exchanges.
    ASSERT_TRUE(all_ranks(same)) << "routing decisions differ on some rank";
    cpu_plan.gate = from_gpu.gate;
  }

  // CPU side.
  cpu.set_plan(cpu_plan);
  const int64_t N = cpu.expert_rows();
  std::vector<float> cpu_expert_in(static_cast<size_t>(N * d));
  cpu.dispatch(cpu_expert_in.data(), x.data());
  // What the experts return, the same on both sides: a function of the expert-major row.
  const std::vector<float> expert_out = normal(static_cast<size_t>(N * d), 41, stream_base + 4);
  const std::vector<float> d_expert_in = normal(expert_out.size(), 41, stream_base + 5);
  std::vector<float> cpu_y(x.size()), cpu_d_expert_out(expert_out.size()),
      cpu_d_gate(static_cast<size_t>(kTokens) * cpu_plan.slots), cpu_dx = dx_start;
  cpu.combine(cpu_y.data(), expert_out.data());
  cpu.combine_backward(cpu_d_expert_out.data(), cpu_d_gate.data(), dy.data());
  cpu.dispatch_backward(cpu_dx.data(), d_expert_in.data());

  // GPU side.
  gpu.set_plan(gpu_plan);
  bool same_layout = gpu.expert_rows() == N;
  for (int le = 0; le <= gpu.local_experts(); ++le) {
    EXPECT_EQ(gpu.expert_row_offsets()[le], cpu.expert_row_offsets()[le]) << "local expert " << le;
    same_layout = same_layout && gpu.expert_row_offsets()[le] == cpu.expert_row_offsets()[le];
  }
  EXPECT_EQ(gpu.expert_rows(), N);
  ASSERT_TRUE(all_ranks(same_layout)) << "expert-major layouts differ on some rank";
  DeviceArray<float> x_device = test::to_device(x, stream);
  DeviceArray<float> dy_device = test::to_device(dy, stream);
  DeviceArray<float> dx_device = test::to_device(dx_start, stream);
  DeviceArray<float> expert_out_device = test::to_device(expert_out, stream);
  DeviceArray<float> d_expert_in_device = test::to_device(d_expert_in, stream);
  // Outputs start as garbage: every row, padding included, and every d_gate must be written.
  const std::vector<float> garbage_rows(expert_out.size(), -7.0f);
  DeviceArray<float> expert_in = test::to_device(garbage_rows, stream);
  DeviceArray<float> d_expert_out = test::to_device(garbage_rows, stream);
  DeviceArray<float> y = test::to_device(std::vector<float>(x.size(), -7.0f), stream);
  DeviceArray<float> d_gate = test::to_device(std::vector<float>(cpu_d_gate.size(), -7.0f), stream);
  gpu.dispatch(expert_in.data(), x_device.data());
  gpu.combine(y.data(), expert_out_device.data());
  gpu.combine_backward(d_expert_out.data(), d_gate.data(), dy_device.data());
  gpu.dispatch_backward(dx_device.data(), d_expert_in_device.data());

  // Dispatch and the gradient rows gate * dy only move or multiply once (with the same
  // gates): identical bits.
  EXPECT_EQ(test::to_host(expert_in.data(), expert_in.size(), stream), cpu_expert_in);
  EXPECT_EQ(test::to_host(d_expert_out.data(), d_expert_out.size(), stream), cpu_d_expert_out);
  // y and dx sum at most k (+1) terms in the same order as the CPU: a few ulp, 1e-6 of scale.
  const std::vector<float> got_y = test::to_host(y.data(), y.size(), stream);
  const std::vector<float> got_dx = test::to_host(dx_device.data(), dx_device.size(), stream);
  EXPECT_LE(test::relative_max_diff(got_y, cpu_y), 1e-6) << "combine";
  EXPECT_LE(test::relative_max_diff(got_dx, cpu_dx), 1e-6) << "dispatch_backward";
  // d_gate is a dot product of d terms each <= M = max|dy| max|row|, summed in another order:
  // |error| <= d 2^-24 (sum of |terms|) <= (d 2^-24) d M, below 1e-5 d M for d <= 160.
  const std::vector<float> got_d_gate = test::to_host(d_gate.data(), d_gate.size(), stream);
  const double bound = 1e-5 * d * test::max_abs(dy.data(), dy.size()) *
                       test::max_abs(expert_out.data(), expert_out.size());
  EXPECT_LE(test::max_abs_diff(got_d_gate.data(), cpu_d_gate.data(), cpu_d_gate.size()), bound)
      << "d_gate";
  // Counters, summed over the passes so far: the CPU dispatcher's bytes per phase and peer
  // (self-sends included, on one rank too), and device time in every phase that runs: on one
  // rank nothing is exchanged, so the exchanges and the count exchange stay 0.
  EXPECT_EQ(gpu.bytes_sent(), cpu.bytes_sent());
  EXPECT_EQ(gpu.count_bytes_sent(), cpu.count_bytes_sent());
  const bool exchanging = world_size() > 1;
  const DispatchTimings& timings = gpu.timings();
  EXPECT_EQ(gpu.pending_timings(), 0);
  EXPECT_GT(timings.permute, 0.0);
  EXPECT_GT(timings.unpermute, 0.0);
  for (int phase = 0; phase < kNumExchangePhases; ++phase) {
    if (exchanging) {
      EXPECT_GT(timings.exchange[phase], 0.0) << exchange_phase_name(phase);
    } else {
      EXPECT_EQ(timings.exchange[phase], 0.0) << exchange_phase_name(phase);
    }
  }
  if (mode == DispatchMode::ragged && exchanging) {
    EXPECT_GT(timings.count_exchange, 0.0);
  } else {
    EXPECT_EQ(timings.count_exchange, 0.0);
  }
  std::printf("  rank %d %s %s d=%d pass %d: %lld expert rows\n", rank, to_string(config.router),
              to_string(mode), d, pass, static_cast<long long>(N));
}

// Two passes through the same pair of dispatchers with different logits: the second plan puts
// padding rows where the first had token rows, so a padding row left unzeroed (or a buffer
// that only happened to be zero when allocated) shows up in the second pass.
void expect_dispatcher_matches_cpu(const RoutingConfig& config, DispatchMode mode, int d,
                                   CudaContext& context) {
  SCOPED_TRACE(std::string(to_string(config.router)) + " " + to_string(mode) + " d=" +
               std::to_string(d));
  Dispatcher cpu(MPI_COMM_WORLD, config.num_experts, d, mode);
  cpu.reserve(config, kTokens);
  CudaDispatcher gpu(context, config.num_experts, d, mode);
  gpu.reserve(config, kTokens);
  for (int pass = 0; pass < 2 && !::testing::Test::HasFatalFailure(); ++pass) {
    expect_pass_matches_cpu(config, mode, d, context, cpu, gpu, pass);
  }
}

TEST(CudaDispatcher, MatchesCpuDispatcher) {
  MOEBENCH_REQUIRE_GPU();
  RoutingConfig topk;
  topk.router = RouterKind::topk_hard;
  topk.num_experts = 8;
  topk.top_k = 2;
  topk.capacity_factor = 1.0;  // drops with random logits
  topk.balance = BalanceKind::none;
  RoutingConfig softk = topk;
  softk.router = RouterKind::softk;
  softk.renorm_after_drop = true;
  softk.capacity_factor = 0.8;
  for (DispatchMode mode : {DispatchMode::ragged, DispatchMode::padded}) {
    expect_dispatcher_matches_cpu(topk, mode, 64, context);  // float4 rows
    expect_dispatcher_matches_cpu(softk, mode, 30, context);  // scalar rows
  }
}

// A ragged top-2 plan over 8 experts routed on the GPU from seeded logits, rows x [T, d] and
// a dispatcher reserved for them, with room for its expert-major rows.
struct DispatcherSetup {
  static constexpr int kWidth = 64;  // d
  RoutingConfig config = test::make_config(RouterKind::topk_hard, 8, 2, 1.0);
  DeviceRoutingPlan plan;
  DeviceArray<float> logits, x;
  CudaDispatcher gpu;
  DeviceArray<float> expert_rows;

  explicit DispatcherSetup(CudaContext& context)
      : gpu(context, config.num_experts, kWidth, DispatchMode::ragged) {
    const uint64_t rank = static_cast<uint64_t>(world_rank());
    CUstream_st* stream = context.compute_stream();
    plan.reserve(config, kTokens);
    logits = test::to_device(
        normal(static_cast<size_t>(kTokens) * config.num_experts, 43, 10 * rank), stream);
    cuda_route(plan, logits.data(), nullptr, nullptr, kTokens, config, stream);
    x = test::to_device(normal(static_cast<size_t>(kTokens) * kWidth, 43, 10 * rank + 1), stream);
    gpu.reserve(config, kTokens);
    expert_rows.resize(static_cast<size_t>(gpu.max_expert_rows()) * kWidth);
  }
};

// combine_backward reads combine's expert outputs (on one rank the caller's expert_out
// itself): before combine of the current plan it refuses, as the CPU Dispatcher does. Every
// rank refuses before communicating, so the ranks stay in step.
TEST(CudaDispatcher, CombineBackwardNeedsCombineOfThePlan) {
  MOEBENCH_REQUIRE_GPU();
  DispatcherSetup setup(context);
  CudaDispatcher& gpu = setup.gpu;
  DeviceArray<float> y(setup.x.size()), dy(setup.x.size()), d_rows(setup.expert_rows.size());
  DeviceArray<float> d_gate(static_cast<size_t>(kTokens) * setup.plan.slots);
  fill_zero(dy.data(), dy.bytes(), context.compute_stream());
  gpu.set_plan(setup.plan);
  EXPECT_THROW(gpu.combine_backward(d_rows.data(), d_gate.data(), dy.data()), Error);
  gpu.dispatch(setup.expert_rows.data(), setup.x.data());
  gpu.combine(y.data(), setup.expert_rows.data());
  EXPECT_NO_THROW(gpu.combine_backward(d_rows.data(), d_gate.data(), dy.data()));
  gpu.set_plan(setup.plan);  // a new plan: its combine has not run
  EXPECT_THROW(gpu.combine_backward(d_rows.data(), d_gate.data(), dy.data()), Error);
  context.synchronize();
}

double total_seconds(const DispatchTimings& t) {
  double total = t.permute + t.unpermute + t.count_exchange;
  for (double seconds : t.exchange) total += seconds;
  return total;
}

// The phase timers leave their event pairs pending until timings() reads them: reading
// resolves every pending pair into the sums (which keep accumulating), reset_counters() drops
// the pending pairs, and more phases than the ring holds resolve the oldest pairs on the way,
// the ring staying bounded.
TEST(CudaDispatcher, TimingsResolvePendingPairs) {
  MOEBENCH_REQUIRE_GPU();
  DispatcherSetup setup(context);
  CudaDispatcher& gpu = setup.gpu;
  const bool exchanging = world_size() > 1;
  // Dispatch's timed phases: the permute; on several ranks also the exchange and the reorder.
  const int pairs_per_dispatch = exchanging ? 3 : 1;
  auto dispatch = [&] { gpu.dispatch(setup.expert_rows.data(), setup.x.data()); };

  gpu.set_plan(setup.plan);
  dispatch();
  EXPECT_GE(gpu.pending_timings(), pairs_per_dispatch);  // (+ the count exchange, several ranks)
  gpu.reset_counters();
  EXPECT_EQ(gpu.pending_timings(), 0);
  EXPECT_EQ(total_seconds(gpu.timings()), 0.0) << "pairs pending at the reset were read";

  dispatch();
  dispatch();
  EXPECT_EQ(gpu.pending_timings(), 2 * pairs_per_dispatch);
  const DispatchTimings two = gpu.timings();  // a copy: the sums change below
  EXPECT_EQ(gpu.pending_timings(), 0);
  EXPECT_TRUE(std::isfinite(two.permute));
  EXPECT_GT(two.permute, 0.0);
  if (exchanging) {
    EXPECT_TRUE(std::isfinite(two.exchange[kDispatchForward]));
    EXPECT_GT(two.exchange[kDispatchForward], 0.0);
  } else {
    EXPECT_EQ(two.exchange[kDispatchForward], 0.0);
  }
  EXPECT_EQ(two.unpermute, 0.0);
  dispatch();
  const DispatchTimings three = gpu.timings();
  EXPECT_GT(three.permute, two.permute) << "a third dispatch adds to the sum";
  EXPECT_GE(three.exchange[kDispatchForward], two.exchange[kDispatchForward]);

  // Twice the ring's pairs and more without reading: the oldest are resolved on the way.
  gpu.reset_counters();
  const int dispatches = 2 * CudaPhaseTimers::kPairs / pairs_per_dispatch + 1;
  int most_pending = 0;
  for (int i = 0; i < dispatches; ++i) {
    dispatch();
    most_pending = std::max(most_pending, gpu.pending_timings());
  }
  EXPECT_EQ(most_pending, CudaPhaseTimers::kPairs);
  const DispatchTimings many = gpu.timings();
  EXPECT_EQ(gpu.pending_timings(), 0);
  EXPECT_TRUE(std::isfinite(many.permute));
  EXPECT_GT(many.permute, three.permute) << dispatches << " dispatches against 3";
  for (int p = 0; p < world_size(); ++p) {
    EXPECT_EQ(gpu.bytes_sent()[kDispatchForward][p], dispatches * gpu.send_bytes_per_peer()[p])
        << "peer " << p;
  }
  context.synchronize();
}

}  // namespace
}  // namespace moebench
