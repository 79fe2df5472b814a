// The exchange of `moebench alltoall --backend cuda`: grouped ncclSend/ncclRecv between device
// buffers on the CUDA context's communication stream (one device per rank, NCCL bootstrapped
// over MPI: cuda.hpp), timed by CUDA events. The implementation is part of the CUDA backend
// (src/cuda/alltoall_nccl.cpp, -DMOEBENCH_CUDA=ON); in a CPU build the constructor throws
// cuda_backend_missing_message() as a UsageError.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "moebench/alltoall_bench.hpp"
#include "moebench/cuda.hpp"  // cuda_backend_missing_message

namespace moebench {

class NcclAlltoall {
 public:
  // Collective over comm: device buffers of max_elements floats each way (grown later to the
  // largest exchange asked for, outside the timed loops). Throws UsageError on every rank when
  // a rank has no device of its own (CudaContext).
  NcclAlltoall(MPI_Comm comm, int64_t max_elements);
  ~NcclAlltoall();
  NcclAlltoall(const NcclAlltoall&) = delete;
  NcclAlltoall& operator=(const NcclAlltoall&) = delete;
  // Grows the device buffers to `elements` floats each way (outside a timed loop).
  void reserve(int64_t elements);
  // The device name, e.g. "NVIDIA H200".
  std::string device_name() const;
  // Host send -> device, the exchange, device -> host recv (for the check).
  void run_through_host(const float* send, const ExchangeCounts& counts, float* recv);
  // Times `iters` iterations after `warmup` untimed ones, each between MPI barriers: the
  // forward exchange of device buffers and, when given, the backward one (the combine of the
  // dispatched rows: its send counts are the forward's receive counts); seconds[i] from CUDA
  // events around iteration i on the stream.
  void time(const ExchangeCounts& forward, const ExchangeCounts* backward, int warmup, int iters,
            double* seconds, MPI_Comm comm);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moebench
