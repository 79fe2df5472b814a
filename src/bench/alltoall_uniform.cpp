// `moebench alltoall --pattern uniform`: the nccl-tests style size sweep. Each rank sends
// size / P bytes to every rank. Per size and algorithm: --warmup-iters untimed runs, then
// --iters timed runs between barriers (a rank's time is their mean); afterwards one run on
// data f(seed, source, destination, index) that every receiver checks (#wrong). Then the
// alpha-beta model per algorithm, fitted to the slowest rank's times (alltoall_model.hpp), and
// with --predict the model's time per exchange at other rank counts.
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
#include "moebench/alltoall_model.hpp"
#include "moebench/check.hpp"
#include "moebench/table.hpp"
#include "moebench/trace.hpp"

namespace moebench::alltoall_detail {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct AlgorithmFit {
  bool ok = false;
  std::string why;  // when not ok
  LinearFit fit;
  LinkCost link;    // per message, NaN on one rank
};

std::vector<AlgorithmFit> fit_algorithms(const std::vector<double>& sizes,
                                         const std::vector<std::vector<double>>& seconds,
                                         const std::vector<std::unique_ptr<BenchAlgorithm>>& algorithms,
                                         int ranks, const NodeShape& shape) {
  std::vector<AlgorithmFit> fits(algorithms.size());
  for (size_t a = 0; a < algorithms.size(); ++a) {
    try {
      fits[a].fit = fit_linear_nonnegative(sizes, seconds[a], FitWeighting::relative);
      fits[a].link = link_cost_from_fit(fits[a].fit, algorithms[a]->model_algorithm(), ranks,
                                        shape.ranks_per_node);
      fits[a].ok = true;
    } catch (const UsageError& error) {
      fits[a].why = error.what();
    }
  }
  return fits;
}

ResultTable fit_table() {
  return ResultTable({{"algorithm", 12, 0, algorithm_labels()}, {"a_us", 10, 2},
                      {"1/b_GBps", 10, 3}, {"alpha_us", 10, 3}, {"bw_GBps", 10, 3}, {"r2", 7, 4},
                      {"sizes", 5, 0}});
}

ResultTable predict_table() {
  return ResultTable({{"ranks", 7, 0}, {"nodes", 6, 0}, {"algorithm", 12, 0, algorithm_labels()},
                      {"model_us", 12, 1}, {"model_busbw_GBps", 16, 3}, {"intra_alpha_us", 14, 3},
                      {"intra_GBps", 10, 3}, {"inter_alpha_us", 14, 3}, {"inter_GBps", 10, 3}});
}

void report_fits(TraceWriter& trace, ResultTable& table, const std::vector<AlgorithmFit>& fits,
                 const std::vector<std::unique_ptr<BenchAlgorithm>>& algorithms,
                 const NodeShape& shape, int ranks, int rank) {
  const std::string group = "/bench/alltoall/fit";
  trace.set_attribute(group, "model",
                      std::string("time_max(size) = a + b * size by least squares with relative "
                                  "residuals, a, b >= 0; per message alpha = a / messages, "
                                  "beta = b / (link bytes per byte of size); see docs/alltoall.md"));
  trace.set_attribute(group, "algorithm_codes", algorithm_codes_text());
  const char* names[] = {"algorithm", "exchange_latency_us", "exchange_GBps", "alpha_us",
                         "beta_s_per_byte", "bandwidth_GBps", "r2", "points", "clamped"};
  std::vector<TraceSeries> columns;
  for (const char* name : names) {
    columns.push_back(trace.series(group + "/" + name, TraceType::float64, {}, TraceLayout::replicated));
  }
  if (rank == 0) {
    std::printf("\n# alpha-beta fit per algorithm (least squares of time_max on size, relative residuals):\n");
    std::printf("#   exchange t(size) = a + b*size;  per message: alpha = a/messages, bw = 1/beta = (link bytes"
                " per byte of size)/b;\n#   messages per rank: flat %d, hierarchical %d (%d node(s) x %d)\n",
                ranks - 1, shape.ranks_per_node - 1 + shape.nodes - 1, shape.nodes, shape.ranks_per_node);
    table.print_header(stdout);
  }
  for (size_t a = 0; a < fits.size(); ++a) {
    const AlgorithmFit& f = fits[a];
    const double code = algorithms[a]->code();
    const double row[] = {code,
                          f.ok ? 1e6 * f.fit.intercept : kNaN,
                          f.ok ? 1e-9 / f.fit.slope : kNaN,
                          f.ok ? 1e6 * f.link.latency_s : kNaN,
                          f.ok ? f.link.seconds_per_byte : kNaN,
                          f.ok ? 1e-9 / f.link.seconds_per_byte : kNaN,
                          f.ok ? f.fit.r2 : kNaN,
                          f.ok ? static_cast<double>(f.fit.points) : 0.0,
                          f.ok ? static_cast<double>(f.fit.clamped) : kNaN};
    for (size_t c = 0; c < columns.size(); ++c) columns[c].append(&row[c]);
    if (rank == 0) {
      table.add_row(stdout, {row[0], row[1], row[2], row[3], row[5], row[6], row[7]});
      if (!f.ok) std::printf("#   %s: not fitted: %s\n", algorithms[a]->name().c_str(), f.why.c_str());
      if (f.ok && f.fit.clamped) {
        std::printf("#   %s: the unconstrained fit had a negative parameter (noise); it was fixed at 0\n",
                    algorithms[a]->name().c_str());
      }
    }
  }
  if (rank == 0) {
    table.close_csv();
    if (ranks == 1) std::printf("#   one rank: no message crosses, so alpha and bw per message are undefined (-)\n");
  }
}

void report_predictions(TraceWriter& trace, ResultTable& table, const std::vector<AlgorithmFit>& fits,
                        const std::vector<std::unique_ptr<BenchAlgorithm>>& algorithms,
                        const AlltoallOptions& o, int rank) {
  const std::string group = "/bench/alltoall/predict";
  const double size = static_cast<double>(o.predict_bytes);
  trace.set_attribute(group, "model",
                      std::string("MODEL, not a measurement: alpha-beta prediction of one exchange "
                                  "(docs/alltoall.md): flat = (L-1) intra + (P-L) inter messages of "
                                  "size/P; hierarchical = (L-1) intra messages of N*size/P + (N-1) "
                                  "inter messages of L*size/P"));
  trace.set_attribute(group, "intra_bw_GBps_option", o.intra_bw_GBps);
  trace.set_attribute(group, "inter_bw_GBps_option", o.inter_bw_GBps);
  trace.set_attribute(group, "inter_latency_us_option", o.inter_latency_us);
  trace.set_attribute(group, "algorithm_codes", algorithm_codes_text());
  const char* names[] = {"ranks", "nodes", "ranks_per_node", "algorithm", "size_bytes",
                         "time_us", "busbw_GBps", "intra_alpha_us", "intra_bandwidth_GBps",
                         "inter_alpha_us", "inter_bandwidth_GBps"};
  std::vector<TraceSeries> columns;
  for (const char* name : names) {
    columns.push_back(trace.series(group + "/" + name, TraceType::float64, {}, TraceLayout::replicated));
  }
  if (rank == 0) {
    std::printf("\n# MODEL, NOT MEASURED: predicted time of one exchange of %lld bytes per rank, %d ranks per node\n",
                static_cast<long long>(o.predict_bytes), o.predict_ranks_per_node);
    std::printf("#   flat: (L-1)(a_intra + m/bw_intra) + (P-L)(a_inter + m/bw_inter), m = size/P;"
                " hierarchical: (L-1)(a_intra + N m/bw_intra) + (N-1)(a_inter + L m/bw_inter)\n");
    std::printf("#   intra link: %s; inter link: %s, %s\n",
                o.intra_bw_GBps > 0 ? "fitted alpha, --intra-bw" : "fitted alpha and bw",
                o.inter_latency_us >= 0 ? "--inter-latency-us" : "fitted alpha",
                o.inter_bw_GBps > 0 ? "--inter-bw" : "fitted bw (pass --inter-bw for a network)");
    table.print_header(stdout);
  }
  for (int P : o.predict_ranks) {
    const int L = std::min(P, o.predict_ranks_per_node), N = P / L;
    for (size_t a = 0; a < algorithms.size(); ++a) {
      LinkCost intra{kNaN, kNaN}, inter{kNaN, kNaN};
      if (fits[a].ok) {
        intra = fits[a].link;
        if (o.intra_bw_GBps > 0) intra.seconds_per_byte = 1.0 / (o.intra_bw_GBps * 1e9);
        inter = fits[a].link;
        if (o.inter_latency_us >= 0) inter.latency_s = o.inter_latency_us * 1e-6;
        if (o.inter_bw_GBps > 0) inter.seconds_per_byte = 1.0 / (o.inter_bw_GBps * 1e9);
      }
      const ExchangeShape shape = exchange_shape(algorithms[a]->model_algorithm(), P, L, size);
      const double seconds = fits[a].ok ? predict_exchange_seconds(shape, intra, inter) : kNaN;
      const double busbw = seconds > 0 ? alltoall_busbw(size, seconds, P) / 1e9 : kNaN;
      const double row[] = {static_cast<double>(P), static_cast<double>(N), static_cast<double>(L),
                            static_cast<double>(algorithms[a]->code()), size, 1e6 * seconds, busbw,
                            1e6 * intra.latency_s, 1e-9 / intra.seconds_per_byte,
                            1e6 * inter.latency_s, 1e-9 / inter.seconds_per_byte};
      for (size_t c = 0; c < columns.size(); ++c) columns[c].append(&row[c]);
      if (rank == 0) {
        table.add_row(stdout, {row[0], row[1], row[3], row[5], row[6], row[7], row[8], row[9], row[10]});
      }
    }
  }
  if (rank == 0) table.close_csv();
}

}  // namespace

int run_uniform_pattern(const AlltoallOptions& o, const cli::ParsedCommand& parsed, MPI_Comm comm) {
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  std::vector<std::unique_ptr<BenchAlgorithm>> algorithms = make_algorithms(o, comm);
  const NodeShape shape = node_shape(comm, o.ranks_per_node);
  if (rank == 0) cli::print_config_table(std::cout, "alltoall", parsed);

  TraceWriter trace(o.out, comm, TraceRunInfo{"alltoall", parsed.command_line, parsed.resolved},
                    /*flush_every=*/1 << 30);
  ResultTable table({{"size_bytes", 12, 0}, {"count", 10, 0}, {"algorithm", 12, 0, algorithm_labels()},
                     {"time_avg_us", 12, 1}, {"time_max_us", 12, 1}, {"algbw_GBps", 10, 3},
                     {"busbw_GBps", 10, 3}, {"wrong", 6, 0}});
  open_csv_everywhere(table, csv_path_beside(o.out), comm);
  ResultTable fits_table = fit_table();
  open_csv_everywhere(fits_table, csv_path_with_suffix(o.out, "fit"), comm);
  ResultTable model_table = predict_table();
  if (!o.predict_ranks.empty()) open_csv_everywhere(model_table, csv_path_with_suffix(o.out, "predict"), comm);
  const std::string group = "/bench/alltoall";
  write_common_attributes(trace, o, shape);
  const char* names[] = {"size_bytes", "algorithm", "time_avg_us", "time_max_us", "algbw_GBps",
                         "busbw_GBps", "wrong"};
  std::vector<TraceSeries> columns;
  for (const char* name : names) {
    columns.push_back(trace.series(group + "/" + name, TraceType::float64, {}, TraceLayout::replicated));
  }
  TraceSeries per_rank = trace.series(group + "/time_us_per_rank", TraceType::float64, {},
                                      TraceLayout::per_rank, "us", "mean time per iteration on each rank");

  const int64_t max_per_peer = o.max_bytes / ranks / static_cast<int64_t>(sizeof(float));
  std::vector<float> send(static_cast<size_t>(std::max<int64_t>(max_per_peer, 1) * ranks));
  std::vector<float> recv(send.size());
  std::vector<double> iteration_seconds(o.iters);
  ExchangeCounts counts;
  counts.send_counts.resize(ranks);
  counts.send_displs.resize(ranks);
  if (rank == 0) {
    std::printf("\n# moebench alltoall: %d ranks, %d node(s) x %d, pattern uniform, %d iters after %d warm-up\n",
                ranks, shape.nodes, shape.ranks_per_node, o.iters, o.warmup_iters);
    if (NcclAlltoall* device = algorithms.front()->device_exchange()) {
      std::printf("# backend cuda: NCCL between device buffers on %s (rank 0's device); times "
                  "from CUDA events on the communication stream\n", device->device_name().c_str());
    }
    std::printf("# size = bytes each rank sends in all; algbw = size / max time; busbw = algbw * (P-1)/P\n");
    table.print_header(stdout);
  }
  std::vector<double> fit_sizes;                                    // [sizes]
  std::vector<std::vector<double>> fit_seconds(algorithms.size());  // [algorithms][sizes]
  int64_t total_wrong = 0;
  for (int64_t size = o.min_bytes; size <= o.max_bytes; size *= o.step_factor) {
    const int64_t per_peer = size / ranks / static_cast<int64_t>(sizeof(float));
    for (int p = 0; p < ranks; ++p) {
      counts.send_counts[p] = static_cast<int>(per_peer);
      counts.send_displs[p] = static_cast<int>(per_peer * p);
    }
    counts.recv_counts = counts.send_counts;
    counts.recv_displs = counts.send_displs;
    counts.send_total = counts.recv_total = per_peer * ranks;
    const double actual_bytes = static_cast<double>(per_peer) * ranks * sizeof(float);
    fit_sizes.push_back(actual_bytes);
    for (size_t a = 0; a < algorithms.size(); ++a) {
      BenchAlgorithm& algorithm = *algorithms[a];
      time_exchange(algorithm, counts, nullptr, send.data(), recv.data(), o.warmup_iters, o.iters,
                    iteration_seconds.data(), comm);
      double seconds = 0.0;
      for (double s : iteration_seconds) seconds += s;
      seconds /= o.iters;
      // Correctness, outside the timed loop.
      const int64_t all_wrong =
          reduce_int64(check_exchange(algorithm, counts, send.data(), recv.data(), o.seed, rank), MPI_SUM, comm);
      total_wrong += all_wrong;
      const double avg = reduce_double(seconds, MPI_SUM, comm) / ranks;
      const double max = reduce_double(seconds, MPI_MAX, comm);
      fit_seconds[a].push_back(max);
      const std::vector<double> row = {actual_bytes, static_cast<double>(per_peer * ranks),
                                       static_cast<double>(algorithm.code()), 1e6 * avg, 1e6 * max,
                                       alltoall_algbw(actual_bytes, max) / 1e9,
                                       alltoall_busbw(actual_bytes, max, ranks) / 1e9,
                                       static_cast<double>(all_wrong)};
      const double values[] = {row[0], row[2], row[3], row[4], row[5], row[6], row[7]};
      for (size_t c = 0; c < columns.size(); ++c) columns[c].append(&values[c]);
      const double mine = 1e6 * seconds;
      per_rank.append(&mine);
      if (rank == 0) table.add_row(stdout, row);
    }
    trace.flush();
  }

  // The alpha-beta model (identical on every rank: it is fitted to reduced times).
  const std::vector<AlgorithmFit> fits = fit_algorithms(fit_sizes, fit_seconds, algorithms, ranks, shape);
  report_fits(trace, fits_table, fits, algorithms, shape, ranks, rank);
  if (!o.predict_ranks.empty()) report_predictions(trace, model_table, fits, algorithms, o, rank);

  trace.set_attribute(group, "complete", static_cast<int64_t>(1));
  trace.close();
  if (rank == 0) {
    table.close_csv();
    std::printf("# wrote %s and %s (fit: %s%s%s)\n", o.out.c_str(), csv_path_beside(o.out).c_str(),
                csv_path_with_suffix(o.out, "fit").c_str(), o.predict_ranks.empty() ? "" : ", model: ",
                o.predict_ranks.empty() ? "" : csv_path_with_suffix(o.out, "predict").c_str());
    std::printf("# Wrong elements: %lld  %s\n", static_cast<long long>(total_wrong),
                total_wrong == 0 ? "OK" : "FAILED");
  }
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace moebench::alltoall_detail
