// TraceFile: opening and validating a trace, attributes and row reads. See trace_file.hpp.
#include "trace_file.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <system_error>

#include "moebench/check.hpp"
#include "moebench/trace.hpp"

namespace moebench::analyze {

namespace {

// Turns HDF5's automatic error-stack printing off for its lifetime: a probe that finds nothing
// (or a file that is not HDF5) must not print a stack before moebench's own message.
class QuietHdf5Errors {
 public:
  QuietHdf5Errors() {
    MOEBENCH_H5_CHECK(H5Eget_auto2(H5E_DEFAULT, &function_, &data_));
    MOEBENCH_H5_CHECK(H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr));
  }
  ~QuietHdf5Errors() { static_cast<void>(H5Eset_auto2(H5E_DEFAULT, function_, data_)); }
  QuietHdf5Errors(const QuietHdf5Errors&) = delete;
  QuietHdf5Errors& operator=(const QuietHdf5Errors&) = delete;

 private:
  H5E_auto2_t function_ = nullptr;
  void* data_ = nullptr;
};

const std::string kSupported = "pass a trace written by moebench train, capacity or alltoall";

}  // namespace

TraceFile::TraceFile(const std::string& path) : path_(path) {
  namespace fs = std::filesystem;
  const std::string quoted = "'" + path + "'";
  std::error_code error;
  if (!fs::exists(path, error)) {
    throw UsageError("cannot read trace " + quoted + ": no such file (check the path)");
  }
  if (fs::is_directory(path, error)) {
    throw UsageError("cannot read trace " + quoted + ": it is a directory (" + kSupported + ")");
  }
  if (::access(path.c_str(), R_OK) != 0) {
    throw UsageError("cannot read trace " + quoted + ": permission denied (check its permissions)");
  }
  {
    QuietHdf5Errors quiet;
    if (H5Fis_hdf5(path.c_str()) <= 0) {
      throw UsageError(quoted + " is not a moebench trace: it is not an HDF5 file (" + kSupported + ")");
    }
    file_ = H5Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  }
  if (file_.get() < 0) {
    throw UsageError("cannot open trace " + quoted +
                     " with HDF5: the file is damaged (did the run die while writing it? h5dump "
                     "shows what is left)");
  }
  const std::optional<double> version = number_attribute("/", "schema_version");
  if (!version) {
    throw UsageError(quoted + " is not a moebench trace: an HDF5 file without the root attribute "
                     "'schema_version' (" + kSupported + ")");
  }
  if (*version != kTraceSchemaVersion) {
    const std::optional<std::string> writer = text_attribute("/", "moebench_version");
    char shown[32];
    std::snprintf(shown, sizeof shown, "%g", *version);
    throw UsageError(quoted + " has trace schema version " + shown +
                     (writer ? " (written by moebench " + *writer + ")" : std::string()) +
                     ", but this moebench reads schema version " + std::to_string(kTraceSchemaVersion) +
                     " only: analyze it with the moebench release that wrote it");
  }
  const std::optional<std::string> command = text_attribute("/", "command");
  const std::optional<double> world_size = number_attribute("/", "world_size");
  if (!command || !world_size) {
    throw UsageError(quoted + " is not a moebench trace: it has no root attribute '" +
                     (command ? "world_size" : "command") + "' (" + kSupported + ")");
  }
  command_ = *command;
  world_size_ = static_cast<int>(*world_size);
}

bool TraceFile::exists(const std::string& object) const {
  // H5Lexists needs every intermediate link to exist, so test each prefix in turn; a negative
  // answer (a component that is a dataset, not a group) also means "absent" here.
  QuietHdf5Errors quiet;
  for (size_t end = 2; end <= object.size(); ++end) {
    if (end < object.size() && object[end] != '/') continue;
    if (H5Lexists(file_.get(), object.substr(0, end).c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return true;
}

namespace {

// The attribute `name` of `object` (open), or an invalid H5Id when either is absent.
H5Id open_attribute(const TraceFile& trace, hid_t file, const std::string& object,
                    const std::string& name) {
  if (!trace.exists(object)) return {};
  H5Id handle(MOEBENCH_H5_CHECK(H5Oopen(file, object.c_str(), H5P_DEFAULT)), H5Oclose);
  if (MOEBENCH_H5_CHECK(H5Aexists(handle.get(), name.c_str())) == 0) return {};
  return H5Id(MOEBENCH_H5_CHECK(H5Aopen(handle.get(), name.c_str(), H5P_DEFAULT)), H5Aclose);
}

bool is_single_value(hid_t attribute) {
  H5Id space(MOEBENCH_H5_CHECK(H5Aget_space(attribute)), H5Sclose);
  return MOEBENCH_H5_CHECK(H5Sget_simple_extent_npoints(space.get())) == 1;
}

}  // namespace

std::optional<double> TraceFile::number_attribute(const std::string& object, const std::string& name) const {
  const H5Id attribute = open_attribute(*this, file_.get(), object, name);
  if (attribute.get() < 0) return std::nullopt;
  H5Id type(MOEBENCH_H5_CHECK(H5Aget_type(attribute.get())), H5Tclose);
  const H5T_class_t type_class = MOEBENCH_H5_CHECK(H5Tget_class(type.get()));
  if ((type_class != H5T_INTEGER && type_class != H5T_FLOAT) || !is_single_value(attribute.get())) {
    malformed("attribute '" + name + "' of " + object + " is not a number");
  }
  double value = 0.0;
  MOEBENCH_H5_CHECK(H5Aread(attribute.get(), H5T_NATIVE_DOUBLE, &value));
  return value;
}

std::optional<std::string> TraceFile::text_attribute(const std::string& object, const std::string& name) const {
  const H5Id attribute = open_attribute(*this, file_.get(), object, name);
  if (attribute.get() < 0) return std::nullopt;
  H5Id type(MOEBENCH_H5_CHECK(H5Aget_type(attribute.get())), H5Tclose);
  if (MOEBENCH_H5_CHECK(H5Tget_class(type.get())) != H5T_STRING || !is_single_value(attribute.get())) {
    malformed("attribute '" + name + "' of " + object + " is not a string");
  }
  H5Id memory(MOEBENCH_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  const H5T_cset_t cset = MOEBENCH_H5_CHECK(H5Tget_cset(type.get()));
  MOEBENCH_H5_CHECK(H5Tset_cset(memory.get(), cset));
  if (MOEBENCH_H5_CHECK(H5Tis_variable_str(type.get())) > 0) {
    MOEBENCH_H5_CHECK(H5Tset_size(memory.get(), H5T_VARIABLE));
    char* text = nullptr;
    MOEBENCH_H5_CHECK(H5Aread(attribute.get(), memory.get(), &text));
    std::string value = text != nullptr ? text : "";
    MOEBENCH_H5_CHECK(H5free_memory(text));
    return value;
  }
  const size_t size = H5Tget_size(type.get());
  MOEBENCH_CHECK(size > 0, "fixed-length string attribute of size 0");
  MOEBENCH_H5_CHECK(H5Tset_size(memory.get(), size + 1));  // room for the terminating NUL
  MOEBENCH_H5_CHECK(H5Tset_strpad(memory.get(), H5T_STR_NULLTERM));
  std::string value(size + 1, '\0');
  MOEBENCH_H5_CHECK(H5Aread(attribute.get(), memory.get(), value.data()));
  value.resize(value.find('\0'));
  return value;
}

std::string TraceFile::config(const std::string& name) const {
  const std::optional<std::string> value = text_attribute("/config", name);
  if (!value) malformed("no /config attribute '" + name + "'");
  return *value;
}

double TraceFile::config_number(const std::string& name) const {
  const std::string text = config(name);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0') malformed("/config '" + name + "' = '" + text + "' is not a number");
  return value;
}

std::vector<int64_t> TraceFile::shape(const std::string& dataset) const {
  if (!exists(dataset)) malformed("no dataset " + dataset);
  H5Id handle(MOEBENCH_H5_CHECK(H5Dopen2(file_.get(), dataset.c_str(), H5P_DEFAULT)), H5Dclose);
  H5Id space(MOEBENCH_H5_CHECK(H5Dget_space(handle.get())), H5Sclose);
  const int rank = MOEBENCH_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  MOEBENCH_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  if (rank < 1) malformed(dataset + " is a scalar, not a series");
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::vector<double> TraceFile::read_rows(const std::string& dataset, int64_t first, int64_t rows) const {
  const std::vector<int64_t> dims = shape(dataset);
  MOEBENCH_CHECK(first >= 0 && rows >= 0 && first + rows <= dims[0], "rows within the dataset's extent");
  H5Id handle(MOEBENCH_H5_CHECK(H5Dopen2(file_.get(), dataset.c_str(), H5P_DEFAULT)), H5Dclose);
  H5Id type(MOEBENCH_H5_CHECK(H5Dget_type(handle.get())), H5Tclose);
  const H5T_class_t type_class = MOEBENCH_H5_CHECK(H5Tget_class(type.get()));
  if (type_class != H5T_INTEGER && type_class != H5T_FLOAT) malformed(dataset + " is not numeric");
  std::vector<hsize_t> start(dims.size(), 0), count(dims.begin(), dims.end());
  start[0] = static_cast<hsize_t>(first);
  count[0] = static_cast<hsize_t>(rows);
  hsize_t values = 1;
  for (hsize_t n : count) values *= n;
  std::vector<double> out(values);
  if (values == 0) return out;
  H5Id file_space(MOEBENCH_H5_CHECK(H5Dget_space(handle.get())), H5Sclose);
  MOEBENCH_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                        count.data(), nullptr));
  H5Id memory_space(MOEBENCH_H5_CHECK(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr)),
                    H5Sclose);
  MOEBENCH_H5_CHECK(H5Dread(handle.get(), H5T_NATIVE_DOUBLE, memory_space.get(), file_space.get(),
                            H5P_DEFAULT, out.data()));
  return out;
}

void TraceFile::malformed(const std::string& what) const {
  throw UsageError("'" + path_ + "': " + what + " (not a moebench " + (command_.empty() ? "" : command_ + " ") +
                   "trace of schema version " +
                   std::to_string(kTraceSchemaVersion) + "? the file may be damaged)");
}

}  // namespace moebench::analyze
