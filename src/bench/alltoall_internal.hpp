// Private pieces of `moebench alltoall` shared by its pattern files: the resolved options, the
// algorithms as the benchmark runs them (the exchange algorithms plus the `raw` reference),
// the timed loop and the check, and small reporting helpers.
//
//   alltoall_bench.cpp        options, validation, dispatch to a pattern
//   alltoall_harness.cpp      counts, the checked data, algorithms, timed loop, report helpers
//   alltoall_uniform.cpp      the size sweep, the alpha-beta fit and the --predict model table
//   alltoall_routed.cpp       routing-plan traffic and the cost-per-router table
//   alltoall_replay_trace.cpp reading a training trace's /comm matrices
//   alltoall_replay.cpp       replaying them
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moebench/alltoall.hpp"
#include "moebench/alltoall_bench.hpp"
#include "moebench/cli.hpp"
#include "moebench/alltoall_nccl.hpp"
#include "moebench/cuda.hpp"

namespace moebench {

class ResultTable;
class TraceWriter;

namespace alltoall_detail {

struct AlltoallOptions {
  std::string pattern;                      // uniform | routed | replay
  Backend backend = Backend::cpu;           // cuda: uniform pattern, the nccl algorithm only
  std::vector<std::string> algorithms;      // alltoallv | pairwise | hierarchical | raw
  int ranks_per_node = 0;
  int warmup_iters = 0, iters = 1;
  uint64_t seed = 0;
  std::string out;
  // uniform
  int64_t min_bytes = 0, max_bytes = 0;
  int step_factor = 2;
  std::vector<int> predict_ranks;           // empty: no model table
  int predict_ranks_per_node = 8;
  int64_t predict_bytes = 0;                // 0: --max-bytes
  double intra_bw_GBps = 0.0;               // 0: the fitted bandwidth
  double inter_bw_GBps = 0.0;               // 0: the fitted bandwidth
  double inter_latency_us = -1.0;           // < 0: the fitted alpha
  // routed
  std::vector<RouterKind> routers;
  std::vector<int> top_ks;
  std::vector<double> capacity_factors;
  RoutedOptions routed;                     // E, dispatch, logits, T, d (router/k/CF per cell)
  // replay
  std::string replay;
  int replay_steps = 0;                     // 0: every step of the trace
};

// Algorithm codes in the trace (`algorithm_codes`): the ExchangeAlgorithm values, then raw,
// then nccl (--backend cuda).
inline constexpr int kRawAlgorithmCode = 3;
inline constexpr int kNcclAlgorithmCode = 4;

const std::vector<std::string>& algorithm_labels();  // index = code
std::string algorithm_codes_text();                 // "0 = alltoallv, ..., 3 = raw"

// One algorithm as the benchmark runs it: an AlltoallvExchange, or `raw` (MPI_Alltoallv called
// directly by the benchmark loop on the same buffers: the reference for the wrapper's cost).
class BenchAlgorithm {
 public:
  // max_elements: the largest exchange, in floats each way (sizes the nccl device buffers).
  BenchAlgorithm(MPI_Comm comm, const std::string& name, int ranks_per_node,
                 int64_t max_elements);
  ~BenchAlgorithm();
  const std::string& name() const { return name_; }
  int code() const { return code_; }
  // The device exchange of nccl; null for the MPI algorithms.
  NcclAlltoall* device_exchange() { return nccl_.get(); }
  // The algorithm whose message shape the model uses (raw moves what alltoallv moves, and
  // nccl's grouped send/receive is a flat exchange too).
  ExchangeAlgorithm model_algorithm() const;
  void run(const void* send, const ExchangeCounts& counts, void* recv, MPI_Datatype type);
  // Counts-and-displacements form (the uniform sweep reuses one pair of arrays for both sides).
  void run(const void* send, const int* send_counts, const int* send_displs, void* recv,
           const int* recv_counts, const int* recv_displs, MPI_Datatype type);

 private:
  MPI_Comm comm_;
  std::string name_;
  int code_ = 0;
  std::unique_ptr<AlltoallvExchange> exchange_;  // null for raw and nccl
  std::unique_ptr<NcclAlltoall> nccl_;           // nccl only
};

// Collective: one BenchAlgorithm per name (AlltoallvExchange validates --ranks-per-node; nccl
// needs a device on every rank).
std::vector<std::unique_ptr<BenchAlgorithm>> make_algorithms(const AlltoallOptions& options,
                                                             MPI_Comm comm);

// Times `iters` iterations after `warmup` untimed ones, each between barriers: the exchange
// `forward` from send to recv and, when `backward` is given, the reverse exchange from recv
// back to send in the same iteration. seconds[i] = this rank's time of timed iteration i
// (nccl: device time from CUDA events of the forward exchange between device buffers; no
// backward). No allocation.
void time_exchange(BenchAlgorithm& algorithm, const ExchangeCounts& forward,
                   const ExchangeCounts* backward, float* send, float* recv, int warmup,
                   int iters, double* seconds, MPI_Comm comm);

// Outside the timed loop: fills this rank's blocks with f(seed, ...), runs the exchange once
// and returns the elements that arrived wrong on this rank.
int64_t check_exchange(BenchAlgorithm& algorithm, const ExchangeCounts& counts, float* send,
                       float* recv, uint64_t seed, int rank);

// Median of values[0..n) (reorders them).
double median_in_place(double* values, int n);
double reduce_double(double value, MPI_Op op, MPI_Comm comm);
int64_t reduce_int64(int64_t value, MPI_Op op, MPI_Comm comm);

// "out/a.h5" + "fit" -> "out/a_fit.csv" (the main table's CSV is csv_path_beside(out)).
std::string csv_path_with_suffix(const std::string& trace_path, const std::string& suffix);
// Rank 0 opens the table's CSV; a failure is raised on every rank (agree_or_throw).
void open_csv_everywhere(ResultTable& table, const std::string& path, MPI_Comm comm);
// Nodes of the run as the hierarchical algorithm sees them (--ranks-per-node, or shared
// memory). Collective.
struct NodeShape {
  int nodes = 1, ranks_per_node = 1;
};
NodeShape node_shape(MPI_Comm comm, int ranks_per_node);
// The group attributes every pattern writes on /bench/alltoall: pattern, nodes,
// ranks_per_node, algorithm_codes, algorithms (the measured ones, in order), iters.
void write_common_attributes(TraceWriter& trace, const AlltoallOptions& options,
                             const NodeShape& shape);

// The /comm matrices of a `moebench train` trace (--replay), identical on every rank.
struct ReplayTrace {
  int steps = 0, layers = 0;         // steps: the first --replay-steps (or all) rows of /comm
  std::vector<int64_t> bytes;        // [layers, steps, P(src), 4 phases, P(dst)]
  std::vector<double> recorded_ms;   // [layers, steps, P, 4]; empty when the trace has none
  std::string command_line;          // of the recorded run
};
// Collective: rank 0 reads and validates options.replay (and that --out is not that file);
// every rank returns the same ReplayTrace or throws the same UsageError.
ReplayTrace read_replay_trace(const AlltoallOptions& options, MPI_Comm comm);

// The patterns. Each validates what only it can see before it creates any output, and
// returns the exit status (1 if any element arrived wrong).
int run_uniform_pattern(const AlltoallOptions& options, const cli::ParsedCommand& parsed,
                        MPI_Comm comm);
int run_routed_pattern(const AlltoallOptions& options, const cli::ParsedCommand& parsed,
                       MPI_Comm comm);
int run_replay_pattern(const AlltoallOptions& options, const cli::ParsedCommand& parsed,
                       MPI_Comm comm);

}  // namespace alltoall_detail
}  // namespace moebench
