// `moebench alltoall --pattern routed`: the traffic of real routing plans. Per cell (router x
// top-k x capacity factor, at --experts E): synthetic logits -> route() -> the Dispatcher packs
// and exchanges the kept rows. Its bytes_sent() is the per-peer byte matrix training would send;
// the cost-per-router table reports it (wire bytes, per-rank max and mean, padded/ragged
// overhead) with the Dispatcher's own exchange times, and every exchange algorithm moves the
// same matrix (dispatch, then the reverse combine) and is checked element by element.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "alltoall_internal.hpp"
#include "moebench/check.hpp"
#include "moebench/random.hpp"
#include "moebench/synthetic_inputs.hpp"
#include "moebench/table.hpp"
#include "moebench/trace.hpp"

namespace moebench {

void make_routed_inputs(std::vector<float>& logits, std::vector<int32_t>& ids,
                        const RoutedOptions& o, int rank) {
  const int E = o.routing.num_experts;
  logits.resize(static_cast<size_t>(o.tokens) * E);
  ids.resize(static_cast<size_t>(o.tokens));
  make_synthetic_inputs(logits.data(), ids.data(), o.tokens, E,
                        o.inputs,
                        synthetic_stream(E, rank, 0));
}

RoutedPattern make_routed_pattern(const RoutedOptions& o, MPI_Comm comm) {
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  const RoutingConfig& config = o.routing;
  validate_routing_config(config);
  const int E = config.num_experts, T = o.tokens;
  if (E % ranks != 0) {
    std::ostringstream message;
    message << "--experts " << E << " is not divisible by the " << ranks << " ranks (use a multiple of "
            << ranks << ")";
    throw UsageError(message.str());
  }
  std::vector<float> logits;
  std::vector<int32_t> ids;
  make_routed_inputs(logits, ids, o, rank);
  RoutedPattern pattern;
  pattern.plan.reserve(config, T);
  route(pattern.plan, has_learned_router(config.router) ? logits.data() : nullptr, ids.data(),
        nullptr, T, config);
  // One dispatch + combine of the plan through the real Dispatcher in each mode; its byte
  // counters are the matrix (identity experts: the rows go out and come back unchanged).
  const std::vector<float> x(static_cast<size_t>(T) * o.d_model, 1.0f);
  std::vector<float> y(x.size());
  for (DispatchMode mode : {DispatchMode::ragged, DispatchMode::padded}) {
    Dispatcher dispatcher(comm, E, o.d_model, mode);
    dispatcher.reserve(config, T);
    std::vector<float> expert_rows(static_cast<size_t>(dispatcher.max_expert_rows()) * o.d_model);
    dispatcher.set_plan(pattern.plan);
    dispatcher.dispatch(expert_rows.data(), x.data());
    dispatcher.combine(y.data(), expert_rows.data());
    const auto& sent = dispatcher.bytes_sent();
    (mode == DispatchMode::ragged ? pattern.ragged_bytes : pattern.padded_bytes) = sent[kDispatchForward];
    if (mode == o.dispatch) {
      pattern.dispatch_bytes = sent[kDispatchForward];
      pattern.combine_bytes = sent[kCombineForward];
    }
  }
  std::vector<int64_t> elements(ranks);
  for (int p = 0; p < ranks; ++p) {
    MOEBENCH_CHECK(pattern.dispatch_bytes[p] % static_cast<int64_t>(sizeof(float)) == 0,
                   "the Dispatcher sent a partial float");
    elements[p] = pattern.dispatch_bytes[p] / static_cast<int64_t>(sizeof(float));
  }
  pattern.dispatch = exchange_counts_from_send(elements, comm);
  pattern.combine = reverse_exchange(pattern.dispatch);
  return pattern;
}

namespace alltoall_detail {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct DispatcherTimes {
  double dispatch_s = 0.0, combine_s = 0.0;  // this rank: median over the timed iterations
};

// The Dispatcher's own exchange times for the plan: per iteration (between barriers)
// set_plan (ragged: the count exchange) + dispatch + combine; dispatch time = count exchange +
// row exchange, combine time = the returning row exchange.
DispatcherTimes time_dispatcher(const RoutingPlan& plan, const RoutedOptions& o,
                                const RoutingConfig& config, int warmup, int iters, MPI_Comm comm) {
  const int T = o.tokens;
  Dispatcher dispatcher(comm, config.num_experts, o.d_model, o.dispatch);
  dispatcher.reserve(config, T);
  std::vector<float> expert_rows(static_cast<size_t>(dispatcher.max_expert_rows()) * o.d_model);
  std::vector<float> x(static_cast<size_t>(T) * o.d_model, 1.0f), y(x.size());
  std::vector<double> dispatch_s(iters), combine_s(iters);
  for (int it = 0; it < warmup + iters; ++it) {
    MOEBENCH_MPI_CHECK(MPI_Barrier(comm));
    const DispatchTimings before = dispatcher.timings();
    dispatcher.set_plan(plan);
    dispatcher.dispatch(expert_rows.data(), x.data());
    dispatcher.combine(y.data(), expert_rows.data());
    const DispatchTimings& after = dispatcher.timings();
    if (it < warmup) continue;
    dispatch_s[it - warmup] = (after.count_exchange - before.count_exchange) +
                              (after.exchange[kDispatchForward] - before.exchange[kDispatchForward]);
    combine_s[it - warmup] = after.exchange[kCombineForward] - before.exchange[kCombineForward];
  }
  return DispatcherTimes{median_in_place(dispatch_s.data(), iters),
                         median_in_place(combine_s.data(), iters)};
}

// [P * P] matrix (row = source) of every rank's per-destination vector.
std::vector<int64_t> gather_matrix(const std::vector<int64_t>& mine, MPI_Comm comm) {
  const int ranks = static_cast<int>(mine.size());
  std::vector<int64_t> matrix(static_cast<size_t>(ranks) * ranks);
  MOEBENCH_MPI_CHECK(MPI_Allgather(mine.data(), ranks, MPI_INT64_T, matrix.data(), ranks,
                                   MPI_INT64_T, comm));
  return matrix;
}

int64_t off_diagonal_sum(const std::vector<int64_t>& matrix, int ranks) {
  int64_t sum = 0;
  for (int s = 0; s < ranks; ++s) {
    for (int d = 0; d < ranks; ++d) sum += s == d ? 0 : matrix[static_cast<size_t>(s) * ranks + d];
  }
  return sum;
}

}  // namespace

int run_routed_pattern(const AlltoallOptions& o, const cli::ParsedCommand& parsed, MPI_Comm comm) {
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  std::vector<std::unique_ptr<BenchAlgorithm>> algorithms = make_algorithms(o, comm);
  const NodeShape shape = node_shape(comm, o.ranks_per_node);
  const int A = static_cast<int>(algorithms.size());
  const RoutedOptions& base = o.routed;
  const int E = base.routing.num_experts;
  if (rank == 0) cli::print_config_table(std::cout, "alltoall", parsed);

  // The cells: routers x top-k x CF; top1 routes with k = 1 (one row per CF).
  struct Cell {
    RouterKind router;
    int top_k;
    double capacity_factor;
  };
  std::vector<Cell> cells;
  for (RouterKind router : o.routers) {
    const std::vector<int> ks = router == RouterKind::top1 ? std::vector<int>{1} : o.top_ks;
    for (int k : ks) {
      for (double cf : o.capacity_factors) cells.push_back(Cell{router, k, cf});
    }
  }

  TraceWriter trace(o.out, comm, TraceRunInfo{"alltoall", parsed.command_line, parsed.resolved},
                    /*flush_every=*/1 << 30);
  std::vector<TableColumn> table_columns = {
      {"router", 13, 0, {"top1", "topk_hard", "softk", "hash", "expert_choice"}},
      {"top_k", 5, 0}, {"capacity_factor", 15, 2}, {"capacity", 8, 0}, {"drop_rate", 9, 4},
      {"wire_MB", 9, 3}, {"rank_max_MB", 11, 3}, {"rank_mean_MB", 12, 3},
      {"padded_over_ragged", 18, 3}, {"dispatch_ms", 11, 3}, {"combine_ms", 10, 3}};
  for (const auto& algorithm : algorithms) {
    table_columns.push_back({algorithm->name() + "_ms", static_cast<int>(algorithm->name().size()) + 3, 3});
  }
  table_columns.push_back({"wrong", 6, 0});
  ResultTable table(table_columns);
  open_csv_everywhere(table, csv_path_beside(o.out), comm);

  const std::string group = "/bench/alltoall/routed";
  write_common_attributes(trace, o, shape);
  trace.set_attribute(group, "router_codes",
                      std::string("0 = top1, 1 = topk_hard, 2 = softk, 3 = hash, 4 = expert_choice"));
  trace.set_attribute(group, "dispatch", std::string(to_string(base.dispatch)));
  trace.set_attribute(group, "distribution", base.inputs.distribution);
  trace.set_attribute(group, "experts", static_cast<int64_t>(E));
  trace.set_attribute(group, "tokens_per_rank", static_cast<int64_t>(base.tokens));
  trace.set_attribute(group, "d_model", static_cast<int64_t>(base.d_model));
  const char* names[] = {"router", "top_k", "capacity_factor", "capacity", "drop_rate",
                         "wire_bytes", "rank_bytes_max", "rank_bytes_mean", "ragged_wire_bytes",
                         "padded_wire_bytes", "padded_over_ragged", "dispatch_ms", "combine_ms",
                         "wrong"};
  std::vector<TraceSeries> columns;
  for (const char* name : names) {
    columns.push_back(trace.series(group + "/" + name, TraceType::float64, {}, TraceLayout::replicated));
  }
  TraceSeries exchange_ms = trace.series(group + "/exchange_ms", TraceType::float64, {A},
                                         TraceLayout::replicated, "ms",
                                         "dispatch matrix + its reverse moved by each algorithm "
                                         "(order: attribute algorithms), median, slowest rank");
  TraceSeries bytes_sent = trace.series(group + "/bytes_sent", TraceType::int64, {2, ranks},
                                        TraceLayout::per_rank, "bytes",
                                        "[cell, src, phase, dst]: Dispatcher bytes src sent dst, "
                                        "phases dispatch_forward, combine_forward");
  TraceSeries dispatch_rank = trace.series(group + "/dispatch_ms_per_rank", TraceType::float64, {},
                                           TraceLayout::per_rank, "ms", "Dispatcher dispatch exchange, median");
  TraceSeries combine_rank = trace.series(group + "/combine_ms_per_rank", TraceType::float64, {},
                                          TraceLayout::per_rank, "ms", "Dispatcher combine exchange, median");
  TraceSeries exchange_rank = trace.series(group + "/exchange_ms_per_rank", TraceType::float64, {A},
                                           TraceLayout::per_rank, "ms", "each algorithm, median");

  if (rank == 0) {
    std::printf("\n# moebench alltoall: %d ranks, %d node(s) x %d, pattern routed: E=%d, %d tokens/rank, "
                "d=%d (%d B per row), %s dispatch, %s logits, %d iters after %d warm-up\n",
                ranks, shape.nodes, shape.ranks_per_node, E, base.tokens, base.d_model,
                base.d_model * 4, to_string(base.dispatch), base.inputs.distribution.c_str(), o.iters,
                o.warmup_iters);
    std::printf("# wire_MB: bytes between distinct ranks in one forward step (dispatch + combine), all ranks;"
                " the backward pass sends the same again\n");
    std::printf("# rank_max/mean_MB: of that, per sending rank; padded_over_ragged: padded / ragged wire bytes\n");
    std::printf("# dispatch_ms, combine_ms: the Dispatcher's exchanges (ragged: with the count exchange);"
                " <algorithm>_ms: dispatch + combine matrices moved by that algorithm; median, slowest rank\n");
    if (NcclAlltoall* device = algorithms.front()->device_exchange()) {
      std::printf("# backend cuda: nccl_ms moves the matrices between device buffers on %s (rank "
                  "0's device), CUDA-event times; the Dispatcher's columns are the CPU dispatcher's "
                  "(MPI between host buffers)\n", device->device_name().c_str());
    }
    table.print_header(stdout);
  }

  int64_t total_wrong = 0;
  std::vector<float> send, recv;
  std::vector<double> seconds(o.iters);
  std::vector<int64_t> my_bytes(2 * static_cast<size_t>(ranks));
  std::vector<double> algorithm_ms(A), my_algorithm_ms(A);
  for (const Cell& cell : cells) {
    RoutedOptions cell_options = base;
    cell_options.routing.router = cell.router;
    cell_options.routing.top_k = cell.top_k;
    cell_options.routing.capacity_factor = cell.capacity_factor;
    const RoutedPattern pattern = make_routed_pattern(cell_options, comm);
    const DispatcherTimes dispatcher = time_dispatcher(pattern.plan, cell_options, cell_options.routing,
                                                       o.warmup_iters, o.iters, comm);

    // The exchange algorithms on the same matrix; buffers sized once per cell.
    const int64_t elements = std::max<int64_t>({pattern.dispatch.send_total, pattern.dispatch.recv_total, 1});
    send.resize(static_cast<size_t>(elements));
    recv.resize(static_cast<size_t>(elements));
    int64_t wrong = 0;
    for (int a = 0; a < A; ++a) {
      time_exchange(*algorithms[a], pattern.dispatch, &pattern.combine, send.data(), recv.data(),
                    o.warmup_iters, o.iters, seconds.data(), comm);
      my_algorithm_ms[a] = 1e3 * median_in_place(seconds.data(), o.iters);
      algorithm_ms[a] = reduce_double(my_algorithm_ms[a], MPI_MAX, comm);
      wrong += check_exchange(*algorithms[a], pattern.dispatch, send.data(), recv.data(), o.seed, rank);
      wrong += check_exchange(*algorithms[a], pattern.combine, send.data(), recv.data(), o.seed + 1, rank);
    }
    const int64_t all_wrong = reduce_int64(wrong, MPI_SUM, comm);
    total_wrong += all_wrong;

    // Bytes: the matrices of every rank.
    const std::vector<int64_t> dispatch_matrix = gather_matrix(pattern.dispatch_bytes, comm);
    const std::vector<int64_t> combine_matrix = gather_matrix(pattern.combine_bytes, comm);
    const int64_t ragged_wire = off_diagonal_sum(gather_matrix(pattern.ragged_bytes, comm), ranks);
    const int64_t padded_wire = off_diagonal_sum(gather_matrix(pattern.padded_bytes, comm), ranks);
    const int64_t wire = off_diagonal_sum(dispatch_matrix, ranks) + off_diagonal_sum(combine_matrix, ranks);
    int64_t rank_max = 0;
    for (int s = 0; s < ranks; ++s) {
      int64_t sent = 0;
      for (int d = 0; d < ranks; ++d) {
        if (d != s) sent += dispatch_matrix[static_cast<size_t>(s) * ranks + d] + combine_matrix[static_cast<size_t>(s) * ranks + d];
      }
      rank_max = std::max(rank_max, sent);
    }
    const int64_t kept = reduce_int64(pattern.plan.kept_assignments(), MPI_SUM, comm);
    const double requested = static_cast<double>(base.tokens) * cell.top_k * ranks;
    const double drop_rate = 1.0 - static_cast<double>(kept) / requested;
    const double padded_over_ragged = ragged_wire > 0 ? static_cast<double>(padded_wire) / static_cast<double>(ragged_wire) : kNaN;
    const double dispatch_ms = 1e3 * reduce_double(dispatcher.dispatch_s, MPI_MAX, comm);
    const double combine_ms = 1e3 * reduce_double(dispatcher.combine_s, MPI_MAX, comm);

    const double values[] = {static_cast<double>(static_cast<int>(cell.router)), static_cast<double>(cell.top_k),
                             cell.capacity_factor, static_cast<double>(pattern.plan.capacity), drop_rate,
                             static_cast<double>(wire), static_cast<double>(rank_max),
                             static_cast<double>(wire) / ranks, static_cast<double>(ragged_wire),
                             static_cast<double>(padded_wire), padded_over_ragged, dispatch_ms,
                             combine_ms, static_cast<double>(all_wrong)};
    for (size_t c = 0; c < columns.size(); ++c) columns[c].append(&values[c]);
    exchange_ms.append(algorithm_ms.data());
    for (int p = 0; p < ranks; ++p) {
      my_bytes[p] = pattern.dispatch_bytes[p];
      my_bytes[ranks + p] = pattern.combine_bytes[p];
    }
    bytes_sent.append(my_bytes.data());
    const double my_dispatch_ms = 1e3 * dispatcher.dispatch_s, my_combine_ms = 1e3 * dispatcher.combine_s;
    dispatch_rank.append(&my_dispatch_ms);
    combine_rank.append(&my_combine_ms);
    exchange_rank.append(my_algorithm_ms.data());
    trace.flush();
    if (rank == 0) {
      std::vector<double> row = {values[0], values[1], values[2], values[3], values[4],
                                 values[5] / 1e6, values[6] / 1e6, values[7] / 1e6, padded_over_ragged,
                                 dispatch_ms, combine_ms};
      row.insert(row.end(), algorithm_ms.begin(), algorithm_ms.end());
      row.push_back(static_cast<double>(all_wrong));
      table.add_row(stdout, row);
    }
  }
  trace.set_attribute("/bench/alltoall", "complete", static_cast<int64_t>(1));
  trace.close();
  if (rank == 0) {
    table.close_csv();
    std::printf("# wrote %s and %s\n", o.out.c_str(), csv_path_beside(o.out).c_str());
    std::printf("# Wrong elements: %lld  %s\n", static_cast<long long>(total_wrong),
                total_wrong == 0 ? "OK" : "FAILED");
  }
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace alltoall_detail
}  // namespace moebench
