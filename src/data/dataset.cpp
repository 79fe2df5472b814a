// TokenDataset (see data.hpp, docs/data.md): the token sequence, its train/validation split
// and the batch contract the trainer relies on.
//
// Training window of global sequence g at step s: offset = floor(u * (train_size - T)) with
// u = random_uniform(seed, kTrainStream ^ s, g), i.e. uniform over the train_size - T starts
// whose T + 1 tokens lie inside the training split. Rank r of P fills its B rows with
// g = r*B + b, so the global batch of P*B sequences is the same for every P.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/data.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

// Keeps the data's random stream apart from the other users of the same seed (parameter
// initialisation uses small stream numbers such as the expert index).
constexpr uint64_t kTrainStream = 0xDA7A000000000000ULL;

constexpr const char* kBuiltinName = "the built-in story corpus";

}  // namespace

TokenDataset TokenDataset::builtin(uint64_t seed, size_t bytes, double val_fraction) {
  TokenDataset dataset;
  dataset.name_ = kBuiltinName;
  dataset.vocab_ = kByteVocabSize;
  dataset.memory_ = encode_bytes(generate_stories(seed, bytes));
  dataset.size_ = static_cast<int64_t>(dataset.memory_.size());
  dataset.set_split(val_fraction);
  return dataset;
}

TokenDataset TokenDataset::open(const std::string& path, uint32_t expected_vocab,
                                double val_fraction) {
  TokenDataset dataset;
  dataset.name_ = path;
  try {
    const bool shard = is_token_shard(path);
    const bool looks_like_shard = std::filesystem::path(path).extension() == ".bin";
    if (shard || looks_like_shard) {
      // A ".bin" without the magic is reported by the reader as "not a token shard".
      dataset.file_.emplace(path, expected_vocab);
    } else {
      if (expected_vocab != 0 && expected_vocab != kByteVocabSize) {
        throw UsageError("'" + path + "' is a text file, read as byte-level tokens (vocabulary " +
                         std::to_string(kByteVocabSize) + "), but the tokenizer in use has " +
                         std::to_string(expected_vocab) +
                         "; use the byte tokenizer or pass a token shard written with yours");
      }
      dataset.file_.emplace(TokenShardReader::open_text_bytes(path));
    }
    if (dataset.file_->size() == 0) {
      throw UsageError("'" + path +
                       "' holds no tokens; write it again from a non-empty text "
                       "with `moebench data --input TEXT_FILE --out " +
                       path + "`");
    }
  } catch (const UsageError& error) {
    throw UsageError(std::string("--data: ") + error.what() +
                     " (or omit --data to use the built-in story corpus)");
  }
  dataset.vocab_ = dataset.file_->vocab_size();
  dataset.size_ = dataset.file_->size();
  dataset.set_split(val_fraction);
  return dataset;
}

TokenDataset TokenDataset::from_tokens(std::vector<int32_t> tokens, uint32_t vocab_size,
                                       const std::string& name, double val_fraction) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    MOEBENCH_CHECK(tokens[i] >= 0 && static_cast<uint32_t>(tokens[i]) < vocab_size,
                   "token " + std::to_string(tokens[i]) + " at " + std::to_string(i) +
                       " outside the vocabulary of " + std::to_string(vocab_size));
  }
  TokenDataset dataset;
  dataset.name_ = name;
  dataset.vocab_ = vocab_size;
  dataset.memory_ = std::move(tokens);
  dataset.size_ = static_cast<int64_t>(dataset.memory_.size());
  dataset.set_split(val_fraction);
  return dataset;
}

void TokenDataset::set_split(double val_fraction) {
  if (!(val_fraction > 0.0 && val_fraction < 1.0)) {
    std::ostringstream text;
    text << "--val-fraction " << val_fraction
         << " must be in (0, 1): the last fraction of the tokens is held out for validation "
            "(default "
         << kDefaultValFraction << ")";
    throw UsageError(text.str());
  }
  val_size_ = static_cast<int64_t>(std::floor(static_cast<double>(size_) * val_fraction));
}

void TokenDataset::require_seq_len(int seq_len) const {
  if (seq_len < 1) {
    throw UsageError("--seq-len " + std::to_string(seq_len) + " must be >= 1");
  }
  const int64_t window = static_cast<int64_t>(seq_len) + 1;    // T inputs + the last target
  if (window <= train_size() && window <= val_size()) return;  // no allocation when it fits
  const bool train_short = window > train_size();
  throw UsageError("--seq-len " + std::to_string(seq_len) +
                   " (+1 target token) is longer than the " +
                   (train_short ? "training" : "validation") + " split (" +
                   std::to_string(train_short ? train_size() : val_size()) + " tokens) of " +
                   (name_ == kBuiltinName ? name_ : "'" + name_ + "'") +
                   "; use a shorter --seq-len or more data");
}

int64_t TokenDataset::train_window_offset(uint64_t seed, int64_t step, int64_t global_index,
                                          int seq_len) const {
  const int64_t starts = train_size() - seq_len;  // windows of seq_len + 1 tokens that fit
  MOEBENCH_CHECK(starts >= 1, "training split shorter than seq_len + 1 (call require_seq_len)");
  const double u = random_uniform(seed, kTrainStream ^ static_cast<uint64_t>(step),
                                  static_cast<uint64_t>(global_index));
  const auto offset = static_cast<int64_t>(u * static_cast<double>(starts));
  return offset < starts ? offset : starts - 1;
}

int64_t TokenDataset::val_window_count(int seq_len) const {
  return seq_len >= 1 && val_size_ >= 1 ? (val_size_ - 1) / seq_len : 0;
}

int64_t TokenDataset::val_window_offset(int64_t global_index, int seq_len) const {
  const int64_t windows = val_window_count(seq_len);
  MOEBENCH_CHECK(windows >= 1, "validation split shorter than seq_len + 1 (call require_seq_len)");
  MOEBENCH_CHECK(global_index >= 0, "negative validation sequence index");
  return train_size() + (global_index % windows) * seq_len;
}

void TokenDataset::read(int32_t* tokens, int64_t offset, int64_t count) const {
  if (file_) {
    file_->read(tokens, offset, count);
    return;
  }
  MOEBENCH_CHECK(offset >= 0 && count >= 0 && offset <= size_ - count,
                 "window outside the tokens of " + name_);
  if (count > 0) {
    std::memcpy(tokens, memory_.data() + offset, static_cast<size_t>(count) * sizeof(int32_t));
  }
}

void TokenDataset::read_window(int32_t* inputs, int32_t* targets, int64_t offset,
                               int seq_len) const {
  read(inputs, offset, seq_len);  // tokens [offset, offset + T)
  if (seq_len > 1) {
    std::memcpy(targets, inputs + 1, static_cast<size_t>(seq_len - 1) * sizeof(int32_t));
  }
  read(targets + seq_len - 1, offset + seq_len, 1);  // token offset + T
}

namespace {
void check_slice(const BatchSlice& slice) {
  MOEBENCH_CHECK(slice.ranks >= 1 && slice.rank >= 0 && slice.rank < slice.ranks,
                 "batch slice: rank outside [0, ranks)");
  MOEBENCH_CHECK(slice.batch_size >= 1, "batch slice: batch_size must be >= 1");
}
}  // namespace

void TokenDataset::train_batch(int32_t* inputs, int32_t* targets, const BatchSlice& slice,
                               int64_t step, uint64_t seed) const {
  check_slice(slice);
  require_seq_len(slice.seq_len);
  const int64_t T = slice.seq_len;
  for (int b = 0; b < slice.batch_size; ++b) {
    const int64_t global_index = static_cast<int64_t>(slice.rank) * slice.batch_size + b;
    const int64_t offset = train_window_offset(seed, step, global_index, slice.seq_len);
    read_window(inputs + b * T, targets + b * T, offset, slice.seq_len);
  }
}

void TokenDataset::val_batch(int32_t* inputs, int32_t* targets, const BatchSlice& slice,
                             int64_t batch_index) const {
  check_slice(slice);
  require_seq_len(slice.seq_len);
  const int64_t T = slice.seq_len;
  const int64_t global_batch = static_cast<int64_t>(slice.ranks) * slice.batch_size;
  for (int b = 0; b < slice.batch_size; ++b) {
    const int64_t global_index =
        batch_index * global_batch + static_cast<int64_t>(slice.rank) * slice.batch_size + b;
    read_window(inputs + b * T, targets + b * T, val_window_offset(global_index, slice.seq_len),
                slice.seq_len);
  }
}

}  // namespace moebench
