// The trace on P ranks (CTest runs this under mpirun with 1, 2 and 4): every rank writes its
// own slice of per-rank series, then rank 0 reopens the closed file with the default (sec2)
// driver and checks every element, the shapes [n, P, ...] and the root attributes.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "moebench/trace.hpp"

namespace moebench {
namespace {

struct World {
  int rank = 0;
  int size = 1;
  World() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
};

// Value that rank r writes at (row, element i): distinct for every (r, row, i), exact in float.
double f(int r, int64_t row, int64_t i) { return 10000.0 * r + 100.0 * static_cast<double>(row) + static_cast<double>(i); }

// A directory made once by rank 0 and broadcast, so all ranks name the same file.
std::string make_shared_temp_dir(const World& world) {
  std::array<char, 4096> name{};
  if (world.rank == 0) {
    const std::string pattern =
        (std::filesystem::temp_directory_path() / "moebench-trace-mpi-XXXXXX").string();
    pattern.copy(name.data(), name.size() - 1);
    if (mkdtemp(name.data()) == nullptr) {
      name[0] = '\0';
    }
  }
  MPI_Bcast(name.data(), static_cast<int>(name.size()), MPI_CHAR, 0, MPI_COMM_WORLD);
  return name.data();
}

std::vector<hsize_t> dataset_dims(hid_t file, const char* name) {
  hid_t dataset = H5Dopen2(file, name, H5P_DEFAULT);
  if (dataset < 0) {
    return {};
  }
  hid_t space = H5Dget_space(dataset);
  std::vector<hsize_t> dims(static_cast<size_t>(H5Sget_simple_extent_ndims(space)));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  H5Sclose(space);
  H5Dclose(dataset);
  return dims;
}

// Whole dataset converted to double (HDF5 converts float32/int64 on read).
std::vector<double> dataset_values(hid_t file, const char* name, size_t count) {
  std::vector<double> values(count, -1.0);
  hid_t dataset = H5Dopen2(file, name, H5P_DEFAULT);
  if (dataset < 0 ||
      H5Dread(dataset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) {
    values.clear();
  }
  if (dataset >= 0) {
    H5Dclose(dataset);
  }
  return values;
}

TEST(TraceMpi, PerRankSeriesHoldEveryRanksValues) {
  const World world;
  const std::string dir = make_shared_temp_dir(world);
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/trace.h5";
  constexpr int64_t kRows = 7;   // more than one chunk of 3 rows
  constexpr int64_t kInner = 6;  // the float series is [n, P, 2, 3]

  TraceRunInfo info;
  info.command = "test";
  info.command_line = "test_trace_mpi";
  info.options = {{"ranks", std::to_string(world.size)}};
  {
    TraceWriter trace(path, MPI_COMM_WORLD, info, /*flush_every=*/2);
    TraceSeries matrix = trace.series("/comm/matrix", TraceType::float32, {2, 3},
                                      TraceLayout::per_rank, "bytes", "", /*chunk_rows=*/3);
    TraceSeries scalar = trace.series("/timing/rank_time", TraceType::int64, {},
                                      TraceLayout::per_rank, "ns", "", /*chunk_rows=*/3);
    TraceSeries step = trace.series("/timing/step", TraceType::int32, {},
                                    TraceLayout::replicated);
    std::vector<float> matrix_row(kInner);  // [2, 3]
    for (int64_t row = 0; row < kRows; ++row) {
      for (int64_t i = 0; i < kInner; ++i) {
        matrix_row[static_cast<size_t>(i)] = static_cast<float>(f(world.rank, row, i));
      }
      matrix.append(matrix_row.data());
      const auto scalar_value = static_cast<int64_t>(f(world.rank, row, 0));
      scalar.append(&scalar_value);
      const auto step_value = static_cast<int32_t>(row);
      step.append(&step_value);
    }
    EXPECT_EQ(matrix.rows(), kRows);
    trace.close();
  }
  MPI_Barrier(MPI_COMM_WORLD);

  if (world.rank == 0) {
    hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    const auto ranks = static_cast<hsize_t>(world.size);
    const auto rows = static_cast<hsize_t>(kRows);

    EXPECT_EQ(dataset_dims(file, "/comm/matrix"), (std::vector<hsize_t>{rows, ranks, 2, 3}));
    std::vector<double> matrix =
        dataset_values(file, "/comm/matrix", static_cast<size_t>(rows * ranks * kInner));
    ASSERT_EQ(matrix.size(), static_cast<size_t>(rows * ranks * kInner));
    for (int64_t row = 0; row < kRows; ++row) {
      for (int r = 0; r < world.size; ++r) {
        for (int64_t i = 0; i < kInner; ++i) {
          const size_t at = static_cast<size_t>((row * world.size + r) * kInner + i);
          ASSERT_EQ(matrix[at], f(r, row, i)) << "row " << row << " rank " << r << " i " << i;
        }
      }
    }

    EXPECT_EQ(dataset_dims(file, "/timing/rank_time"), (std::vector<hsize_t>{rows, ranks}));
    std::vector<double> scalar =
        dataset_values(file, "/timing/rank_time", static_cast<size_t>(rows * ranks));
    ASSERT_EQ(scalar.size(), static_cast<size_t>(rows * ranks));
    for (int64_t row = 0; row < kRows; ++row) {
      for (int r = 0; r < world.size; ++r) {
        EXPECT_EQ(scalar[static_cast<size_t>(row * world.size + r)], f(r, row, 0));
      }
    }

    EXPECT_EQ(dataset_dims(file, "/timing/step"), (std::vector<hsize_t>{rows}));
    std::vector<double> step = dataset_values(file, "/timing/step", static_cast<size_t>(rows));
    ASSERT_EQ(step.size(), static_cast<size_t>(rows));
    for (int64_t row = 0; row < kRows; ++row) {
      EXPECT_EQ(step[static_cast<size_t>(row)], static_cast<double>(row));
    }

    int world_size = -1;
    hid_t size_attribute = H5Aopen(file, "world_size", H5P_DEFAULT);
    ASSERT_GE(size_attribute, 0);
    EXPECT_GE(H5Aread(size_attribute, H5T_NATIVE_INT, &world_size), 0);
    H5Aclose(size_attribute);
    EXPECT_EQ(world_size, world.size);

    hid_t hostnames = H5Aopen(file, "hostnames", H5P_DEFAULT);
    ASSERT_GE(hostnames, 0);
    hid_t space = H5Aget_space(hostnames);
    EXPECT_EQ(H5Sget_simple_extent_ndims(space), 1);
    EXPECT_EQ(H5Sget_simple_extent_npoints(space), world.size);
    hid_t text = H5Tcopy(H5T_C_S1);
    H5Tset_size(text, H5T_VARIABLE);
    H5Tset_cset(text, H5T_CSET_UTF8);  // HDF5 does not convert between ASCII and UTF-8
    std::vector<char*> names(static_cast<size_t>(world.size), nullptr);
    EXPECT_GE(H5Aread(hostnames, text, names.data()), 0);
    for (char* name : names) {
      ASSERT_NE(name, nullptr);
      EXPECT_GT(std::string(name).size(), 0u);
    }
    H5Dvlen_reclaim(text, space, H5P_DEFAULT, names.data());
    H5Tclose(text);
    H5Sclose(space);
    H5Aclose(hostnames);
    H5Fclose(file);

    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace moebench
