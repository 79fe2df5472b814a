// The trace writer: one parallel HDF5 file opened through MPI-IO by every rank of `comm`.
// Every operation here is collective; see include/moebench/trace.hpp for the layout and
// docs/trace-schema.md for the schema.
#include "moebench/trace.hpp"

#include <hdf5.h>

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moebench/check.hpp"
#include "trace_internal.hpp"

namespace moebench {

using trace_detail::H5Handle;

namespace {

#ifdef MOEBENCH_VERSION
constexpr const char* kMoebenchVersion = MOEBENCH_VERSION;
#else
constexpr const char* kMoebenchVersion = "0.1.0";
#endif
#ifdef MOEBENCH_GIT_REVISION
constexpr const char* kGitRevision = MOEBENCH_GIT_REVISION;
#else
constexpr const char* kGitRevision = "unknown";
#endif

// In-memory type of a row buffer.
hid_t memory_type(TraceType type) {
  switch (type) {
    case TraceType::float32: return H5T_NATIVE_FLOAT;
    case TraceType::float64: return H5T_NATIVE_DOUBLE;
    case TraceType::int32: return H5T_NATIVE_INT32;
    case TraceType::int64: return H5T_NATIVE_INT64;
  }
  MOEBENCH_CHECK(false, "unknown TraceType");
  return H5I_INVALID_HID;
}

// Stored type: fixed little-endian standard types, so the file reads the same everywhere.
hid_t file_type(TraceType type) {
  switch (type) {
    case TraceType::float32: return H5T_IEEE_F32LE;
    case TraceType::float64: return H5T_IEEE_F64LE;
    case TraceType::int32: return H5T_STD_I32LE;
    case TraceType::int64: return H5T_STD_I64LE;
  }
  MOEBENCH_CHECK(false, "unknown TraceType");
  return H5I_INVALID_HID;
}

size_t type_bytes(TraceType type) {
  return type == TraceType::float32 || type == TraceType::int32 ? 4 : 8;
}

// "/a/b/" -> "/a/b"; "" and "/" -> "/".
std::string normalize_path(const std::string& path) {
  std::string result = "/";
  size_t begin = 0;
  while (begin < path.size()) {
    while (begin < path.size() && path[begin] == '/') {
      ++begin;
    }
    size_t end = path.find('/', begin);
    if (end == std::string::npos) {
      end = path.size();
    }
    if (end > begin) {
      if (result.size() > 1) {
        result += '/';
      }
      result.append(path, begin, end - begin);
    }
    begin = end;
  }
  return result;
}

H5Handle intermediate_groups_lcpl() {
  H5Handle lcpl(MOEBENCH_H5_CHECK(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  MOEBENCH_H5_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1));
  return lcpl;
}

// One extendible dataset.
struct SeriesState {
  std::string path;
  H5Handle dataset;
  TraceType type = TraceType::float32;
  TraceLayout layout = TraceLayout::replicated;
  std::vector<hsize_t> dims;  // current extent: [rows, inner...] or [rows, P, inner...]
  hsize_t row_elements = 1;   // prod(inner): elements one rank passes to append
  int64_t rows = 0;           // rows appended, written or pending
  // Rows appended since the last write, in memory; written as one block by write_pending()
  // at each flush (one collective extend + write instead of one per row).
  std::vector<char> pending;
  int64_t pending_rows = 0;
};

}  // namespace

struct TraceWriter::Impl {
  std::string path;
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  int flush_every = 1;
  int64_t appends_since_flush = 0;
  bool open = false;
  // Declared so that destruction closes datasets, then the transfer list, then the file.
  H5Handle file;
  H5Handle collective_transfer;  // dataset transfer list with H5FD_MPIO_COLLECTIVE
  std::vector<SeriesState> series;

  void append(int index, const void* row);
  void write_pending(SeriesState& state);
  void flush();
  void close();
  bool exists(const std::string& normalized_path) const;
  H5Handle open_or_create_object(const std::string& object_path);
  void write_run_info(const TraceRunInfo& info);
};

// ---- TraceWriter ----------------------------------------------------------------------------

TraceWriter::TraceWriter(const std::string& path, MPI_Comm comm, const TraceRunInfo& info,
                         int flush_every)
    : impl_(std::make_unique<Impl>()) {
  // Errors surface as one exception with one message, not as HDF5's stack dump.
  MOEBENCH_H5_CHECK(H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr));
  Impl& impl = *impl_;
  impl.path = path;
  impl.comm = comm;
  impl.flush_every = flush_every;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &impl.rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &impl.size));

  const std::string verdict = trace_detail::check_trace_path(path, comm);
  if (!verdict.empty()) {
    throw UsageError(verdict);
  }

  H5Handle access(MOEBENCH_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  MOEBENCH_H5_CHECK(H5Pset_fapl_mpio(access.get(), comm, MPI_INFO_NULL));
  MOEBENCH_H5_CHECK(H5Pset_all_coll_metadata_ops(access.get(), 1));
  MOEBENCH_H5_CHECK(H5Pset_coll_metadata_write(access.get(), 1));
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get());
  const int created = file >= 0 ? 1 : 0;
  int created_everywhere = 0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&created, &created_everywhere, 1, MPI_INT, MPI_MIN, comm));
  if (created_everywhere == 0) {
    // MPI_File_open is collective, so creation fails on every rank or on none; a handle left
    // open on some rank is not closed here, since closing is collective too.
    throw UsageError("cannot write trace '" + path +
                     "': HDF5 could not create the file through MPI-IO (check that the file "
                     "system is writable and visible to every rank, or pass another --out)");
  }
  impl.file = H5Handle(file, H5Fclose);

  impl.collective_transfer =
      H5Handle(MOEBENCH_H5_CHECK(H5Pcreate(H5P_DATASET_XFER)), H5Pclose);
  MOEBENCH_H5_CHECK(H5Pset_dxpl_mpio(impl.collective_transfer.get(), H5FD_MPIO_COLLECTIVE));
  impl.open = true;

  impl.write_run_info(info);
}

TraceWriter::~TraceWriter() {
  try {
    close();
  } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
  }
}

void TraceWriter::Impl::write_run_info(const TraceRunInfo& info) {
  using namespace trace_detail;
  const hid_t root = file.get();
  const int schema_version = kTraceSchemaVersion;
  write_scalar_attribute(root, "schema_version", H5T_NATIVE_INT, &schema_version);
  write_string_attribute(root, "moebench_version", kMoebenchVersion);
  write_string_attribute(root, "command", info.command);
  write_string_attribute(root, "command_line", info.command_line);
  write_scalar_attribute(root, "world_size", H5T_NATIVE_INT, &size);
  write_string_array_attribute(root, "hostnames", gather_hostnames(comm));
  write_string_attribute(root, "git_revision", kGitRevision);
  write_string_attribute(root, "start_time", broadcast_start_time(comm));

  H5Handle config(MOEBENCH_H5_CHECK(H5Gcreate2(root, "/config", H5P_DEFAULT, H5P_DEFAULT,
                                               H5P_DEFAULT)),
                  H5Gclose);
  for (const auto& [name, value] : info.options) {
    write_string_attribute(config.get(), name, value);
  }
  MOEBENCH_H5_CHECK(config.close());
}

TraceSeries TraceWriter::series(const std::string& path, TraceType type,
                                std::vector<int64_t> inner, TraceLayout layout,
                                const std::string& units, const std::string& description,
                                int64_t chunk_rows) {
  Impl& impl = *impl_;
  MOEBENCH_CHECK(impl.open, "series('" + path + "') on a closed trace");
  MOEBENCH_CHECK(chunk_rows >= 1, "chunk_rows must be positive for series '" + path + "'");

  SeriesState state;
  state.path = normalize_path(path);
  state.type = type;
  state.layout = layout;
  std::vector<hsize_t> chunk = {static_cast<hsize_t>(chunk_rows)};
  state.dims = {0};
  if (layout == TraceLayout::per_rank) {
    chunk.push_back(static_cast<hsize_t>(impl.size));
    state.dims.push_back(static_cast<hsize_t>(impl.size));
  }
  for (const int64_t extent : inner) {
    MOEBENCH_CHECK(extent >= 1, "inner dimensions must be positive for series '" + path + "'");
    chunk.push_back(static_cast<hsize_t>(extent));
    state.dims.push_back(static_cast<hsize_t>(extent));
    state.row_elements *= static_cast<hsize_t>(extent);
  }
  // HDF5 refuses chunks of 4 GiB or more.
  hsize_t chunk_bytes = type_bytes(type);
  for (const hsize_t extent : chunk) {
    chunk_bytes *= extent;
  }
  MOEBENCH_CHECK(chunk_bytes < (hsize_t{1} << 32),
                 "chunk of series '" + path + "' is 4 GiB or more; lower chunk_rows");

  const int rank_count = static_cast<int>(state.dims.size());
  std::vector<hsize_t> max_dims = state.dims;
  max_dims[0] = H5S_UNLIMITED;
  H5Handle space(MOEBENCH_H5_CHECK(H5Screate_simple(rank_count, state.dims.data(),
                                                    max_dims.data())),
                 H5Sclose);
  H5Handle creation(MOEBENCH_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  MOEBENCH_H5_CHECK(H5Pset_chunk(creation.get(), rank_count, chunk.data()));
  H5Handle lcpl = intermediate_groups_lcpl();
  state.dataset = H5Handle(
      MOEBENCH_H5_CHECK(H5Dcreate2(impl.file.get(), state.path.c_str(), file_type(type),
                                   space.get(), lcpl.get(), creation.get(), H5P_DEFAULT)),
      H5Dclose);
  if (!units.empty()) {
    trace_detail::write_string_attribute(state.dataset.get(), "units", units);
  }
  if (!description.empty()) {
    trace_detail::write_string_attribute(state.dataset.get(), "description", description);
  }

  impl.series.push_back(std::move(state));
  TraceSeries handle;
  handle.writer_ = this;
  handle.index_ = static_cast<int>(impl.series.size()) - 1;
  return handle;
}

bool TraceWriter::Impl::exists(const std::string& normalized_path) const {
  // H5Lexists needs every parent to exist, so test the path one component at a time.
  size_t end = 0;
  while (end != std::string::npos) {
    end = normalized_path.find('/', end + 1);
    const std::string prefix = normalized_path.substr(0, end);
    if (MOEBENCH_H5_CHECK(H5Lexists(file.get(), prefix.c_str(), H5P_DEFAULT)) <= 0) {
      return false;
    }
  }
  return true;
}

H5Handle TraceWriter::Impl::open_or_create_object(const std::string& object_path) {
  MOEBENCH_CHECK(open, "set_attribute on '" + object_path + "' of a closed trace");
  const std::string normalized = normalize_path(object_path);
  if (normalized != "/" && !exists(normalized)) {
    H5Handle lcpl = intermediate_groups_lcpl();
    return H5Handle(MOEBENCH_H5_CHECK(H5Gcreate2(file.get(), normalized.c_str(), lcpl.get(),
                                                 H5P_DEFAULT, H5P_DEFAULT)),
                    H5Gclose);
  }
  return H5Handle(MOEBENCH_H5_CHECK(H5Oopen(file.get(), normalized.c_str(), H5P_DEFAULT)),
                  H5Oclose);
}

void TraceWriter::set_attribute(const std::string& object_path, const std::string& name,
                                const std::string& value) {
  H5Handle object = impl_->open_or_create_object(object_path);
  trace_detail::write_string_attribute(object.get(), name, value);
  MOEBENCH_H5_CHECK(object.close());
}

void TraceWriter::set_attribute(const std::string& object_path, const std::string& name,
                                double value) {
  H5Handle object = impl_->open_or_create_object(object_path);
  trace_detail::write_scalar_attribute(object.get(), name, H5T_NATIVE_DOUBLE, &value);
  MOEBENCH_H5_CHECK(object.close());
}

void TraceWriter::set_attribute(const std::string& object_path, const std::string& name,
                                int64_t value) {
  H5Handle object = impl_->open_or_create_object(object_path);
  trace_detail::write_scalar_attribute(object.get(), name, H5T_NATIVE_INT64, &value);
  MOEBENCH_H5_CHECK(object.close());
}

void TraceWriter::flush() { impl_->flush(); }

void TraceWriter::close() { impl_->close(); }

const std::string& TraceWriter::path() const { return impl_->path; }

MPI_Comm TraceWriter::comm() const { return impl_->comm; }

// ---- Impl: append, flush, close ---------------------------------------------------------------

void TraceWriter::Impl::append(int index, const void* row) {
  MOEBENCH_CHECK(open, "append to a series of a closed trace");
  MOEBENCH_CHECK(index >= 0 && index < static_cast<int>(series.size()), "bad series index");
  MOEBENCH_CHECK(row != nullptr, "append(nullptr)");
  SeriesState& state = series[static_cast<size_t>(index)];
  const size_t row_bytes = state.row_elements * H5Tget_size(memory_type(state.type));
  const size_t used = state.pending.size();
  state.pending.resize(used + row_bytes);
  std::memcpy(state.pending.data() + used, row, row_bytes);
  state.pending_rows += 1;
  state.rows += 1;

  appends_since_flush += 1;
  if (flush_every > 0 && appends_since_flush >= flush_every) {
    flush();
  }
}

void TraceWriter::Impl::write_pending(SeriesState& state) {
  // Collective: every rank has the same pending row count (appends are collective).
  if (state.pending_rows == 0) return;
  const hsize_t count_rows = static_cast<hsize_t>(state.pending_rows);
  std::vector<hsize_t> dims = state.dims;
  dims[0] += count_rows;
  MOEBENCH_H5_CHECK(H5Dset_extent(state.dataset.get(), dims.data()));

  // File selection: the new rows, [n, inner...] on rank 0 (replicated) or this rank's
  // [n, 1, inner...] slice at [first, rank, 0...] (per-rank); nothing on the other ranks.
  H5Handle file_space(MOEBENCH_H5_CHECK(H5Dget_space(state.dataset.get())), H5Sclose);
  const hsize_t memory_count[1] = {state.row_elements * count_rows};
  H5Handle memory_space(MOEBENCH_H5_CHECK(H5Screate_simple(1, memory_count, nullptr)),
                        H5Sclose);
  const bool per_rank = state.layout == TraceLayout::per_rank;
  if (per_rank || rank == 0) {
    std::vector<hsize_t> start(dims.size(), 0);
    std::vector<hsize_t> count = dims;
    start[0] = state.dims[0];
    count[0] = count_rows;
    if (per_rank) {
      start[1] = static_cast<hsize_t>(rank);
      count[1] = 1;
    }
    MOEBENCH_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(),
                                          nullptr, count.data(), nullptr));
  } else {
    MOEBENCH_H5_CHECK(H5Sselect_none(file_space.get()));
    MOEBENCH_H5_CHECK(H5Sselect_none(memory_space.get()));
  }
  MOEBENCH_H5_CHECK(H5Dwrite(state.dataset.get(), memory_type(state.type), memory_space.get(),
                             file_space.get(), collective_transfer.get(), state.pending.data()));
  state.dims = std::move(dims);
  state.pending.clear();
  state.pending_rows = 0;
}

void TraceWriter::Impl::flush() {
  MOEBENCH_CHECK(open, "flush of a closed trace");
  for (SeriesState& state : series) write_pending(state);
  MOEBENCH_H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL));
  appends_since_flush = 0;
}

void TraceWriter::Impl::close() {
  if (!open) {
    return;
  }
  for (SeriesState& state : series) write_pending(state);
  open = false;
  // H5Fclose under MPI-IO refuses to close while objects are open, so datasets go first.
  // Should one close fail, the remaining handles are still released by their destructors.
  for (SeriesState& state : series) {
    MOEBENCH_H5_CHECK(state.dataset.close());
  }
  MOEBENCH_H5_CHECK(collective_transfer.close());
  MOEBENCH_H5_CHECK(file.close());
}

// ---- TraceSeries ------------------------------------------------------------------------------

void TraceSeries::append(const void* row) {
  MOEBENCH_CHECK(writer_ != nullptr, "append to a default-constructed TraceSeries");
  writer_->impl_->append(index_, row);
}

int64_t TraceSeries::rows() const {
  if (writer_ == nullptr) {
    return 0;
  }
  return writer_->impl_->series[static_cast<size_t>(index_)].rows;
}

}  // namespace moebench
