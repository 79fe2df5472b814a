// The trace: one parallel HDF5 file per run, written by all ranks through MPI-IO.
//
// Layout (documented in docs/trace-schema.md, versioned by kTraceSchemaVersion):
//   /                root attributes: schema_version, moebench_version, command, command_line,
//                    world_size, hostnames (one per rank), git_revision, start_time (ISO 8601 UTC)
//   /config          one string attribute per resolved option (name -> value as given)
//   /<group>/<name>  extendible datasets, chunked along the first (step or row) axis
//
// A Series is one such dataset. Its shape is [n, inner...] for replicated data (identical on
// every rank; rank 0's copy is written) and [n, P, inner...] for per-rank data (each rank
// writes its own hyperslab). Every append is collective: all ranks call it in the same order.
// Appended rows are buffered in memory and written, one block per series, at each flush:
// every `flush_every` appends to any series (0 = only when asked), flush() and close(). So a
// run that dies keeps a readable file up to the last flush.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace moebench {

inline constexpr int kTraceSchemaVersion = 1;

enum class TraceType { float32, float64, int32, int64 };
enum class TraceLayout { replicated, per_rank };

struct TraceRunInfo {
  std::string command;       // "capacity", "train", ...
  std::string command_line;  // argv joined with spaces
  std::vector<std::pair<std::string, std::string>> options;  // resolved options, in order
};

class TraceWriter;

// Handle to one extendible dataset. Cheap to copy; valid while its TraceWriter is open.
class TraceSeries {
 public:
  TraceSeries() = default;
  // Appends one row (collective). `row` holds prod(inner) elements of the series' type: for
  // replicated series the same values on every rank, for per-rank series this rank's values.
  void append(const void* row);
  int64_t rows() const;

 private:
  friend class TraceWriter;
  TraceWriter* writer_ = nullptr;
  int index_ = -1;
};

class TraceWriter {
 public:
  // Collective over `comm`. Creates (truncates) `path` and writes the root attributes and
  // /config. Throws UsageError on every rank, naming the path and the fix, when the file cannot
  // be created (missing directory, no permission, path is a directory).
  TraceWriter(const std::string& path, MPI_Comm comm, const TraceRunInfo& info,
              int flush_every = 1);
  ~TraceWriter();  // closes if still open; never throws
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  // Creates an extendible dataset at `path` (intermediate groups are created), chunked as
  // [chunk_rows, inner...] (per-rank: [chunk_rows, P, inner...]). Collective. Optional
  // string attributes "units" and "description" are written when non-empty.
  TraceSeries series(const std::string& path, TraceType type, std::vector<int64_t> inner,
                     TraceLayout layout, const std::string& units = "",
                     const std::string& description = "", int64_t chunk_rows = 64);

  // Attributes on a group or dataset (created if it is a missing group). Collective; values
  // must be identical on all ranks.
  void set_attribute(const std::string& object_path, const std::string& name,
                     const std::string& value);
  void set_attribute(const std::string& object_path, const std::string& name, double value);
  void set_attribute(const std::string& object_path, const std::string& name, int64_t value);

  void flush();  // collective
  void close();  // collective; idempotent
  const std::string& path() const;
  MPI_Comm comm() const;

 private:
  friend class TraceSeries;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moebench
