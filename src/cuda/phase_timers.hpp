// Device time per phase from CUDA events, with no host wait in the step: each timed phase
// takes a pair of events from a ring of kPairs pairs created once (default flags: timing
// enabled), records start and stop on the stream that runs the phase and leaves the pair
// pending; resolve() waits for each pending pair's stop event and adds its elapsed device time
// to the field (0 .. fields - 1) it belongs to. When every pair is pending, start() first
// resolves the oldest one: it is kPairs phases old (several steps of the CudaDispatcher's 13
// phases), so normally long done and the wait nil; memory stays bounded and no time is lost.
// Phases do not nest: a pair is started and stopped before the next one starts.
#pragma once

#include <array>
#include <vector>

#include "moebench/cuda.hpp"

namespace moebench {

class CudaPhaseTimers {
 public:
  static constexpr int kPairs = 64;

  explicit CudaPhaseTimers(int fields);
  ~CudaPhaseTimers();
  CudaPhaseTimers(const CudaPhaseTimers&) = delete;
  CudaPhaseTimers& operator=(const CudaPhaseTimers&) = delete;

  // Records the start event of the next free pair on `stream`; returns the pair for stop().
  int start(CUstream_st* stream);
  // Records the pair's stop event on `stream` (the stream start() was given); the pair is
  // then pending, its time going to `field`.
  void stop(int pair, CUstream_st* stream, int field);
  // Waits for every pending pair and adds it in; seconds per field since the last reset.
  const std::vector<double>& resolve();
  // Zero sums; pending pairs are dropped without waiting (their work predates the reset).
  void reset();
  int pending() const { return pending_; }

 private:
  void resolve_oldest();
  void destroy_events() noexcept;

  std::array<CUevent_st*, kPairs> start_events_{}, stop_events_{};
  std::array<int, kPairs> field_{};  // where each pending pair's time goes
  int oldest_ = 0, pending_ = 0;     // pending pairs: oldest_, oldest_ + 1, ... mod kPairs
  std::vector<double> seconds_;      // [fields]
};

}  // namespace moebench
