// Benchmark: the dispatcher's ragged exchange against a raw MPI_Alltoallv of the same byte
// matrix, measured alternately in one run (so machine noise hits both alike).
//
//   launch/mpirun.sh -np 4 build/bench/bench_exchange [tokens d_model experts top_k iters]
//
// "dispatcher set_plan+dispatch" = Dispatcher::set_plan (count all-to-all) + dispatch (pack,
// row all-to-all, expert-major reorder); "row exchange" = the dispatcher's own timing of its
// row all-to-all, "(rows+counts)" with the count all-to-all added; "raw" = one MPI_Alltoallv of the identical counts on
// preallocated buffers. Medians over iterations; the slowest rank's time per iteration.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "moebench/dispatcher.hpp"
#include "moebench/random.hpp"
#include "moebench/routing.hpp"

using namespace moebench;

namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double slowest(double seconds) {
  double max = 0.0;
  MPI_Allreduce(&seconds, &max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return max;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const int T = argc > 1 ? std::atoi(argv[1]) : 4096;
  const int d = argc > 2 ? std::atoi(argv[2]) : 256;
  const int E = argc > 3 ? std::atoi(argv[3]) : 64;
  const int k = argc > 4 ? std::atoi(argv[4]) : 2;
  const int iters = argc > 5 ? std::atoi(argv[5]) : 50;

  RoutingConfig config;
  config.router = RouterKind::topk_hard;
  config.num_experts = E;
  config.top_k = k;
  config.capacity_factor = 1.25;
  std::vector<float> logits(static_cast<size_t>(T) * E), x(static_cast<size_t>(T) * d);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(random_normal(1, rank, i));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(random_normal(2, rank, i));
  RoutingPlan plan;
  plan.reserve(config, T);
  route(plan, logits.data(), nullptr, nullptr, T, config);
  Dispatcher dispatcher(MPI_COMM_WORLD, E, d, DispatchMode::ragged);
  dispatcher.reserve(config, T);
  std::vector<float> expert_rows(static_cast<size_t>(dispatcher.max_expert_rows()) * d);

  // The raw collective moves the same rows: counts per peer from the plan's loads.
  const int local = E / ranks;
  std::vector<int> send_counts(ranks), recv_counts(ranks), send_displs(ranks), recv_displs(ranks);
  std::vector<int> per_expert(E), received(static_cast<size_t>(ranks) * local);
  for (int e = 0; e < E; ++e) per_expert[e] = static_cast<int>(plan.load[e]);
  MPI_Alltoall(per_expert.data(), local, MPI_INT, received.data(), local, MPI_INT, MPI_COMM_WORLD);
  int send_total = 0, recv_total = 0;
  for (int p = 0; p < ranks; ++p) {
    int s = 0, r = 0;
    for (int le = 0; le < local; ++le) {
      s += per_expert[p * local + le];
      r += received[p * local + le];
    }
    send_counts[p] = s * d;
    recv_counts[p] = r * d;
    send_displs[p] = send_total;
    recv_displs[p] = recv_total;
    send_total += send_counts[p];
    recv_total += recv_counts[p];
  }
  std::vector<float> raw_send(send_total, 1.0f), raw_recv(std::max(recv_total, 1));

  std::vector<double> full, exchange_only, rows_only, raw;
  for (int it = 0; it < iters + 5; ++it) {
    MPI_Barrier(MPI_COMM_WORLD);
    double start = MPI_Wtime();
    MPI_Alltoallv(raw_send.data(), send_counts.data(), send_displs.data(), MPI_FLOAT,
                  raw_recv.data(), recv_counts.data(), recv_displs.data(), MPI_FLOAT, MPI_COMM_WORLD);
    const double raw_s = slowest(MPI_Wtime() - start);

    dispatcher.reset_counters();
    MPI_Barrier(MPI_COMM_WORLD);
    start = MPI_Wtime();
    dispatcher.set_plan(plan);
    dispatcher.dispatch(expert_rows.data(), x.data());
    const double full_s = slowest(MPI_Wtime() - start);
    const DispatchTimings& t = dispatcher.timings();
    const double exchange_s = slowest(t.count_exchange + t.exchange[kDispatchForward]);
    const double rows_s = slowest(t.exchange[kDispatchForward]);
    if (it >= 5) {
      raw.push_back(raw_s);
      full.push_back(full_s);
      exchange_only.push_back(exchange_s);
      rows_only.push_back(rows_s);
    }
  }
  if (rank == 0) {
    const double r = median(raw), f = median(full), e = median(exchange_only), w = median(rows_only);
    std::printf("# bench_exchange: %d ranks, T=%d d=%d E=%d k=%d CF=1.25, %d iters, %.2f MB sent/rank\n",
                ranks, T, d, E, k, iters, send_total * 4.0 / 1e6);
    std::printf("%-34s %10s %10s\n", "path", "median_ms", "vs_raw");
    std::printf("%-34s %10.3f %10.3f\n", "raw MPI_Alltoallv", 1e3 * r, 1.0);
    std::printf("%-34s %10.3f %10.3f\n", "dispatcher row exchange", 1e3 * w, w / r);
    std::printf("%-34s %10.3f %10.3f\n", "dispatcher exchange (rows+counts)", 1e3 * e, e / r);
    std::printf("%-34s %10.3f %10.3f\n", "dispatcher set_plan+dispatch", 1e3 * f, f / r);
  }
  MPI_Finalize();
  return 0;
}
