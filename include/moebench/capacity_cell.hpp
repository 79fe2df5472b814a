// One grid cell of `moebench capacity` (capacity.hpp), on either backend: the inputs a cell
// runs on, what it measures, and the GPU runner of `--backend cuda`.
//
// Per cell, after warmup_iters untimed iterations, each of iters iterations does on every
// rank: route (timed) -> set_plan (ragged: count exchange) -> pack + dispatch exchange ->
// combine exchange + combine (identity experts). The caller then checks that every token came
// back as (sum of its kept gates) * x_t, from the last iteration's plan and y.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moebench/dispatcher.hpp"
#include "moebench/metrics.hpp"
#include "moebench/routing.hpp"

namespace moebench {

struct CapacityCellSetup {
  RoutingConfig config;  // E, k and CF of the cell
  DispatchMode dispatch = DispatchMode::ragged;
  int tokens = 0;        // T per rank
  int d_model = 0;       // floats per row
  int iters = 0, warmup_iters = 0;
  int logit_batches = 0;            // batches of inputs, cycled through the iterations
  const float* logits = nullptr;    // host [logit_batches][T, E]
  const int32_t* token_ids = nullptr;  // host [logit_batches][T]
  const float* x = nullptr;         // host [T, d]
};

struct CapacityCellResult {
  RoutingMetrics metrics;  // over the timed iterations, reduced over ranks
  int capacity = 0;
  // Seconds per iteration on this rank (wall clock on the CPU, device time on the GPU).
  double route_s = 0.0, permute_s = 0.0, unpermute_s = 0.0, exchange_s = 0.0;
  std::vector<double> bytes_to_peer;  // per iteration, this rank -> each rank
};

// Fills the per-iteration times and bytes of `result` from a dispatcher's counters over
// `iters` timed iterations (either backend's: DispatchTimings, bytes_sent()[phase][peer]):
// exchange = count exchange + dispatch and combine exchanges; bytes = dispatch + combine.
inline void set_dispatch_results(CapacityCellResult& result, double route_seconds,
                                 const DispatchTimings& timings,
                                 const std::vector<std::vector<int64_t>>& bytes_sent, int iters) {
  const double n = iters;
  result.route_s = route_seconds / n;
  result.permute_s = timings.permute / n;
  result.unpermute_s = timings.unpermute / n;
  result.exchange_s = (timings.count_exchange + timings.exchange[kDispatchForward] +
                       timings.exchange[kCombineForward]) / n;
  const size_t ranks = bytes_sent[kDispatchForward].size();
  result.bytes_to_peer.assign(ranks, 0.0);
  for (size_t p = 0; p < ranks; ++p) {
    result.bytes_to_peer[p] =
        static_cast<double>(bytes_sent[kDispatchForward][p] + bytes_sent[kCombineForward][p]) / n;
  }
}

// `--backend cuda`: cells on this rank's GPU (CudaContext: device = rank within its node,
// NCCL between the ranks), the inputs copied to the device once per cell and every phase
// timed by CUDA events (CudaDispatcher). Defined in src/cuda/capacity_cuda.cpp; in a build
// without the CUDA backend the constructor throws UsageError(cuda_backend_missing_message()).
class CudaCapacityCells {
 public:
  // Collective over comm; UsageError on every rank when a rank has no GPU of its own.
  explicit CudaCapacityCells(MPI_Comm comm);
  ~CudaCapacityCells();
  CudaCapacityCells(const CudaCapacityCells&) = delete;
  CudaCapacityCells& operator=(const CudaCapacityCells&) = delete;

  // UsageError naming the option when the GPU routing cannot run `config` (routing_cuda.hpp:
  // --drop-policy prob, top-k above 8). Needs no GPU: callers check every cell first.
  static void validate(const RoutingConfig& config);

  std::string device_name() const;
  // Collective. last_plan (host) and y [T, d] receive the last iteration's plan and output.
  CapacityCellResult run(const CapacityCellSetup& setup, MPI_Comm comm, RoutingPlan& last_plan,
                         std::vector<float>& y);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moebench
