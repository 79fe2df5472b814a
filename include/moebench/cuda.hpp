// The CUDA/NCCL backend's host-side interface (DESIGN §2): device selection, the NCCL
// communicator, the two streams, device memory and CUDA-event timing.
//
// This header includes no CUDA header, so CPU code may include it. Everything declared here
// except the Backend helpers is defined in the moebench_cuda library, which exists only when
// moebench is configured with -DMOEBENCH_CUDA=ON; code that calls it links moebench_cuda and
// sees MOEBENCH_HAVE_CUDA=1. The kernels themselves are declared in src/cuda/*.hpp.
//
// Handle types are spelled through the structs the CUDA headers use for them
// (cudaStream_t = CUstream_st*, cudaEvent_t = CUevent_st*, cublasHandle_t = cublasContext*,
// ncclComm_t = ncclComm*), so values pass between this header and CUDA code unchanged.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include "moebench/check.hpp"

struct CUstream_st;
struct CUevent_st;
struct cublasContext;
struct ncclComm;

namespace moebench {

enum class Backend { cpu, cuda };

inline const char* to_string(Backend backend) {
  return backend == Backend::cpu ? "cpu" : "cuda";
}

// Throws UsageError naming `option` on anything but "cpu" or "cuda".
inline Backend parse_backend(const std::string& option, const std::string& name) {
  if (name == "cpu") return Backend::cpu;
  if (name == "cuda") return Backend::cuda;
  std::ostringstream message;
  message << option << ": unknown value '" << name << "' (accepted: cpu, cuda)";
  throw UsageError(message.str());
}

// What --backend cuda says in a build without the CUDA backend.
inline std::string cuda_backend_missing_message() {
  return "--backend cuda: this moebench was built without the CUDA backend; build it with "
         "launch/build.sh -DMOEBENCH_CUDA=ON (CUDA toolkit and NCCL, docs/cuda.md), or use "
         "--backend cpu";
}

// Collective over comm. Empty when every rank can have a CUDA device of its own (device =
// rank within its node, from MPI_COMM_TYPE_SHARED; or one device per rank when a launcher
// already restricted each rank's CUDA_VISIBLE_DEVICES to distinct devices). Otherwise the
// reason, identical on every rank, starting "no CUDA device is visible" or "fewer CUDA
// devices than ranks".
std::string cuda_unavailable_reason(MPI_Comm comm);

struct CudaDeviceInfo {
  int device = -1;                // CUDA ordinal used by this rank
  std::string name;               // e.g. "NVIDIA H200"
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
  size_t global_memory_bytes = 0;
  // Theoretical peak DRAM bandwidth: 2 (double data rate) x memory clock x bus width.
  double peak_memory_bandwidth_gbs = 0.0;  // 1e9 bytes/s
};

// One rank's share of the GPU backend: its device, an NCCL communicator over `comm` whose
// unique id rank 0 broadcasts over MPI, a compute stream (kernels, cuBLAS) and a
// communication stream (NCCL), and a cuBLAS handle bound to the compute stream.
class CudaContext {
 public:
  // Collective over comm. Throws UsageError ("--backend cuda: ...") on every rank when any
  // rank has no device of its own (see cuda_unavailable_reason).
  explicit CudaContext(MPI_Comm comm);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int rank() const;
  int size() const;
  int local_rank() const;  // rank within the node
  const CudaDeviceInfo& info() const;
  CUstream_st* compute_stream() const;
  CUstream_st* comm_stream() const;
  cublasContext* blas() const;  // bound to compute_stream()
  ncclComm* nccl() const;

  // Work enqueued on `waiting` from now on starts after the work already enqueued on
  // `producer` (an event recorded on producer; the host does not wait).
  void order_after(CUstream_st* waiting, CUstream_st* producer);
  void synchronize() const;  // both streams

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Elapsed time between two CUDA events on a stream (device time, ~0.5 us resolution).
class CudaEventTimer {
 public:
  CudaEventTimer();
  ~CudaEventTimer();
  CudaEventTimer(const CudaEventTimer&) = delete;
  CudaEventTimer& operator=(const CudaEventTimer&) = delete;
  void start(CUstream_st* stream);
  void stop(CUstream_st* stream);
  float elapsed_ms() const;  // waits for the stop event

 private:
  CUevent_st* start_ = nullptr;
  CUevent_st* stop_ = nullptr;
};

// Device memory (cudaMalloc / cudaFree) and copies; every call is checked.
void* device_allocate(size_t bytes);
void device_free(void* pointer) noexcept;
// Asynchronous on `stream`; the host buffer may be reused as soon as this returns.
void copy_to_device(void* device, const void* host, size_t bytes, CUstream_st* stream);
// Waits for the copy (and everything before it on `stream`).
void copy_to_host(void* host, const void* device, size_t bytes, CUstream_st* stream);
void fill_zero(void* device, size_t bytes, CUstream_st* stream);

// An owning array of T in device memory, sized once (allocate outside the step loop).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t count) { resize(count); }
  ~DeviceArray() { device_free(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceArray& operator=(DeviceArray&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
    return *this;
  }

  // Reallocates (contents are lost) unless the size is unchanged.
  void resize(size_t count) {
    if (count == count_) return;
    device_free(data_);
    data_ = nullptr;
    count_ = 0;
    if (count > 0) data_ = static_cast<T*>(device_allocate(count * sizeof(T)));
    count_ = count;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace moebench
