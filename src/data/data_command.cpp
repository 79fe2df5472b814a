// `moebench data` (see data.hpp, docs/data.md): writes a token shard of a text file (--input)
// or of the built-in story corpus. Rank 0 does the work while the other ranks wait in
// agree_or_throw, which also carries rank 0's UsageError to every rank.
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
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
       "byte (vocabulary 256, token = byte value); bpe is not built yet")
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
  if (tokenizer == "bpe") {
    throw UsageError(
        "--tokenizer bpe: BPE (SentencePiece) token shards are not built yet; "
        "use --tokenizer byte");
  }
  if (tokenizer != "byte") {
    throw UsageError("--tokenizer: unknown value '" + tokenizer +
                     "' (accepted: byte; bpe is planned)");
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
  std::string source;  // "'x.txt'" or "the built-in story corpus (seed 1)"
};

Written write_shard(const DataOptions& o) {
  Written written;
  if (o.input.empty()) {
    const std::string text = generate_stories(o.seed, static_cast<size_t>(o.corpus_bytes));
    const std::vector<int32_t> tokens = encode_bytes(text);
    TokenShardWriter writer(o.out, kByteVocabSize);
    writer.append(tokens.data(), tokens.size());
    writer.close();
    written = {writer.tokens_written(), writer.file_bytes(),
               "the built-in story corpus (seed " + std::to_string(o.seed) + ")"};
    return written;
  }
  if (is_token_shard(o.input)) {
    throw UsageError("--input: '" + o.input +
                     "' is already a token shard; pass it to --data "
                     "as it is, or give --input the text it was made from");
  }
  // The byte tokenizer maps each byte to itself, so the text file is read in windows as byte
  // tokens and never held in memory whole.
  TokenShardReader text = [&] {
    try {
      return TokenShardReader::open_text_bytes(o.input);
    } catch (const UsageError& error) {
      throw UsageError(std::string("--input: ") + error.what() +
                       " (or omit --input to use the built-in story corpus)");
    }
  }();
  TokenShardWriter writer(o.out, kByteVocabSize);
  std::vector<int32_t> chunk(static_cast<size_t>(std::min(kChunkTokens, text.size())));
  for (int64_t offset = 0; offset < text.size(); offset += kChunkTokens) {
    const int64_t count = std::min(kChunkTokens, text.size() - offset);
    text.read(chunk.data(), offset, count);
    writer.append(chunk.data(), static_cast<size_t>(count));
  }
  writer.close();
  written = {writer.tokens_written(), writer.file_bytes(), "'" + o.input + "'"};
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
          "Prepares token shards: byte-level tokens of a text file (--input) or of the built-in\n"
          "story corpus, written as a moebench token shard (format: docs/data.md). Rank 0 does\n"
          "the work; run it on one process.",
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
      written = write_shard(o);
    } catch (const UsageError& usage) {
      error = usage.what();
    }
  }
  cli::agree_or_throw(comm, error.empty(), error);  // the other ranks wait here
  if (rank == 0) {
    std::printf(
        "moebench data: wrote %lld tokens (%lld bytes, byte tokenizer, vocab %u, 1 byte/token) "
        "from %s to '%s'\n",
        static_cast<long long>(written.tokens), static_cast<long long>(written.file_bytes),
        kByteVocabSize, written.source.c_str(), o.out.c_str());
  }
  return 0;
}

}  // namespace moebench
