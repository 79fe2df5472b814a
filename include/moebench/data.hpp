// Data (DESIGN §6): the built-in story corpus, the byte-level tokenizer, token shards on disk,
// and the dataset the trainer draws its batches from. Documented in docs/data.md.
//
//  - generate_stories: deterministic children's stories (a function of the seed only); stories
//    are separated by one blank line ("\n\n"); pure printable ASCII plus '\n'.
//  - Byte tokenizer: vocabulary 256, token = byte value (UTF-8 safe by construction).
//  - Token shard: a 32-byte little-endian header (magic "MOETOK\0\0", version, token width,
//    token count, vocabulary size, reserved) followed by the tokens; read in windows with
//    pread, never held in memory.
//  - TokenDataset: the built-in corpus, a text file (its bytes are its tokens) or a shard;
//    the last `val_fraction` of the tokens is the validation split; batches are windows at
//    offsets that depend on (seed, step, global sequence index) only, never on the rank count.
//
// Token ids are int32_t everywhere in memory (the routing code's type).
#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moebench {

// ---- built-in corpus ------------------------------------------------------------------------

inline constexpr uint64_t kDefaultCorpusSeed = 1;
inline constexpr size_t kDefaultCorpusBytes = 2000000;
inline constexpr std::string_view kStorySeparator = "\n\n";  // between two stories

// Whole stories until the text holds at least `target_bytes` bytes (so the size is in
// [target_bytes, target_bytes + one story), a story being 400-750 bytes); "" for 0. Story i is a
// pure function of (seed, i), so a shorter corpus is a prefix of a longer one with the same
// seed, on every platform.
std::string generate_stories(uint64_t seed, size_t target_bytes);

// ---- byte-level tokenizer -------------------------------------------------------------------

inline constexpr uint32_t kByteVocabSize = 256;

// tokens [text.size()] = the byte values of text.
void encode_bytes(int32_t* tokens, std::string_view text);
std::vector<int32_t> encode_bytes(std::string_view text);
// The bytes back; every token must be in [0, 256) (moebench::Error otherwise).
std::string decode_bytes(const int32_t* tokens, size_t count);

// ---- BPE tokenizer (SentencePiece) ----------------------------------------------------------

// A SentencePiece BPE model set up so that tokens cover the text's bytes exactly: identity
// normalisation, no dummy prefix, whitespace kept, byte fallback (a character the model has no
// piece for becomes its UTF-8 bytes), '<|endoftext|>' one user-defined piece, no BOS/EOS. So
// decode(encode(text)) == text, and the bytes of the tokens of a text sum to its size, which
// is what bits per byte needs. A newline is never inside a piece: text is encoded line by
// line and each '\n' is the byte token <0x0A>.
struct BpeTrainOptions {
  uint32_t vocab_size = 1024;
  uint64_t seed = kDefaultCorpusSeed;           // SentencePiece's sampling and shuffling
  int64_t max_sentences = 1000000;             // lines sampled for training (all if fewer)
};

class BpeTokenizer {
 public:
  // Trains on the lines of `lines` (read to the end). UsageError with SentencePiece's reason
  // and the fix when the vocabulary is too small for the byte fallback or too large for the
  // text.
  static BpeTokenizer train(std::istream& lines, const BpeTrainOptions& options);
  // UsageError naming the file and the fix when it is missing or not a SentencePiece model.
  static BpeTokenizer load(const std::string& path);

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  // Writes the model to "<path>.tmp", then renames it (UsageError when it cannot).
  void save(const std::string& path) const;
  uint32_t vocab_size() const;
  // Appends the tokens of `text` (any bytes; newlines included) to `tokens`.
  void encode(std::string_view text, std::vector<int32_t>& tokens) const;
  std::string decode(const int32_t* tokens, size_t count) const;
  // bytes[id] = the number of text bytes token `id` stands for (0 for control pieces).
  std::vector<int32_t> token_bytes() const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The tokenizer model written beside a shard by `moebench data --tokenizer bpe`: the shard's
// path with its extension replaced by ".model" (data/x.bin -> data/x.model).
std::string tokenizer_model_beside(const std::string& shard_path);

// bytes[id] for every token of a dataset's vocabulary: all 1 for byte-level (256) tokens;
// otherwise the BPE model at `model_path` ("" = tokenizer_model_beside(data_path)), whose
// vocabulary must match. UsageError naming the files and the fix otherwise.
std::vector<int32_t> token_bytes_for(uint32_t vocab_size, const std::string& data_path,
                                     const std::string& model_path);

// ---- token shards ---------------------------------------------------------------------------

inline constexpr char kShardMagic[8] = {'M', 'O', 'E', 'T', 'O', 'K', '\0', '\0'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr int64_t kShardHeaderBytes = 32;

// The smallest width (1, 2 or 4 bytes) that holds every token of a vocabulary.
int shard_token_width(uint32_t vocab_size);

// Writes a shard incrementally: the tokens go to "<path>.tmp" and close() renames it to
// `path`, so a failed or interrupted write never leaves a file that looks complete (the
// destructor removes the temporary file when close() was not reached).
class TokenShardWriter {
 public:
  // token_width 0 = shard_token_width(vocab_size). UsageError naming the path and the fix
  // when the file cannot be created (missing directory, no permission, path is a directory).
  TokenShardWriter(const std::string& path, uint32_t vocab_size, int token_width = 0);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // tokens [count], each in [0, vocab_size) (moebench::Error otherwise).
  void append(const int32_t* tokens, size_t count);
  // Writes the token count into the header, flushes, renames into place.
  void close();

  int64_t tokens_written() const { return count_; }
  int64_t file_bytes() const { return kShardHeaderBytes + count_ * width_; }

 private:
  std::string path_, temp_path_;
  uint32_t vocab_ = 0;
  int width_ = 0;
  int64_t count_ = 0;
  int fd_ = -1;
  std::vector<unsigned char> buffer_;  // packed little-endian tokens not yet written
  void write_all(const void* data, size_t bytes, int64_t offset);
  void flush_buffer();
};

// Writes tokens [count] as a complete shard.
void write_token_shard(const std::string& path, const int32_t* tokens, size_t count,
                       uint32_t vocab_size, int token_width = 0);

// Random access to the tokens of a file without holding it in memory: every read() is a
// pread of the window asked for. Movable, not copyable; read() is const and thread-safe.
class TokenShardReader {
 public:
  // Opens and validates a token shard. UsageError naming the file and the fix when it is
  // missing, a directory, not a shard (bad magic), of an unknown version, of a bad token
  // width, shorter or longer than its header says, or (expected_vocab > 0) of another
  // vocabulary size than the caller's tokenizer.
  explicit TokenShardReader(const std::string& path, uint32_t expected_vocab = 0);
  // A text file read as byte-level tokens: vocabulary 256, width 1, no header; the byte
  // tokenizer needs no encoding step, so the file's bytes are its tokens. UsageError when
  // the file is missing, a directory or empty.
  static TokenShardReader open_text_bytes(const std::string& path);

  ~TokenShardReader();
  TokenShardReader(TokenShardReader&& other) noexcept;
  TokenShardReader& operator=(TokenShardReader&& other) noexcept;
  TokenShardReader(const TokenShardReader&) = delete;
  TokenShardReader& operator=(const TokenShardReader&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return count_; }  // tokens
  uint32_t vocab_size() const { return vocab_; }
  int token_width() const { return width_; }

  // tokens [count] = the tokens [offset, offset + count). The window must lie inside the
  // file; a token outside the vocabulary (a corrupt shard) or a failed read throws
  // moebench::Error naming the file.
  void read(int32_t* tokens, int64_t offset, int64_t count) const;

 private:
  TokenShardReader() = default;
  std::string path_;
  int fd_ = -1;
  int64_t data_offset_ = 0;  // bytes before the first token
  int width_ = 1;
  int64_t count_ = 0;
  uint32_t vocab_ = 0;
};

// True when the file starts with kShardMagic (false when it cannot be read).
bool is_token_shard(const std::string& path);

// ---- dataset, split and batches -------------------------------------------------------------

inline constexpr double kDefaultValFraction = 0.05;

// This rank's slice of a global batch: rank r of P takes the global sequences
// [r*B, (r+1)*B) of a global batch of P*B sequences, each seq_len tokens.
struct BatchSlice {
  int rank = 0;        // r
  int ranks = 1;       // P
  int batch_size = 1;  // B, sequences per rank
  int seq_len = 1;     // T
};

class TokenDataset {
 public:
  // The built-in story corpus, byte tokens (generated in memory).
  static TokenDataset builtin(uint64_t seed = kDefaultCorpusSeed,
                              size_t bytes = kDefaultCorpusBytes,
                              double val_fraction = kDefaultValFraction);
  // --data FILE: a token shard (detected by its magic) or a text file (anything else; its
  // bytes are byte-level tokens, "<|endoftext|>" separators kept as bytes). A ".bin" file
  // without the magic is refused as a bad shard. expected_vocab > 0 must match the shard
  // (a text file gives 256). UsageError naming the path and the fix for a missing, empty or
  // malformed file, a directory, or a bad val_fraction.
  static TokenDataset open(const std::string& path, uint32_t expected_vocab = 0,
                           double val_fraction = kDefaultValFraction);
  // Tokens already in memory (tests, tools); `name` stands for the path in messages.
  static TokenDataset from_tokens(std::vector<int32_t> tokens, uint32_t vocab_size,
                                  const std::string& name,
                                  double val_fraction = kDefaultValFraction);

  const std::string& name() const { return name_; }  // path, or "built-in corpus"
  uint32_t vocab_size() const { return vocab_; }
  int64_t size() const { return size_; }  // all tokens
  // Train = tokens [0, train_size()), validation = [train_size(), size()).
  // val tokens = floor(size * val_fraction), train tokens = the rest.
  int64_t train_size() const { return size_ - val_size_; }
  int64_t val_size() const { return val_size_; }

  // UsageError unless a window of seq_len + 1 tokens fits in both splits (and seq_len >= 1).
  void require_seq_len(int seq_len) const;

  // Start of the training window of global sequence `global_index` at `step`: uniform in
  // [0, train_size - seq_len - 1], a pure function of (seed, step, global_index, seq_len).
  int64_t train_window_offset(uint64_t seed, int64_t step, int64_t global_index, int seq_len) const;
  // Validation windows: consecutive, stride seq_len, each seq_len + 1 tokens, inside the
  // validation split; there are (val_size - 1) / seq_len of them. Global sequence g of any
  // validation batch uses window g mod count.
  int64_t val_window_count(int seq_len) const;
  int64_t val_window_offset(int64_t global_index, int seq_len) const;

  // inputs [B, T], targets [B, T] (targets[b][t] = inputs[b][t + 1] of the same window):
  // this rank's slice of the global training batch at `step`. No allocation.
  void train_batch(int32_t* inputs, int32_t* targets, const BatchSlice& slice, int64_t step,
                   uint64_t seed) const;
  // The same for validation batch `batch_index` (global sequence g = batch_index*P*B + r*B + b).
  void val_batch(int32_t* inputs, int32_t* targets, const BatchSlice& slice,
                 int64_t batch_index) const;

  // tokens [count] = tokens [offset, offset + count) of the whole sequence.
  void read(int32_t* tokens, int64_t offset, int64_t count) const;

 private:
  TokenDataset() = default;
  void set_split(double val_fraction);
  void read_window(int32_t* inputs, int32_t* targets, int64_t offset, int seq_len) const;

  std::string name_;
  uint32_t vocab_ = 0;
  int64_t size_ = 0;
  int64_t val_size_ = 0;
  std::vector<int32_t> memory_;           // built-in corpus / from_tokens
  std::optional<TokenShardReader> file_;  // the file read in windows, or none
};

// ---- the command ----------------------------------------------------------------------------

// `moebench data` (argv[0] is "data"): writes a token shard of a text file or of the built-in
// corpus. Returns the exit status; throws UsageError on bad input.
int run_data_command(int argc, char** argv);

}  // namespace moebench
