// The BPE tokenizer: lossless round trip, token bytes that sum to the text's size (what bits
// per byte relies on), determinism, save/load, and the errors a user can run into.
#include <gtest/gtest.h>

#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "data_test_helpers.hpp"
#include "moebench/check.hpp"
#include "moebench/data.hpp"

namespace moebench {
namespace {

BpeTokenizer train_on(const std::string& text, uint32_t vocab, uint64_t seed = 1) {
  std::istringstream lines(text);
  return BpeTokenizer::train(lines, {vocab, seed});
}

int64_t bytes_of(const std::vector<int32_t>& tokens, const std::vector<int32_t>& token_bytes) {
  int64_t sum = 0;
  for (int32_t token : tokens) sum += token_bytes.at(static_cast<size_t>(token));
  return sum;
}

const std::string& corpus() {
  static const std::string text = generate_stories(kDefaultCorpusSeed, 60000);
  return text;
}

TEST(BpeTokenizer, RoundTripsAndTokenBytesSumToTheTextSize) {
  const BpeTokenizer tokenizer = train_on(corpus(), 500);
  EXPECT_EQ(tokenizer.vocab_size(), 500u);
  const std::vector<int32_t> token_bytes = tokenizer.token_bytes();
  ASSERT_EQ(token_bytes.size(), 500u);
  // Training text, and text with what the model never saw: UTF-8 characters (byte fallback),
  // runs of spaces, tabs, a separator, leading and trailing blanks, blank lines.
  const std::vector<std::string> texts = {
      corpus().substr(0, 5000),
      "  Lily said h\xC3\xA9llo \xF0\x9F\x98\x80 to the  cat.\t<|endoftext|>Tom\n\n\nend  ",
      "\n", "", "x",
  };
  for (const std::string& text : texts) {
    std::vector<int32_t> tokens;
    tokenizer.encode(text, tokens);
    EXPECT_EQ(tokenizer.decode(tokens.data(), tokens.size()), text);
    EXPECT_EQ(bytes_of(tokens, token_bytes), static_cast<int64_t>(text.size())) << text;
  }
  // It compresses the text it was trained on, and the separator is one token.
  std::vector<int32_t> tokens;
  tokenizer.encode(corpus(), tokens);
  EXPECT_LT(tokens.size() * 2, corpus().size());
  std::vector<int32_t> separator;
  tokenizer.encode("<|endoftext|>", separator);
  ASSERT_EQ(separator.size(), 1u);
  EXPECT_EQ(token_bytes[separator[0]], 13);
}

TEST(BpeTokenizer, EncodingIsLineByLineWithNewlineByteTokens) {
  const BpeTokenizer tokenizer = train_on(corpus(), 400);
  std::vector<int32_t> whole, pieces;
  tokenizer.encode("The cat sat.\nThe dog ran.", whole);
  tokenizer.encode("The cat sat.\n", pieces);  // encode appends
  tokenizer.encode("The dog ran.", pieces);
  EXPECT_EQ(whole, pieces);
  std::vector<int32_t> newline;
  tokenizer.encode("\n", newline);
  ASSERT_EQ(newline.size(), 1u);
  EXPECT_EQ(tokenizer.decode(newline.data(), 1), "\n");
}

TEST(BpeTokenizer, SameTextAndSeedGiveTheSameModel) {
  test::TempDir dir;
  train_on(corpus(), 400).save(dir.file("a.model"));
  train_on(corpus(), 400).save(dir.file("b.model"));
  EXPECT_EQ(test::read_file(dir.file("a.model")), test::read_file(dir.file("b.model")));
  const BpeTokenizer loaded = BpeTokenizer::load(dir.file("a.model"));
  const BpeTokenizer trained = train_on(corpus(), 400);
  std::vector<int32_t> a, b;
  loaded.encode(corpus().substr(0, 3000), a);
  trained.encode(corpus().substr(0, 3000), b);
  EXPECT_EQ(a, b);
  EXPECT_EQ(loaded.token_bytes(), trained.token_bytes());
}

TEST(BpeTokenizer, TokenBytesForByteDataAndForBpeShards) {
  test::TempDir dir;
  EXPECT_EQ(token_bytes_for(kByteVocabSize, "x.txt", ""), std::vector<int32_t>(256, 1));
  const BpeTokenizer tokenizer = train_on(corpus(), 400);
  tokenizer.save(dir.file("data.model"));
  EXPECT_EQ(tokenizer_model_beside(dir.file("data.bin")), dir.file("data.model"));
  EXPECT_EQ(token_bytes_for(400, dir.file("data.bin"), ""), tokenizer.token_bytes());
  EXPECT_EQ(token_bytes_for(400, dir.file("other.bin"), dir.file("data.model")),
            tokenizer.token_bytes());
  // No model beside the shard, a model of another vocabulary.
  EXPECT_THROW(token_bytes_for(400, dir.file("other.bin"), ""), UsageError);
  try {
    token_bytes_for(512, dir.file("data.bin"), "");
    FAIL() << "a vocabulary mismatch was accepted";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("has a vocabulary of 400 but"), std::string::npos)
        << error.what();
  }
}

TEST(BpeTokenizer, BadVocabulariesAndModelFilesAreUsageErrors) {
  test::TempDir dir;
  EXPECT_THROW(train_on(corpus(), 100), UsageError);    // below 256 bytes + characters
  EXPECT_THROW(train_on(corpus(), 60000), UsageError);  // more pieces than the text has
  EXPECT_THROW(BpeTokenizer::load(dir.file("none.model")), UsageError);
  test::write_file(dir.file("garbage.model"), "not a model");
  try {
    BpeTokenizer::load(dir.file("garbage.model"));
    FAIL() << "a garbage model was accepted";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("is not a moebench BPE tokenizer model"),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace moebench
