// Dispatcher: packing, all-to-all exchange and combining. See dispatcher.hpp.
#include "moebench/dispatcher.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <sstream>

#include "moebench/check.hpp"

namespace moebench {

namespace {

// Wall-clock scope timer adding into a double.
class ScopedTimer {
 public:
  explicit ScopedTimer(double& sink) : sink_(sink), start_(MPI_Wtime()) {}
  ~ScopedTimer() { sink_ += MPI_Wtime() - start_; }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  double& sink_;
  double start_;
};

int checked_int(int64_t value, const char* what) {
  MOEBENCH_CHECK(value >= 0 && value <= INT_MAX,
                 std::string(what) + " exceeds the MPI count limit (2^31 - 1 elements); "
                 "use fewer --tokens or a smaller --d-model");
  return static_cast<int>(value);
}

}  // namespace

int64_t expert_major_layout(const int* block_rows, int P, int EL, int64_t* block_expert,
                            int64_t* expert_offsets) {
  int64_t expert_row = 0;
  for (int le = 0; le < EL; ++le) {
    expert_offsets[le] = expert_row;
    for (int p = 0; p < P; ++p) {
      block_expert[p * EL + le] = expert_row;
      expert_row += block_rows[p * EL + le];
    }
  }
  expert_offsets[EL] = expert_row;
  return expert_row;
}

const char* to_string(DispatchMode mode) { return mode == DispatchMode::ragged ? "ragged" : "padded"; }

DispatchMode parse_dispatch_mode(const std::string& option, const std::string& name) {
  if (name == "ragged") return DispatchMode::ragged;
  if (name == "padded") return DispatchMode::padded;
  std::ostringstream message;
  message << option << ": unknown value '" << name << "' (accepted: ragged, padded)";
  throw UsageError(message.str());
}

const char* exchange_phase_name(int phase) {
  switch (phase) {
    case kDispatchForward: return "dispatch_forward";
    case kCombineForward: return "combine_forward";
    case kCombineBackward: return "combine_backward";
    case kDispatchBackward: return "dispatch_backward";
    default: return "?";
  }
}

Dispatcher::Dispatcher(MPI_Comm comm, int num_experts, int d_model, DispatchMode mode)
    : comm_(comm), num_experts_(num_experts), d_model_(d_model), mode_(mode) {
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &size_));
  MOEBENCH_CHECK(num_experts % size_ == 0, "experts must divide evenly over ranks");
  local_experts_ = num_experts / size_;
  send_expert_offset_.assign(num_experts + 1, 0);
  peer_rows_send_.assign(size_, 0);
  peer_rows_recv_.assign(size_, 0);
  recv_counts_.assign(static_cast<size_t>(size_) * local_experts_, 0);
  send_counts_.assign(size_, 0);
  send_displs_.assign(size_, 0);
  recv_counts_elems_.assign(size_, 0);
  recv_displs_.assign(size_, 0);
  expert_offsets_.assign(local_experts_ + 1, 0);
  block_source_.assign(recv_counts_.size(), 0);
  block_expert_.assign(recv_counts_.size(), 0);
  block_rows_.assign(recv_counts_.size(), 0);
  count_scratch_.assign(num_experts, 0);
  bytes_sent_.assign(kNumExchangePhases, std::vector<int64_t>(size_, 0));
}

void Dispatcher::reserve(const RoutingConfig& config, int max_tokens) {
  const int64_t capacity = expert_capacity(config, max_tokens);
  const int64_t entries = static_cast<int64_t>(max_tokens) * plan_slots(config);
  // A token holds at most one slot of each expert, so a source sends at most
  // T * min(slots, E_local) rows to one rank.
  const int64_t per_source_ragged =
      std::min<int64_t>(static_cast<int64_t>(max_tokens) * std::min(plan_slots(config), local_experts_),
                        local_experts_ * capacity);
  if (mode_ == DispatchMode::ragged) {
    max_send_rows_ = std::min<int64_t>(entries, num_experts_ * capacity);
    max_expert_rows_ = size_ * per_source_ragged;
  } else {
    max_send_rows_ = num_experts_ * capacity;
    max_expert_rows_ = static_cast<int64_t>(size_) * local_experts_ * capacity;
  }
  // One rank packs into and reads from the caller's expert-major buffers (dispatcher.hpp).
  const bool exchanging = size_ > 1;
  send_buffer_.assign(exchanging ? max_send_rows_ * d_model_ : 0, 0.0f);
  returned_rows_.assign(exchanging ? max_send_rows_ * d_model_ : 0, 0.0f);
  recv_buffer_.assign(exchanging ? max_expert_rows_ * d_model_ : 0, 0.0f);
  checked_int(max_send_rows_ * d_model_, "the send buffer");
  checked_int(max_expert_rows_ * d_model_, "the receive buffer");
}

void Dispatcher::reset_counters() {
  for (auto& row : bytes_sent_) std::fill(row.begin(), row.end(), 0);
  count_bytes_sent_ = 0;
  timings_ = DispatchTimings{};
}

void Dispatcher::set_plan(const RoutingPlan& plan) {
  MOEBENCH_CHECK(plan.num_experts == num_experts_, "plan and dispatcher disagree on E");
  plan_ = &plan;
  returned_ = nullptr;  // combine() of this plan sets it
  const int P = size_, EL = local_experts_;
  const int64_t C = plan.capacity;
  for (int e = 0; e < num_experts_; ++e) {
    const int64_t rows = mode_ == DispatchMode::ragged ? plan.load[e] : C;
    send_expert_offset_[e + 1] = send_expert_offset_[e] + rows;
    count_scratch_[e] = static_cast<int>(plan.load[e]);
  }
  MOEBENCH_CHECK(send_expert_offset_[num_experts_] <= max_send_rows_,
                 "plan exceeds the reserved send buffer (reserve() with a larger size)");
  if (mode_ == DispatchMode::ragged) {
    ScopedTimer timer(timings_.count_exchange);
    MOEBENCH_MPI_CHECK(MPI_Alltoall(count_scratch_.data(), EL, MPI_INT, recv_counts_.data(), EL,
                                    MPI_INT, comm_));
    count_bytes_sent_ += static_cast<int64_t>(P) * EL * static_cast<int64_t>(sizeof(int));
  } else {
    // Every rank routes the same number of tokens, so every rank has the same C.
    std::fill(recv_counts_.begin(), recv_counts_.end(), static_cast<int>(C));
  }
  // Source-major blocks: [P][E_local]; expert-major blocks: [E_local][P].
  int64_t source_row = 0;
  for (int p = 0; p < P; ++p) {
    int64_t from_peer = 0;
    for (int le = 0; le < EL; ++le) {
      const int idx = p * EL + le;
      block_rows_[idx] = recv_counts_[idx];
      block_source_[idx] = source_row;
      source_row += recv_counts_[idx];
      from_peer += recv_counts_[idx];
    }
    peer_rows_recv_[p] = static_cast<int>(from_peer);
    peer_rows_send_[p] = static_cast<int>(send_expert_offset_[(p + 1) * EL] - send_expert_offset_[p * EL]);
  }
  MOEBENCH_CHECK(source_row <= max_expert_rows_, "received rows exceed the reserved buffer");
  expert_major_layout(block_rows_.data(), P, EL, block_expert_.data(), expert_offsets_.data());
  int64_t send_displ = 0, recv_displ = 0;
  for (int p = 0; p < P; ++p) {
    send_counts_[p] = checked_int(static_cast<int64_t>(peer_rows_send_[p]) * d_model_, "a send count");
    recv_counts_elems_[p] = checked_int(static_cast<int64_t>(peer_rows_recv_[p]) * d_model_, "a receive count");
    send_displs_[p] = checked_int(send_displ, "a send displacement");
    recv_displs_[p] = checked_int(recv_displ, "a receive displacement");
    send_displ += send_counts_[p];
    recv_displ += recv_counts_elems_[p];
  }
}

int64_t Dispatcher::send_row(int64_t entry) const {
  return send_expert_offset_[plan_->expert[entry]] + plan_->position[entry];
}

void Dispatcher::exchange(bool forward, const float* send, float* recv, int phase) {
  ScopedTimer timer(timings_.exchange[phase]);
  const std::vector<int>& sc = forward ? send_counts_ : recv_counts_elems_;
  const std::vector<int>& sd = forward ? send_displs_ : recv_displs_;
  const std::vector<int>& rc = forward ? recv_counts_elems_ : send_counts_;
  const std::vector<int>& rd = forward ? recv_displs_ : send_displs_;
  MOEBENCH_MPI_CHECK(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_FLOAT, recv, rc.data(),
                                   rd.data(), MPI_FLOAT, comm_));
  count_sent(phase, sc);
}

void Dispatcher::count_sent(int phase, const std::vector<int>& floats_to_peer) {
  for (int p = 0; p < size_; ++p) {
    bytes_sent_[phase][p] +=
        static_cast<int64_t>(floats_to_peer[p]) * static_cast<int64_t>(sizeof(float));
  }
}

void Dispatcher::source_to_expert_major(float* dst, const float* src) const {
  const int blocks = static_cast<int>(block_rows_.size());
  const int64_t d = d_model_;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks; ++b) {
    std::memcpy(dst + block_expert_[b] * d, src + block_source_[b] * d,
                sizeof(float) * static_cast<size_t>(block_rows_[b] * d));
  }
}

void Dispatcher::expert_to_source_major(float* dst, const float* src) const {
  const int blocks = static_cast<int>(block_rows_.size());
  const int64_t d = d_model_;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks; ++b) {
    std::memcpy(dst + block_source_[b] * d, src + block_expert_[b] * d,
                sizeof(float) * static_cast<size_t>(block_rows_[b] * d));
  }
}

void Dispatcher::zero_padding_rows(float* rows) const {
  if (mode_ != DispatchMode::padded) return;
  const int64_t d = d_model_;
  for (int e = 0; e < num_experts_; ++e) {
    float* first = rows + (send_expert_offset_[e] + plan_->load[e]) * d;
    std::fill(first, rows + send_expert_offset_[e + 1] * d, 0.0f);
  }
}

float* Dispatcher::send_rows(float* expert_major) {
  return size_ == 1 ? expert_major : send_buffer_.data();
}

void Dispatcher::deliver_to_experts(float* expert_major, int phase) {
  if (size_ == 1) {  // packed in place
    count_sent(phase, send_counts_);
    return;
  }
  exchange(true, send_buffer_.data(), recv_buffer_.data(), phase);
  ScopedTimer timer(timings_.permute);
  source_to_expert_major(expert_major, recv_buffer_.data());
}

const float* Dispatcher::return_to_sources(float* landing, const float* expert_major,
                                           int phase) {
  if (size_ == 1) {  // already in the send layout
    count_sent(phase, recv_counts_elems_);
    return expert_major;
  }
  {
    ScopedTimer timer(timings_.permute);
    expert_to_source_major(recv_buffer_.data(), expert_major);
  }
  exchange(false, recv_buffer_.data(), landing, phase);
  return landing;
}

void Dispatcher::dispatch(float* expert_in, const float* x) {
  const RoutingPlan& plan = *plan_;
  const int T = plan.num_tokens, slots = plan.slots;
  const int64_t d = d_model_;
  float* packed = send_rows(expert_in);
  {
    ScopedTimer timer(timings_.permute);
    zero_padding_rows(packed);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; ++t) {
      for (int s = 0; s < slots; ++s) {
        const int64_t entry = static_cast<int64_t>(t) * slots + s;
        if (!plan.kept[entry]) continue;
        std::memcpy(packed + send_row(entry) * d, x + t * d, sizeof(float) * d);
      }
    }
  }
  deliver_to_experts(expert_in, kDispatchForward);
}

void Dispatcher::combine(float* y, const float* expert_out) {
  returned_ = return_to_sources(returned_rows_.data(), expert_out, kCombineForward);
  ScopedTimer timer(timings_.unpermute);
  gather_to_tokens(y, returned_, /*use_gates=*/true, /*accumulate=*/false);
}

void Dispatcher::gather_to_tokens(float* out, const float* rows, bool use_gates, bool accumulate) {
  const RoutingPlan& plan = *plan_;
  const int T = plan.num_tokens, slots = plan.slots;
  const int64_t d = d_model_;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    float* token = out + t * d;
    if (!accumulate) std::fill(token, token + d, 0.0f);
    for (int s = 0; s < slots; ++s) {
      const int64_t entry = static_cast<int64_t>(t) * slots + s;
      if (!plan.kept[entry]) continue;
      const float weight = use_gates ? plan.gate[entry] : 1.0f;
      const float* row = rows + send_row(entry) * d;
      for (int64_t i = 0; i < d; ++i) token[i] += weight * row[i];
    }
  }
}

void Dispatcher::combine_backward(float* d_expert_out, float* d_gate, const float* dy) {
  MOEBENCH_CHECK(returned_ != nullptr, "Dispatcher: combine_backward before combine of this plan");
  const RoutingPlan& plan = *plan_;
  const int T = plan.num_tokens, slots = plan.slots;
  const int64_t d = d_model_;
  float* packed = send_rows(d_expert_out);
  {
    ScopedTimer timer(timings_.unpermute);
    zero_padding_rows(packed);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; ++t) {
      const float* grad = dy + t * d;
      for (int s = 0; s < slots; ++s) {
        const int64_t entry = static_cast<int64_t>(t) * slots + s;
        if (!plan.kept[entry]) {
          d_gate[entry] = 0.0f;
          continue;
        }
        const int64_t row_index = send_row(entry);
        const float* row = returned_ + row_index * d;
        float* send = packed + row_index * d;
        const float gate = plan.gate[entry];
        float dot = 0.0f;
        for (int64_t i = 0; i < d; ++i) {
          dot += grad[i] * row[i];
          send[i] = gate * grad[i];
        }
        d_gate[entry] = dot;
      }
    }
  }
  deliver_to_experts(d_expert_out, kCombineBackward);
}

void Dispatcher::dispatch_backward(float* dx, const float* d_expert_in) {
  const float* rows = return_to_sources(send_buffer_.data(), d_expert_in, kDispatchBackward);
  ScopedTimer timer(timings_.unpermute);
  gather_to_tokens(dx, rows, /*use_gates=*/false, /*accumulate=*/true);
}

}  // namespace moebench
