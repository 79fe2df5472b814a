// `moebench alltoall --pattern replay --replay TRACE`: the P x P byte matrices a `moebench
// train` run recorded in /comm/layer_i/bytes_sent ([steps, src, phase, dst]) are replayed with
// each exchange algorithm, exchange by exchange in training order: per step, forward (layer 0
// .. L-1: dispatch, combine), then backward (layer L-1 .. 0: combine, dispatch). Each exchange
// is timed between barriers over --iters runs after --warmup-iters (median per rank, slowest
// rank); a step's time is the sum over its exchanges. Every exchange is then checked element by
// element, and the bytes each rank sent are recorded in /bench/alltoall/replay/layer_i/bytes_sent
// in the train trace's layout, so the replay can be compared with the recording.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "alltoall_internal.hpp"
#include "moebench/check.hpp"
#include "moebench/dispatcher.hpp"
#include "moebench/table.hpp"
#include "moebench/trace.hpp"

namespace moebench::alltoall_detail {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kPhases = kNumExchangePhases;  // dispatch_fwd, combine_fwd, combine_bwd, dispatch_bwd

// One exchange of the replay: which layer and phase of its step, and this rank's counts.
struct ReplayExchange {
  int layer = 0, phase = 0;
  ExchangeCounts counts;  // floats
};

}  // namespace

int run_replay_pattern(const AlltoallOptions& o, const cli::ParsedCommand& parsed, MPI_Comm comm) {
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  const ReplayTrace recorded = read_replay_trace(o, comm);
  std::vector<std::unique_ptr<BenchAlgorithm>> algorithms = make_algorithms(o, comm);
  const NodeShape shape = node_shape(comm, o.ranks_per_node);
  const int A = static_cast<int>(algorithms.size());
  const int S = recorded.steps, L = recorded.layers, P = ranks;
  if (rank == 0) cli::print_config_table(std::cout, "alltoall", parsed);

  // The exchanges of every step in training order, with this rank's counts (allocated once).
  auto bytes_at = [&](int layer, int step, int src, int phase, int dst) {
    return recorded.bytes[((((static_cast<size_t>(layer) * S + step) * P + src) * kPhases + phase) * P) + dst];
  };
  const int per_step = kPhases * L;  // exchanges per step
  std::vector<ReplayExchange> exchanges;
  exchanges.reserve(static_cast<size_t>(S) * per_step);
  int64_t max_elements = 1;
  for (int s = 0; s < S; ++s) {
    std::vector<std::pair<int, int>> order;  // (layer, phase)
    for (int l = 0; l < L; ++l) {
      order.push_back({l, kDispatchForward});
      order.push_back({l, kCombineForward});
    }
    for (int l = L - 1; l >= 0; --l) {
      order.push_back({l, kCombineBackward});
      order.push_back({l, kDispatchBackward});
    }
    for (const auto& [layer, phase] : order) {
      ReplayExchange x;
      x.layer = layer;
      x.phase = phase;
      ExchangeCounts& c = x.counts;
      c.send_counts.resize(P);
      c.send_displs.resize(P);
      c.recv_counts.resize(P);
      c.recv_displs.resize(P);
      for (int p = 0; p < P; ++p) {
        c.send_counts[p] = static_cast<int>(bytes_at(layer, s, rank, phase, p) / 4);
        c.recv_counts[p] = static_cast<int>(bytes_at(layer, s, p, phase, rank) / 4);
        c.send_displs[p] = static_cast<int>(c.send_total);
        c.recv_displs[p] = static_cast<int>(c.recv_total);
        c.send_total += c.send_counts[p];
        c.recv_total += c.recv_counts[p];
      }
      max_elements = std::max({max_elements, c.send_total, c.recv_total});
      exchanges.push_back(std::move(x));
    }
  }
  const int X = static_cast<int>(exchanges.size());

  TraceWriter trace(o.out, comm, TraceRunInfo{"alltoall", parsed.command_line, parsed.resolved},
                    /*flush_every=*/1 << 30);
  std::vector<TableColumn> table_columns = {{"step", 6, 0}, {"wire_MB", 9, 3}, {"rank_max_MB", 11, 3},
                                            {"recorded_ms", 11, 3}};
  for (const auto& algorithm : algorithms) {
    table_columns.push_back({algorithm->name() + "_ms", static_cast<int>(algorithm->name().size()) + 3, 3});
  }
  table_columns.push_back({"wrong", 6, 0});
  ResultTable table(table_columns);
  open_csv_everywhere(table, csv_path_beside(o.out), comm);

  const std::string group = "/bench/alltoall/replay";
  write_common_attributes(trace, o, shape);
  trace.set_attribute(group, "source", o.replay);
  trace.set_attribute(group, "source_command_line", recorded.command_line);
  trace.set_attribute(group, "layers", static_cast<int64_t>(L));
  trace.set_attribute(group, "steps", static_cast<int64_t>(S));
  trace.set_attribute(group, "exchange_order",
                      std::string("per step: layer 0..L-1 dispatch_forward, combine_forward; then "
                                  "layer L-1..0 combine_backward, dispatch_backward"));
  std::vector<TraceSeries> layer_bytes;
  for (int l = 0; l < L; ++l) {
    layer_bytes.push_back(trace.series(group + "/layer_" + std::to_string(l) + "/bytes_sent", TraceType::int64,
                                       {kPhases, P}, TraceLayout::per_rank, "bytes",
                                       "[step, src, phase, dst]: bytes src sent dst in the replay "
                                       "(the layout of /comm/layer_i/bytes_sent)"));
  }
  const char* names[] = {"step", "wire_bytes", "rank_bytes_max", "recorded_ms", "wrong"};
  std::vector<TraceSeries> columns;
  for (const char* name : names) {
    columns.push_back(trace.series(group + "/" + name, TraceType::float64, {}, TraceLayout::replicated));
  }
  TraceSeries time_ms = trace.series(group + "/time_ms", TraceType::float64, {A}, TraceLayout::replicated,
                                     "ms", "per algorithm (attribute algorithms): sum over the step's "
                                     "exchanges of the slowest rank's median");
  TraceSeries time_rank = trace.series(group + "/time_ms_per_rank", TraceType::float64, {A},
                                       TraceLayout::per_rank, "ms", "sum over the step's exchanges of this rank's median");

  // Timed: every exchange of every step, per algorithm, iteration-major so the sequence runs as
  // in training; seconds[it * X + x].
  std::vector<float> send(static_cast<size_t>(max_elements)), recv(send.size());
  std::vector<double> seconds(static_cast<size_t>(o.iters) * X), scratch(o.iters);
  std::vector<double> my_median(static_cast<size_t>(A) * X), max_median(my_median.size());
  std::vector<int64_t> wrong(static_cast<size_t>(A) * S, 0);
  for (int a = 0; a < A; ++a) {
    BenchAlgorithm& algorithm = *algorithms[a];
    if (NcclAlltoall* device = algorithm.device_exchange()) device->reserve(max_elements);
    for (int it = 0; it < o.warmup_iters + o.iters; ++it) {
      for (int x = 0; x < X; ++x) {
        double exchange_s = 0.0;
        if (NcclAlltoall* device = algorithm.device_exchange()) {
          // One exchange between device buffers after a barrier, CUDA-event time.
          device->time(exchanges[x].counts, nullptr, /*warmup=*/0, /*iters=*/1, &exchange_s, comm);
        } else {
          MOEBENCH_MPI_CHECK(MPI_Barrier(comm));
          const double start = MPI_Wtime();
          algorithm.run(send.data(), exchanges[x].counts, recv.data(), MPI_FLOAT);
          exchange_s = MPI_Wtime() - start;
        }
        if (it >= o.warmup_iters) seconds[static_cast<size_t>(it - o.warmup_iters) * X + x] = exchange_s;
      }
    }
    for (int x = 0; x < X; ++x) {
      for (int it = 0; it < o.iters; ++it) scratch[it] = seconds[static_cast<size_t>(it) * X + x];
      my_median[static_cast<size_t>(a) * X + x] = median_in_place(scratch.data(), o.iters);
    }
    // Correctness, outside the timed loop: every exchange once more on checkable data.
    for (int x = 0; x < X; ++x) {
      wrong[static_cast<size_t>(a) * S + x / per_step] +=
          check_exchange(algorithm, exchanges[x].counts, send.data(), recv.data(), o.seed + x, rank);
    }
  }
  MOEBENCH_MPI_CHECK(MPI_Allreduce(my_median.data(), max_median.data(), static_cast<int>(my_median.size()),
                                   MPI_DOUBLE, MPI_MAX, comm));
  MOEBENCH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, wrong.data(), static_cast<int>(wrong.size()), MPI_INT64_T,
                                   MPI_SUM, comm));

  if (rank == 0) {
    std::printf("\n# moebench alltoall: %d ranks, %d node(s) x %d, pattern replay of %s: %d steps x %d MoE layer(s) "
                "x 4 exchanges, %d iters after %d warm-up\n",
                P, shape.nodes, shape.ranks_per_node, o.replay.c_str(), S, L, o.iters, o.warmup_iters);
    std::printf("# recorded: %s\n", recorded.command_line.c_str());
    std::printf("# wire_MB: bytes between distinct ranks in the step (all layers and phases, all ranks);"
                " rank_max_MB: the busiest sender\n");
    std::printf("# <algorithm>_ms: sum over the step's exchanges of the slowest rank's median;"
                " recorded_ms: the same sum of the exchange times the training run recorded (its own dispatcher's, no barriers)\n");
    if (NcclAlltoall* device = algorithms.front()->device_exchange()) {
      std::printf("# backend cuda: nccl_ms moves each recorded exchange between device buffers on "
                  "%s (rank 0's device), CUDA-event times\n", device->device_name().c_str());
    }
    table.print_header(stdout);
  }
  int64_t total_wrong = 0;
  std::vector<double> step_ms(A), my_step_ms(A), mean_ms(A, 0.0);
  std::vector<int64_t> row_bytes(static_cast<size_t>(kPhases) * P);
  double mean_recorded = 0.0;
  for (int s = 0; s < S; ++s) {
    int64_t wire = 0, rank_max = 0;
    for (int src = 0; src < P; ++src) {
      int64_t sent = 0;
      for (int l = 0; l < L; ++l) {
        for (int phase = 0; phase < kPhases; ++phase) {
          for (int dst = 0; dst < P; ++dst) sent += dst == src ? 0 : bytes_at(l, s, src, phase, dst);
        }
      }
      wire += sent;
      rank_max = std::max(rank_max, sent);
    }
    double recorded_ms = recorded.recorded_ms.empty() ? kNaN : 0.0;
    if (!recorded.recorded_ms.empty()) {
      for (int l = 0; l < L; ++l) {
        for (int phase = 0; phase < kPhases; ++phase) {
          double slowest = 0.0;
          for (int r = 0; r < P; ++r) {
            slowest = std::max(slowest, recorded.recorded_ms[((static_cast<size_t>(l) * S + s) * P + r) * kPhases + phase]);
          }
          recorded_ms += slowest;
        }
      }
    }
    mean_recorded += recorded_ms / S;
    int64_t step_wrong = 0;
    for (int a = 0; a < A; ++a) {
      step_ms[a] = my_step_ms[a] = 0.0;
      for (int x = s * per_step; x < (s + 1) * per_step; ++x) {
        step_ms[a] += 1e3 * max_median[static_cast<size_t>(a) * X + x];
        my_step_ms[a] += 1e3 * my_median[static_cast<size_t>(a) * X + x];
      }
      mean_ms[a] += step_ms[a] / S;
      step_wrong += wrong[static_cast<size_t>(a) * S + s];
    }
    total_wrong += step_wrong;
    // What this rank sent in the replay, from the counts the exchanges were given.
    for (int x = s * per_step; x < (s + 1) * per_step; ++x) {
      const ReplayExchange& e = exchanges[x];
      if (e.phase != kDispatchForward) continue;  // one row per layer: gather its 4 phases
      for (int y = s * per_step; y < (s + 1) * per_step; ++y) {
        if (exchanges[y].layer != e.layer) continue;
        for (int p = 0; p < P; ++p) {
          row_bytes[static_cast<size_t>(exchanges[y].phase) * P + p] =
              static_cast<int64_t>(exchanges[y].counts.send_counts[p]) * static_cast<int64_t>(sizeof(float));
        }
      }
      layer_bytes[e.layer].append(row_bytes.data());
    }
    const double values[] = {static_cast<double>(s), static_cast<double>(wire), static_cast<double>(rank_max),
                             recorded_ms, static_cast<double>(step_wrong)};
    for (size_t c = 0; c < columns.size(); ++c) columns[c].append(&values[c]);
    time_ms.append(step_ms.data());
    time_rank.append(my_step_ms.data());
    if (rank == 0) {
      std::vector<double> row = {static_cast<double>(s), values[1] / 1e6, values[2] / 1e6, recorded_ms};
      row.insert(row.end(), step_ms.begin(), step_ms.end());
      row.push_back(static_cast<double>(step_wrong));
      table.add_row(stdout, row);
    }
  }
  trace.set_attribute("/bench/alltoall", "complete", static_cast<int64_t>(1));
  trace.close();
  if (rank == 0) {
    table.close_csv();
    std::printf("# mean per step:");
    for (int a = 0; a < A; ++a) std::printf(" %s %.3f ms,", algorithms[a]->name().c_str(), mean_ms[a]);
    std::printf(" recorded %.3f ms\n", mean_recorded);
    std::printf("# wrote %s and %s\n", o.out.c_str(), csv_path_beside(o.out).c_str());
    std::printf("# Wrong elements: %lld  %s\n", static_cast<long long>(total_wrong),
                total_wrong == 0 ? "OK" : "FAILED");
  }
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace moebench::alltoall_detail
