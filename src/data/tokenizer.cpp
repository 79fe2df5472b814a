// The byte-level tokenizer: token = byte value, vocabulary 256. Any byte string round-trips, so
// UTF-8 text (multi-byte characters included) is safe by construction.
#include <string>
#include <string_view>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/data.hpp"

namespace moebench {

void encode_bytes(int32_t* tokens, std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    tokens[i] = static_cast<int32_t>(static_cast<unsigned char>(text[i]));
  }
}

std::vector<int32_t> encode_bytes(std::string_view text) {
  std::vector<int32_t> tokens(text.size());
  encode_bytes(tokens.data(), text);
  return tokens;
}

std::string decode_bytes(const int32_t* tokens, size_t count) {
  std::string text(count, '\0');
  for (size_t i = 0; i < count; ++i) {
    MOEBENCH_CHECK(tokens[i] >= 0 && tokens[i] < static_cast<int32_t>(kByteVocabSize),
                   "byte token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                       " is outside [0, 256)");
    text[i] = static_cast<char>(static_cast<unsigned char>(tokens[i]));
  }
  return text;
}

}  // namespace moebench
