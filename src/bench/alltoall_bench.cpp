// `moebench alltoall` (see alltoall_bench.hpp). Uniform traffic: each rank sends size/P bytes
// to every rank. Per size and algorithm: --warmup-iters untimed runs, then --iters timed runs
// between barriers; afterwards one run on data f(seed, source, destination, index) that every
// receiver checks (the #wrong column).
#include "moebench/alltoall_bench.hpp"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "moebench/alltoall.hpp"
#include "moebench/check.hpp"
#include "moebench/cli.hpp"
#include "moebench/random.hpp"
#include "moebench/table.hpp"
#include "moebench/trace.hpp"

namespace moebench {

namespace {

namespace po = boost::program_options;

po::options_description alltoall_options() {
  po::options_description options("moebench alltoall options");
  options.add_options()
      ("min-bytes", po::value<std::string>()->default_value("1K"),
       "smallest size: bytes each rank sends in all (K, M, G suffixes)")
      ("max-bytes", po::value<std::string>()->default_value("16M"), "largest size")
      ("step-factor", po::value<int>()->default_value(2), "multiply the size by this between rows (>= 2)")
      ("algorithm", po::value<std::string>()->default_value("alltoallv,pairwise,hierarchical"),
       "exchange algorithms to measure (comma-separated): alltoallv | pairwise | hierarchical")
      ("ranks-per-node", po::value<int>()->default_value(0),
       "hierarchical: ranks per (virtual) node; 0 = the ranks that share memory")
      ("pattern", po::value<std::string>()->default_value("uniform"),
       "traffic pattern: uniform (size / P bytes to every rank)")
      ("warmup-iters", po::value<int>()->default_value(5), "untimed iterations per size")
      ("iters", po::value<int>()->default_value(20), "timed iterations per size")
      ("seed", po::value<uint64_t>()->default_value(1234), "seed of the checked data")
      ("out", po::value<std::string>()->default_value("alltoall.h5"),
       "HDF5 trace path; the CSV is written beside it (same name, .csv)");
  return options;
}

std::vector<ExchangeAlgorithm> parse_algorithms(const std::string& text) {
  std::vector<ExchangeAlgorithm> algorithms;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    algorithms.push_back(parse_exchange_algorithm("--algorithm", item));
  }
  if (algorithms.empty()) throw UsageError("--algorithm: give at least one algorithm");
  return algorithms;
}

// The value element i of the block from `source` to `destination` must have.
float expected_value(uint64_t seed, int source, int destination, int64_t i) {
  return static_cast<float>(random_bits(seed, static_cast<uint64_t>(source) << 20 | destination,
                                        static_cast<uint64_t>(i)) >> 40);
}

}  // namespace

double alltoall_algbw(double size_bytes, double seconds) { return size_bytes / seconds; }

double alltoall_busbw(double size_bytes, double seconds, int ranks) {
  return alltoall_algbw(size_bytes, seconds) * (ranks - 1) / ranks;
}

int run_alltoall_command(int argc, char** argv) {
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  const po::options_description options = alltoall_options();
  const cli::ParsedCommand parsed = cli::parse_command("alltoall", argc, argv, options);
  if (parsed.help) {
    if (rank == 0) {
      cli::print_command_help(std::cout, "alltoall",
                              "All-to-all benchmark over message sizes and exchange algorithms "
                              "(nccl-tests style: time, algbw, busbw, #wrong, OK/FAILED).",
                              options);
    }
    return 0;
  }
  const po::variables_map& vm = parsed.values;
  const int64_t min_bytes = cli::parse_byte_size("--min-bytes", vm["min-bytes"].as<std::string>());
  const int64_t max_bytes = cli::parse_byte_size("--max-bytes", vm["max-bytes"].as<std::string>());
  const int step = vm["step-factor"].as<int>(), warmup = vm["warmup-iters"].as<int>(),
            iters = vm["iters"].as<int>(), ranks_per_node = vm["ranks-per-node"].as<int>();
  const uint64_t seed = vm["seed"].as<uint64_t>();
  const std::string out = vm["out"].as<std::string>(), pattern = vm["pattern"].as<std::string>();
  const std::vector<ExchangeAlgorithm> algorithms = parse_algorithms(vm["algorithm"].as<std::string>());
  if (max_bytes < min_bytes) throw UsageError("--max-bytes must be >= --min-bytes");
  if (max_bytes / ranks / static_cast<int64_t>(sizeof(float)) > (1LL << 30)) {
    throw UsageError("--max-bytes is too large: at most 4 GiB per peer");
  }
  if (step < 2) throw UsageError("--step-factor must be >= 2");
  if (warmup < 0 || iters < 1) throw UsageError("--warmup-iters must be >= 0 and --iters >= 1");
  if (pattern != "uniform") {
    throw UsageError("--pattern: unknown value '" + pattern + "' (accepted: uniform)");
  }
  std::vector<std::unique_ptr<AlltoallvExchange>> exchanges;
  for (ExchangeAlgorithm algorithm : algorithms) {
    exchanges.push_back(std::make_unique<AlltoallvExchange>(comm, algorithm, ranks_per_node));
  }
  if (rank == 0) cli::print_config_table(std::cout, "alltoall", parsed);

  TraceWriter trace(out, comm, TraceRunInfo{"alltoall", parsed.command_line, parsed.resolved},
                    /*flush_every=*/1 << 30);
  ResultTable table({{"size_bytes", 12, 0}, {"count", 10, 0}, {"algorithm", 12, 0, {"alltoallv", "pairwise", "hierarchical"}},
                     {"time_avg_us", 12, 1}, {"time_max_us", 12, 1}, {"algbw_GBps", 10, 3},
                     {"busbw_GBps", 10, 3}, {"wrong", 6, 0}});
  std::string csv_error;
  if (rank == 0) {
    try {
      table.open_csv(csv_path_beside(out));
    } catch (const UsageError& error) {
      csv_error = error.what();
    }
  }
  cli::agree_or_throw(comm, csv_error.empty(), csv_error);
  const std::string group = "/bench/alltoall";
  trace.set_attribute(group, "pattern", pattern);
  trace.set_attribute(group, "ranks_per_node", static_cast<int64_t>(exchanges.front()->ranks_per_node()));
  trace.set_attribute(group, "nodes", static_cast<int64_t>(exchanges.front()->nodes()));
  trace.set_attribute(group, "algorithm_codes", std::string("0 = alltoallv, 1 = pairwise, 2 = hierarchical"));
  const char* names[] = {"size_bytes", "algorithm", "time_avg_us", "time_max_us", "algbw_GBps",
                         "busbw_GBps", "wrong"};
  std::vector<TraceSeries> columns;
  for (const char* name : names) {
    columns.push_back(trace.series(group + "/" + name, TraceType::float64, {}, TraceLayout::replicated));
  }
  TraceSeries per_rank = trace.series(group + "/time_us_per_rank", TraceType::float64, {},
                                      TraceLayout::per_rank, "us", "mean time per iteration on each rank");

  const int64_t max_per_peer = max_bytes / ranks / static_cast<int64_t>(sizeof(float));
  std::vector<float> send(static_cast<size_t>(std::max<int64_t>(max_per_peer, 1) * ranks));
  std::vector<float> recv(send.size());
  std::vector<int> counts(ranks), displs(ranks);
  if (rank == 0) {
    std::printf("\n# moebench alltoall: %d ranks, %d node(s) x %d, pattern %s, %d iters after %d warm-up\n",
                ranks, exchanges.front()->nodes(), exchanges.front()->ranks_per_node(),
                pattern.c_str(), iters, warmup);
    std::printf("# size = bytes each rank sends in all; algbw = size / max time; busbw = algbw * (P-1)/P\n");
    table.print_header(stdout);
  }
  int64_t total_wrong = 0;
  for (int64_t size = min_bytes; size <= max_bytes; size *= step) {
    const int64_t per_peer = size / ranks / static_cast<int64_t>(sizeof(float));
    for (int p = 0; p < ranks; ++p) {
      counts[p] = static_cast<int>(per_peer);
      displs[p] = static_cast<int>(per_peer * p);
    }
    const double actual_bytes = static_cast<double>(per_peer) * ranks * sizeof(float);
    for (size_t a = 0; a < exchanges.size(); ++a) {
      AlltoallvExchange& exchange = *exchanges[a];
      double seconds = 0.0;
      for (int it = 0; it < warmup + iters; ++it) {
        MOEBENCH_MPI_CHECK(MPI_Barrier(comm));
        const double start = MPI_Wtime();
        exchange.run(send.data(), counts.data(), displs.data(), recv.data(), counts.data(),
                     displs.data(), MPI_FLOAT);
        if (it >= warmup) seconds += MPI_Wtime() - start;
      }
      seconds /= iters;
      // Correctness, outside the timed loop.
      for (int p = 0; p < ranks; ++p) {
        for (int64_t i = 0; i < per_peer; ++i) send[p * per_peer + i] = expected_value(seed, rank, p, i);
      }
      std::fill(recv.begin(), recv.end(), -1.0f);
      exchange.run(send.data(), counts.data(), displs.data(), recv.data(), counts.data(),
                   displs.data(), MPI_FLOAT);
      int64_t wrong = 0;
      for (int p = 0; p < ranks; ++p) {
        for (int64_t i = 0; i < per_peer; ++i) wrong += recv[p * per_peer + i] != expected_value(seed, p, rank, i);
      }
      int64_t all_wrong = 0;
      MOEBENCH_MPI_CHECK(MPI_Allreduce(&wrong, &all_wrong, 1, MPI_INT64_T, MPI_SUM, comm));
      total_wrong += all_wrong;
      double sum = 0.0, max = 0.0;
      MOEBENCH_MPI_CHECK(MPI_Allreduce(&seconds, &sum, 1, MPI_DOUBLE, MPI_SUM, comm));
      MOEBENCH_MPI_CHECK(MPI_Allreduce(&seconds, &max, 1, MPI_DOUBLE, MPI_MAX, comm));
      const double avg = sum / ranks;
      const std::vector<double> row = {actual_bytes, static_cast<double>(per_peer * ranks),
                                       static_cast<double>(static_cast<int>(exchange.algorithm())),
                                       1e6 * avg, 1e6 * max, alltoall_algbw(actual_bytes, max) / 1e9,
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
  trace.set_attribute(group, "complete", static_cast<int64_t>(1));
  trace.close();
  if (rank == 0) {
    table.close_csv();
    std::printf("# wrote %s and %s\n", out.c_str(), csv_path_beside(out).c_str());
    std::printf("# Wrong elements: %lld  %s\n", static_cast<long long>(total_wrong),
                total_wrong == 0 ? "OK" : "FAILED");
  }
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace moebench
