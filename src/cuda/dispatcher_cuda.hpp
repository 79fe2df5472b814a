// The Dispatcher (dispatcher.hpp) on the GPU: the same layouts, phases and results, with
// device buffers, the permute kernels of dispatch_cuda.hpp on the compute stream and NCCL
// grouped send/recv on the communication stream (each exchange ordered after the compute
// work that produced its input, and the compute work that reads its output after it).
//
//   ragged: set_plan exchanges the per-expert row counts (an NCCL all-to-all of E_local
//           int32 per peer), then every exchange moves only kept rows;
//   padded: fixed [E_local, C] blocks per peer, padding rows zero, no count exchange.
//
// On one rank, as the CPU Dispatcher, the send layout *is* the expert-major layout (one
// source, blocks in expert order; padded: [E, C] blocks with zero padding either way), so
// nothing is exchanged or reordered and no exchange buffer is allocated: rows are packed
// straight into the caller's expert-major buffer and gathered straight from it, all on the
// compute stream. The exchange timings (count exchange included) stay zero; bytes_sent and
// count_bytes_sent still count the rows and counts, as self-sends, as the CPU's do.
//
// set_plan waits for the plan's load (a device-to-host copy) and, for ragged on several ranks,
// for the count exchange: NCCL needs the row counts on the host, as MPI_Alltoallv does.
// Nothing else waits: the phase timers (CudaPhaseTimers) record CUDA events and are read
// only by timings().
#pragma once

#include <cstdint>
#include <vector>

#include "moebench/cuda.hpp"
#include "moebench/dispatcher.hpp"
#include "phase_timers.hpp"
#include "routing_cuda.hpp"

namespace moebench {

class CudaDispatcher {
 public:
  CudaDispatcher(CudaContext& context, int num_experts, int d_model, DispatchMode mode);

  // Sizes every buffer for plans of up to max_tokens tokens under `config` (call once).
  void reserve(const RoutingConfig& config, int max_tokens);

  // Collective. Derives the layouts from the plan (which must stay alive and unchanged
  // until the next set_plan). Must precede the calls below for this plan.
  void set_plan(const DeviceRoutingPlan& plan);

  // The four phases, as Dispatcher; all pointers are device memory. Each call enqueues its
  // work and returns without waiting for it.
  void dispatch(float* expert_in, const float* x);                        // [N, d] <- [T, d]
  // On one rank combine_backward reads expert_out again: it must not change in between.
  void combine(float* y, const float* expert_out);                        // [T, d] <- [N, d]
  // d_expert_out [N, d], d_gate [T, slots] <- dy [T, d]; after combine of the same plan.
  void combine_backward(float* d_expert_out, float* d_gate, const float* dy);
  void dispatch_backward(float* dx, const float* d_expert_in);            // dx += ...

  int local_experts() const { return local_experts_; }
  int64_t expert_rows() const { return expert_offsets_.back(); }
  const int64_t* expert_row_offsets() const { return expert_offsets_.data(); }  // host [E_local + 1]
  int64_t max_expert_rows() const { return max_expert_rows_; }
  // Bytes of token rows sent to each rank by the last set_plan's layout, one exchange.
  const std::vector<int64_t>& send_bytes_per_peer() const { return send_bytes_; }
  // As Dispatcher: bytes_sent()[phase][dst] summed since the last reset, self-sends included.
  const std::vector<std::vector<int64_t>>& bytes_sent() const { return bytes_sent_; }
  int64_t count_bytes_sent() const { return count_bytes_sent_; }
  // Device seconds per phase since the last reset. Waits for the phases still pending
  // (the host blocks until their work is done), so read it outside the timed loop.
  const DispatchTimings& timings();
  int pending_timings() const { return timers_.pending(); }  // event pairs not yet read
  // Zeroes bytes and timings; timings still pending are dropped, not waited for.
  void reset_counters();

 private:
  bool exchanging() const { return size_ > 1; }
  void exchange(bool forward, const float* send, float* recv, int phase);
  void count_sent(int phase, const std::vector<int64_t>& floats_to_peer);  // into bytes_sent_
  // Where rows are packed in the send layout: send_buffer_, or on one rank expert_major.
  float* send_rows(float* expert_major);
  // send_rows(expert_major) -> exchange to the experts -> expert_major [N, d].
  void deliver_to_experts(float* expert_major, int phase);
  // expert_major [N, d] -> exchange back to the sources -> landing (send layout). Returns
  // where the rows are in the send layout: landing, or on one rank expert_major itself.
  const float* return_to_sources(float* landing, const float* expert_major, int phase);

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

  // Device; the count and block arrays and the exchange buffers are empty on one rank.
  DeviceArray<int64_t> send_offsets_;       // [E + 1]
  DeviceArray<int32_t> recv_counts_device_; // [P, E_local]
  DeviceArray<int64_t> block_source_device_, block_expert_device_;  // [P, E_local]
  DeviceArray<int32_t> block_rows_device_;  // [P, E_local]
  DeviceArray<float> send_buffer_;          // [send rows, d]
  DeviceArray<float> returned_rows_;        // [send rows, d] expert outputs back at the source
  DeviceArray<float> recv_buffer_;          // [expert rows, d] source-major
  const float* returned_ = nullptr;         // combine's expert outputs, send layout:
                                            // returned_rows_ or, on one rank, its expert_out
  int64_t max_send_rows_ = 0, max_expert_rows_ = 0;

  // Phases timed into DispatchTimings: permute, unpermute, count exchange, then exchange[p].
  static constexpr int kPermute = 0, kUnpermute = 1, kCountExchange = 2, kExchange = 3;
  CudaPhaseTimers timers_{kExchange + kNumExchangePhases};
  DispatchTimings timings_;
  std::vector<std::vector<int64_t>> bytes_sent_;  // [phase][P]
  int64_t count_bytes_sent_ = 0;
};

}  // namespace moebench
