// CudaDispatcher: permute on the compute stream, NCCL exchanges on the communication stream,
// phase times from CUDA event pairs read only when asked. See dispatcher_cuda.hpp; the CPU
// original: src/dispatch/dispatcher.cpp.
#include "dispatcher_cuda.hpp"

#include <nccl.h>

#include <algorithm>
#include <cstdio>

#include "cuda_check.hpp"
#include "dispatch_cuda.hpp"
#include "exchange_nccl.hpp"
#include "moebench/check.hpp"

namespace moebench {

// ---- CudaDispatcher ------------------------------------------------------------------------

CudaDispatcher::CudaDispatcher(CudaContext& context, int num_experts, int d_model,
                               DispatchMode mode)
    : context_(context),
      rank_(context.rank()),
      size_(context.size()),
      num_experts_(num_experts),
      d_model_(d_model),
      mode_(mode) {
  MOEBENCH_CHECK(num_experts > 0 && num_experts % size_ == 0,
                 "experts must divide evenly over ranks");
  MOEBENCH_CHECK(d_model > 0, "d_model must be positive");
  local_experts_ = num_experts / size_;
  const size_t P = static_cast<size_t>(size_), EL = static_cast<size_t>(local_experts_);
  load_.assign(static_cast<size_t>(num_experts), 0);
  send_expert_offset_.assign(static_cast<size_t>(num_experts) + 1, 0);
  recv_counts_.assign(P * EL, 0);
  expert_offsets_.assign(EL + 1, 0);
  block_source_.assign(P * EL, 0);
  block_expert_.assign(P * EL, 0);
  block_rows_.assign(P * EL, 0);
  for (auto* v : {&send_counts_, &send_displs_, &recv_counts_elems_, &recv_displs_, &send_bytes_,
                  &peer_rows_recv_}) {
    v->assign(P, 0);
  }
  send_offsets_.resize(static_cast<size_t>(num_experts) + 1);
  if (exchanging()) {  // one rank neither exchanges counts nor reorders blocks
    recv_counts_device_.resize(P * EL);
    block_source_device_.resize(P * EL);
    block_expert_device_.resize(P * EL);
    block_rows_device_.resize(P * EL);
  }
  bytes_sent_.assign(kNumExchangePhases, std::vector<int64_t>(P, 0));
}

const DispatchTimings& CudaDispatcher::timings() {
  const std::vector<double>& seconds = timers_.resolve();
  timings_.permute = seconds[kPermute];
  timings_.unpermute = seconds[kUnpermute];
  timings_.count_exchange = seconds[kCountExchange];
  for (int p = 0; p < kNumExchangePhases; ++p) timings_.exchange[p] = seconds[kExchange + p];
  return timings_;
}

void CudaDispatcher::reset_counters() {
  for (auto& row : bytes_sent_) std::fill(row.begin(), row.end(), 0);
  count_bytes_sent_ = 0;
  timers_.reset();
}

void CudaDispatcher::reserve(const RoutingConfig& config, int max_tokens) {
  // The CPU Dispatcher's bounds (dispatcher.cpp).
  const int64_t capacity = expert_capacity(config, max_tokens);
  const int64_t entries = static_cast<int64_t>(max_tokens) * plan_slots(config);
  const int64_t per_source_ragged = std::min<int64_t>(
      static_cast<int64_t>(max_tokens) * std::min(plan_slots(config), local_experts_),
      local_experts_ * capacity);
  if (mode_ == DispatchMode::ragged) {
    max_send_rows_ = std::min<int64_t>(entries, num_experts_ * capacity);
    max_expert_rows_ = size_ * per_source_ragged;
  } else {
    max_send_rows_ = num_experts_ * capacity;
    max_expert_rows_ = static_cast<int64_t>(size_) * local_experts_ * capacity;
  }
  // One rank packs into and reads from the caller's expert-major buffers (dispatcher_cuda.hpp).
  const size_t d = static_cast<size_t>(d_model_);
  const size_t send_elements = exchanging() ? static_cast<size_t>(max_send_rows_) * d : 0;
  send_buffer_.resize(send_elements);
  returned_rows_.resize(send_elements);
  recv_buffer_.resize(exchanging() ? static_cast<size_t>(max_expert_rows_) * d : 0);
}

void CudaDispatcher::set_plan(const DeviceRoutingPlan& plan) {
  MOEBENCH_CHECK(plan.num_experts == num_experts_, "plan and dispatcher disagree on E");
  plan_ = &plan;
  returned_ = nullptr;  // combine() of this plan sets it
  const int P = size_, EL = local_experts_;
  const int64_t C = plan.capacity;
  CUstream_st* compute = context_.compute_stream();
  CUstream_st* comm = context_.comm_stream();

  cuda_send_offsets(send_offsets_.data(), plan, mode_ == DispatchMode::padded, compute);
  copy_to_host(load_.data(), plan.load.data(), load_.size() * sizeof(int32_t), compute);
  for (int e = 0; e < num_experts_; ++e) {
    const int64_t rows = mode_ == DispatchMode::ragged ? load_[e] : C;
    send_expert_offset_[e + 1] = send_expert_offset_[e] + rows;
  }
  MOEBENCH_CHECK(send_expert_offset_[num_experts_] <= max_send_rows_,
                 "plan exceeds the reserved send buffer (reserve() with a larger size)");
  if (mode_ == DispatchMode::ragged) {
    if (exchanging()) {
      // Counts first: global expert e = p E_local + le, so load [E] is already [P, E_local].
      context_.order_after(comm, compute);
      const int pair = timers_.start(comm);
      nccl_alltoall(plan.load.data(), recv_counts_device_.data(), static_cast<size_t>(EL),
                    ncclInt32, context_.nccl(), comm);
      timers_.stop(pair, comm, kCountExchange);
      copy_to_host(recv_counts_.data(), recv_counts_device_.data(),
                   recv_counts_.size() * sizeof(int32_t), comm);
    } else {
      std::copy(load_.begin(), load_.end(), recv_counts_.begin());  // one source: this rank
    }
    // As the CPU Dispatcher, whose MPI_Alltoall sends to itself on one rank too.
    count_bytes_sent_ += static_cast<int64_t>(P) * EL * static_cast<int64_t>(sizeof(int32_t));
  } else {
    // Every rank routes the same number of tokens, so every rank has the same C.
    std::fill(recv_counts_.begin(), recv_counts_.end(), static_cast<int32_t>(C));
  }
  // Source-major blocks [P][E_local]; expert-major blocks [E_local][P].
  int64_t source_row = 0;
  for (int p = 0; p < P; ++p) {
    peer_rows_recv_[p] = 0;
    for (int le = 0; le < EL; ++le) {
      const int idx = p * EL + le;
      block_rows_[idx] = recv_counts_[idx];
      block_source_[idx] = source_row;
      source_row += recv_counts_[idx];
      peer_rows_recv_[p] += recv_counts_[idx];
    }
  }
  MOEBENCH_CHECK(source_row <= max_expert_rows_, "received rows exceed the reserved buffer");
  expert_major_layout(block_rows_.data(), P, EL, block_expert_.data(), expert_offsets_.data());
  int64_t send_displ = 0, recv_displ = 0;
  for (int p = 0; p < P; ++p) {
    const int64_t send_rows = send_expert_offset_[(p + 1) * EL] - send_expert_offset_[p * EL];
    send_counts_[p] = send_rows * d_model_;
    recv_counts_elems_[p] = peer_rows_recv_[p] * d_model_;
    send_displs_[p] = send_displ;
    recv_displs_[p] = recv_displ;
    send_displ += send_counts_[p];
    recv_displ += recv_counts_elems_[p];
    send_bytes_[p] = send_counts_[p] * static_cast<int64_t>(sizeof(float));
  }
  if (exchanging()) {
    const size_t blocks = block_rows_.size();
    copy_to_device(block_source_device_.data(), block_source_.data(), blocks * sizeof(int64_t),
                   compute);
    copy_to_device(block_expert_device_.data(), block_expert_.data(), blocks * sizeof(int64_t),
                   compute);
    copy_to_device(block_rows_device_.data(), block_rows_.data(), blocks * sizeof(int32_t),
                   compute);
  }
}

void CudaDispatcher::exchange(bool forward, const float* send, float* recv, int phase) {
  CUstream_st* compute = context_.compute_stream();
  CUstream_st* comm = context_.comm_stream();
  context_.order_after(comm, compute);
  const std::vector<int64_t>& sc = forward ? send_counts_ : recv_counts_elems_;
  const std::vector<int64_t>& sd = forward ? send_displs_ : recv_displs_;
  const std::vector<int64_t>& rc = forward ? recv_counts_elems_ : send_counts_;
  const std::vector<int64_t>& rd = forward ? recv_displs_ : send_displs_;
  const int pair = timers_.start(comm);
  nccl_alltoallv(send, sc.data(), sd.data(), recv, rc.data(), rd.data(), ncclFloat32,
                 context_.nccl(), comm);
  timers_.stop(pair, comm, kExchange + phase);
  context_.order_after(compute, comm);
  count_sent(phase, sc);
}

void CudaDispatcher::count_sent(int phase, const std::vector<int64_t>& floats_to_peer) {
  for (int p = 0; p < size_; ++p) {
    bytes_sent_[phase][p] += floats_to_peer[p] * static_cast<int64_t>(sizeof(float));
  }
}

float* CudaDispatcher::send_rows(float* expert_major) {
  return exchanging() ? send_buffer_.data() : expert_major;
}

void CudaDispatcher::deliver_to_experts(float* expert_major, int phase) {
  if (!exchanging()) {  // packed in place
    count_sent(phase, send_counts_);
    return;
  }
  exchange(true, send_buffer_.data(), recv_buffer_.data(), phase);
  CUstream_st* compute = context_.compute_stream();
  const int pair = timers_.start(compute);
  cuda_copy_blocks(expert_major, recv_buffer_.data(), block_expert_device_.data(),
                   block_source_device_.data(), block_rows_device_.data(),
                   static_cast<int>(block_rows_.size()), d_model_, compute);
  timers_.stop(pair, compute, kPermute);
}

const float* CudaDispatcher::return_to_sources(float* landing, const float* expert_major,
                                               int phase) {
  if (!exchanging()) {  // already in the send layout
    count_sent(phase, recv_counts_elems_);
    return expert_major;
  }
  CUstream_st* compute = context_.compute_stream();
  const int pair = timers_.start(compute);
  cuda_copy_blocks(recv_buffer_.data(), expert_major, block_source_device_.data(),
                   block_expert_device_.data(), block_rows_device_.data(),
                   static_cast<int>(block_rows_.size()), d_model_, compute);
  timers_.stop(pair, compute, kPermute);
  exchange(false, recv_buffer_.data(), landing, phase);
  return landing;
}

void CudaDispatcher::dispatch(float* expert_in, const float* x) {
  const DeviceRoutingPlan& plan = *plan_;
  CUstream_st* compute = context_.compute_stream();
  float* packed = send_rows(expert_in);
  const int pair = timers_.start(compute);
  if (mode_ == DispatchMode::padded) {
    cuda_zero_padding_rows(packed, plan, send_offsets_.data(), d_model_, compute);
  }
  cuda_permute(packed, x, plan, send_offsets_.data(), d_model_, compute);
  timers_.stop(pair, compute, kPermute);
  deliver_to_experts(expert_in, kDispatchForward);
}

void CudaDispatcher::combine(float* y, const float* expert_out) {
  returned_ = return_to_sources(returned_rows_.data(), expert_out, kCombineForward);
  CUstream_st* compute = context_.compute_stream();
  const int pair = timers_.start(compute);
  cuda_gather_to_tokens(y, returned_, *plan_, send_offsets_.data(), d_model_,
                        /*use_gates=*/true, /*accumulate=*/false, compute);
  timers_.stop(pair, compute, kUnpermute);
}

void CudaDispatcher::combine_backward(float* d_expert_out, float* d_gate, const float* dy) {
  MOEBENCH_CHECK(returned_ != nullptr,
                 "CudaDispatcher: combine_backward before combine of this plan");
  const DeviceRoutingPlan& plan = *plan_;
  CUstream_st* compute = context_.compute_stream();
  float* packed = send_rows(d_expert_out);
  const int pair = timers_.start(compute);
  if (mode_ == DispatchMode::padded) {
    cuda_zero_padding_rows(packed, plan, send_offsets_.data(), d_model_, compute);
  }
  cuda_combine_backward(packed, d_gate, dy, returned_, plan, send_offsets_.data(), d_model_,
                        compute);
  timers_.stop(pair, compute, kUnpermute);
  deliver_to_experts(d_expert_out, kCombineBackward);
}

void CudaDispatcher::dispatch_backward(float* dx, const float* d_expert_in) {
  const float* rows = return_to_sources(send_buffer_.data(), d_expert_in, kDispatchBackward);
  CUstream_st* compute = context_.compute_stream();
  const int pair = timers_.start(compute);
  cuda_gather_to_tokens(dx, rows, *plan_, send_offsets_.data(), d_model_,
                        /*use_gates=*/false, /*accumulate=*/true, compute);
  timers_.stop(pair, compute, kUnpermute);
}

}  // namespace moebench
