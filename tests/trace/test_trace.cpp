// Trace writer tests: write through TraceWriter (parallel HDF5 over MPI_COMM_WORLD), read back
// on rank 0 with the plain HDF5 C API and the default (sec2) driver. They pass on any number of
// ranks; CTest runs them on one.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/trace.hpp"

namespace moebench {
namespace {

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// A fresh directory made by rank 0 (name broadcast), removed when the test ends.
class TempDir {
 public:
  TempDir() {
    std::array<char, 4096> name{};
    if (world_rank() == 0) {
      const std::string pattern =
          (std::filesystem::temp_directory_path() / "moebench-trace-XXXXXX").string();
      pattern.copy(name.data(), name.size() - 1);
      if (mkdtemp(name.data()) == nullptr) {
        name[0] = '\0';
      }
    }
    MPI_Bcast(name.data(), static_cast<int>(name.size()), MPI_CHAR, 0, MPI_COMM_WORLD);
    path_ = name.data();
  }
  ~TempDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0 && !path_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(path_, ignored);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TraceRunInfo test_run_info() {
  TraceRunInfo info;
  info.command = "capacity";
  info.command_line = "moebench capacity --experts 8 --out trace.h5";
  info.options = {{"experts", "8"}, {"out", "trace.h5"}, {"capacity-factor", "1.25"}};
  return info;
}

// ---- Reading back (rank 0, default driver) ---------------------------------------------------

// Read-only handle on a finished (or flushed) trace through the default sec2 driver.
class Reader {
 public:
  explicit Reader(const std::string& path)
      : file_(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)) {}
  ~Reader() {
    if (file_ >= 0) {
      H5Fclose(file_);
    }
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  bool ok() const { return file_ >= 0; }
  hid_t file() const { return file_; }

  std::vector<hsize_t> dims(const std::string& dataset) const {
    hid_t id = H5Dopen2(file_, dataset.c_str(), H5P_DEFAULT);
    if (id < 0) {
      return {};
    }
    hid_t space = H5Dget_space(id);
    std::vector<hsize_t> result(static_cast<size_t>(H5Sget_simple_extent_ndims(space)));
    H5Sget_simple_extent_dims(space, result.data(), nullptr);
    H5Sclose(space);
    H5Dclose(id);
    return result;
  }

  template <typename T>
  std::vector<T> values(const std::string& dataset, hid_t native_type) const {
    std::vector<T> result;
    hid_t id = H5Dopen2(file_, dataset.c_str(), H5P_DEFAULT);
    if (id < 0) {
      return result;
    }
    hid_t space = H5Dget_space(id);
    result.resize(static_cast<size_t>(H5Sget_simple_extent_npoints(space)));
    if (!result.empty() &&
        H5Dread(id, native_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, result.data()) < 0) {
      result.clear();
    }
    H5Sclose(space);
    H5Dclose(id);
    return result;
  }

  // Stored type of a dataset: class and size in bytes.
  std::pair<H5T_class_t, size_t> stored_type(const std::string& dataset) const {
    hid_t id = H5Dopen2(file_, dataset.c_str(), H5P_DEFAULT);
    if (id < 0) {
      return {H5T_NO_CLASS, 0};
    }
    hid_t type = H5Dget_type(id);
    std::pair<H5T_class_t, size_t> result{H5Tget_class(type), H5Tget_size(type)};
    H5Tclose(type);
    H5Dclose(id);
    return result;
  }

  std::vector<hsize_t> chunk(const std::string& dataset) const {
    hid_t id = H5Dopen2(file_, dataset.c_str(), H5P_DEFAULT);
    if (id < 0) {
      return {};
    }
    hid_t creation = H5Dget_create_plist(id);
    std::vector<hsize_t> result(8);
    int rank = H5Pget_chunk(creation, static_cast<int>(result.size()), result.data());
    result.resize(rank > 0 ? static_cast<size_t>(rank) : 0);
    H5Pclose(creation);
    H5Dclose(id);
    return result;
  }

  bool has_attribute(const std::string& object, const std::string& name) const {
    return H5Aexists_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT) > 0;
  }

  int attribute_count(const std::string& object) const {
    H5O_info_t info;
    if (H5Oget_info_by_name(file_, object.c_str(), &info, H5P_DEFAULT) < 0) {
      return -1;
    }
    return static_cast<int>(info.num_attrs);
  }

  // Numeric scalar attribute converted to T; `fallback` when missing or not numeric.
  template <typename T>
  T scalar(const std::string& object, const std::string& name, hid_t native_type,
           T fallback) const {
    hid_t attribute = H5Aopen_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT,
                                      H5P_DEFAULT);
    if (attribute < 0) {
      return fallback;
    }
    T value = fallback;
    if (H5Aread(attribute, native_type, &value) < 0) {
      value = fallback;
    }
    H5Aclose(attribute);
    return value;
  }

  // Every string of a (scalar or 1-D) variable-length string attribute.
  std::vector<std::string> strings(const std::string& object, const std::string& name) const {
    std::vector<std::string> result;
    hid_t attribute = H5Aopen_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT,
                                      H5P_DEFAULT);
    if (attribute < 0) {
      return result;
    }
    hid_t stored = H5Aget_type(attribute);
    hid_t space = H5Aget_space(attribute);
    const bool is_variable = H5Tis_variable_str(stored) > 0;
    const auto count = static_cast<size_t>(H5Sget_simple_extent_npoints(space));
    if (is_variable && H5Tget_cset(stored) == H5T_CSET_UTF8) {
      hid_t memory = H5Tcopy(H5T_C_S1);
      H5Tset_size(memory, H5T_VARIABLE);
      H5Tset_cset(memory, H5T_CSET_UTF8);
      std::vector<char*> texts(count, nullptr);
      if (H5Aread(attribute, memory, texts.data()) >= 0) {
        for (char* text : texts) {
          result.emplace_back(text != nullptr ? text : "");
        }
        H5Dvlen_reclaim(memory, space, H5P_DEFAULT, texts.data());
      }
      H5Tclose(memory);
    }
    H5Sclose(space);
    H5Tclose(stored);
    H5Aclose(attribute);
    return result;
  }

  std::string string(const std::string& object, const std::string& name) const {
    std::vector<std::string> all = strings(object, name);
    return all.size() == 1 ? all[0] : "<missing or not one UTF-8 string>";
  }

 private:
  hid_t file_;
};

// ---- Values written by the series tests -----------------------------------------------------

// Element i of `row` written by `rank` (rank = 0 for replicated series); exact in every type.
template <typename T>
T expected_value(int rank, int64_t row, int64_t i) {
  return static_cast<T>(1000 * rank + 10 * row + i) + (std::is_floating_point_v<T> ? T(0.5) : T(0));
}

template <typename T>
struct TypeOf;
template <>
struct TypeOf<float> {
  static constexpr TraceType trace = TraceType::float32;
  static hid_t native() { return H5T_NATIVE_FLOAT; }
  static constexpr H5T_class_t h5_class = H5T_FLOAT;
};
template <>
struct TypeOf<double> {
  static constexpr TraceType trace = TraceType::float64;
  static hid_t native() { return H5T_NATIVE_DOUBLE; }
  static constexpr H5T_class_t h5_class = H5T_FLOAT;
};
template <>
struct TypeOf<int32_t> {
  static constexpr TraceType trace = TraceType::int32;
  static hid_t native() { return H5T_NATIVE_INT32; }
  static constexpr H5T_class_t h5_class = H5T_INTEGER;
};
template <>
struct TypeOf<int64_t> {
  static constexpr TraceType trace = TraceType::int64;
  static hid_t native() { return H5T_NATIVE_INT64; }
  static constexpr H5T_class_t h5_class = H5T_INTEGER;
};

// Appends `rows` rows of [inner...] to series `name` (all ranks), checks rows() as it goes.
template <typename T>
void write_series(TraceWriter& trace, const std::string& name, std::vector<int64_t> inner,
                  TraceLayout layout, int64_t rows, int64_t chunk_rows = 64) {
  int64_t elements = 1;
  for (int64_t extent : inner) {
    elements *= extent;
  }
  const int writer_rank = layout == TraceLayout::per_rank ? world_rank() : 0;
  TraceSeries series =
      trace.series(name, TypeOf<T>::trace, inner, layout, "", "", chunk_rows);
  EXPECT_EQ(series.rows(), 0);
  std::vector<T> row(static_cast<size_t>(elements));  // [prod(inner)]
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < elements; ++i) {
      row[static_cast<size_t>(i)] = expected_value<T>(writer_rank, r, i);
    }
    series.append(row.data());
    EXPECT_EQ(series.rows(), r + 1);
  }
}

// Checks dims and every value of a series written by write_series (rank 0 only).
template <typename T>
void check_series(const Reader& reader, const std::string& name, std::vector<int64_t> inner,
                  TraceLayout layout, int64_t rows) {
  const int ranks = layout == TraceLayout::per_rank ? world_size() : 1;
  std::vector<hsize_t> expected_dims = {static_cast<hsize_t>(rows)};
  if (layout == TraceLayout::per_rank) {
    expected_dims.push_back(static_cast<hsize_t>(ranks));
  }
  int64_t elements = 1;
  for (int64_t extent : inner) {
    expected_dims.push_back(static_cast<hsize_t>(extent));
    elements *= extent;
  }
  ASSERT_EQ(reader.dims(name), expected_dims) << name;
  const auto [h5_class, bytes] = reader.stored_type(name);
  EXPECT_EQ(h5_class, TypeOf<T>::h5_class) << name;
  EXPECT_EQ(bytes, sizeof(T)) << name;
  const std::vector<T> values = reader.values<T>(name, TypeOf<T>::native());
  ASSERT_EQ(values.size(), static_cast<size_t>(rows * ranks * elements)) << name;
  for (int64_t r = 0; r < rows; ++r) {
    for (int p = 0; p < ranks; ++p) {
      for (int64_t i = 0; i < elements; ++i) {
        const size_t at = static_cast<size_t>((r * ranks + p) * elements + i);
        ASSERT_EQ(values[at], expected_value<T>(p, r, i))
            << name << " row " << r << " rank " << p << " element " << i;
      }
    }
  }
}

template <typename T>
void round_trip_each_layout(const TempDir& dir, const std::string& file_name) {
  const std::string path = dir.file(file_name);
  {
    TraceWriter trace(path, MPI_COMM_WORLD, test_run_info());
    write_series<T>(trace, "/replicated/matrix", {2, 3}, TraceLayout::replicated, 3);
    write_series<T>(trace, "per_rank/vector", {4}, TraceLayout::per_rank, 5);
    write_series<T>(trace, "/replicated/scalar", {}, TraceLayout::replicated, 2);
    write_series<T>(trace, "/per_rank/scalar", {}, TraceLayout::per_rank, 2);
    trace.close();
  }
  if (world_rank() == 0) {
    Reader reader(path);
    ASSERT_TRUE(reader.ok());
    check_series<T>(reader, "/replicated/matrix", {2, 3}, TraceLayout::replicated, 3);
    check_series<T>(reader, "/per_rank/vector", {4}, TraceLayout::per_rank, 5);
    check_series<T>(reader, "/replicated/scalar", {}, TraceLayout::replicated, 2);
    check_series<T>(reader, "/per_rank/scalar", {}, TraceLayout::per_rank, 2);
  }
}

// ---- Tests -----------------------------------------------------------------------------------

TEST(TraceWriter, Float32SeriesRoundTripInBothLayouts) {
  TempDir dir;
  round_trip_each_layout<float>(dir, "f32.h5");
}

TEST(TraceWriter, Float64SeriesRoundTripInBothLayouts) {
  TempDir dir;
  round_trip_each_layout<double>(dir, "f64.h5");
}

TEST(TraceWriter, Int32SeriesRoundTripInBothLayouts) {
  TempDir dir;
  round_trip_each_layout<int32_t>(dir, "i32.h5");
}

TEST(TraceWriter, Int64SeriesRoundTripInBothLayouts) {
  TempDir dir;
  round_trip_each_layout<int64_t>(dir, "i64.h5");
}

TEST(TraceWriter, AppendsExtendPastSeveralChunks) {
  TempDir dir;
  const std::string path = dir.file("chunks.h5");
  {
    TraceWriter trace(path, MPI_COMM_WORLD, test_run_info(), /*flush_every=*/3);
    write_series<float>(trace, "/steps/loss", {}, TraceLayout::replicated, 11, /*chunk_rows=*/4);
    write_series<int32_t>(trace, "/steps/counts", {3}, TraceLayout::per_rank, 9,
                          /*chunk_rows=*/2);
  }  // destructor closes
  if (world_rank() == 0) {
    Reader reader(path);
    ASSERT_TRUE(reader.ok());
    EXPECT_EQ(reader.chunk("/steps/loss"), (std::vector<hsize_t>{4}));
    EXPECT_EQ(reader.chunk("/steps/counts"),
              (std::vector<hsize_t>{2, static_cast<hsize_t>(world_size()), 3}));
    check_series<float>(reader, "/steps/loss", {}, TraceLayout::replicated, 11);
    check_series<int32_t>(reader, "/steps/counts", {3}, TraceLayout::per_rank, 9);
  }
}

TEST(TraceWriter, RootAttributesAndConfigAreWritten) {
  TempDir dir;
  const std::string path = dir.file("attributes.h5");
  const TraceRunInfo info = test_run_info();
  { TraceWriter trace(path, MPI_COMM_WORLD, info); }
  if (world_rank() != 0) {
    return;
  }
  Reader reader(path);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader.scalar<int>("/", "schema_version", H5T_NATIVE_INT, -1), kTraceSchemaVersion);
  EXPECT_EQ(reader.scalar<int>("/", "world_size", H5T_NATIVE_INT, -1), world_size());
  EXPECT_FALSE(reader.string("/", "moebench_version").empty());
  EXPECT_EQ(reader.string("/", "command"), info.command);
  EXPECT_EQ(reader.string("/", "command_line"), info.command_line);
  EXPECT_FALSE(reader.string("/", "git_revision").empty());
  EXPECT_TRUE(std::regex_match(reader.string("/", "start_time"),
                               std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")))
      << reader.string("/", "start_time");

  std::array<char, 256> host{};
  ASSERT_EQ(gethostname(host.data(), host.size() - 1), 0);
  const std::vector<std::string> hostnames = reader.strings("/", "hostnames");
  ASSERT_EQ(hostnames.size(), static_cast<size_t>(world_size()));
  EXPECT_EQ(hostnames[0], std::string(host.data()));

  EXPECT_EQ(reader.attribute_count("/config"), static_cast<int>(info.options.size()));
  for (const auto& [name, value] : info.options) {
    EXPECT_EQ(reader.string("/config", name), value) << name;
  }
}

TEST(TraceWriter, SeriesCarryUnitsAndDescriptionOnlyWhenGiven) {
  TempDir dir;
  const std::string path = dir.file("units.h5");
  {
    TraceWriter trace(path, MPI_COMM_WORLD, test_run_info());
    trace.series("/timing/step", TraceType::float64, {}, TraceLayout::per_rank, "s",
                 "wall time of one step");
    trace.series("/timing/bare", TraceType::float64, {}, TraceLayout::replicated);
  }
  if (world_rank() == 0) {
    Reader reader(path);
    ASSERT_TRUE(reader.ok());
    EXPECT_EQ(reader.string("/timing/step", "units"), "s");
    EXPECT_EQ(reader.string("/timing/step", "description"), "wall time of one step");
    EXPECT_FALSE(reader.has_attribute("/timing/bare", "units"));
    EXPECT_FALSE(reader.has_attribute("/timing/bare", "description"));
    EXPECT_EQ(reader.dims("/timing/step"), (std::vector<hsize_t>{0, static_cast<hsize_t>(world_size())}));
  }
}

TEST(TraceWriter, SetAttributeCreatesGroupsAndOverwrites) {
  TempDir dir;
  const std::string path = dir.file("set_attribute.h5");
  {
    TraceWriter trace(path, MPI_COMM_WORLD, test_run_info());
    trace.set_attribute("/bench/capacity/run_1", "strategy", std::string("dropless"));
    trace.set_attribute("bench/capacity/run_1/", "capacity_factor", 1.25);
    trace.set_attribute("/bench/capacity/run_1", "tokens", int64_t{1} << 40);
    trace.set_attribute("/bench/capacity/run_1", "strategy", std::string("capped"));  // overwrite
    trace.set_attribute("/", "note", std::string("root attribute"));
    trace.series("/bench/capacity/drops", TraceType::int64, {}, TraceLayout::replicated);
    trace.set_attribute("/bench/capacity/drops", "units", std::string("tokens"));
    trace.set_attribute("/config", "extra", int64_t{7});
  }
  if (world_rank() == 0) {
    Reader reader(path);
    ASSERT_TRUE(reader.ok());
    EXPECT_EQ(reader.string("/bench/capacity/run_1", "strategy"), "capped");
    EXPECT_EQ(reader.scalar<double>("/bench/capacity/run_1", "capacity_factor",
                                    H5T_NATIVE_DOUBLE, 0.0),
              1.25);
    EXPECT_EQ(reader.scalar<int64_t>("/bench/capacity/run_1", "tokens", H5T_NATIVE_INT64, 0),
              int64_t{1} << 40);
    EXPECT_EQ(reader.attribute_count("/bench/capacity/run_1"), 3);
    EXPECT_EQ(reader.string("/", "note"), "root attribute");
    EXPECT_EQ(reader.string("/bench/capacity/drops", "units"), "tokens");
    EXPECT_EQ(reader.scalar<int64_t>("/config", "extra", H5T_NATIVE_INT64, 0), 7);
  }
}

TEST(TraceWriter, MissingDirectoryIsUsageErrorNamingPathAndFix) {
  TempDir dir;
  const std::string path = dir.file("no-such-dir/trace.h5");
  try {
    TraceWriter trace(path, MPI_COMM_WORLD, test_run_info());
    FAIL() << "expected UsageError";
  } catch (const UsageError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'" + path + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
    EXPECT_NE(message.find("--out"), std::string::npos) << message;
  }
}

TEST(TraceWriter, DirectoryAsPathIsUsageError) {
  TempDir dir;
  try {
    TraceWriter trace(dir.path(), MPI_COMM_WORLD, test_run_info());
    FAIL() << "expected UsageError";
  } catch (const UsageError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'" + dir.path() + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("is a directory"), std::string::npos) << message;
  }
}

TEST(TraceWriter, FileAsParentDirectoryIsUsageError) {
  TempDir dir;
  const std::string plain_file = dir.file("plain.txt");
  if (world_rank() == 0) {
    std::ofstream(plain_file) << "not a directory\n";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string path = plain_file + "/trace.h5";
  try {
    TraceWriter trace(path, MPI_COMM_WORLD, test_run_info());
    FAIL() << "expected UsageError";
  } catch (const UsageError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'" + path + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("is not a directory"), std::string::npos) << message;
  }
}

TEST(TraceWriter, UnwritableDirectoryIsUsageError) {
  if (geteuid() == 0) {
    GTEST_SKIP() << "root ignores directory permissions";
  }
  TempDir dir;
  const std::string locked = dir.file("locked");
  if (world_rank() == 0) {
    ASSERT_EQ(mkdir(locked.c_str(), 0500), 0);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string path = locked + "/trace.h5";
  try {
    TraceWriter trace(path, MPI_COMM_WORLD, test_run_info());
    FAIL() << "expected UsageError";
  } catch (const UsageError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'" + path + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("not writable"), std::string::npos) << message;
  }
  if (world_rank() == 0) {
    chmod(locked.c_str(), 0700);
  }
}

TEST(TraceWriter, ExistingFileIsTruncated) {
  TempDir dir;
  const std::string path = dir.file("old.h5");
  if (world_rank() == 0) {
    std::ofstream(path) << "an old file that is not HDF5\n";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  {
    TraceWriter trace(path, MPI_COMM_WORLD, test_run_info());
    write_series<int64_t>(trace, "/x", {2}, TraceLayout::replicated, 1);
  }
  if (world_rank() == 0) {
    Reader reader(path);
    ASSERT_TRUE(reader.ok());
    check_series<int64_t>(reader, "/x", {2}, TraceLayout::replicated, 1);
  }
}

TEST(TraceWriter, FileIsReadableAfterFlushWhileStillOpen) {
  TempDir dir;
  const std::string path = dir.file("flush.h5");
  TraceWriter trace(path, MPI_COMM_WORLD, test_run_info(), /*flush_every=*/0);
  write_series<double>(trace, "/train/loss", {2}, TraceLayout::replicated, 3, /*chunk_rows=*/2);
  write_series<int32_t>(trace, "/routing/counts", {4}, TraceLayout::per_rank, 3);
  EXPECT_NO_THROW(trace.flush());
  if (world_rank() == 0) {
    Reader reader(path);
    ASSERT_TRUE(reader.ok());
    check_series<double>(reader, "/train/loss", {2}, TraceLayout::replicated, 3);
    check_series<int32_t>(reader, "/routing/counts", {4}, TraceLayout::per_rank, 3);
    EXPECT_EQ(reader.string("/", "command"), "capacity");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_NO_THROW(trace.close());
}

TEST(TraceWriter, FlushEveryMakesAppendsVisibleWithoutExplicitFlush) {
  TempDir dir;
  const std::string path = dir.file("flush_every.h5");
  TraceWriter trace(path, MPI_COMM_WORLD, test_run_info(), /*flush_every=*/2);
  TraceSeries series = trace.series("/eval/loss", TraceType::float32, {}, TraceLayout::replicated);
  const float values[2] = {1.5f, 2.5f};
  series.append(&values[0]);
  series.append(&values[1]);  // second append: automatic flush
  if (world_rank() == 0) {
    Reader reader(path);
    ASSERT_TRUE(reader.ok());
    EXPECT_EQ(reader.dims("/eval/loss"), (std::vector<hsize_t>{2}));
    EXPECT_EQ(reader.values<float>("/eval/loss", H5T_NATIVE_FLOAT),
              (std::vector<float>{1.5f, 2.5f}));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(TraceWriter, CloseIsIdempotentAndUseAfterCloseThrows) {
  TempDir dir;
  TraceWriter trace(dir.file("close.h5"), MPI_COMM_WORLD, test_run_info());
  TraceSeries series = trace.series("/x", TraceType::int32, {}, TraceLayout::replicated);
  const int32_t value = 4;
  series.append(&value);
  EXPECT_NO_THROW(trace.close());
  EXPECT_NO_THROW(trace.close());
  EXPECT_EQ(series.rows(), 1);
  EXPECT_EQ(trace.path(), dir.file("close.h5"));
  EXPECT_THROW(series.append(&value), Error);
  EXPECT_THROW(trace.flush(), Error);
  EXPECT_THROW(trace.set_attribute("/", "late", int64_t{1}), Error);
}

TEST(TraceSeries, DefaultConstructedHasNoRowsAndCannotAppend) {
  TraceSeries series;
  const int32_t value = 1;
  EXPECT_EQ(series.rows(), 0);
  EXPECT_THROW(series.append(&value), Error);
}

}  // namespace
}  // namespace moebench
