// What the trace writer learns before it opens the file: whether the path is usable (checked on
// rank 0, verdict broadcast), the start time and every rank's hostname.
#include <unistd.h>

#include <array>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <system_error>

#include "moebench/check.hpp"
#include "trace_internal.hpp"

namespace moebench::trace_detail {

namespace {

// The verdict for `path` on this rank's view of the file system: "" when usable.
std::string inspect_path(const std::string& path) {
  namespace fs = std::filesystem;
  const std::string prefix = "cannot write trace '" + path + "': ";
  if (path.empty()) {
    return "cannot write trace: the path is empty (pass --out FILE)";
  }
  std::error_code error;
  const fs::path file(path);
  if (fs::is_directory(file, error)) {
    return prefix + "it is a directory (pass a file name, e.g. --out " +
           (file / "trace.h5").string() + ")";
  }
  fs::path parent = file.parent_path();
  if (parent.empty()) {
    parent = ".";
  }
  const std::string directory = parent.string();
  if (!fs::exists(parent, error)) {
    return prefix + "directory '" + directory +
           "' does not exist (create it or pass another --out)";
  }
  if (!fs::is_directory(parent, error)) {
    return prefix + "'" + directory + "' is not a directory (pass another --out)";
  }
  if (::access(directory.c_str(), W_OK | X_OK) != 0) {
    return prefix + "directory '" + directory +
           "' is not writable (fix its permissions or pass another --out)";
  }
  if (fs::exists(file, error) && ::access(path.c_str(), W_OK) != 0) {
    return prefix + "the file exists and is not writable (remove it or pass another --out)";
  }
  return "";
}

}  // namespace

void broadcast_string(std::string& value, MPI_Comm comm) {
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  int length = rank == 0 ? static_cast<int>(value.size()) : 0;
  MOEBENCH_MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT, 0, comm));
  value.resize(static_cast<size_t>(length));
  if (length > 0) {
    MOEBENCH_MPI_CHECK(MPI_Bcast(value.data(), length, MPI_CHAR, 0, comm));
  }
}

std::string check_trace_path(const std::string& path, MPI_Comm comm) {
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::string verdict = rank == 0 ? inspect_path(path) : std::string();
  broadcast_string(verdict, comm);
  return verdict;
}

std::string broadcast_start_time(MPI_Comm comm) {
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::string text;
  if (rank == 0) {
    const std::time_t now = std::time(nullptr);
    std::tm utc{};
    MOEBENCH_CHECK(gmtime_r(&now, &utc) != nullptr, "gmtime_r failed");
    std::array<char, 32> buffer{};
    const size_t length = std::strftime(buffer.data(), buffer.size(), "%Y-%m-%dT%H:%M:%SZ", &utc);
    MOEBENCH_CHECK(length > 0, "strftime failed");
    text.assign(buffer.data(), length);
  }
  broadcast_string(text, comm);
  return text;
}

std::vector<std::string> gather_hostnames(MPI_Comm comm) {
  constexpr int kNameBytes = 256;  // > HOST_NAME_MAX (64 on Linux), always NUL-terminated
  int size = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &size));
  std::array<char, kNameBytes> local{};
  MOEBENCH_CHECK(gethostname(local.data(), kNameBytes - 1) == 0, "gethostname failed");
  std::vector<char> all(static_cast<size_t>(size) * kNameBytes);  // [P, kNameBytes]
  MOEBENCH_MPI_CHECK(
      MPI_Allgather(local.data(), kNameBytes, MPI_CHAR, all.data(), kNameBytes, MPI_CHAR, comm));
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) {
    const char* name = all.data() + static_cast<size_t>(r) * kNameBytes;
    names.emplace_back(name, strnlen(name, kNameBytes));
  }
  return names;
}

}  // namespace moebench::trace_detail
