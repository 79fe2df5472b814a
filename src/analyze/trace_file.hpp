// Read-only access to one moebench trace for `moebench analyze`: plain (serial) HDF5, default
// file access properties. Opening checks that the file exists, is HDF5, carries moebench's
// root attributes and a schema version this build reads; each failure is a UsageError naming
// the file and the fix. Probes for optional objects run with HDF5's error printing off.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moebench::analyze {

// Owns one HDF5 identifier and closes it with `closer` (H5Dclose, H5Sclose, ...); a failed
// close is ignored (it runs while unwinding too).
class H5Id {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Id() = default;
  H5Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Id(H5Id&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)), closer_(other.closer_) {}
  H5Id& operator=(H5Id&& other) noexcept {
    std::swap(id_, other.id_);
    std::swap(closer_, other.closer_);
    return *this;
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  ~H5Id() {
    if (id_ >= 0 && closer_ != nullptr) static_cast<void>(closer_(id_));
  }
  hid_t get() const { return id_; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

class TraceFile {
 public:
  explicit TraceFile(const std::string& path);

  const std::string& path() const { return path_; }
  const std::string& command() const { return command_; }  // root attribute `command`
  int world_size() const { return world_size_; }            // root attribute `world_size`

  // Whether the group or dataset `object` ("/a/b/c") exists.
  bool exists(const std::string& object) const;
  // Attributes of `object`; nullopt when the object or the attribute is absent. A present
  // attribute of the wrong type class is a UsageError.
  std::optional<std::string> text_attribute(const std::string& object, const std::string& name) const;
  std::optional<double> number_attribute(const std::string& object, const std::string& name) const;
  // The /config value of option `name` (e.g. "router-arch"); UsageError when absent.
  std::string config(const std::string& name) const;
  double config_number(const std::string& name) const;

  // The dataset's shape; UsageError naming the dataset when it is absent.
  std::vector<int64_t> shape(const std::string& dataset) const;
  // Rows [first, first + rows), converted to double, row-major: rows x prod(shape[1:]) values.
  std::vector<double> read_rows(const std::string& dataset, int64_t first, int64_t rows) const;

  // "'PATH': " + what + " (not a moebench trace of schema N?)" as a UsageError.
  [[noreturn]] void malformed(const std::string& what) const;

 private:
  std::string path_, command_;
  int world_size_ = 0;
  H5Id file_;
};

}  // namespace moebench::analyze
