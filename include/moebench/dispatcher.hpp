// Dispatcher (DESIGN §2): the only component that communicates. It packs kept token rows by
// destination rank and expert, exchanges them, and brings expert outputs back to be combined;
// the backward pass runs the same exchanges in the reverse direction.
//
// Experts are sharded: rank r holds global experts [r E_local, (r+1) E_local), E_local = E / P.
//
// Source side ("send layout"): one row per kept assignment, grouped by global expert e in
// slot-position order. ragged: expert e's rows start at the sum of load[e' < e];
// padded: expert e owns a fixed block of C rows (padding rows are zero) -> [E, C, d].
// Expert side ("expert-major"): rows grouped by local expert, then by source rank:
// [E_local][P][rows] (ragged rows = what each source kept; padded = C rows each, padding
// included, so experts compute on padding as GShard/Tutel do).
//
//   forward:  pack x -> exchange (sources -> experts) -> to expert-major       (dispatch)
//             expert-major -> exchange (experts -> sources) -> sum gate * row  (combine)
//   backward: the same two exchanges in reverse order and direction.
//
// On one rank the send layout *is* the expert-major layout (one source; blocks in expert
// order), so nothing is exchanged or reordered: rows are packed straight into the caller's
// expert-major buffer and gathered straight from it (as Megatron-LM skips its all-to-all
// without expert parallelism). The exchange timings stay zero; bytes_sent still counts the
// rows, as self-sends.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "moebench/routing.hpp"

namespace moebench {

enum class DispatchMode { ragged, padded };
const char* to_string(DispatchMode mode);
DispatchMode parse_dispatch_mode(const std::string& option, const std::string& name);

// The four exchanges of one forward + backward step.
enum ExchangePhase { kDispatchForward = 0, kCombineForward, kCombineBackward, kDispatchBackward,
                     kNumExchangePhases };
const char* exchange_phase_name(int phase);

// The expert-major layout of the received blocks: block (peer p, local expert le) of
// block_rows [P, E_local] starts at row block_expert [P, E_local] of the expert-major buffer,
// local expert le's rows at expert_offsets [E_local + 1]. Returns the rows in all. Shared by
// the CPU and CUDA dispatchers.
int64_t expert_major_layout(const int* block_rows, int P, int EL, int64_t* block_expert,
                            int64_t* expert_offsets);

// Seconds spent, summed over calls (MPI_Wtime, this rank).
struct DispatchTimings {
  double permute = 0.0;    // packing token rows into the send layout, and reordering
                           // between source-major and expert-major
  double unpermute = 0.0;  // combining returned rows into tokens (and its backward)
  double count_exchange = 0.0;                  // ragged: all-to-all of row counts
  double exchange[kNumExchangePhases] = {};     // row all-to-alls, per phase
};

class Dispatcher {
 public:
  // comm: the expert-parallel group (E % size == 0 is checked by the caller's validation).
  Dispatcher(MPI_Comm comm, int num_experts, int d_model, DispatchMode mode);

  // Sizes every buffer for plans of up to max_tokens tokens under `config` (call once).
  void reserve(const RoutingConfig& config, int max_tokens);

  // Collective. Derives the send layout from the plan and, for ragged, exchanges the
  // per-expert row counts. Must precede the calls below for this plan.
  void set_plan(const RoutingPlan& plan);

  // Forward. expert_in [N, d] expert-major (N = expert_rows()).
  void dispatch(float* expert_in, const float* x);
  // Forward. expert_out [N, d] -> y [T, d] = sum over kept (t, s) of gate * expert_out row.
  // On one rank combine_backward reads expert_out again: it must not change in between.
  void combine(float* y, const float* expert_out);
  // Backward of combine: d_gate [T, slots] (dL/d gate, 0 where not kept) and
  // d_expert_out [N, d] (expert-major) from dy [T, d].
  void combine_backward(float* d_expert_out, float* d_gate, const float* dy);
  // Backward of dispatch: dx [T, d] += rows of d_expert_in [N, d] returned to their tokens.
  void dispatch_backward(float* dx, const float* d_expert_in);

  int local_experts() const { return local_experts_; }
  int64_t expert_rows() const { return expert_offsets_.back(); }
  const int64_t* expert_row_offsets() const { return expert_offsets_.data(); }  // [E_local + 1]
  int64_t max_expert_rows() const { return max_expert_rows_; }

  // Bytes of token rows this rank sent to each rank, per phase, summed since the last reset:
  // bytes_sent()[phase][dst]. Self-sends (the diagonal) are local copies and included.
  const std::vector<std::vector<int64_t>>& bytes_sent() const { return bytes_sent_; }
  int64_t count_bytes_sent() const { return count_bytes_sent_; }  // ragged count exchange
  const DispatchTimings& timings() const { return timings_; }
  void reset_counters();

  int rank() const { return rank_; }
  int world_size() const { return size_; }
  DispatchMode mode() const { return mode_; }

 private:
  // Sends send_[send layout] along the forward (sources -> experts) or reverse direction.
  void exchange(bool forward, const float* send, float* recv, int phase);
  void count_sent(int phase, const std::vector<int>& floats_to_peer);  // into bytes_sent_
  // Where rows are packed in the send layout: send_buffer_, or on one rank expert_major.
  float* send_rows(float* expert_major);
  // send_rows(expert_major) -> exchange to the experts -> expert_major [N, d].
  void deliver_to_experts(float* expert_major, int phase);
  // expert_major [N, d] -> exchange back to the sources -> landing (send layout). Returns
  // where the rows are in the send layout: landing, or on one rank expert_major itself.
  const float* return_to_sources(float* landing, const float* expert_major, int phase);
  // padded: zeroes the rows of each expert block past its load, in `rows` (send layout).
  void zero_padding_rows(float* rows) const;
  // out[t] = (accumulate ? out[t] : 0) + sum over t's kept entries of w * rows[send row],
  // w = the gate (use_gates) or 1.
  void gather_to_tokens(float* out, const float* rows, bool use_gates, bool accumulate);
  void source_to_expert_major(float* dst, const float* src) const;
  void expert_to_source_major(float* dst, const float* src) const;
  int64_t send_row(int64_t entry) const;  // row of plan entry in the send layout

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  int num_experts_, local_experts_, d_model_;
  DispatchMode mode_;
  const RoutingPlan* plan_ = nullptr;

  std::vector<int64_t> send_expert_offset_;  // [E + 1] rows, send layout
  std::vector<int> peer_rows_send_;          // [P] rows this rank sends to each peer
  std::vector<int> peer_rows_recv_;          // [P] rows this rank receives from each peer
  std::vector<int> recv_counts_;             // [P, E_local] rows from peer p for local expert
  std::vector<int> send_counts_, send_displs_, recv_counts_elems_, recv_displs_;  // [P] floats
  std::vector<int64_t> expert_offsets_;      // [E_local + 1] expert-major
  std::vector<int64_t> block_source_;        // [P, E_local] first row of block, source-major
  std::vector<int64_t> block_expert_;        // [P, E_local] first row of block, expert-major
  std::vector<int> block_rows_;              // [P, E_local]
  std::vector<int> count_scratch_;           // [E]

  // Exchange buffers; empty on one rank.
  std::vector<float> send_buffer_;      // [send rows, d]
  std::vector<float> returned_rows_;    // [send rows, d] expert outputs back at the source
  std::vector<float> recv_buffer_;      // [expert rows, d] source-major
  const float* returned_ = nullptr;     // combine's expert outputs, send layout: returned_rows_
                                        // or, on one rank, the caller's expert_out
  int64_t max_send_rows_ = 0, max_expert_rows_ = 0;

  std::vector<std::vector<int64_t>> bytes_sent_;
  int64_t count_bytes_sent_ = 0;
  DispatchTimings timings_;
};

}  // namespace moebench
