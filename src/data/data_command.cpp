// `moebench data` (see data.hpp, docs/data.md): writes a token shard of a text file (--input)
// or of the built-in story corpus. Rank 0 does the work while the other ranks wait in
// agree_or_throw, which also carries rank 0's UsageError to every rank.
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/cli.hpp"
#include "moebench/data.hpp"

namespace moebench {
namespace {

namespace po = boost::program_options;

constexpr int64_t kChunkTokens = int64_t{1} << 20;  // tokens per read/append of a text file

struct DataOptions {
  std::string input;  // "" = the built-in corpus
  std::string out;
  bool bpe = false;
  uint32_t vocab_size = 0;      // BPE only
  std::string tokenizer_model;  // BPE only: where the SentencePiece model goes
  uint64_t corpus_bytes = kDefaultCorpusBytes;
  uint64_t seed = kDefaultCorpusSeed;
};

po::options_description data_options() {
  po::options_description options("moebench data options");
  // clang-format off
  options.add_options()
      ("input", po::value<std::string>()->value_name("FILE"),
       "text file to tokenize (UTF-8; '<|endoftext|>' separators are kept as bytes); "
       "default: the built-in story corpus")
      ("out", po::value<std::string>()->value_name("FILE")->required(),
       "token shard to write (required)")
      ("tokenizer", po::value<std::string>()->default_value("byte"),
       "byte (vocabulary 256, token = byte value) | bpe (SentencePiece BPE trained on the text)")
      ("vocab-size", po::value<uint32_t>()->value_name("N"),
       "BPE vocabulary size (required with --tokenizer bpe; at least 256 bytes + the characters)")
      ("tokenizer-model", po::value<std::string>()->value_name("FILE"),
       "where the BPE model goes (default: --out with the extension .model)")
      ("corpus-bytes", po::value<uint64_t>()->default_value(kDefaultCorpusBytes),
       "size of the built-in corpus in bytes (whole stories, without --input)")
      ("seed", po::value<uint64_t>()->default_value(kDefaultCorpusSeed),
       "seed of the built-in corpus");
  // clang-format on
  return options;
}

DataOptions resolve(const cli::ParsedCommand& parsed) {
  const po::variables_map& vm = parsed.values;
  DataOptions o;
  if (vm.count("input") != 0) o.input = vm["input"].as<std::string>();
  o.out = vm["out"].as<std::string>();
  o.corpus_bytes = vm["corpus-bytes"].as<uint64_t>();
  o.seed = vm["seed"].as<uint64_t>();
  const std::string tokenizer = vm["tokenizer"].as<std::string>();
  if (tokenizer != "byte" && tokenizer != "bpe") {
    throw UsageError("--tokenizer: unknown value '" + tokenizer + "' (accepted: byte, bpe)");
  }
  o.bpe = tokenizer == "bpe";
  if (o.bpe) {
    if (vm.count("vocab-size") == 0) {
      throw UsageError("--tokenizer bpe needs --vocab-size N, e.g. --vocab-size 1024");
    }
    o.vocab_size = vm["vocab-size"].as<uint32_t>();
    o.tokenizer_model = vm.count("tokenizer-model") != 0 ? vm["tokenizer-model"].as<std::string>()
                                                         : tokenizer_model_beside(o.out);
    if (o.tokenizer_model.empty() || o.tokenizer_model == o.out) {
      throw UsageError("--tokenizer-model must be a path other than --out");
    }
  } else if (vm.count("vocab-size") != 0 || vm.count("tokenizer-model") != 0) {
    throw UsageError(
        "--vocab-size and --tokenizer-model apply to --tokenizer bpe only; the byte tokenizer "
        "has 256 tokens and no model");
  }
  if (vm.count("input") != 0 && o.input.empty()) {
    throw UsageError(
        "--input: the path is empty; pass a text file, or omit --input to use the "
        "built-in story corpus");
  }
  if (o.out.empty()) {
    throw UsageError(
        "--out: the path is empty; pass the token shard to write, e.g. --out tokens.bin");
  }
  if (o.corpus_bytes == 0) {
    throw UsageError("--corpus-bytes must be >= 1 (default " + std::to_string(kDefaultCorpusBytes) +
                     ")");
  }
  for (size_t i = 0; i < parsed.resolved.size(); ++i) {
    if (parsed.resolved[i].first == "corpus-bytes" && !o.input.empty() &&
        parsed.resolved_sources[i] == "command line") {
      throw UsageError(
          "--corpus-bytes sets the size of the built-in corpus and does nothing "
          "with --input; drop one of them");
    }
  }
  return o;
}

struct Written {
  int64_t tokens = 0;
  int64_t file_bytes = 0;
  int64_t text_bytes = 0;
  uint32_t vocab = kByteVocabSize;
  std::string source;  // "'x.txt'" or "the built-in story corpus (seed 1)"
};

std::string builtin_source(const DataOptions& o) {
  return "the built-in story corpus (seed " + std::to_string(o.seed) + ")";
}

// --input as a validated text file (UsageError naming the path and the fix otherwise).
TokenShardReader open_input_text(const DataOptions& o) {
  if (is_token_shard(o.input)) {
    throw UsageError("--input: '" + o.input +
                     "' is already a token shard; pass it to --data "
                     "as it is, or give --input the text it was made from");
  }
  try {
    return TokenShardReader::open_text_bytes(o.input);
  } catch (const UsageError& error) {
    throw UsageError(std::string("--input: ") + error.what() +
                     " (or omit --input to use the built-in story corpus)");
  }
}

Written write_byte_shard(const DataOptions& o) {
  TokenShardWriter writer(o.out, kByteVocabSize);
  Written written;
  if (o.input.empty()) {
    const std::vector<int32_t> tokens =
        encode_bytes(generate_stories(o.seed, static_cast<size_t>(o.corpus_bytes)));
    writer.append(tokens.data(), tokens.size());
    written.source = builtin_source(o);
  } else {
    // The byte tokenizer maps each byte to itself, so the text file is read in windows as byte
    // tokens and never held in memory whole.
    const TokenShardReader text = open_input_text(o);
    std::vector<int32_t> chunk(static_cast<size_t>(std::min(kChunkTokens, text.size())));
    for (int64_t offset = 0; offset < text.size(); offset += kChunkTokens) {
      const int64_t count = std::min(kChunkTokens, text.size() - offset);
      text.read(chunk.data(), offset, count);
      writer.append(chunk.data(), static_cast<size_t>(count));
    }
    written.source = "'" + o.input + "'";
  }
  writer.close();
  written.tokens = written.text_bytes = writer.tokens_written();
  written.file_bytes = writer.file_bytes();
  return written;
}

// Trains the BPE model on the text, then encodes the text line by line into the shard; the
// shard and the model each appear only once complete (and the shard is removed again if the
// model cannot be written).
Written write_bpe_shard(const DataOptions& o) {
  std::unique_ptr<std::istream> text;
  auto rewind = [&] {
    if (o.input.empty()) {
      text = std::make_unique<std::istringstream>(
          generate_stories(o.seed, static_cast<size_t>(o.corpus_bytes)));
    } else {
      text = std::make_unique<std::ifstream>(o.input, std::ios::binary);
    }
    if (!*text) throw UsageError("--input: '" + o.input + "' cannot be read; check its permissions");
  };
  Written written;
  written.source = o.input.empty() ? builtin_source(o) : "'" + o.input + "'";
  if (!o.input.empty()) open_input_text(o);  // the checks and messages of the byte path
  rewind();
  const BpeTokenizer tokenizer = BpeTokenizer::train(*text, {o.vocab_size, o.seed});
  rewind();
  TokenShardWriter writer(o.out, tokenizer.vocab_size());
  std::vector<int32_t> tokens;
  std::string line;
  while (std::getline(*text, line)) {
    if (!text->eof()) line.push_back('\n');  // the last line may end without one
    written.text_bytes += static_cast<int64_t>(line.size());
    tokenizer.encode(line, tokens);
    if (static_cast<int64_t>(tokens.size()) >= kChunkTokens) {
      writer.append(tokens.data(), tokens.size());
      tokens.clear();
    }
  }
  if (text->bad()) throw UsageError("--input: reading '" + o.input + "' failed");
  writer.append(tokens.data(), tokens.size());
  writer.close();
  try {
    tokenizer.save(o.tokenizer_model);
  } catch (const UsageError& error) {
    std::remove(o.out.c_str());
    throw UsageError(std::string("--tokenizer-model: ") + error.what());
  }
  written.tokens = writer.tokens_written();
  written.file_bytes = writer.file_bytes();
  written.vocab = tokenizer.vocab_size();
  return written;
}

}  // namespace

int run_data_command(int argc, char** argv) {
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const po::options_description options = data_options();
  const cli::ParsedCommand parsed = cli::parse_command("data", argc, argv, options);
  if (parsed.help) {
    if (rank == 0) {
      cli::print_command_help(
          std::cout, "data",
          "Prepares token shards of a text file (--input) or of the built-in story corpus:\n"
          "byte-level tokens, or BPE tokens of a SentencePiece model trained on the same text\n"
          "(--tokenizer bpe --vocab-size N; the model is written beside the shard). Format:\n"
          "docs/data.md. Rank 0 does the work; run it on one process.",
          options);
    }
    return 0;
  }
  const DataOptions o = resolve(parsed);  // same verdict on every rank
  if (rank == 0) cli::print_config_table(std::cout, "data", parsed);

  Written written;
  std::string error;
  if (rank == 0) {
    try {
      written = o.bpe ? write_bpe_shard(o) : write_byte_shard(o);
    } catch (const UsageError& usage) {
      error = usage.what();
    }
  }
  cli::agree_or_throw(comm, error.empty(), error);  // the other ranks wait here
  if (rank == 0) {
    std::printf("moebench data: wrote %lld tokens (%lld bytes, %s tokenizer, vocab %u, %.3f text "
                "bytes/token) from %s to '%s'\n",
                static_cast<long long>(written.tokens), static_cast<long long>(written.file_bytes),
                o.bpe ? "bpe" : "byte", written.vocab,
                static_cast<double>(written.text_bytes) / static_cast<double>(std::max<int64_t>(written.tokens, 1)),
                written.source.c_str(), o.out.c_str());
    if (o.bpe) std::printf("moebench data: wrote the tokenizer model to '%s'\n", o.tokenizer_model.c_str());
  }
  return 0;
}

}  // namespace moebench
