// `moebench alltoall`: the all-to-all benchmark, nccl-tests style (docs/alltoall.md). Three
// traffic patterns (--pattern):
//   uniform  for each message size, each exchange algorithm is timed, the time per iteration
//            reduced across ranks (average and max), algbw and busbw reported, and an
//            alpha-beta model fitted per algorithm (alltoall_model.hpp), with optional
//            predictions at other rank counts (--predict);
//   routed   the per-peer byte matrix of a real routing plan (route() and the Dispatcher's
//            packing) for each router x top-k x capacity factor: the cost-per-router table
//            (wire bytes, padded/ragged overhead, Dispatcher exchange times) and the same
//            matrix moved by each exchange algorithm;
//   replay   the P x P byte matrices recorded in a `moebench train` trace (/comm), exchange
//            by exchange in training order, with the time per step.
// Every pattern checks every received element after its timed loop (#wrong, OK/FAILED).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "moebench/dispatcher.hpp"
#include "moebench/routing.hpp"
#include "moebench/synthetic_inputs.hpp"

namespace moebench {

// argv[0] is "alltoall". Returns the exit status (1 if any element arrived wrong).
int run_alltoall_command(int argc, char** argv);

// nccl-tests' definitions (docs/alltoall.md): size = bytes each rank sends in all (its whole
// send buffer, size / P to each rank, itself included); algbw = size / time;
// busbw = algbw * (P - 1) / P, the bytes that cross between ranks per unit time.
double alltoall_algbw(double size_bytes, double seconds);
double alltoall_busbw(double size_bytes, double seconds, int ranks);

// One variable all-to-all in MPI_Alltoallv form: counts and displacements in elements, blocks
// packed in rank order without gaps.
struct ExchangeCounts {
  std::vector<int> send_counts, send_displs;  // [P]
  std::vector<int> recv_counts, recv_displs;  // [P]
  int64_t send_total = 0, recv_total = 0;     // elements
};

// Collective: this rank sends send_elements[p] elements to rank p; the receive counts come
// from one MPI_Alltoall of the counts. Throws UsageError when a count or total exceeds the MPI
// int limit.
ExchangeCounts exchange_counts_from_send(const std::vector<int64_t>& send_elements,
                                         MPI_Comm comm);
// The reverse exchange: every rank sends back what it received (the combine after a dispatch).
ExchangeCounts reverse_exchange(const ExchangeCounts& counts);

// The checked data, f(seed, source, destination, index): an integer below 2^24, exact in a
// float, so any misplaced or missing element is seen.
float alltoall_expected_value(uint64_t seed, int source, int destination, int64_t index);
// send [counts.send_total]: this rank's blocks filled with the expected values.
void fill_expected_blocks(float* send, const ExchangeCounts& counts, uint64_t seed, int rank);
// Elements of recv [counts.recv_total] that differ from what each source should have sent.
int64_t count_wrong_elements(const float* recv, const ExchangeCounts& counts, uint64_t seed,
                             int rank);

// The routed pattern of one (router, E, k, CF) cell.
struct RoutedOptions {
  RoutingConfig routing;  // router, E, k, CF, drop policy, temperature, ...
  DispatchMode dispatch = DispatchMode::ragged;
  SyntheticInputs inputs;  // the router logits and token ids, as `moebench capacity`
  int tokens = 2048;       // T per rank
  int d_model = 256;       // floats per token row
};

// This rank's synthetic router logits [T, E] and token ids [T] (synthetic_inputs.hpp, batch 0):
//   gaussian: z ~ N(0, std^2), ids uniform over the vocabulary;
//   zipf:     z = std * N(0, 1) - s * log(e + 1) (expert e's popularity ~ (e+1)^-s), ids
//             zipf(s) distributed.
void make_routed_inputs(std::vector<float>& logits, std::vector<int32_t>& ids,
                        const RoutedOptions& options, int rank);

struct RoutedPattern {
  RoutingPlan plan;  // route() of this rank's inputs
  // Dispatcher::bytes_sent() of one set_plan + dispatch + combine of `plan`, per destination
  // rank [P]: in options.dispatch mode, and the dispatch bytes in each mode.
  std::vector<int64_t> dispatch_bytes, combine_bytes;
  std::vector<int64_t> ragged_bytes, padded_bytes;
  ExchangeCounts dispatch;  // floats the exchange algorithms move: dispatch_bytes / 4
  ExchangeCounts combine;   // and back (reverse_exchange(dispatch))
};

// Collective. Throws UsageError for an invalid routing configuration or E % P != 0.
RoutedPattern make_routed_pattern(const RoutedOptions& options, MPI_Comm comm);

}  // namespace moebench
