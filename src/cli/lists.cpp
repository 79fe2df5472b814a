// Comma-separated option values ("0.9,1.0,1.25", "64,128"): strict parsing, one clear
// UsageError per bad entry naming the option, the entry and the whole value.
#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/cli.hpp"

namespace moebench::cli {
namespace {

// "capacity-factor" -> "--capacity-factor"; names that already carry dashes stay as they are.
std::string display_name(const std::string& option) {
  if (!option.empty() && option.front() == '-') {
    return option;
  }
  return "--" + option;
}

std::string_view trim(std::string_view text) {
  const char* const spaces = " \t\r\n";
  const auto first = text.find_first_not_of(spaces);
  if (first == std::string_view::npos) {
    return {};
  }
  const auto last = text.find_last_not_of(spaces);
  return text.substr(first, last - first + 1);
}

// Splits on ',' and trims each entry; an empty value or an empty entry is a UsageError.
std::vector<std::string_view> split_entries(const std::string& option, const std::string& text,
                                            const std::string& expected) {
  if (trim(text).empty()) {
    throw UsageError(display_name(option) + ": empty value (expected " + expected + ")");
  }
  std::vector<std::string_view> entries;
  std::string_view rest = text;
  while (true) {
    const auto comma = rest.find(',');
    const std::string_view entry = trim(rest.substr(0, comma));
    if (entry.empty()) {
      throw UsageError(display_name(option) + ": empty entry in '" + text + "' (expected " +
                       expected + ")");
    }
    entries.push_back(entry);
    if (comma == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(comma + 1);
  }
  return entries;
}

// from_chars does not take a leading '+'; users do write "+1".
std::string_view skip_plus(std::string_view entry) {
  if (entry.size() > 1 && entry.front() == '+' && entry[1] != '-' && entry[1] != '+') {
    entry.remove_prefix(1);
  }
  return entry;
}

}  // namespace

std::vector<double> parse_double_list(const std::string& option, const std::string& text) {
  const std::string expected = "a comma-separated list such as 0.9,1.0,1.25";
  std::vector<double> values;
  for (const std::string_view entry : split_entries(option, text, expected)) {
    const std::string_view digits = skip_plus(entry);
    double value = 0.0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    const std::string quoted = "entry '" + std::string(entry) + "' of '" + text + "'";
    if (error == std::errc::result_out_of_range) {
      throw UsageError(display_name(option) + ": " + quoted + " is out of range");
    }
    if (error != std::errc() || end != digits.data() + digits.size()) {
      throw UsageError(display_name(option) + ": " + quoted + " is not a number (expected " +
                       expected + ")");
    }
    if (!std::isfinite(value)) {
      throw UsageError(display_name(option) + ": " + quoted + " is not a finite number");
    }
    values.push_back(value);
  }
  return values;
}

std::vector<int> parse_int_list(const std::string& option, const std::string& text, int min_value) {
  const std::string bound = "an integer >= " + std::to_string(min_value);
  const std::string expected =
      "a comma-separated list of integers >= " + std::to_string(min_value) + " such as " +
      (min_value <= 64 ? std::string("64,128") : std::to_string(min_value));
  std::vector<int> values;
  for (const std::string_view entry : split_entries(option, text, expected)) {
    const std::string_view digits = skip_plus(entry);
    long long value = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    const std::string quoted = "entry '" + std::string(entry) + "'";
    if (error == std::errc::invalid_argument || end != digits.data() + digits.size()) {
      throw UsageError(display_name(option) + ": " + quoted + " of '" + text +
                       "' is not an integer (expected " + expected + ")");
    }
    if (error == std::errc::result_out_of_range || value < min_value ||
        value > std::numeric_limits<int>::max()) {
      const std::string range =
          (error == std::errc() && value < min_value)
              ? bound
              : bound + " and <= " + std::to_string(std::numeric_limits<int>::max());
      throw UsageError(display_name(option) + ": " + quoted + " must be " + range + " (in '" +
                       text + "')");
    }
    values.push_back(static_cast<int>(value));
  }
  return values;
}

int64_t parse_byte_size(const std::string& option, const std::string& text) {
  const std::string name = option.rfind("--", 0) == 0 ? option : "--" + option;
  std::string digits = text;
  int64_t multiplier = 1;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'K': case 'k': multiplier = int64_t{1} << 10; break;
      case 'M': case 'm': multiplier = int64_t{1} << 20; break;
      case 'G': case 'g': multiplier = int64_t{1} << 30; break;
      default: break;
    }
    if (multiplier != 1) digits.pop_back();
  }
  int64_t value = 0;
  const char* first = digits.data();
  const char* last = digits.data() + digits.size();
  const auto [end, error] = std::from_chars(first, last, value);
  if (digits.empty() || error != std::errc() || end != last || value < 1 ||
      value > (int64_t{1} << 50) / multiplier) {
    throw UsageError(name + ": '" + text +
                     "' is not a size in bytes (expected a positive integer with an optional "
                     "K, M or G suffix, such as 4096, 64K or 16M)");
  }
  return value * multiplier;
}

}  // namespace moebench::cli
