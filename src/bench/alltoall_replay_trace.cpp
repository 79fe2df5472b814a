// `moebench alltoall --pattern replay`: reading the /comm byte matrices of a `moebench train`
// trace (alltoall_internal.hpp, read_replay_trace). Rank 0 opens the file read-only (serial
// HDF5), validates it and tells every rank the same verdict; a missing file, a file that is not
// a moebench trace, a trace without /comm or of another rank count is one UsageError.
#include <hdf5.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "alltoall_internal.hpp"
#include "moebench/check.hpp"
#include "moebench/dispatcher.hpp"
#include "moebench/trace.hpp"

namespace moebench::alltoall_detail {

namespace {

constexpr int kPhases = kNumExchangePhases;

// Owns an HDF5 identifier (file, group, dataset, dataspace, attribute or type).
class Handle {
 public:
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  ~Handle() {
    if (id_ >= 0) closer_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }

 private:
  hid_t id_;
  herr_t (*closer_)(hid_t);
};

// HDF5 prints its error stack on every failed call; a file that is not a trace is a user error
// reported in one line, so printing is off while the trace is read.
class QuietHdf5 {
 public:
  QuietHdf5() {
    MOEBENCH_H5_CHECK(H5Eget_auto2(H5E_DEFAULT, &function_, &data_));
    MOEBENCH_H5_CHECK(H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr));
  }
  ~QuietHdf5() { static_cast<void>(H5Eset_auto2(H5E_DEFAULT, function_, data_)); }  // never throws
  QuietHdf5(const QuietHdf5&) = delete;
  QuietHdf5& operator=(const QuietHdf5&) = delete;

 private:
  H5E_auto2_t function_ = nullptr;
  void* data_ = nullptr;
};

bool link_exists(hid_t file, const std::string& path) {
  return MOEBENCH_H5_CHECK(H5Lexists(file, path.c_str(), H5P_DEFAULT)) > 0;
}

bool read_int_attribute(hid_t object, const char* name, int64_t& value) {
  if (MOEBENCH_H5_CHECK(H5Aexists(object, name)) <= 0) return false;
  Handle attribute(MOEBENCH_H5_CHECK(H5Aopen(object, name, H5P_DEFAULT)), H5Aclose);
  Handle type(MOEBENCH_H5_CHECK(H5Aget_type(attribute.get())), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER) return false;
  return H5Aread(attribute.get(), H5T_NATIVE_INT64, &value) >= 0;
}

std::string read_string_attribute(hid_t object, const char* name) {
  if (MOEBENCH_H5_CHECK(H5Aexists(object, name)) <= 0) return "";
  Handle attribute(MOEBENCH_H5_CHECK(H5Aopen(object, name, H5P_DEFAULT)), H5Aclose);
  Handle stored(MOEBENCH_H5_CHECK(H5Aget_type(attribute.get())), H5Tclose);
  if (H5Tget_class(stored.get()) != H5T_STRING || H5Tis_variable_str(stored.get()) <= 0) return "";
  Handle type(MOEBENCH_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  MOEBENCH_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  MOEBENCH_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  char* text = nullptr;
  if (H5Aread(attribute.get(), type.get(), &text) < 0 || text == nullptr) return "";
  std::string value(text);
  MOEBENCH_H5_CHECK(H5free_memory(text));
  return value;
}

// Reads rows [0, steps) of a dataset of shape [n, inner...] as `memory_type` into out.
// Returns "" or what is wrong with its shape.
std::string read_rows(hid_t file, const std::string& path, const std::vector<hsize_t>& inner,
                      hid_t memory_type, H5T_class_t expected_class, int& steps, void* out,
                      bool only_shape) {
  Handle dataset(H5Dopen2(file, path.c_str(), H5P_DEFAULT), H5Dclose);
  if (dataset.get() < 0) return "'" + path + "' is not a dataset";
  Handle type(MOEBENCH_H5_CHECK(H5Dget_type(dataset.get())), H5Tclose);
  Handle space(MOEBENCH_H5_CHECK(H5Dget_space(dataset.get())), H5Sclose);
  const int ndims = MOEBENCH_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(std::max(ndims, 1));
  MOEBENCH_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  bool ok = H5Tget_class(type.get()) == expected_class && ndims == static_cast<int>(inner.size()) + 1;
  for (size_t i = 0; ok && i < inner.size(); ++i) ok = dims[i + 1] == inner[i];
  if (!ok) {
    std::ostringstream message;
    message << "'" << path << "' has shape [";
    for (int i = 0; i < ndims; ++i) message << (i ? ", " : "") << dims[i];
    message << "], expected [steps";
    for (hsize_t d : inner) message << ", " << d;
    message << "] of " << (expected_class == H5T_INTEGER ? "integers" : "floats");
    return message.str();
  }
  if (only_shape) {
    steps = static_cast<int>(std::min<hsize_t>(dims[0], INT_MAX));
    return "";
  }
  std::vector<hsize_t> start(ndims, 0), count(dims);
  count[0] = static_cast<hsize_t>(steps);
  MOEBENCH_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                        count.data(), nullptr));
  Handle memory(MOEBENCH_H5_CHECK(H5Screate_simple(ndims, count.data(), nullptr)), H5Sclose);
  MOEBENCH_H5_CHECK(H5Dread(dataset.get(), memory_type, memory.get(), space.get(), H5P_DEFAULT, out));
  return "";
}

// Rank 0's reading of the trace: "" on success, else the complete user-facing message.
std::string read_on_root(const AlltoallOptions& o, int ranks, ReplayTrace& trace) {
  namespace fs = std::filesystem;
  const std::string& path = o.replay;
  const std::string prefix = "--replay: '" + path + "' ";
  const std::string fix = "; pass the --out trace of a moebench train run";
  std::error_code error;
  if (!fs::exists(path, error)) return prefix + "does not exist" + fix;
  if (fs::is_directory(path, error)) return prefix + "is a directory" + fix;
  if (fs::exists(o.out, error) && fs::equivalent(path, o.out, error)) {
    return "--out '" + o.out + "' is the --replay trace itself; writing there would destroy it "
           "(pass another --out)";
  }
  QuietHdf5 quiet;
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 < 0) return prefix + "cannot be read (check its permissions)" + fix;
  if (is_hdf5 == 0) return prefix + "is not a moebench trace (not an HDF5 file)" + fix;
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file.get() < 0) return prefix + "cannot be opened as HDF5 (damaged or unreadable)" + fix;
  int64_t version = 0, world_size = 0;
  if (!read_int_attribute(file.get(), "schema_version", version)) {
    return prefix + "is not a moebench trace (no schema_version attribute)" + fix;
  }
  if (version != kTraceSchemaVersion) {
    std::ostringstream message;
    message << prefix << "has trace schema version " << version << "; this moebench reads version "
            << kTraceSchemaVersion << " (replay it with the moebench that wrote it)";
    return message.str();
  }
  const std::string command = read_string_attribute(file.get(), "command");
  if (!link_exists(file.get(), "/comm") || !link_exists(file.get(), "/comm/layer_0") ||
      !link_exists(file.get(), "/comm/layer_0/bytes_sent")) {
    return prefix + "has no /comm byte matrices (it was written by moebench " +
           (command.empty() ? std::string("?") : command) + ")" + fix;
  }
  if (!read_int_attribute(file.get(), "world_size", world_size)) {
    return prefix + "is not a moebench trace (no world_size attribute)" + fix;
  }
  if (world_size != ranks) {
    std::ostringstream message;
    message << prefix << "was recorded on " << world_size << " ranks and this run has " << ranks
            << "; replay it on the same count (launch/mpirun.sh -np " << world_size << " ...)";
    return message.str();
  }
  trace.command_line = read_string_attribute(file.get(), "command_line");
  const hsize_t P = static_cast<hsize_t>(ranks);
  int steps = INT_MAX;
  while (link_exists(file.get(), "/comm/layer_" + std::to_string(trace.layers)) &&
         link_exists(file.get(), "/comm/layer_" + std::to_string(trace.layers) + "/bytes_sent")) {
    int layer_steps = 0;
    const std::string shape = read_rows(file.get(), "/comm/layer_" + std::to_string(trace.layers) + "/bytes_sent",
                                        {P, kPhases, P}, H5T_NATIVE_INT64, H5T_INTEGER, layer_steps,
                                        nullptr, /*only_shape=*/true);
    if (!shape.empty()) return prefix + "is not a moebench train trace: " + shape + fix;
    steps = std::min(steps, layer_steps);
    ++trace.layers;
  }
  if (o.replay_steps > 0) steps = std::min(steps, o.replay_steps);
  if (steps == 0) return prefix + "has no recorded steps in /comm (the run stopped before its first flush)" + fix;
  const double elements = static_cast<double>(trace.layers) * steps * kPhases * ranks * ranks;
  if (elements > 5e8) {
    return prefix + "holds more matrices than fit in memory at once; replay fewer with --replay-steps";
  }
  trace.steps = steps;
  const size_t layer_bytes = static_cast<size_t>(steps) * P * kPhases * P;
  const size_t layer_times = static_cast<size_t>(steps) * P * kPhases;
  trace.bytes.resize(layer_bytes * trace.layers);
  bool has_times = true;
  for (int l = 0; l < trace.layers; ++l) {
    const std::string group = "/comm/layer_" + std::to_string(l) + "/";
    read_rows(file.get(), group + "bytes_sent", {P, kPhases, P}, H5T_NATIVE_INT64, H5T_INTEGER, steps,
              trace.bytes.data() + l * layer_bytes, false);
    int ignored = 0;
    has_times = has_times && link_exists(file.get(), group + "exchange_ms") &&
                read_rows(file.get(), group + "exchange_ms", {P, kPhases}, H5T_NATIVE_DOUBLE, H5T_FLOAT,
                          ignored, nullptr, true).empty();
  }
  if (has_times) {
    trace.recorded_ms.resize(layer_times * trace.layers);
    for (int l = 0; l < trace.layers; ++l) {
      read_rows(file.get(), "/comm/layer_" + std::to_string(l) + "/exchange_ms", {P, kPhases},
                H5T_NATIVE_DOUBLE, H5T_FLOAT, steps, trace.recorded_ms.data() + l * layer_times, false);
    }
  }
  // Every block must be whole floats, and every rank's send and receive totals MPI int counts.
  for (int l = 0; l < trace.layers; ++l) {
    for (int s = 0; s < steps; ++s) {
      for (int phase = 0; phase < kPhases; ++phase) {
        for (int r = 0; r < ranks; ++r) {
          int64_t sent = 0, received = 0;
          for (int p = 0; p < ranks; ++p) {
            const int64_t out = trace.bytes[(((l * static_cast<size_t>(steps) + s) * P + r) * kPhases + phase) * P + p];
            const int64_t in = trace.bytes[(((l * static_cast<size_t>(steps) + s) * P + p) * kPhases + phase) * P + r];
            if (out < 0 || out % static_cast<int64_t>(sizeof(float)) != 0) {
              std::ostringstream message;
              message << prefix << "is not a moebench train trace: layer " << l << " step " << s
                      << " holds a block of " << out << " bytes, not whole floats" << fix;
              return message.str();
            }
            sent += out;
            received += in;
          }
          if (std::max(sent, received) / static_cast<int64_t>(sizeof(float)) > INT_MAX) {
            return prefix + "holds an exchange beyond MPI's int counts (over 8 GiB on one rank)";
          }
        }
      }
    }
  }
  return "";
}

void broadcast_int64(std::vector<int64_t>& values, MPI_Comm comm) {
  for (size_t start = 0; start < values.size(); start += 1 << 28) {
    const int count = static_cast<int>(std::min<size_t>(values.size() - start, 1 << 28));
    MOEBENCH_MPI_CHECK(MPI_Bcast(values.data() + start, count, MPI_INT64_T, 0, comm));
  }
}

}  // namespace

ReplayTrace read_replay_trace(const AlltoallOptions& o, MPI_Comm comm) {
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  ReplayTrace trace;
  std::string error;
  if (rank == 0) error = read_on_root(o, ranks, trace);
  cli::agree_or_throw(comm, error.empty(), error);
  int sizes[3] = {trace.steps, trace.layers, trace.recorded_ms.empty() ? 0 : 1};
  MOEBENCH_MPI_CHECK(MPI_Bcast(sizes, 3, MPI_INT, 0, comm));
  trace.steps = sizes[0];
  trace.layers = sizes[1];
  const size_t P = static_cast<size_t>(ranks);
  trace.bytes.resize(static_cast<size_t>(trace.layers) * trace.steps * P * kPhases * P);
  broadcast_int64(trace.bytes, comm);
  if (sizes[2]) {
    trace.recorded_ms.resize(static_cast<size_t>(trace.layers) * trace.steps * P * kPhases);
    MOEBENCH_MPI_CHECK(MPI_Bcast(trace.recorded_ms.data(), static_cast<int>(trace.recorded_ms.size()),
                                 MPI_DOUBLE, 0, comm));
  }
  int length = static_cast<int>(trace.command_line.size());
  MOEBENCH_MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT, 0, comm));
  trace.command_line.resize(length);
  MOEBENCH_MPI_CHECK(MPI_Bcast(trace.command_line.data(), length, MPI_CHAR, 0, comm));
  return trace;
}

}  // namespace moebench::alltoall_detail
