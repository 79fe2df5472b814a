// TokenDataset: sources (built-in, text file, shard), the train/validation split, and the batch
// contract the trainer relies on — targets are inputs shifted by one, windows stay inside
// their split, batches are deterministic, the global batch does not depend on the rank count,
// and a batch call allocates nothing.
//
// Most tests use tokens[i] = i (vocabulary = size), so a row's first input is its window's
// offset and every claim about windows can be checked exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "data_test_helpers.hpp"
#include "moebench/check.hpp"
#include "moebench/data.hpp"

// Counts every allocation of the test binary, to check that batch calls make none.
namespace {
std::atomic<long> g_allocations{0};
}  // namespace

// noinline: GCC would otherwise see free() inlined against a new-expression and warn
// (-Wmismatched-new-delete), though the pair is the replaced new/delete.
[[gnu::noinline]] void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* pointer = std::malloc(size == 0 ? 1 : size)) return pointer;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* pointer) noexcept { std::free(pointer); }
[[gnu::noinline]] void operator delete(void* pointer, std::size_t) noexcept { std::free(pointer); }

namespace moebench {
namespace {

using test::TempDir;
using test::write_file;

std::vector<int32_t> identity_tokens(int64_t count) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  std::iota(tokens.begin(), tokens.end(), 0);
  return tokens;
}

TokenDataset identity_dataset(int64_t count, double val_fraction = kDefaultValFraction) {
  return TokenDataset::from_tokens(identity_tokens(count), static_cast<uint32_t>(count), "ids",
                                   val_fraction);
}

struct Batch {
  std::vector<int32_t> inputs, targets;  // [B, T] each
};

Batch train(const TokenDataset& data, BatchSlice slice, int64_t step, uint64_t seed) {
  Batch batch;
  batch.inputs.assign(static_cast<size_t>(slice.batch_size) * slice.seq_len, -1);
  batch.targets.assign(batch.inputs.size(), -1);
  data.train_batch(batch.inputs.data(), batch.targets.data(), slice, step, seed);
  return batch;
}

Batch validation(const TokenDataset& data, BatchSlice slice, int64_t index) {
  Batch batch;
  batch.inputs.assign(static_cast<size_t>(slice.batch_size) * slice.seq_len, -1);
  batch.targets.assign(batch.inputs.size(), -1);
  data.val_batch(batch.inputs.data(), batch.targets.data(), slice, index);
  return batch;
}

// Rows are contiguous windows of the identity sequence: inputs offset.., targets offset+1..
// Returns the offsets.
std::vector<int64_t> window_offsets(const Batch& batch, int seq_len) {
  std::vector<int64_t> offsets;
  for (size_t row = 0; row * seq_len < batch.inputs.size(); ++row) {
    const int32_t* in = batch.inputs.data() + row * seq_len;
    const int32_t* out = batch.targets.data() + row * seq_len;
    for (int t = 0; t < seq_len; ++t) {
      EXPECT_EQ(in[t], in[0] + t) << "row " << row << " is not one contiguous window";
      EXPECT_EQ(out[t], in[0] + t + 1) << "targets are not the inputs shifted by one";
    }
    offsets.push_back(in[0]);
  }
  return offsets;
}

TEST(TokenDataset, SplitIsTheLastFractionOfTheTokens) {
  const TokenDataset data = identity_dataset(1000);
  EXPECT_EQ(data.size(), 1000);
  EXPECT_EQ(data.val_size(), 50);
  EXPECT_EQ(data.train_size(), 950);
  const TokenDataset tenth = identity_dataset(1009, 0.1);
  EXPECT_EQ(tenth.val_size(), 100);  // floor(100.9)
  for (double bad : {0.0, 1.0, -0.5, 2.0}) {
    EXPECT_THROW(identity_dataset(1000, bad), UsageError) << bad;
  }
}

TEST(TokenDataset, SeqLenLongerThanASplitIsAUsageError) {
  const TokenDataset data = TokenDataset::from_tokens(identity_tokens(6000), 6000, "x.txt");
  data.require_seq_len(299);  // validation split: 300 tokens, a window needs 300
  try {
    data.require_seq_len(512);
    ADD_FAILURE() << "no UsageError";
  } catch (const UsageError& error) {
    EXPECT_STREQ(error.what(),
                 "--seq-len 512 (+1 target token) is longer than the validation split (300 "
                 "tokens) of 'x.txt'; use a shorter --seq-len or more data");
  }
  EXPECT_THROW(data.require_seq_len(300), UsageError);
  EXPECT_THROW(data.require_seq_len(0), UsageError);
  const TokenDataset tiny = identity_dataset(40, 0.5);
  EXPECT_THROW(tiny.require_seq_len(20), UsageError);  // 21 > 20 in both splits
  std::vector<int32_t> buffer(4 * 600);
  EXPECT_THROW(data.train_batch(buffer.data(), buffer.data() + 1200, {0, 1, 2, 600}, 0, 1),
               UsageError);
  EXPECT_THROW(data.val_batch(buffer.data(), buffer.data() + 1200, {0, 1, 2, 600}, 0), UsageError);
}

TEST(TokenDataset, TrainWindowsAreShiftedPairsInsideTheTrainingSplit) {
  const TokenDataset data = identity_dataset(5000);
  const int T = 64;
  int64_t lowest = data.train_size(), highest = 0;
  for (int64_t step = 0; step < 200; ++step) {
    const Batch batch = train(data, {1, 2, 8, T}, step, 42);
    for (int64_t offset : window_offsets(batch, T)) {
      ASSERT_GE(offset, 0);
      ASSERT_LE(offset + T, data.train_size() - 1) << "the last target is validation data";
      lowest = std::min(lowest, offset);
      highest = std::max(highest, offset);
    }
  }
  // 1600 windows over 4686 possible starts reach both ends of the split.
  EXPECT_LT(lowest, 50);
  EXPECT_GT(highest, data.train_size() - T - 1 - 50);

  // A split with room for exactly 4 windows: every start is drawn, none past the last.
  const TokenDataset tight = identity_dataset(40, 0.5);  // training split [0, 20)
  std::set<int64_t> starts;
  for (int64_t step = 0; step < 50; ++step) {
    const std::vector<int64_t> offsets = window_offsets(train(tight, {0, 1, 8, 16}, step, 1), 16);
    starts.insert(offsets.begin(), offsets.end());
  }
  EXPECT_EQ(starts, (std::set<int64_t>{0, 1, 2, 3}));
}

TEST(TokenDataset, TrainBatchesAreDeterministicAndDependOnStepAndSeed) {
  const TokenDataset data = identity_dataset(100000);
  const BatchSlice slice{0, 1, 4, 32};
  const Batch a = train(data, slice, 7, 1);
  EXPECT_EQ(a.inputs, train(data, slice, 7, 1).inputs);
  EXPECT_EQ(a.targets, train(data, slice, 7, 1).targets);
  EXPECT_NE(a.inputs, train(data, slice, 8, 1).inputs);
  EXPECT_NE(a.inputs, train(data, slice, 7, 2).inputs);
  // Rows of one batch are different windows.
  const std::vector<int64_t> offsets = window_offsets(a, 32);
  EXPECT_EQ(std::set<int64_t>(offsets.begin(), offsets.end()).size(), offsets.size());
}

TEST(TokenDataset, GlobalBatchDoesNotDependOnTheRankCount) {
  const TokenDataset data = identity_dataset(20000);
  const int T = 16, global = 8;
  for (int64_t step : {0, 1, 99}) {
    const Batch whole = train(data, {0, 1, global, T}, step, 5);
    const Batch whole_val = validation(data, {0, 1, global, T}, step);
    for (int ranks : {2, 4}) {
      std::vector<int32_t> inputs, targets, val_inputs, val_targets;
      for (int rank = 0; rank < ranks; ++rank) {
        const BatchSlice slice{rank, ranks, global / ranks, T};
        const Batch part = train(data, slice, step, 5);
        inputs.insert(inputs.end(), part.inputs.begin(), part.inputs.end());
        targets.insert(targets.end(), part.targets.begin(), part.targets.end());
        const Batch val_part = validation(data, slice, step);
        val_inputs.insert(val_inputs.end(), val_part.inputs.begin(), val_part.inputs.end());
        val_targets.insert(val_targets.end(), val_part.targets.begin(), val_part.targets.end());
      }
      EXPECT_EQ(inputs, whole.inputs) << ranks << " ranks, step " << step;
      EXPECT_EQ(targets, whole.targets) << ranks << " ranks, step " << step;
      EXPECT_EQ(val_inputs, whole_val.inputs) << ranks << " ranks, batch " << step;
      EXPECT_EQ(val_targets, whole_val.targets) << ranks << " ranks, batch " << step;
    }
  }
}

TEST(TokenDataset, ValidationWindowsAreFixedAndInsideTheValidationSplit) {
  const TokenDataset data = identity_dataset(10000);  // validation: [9500, 10000)
  const int T = 32;
  const int64_t windows = data.val_window_count(T);
  EXPECT_EQ(windows, (500 - 1) / T);
  std::set<int64_t> seen;
  for (int64_t index = 0; index < 4; ++index) {
    const Batch batch = validation(data, {0, 1, 8, T}, index);
    EXPECT_EQ(batch.inputs, validation(data, {0, 1, 8, T}, index).inputs);
    for (int64_t offset : window_offsets(batch, T)) {
      EXPECT_GE(offset, data.train_size()) << "a validation window reads training data";
      EXPECT_LE(offset + T, data.size() - 1);
      EXPECT_EQ((offset - data.train_size()) % T, 0) << "windows are consecutive, stride T";
      seen.insert(offset);
    }
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), windows) << "32 sequences cover all 15 windows";
  EXPECT_EQ(data.val_window_offset(0, T), data.train_size());
  EXPECT_EQ(data.val_window_offset(windows, T), data.train_size()) << "wraps around";
}

TEST(TokenDataset, BatchCallsDoNotAllocate) {
  TempDir dir;
  const std::vector<int32_t> tokens = identity_tokens(50000);
  write_token_shard(dir.file("ids.bin"), tokens.data(), tokens.size(), 50000);
  const TokenDataset memory = identity_dataset(50000);
  const TokenDataset file = TokenDataset::open(dir.file("ids.bin"));
  const BatchSlice slice{1, 4, 8, 128};
  std::vector<int32_t> inputs(8 * 128), targets(8 * 128);
  for (const TokenDataset* data : {&memory, &file}) {
    const long before = g_allocations.load();
    for (int64_t step = 0; step < 50; ++step) {
      data->train_batch(inputs.data(), targets.data(), slice, step, 3);
      data->val_batch(inputs.data(), targets.data(), slice, step);
    }
    EXPECT_EQ(g_allocations.load() - before, 0) << data->name();
  }
}

TEST(TokenDataset, ShardTextAndMemoryGiveTheSameBatches) {
  TempDir dir;
  // A text file, its bytes as a width-1 shard, and a width-4 shard of the same tokens.
  const std::string text = generate_stories(11, 30000);
  write_file(dir.file("stories.txt"), text);
  const std::vector<int32_t> tokens = encode_bytes(text);
  write_token_shard(dir.file("stories.bin"), tokens.data(), tokens.size(), 256);
  write_token_shard(dir.file("wide.tok"), tokens.data(), tokens.size(), 256, 4);
  const TokenDataset memory = TokenDataset::from_tokens(tokens, 256, "memory");
  const TokenDataset from_text = TokenDataset::open(dir.file("stories.txt"), 256);
  const TokenDataset from_shard = TokenDataset::open(dir.file("stories.bin"), 256);
  const TokenDataset from_wide = TokenDataset::open(dir.file("wide.tok"));  // found by magic
  const BatchSlice slice{0, 1, 4, 64};
  const Batch expected = train(memory, slice, 3, 9);
  const Batch expected_val = validation(memory, slice, 1);
  for (const TokenDataset* data : {&from_text, &from_shard, &from_wide}) {
    EXPECT_EQ(data->size(), static_cast<int64_t>(text.size()));
    EXPECT_EQ(data->vocab_size(), 256u);
    EXPECT_EQ(train(*data, slice, 3, 9).inputs, expected.inputs) << data->name();
    EXPECT_EQ(train(*data, slice, 3, 9).targets, expected.targets) << data->name();
    EXPECT_EQ(validation(*data, slice, 1).targets, expected_val.targets) << data->name();
  }
  // The built-in corpus is the generator's text, byte for byte.
  const TokenDataset builtin = TokenDataset::builtin(11, 30000);
  std::vector<int32_t> all(static_cast<size_t>(builtin.size()));
  builtin.read(all.data(), 0, builtin.size());
  EXPECT_EQ(all, tokens);
}

// Every bad --data file: one UsageError naming the option, the path and the fix.
TEST(TokenDataset, BadDataFilesAreUsageErrors) {
  TempDir dir;
  write_file(dir.file("empty.txt"), "");
  write_file(dir.file("notashard.bin"), "just some text\n");
  write_file(dir.file("short.txt"), "tiny\n");
  const std::vector<int32_t> ids = identity_tokens(100);
  write_token_shard(dir.file("v100.bin"), ids.data(), ids.size(), 100);
  struct Case {
    std::string path, needle;
    uint32_t expected_vocab;
  };
  for (const Case& c :
       {Case{dir.file("missing.txt"), "does not exist", 0}, Case{dir.path(), "is a directory", 0},
        Case{dir.file("empty.txt"), "is empty", 0}, Case{dir.file("notashard.bin"), "bad magic", 0},
        Case{dir.file("v100.bin"), "vocabulary of 100", 256},
        Case{dir.file("short.txt"), "is a text file", 1000}}) {
    try {
      TokenDataset::open(c.path, c.expected_vocab);
      ADD_FAILURE() << "no UsageError for " << c.path;
    } catch (const UsageError& error) {
      const std::string message = error.what();
      EXPECT_EQ(message.rfind("--data: ", 0), 0u) << message;
      EXPECT_NE(message.find("'" + c.path + "'"), std::string::npos) << message;
      EXPECT_NE(message.find(c.needle), std::string::npos) << message;
      EXPECT_NE(message.find("built-in story corpus"), std::string::npos) << message;
    }
  }
  // Too short for a window: caught when the trainer asks for its sequence length.
  const TokenDataset tiny = TokenDataset::open(dir.file("short.txt"));
  EXPECT_THROW(tiny.require_seq_len(4), UsageError);
}

}  // namespace
}  // namespace moebench
