// Checkpoints (see checkpoint.hpp): the two file formats, the collective save (everything into
// PATH.partial/, then swapped into place) and the collective load (every check on every rank,
// one agreement, then the buffers are filled).
//
// rank_<r>.bin, little-endian:
//    0  char[8]  magic "MOECKPT\0"
//    8  uint32   format version (1)
//   12  uint32   rank r
//   16  uint32   ranks P
//   20  uint32   buffer count N
//   24  int64    step
//   32  N times: uint32 name length, name bytes, uint64 float count     (the buffer table)
//       N times: float count x float32                                   (the data)
//  end  uint64   FNV-1a 64 of every byte before it
//
// meta, text lines ('\n'):
//   moebench-checkpoint 1
//   ranks P
//   step S
//   rank r BYTES CHECKSUM     P lines: each rank file's size and trailer (16 hex digits)
//   identity TEXT             one per '\n'-separated piece of the identity (empty ones kept)
//   checksum CHECKSUM         FNV-1a 64 of every byte before this line
#include "moebench/checkpoint.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/little_endian.hpp"
#include "moebench/cli.hpp"

namespace moebench {
namespace {

static_assert(std::endian::native == std::endian::little,
              "checkpoint files are little-endian and written straight from memory; "
              "add byte swapping for this host");

constexpr char kMagic[8] = {'M', 'O', 'E', 'C', 'K', 'P', 'T', '\0'};
constexpr uint32_t kVersion = 1;
constexpr std::string_view kMetaFormat = "moebench-checkpoint";
constexpr size_t kFixedHeaderBytes = 32;
constexpr size_t kTrailerBytes = 8;
constexpr const char* kTryAnother = "resume from another checkpoint or start a fresh run";

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash = 14695981039346656037ull) {
  const auto* in = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    hash ^= in[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string quoted(const std::string& text) { return "'" + text + "'"; }

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016" PRIx64, value);
  return text;
}


// Whole-string unsigned number in `base`; false for anything else.
bool parse_number(std::string_view text, uint64_t& value, int base = 10) {
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value, base);
  return !text.empty() && error == std::errc() && stop == end;
}

// Splits at every `separator`, keeping empty pieces ("a\n" -> {"a", ""}), so joining the
// pieces with it restores the text.
std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> pieces;
  size_t start = 0;
  for (size_t end = text.find(separator); end != std::string_view::npos;
       end = text.find(separator, start)) {
    pieces.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  pieces.push_back(text.substr(start));
  return pieces;
}

// Runs `step` on this rank; if it throws UsageError on any rank, every rank throws the lowest
// failing rank's message, so no rank is left waiting in the next collective.
template <class Step>
void run_agreed(MPI_Comm comm, Step&& step) {
  std::string error;
  bool ok = true;
  try {
    step();
  } catch (const UsageError& e) {
    ok = false;
    error = e.what();
  }
  cli::agree_or_throw(comm, ok, error);
}

// ---- paths and directories ------------------------------------------------------------------

struct Paths {
  std::string dir;       // PATH, without a trailing '/'
  std::string partial;   // PATH.partial: the save in progress
  std::string previous;  // PATH.previous: the old checkpoint, only while a non-atomic swap runs
  std::string parent;    // the directory that holds them
  std::string meta() const { return dir + "/meta"; }
  std::string rank_file(int rank) const { return dir + "/rank_" + std::to_string(rank) + ".bin"; }
};

Paths checkpoint_paths(const std::string& path) {
  if (path.empty()) throw UsageError("the checkpoint path is empty; pass a directory name");
  std::filesystem::path dir = std::filesystem::path(path).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "ckpt/" -> "ckpt"
  const std::string name = dir.filename().string();
  if (name.empty() || name == "." || name == "..") {
    throw UsageError("the checkpoint path " + quoted(path) +
                     " names no directory of its own; pass e.g. " +
                     quoted((std::filesystem::path(path) / "checkpoint").lexically_normal().string()));
  }
  Paths paths;
  paths.dir = dir.string();
  paths.partial = paths.dir + ".partial";
  paths.previous = paths.dir + ".previous";
  paths.parent = dir.parent_path().empty() ? "." : dir.parent_path().string();
  return paths;
}

enum class PathKind { missing, directory, other };

PathKind path_kind(const std::string& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    const int error = errno;
    if (error == ENOENT) return PathKind::missing;
    throw UsageError("cannot inspect " + quoted(path) + ": " + std::strerror(error) +
                     " (check the permissions, or pass another checkpoint path)");
  }
  return S_ISDIR(info.st_mode) ? PathKind::directory : PathKind::other;
}

// "meta" or "rank_<digits>.bin": the only names a save writes, so the only ones it deletes.
bool is_checkpoint_entry(const std::string& name) {
  if (name == "meta") return true;
  constexpr std::string_view prefix = "rank_", suffix = ".bin";
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) ||
      !name.ends_with(suffix)) {
    return false;
  }
  for (size_t i = prefix.size(); i < name.size() - suffix.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return true;
}

// The entries of directory `dir` when it holds nothing but checkpoint files (none at all
// included). UsageError otherwise: a save replaces such a directory, and must not delete
// anything it did not write.
std::vector<std::string> checkpoint_entries(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code error;
  for (std::filesystem::directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!is_checkpoint_entry(name)) {
      throw UsageError(quoted(dir) + " exists and is not a moebench checkpoint (it holds " +
                       quoted(name) + "); pass a new checkpoint path, or remove " + quoted(dir) +
                       " yourself if nothing in it is needed");
    }
    names.push_back(name);
  }
  if (error) {
    throw UsageError("cannot list " + quoted(dir) + ": " + error.message() +
                     " (check the permissions, or pass another checkpoint path)");
  }
  return names;
}

void remove_checkpoint_dir(const std::string& dir) {
  for (const std::string& name : checkpoint_entries(dir)) {
    const std::string file = dir + "/" + name;
    if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
      const int error = errno;
      throw UsageError("cannot remove " + quoted(file) + ": " + std::strerror(error) +
                       " (check the permissions)");
    }
  }
  if (::rmdir(dir.c_str()) != 0) {
    const int error = errno;
    throw UsageError("cannot remove directory " + quoted(dir) + ": " + std::strerror(error) +
                     " (check the permissions)");
  }
}

// fsync of a directory, so the renames and new entries in it survive a crash of the machine.
void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    throw UsageError("cannot open directory " + quoted(dir) + ": " + std::strerror(error));
  }
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);  // read-only descriptor: nothing is lost if close reports an error
  // EINVAL: the filesystem cannot sync directories (it orders metadata itself).
  if (rc != 0 && error != EINVAL) {
    throw UsageError("cannot sync directory " + quoted(dir) + ": " + std::strerror(error));
  }
}

// Reads the whole file; false with `error` = errno (ENOENT when it is missing) on failure.
bool read_whole_file(const std::string& path, std::vector<unsigned char>& bytes, int& error) {
  bytes.clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = errno;
    return false;
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    error = errno;
    ::close(fd);
    return false;
  }
  bytes.resize(static_cast<size_t>(info.st_size));
  size_t done = 0;
  for (;;) {
    if (done == bytes.size()) bytes.resize(bytes.size() + 4096);  // the file may have grown
    const ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (got < 0) {
      if (errno == EINTR) continue;
      error = errno;
      ::close(fd);
      return false;
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  bytes.resize(done);
  ::close(fd);  // read-only descriptor: everything has been read
  return true;
}

// ---- writing --------------------------------------------------------------------------------

// A new file written front to back, with a running FNV-1a 64 and size of what went in.
// close() fsyncs it. Any failure: UsageError with the path and errno's text, file removed.
class OutputFile {
 public:
  OutputFile(std::string path, std::string missing_hint)
      : path_(std::move(path)), missing_hint_(std::move(missing_hint)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(errno);
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(path_.c_str());  // never leave a half-written file
    }
  }

  void write(const void* data, size_t bytes) {
    const auto* in = static_cast<const unsigned char*>(data);
    hash_ = fnv1a64(in, bytes, hash_);
    size_ += bytes;
    while (bytes > 0) {
      const ssize_t wrote = ::write(fd_, in, bytes);
      if (wrote < 0) {
        if (errno == EINTR) continue;
        fail(errno);
      }
      in += wrote;
      bytes -= static_cast<size_t>(wrote);
    }
  }

  void close() {
    if (::fsync(fd_) != 0) fail(errno);
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
      const int error = errno;
      ::unlink(path_.c_str());
      fail(error);
    }
  }

  uint64_t hash() const { return hash_; }
  uint64_t size() const { return size_; }

 private:
  [[noreturn]] void fail(int error) const {
    throw UsageError("cannot write checkpoint file " + quoted(path_) + ": " + std::strerror(error) +
                     (error == ENOENT ? " " + missing_hint_
                                      : " (check the free space and permissions, or pass "
                                        "another checkpoint path)"));
  }

  std::string path_, missing_hint_;
  int fd_ = -1;
  uint64_t hash_ = fnv1a64(nullptr, 0);
  uint64_t size_ = 0;
};

// Rank 0, before any rank writes: checks that PATH may be replaced, clears what an interrupted
// save left, creates PATH.partial/.
void prepare_partial(const Paths& paths) {
  const PathKind target = path_kind(paths.dir);
  if (target == PathKind::other) {
    throw UsageError(quoted(paths.dir) + " exists and is not a checkpoint directory; pass a new "
                     "checkpoint path");
  }
  if (target == PathKind::directory) checkpoint_entries(paths.dir);  // refuses foreign content
  for (const std::string& leftover : {paths.partial, paths.previous}) {
    // PATH.partial: an interrupted save. PATH.previous while PATH exists: a finished swap
    // whose clean-up did not run. (Without PATH it is the only complete checkpoint: kept.)
    if (leftover == paths.previous && target == PathKind::missing) continue;
    const PathKind kind = path_kind(leftover);
    if (kind == PathKind::other) {
      throw UsageError(quoted(leftover) + " is in the way of the checkpoint " + quoted(paths.dir) +
                       " (it is not a directory a save left); remove it or pass another path");
    }
    if (kind == PathKind::directory) remove_checkpoint_dir(leftover);
  }
  if (::mkdir(paths.partial.c_str(), 0755) != 0) {
    const int error = errno;
    throw UsageError("cannot create checkpoint directory " + quoted(paths.partial) + ": " +
                     std::strerror(error) +
                     (error == ENOENT ? " (create the directory " + quoted(paths.parent) + " first)"
                                      : " (check the permissions, or pass another checkpoint path)"));
  }
}

// Writes this rank's file into PATH.partial/; returns its size and checksum.
void write_rank_file(const Paths& paths, int rank, int ranks, const CheckpointState& state,
                     uint64_t& bytes, uint64_t& checksum) {
  std::vector<unsigned char> header(kMagic, kMagic + sizeof kMagic);
  append_u32(header, kVersion);
  append_u32(header, static_cast<uint32_t>(rank));
  append_u32(header, static_cast<uint32_t>(ranks));
  append_u32(header, static_cast<uint32_t>(state.buffers.size()));
  append_u64(header, static_cast<uint64_t>(state.step));
  for (const auto& [name, buffer] : state.buffers) {
    append_u32(header, static_cast<uint32_t>(name.size()));
    header.insert(header.end(), name.begin(), name.end());
    append_u64(header, buffer->size());
  }
  OutputFile out(paths.partial + "/rank_" + std::to_string(rank) + ".bin",
                 "(the checkpoint path must be on a filesystem every rank shares)");
  out.write(header.data(), header.size());
  for (const auto& entry : state.buffers) {
    out.write(entry.second->data(), entry.second->size() * sizeof(float));
  }
  checksum = out.hash();
  std::vector<unsigned char> trailer;
  append_u64(trailer, checksum);
  out.write(trailer.data(), trailer.size());
  out.close();
  bytes = out.size();
}

std::string meta_text(int ranks, int64_t step, const std::vector<uint64_t>& files,
                      const std::string& identity) {
  std::string text = std::string(kMetaFormat) + " " + std::to_string(kVersion) + "\n";
  text += "ranks " + std::to_string(ranks) + "\nstep " + std::to_string(step) + "\n";
  for (int r = 0; r < ranks; ++r) {
    text += "rank " + std::to_string(r) + " " + std::to_string(files[2 * r]) + " " +
            hex64(files[2 * r + 1]) + "\n";
  }
  for (std::string_view line : split(identity, '\n')) {
    text += "identity ";
    text += line;
    text += "\n";
  }
  return text + "checksum " + hex64(fnv1a64(text.data(), text.size())) + "\n";
}

// Rank 0, after every rank file is written: the meta, then PATH.partial becomes PATH.
void install(const Paths& paths, const std::string& meta) {
  {
    OutputFile out(paths.partial + "/meta", "(the directory vanished during the save)");
    out.write(meta.data(), meta.size());
    out.close();
  }
  sync_directory(paths.partial);
  bool swapped = false;
  if (path_kind(paths.dir) == PathKind::directory) {
#ifdef RENAME_EXCHANGE
    // One atomic step: PATH is the new checkpoint, PATH.partial the old one.
    if (::renameat2(AT_FDCWD, paths.partial.c_str(), AT_FDCWD, paths.dir.c_str(),
                    RENAME_EXCHANGE) == 0) {
      swapped = true;
    } else if (const int error = errno; error != EINVAL && error != ENOSYS) {
      throw UsageError("cannot replace checkpoint " + quoted(paths.dir) + " by " +
                       quoted(paths.partial) + ": " + std::strerror(error));
    }
#endif
    // No exchange here: PATH -> PATH.previous, PATH.partial -> PATH. A crash between the two
    // leaves no PATH; load points the user to PATH.previous.
    if (!swapped && std::rename(paths.dir.c_str(), paths.previous.c_str()) != 0) {
      const int error = errno;
      throw UsageError("cannot move the previous checkpoint " + quoted(paths.dir) + " to " +
                       quoted(paths.previous) + ": " + std::strerror(error));
    }
  }
  if (!swapped && std::rename(paths.partial.c_str(), paths.dir.c_str()) != 0) {
    const int error = errno;
    throw UsageError("cannot rename " + quoted(paths.partial) + " to " + quoted(paths.dir) + ": " +
                     std::strerror(error));
  }
  sync_directory(paths.parent);
  // The new checkpoint is complete; the old one is only in the way now. Failing to remove it
  // is reported but not fatal (the next save clears it first).
  const std::string old = swapped ? paths.partial : paths.previous;
  try {
    if (path_kind(old) == PathKind::directory) remove_checkpoint_dir(old);
  } catch (const UsageError& error) {
    std::fprintf(stderr, "moebench: warning: checkpoint %s saved, but the previous one was not "
                 "removed: %s\n", quoted(paths.dir).c_str(), error.what());
  }
}

// Programming errors in the state (the same on every rank for the shared parts).
void check_state(const CheckpointState& state) {
  MOEBENCH_CHECK(state.step >= 0, "checkpoint step must be >= 0");
  std::set<std::string> names;
  for (const auto& [name, buffer] : state.buffers) {
    MOEBENCH_CHECK(buffer != nullptr, "checkpoint buffer '" + name + "' is null");
    MOEBENCH_CHECK(!name.empty() && name.find('\n') == std::string::npos && name.size() < 4096,
                   "checkpoint buffer names must be non-empty, short, without newlines");
    MOEBENCH_CHECK(names.insert(name).second, "checkpoint buffer '" + name + "' appears twice");
  }
}

// Collective: every rank passed the same path, step and identity (a broken caller otherwise).
void check_same_on_every_rank(MPI_Comm comm, const std::string& path, const CheckpointState& state) {
  const uint64_t step = static_cast<uint64_t>(state.step);
  const uint64_t identity = fnv1a64(state.identity.data(), state.identity.size());
  const uint64_t where = fnv1a64(path.data(), path.size());
  // max(x) == x and max(~x) == ~x on a rank only when x is the same on every rank.
  const uint64_t local[6] = {step, ~step, identity, ~identity, where, ~where};
  uint64_t max[6] = {};
  MOEBENCH_MPI_CHECK(MPI_Allreduce(local, max, 6, MPI_UINT64_T, MPI_MAX, comm));
  MOEBENCH_CHECK(std::equal(local, local + 6, max),
                 "save_checkpoint: every rank must pass the same path, step and identity");
}

// ---- reading --------------------------------------------------------------------------------

struct Meta {
  CheckpointInfo info;
  std::vector<uint64_t> file_bytes, file_checksums;  // [ranks]
};

std::string resume_error(const Paths& paths, const std::string& detail) {
  return "cannot resume from checkpoint " + quoted(paths.dir) + ": " + detail;
}

Meta parse_meta(std::string_view text, const Paths& paths) {
  const std::string file = paths.meta();
  auto damaged = [&](const std::string& detail) {
    return UsageError(resume_error(paths, quoted(file) + " is damaged (" + detail + "); " + kTryAnother));
  };
  const std::string_view first = text.substr(0, text.find('\n'));
  uint64_t version = 0;
  if (!first.starts_with(kMetaFormat) || first.size() <= kMetaFormat.size() ||
      first[kMetaFormat.size()] != ' ') {
    throw UsageError(resume_error(paths, quoted(file) + " is not a moebench checkpoint file; check the path"));
  }
  if (!parse_number(first.substr(kMetaFormat.size() + 1), version)) throw damaged("bad first line");
  if (version != kVersion) {
    throw UsageError(resume_error(paths, "it has format version " + std::to_string(version) +
                                             " but this moebench reads version " +
                                             std::to_string(kVersion) +
                                             "; resume with the moebench that wrote it, or start a fresh run"));
  }
  if (text.back() != '\n') throw damaged("it does not end in its checksum line: truncated");
  const size_t before_last = text.rfind('\n', text.size() - 2);
  const size_t last_start = before_last == std::string_view::npos ? 0 : before_last + 1;
  const std::string_view last = text.substr(last_start, text.size() - 1 - last_start);
  uint64_t stored = 0;
  if (last_start == 0 || !last.starts_with("checksum ") || !parse_number(last.substr(9), stored, 16)) {
    throw damaged("it does not end in its checksum line: truncated");
  }
  const uint64_t computed = fnv1a64(text.data(), last_start);
  if (stored != computed) {
    throw damaged("checksum mismatch: stored " + hex64(stored) + ", computed " + hex64(computed));
  }


  // The body is trusted now (a bad field here means a bug in the writer, still refused).
  const std::vector<std::string_view> lines = split(text.substr(0, last_start - 1), '\n');
  uint64_t ranks = 0, step = 0;
  if (lines.size() < 3 || !lines[1].starts_with("ranks ") ||
      !parse_number(lines[1].substr(6), ranks) || ranks < 1 || ranks > INT_MAX ||
      !lines[2].starts_with("step ") || !parse_number(lines[2].substr(5), step) ||
      step > static_cast<uint64_t>(INT64_MAX) || lines.size() < 3 + ranks + 1) {
    throw damaged("bad ranks or step line");
  }
  Meta meta;
  meta.info.ranks = static_cast<int>(ranks);
  meta.info.step = static_cast<int64_t>(step);
  for (uint64_t r = 0; r < ranks; ++r) {
    const std::vector<std::string_view> fields = split(lines[3 + r], ' ');
    uint64_t index = 0, bytes = 0, checksum = 0;
    if (fields.size() != 4 || fields[0] != "rank" || !parse_number(fields[1], index) ||
        index != r || !parse_number(fields[2], bytes) || !parse_number(fields[3], checksum, 16)) {
      throw damaged("bad line for rank " + std::to_string(r));
    }
    meta.file_bytes.push_back(bytes);
    meta.file_checksums.push_back(checksum);
  }
  for (size_t i = 3 + ranks; i < lines.size(); ++i) {
    if (!lines[i].starts_with("identity ")) throw damaged("bad identity line");
    if (i > 3 + ranks) meta.info.identity += '\n';
    meta.info.identity += lines[i].substr(9);
  }
  return meta;
}

Meta read_meta(const Paths& paths) {
  std::vector<unsigned char> bytes;
  int error = 0;
  if (!read_whole_file(paths.meta(), bytes, error)) {
    if (error != ENOENT && error != ENOTDIR) {
      throw UsageError(resume_error(paths, "cannot read " + quoted(paths.meta()) + ": " +
                                               std::strerror(error) + " (check the permissions)"));
    }
    const PathKind kind = path_kind(paths.dir);
    if (kind == PathKind::missing) {
      std::vector<unsigned char> previous_meta;
      if (read_whole_file(paths.previous + "/meta", previous_meta, error)) {
        throw UsageError(resume_error(paths, "it does not exist, but " + quoted(paths.previous) +
                                                 " holds the checkpoint an interrupted save was "
                                                 "replacing; rename it to " + quoted(paths.dir) +
                                                 " to resume from it"));
      }
      throw UsageError(resume_error(paths, "it does not exist; check the path"));
    }
    if (kind == PathKind::other) {
      throw UsageError(resume_error(paths, "it is a file, not a checkpoint directory; check the path"));
    }
    throw UsageError(resume_error(paths, "it is incomplete: it has no 'meta' (the save that wrote "
                                         "it was interrupted, or it is not a checkpoint "
                                         "directory); " + std::string(kTryAnother)));
  }
  if (bytes.empty()) {
    throw UsageError(resume_error(paths, quoted(paths.meta()) + " is empty (the save that wrote it "
                                         "was interrupted); " + std::string(kTryAnother)));
  }
  return parse_meta(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                    paths);
}

// "" when equal; otherwise the first "key=value" line that differs, in words.
std::string identity_difference(const std::string& saved, const std::string& current) {
  if (saved == current) return "";
  struct Entry {
    std::string_view key, line;
  };
  auto entries = [](const std::string& text) {
    std::vector<Entry> out;
    for (std::string_view line : split(text, '\n')) {
      if (!line.empty()) out.push_back({line.substr(0, line.find('=')), line});
    }
    return out;
  };
  const std::vector<Entry> before = entries(saved), now = entries(current);
  auto find = [](const std::vector<Entry>& list, std::string_view key) -> const Entry* {
    for (const Entry& e : list) {
      if (e.key == key) return &e;
    }
    return nullptr;
  };
  for (const Entry& e : before) {
    const Entry* other = find(now, e.key);
    if (other == nullptr) {
      return "it was saved with " + std::string(e.line) + " and this run has no '" +
             std::string(e.key) + "'";
    }
    if (other->line != e.line) {
      return "it was saved with " + std::string(e.line) + " but this run has " +
             std::string(other->line);
    }
  }
  for (const Entry& e : now) {
    if (find(before, e.key) == nullptr) {
      return "this run has " + std::string(e.line) + ", which the checkpoint does not record";
    }
  }
  return "its identity (the settings that must match) lists the same settings in another order";
}

// Reads this rank's file into `bytes` and checks it against the meta and `state`; returns
// where the float data starts in `bytes`.
size_t read_rank_file(const Paths& paths, int rank, const Meta& meta, const CheckpointState& state,
                      std::vector<unsigned char>& bytes) {
  const std::string file = paths.rank_file(rank);
  auto refuse = [&](const std::string& detail, const std::string& fix = kTryAnother) {
    return UsageError(resume_error(paths, quoted(file) + " " + detail + "; " + fix));
  };
  int error = 0;
  if (!read_whole_file(file, bytes, error)) {
    if (error == ENOENT) {
      throw refuse("is missing (the checkpoint is incomplete, or this rank does not see it: it "
                   "must be on a filesystem every rank shares)");
    }
    throw refuse(std::string("cannot be read: ") + std::strerror(error), "check the permissions");
  }
  const uint64_t size = bytes.size(), expected = meta.file_bytes[rank];
  if (size < expected) {
    throw refuse("is truncated (" + std::to_string(size) + " of " + std::to_string(expected) +
                 " bytes)");
  }
  if (size > expected) {
    throw refuse("is damaged (" + std::to_string(size) + " bytes where 'meta' records " +
                 std::to_string(expected) + ")");
  }
  if (size < kFixedHeaderBytes + kTrailerBytes || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    throw refuse("is not a moebench checkpoint rank file (bad magic)");
  }
  const uint32_t version = get_u32(&bytes[8]);
  if (version != kVersion) {
    throw refuse("has format version " + std::to_string(version) + " but this moebench reads " +
                     std::to_string(kVersion),
                 "resume with the moebench that wrote it, or start a fresh run");
  }
  const size_t body = bytes.size() - kTrailerBytes;
  const uint64_t stored = get_u64(&bytes[body]), computed = fnv1a64(bytes.data(), body);
  if (stored != computed) {
    throw refuse("is corrupt: checksum mismatch (stored " + hex64(stored) + ", computed " +
                 hex64(computed) + ")");
  }
  if (stored != meta.file_checksums[rank] || get_u32(&bytes[12]) != static_cast<uint32_t>(rank) ||
      get_u32(&bytes[16]) != static_cast<uint32_t>(meta.info.ranks) ||
      get_u64(&bytes[24]) != static_cast<uint64_t>(meta.info.step)) {
    throw refuse("does not belong to this checkpoint (its checksum, rank, rank count or step "
                 "differs from what 'meta' records: the directory mixes files of different saves)");
  }

  // The buffer table, against this run's buffers.
  const std::string other_model = "it was written for another model or moebench version: start a fresh run";
  const uint32_t count = get_u32(&bytes[20]);
  size_t offset = kFixedHeaderBytes;
  uint64_t data_bytes = 0;
  for (uint32_t i = 0; i < count || i < state.buffers.size(); ++i) {
    if (i >= count) {
      throw refuse("lacks buffer '" + state.buffers[i].first + "' of this run", other_model);
    }
    if (body - offset < 4 || body - offset - 4 < get_u32(&bytes[offset]) + 8ull) {
      throw refuse("is damaged (its buffer table runs past the end)");
    }
    const uint32_t length = get_u32(&bytes[offset]);
    const std::string name(reinterpret_cast<const char*>(&bytes[offset + 4]), length);
    const uint64_t floats = get_u64(&bytes[offset + 4 + length]);
    offset += 4 + length + 8;
    if (i >= state.buffers.size()) {
      throw refuse("holds buffer '" + name + "' that this run does not have", other_model);
    }
    const auto& [want_name, want] = state.buffers[i];
    if (name != want_name) {
      throw refuse("holds buffer '" + name + "' where this run has '" + want_name + "' (buffer " +
                       std::to_string(i) + ")",
                   other_model);
    }
    if (floats != want->size()) {
      throw refuse("holds " + std::to_string(floats) + " floats in buffer '" + name +
                       "' but this run's has " + std::to_string(want->size()),
                   other_model);
    }
    data_bytes += floats * sizeof(float);
  }
  if (data_bytes != body - offset) throw refuse("is damaged (its data does not match its table)");
  return offset;
}

}  // namespace

void save_checkpoint(const std::string& path, MPI_Comm comm, const CheckpointState& state) {
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  check_state(state);
  check_same_on_every_rank(comm, path, state);

  Paths paths;
  run_agreed(comm, [&] {
    paths = checkpoint_paths(path);
    if (rank == 0) prepare_partial(paths);
  });
  uint64_t file[2] = {0, 0};  // this rank's file: bytes, checksum
  try {
    run_agreed(comm, [&] { write_rank_file(paths, rank, ranks, state, file[0], file[1]); });
  } catch (const UsageError&) {
    if (rank == 0) {
      try {
        remove_checkpoint_dir(paths.partial);
      } catch (const UsageError&) {
        // Left for the next save to clear; the write error is the one to report.
      }
    }
    throw;
  }
  std::vector<uint64_t> files(rank == 0 ? 2 * static_cast<size_t>(ranks) : 0);
  MOEBENCH_MPI_CHECK(MPI_Gather(file, 2, MPI_UINT64_T, files.data(), 2, MPI_UINT64_T, 0, comm));
  run_agreed(comm, [&] {
    if (rank == 0) install(paths, meta_text(ranks, state.step, files, state.identity));
  });
}

int64_t load_checkpoint(const std::string& path, MPI_Comm comm, CheckpointState& state) {
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  check_state(state);

  // Every check on every rank before any buffer changes; meta checks come first, so every
  // rank agrees on them and rank 0 (the lowest) reports them.
  Meta meta;
  std::vector<unsigned char> bytes;
  size_t data_offset = 0;
  run_agreed(comm, [&] {
    const Paths paths = checkpoint_paths(path);
    meta = read_meta(paths);
    if (meta.info.ranks != ranks) {
      const std::string saved = std::to_string(meta.info.ranks);
      throw UsageError(resume_error(paths, "it was saved with " + saved + " ranks but this run has " +
                                               std::to_string(ranks) + "; resume with mpirun -np " +
                                               saved + " (the experts are sharded over the ranks)"));
    }
    const std::string difference = identity_difference(meta.info.identity, state.identity);
    if (!difference.empty()) {
      throw UsageError(resume_error(paths, difference + "; resume with the settings it was saved "
                                                        "with, or start a fresh run"));
    }
    data_offset = read_rank_file(paths, rank, meta, state, bytes);
  });

  const unsigned char* in = bytes.data() + data_offset;
  for (auto& entry : state.buffers) {
    const size_t count = entry.second->size() * sizeof(float);
    if (count > 0) std::memcpy(entry.second->data(), in, count);
    in += count;
  }
  state.step = meta.info.step;
  return state.step;
}

bool checkpoint_exists(const std::string& path, MPI_Comm comm) {
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  int exists = 0;
  run_agreed(comm, [&] {
    if (rank != 0) return;
    const Paths paths = checkpoint_paths(path);
    struct stat info {};
    if (::stat(paths.meta().c_str(), &info) == 0) {
      exists = S_ISREG(info.st_mode) ? 1 : 0;
    } else if (const int error = errno; error != ENOENT && error != ENOTDIR) {
      throw UsageError("cannot inspect checkpoint " + quoted(paths.meta()) + ": " +
                       std::strerror(error) + " (check the permissions)");
    }
  });
  MOEBENCH_MPI_CHECK(MPI_Bcast(&exists, 1, MPI_INT, 0, comm));
  return exists != 0;
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  return read_meta(checkpoint_paths(path)).info;
}

}  // namespace moebench
