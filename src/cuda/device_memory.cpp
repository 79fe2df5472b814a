// Device memory, copies and the CUDA-event timer. See include/moebench/cuda.hpp.
#include <cuda_runtime_api.h>

#include <cstdio>

#include "cuda_check.hpp"
#include "moebench/cuda.hpp"

namespace moebench {

void* device_allocate(size_t bytes) {
  void* pointer = nullptr;
  MOEBENCH_CUDA_CHECK(cudaMalloc(&pointer, bytes));
  return pointer;
}

void device_free(void* pointer) noexcept {
  if (pointer == nullptr) return;
  const cudaError_t status = cudaFree(pointer);
  if (status != cudaSuccess) {
    std::fprintf(stderr, "moebench: cudaFree failed: %s\n", cudaGetErrorString(status));
  }
}

void copy_to_device(void* device, const void* host, size_t bytes, CUstream_st* stream) {
  if (bytes == 0) return;
  // From pageable memory the call returns once the data is staged, so `host` may be reused.
  MOEBENCH_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream));
}

void copy_to_host(void* host, const void* device, size_t bytes, CUstream_st* stream) {
  if (bytes > 0) {
    MOEBENCH_CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream));
  }
  MOEBENCH_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void fill_zero(void* device, size_t bytes, CUstream_st* stream) {
  if (bytes == 0) return;
  MOEBENCH_CUDA_CHECK(cudaMemsetAsync(device, 0, bytes, stream));
}

CudaEventTimer::CudaEventTimer() {
  MOEBENCH_CUDA_CHECK(cudaEventCreate(&start_));
  const cudaError_t status = cudaEventCreate(&stop_);
  if (status != cudaSuccess) {
    (void)cudaEventDestroy(start_);  // the destructor does not run for a failed constructor
    MOEBENCH_CUDA_CHECK(status);
  }
}

CudaEventTimer::~CudaEventTimer() {
  for (cudaEvent_t event : {start_, stop_}) {
    if (event == nullptr) continue;
    const cudaError_t status = cudaEventDestroy(event);
    if (status != cudaSuccess) {
      std::fprintf(stderr, "moebench: cudaEventDestroy failed: %s\n", cudaGetErrorString(status));
    }
  }
}

void CudaEventTimer::start(CUstream_st* stream) { MOEBENCH_CUDA_CHECK(cudaEventRecord(start_, stream)); }

void CudaEventTimer::stop(CUstream_st* stream) { MOEBENCH_CUDA_CHECK(cudaEventRecord(stop_, stream)); }

float CudaEventTimer::elapsed_ms() const {
  MOEBENCH_CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0.0f;
  MOEBENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return ms;
}

}  // namespace moebench
