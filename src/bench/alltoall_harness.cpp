// The harness shared by the patterns of `moebench alltoall` (alltoall_internal.hpp): exchange
// counts, the checked data, the algorithms as the benchmark runs them (with the `raw`
// reference), the timed loop, reductions and the reporting helpers.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "alltoall_internal.hpp"
#include "moebench/check.hpp"
#include "moebench/random.hpp"
#include "moebench/table.hpp"
#include "moebench/trace.hpp"

namespace moebench {

using namespace alltoall_detail;

double alltoall_algbw(double size_bytes, double seconds) { return size_bytes / seconds; }

double alltoall_busbw(double size_bytes, double seconds, int ranks) {
  return alltoall_algbw(size_bytes, seconds) * (ranks - 1) / ranks;
}

ExchangeCounts exchange_counts_from_send(const std::vector<int64_t>& send_elements,
                                         MPI_Comm comm) {
  int ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  MOEBENCH_CHECK(static_cast<int>(send_elements.size()) == ranks,
                 "exchange_counts_from_send: one count per rank");
  int64_t total = 0;
  bool fits = true;
  for (int64_t count : send_elements) {
    MOEBENCH_CHECK(count >= 0, "exchange_counts_from_send: negative count");
    total += count;
    fits = fits && count <= INT_MAX;
  }
  fits = fits && total <= INT_MAX;
  cli::agree_or_throw(comm, fits,
                      "an exchange needs more than 2^31 - 1 elements on one rank, beyond MPI's int "
                      "counts (use fewer --tokens or a smaller --d-model)");
  ExchangeCounts counts;
  counts.send_counts.resize(ranks);
  counts.send_displs.resize(ranks);
  counts.recv_counts.resize(ranks);
  counts.recv_displs.resize(ranks);
  for (int p = 0; p < ranks; ++p) {
    counts.send_counts[p] = static_cast<int>(send_elements[p]);
    counts.send_displs[p] = static_cast<int>(counts.send_total);
    counts.send_total += counts.send_counts[p];
  }
  MOEBENCH_MPI_CHECK(MPI_Alltoall(counts.send_counts.data(), 1, MPI_INT, counts.recv_counts.data(),
                                  1, MPI_INT, comm));
  for (int p = 0; p < ranks; ++p) {
    counts.recv_displs[p] = static_cast<int>(std::min<int64_t>(counts.recv_total, INT_MAX));
    counts.recv_total += counts.recv_counts[p];
  }
  cli::agree_or_throw(comm, counts.recv_total <= INT_MAX,
                      "an exchange receives more than 2^31 - 1 elements on one rank, beyond MPI's "
                      "int counts (use fewer --tokens or a smaller --d-model)");
  return counts;
}

ExchangeCounts reverse_exchange(const ExchangeCounts& counts) {
  ExchangeCounts back;
  back.send_counts = counts.recv_counts;
  back.send_displs = counts.recv_displs;
  back.recv_counts = counts.send_counts;
  back.recv_displs = counts.send_displs;
  back.send_total = counts.recv_total;
  back.recv_total = counts.send_total;
  return back;
}

float alltoall_expected_value(uint64_t seed, int source, int destination, int64_t index) {
  return static_cast<float>(random_bits(seed, static_cast<uint64_t>(source) << 20 | static_cast<uint64_t>(destination),
                                        static_cast<uint64_t>(index)) >> 40);
}

void fill_expected_blocks(float* send, const ExchangeCounts& counts, uint64_t seed, int rank) {
  for (size_t p = 0; p < counts.send_counts.size(); ++p) {
    float* block = send + counts.send_displs[p];
    for (int64_t i = 0; i < counts.send_counts[p]; ++i) {
      block[i] = alltoall_expected_value(seed, rank, static_cast<int>(p), i);
    }
  }
}

int64_t count_wrong_elements(const float* recv, const ExchangeCounts& counts, uint64_t seed,
                             int rank) {
  int64_t wrong = 0;
  for (size_t p = 0; p < counts.recv_counts.size(); ++p) {
    const float* block = recv + counts.recv_displs[p];
    for (int64_t i = 0; i < counts.recv_counts[p]; ++i) {
      wrong += block[i] != alltoall_expected_value(seed, static_cast<int>(p), rank, i);
    }
  }
  return wrong;
}

namespace alltoall_detail {

const std::vector<std::string>& algorithm_labels() {
  static const std::vector<std::string> labels = {"alltoallv", "pairwise", "hierarchical", "raw",
                                                  "nccl"};
  return labels;
}

std::string algorithm_codes_text() {
  return "0 = alltoallv, 1 = pairwise, 2 = hierarchical, 3 = raw, 4 = nccl";
}

BenchAlgorithm::BenchAlgorithm(MPI_Comm comm, const std::string& name, int ranks_per_node,
                               int64_t max_elements)
    : comm_(comm), name_(name) {
  const auto& labels = algorithm_labels();
  code_ = static_cast<int>(std::find(labels.begin(), labels.end(), name) - labels.begin());
  MOEBENCH_CHECK(code_ < static_cast<int>(labels.size()), "unknown algorithm " + name);
  if (code_ == kNcclAlgorithmCode) {
    nccl_ = std::make_unique<NcclAlltoall>(comm, max_elements);
  } else if (code_ != kRawAlgorithmCode) {
    exchange_ = std::make_unique<AlltoallvExchange>(
        comm, parse_exchange_algorithm("--algorithm", name), ranks_per_node);
  }
}

BenchAlgorithm::~BenchAlgorithm() = default;

ExchangeAlgorithm BenchAlgorithm::model_algorithm() const {
  return exchange_ ? exchange_->algorithm() : ExchangeAlgorithm::alltoallv;
}

void BenchAlgorithm::run(const void* send, const ExchangeCounts& counts, void* recv,
                         MPI_Datatype type) {
  if (nccl_) {
    MOEBENCH_CHECK(type == MPI_FLOAT, "the nccl algorithm exchanges floats");
    nccl_->run_through_host(static_cast<const float*>(send), counts, static_cast<float*>(recv));
    return;
  }
  run(send, counts.send_counts.data(), counts.send_displs.data(), recv, counts.recv_counts.data(),
      counts.recv_displs.data(), type);
}

void BenchAlgorithm::run(const void* send, const int* send_counts, const int* send_displs,
                         void* recv, const int* recv_counts, const int* recv_displs,
                         MPI_Datatype type) {
  MOEBENCH_CHECK(!nccl_, "the nccl algorithm takes ExchangeCounts");
  if (exchange_) {
    exchange_->run(send, send_counts, send_displs, recv, recv_counts, recv_displs, type);
  } else {
    MOEBENCH_MPI_CHECK(MPI_Alltoallv(send, send_counts, send_displs, type, recv, recv_counts,
                                     recv_displs, type, comm_));
  }
}

std::vector<std::unique_ptr<BenchAlgorithm>> make_algorithms(const AlltoallOptions& options,
                                                             MPI_Comm comm) {
  int ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  // The uniform sweep's largest exchange; the nccl algorithm's device buffers grow to a
  // routed pattern's as its cells need.
  const int64_t max_elements =
      std::max<int64_t>(options.max_bytes / ranks / static_cast<int64_t>(sizeof(float)), 1) * ranks;
  std::vector<std::unique_ptr<BenchAlgorithm>> algorithms;
  for (const std::string& name : options.algorithms) {
    algorithms.push_back(
        std::make_unique<BenchAlgorithm>(comm, name, options.ranks_per_node, max_elements));
  }
  return algorithms;
}

void time_exchange(BenchAlgorithm& algorithm, const ExchangeCounts& forward,
                   const ExchangeCounts* backward, float* send, float* recv, int warmup,
                   int iters, double* seconds, MPI_Comm comm) {
  if (NcclAlltoall* device = algorithm.device_exchange()) {
    device->time(forward, backward, warmup, iters, seconds, comm);
    return;
  }
  for (int it = 0; it < warmup + iters; ++it) {
    MOEBENCH_MPI_CHECK(MPI_Barrier(comm));
    const double start = MPI_Wtime();
    algorithm.run(send, forward, recv, MPI_FLOAT);
    if (backward != nullptr) algorithm.run(recv, *backward, send, MPI_FLOAT);
    if (it >= warmup) seconds[it - warmup] = MPI_Wtime() - start;
  }
}

int64_t check_exchange(BenchAlgorithm& algorithm, const ExchangeCounts& counts, float* send,
                       float* recv, uint64_t seed, int rank) {
  fill_expected_blocks(send, counts, seed, rank);
  std::fill(recv, recv + counts.recv_total, -1.0f);
  algorithm.run(send, counts, recv, MPI_FLOAT);
  return count_wrong_elements(recv, counts, seed, rank);
}

double median_in_place(double* values, int n) {
  MOEBENCH_CHECK(n >= 1, "median of nothing");
  std::sort(values, values + n);
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double reduce_double(double value, MPI_Op op, MPI_Comm comm) {
  double result = 0.0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, op, comm));
  return result;
}

int64_t reduce_int64(int64_t value, MPI_Op op, MPI_Comm comm) {
  int64_t result = 0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_INT64_T, op, comm));
  return result;
}

std::string csv_path_with_suffix(const std::string& trace_path, const std::string& suffix) {
  const std::string csv = csv_path_beside(trace_path);  // ends in ".csv"
  return csv.substr(0, csv.size() - 4) + "_" + suffix + ".csv";
}

void open_csv_everywhere(ResultTable& table, const std::string& path, MPI_Comm comm) {
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::string error;
  if (rank == 0) {
    try {
      table.open_csv(path);
    } catch (const UsageError& e) {
      error = e.what();
    }
  }
  cli::agree_or_throw(comm, error.empty(), error);
}

NodeShape node_shape(MPI_Comm comm, int ranks_per_node) {
  const AlltoallvExchange probe(comm, ExchangeAlgorithm::hierarchical, ranks_per_node);
  return NodeShape{probe.nodes(), probe.ranks_per_node()};
}

void write_common_attributes(TraceWriter& trace, const AlltoallOptions& options,
                             const NodeShape& shape) {
  const std::string group = "/bench/alltoall";
  trace.set_attribute(group, "pattern", options.pattern);
  trace.set_attribute(group, "backend", std::string(to_string(options.backend)));
  trace.set_attribute(group, "ranks_per_node", static_cast<int64_t>(shape.ranks_per_node));
  trace.set_attribute(group, "nodes", static_cast<int64_t>(shape.nodes));
  trace.set_attribute(group, "algorithm_codes", algorithm_codes_text());
  std::string names;
  for (const std::string& name : options.algorithms) names += (names.empty() ? "" : ",") + name;
  trace.set_attribute(group, "algorithms", names);
  trace.set_attribute(group, "iters", static_cast<int64_t>(options.iters));
  trace.set_attribute(group, "warmup_iters", static_cast<int64_t>(options.warmup_iters));
}

}  // namespace alltoall_detail

}  // namespace moebench
