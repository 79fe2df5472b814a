// The BPE tokenizer (see data.hpp, docs/data.md): SentencePiece set up so that tokens cover
// the text's bytes exactly, which is what bits per byte and a lossless round trip need.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <unordered_map>
#include <utility>

#include "moebench/check.hpp"
#include "moebench/data.hpp"

namespace moebench {

namespace {

constexpr std::string_view kWordBoundary = "\xE2\x96\x81";  // U+2581, SentencePiece's space
constexpr const char* kNewlinePiece = "<0x0A>";
constexpr const char* kEndOfText = "<|endoftext|>";

// The training lines of a stream, empty lines skipped (they carry no pieces).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(std::istream& in) : in_(in) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    do {
      done_ = !std::getline(in_, line_);
    } while (!done_ && line_.empty());
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override {
    return in_.bad() ? sentencepiece::util::Status(sentencepiece::util::StatusCode::kDataLoss,
                                                   "reading the training text failed")
                     : sentencepiece::util::Status();
  }

 private:
  std::istream& in_;
  std::string line_;
  bool done_ = false;
};

}  // namespace

struct BpeTokenizer::Impl {
  sentencepiece::SentencePieceProcessor processor;
  std::string proto;  // the serialized model
  int newline = -1;   // id of the byte token <0x0A>
};

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  impl_->newline = impl_->processor.PieceToId(kNewlinePiece);
  MOEBENCH_CHECK(impl_->processor.IsByte(impl_->newline),
                 "the BPE model has no byte piece <0x0A>: it was not trained with byte fallback");
}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer BpeTokenizer::train(std::istream& lines, const BpeTrainOptions& options) {
  const std::unordered_map<std::string, std::string> spec = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"user_defined_symbols", kEndOfText},
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"input_sentence_size", std::to_string(options.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", "1"},
      {"minloglevel", "2"},
  };
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned>(options.seed));
  auto impl = std::make_unique<Impl>();
  LineIterator iterator(lines);
  const sentencepiece::util::Status trained =
      sentencepiece::SentencePieceTrainer::Train(spec, &iterator, &impl->proto);
  if (!trained.ok()) {
    throw UsageError("--vocab-size " + std::to_string(options.vocab_size) +
                     ": SentencePiece could not train a BPE model on this text: " +
                     trained.ToString() +
                     " (a BPE vocabulary needs room for the 256 byte tokens and every character, "
                     "and at most as many pieces as the text has; pick a size in between)");
  }
  const sentencepiece::util::Status loaded = impl->processor.LoadFromSerializedProto(impl->proto);
  MOEBENCH_CHECK(loaded.ok(), "loading the BPE model just trained failed: " + loaded.ToString());
  return BpeTokenizer(std::move(impl));
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  const std::string fix = "; write it with `moebench data --tokenizer bpe --vocab-size N --out DATA.bin`";
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    throw UsageError("tokenizer model '" + path + "' does not exist" + fix);
  }
  auto impl = std::make_unique<Impl>();
  {
    std::ifstream in(path, std::ios::binary);
    impl->proto.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) throw UsageError("tokenizer model '" + path + "' cannot be read" + fix);
  }
  const sentencepiece::util::Status loaded = impl->processor.LoadFromSerializedProto(impl->proto);
  if (!loaded.ok() || impl->processor.PieceToId(kNewlinePiece) < 0 ||
      !impl->processor.IsByte(impl->processor.PieceToId(kNewlinePiece))) {
    throw UsageError("'" + path + "' is not a moebench BPE tokenizer model (a SentencePiece model "
                     "with byte fallback)" + fix);
  }
  return BpeTokenizer(std::move(impl));
}

void BpeTokenizer::save(const std::string& path) const {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(impl_->proto.data(), static_cast<std::streamsize>(impl_->proto.size()));
    out.close();
    if (!out) {
      std::remove(temp.c_str());
      throw UsageError("cannot write the tokenizer model '" + path +
                       "'; check that its directory exists and is writable");
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    throw UsageError("cannot move the tokenizer model into place at '" + path + "'");
  }
}

uint32_t BpeTokenizer::vocab_size() const {
  return static_cast<uint32_t>(impl_->processor.GetPieceSize());
}

void BpeTokenizer::encode(std::string_view text, std::vector<int32_t>& tokens) const {
  std::vector<int> ids;
  while (true) {
    const size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    if (!line.empty()) {
      const sentencepiece::util::Status encoded = impl_->processor.Encode(line, &ids);
      MOEBENCH_CHECK(encoded.ok(), "BPE encoding failed: " + encoded.ToString());
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
    if (end == std::string_view::npos) return;
    tokens.push_back(impl_->newline);
    text.remove_prefix(end + 1);
  }
}

std::string BpeTokenizer::decode(const int32_t* tokens, size_t count) const {
  const int vocab = impl_->processor.GetPieceSize();
  std::vector<int> ids(tokens, tokens + count);
  for (size_t i = 0; i < count; ++i) {
    MOEBENCH_CHECK(ids[i] >= 0 && ids[i] < vocab, "BPE token " + std::to_string(ids[i]) +
                                                      " at position " + std::to_string(i) +
                                                      " is outside the vocabulary");
  }
  std::string text;
  const sentencepiece::util::Status decoded = impl_->processor.Decode(ids, &text);
  MOEBENCH_CHECK(decoded.ok(), "BPE decoding failed: " + decoded.ToString());
  return text;
}

std::vector<int32_t> BpeTokenizer::token_bytes() const {
  const sentencepiece::SentencePieceProcessor& sp = impl_->processor;
  std::vector<int32_t> bytes(static_cast<size_t>(sp.GetPieceSize()), 0);
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    if (sp.IsByte(id)) {
      bytes[id] = 1;
    } else if (!sp.IsControl(id) && !sp.IsUnknown(id)) {
      // Each U+2581 (3 bytes in the piece) stands for one space of the text.
      const std::string& piece = sp.IdToPiece(id);
      int32_t count = 0;
      for (size_t at = 0; at < piece.size();) {
        const bool boundary = piece.compare(at, kWordBoundary.size(), kWordBoundary) == 0;
        at += boundary ? kWordBoundary.size() : 1;
        ++count;
      }
      bytes[id] = count;
    }
  }
  return bytes;
}

std::string tokenizer_model_beside(const std::string& shard_path) {
  return std::filesystem::path(shard_path).replace_extension(".model").string();
}

std::vector<int32_t> token_bytes_for(uint32_t vocab_size, const std::string& data_path,
                                     const std::string& model_path) {
  if (vocab_size == kByteVocabSize && model_path.empty()) {
    return std::vector<int32_t>(kByteVocabSize, 1);
  }
  const std::string path = model_path.empty() ? tokenizer_model_beside(data_path) : model_path;
  BpeTokenizer tokenizer = [&] {
    try {
      return BpeTokenizer::load(path);
    } catch (const UsageError& error) {
      throw UsageError("'" + data_path + "' holds tokens of a vocabulary of " +
                       std::to_string(vocab_size) +
                       "; bits per byte needs the tokenizer model that wrote them (--tokenizer-model, "
                       "default: beside the data): " + error.what());
    }
  }();
  if (tokenizer.vocab_size() != vocab_size) {
    throw UsageError("tokenizer model '" + path + "' has a vocabulary of " +
                     std::to_string(tokenizer.vocab_size()) + " but '" + data_path + "' holds " +
                     std::to_string(vocab_size) +
                     "; pass the model that wrote the data with --tokenizer-model");
  }
  return tokenizer.token_bytes();
}

}  // namespace moebench
