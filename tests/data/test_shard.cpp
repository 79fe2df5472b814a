// Token shards: the bytes the writer puts on disk, write/read round trips for every width
// (windows at the start, in the middle and at the end), and one UsageError naming the file
// for every malformed file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data_test_helpers.hpp"
#include "moebench/check.hpp"
#include "moebench/data.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

using test::read_file;
using test::read_le;
using test::TempDir;
using test::write_file;
using test::write_le;

std::vector<int32_t> random_tokens(size_t count, uint32_t vocab, uint64_t seed) {
  std::vector<int32_t> tokens(count);
  for (size_t i = 0; i < count; ++i) {
    tokens[i] = static_cast<int32_t>(random_bits(seed, 0, i) % vocab);
  }
  tokens[count / 2] = static_cast<int32_t>(vocab - 1);  // the largest id appears
  return tokens;
}

// Expects a UsageError whose message names `path` and contains `needle`.
template <typename Call>
void expect_usage_error(Call call, const std::string& path, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "no UsageError for " << path << " (expected '" << needle << "')";
  } catch (const UsageError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'" + path + "'"), std::string::npos) << message;
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  }
}

TEST(TokenShard, HeaderBytesOnDisk) {
  TempDir dir;
  const std::string path = dir.file("h.bin");
  const std::vector<int32_t> tokens = {1, 2, 300, 65535};
  write_token_shard(path, tokens.data(), tokens.size(), 70000);
  const std::string bytes = read_file(path);
  ASSERT_EQ(bytes.size(), 32u + 4 * 4);  // vocab 70000 needs 4-byte tokens
  EXPECT_EQ(bytes.substr(0, 8), std::string("MOETOK\0\0", 8));
  EXPECT_EQ(read_le(bytes, 8, 4), 1u);       // version
  EXPECT_EQ(read_le(bytes, 12, 4), 4u);      // width
  EXPECT_EQ(read_le(bytes, 16, 8), 4u);      // count
  EXPECT_EQ(read_le(bytes, 24, 4), 70000u);  // vocab
  EXPECT_EQ(read_le(bytes, 28, 4), 0u);      // reserved
  EXPECT_EQ(read_le(bytes, 32 + 2 * 4, 4), 300u);
  EXPECT_EQ(read_le(bytes, 32 + 3 * 4, 4), 65535u);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  EXPECT_EQ(shard_token_width(256), 1);
  EXPECT_EQ(shard_token_width(257), 2);
  EXPECT_EQ(shard_token_width(65536), 2);
  EXPECT_EQ(shard_token_width(65537), 4);
}

TEST(TokenShard, RoundTripEveryWidthWithWindows) {
  TempDir dir;
  struct Case {
    int width;
    uint32_t vocab;
    size_t count;
  };
  // 300001 four-byte tokens cross the writer's 1 MiB buffer.
  for (const Case& c : {Case{1, 256, 4097}, Case{2, 50000, 70001}, Case{4, 100000, 300001},
                        Case{4, 256, 1000}, Case{2, 300, 5}}) {
    SCOPED_TRACE("width " + std::to_string(c.width) + ", vocab " + std::to_string(c.vocab));
    const std::string path = dir.file("w" + std::to_string(c.width) + ".bin");
    const std::vector<int32_t> tokens = random_tokens(c.count, c.vocab, c.width);
    {
      TokenShardWriter writer(path, c.vocab, c.width);
      // In uneven pieces, as a streaming writer gets them.
      size_t done = 0;
      for (size_t piece = 1; done < tokens.size(); piece = piece * 3 + 1) {
        const size_t n = std::min(piece, tokens.size() - done);
        writer.append(tokens.data() + done, n);
        done += n;
      }
      writer.close();
      EXPECT_EQ(writer.tokens_written(), static_cast<int64_t>(c.count));
    }
    EXPECT_EQ(std::filesystem::file_size(path), 32 + c.count * static_cast<size_t>(c.width));

    TokenShardReader reader(path, c.vocab);
    EXPECT_EQ(reader.size(), static_cast<int64_t>(c.count));
    EXPECT_EQ(reader.vocab_size(), c.vocab);
    EXPECT_EQ(reader.token_width(), c.width);
    std::vector<int32_t> all(c.count, -7);
    reader.read(all.data(), 0, static_cast<int64_t>(c.count));
    EXPECT_EQ(all, tokens);

    const int64_t n = static_cast<int64_t>(c.count);
    struct Window {
      int64_t offset, length;
    };
    for (const Window& w : {Window{0, 1}, Window{n - 1, 1}, Window{n - 3, 3}, Window{n / 2, n / 2},
                            Window{1, n - 2}, Window{n, 0}}) {
      std::vector<int32_t> got(static_cast<size_t>(w.length) + 1, -7);
      reader.read(got.data(), w.offset, w.length);
      for (int64_t i = 0; i < w.length; ++i) {
        ASSERT_EQ(got[static_cast<size_t>(i)], tokens[static_cast<size_t>(w.offset + i)])
            << "window [" << w.offset << ", " << w.offset + w.length << ") at " << i;
      }
      EXPECT_EQ(got.back(), -7) << "read wrote past the window";
    }
    EXPECT_THROW(reader.read(all.data(), n - 2, 3), Error);  // past the end: a caller bug
  }
}

TEST(TokenShard, EmptyShardAndMovedReader) {
  TempDir dir;
  const std::string path = dir.file("empty.bin");
  write_token_shard(path, nullptr, 0, 256);
  TokenShardReader reader(path);
  EXPECT_EQ(reader.size(), 0);
  TokenShardReader moved = std::move(reader);
  EXPECT_EQ(moved.vocab_size(), 256u);
  EXPECT_EQ(moved.path(), path);
}

TEST(TokenShard, UnfinishedWriteLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("partial.bin");
  {
    TokenShardWriter writer(path, 256);
    const std::vector<int32_t> tokens(100, 5);
    writer.append(tokens.data(), tokens.size());
  }  // no close(): an error happened
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(TokenShard, WriterRefusesBadPathsAndTokens) {
  TempDir dir;
  expect_usage_error([&] { TokenShardWriter writer(dir.path(), 256); }, dir.path(),
                     "is a directory");
  const std::string nowhere = dir.file("missing/x.bin");
  expect_usage_error([&] { TokenShardWriter writer(nowhere, 256); }, nowhere, "does not exist");
  TokenShardWriter writer(dir.file("t.bin"), 256);
  const int32_t outside[] = {256};
  EXPECT_THROW(writer.append(outside, 1), Error);
}

class MalformedShard : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<int32_t> tokens = random_tokens(100, 1000, 3);
    write_token_shard(good_, tokens.data(), tokens.size(), 1000);  // width 2
    bytes_ = read_file(good_);
  }
  // Writes the modified bytes to bad.bin and expects opening it to fail.
  void expect_rejected(const std::string& bytes, const std::string& needle,
                       uint32_t expected_vocab = 0) {
    write_file(bad_, bytes);
    expect_usage_error([&] { TokenShardReader reader(bad_, expected_vocab); }, bad_, needle);
  }
  TempDir dir_;
  std::string good_ = dir_.file("good.bin");
  std::string bad_ = dir_.file("bad.bin");
  std::string bytes_;
};

TEST_F(MalformedShard, MissingFileOrDirectory) {
  const std::string missing = dir_.file("nope.bin");
  expect_usage_error([&] { TokenShardReader reader(missing); }, missing, "does not exist");
  expect_usage_error([&] { TokenShardReader reader(dir_.path()); }, dir_.path(), "is a directory");
}

TEST_F(MalformedShard, EmptyFile) { expect_rejected("", "is empty"); }

TEST_F(MalformedShard, BadMagic) {
  expect_rejected("Once upon a time, there was a cat.\n", "bad magic");
  std::string bytes = bytes_;
  bytes[3] = 'X';
  expect_rejected(bytes, "not a moebench token shard (bad magic); create one with `moebench data");
  expect_rejected("MOETO", "bad magic");  // shorter than the magic
}

TEST_F(MalformedShard, TruncatedHeader) { expect_rejected(bytes_.substr(0, 20), "truncated"); }

TEST_F(MalformedShard, UnknownVersion) {
  std::string bytes = bytes_;
  write_le(bytes, 8, 2, 4);
  expect_rejected(bytes, "version 2");
}

TEST_F(MalformedShard, BadWidth) {
  for (uint64_t width : {0u, 3u, 8u}) {
    std::string bytes = bytes_;
    write_le(bytes, 12, width, 4);
    expect_rejected(bytes, "token width of " + std::to_string(width));
  }
}

TEST_F(MalformedShard, VocabularyTooLargeForTheWidth) {
  std::string bytes = bytes_;
  write_le(bytes, 24, 70000, 4);  // width 2 holds at most 65536
  expect_rejected(bytes, "vocabulary size of 70000");
  write_le(bytes, 24, 0, 4);
  expect_rejected(bytes, "vocabulary size of 0");
}

TEST_F(MalformedShard, ShorterThanTheHeaderSays) {
  expect_rejected(bytes_.substr(0, bytes_.size() - 1), "truncated");
  std::string bytes = bytes_;
  write_le(bytes, 16, 101, 8);  // one token more than there is
  expect_rejected(bytes, "promises 101 tokens");
  write_le(bytes, 16, uint64_t{1} << 62, 8);  // overflows count * width
  expect_rejected(bytes, "more than a file can hold");
}

TEST_F(MalformedShard, LongerThanTheHeaderSays) {
  expect_rejected(bytes_ + "x", "the file is corrupt");
}

TEST_F(MalformedShard, VocabularyMismatch) {
  expect_rejected(bytes_, "vocabulary of 1000 but the tokenizer in use has 256", 256);
  TokenShardReader matching(good_, 1000);  // the right vocabulary opens
  EXPECT_EQ(matching.size(), 100);
}

TEST_F(MalformedShard, TokenOutsideItsVocabularyIsAnErrorOnRead) {
  std::string bytes = bytes_;
  write_le(bytes, 32 + 2 * 10, 1000, 2);  // token 10 = 1000, vocabulary 1000
  write_file(bad_, bytes);
  TokenShardReader reader(bad_);  // the header is fine
  std::vector<int32_t> window(20);
  reader.read(window.data(), 0, 10);  // tokens before it are fine
  EXPECT_THROW(reader.read(window.data(), 5, 10), Error);
}

TEST(TextAsBytes, ReadsTheFileVerbatim) {
  TempDir dir;
  const std::string path = dir.file("s.txt");
  const std::string text = "One day.<|endoftext|>\n\xE2\x9C\x93 Two days.\n";
  write_file(path, text);
  const TokenShardReader reader = TokenShardReader::open_text_bytes(path);
  EXPECT_EQ(reader.size(), static_cast<int64_t>(text.size()));
  EXPECT_EQ(reader.vocab_size(), 256u);
  std::vector<int32_t> tokens(text.size());
  reader.read(tokens.data(), 0, reader.size());
  EXPECT_EQ(decode_bytes(tokens.data(), tokens.size()), text);
  reader.read(tokens.data(), reader.size() - 3, 3);
  EXPECT_EQ(decode_bytes(tokens.data(), 3), "s.\n");

  const std::string empty = dir.file("empty.txt");
  write_file(empty, "");
  expect_usage_error([&] { TokenShardReader::open_text_bytes(empty); }, empty, "is empty");
  const std::string missing = dir.file("none.txt");
  expect_usage_error([&] { TokenShardReader::open_text_bytes(missing); }, missing,
                     "does not exist");
  expect_usage_error([&] { TokenShardReader::open_text_bytes(dir.path()); }, dir.path(),
                     "is a directory");
}

}  // namespace
}  // namespace moebench
