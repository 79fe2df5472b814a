// `moebench alltoall --backend cuda`: NcclAlltoall (alltoall_nccl.hpp). Each rank drives the
// device that CudaContext picks (rank within its node); the exchange is grouped
// ncclSend/ncclRecv (exchange_nccl.hpp) on the context's communication stream, timed by CUDA
// events recorded on that stream around it (the forward exchange, and the backward one after
// it when there is one), each iteration between MPI barriers. The device buffers grow to the
// largest exchange seen, outside the timed loops. The check copies the checked data to the
// device, exchanges and copies the result back.
#include "moebench/alltoall_nccl.hpp"

#include <algorithm>
#include <vector>

#include "exchange_nccl.hpp"
#include "moebench/check.hpp"
#include "moebench/cuda.hpp"

namespace moebench {

struct NcclAlltoall::Impl {
  CudaContext context;
  DeviceArray<float> send, recv;
  std::vector<int64_t> send_counts, send_displs, recv_counts, recv_displs;  // [P], reused
  CudaEventTimer timer;

  Impl(MPI_Comm comm, int64_t max_elements)
      : context(comm),
        send(static_cast<size_t>(max_elements)),
        recv(static_cast<size_t>(max_elements)) {}

  // Both buffers hold at least `elements` floats (reallocated, contents lost, when smaller).
  void fit(int64_t elements) {
    const size_t size = static_cast<size_t>(std::max<int64_t>(elements, 1));
    if (send.size() < size) send.resize(size);
    if (recv.size() < size) recv.resize(size);
  }

  // The forward exchange moves send -> recv; the backward one (a combine after a dispatch)
  // moves recv -> send.
  void exchange(const ExchangeCounts& counts, bool backward) {
    send_counts.assign(counts.send_counts.begin(), counts.send_counts.end());
    send_displs.assign(counts.send_displs.begin(), counts.send_displs.end());
    recv_counts.assign(counts.recv_counts.begin(), counts.recv_counts.end());
    recv_displs.assign(counts.recv_displs.begin(), counts.recv_displs.end());
    float* from = backward ? recv.data() : send.data();
    float* to = backward ? send.data() : recv.data();
    nccl_alltoallv(from, send_counts.data(), send_displs.data(), to, recv_counts.data(),
                   recv_displs.data(), ncclFloat32, context.nccl(), context.comm_stream());
  }
};

NcclAlltoall::NcclAlltoall(MPI_Comm comm, int64_t max_elements)
    : impl_(std::make_unique<Impl>(comm, max_elements)) {}

NcclAlltoall::~NcclAlltoall() = default;

void NcclAlltoall::reserve(int64_t elements) { impl_->fit(elements); }

std::string NcclAlltoall::device_name() const { return impl_->context.info().name; }

void NcclAlltoall::run_through_host(const float* send, const ExchangeCounts& counts,
                                    float* recv) {
  Impl& d = *impl_;
  d.fit(std::max(counts.send_total, counts.recv_total));
  CUstream_st* stream = d.context.comm_stream();
  copy_to_device(d.send.data(), send, static_cast<size_t>(counts.send_total) * sizeof(float),
                 stream);
  d.exchange(counts, /*backward=*/false);
  copy_to_host(recv, d.recv.data(), static_cast<size_t>(counts.recv_total) * sizeof(float),
               stream);
}

void NcclAlltoall::time(const ExchangeCounts& forward, const ExchangeCounts* backward,
                        int warmup, int iters, double* seconds, MPI_Comm comm) {
  Impl& d = *impl_;
  int64_t elements = std::max(forward.send_total, forward.recv_total);
  if (backward != nullptr) {
    elements = std::max({elements, backward->send_total, backward->recv_total});
  }
  d.fit(elements);
  CUstream_st* stream = d.context.comm_stream();
  for (int it = 0; it < warmup + iters; ++it) {
    MOEBENCH_MPI_CHECK(MPI_Barrier(comm));
    d.timer.start(stream);
    d.exchange(forward, /*backward=*/false);
    if (backward != nullptr) d.exchange(*backward, /*backward=*/true);
    d.timer.stop(stream);
    const double ms = d.timer.elapsed_ms();  // waits for the exchange
    if (it >= warmup) seconds[it - warmup] = 1e-3 * ms;
  }
}

}  // namespace moebench
