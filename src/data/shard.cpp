// Token shards (see data.hpp, docs/data.md): the writer (temporary file, renamed into place on
// close) and the reader (validated header, windows read with pread, nothing held in memory).
//
// Header, 32 bytes, little-endian:
//   0  char[8]  magic "MOETOK\0\0"
//   8  uint32   version (1)
//  12  uint32   token width in bytes (1, 2 or 4)
//  16  uint64   token count
//  24  uint32   vocabulary size
//  28  uint32   reserved (written as 0, ignored on read)
//  32  tokens, `width` bytes each, little-endian, unsigned
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

#include "moebench/check.hpp"
#include "moebench/little_endian.hpp"
#include "moebench/data.hpp"

namespace moebench {
namespace {

constexpr size_t kWriteBufferBytes = size_t{1} << 20;
constexpr const char* kCreateHint = "`moebench data --input TEXT_FILE --out ";

std::string in_quotes(const std::string& path) { return "'" + path + "'"; }

// "create one with `moebench data --input TEXT_FILE --out x.bin`"
std::string create_hint(const std::string& path) { return kCreateHint + path + "`"; }


// The largest vocabulary whose ids fit `width` bytes (and int32_t in memory).
uint64_t max_vocab(int width) {
  return width == 1 ? 256u : width == 2 ? 65536u : uint64_t{1} << 31;
}

// Opens `path` for reading; UsageError naming the path and the fix when it is missing,
// unreadable or a directory. Returns the descriptor; `bytes` = the file size.
int open_for_reading(const std::string& path, int64_t& bytes) {
  if (path.empty()) throw UsageError("the data file path is empty; pass a file name");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) {
      throw UsageError(in_quotes(path) + " does not exist; check the path");
    }
    throw UsageError("cannot read " + in_quotes(path) + " (" + std::strerror(error) +
                     "); check the path and the file's permissions");
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    throw UsageError("cannot read " + in_quotes(path) + " (" + std::strerror(error) + ")");
  }
  if (S_ISDIR(info.st_mode)) {
    ::close(fd);
    throw UsageError(in_quotes(path) + " is a directory; pass a file");
  }
  bytes = static_cast<int64_t>(info.st_size);
  return fd;
}

// Reads exactly `bytes` bytes at `offset` (false when the file ends first).
bool pread_all(int fd, void* data, size_t bytes, int64_t offset, int& error) {
  auto* out = static_cast<unsigned char*>(data);
  while (bytes > 0) {
    const ssize_t got = ::pread(fd, out, bytes, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      error = errno;
      return false;
    }
    if (got == 0) {
      error = 0;
      return false;
    }
    out += got;
    bytes -= static_cast<size_t>(got);
    offset += got;
  }
  return true;
}

}  // namespace

int shard_token_width(uint32_t vocab_size) {
  return vocab_size <= 256u ? 1 : vocab_size <= 65536u ? 2 : 4;
}

// ---- writer ---------------------------------------------------------------------------------

TokenShardWriter::TokenShardWriter(const std::string& path, uint32_t vocab_size, int token_width)
    : path_(path), temp_path_(path + ".tmp"), vocab_(vocab_size) {
  width_ = token_width == 0 ? shard_token_width(vocab_size) : token_width;
  MOEBENCH_CHECK(width_ == 1 || width_ == 2 || width_ == 4, "token width must be 1, 2 or 4");
  MOEBENCH_CHECK(vocab_size >= 1 && vocab_size <= max_vocab(width_),
                 "vocabulary " + std::to_string(vocab_size) + " does not fit " +
                     std::to_string(width_) + "-byte tokens");
  const std::string prefix = "cannot write token shard " + in_quotes(path) + ": ";
  if (path.empty())
    throw UsageError("cannot write token shard: the path is empty (pass --out FILE)");
  std::error_code ignored;
  const std::filesystem::path file(path);
  if (std::filesystem::is_directory(file, ignored)) {
    throw UsageError(prefix + "it is a directory (pass a file name, e.g. --out " +
                     (file / "tokens.bin").string() + ")");
  }
  const std::filesystem::path parent = file.parent_path().empty() ? "." : file.parent_path();
  if (!std::filesystem::is_directory(parent, ignored)) {
    throw UsageError(prefix + "directory '" + parent.string() +
                     "' does not exist (create it or pass another --out)");
  }
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw UsageError(prefix + std::strerror(errno) + " (check the directory's permissions)");
  }
  unsigned char header[kShardHeaderBytes] = {};
  std::memcpy(header, kShardMagic, sizeof kShardMagic);
  put_u32(header + 8, kShardVersion);
  put_u32(header + 12, static_cast<uint32_t>(width_));
  put_u64(header + 16, 0);  // the count is written by close()
  put_u32(header + 24, vocab_);
  put_u32(header + 28, 0);
  try {
    write_all(header, sizeof header, 0);
  } catch (...) {  // the destructor does not run for a constructor that throws
    ::close(fd_);
    ::unlink(temp_path_.c_str());
    throw;
  }
  buffer_.reserve(kWriteBufferBytes);
}

TokenShardWriter::~TokenShardWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());  // never leave a file that looks complete
  }
}

void TokenShardWriter::write_all(const void* data, size_t bytes, int64_t offset) {
  const auto* in = static_cast<const unsigned char*>(data);
  while (bytes > 0) {
    const ssize_t wrote = ::pwrite(fd_, in, bytes, static_cast<off_t>(offset));
    if (wrote < 0) {
      if (errno == EINTR) continue;
      throw UsageError("cannot write token shard " + in_quotes(path_) + ": " +
                       std::strerror(errno) +
                       " (check the free space and permissions, or pass another --out)");
    }
    in += wrote;
    bytes -= static_cast<size_t>(wrote);
    offset += wrote;
  }
}

void TokenShardWriter::flush_buffer() {
  if (buffer_.empty()) return;
  const int64_t written = count_ - static_cast<int64_t>(buffer_.size()) / width_;
  write_all(buffer_.data(), buffer_.size(), kShardHeaderBytes + written * width_);
  buffer_.clear();
}

void TokenShardWriter::append(const int32_t* tokens, size_t count) {
  MOEBENCH_CHECK(fd_ >= 0, "append to a closed token shard writer");
  for (size_t i = 0; i < count; ++i) {
    const int32_t token = tokens[i];
    MOEBENCH_CHECK(token >= 0 && static_cast<uint32_t>(token) < vocab_,
                   "token " + std::to_string(token) + " outside the vocabulary of " +
                       std::to_string(vocab_) + " written to " + in_quotes(path_));
    const auto value = static_cast<uint32_t>(token);
    for (int byte = 0; byte < width_; ++byte) {
      buffer_.push_back(static_cast<unsigned char>(value >> (8 * byte)));
    }
    ++count_;
    if (buffer_.size() + 4 > kWriteBufferBytes) flush_buffer();
  }
}

void TokenShardWriter::close() {
  MOEBENCH_CHECK(fd_ >= 0, "token shard writer closed twice");
  flush_buffer();
  unsigned char count[8];
  put_u64(count, static_cast<uint64_t>(count_));
  write_all(count, sizeof count, 16);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(temp_path_.c_str());
    throw UsageError("cannot write token shard " + in_quotes(path_) + ": " + std::strerror(error));
  }
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp_path_.c_str());
    throw UsageError("cannot write token shard " + in_quotes(path_) + ": rename from " +
                     in_quotes(temp_path_) + " failed (" + std::strerror(error) + ")");
  }
}

void write_token_shard(const std::string& path, const int32_t* tokens, size_t count,
                       uint32_t vocab_size, int token_width) {
  TokenShardWriter writer(path, vocab_size, token_width);
  writer.append(tokens, count);
  writer.close();
}

// ---- reader ---------------------------------------------------------------------------------

bool is_token_shard(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char magic[sizeof kShardMagic] = {};
  int error = 0;
  const bool read = pread_all(fd, magic, sizeof magic, 0, error);
  ::close(fd);
  return read && std::memcmp(magic, kShardMagic, sizeof magic) == 0;
}

TokenShardReader::TokenShardReader(const std::string& path, uint32_t expected_vocab) : path_(path) {
  int64_t file_bytes = 0;
  fd_ = open_for_reading(path, file_bytes);
  try {
    const std::string name = in_quotes(path);
    const std::string rewrite = "; write it again with " + create_hint(path);
    if (file_bytes == 0) {
      throw UsageError(name + " is empty (0 bytes), not a token shard; create one with " +
                       create_hint(path));
    }
    unsigned char header[kShardHeaderBytes] = {};
    int error = 0;
    const bool magic_read = pread_all(fd_, header, sizeof kShardMagic, 0, error);
    if (!magic_read && error != 0) {
      throw UsageError("cannot read " + name + " (" + std::strerror(error) + ")");
    }
    if (!magic_read || std::memcmp(header, kShardMagic, sizeof kShardMagic) != 0) {
      throw UsageError(name + " is not a moebench token shard (bad magic); create one with " +
                       create_hint(path));
    }
    if (!pread_all(fd_, header, sizeof header, 0, error)) {
      throw UsageError(name + " is truncated: " + std::to_string(file_bytes) +
                       " bytes, shorter than the 32-byte shard header" + rewrite);
    }
    const uint32_t version = get_u32(header + 8);
    const uint32_t width = get_u32(header + 12);
    const uint64_t count = get_u64(header + 16);
    const uint32_t vocab = get_u32(header + 24);
    if (version != kShardVersion) {
      throw UsageError(name + " is a version " + std::to_string(version) +
                       " token shard; this moebench reads version " +
                       std::to_string(kShardVersion) + rewrite);
    }
    if (width != 1 && width != 2 && width != 4) {
      throw UsageError(name + " has a token width of " + std::to_string(width) +
                       " bytes (must be 1, 2 or 4): the file is corrupt" + rewrite);
    }
    width_ = static_cast<int>(width);
    if (vocab == 0 || vocab > max_vocab(width_)) {
      throw UsageError(name + " has a vocabulary size of " + std::to_string(vocab) + ", which " +
                       std::to_string(width) + "-byte tokens cannot hold: the file is corrupt" +
                       rewrite);
    }
    const auto max_count =
        static_cast<uint64_t>((std::numeric_limits<int64_t>::max() - kShardHeaderBytes) / width_);
    if (count > max_count) {
      throw UsageError(name + " is corrupt: its header promises " + std::to_string(count) +
                       " tokens, more than a file can hold" + rewrite);
    }
    const uint64_t expected_bytes = static_cast<uint64_t>(kShardHeaderBytes) + count * width;
    if (expected_bytes > static_cast<uint64_t>(file_bytes)) {
      throw UsageError(name + " is truncated: its header promises " + std::to_string(count) +
                       " tokens of " + std::to_string(width) + " bytes (" +
                       std::to_string(expected_bytes) +
                       " bytes with the header) but the file has " + std::to_string(file_bytes) +
                       " bytes" + rewrite);
    }
    if (expected_bytes < static_cast<uint64_t>(file_bytes)) {
      throw UsageError(name + " has " + std::to_string(file_bytes) + " bytes but its header says " +
                       std::to_string(expected_bytes) + " (" + std::to_string(count) +
                       " tokens): the file is corrupt" + rewrite);
    }
    if (expected_vocab != 0 && vocab != expected_vocab) {
      throw UsageError(name + " holds tokens of a vocabulary of " + std::to_string(vocab) +
                       " but the tokenizer in use has " + std::to_string(expected_vocab) +
                       "; use the tokenizer the shard was written with, or write it again with "
                       "the matching one (" +
                       create_hint(path) + ")");
    }
    vocab_ = vocab;
    count_ = static_cast<int64_t>(count);
    data_offset_ = kShardHeaderBytes;
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

TokenShardReader TokenShardReader::open_text_bytes(const std::string& path) {
  TokenShardReader reader;
  reader.path_ = path;
  int64_t file_bytes = 0;
  reader.fd_ = open_for_reading(path, file_bytes);  // the destructor closes it from here on
  if (file_bytes == 0) {
    throw UsageError(in_quotes(path) + " is empty; pass a file with some text in it");
  }
  reader.data_offset_ = 0;
  reader.width_ = 1;
  reader.count_ = file_bytes;
  reader.vocab_ = kByteVocabSize;
  return reader;
}

TokenShardReader::~TokenShardReader() {
  if (fd_ >= 0) ::close(fd_);
}

TokenShardReader::TokenShardReader(TokenShardReader&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      data_offset_(other.data_offset_),
      width_(other.width_),
      count_(other.count_),
      vocab_(other.vocab_) {}

TokenShardReader& TokenShardReader::operator=(TokenShardReader&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    data_offset_ = other.data_offset_;
    width_ = other.width_;
    count_ = other.count_;
    vocab_ = other.vocab_;
  }
  return *this;
}

void TokenShardReader::read(int32_t* tokens, int64_t offset, int64_t count) const {
  MOEBENCH_CHECK(fd_ >= 0, "read from a closed token reader");
  MOEBENCH_CHECK(offset >= 0 && count >= 0 && offset <= count_ - count,
                 "window [" + std::to_string(offset) + ", " + std::to_string(offset + count) +
                     ") outside the " + std::to_string(count_) + " tokens of " + in_quotes(path_));
  if (count == 0) return;
  // The raw bytes land at the front of the output buffer and are widened in place, last token
  // first: token i's int32 (bytes [4i, 4i+4)) only overwrites raw bytes of tokens >= i.
  auto* raw = reinterpret_cast<unsigned char*>(tokens);
  const auto raw_bytes = static_cast<size_t>(count) * static_cast<size_t>(width_);
  int error = 0;
  if (!pread_all(fd_, raw, raw_bytes, data_offset_ + offset * width_, error)) {
    throw Error("reading tokens [" + std::to_string(offset) + ", " +
                std::to_string(offset + count) + ") of " + in_quotes(path_) + " failed: " +
                (error != 0 ? std::strerror(error)
                            : "the file ended early (was it changed while being read?)"));
  }
  bool in_vocab = true;
  for (int64_t i = count - 1; i >= 0; --i) {
    const unsigned char* bytes = raw + i * width_;
    uint32_t value = bytes[0];
    if (width_ >= 2) value |= static_cast<uint32_t>(bytes[1]) << 8;
    if (width_ == 4) {
      value |= static_cast<uint32_t>(bytes[2]) << 16 | static_cast<uint32_t>(bytes[3]) << 24;
    }
    in_vocab = in_vocab && value < vocab_;
    const auto token = static_cast<int32_t>(value);
    std::memcpy(raw + i * 4, &token, sizeof token);
  }
  if (!in_vocab) {
    throw Error(in_quotes(path_) + " holds a token outside its vocabulary of " +
                std::to_string(vocab_) + " in [" + std::to_string(offset) + ", " +
                std::to_string(offset + count) + "): the file is corrupt; write it again with " +
                create_hint(path_));
  }
}

}  // namespace moebench
