// The Dispatcher (dispatcher.hpp) on the GPU: the same layouts, phases and results, with
// device buffers, the permute kernels of dispatch_cuda.hpp on the compute stream and NCCL
// grouped send/recv on the communication stream (each exchange ordered after the compute
// work that produced its input, and the compute work that reads its output after it).
//
//   ragged: set_plan exchanges the per-expert row counts (an NCCL all-to-all of E_local
//           int32 per peer), then every exchange moves only kept rows;
//   padded: fixed [E_local, C] blocks per peer, padding rows zero, no count exchange.
//
// set_plan waits for the plan's load (a device-to-host copy) and, for ragged, for the count
// exchange: NCCL needs the row counts on the host, as MPI_Alltoallv does.
//
// Timings and bytes as the CPU Dispatcher's (DispatchTimings, bytes_sent): every phase is
// bracketed by a pair of CUDA events on the stream that runs it (permute and unpermute on the
// compute stream, exchanges on the communication stream) and the host waits for its stop
// event, so the figures are device time and each call returns with its work done. Unlike
// the CPU Dispatcher, one rank still goes through NCCL (a copy to itself).
#pragma once

#include <cstdint>
#include <vector>

#include "moebench/cuda.hpp"
#include "moebench/dispatcher.hpp"
#include "routing_cuda.hpp"

namespace moebench {

class CudaDispatcher {
 public:
  CudaDispatcher(CudaContext& context, int num_experts, int d_model, DispatchMode mode);

  // Sizes every buffer for plans of up to max_tokens tokens under `config` (call once).
  void reserve(const RoutingConfig& config, int max_tokens);

  // Collective. Derives the layouts from the plan (which must stay alive and unchanged
  // until the next set_plan).
  void set_plan(const DeviceRoutingPlan& plan);

  // The four phases, as Dispatcher; all pointers are device memory.
  void dispatch(float* expert_in, const float* x);                        // [N, d] <- [T, d]
  void combine(float* y, const float* expert_out);                        // [T, d] <- [N, d]
  void combine_backward(float* d_expert_out, float* d_gate, const float* dy);
  void dispatch_backward(float* dx, const float* d_expert_in);            // dx += ...

  int local_experts() const { return local_experts_; }
  int64_t expert_rows() const { return expert_offsets_.back(); }
  const int64_t* expert_row_offsets() const { return expert_offsets_.data(); }  // host [E_local + 1]
  int64_t max_expert_rows() const { return max_expert_rows_; }
  // Bytes of token rows sent to each rank by the last set_plan's layout, one exchange.
  const std::vector<int64_t>& send_bytes_per_peer() const { return send_bytes_; }
  // As Dispatcher: bytes_sent()[phase][dst] summed since the last reset, and device seconds.
  const std::vector<std::vector<int64_t>>& bytes_sent() const { return bytes_sent_; }
  int64_t count_bytes_sent() const { return count_bytes_sent_; }
  const DispatchTimings& timings() const { return timings_; }
  void reset_counters();

 private:
  void exchange(bool forward, const float* send, float* recv, int phase);
  void deliver_to_experts(float* expert_major, int phase);
  void return_to_sources(float* landing, const float* expert_major, int phase);
  // Records the start event on `stream`; stop() records the stop event there, waits for it
  // and adds the elapsed device time to `sink`.
  void start_timer(CUstream_st* stream);
  void stop_timer(CUstream_st* stream, double& sink);

  CudaContext& context_;
  int rank_ = 0, size_ = 1;
  int num_experts_, local_experts_, d_model_;
  DispatchMode mode_;
  const DeviceRoutingPlan* plan_ = nullptr;

  // Host layout (as the CPU Dispatcher).
  std::vector<int32_t> load_;               // [E]
  std::vector<int64_t> send_expert_offset_; // [E + 1] rows, send layout
  std::vector<int32_t> recv_counts_;        // [P, E_local]
  std::vector<int64_t> expert_offsets_;     // [E_local + 1] expert-major
  std::vector<int64_t> block_source_, block_expert_;  // [P, E_local] first rows
  std::vector<int32_t> block_rows_;         // [P, E_local]
  std::vector<int64_t> send_counts_, send_displs_, recv_counts_elems_, recv_displs_;  // [P] floats
  std::vector<int64_t> send_bytes_;         // [P]
  std::vector<int64_t> peer_rows_recv_;     // [P] rows received from each peer

  // Device.
  DeviceArray<int64_t> send_offsets_;       // [E + 1]
  DeviceArray<int32_t> recv_counts_device_; // [P, E_local]
  DeviceArray<int64_t> block_source_device_, block_expert_device_;  // [P, E_local]
  DeviceArray<int32_t> block_rows_device_;  // [P, E_local]
  DeviceArray<float> send_buffer_;          // [send rows, d]
  DeviceArray<float> returned_rows_;        // [send rows, d]
  DeviceArray<float> recv_buffer_;          // [expert rows, d] source-major
  int64_t max_send_rows_ = 0, max_expert_rows_ = 0;

  CudaEventTimer timer_;
  DispatchTimings timings_;
  std::vector<std::vector<int64_t>> bytes_sent_;  // [phase][P]
  int64_t count_bytes_sent_ = 0;
};

}  // namespace moebench
