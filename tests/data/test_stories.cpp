// The built-in story corpus and the byte tokenizer: determinism, size, character set, story
// structure, vocabulary, and a learnability proxy (conditional byte entropy).
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <regex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/data.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

// The default corpus, generated once for the whole file (2 MB, ~0.2 s).
const std::string& default_corpus() {
  static const std::string text = generate_stories(kDefaultCorpusSeed, kDefaultCorpusBytes);
  return text;
}

std::vector<std::string> split_stories(const std::string& text) {
  std::vector<std::string> stories;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(kStorySeparator, start);
    stories.push_back(
        text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return stories;
    start = end + kStorySeparator.size();
  }
}

// Empirical H(X_i | X_{i-order} .. X_{i-1}) in bits per byte (order 0: unigram entropy).
double conditional_entropy(const std::string& text, int order) {
  std::unordered_map<uint64_t, double> joint;    // (context, byte) -> count
  std::unordered_map<uint64_t, double> context;  // context -> count
  for (size_t i = static_cast<size_t>(order); i < text.size(); ++i) {
    uint64_t key = 0;
    for (int k = order; k >= 1; --k) key = key << 8 | static_cast<unsigned char>(text[i - k]);
    joint[key << 8 | static_cast<unsigned char>(text[i])] += 1.0;
    context[key] += 1.0;
  }
  const double n = static_cast<double>(text.size() - static_cast<size_t>(order));
  double bits = 0.0;
  for (const auto& [key, count] : joint) {
    bits -= count / n * std::log2(count / context.at(key >> 8));
  }
  return bits;
}

TEST(Stories, SameSeedSameBytesOtherSeedDiffers) {
  const std::string a = generate_stories(7, 100000);
  EXPECT_EQ(a, generate_stories(7, 100000));
  const std::string b = generate_stories(8, 100000);
  EXPECT_NE(a, b);
  EXPECT_NE(a.substr(0, 300), b.substr(0, 300));  // differs from the first story on
}

TEST(Stories, ShorterCorpusIsAPrefixOfALongerOne) {
  const std::string shorter = generate_stories(3, 50000);
  const std::string longer = generate_stories(3, 120000);
  ASSERT_LT(shorter.size(), longer.size());
  EXPECT_EQ(longer.compare(0, shorter.size(), shorter), 0);
  EXPECT_EQ(longer.compare(shorter.size(), kStorySeparator.size(), kStorySeparator), 0);
}

TEST(Stories, SizeWithinTenPercentOfTarget) {
  EXPECT_TRUE(generate_stories(1, 0).empty());
  for (size_t target : {size_t{20000}, size_t{300000}, kDefaultCorpusBytes}) {
    const std::string text =
        target == kDefaultCorpusBytes ? default_corpus() : generate_stories(5, target);
    EXPECT_GE(text.size(), target);
    EXPECT_LE(static_cast<double>(text.size()), 1.1 * static_cast<double>(target));
  }
}

TEST(Stories, PrintableAsciiAndWholeStories) {
  const std::string& text = default_corpus();
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    ASSERT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7F)) << "byte " << int(c) << " at " << i;
  }
  EXPECT_EQ(text.find("\n\n\n"), std::string::npos);
  EXPECT_EQ(text.find("  "), std::string::npos);
  EXPECT_EQ(text.find("{"), std::string::npos) << "an unfilled template slot";
  const std::vector<std::string> stories = split_stories(text);
  ASSERT_GT(stories.size(), 1000u);
  size_t with_dialogue = 0;
  for (const std::string& story : stories) {
    ASSERT_FALSE(story.empty());
    EXPECT_TRUE(std::isupper(static_cast<unsigned char>(story.front()))) << story;
    // Setting, problem, resolution and ending: at least three lines, each a finished sentence.
    size_t lines = 1, quotes = 0;
    for (size_t i = 0; i < story.size(); ++i) {
      if (story[i] == '\n') ++lines;
      if (story[i] == '"') ++quotes;
      if (story[i] == '\n' || i + 1 == story.size()) {
        const char last = story[story[i] == '\n' ? i - 1 : i];
        EXPECT_TRUE(last == '.' || last == '!' || last == '?' || last == '"') << story;
      }
    }
    EXPECT_GE(lines, 3u) << story;
    EXPECT_EQ(quotes % 2, 0u) << "unbalanced quotes in: " << story;
    if (quotes >= 2) ++with_dialogue;
  }
  EXPECT_EQ(with_dialogue, stories.size()) << "every plot has dialogue";
}

TEST(Stories, ManyDistinctStoriesFromASmallVocabulary) {
  const std::vector<std::string> stories = split_stories(default_corpus());
  const std::set<std::string> distinct(stories.begin(), stories.end());
  EXPECT_GE(static_cast<double>(distinct.size()), 0.99 * static_cast<double>(stories.size()));
  std::set<std::string> words;
  std::string word;
  for (const char c : default_corpus()) {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      word += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!word.empty()) {
      words.insert(word);
      word.clear();
    }
  }
  // "A few hundred words": measured 355 for the default corpus.
  EXPECT_GE(words.size(), 200u);
  EXPECT_LE(words.size(), 600u);
  for (const char* expected : {"once", "said", "friends", "happy", "park", "cat", "ball"}) {
    EXPECT_EQ(words.count(expected), 1u) << expected;
  }
}

TEST(Stories, ArticlesAgreeWithTheNextWord) {
  const std::regex a_before_vowel(R"(\b[Aa] [aeiou])");
  const std::regex an_before_consonant(R"(\b[Aa]n [^aeiou])");
  std::smatch match;
  const std::string text = default_corpus().substr(0, 400000);
  EXPECT_FALSE(std::regex_search(text, match, a_before_vowel)) << match.str();
  EXPECT_FALSE(std::regex_search(text, match, an_before_consonant)) << match.str();
}

// Learnability proxy. Measured on the default corpus (2 MB): H0 4.46, H1 3.20, H2 1.95,
// H3 1.16 bits/byte. For comparison, 2 MB of random bytes give H1 7.98, and the 248 KB
// public-domain classics sample of the project's shared data gives H1 3.48, H3 2.01 (an
// estimate biased low by its smaller size). A first-order bound of 2.5 bits is out of reach
// for any text made of real English words (Shannon's letter digram entropy is ~3.3 bits), so
// the thresholds sit just above the measurements: H1 < 3.4 says the byte statistics are
// English-like, H3 < 1.4 says the text is far more predictable from a short context than real
// prose, which is what makes it learnable by a small model in a few thousand steps.
TEST(Stories, ConditionalByteEntropyIsLow) {
  const std::string& text = default_corpus();
  const double h1 = conditional_entropy(text, 1);
  const double h3 = conditional_entropy(text, 3);
  EXPECT_LT(h1, 3.4);
  EXPECT_LT(h3, 1.4);
  EXPECT_LT(h3, 0.5 * h1);

  // The estimator itself: random bytes of the same length are near 8 bits at order 1.
  std::string noise(text.size(), '\0');
  for (size_t i = 0; i < noise.size(); ++i) {
    noise[i] = static_cast<char>(random_bits(99, 0, i) & 0xFF);
  }
  EXPECT_GT(conditional_entropy(noise, 1), 7.9);
}

TEST(ByteTokenizer, RoundTripsUtf8) {
  const std::string text =
      "Once upon a time \xC3\xA9t\xC3\xA9, \xE4\xB8\x96\xE7\x95\x8C!\n<|endoftext|>\n";
  const std::vector<int32_t> tokens = encode_bytes(text);
  ASSERT_EQ(tokens.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    EXPECT_EQ(tokens[i], static_cast<int32_t>(static_cast<unsigned char>(text[i])));
    EXPECT_GE(tokens[i], 0);
    EXPECT_LT(tokens[i], static_cast<int32_t>(kByteVocabSize));
  }
  EXPECT_EQ(tokens[17], 0xC3);  // a UTF-8 lead byte is a token >= 128, not negative
  EXPECT_EQ(decode_bytes(tokens.data(), tokens.size()), text);
  std::string all(256, '\0');
  for (int b = 0; b < 256; ++b) all[static_cast<size_t>(b)] = static_cast<char>(b);
  const std::vector<int32_t> every = encode_bytes(all);
  EXPECT_EQ(decode_bytes(every.data(), every.size()), all);
}

TEST(ByteTokenizer, DecodeRefusesTokensOutsideTheVocabulary) {
  const int32_t bad[] = {65, 256};
  EXPECT_THROW(decode_bytes(bad, 2), Error);
  const int32_t negative[] = {-1};
  EXPECT_THROW(decode_bytes(negative, 1), Error);
}

}  // namespace
}  // namespace moebench
