// Private helpers of the trace writer: an owning HDF5 handle, attribute writers, and the
// run-time facts (hostnames, start time, path verdict) gathered before the file is opened.
#pragma once

#include <hdf5.h>
#include <mpi.h>

#include <string>
#include <utility>
#include <vector>

namespace moebench::trace_detail {

// Owns one HDF5 identifier and closes it with `closer` (H5Dclose, H5Sclose, ...). Errors from
// the close are ignored: a handle is released on every path, including unwinding.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Handle(H5Handle&& other) noexcept
      : id_(std::exchange(other.id_, H5I_INVALID_HID)), closer_(other.closer_) {}
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
      closer_ = other.closer_;
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and reports the close's status (negative on failure; 0 when already empty).
  herr_t close() {
    herr_t status = 0;
    if (id_ >= 0 && closer_ != nullptr) {
      status = closer_(id_);
    }
    id_ = H5I_INVALID_HID;
    return status;
  }
  // Gives up ownership without closing.
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }

 private:
  void reset() { static_cast<void>(close()); }
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Variable-length UTF-8 C string type (h5py reads it as str).
H5Handle utf8_string_type();

// Attribute writers on an open object (file, group or dataset). An existing attribute of the
// same name is replaced. Collective under MPI-IO: every rank passes identical values.
void write_string_attribute(hid_t object, const std::string& name, const std::string& value);
void write_string_array_attribute(hid_t object, const std::string& name,
                                  const std::vector<std::string>& values);  // 1-D [values.size()]
void write_scalar_attribute(hid_t object, const std::string& name, hid_t native_type,
                            const void* value);

// Rank 0 inspects `path` and returns "" when a file can be created there, else the complete
// user-facing message; the verdict is broadcast so every rank returns the same string.
std::string check_trace_path(const std::string& path, MPI_Comm comm);

// Start time as ISO 8601 UTC ("2025-01-31T12:00:00Z"), read on rank 0 and broadcast.
std::string broadcast_start_time(MPI_Comm comm);

// gethostname() of every rank, in rank order, on every rank.
std::vector<std::string> gather_hostnames(MPI_Comm comm);

// Broadcasts a string from rank 0 (the value on other ranks is replaced).
void broadcast_string(std::string& value, MPI_Comm comm);

}  // namespace moebench::trace_detail
