// CudaPhaseTimers: see phase_timers.hpp.
#include "phase_timers.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>

#include "cuda_check.hpp"
#include "moebench/check.hpp"

namespace moebench {

CudaPhaseTimers::CudaPhaseTimers(int fields) : seconds_(static_cast<size_t>(fields), 0.0) {
  try {
    for (int pair = 0; pair < kPairs; ++pair) {
      MOEBENCH_CUDA_CHECK(cudaEventCreate(&start_events_[pair]));
      MOEBENCH_CUDA_CHECK(cudaEventCreate(&stop_events_[pair]));
    }
  } catch (...) {
    destroy_events();  // the destructor does not run for a failed constructor
    throw;
  }
}

CudaPhaseTimers::~CudaPhaseTimers() { destroy_events(); }

void CudaPhaseTimers::destroy_events() noexcept {
  for (auto* events : {&start_events_, &stop_events_}) {
    for (CUevent_st*& event : *events) {
      if (event == nullptr) continue;
      const cudaError_t status = cudaEventDestroy(event);
      if (status != cudaSuccess) {
        std::fprintf(stderr, "moebench: cudaEventDestroy failed: %s\n", cudaGetErrorString(status));
      }
      event = nullptr;
    }
  }
}

int CudaPhaseTimers::start(CUstream_st* stream) {
  if (pending_ == kPairs) resolve_oldest();
  const int pair = (oldest_ + pending_) % kPairs;
  MOEBENCH_CUDA_CHECK(cudaEventRecord(start_events_[pair], stream));
  return pair;
}

void CudaPhaseTimers::stop(int pair, CUstream_st* stream, int field) {
  MOEBENCH_CHECK(pending_ < kPairs && pair == (oldest_ + pending_) % kPairs,
                 "CudaPhaseTimers: stop() of a pair that is not the one last started");
  MOEBENCH_CHECK(field >= 0 && field < static_cast<int>(seconds_.size()),
                 "CudaPhaseTimers: unknown timing field");
  MOEBENCH_CUDA_CHECK(cudaEventRecord(stop_events_[pair], stream));
  field_[pair] = field;
  ++pending_;
}

void CudaPhaseTimers::resolve_oldest() {
  const int pair = oldest_;
  // The stop event follows the start event on the same stream: both are complete after this.
  MOEBENCH_CUDA_CHECK(cudaEventSynchronize(stop_events_[pair]));
  float ms = 0.0f;
  MOEBENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start_events_[pair], stop_events_[pair]));
  seconds_[field_[pair]] += 1e-3 * static_cast<double>(ms);
  oldest_ = (oldest_ + 1) % kPairs;
  --pending_;
}

const std::vector<double>& CudaPhaseTimers::resolve() {
  while (pending_ > 0) resolve_oldest();
  return seconds_;
}

void CudaPhaseTimers::reset() {
  // Dropped pairs may still be in flight; recording them again later is allowed (an event
  // stands for its latest record), so nothing waits here.
  oldest_ = 0;
  pending_ = 0;
  std::fill(seconds_.begin(), seconds_.end(), 0.0);
}

}  // namespace moebench
