// parse_command: command line + INI config file through Boost.Program_options, every
// library exception turned into one UsageError that names the option and the fix.
#include <algorithm>
#include <boost/any.hpp>
#include <charconv>
#include <fstream>
#include <ostream>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/cli.hpp"

namespace moebench::cli {
namespace {

// Unix style without prefix guessing: "--iter" must not silently mean "--iters".
constexpr int kCommandLineStyle =
    static_cast<int>(po::command_line_style::default_style) &
    ~static_cast<int>(po::command_line_style::allow_guessing);

// Where a parsed_options batch came from, for the wording of errors.
struct Source {
  bool config_file = false;
  std::string path;       // config file path
  std::string help_hint;  // "run 'moebench <command> --help' for the options"

  // "--iters" on the command line, "'iters'" in a config file.
  std::string option(const std::string& key) const {
    return config_file ? "'" + key + "'" : "'--" + key + "'";
  }
  std::string prefix() const { return config_file ? "config file '" + path + "': " : ""; }
  std::string fail(const std::string& what) const { return prefix() + what + "; " + help_hint; }
};

// Boost names options "--iters", "-h" or "iters" depending on where they came from.
std::string key_of(const std::string& name) {
  std::string key = name;
  while (!key.empty() && key.front() == '-') {
    key.erase(key.begin());
  }
  const auto equals = key.find('=');
  if (equals != std::string::npos) {
    key.erase(equals);
  }
  return key;
}

template <typename T>
bool holds(const po::value_semantic* semantic) {
  return dynamic_cast<const po::typed_value<T>*>(semantic) != nullptr;
}

bool is_unsigned_semantic(const po::value_semantic* semantic) {
  return holds<unsigned>(semantic) || holds<unsigned long>(semantic) ||
         holds<unsigned long long>(semantic) || holds<std::vector<unsigned>>(semantic);
}

// What a value of this option has to look like, for "expects X, got Y".
std::string expected_value(const po::value_semantic* semantic) {
  if (is_unsigned_semantic(semantic)) {
    return "a non-negative integer";
  }
  if (holds<int>(semantic) || holds<long>(semantic) || holds<long long>(semantic) ||
      holds<std::vector<int>>(semantic)) {
    return "an integer";
  }
  if (holds<double>(semantic) || holds<float>(semantic) || holds<std::vector<double>>(semantic)) {
    return "a number";
  }
  if (holds<bool>(semantic)) {
    return "true or false";
  }
  return "a valid value";
}

const po::option_description* find_option(const po::options_description& all,
                                          const std::string& key) {
  return all.find_nothrow(key, /*approx=*/false, /*long_ignore_case=*/false,
                          /*short_ignore_case=*/false);
}

// The text the user gave for `key` in this batch (first occurrence), or "".
std::string given_value(const po::parsed_options& parsed, const std::string& key) {
  for (const auto& option : parsed.options) {
    if (option.string_key == key) {
      std::string joined;
      for (const auto& token : option.value) {
        joined += (joined.empty() ? "" : " ") + token;
      }
      return joined;
    }
  }
  return "";
}

// One sentence for any Boost.Program_options error.
std::string describe(const po::error& error, const Source& source,
                     const po::options_description& all, const po::parsed_options* parsed) {
  if (const auto* unknown = dynamic_cast<const po::unknown_option*>(&error)) {
    const std::string name = unknown->get_option_name();
    return source.fail("unknown option '" +
                       (source.config_file ? key_of(name) : name.substr(0, name.find('='))) + "'");
  }
  if (const auto* ambiguous = dynamic_cast<const po::ambiguous_option*>(&error)) {
    return source.fail("ambiguous option " + source.option(key_of(ambiguous->get_option_name())));
  }
  if (const auto* syntax = dynamic_cast<const po::invalid_config_file_syntax*>(&error)) {
    return source.fail("line '" + syntax->tokens() + "' is not of the form 'name = value'");
  }
  if (const auto* syntax = dynamic_cast<const po::invalid_syntax*>(&error)) {
    const std::string key = key_of(syntax->get_option_name());
    switch (syntax->kind()) {
      case po::invalid_syntax::missing_parameter:
        return source.fail("option " + source.option(key) + " needs a value");
      case po::invalid_syntax::empty_adjacent_parameter:
        return source.fail("option " + source.option(key) + " needs a value after '='");
      case po::invalid_syntax::extra_parameter:
        return source.fail("option " + source.option(key) + " takes no value");
      default:
        return source.fail(std::string(error.what()));
    }
  }
  if (const auto* invalid = dynamic_cast<const po::validation_error*>(&error)) {
    const std::string key = key_of(invalid->get_option_name());
    const po::option_description* description = find_option(all, key);
    switch (invalid->kind()) {
      case po::validation_error::invalid_option_value:
      case po::validation_error::invalid_bool_value: {
        const std::string expected = description != nullptr
                                         ? expected_value(description->semantic().get())
                                         : "a valid value";
        const std::string got = parsed != nullptr ? given_value(*parsed, key) : "";
        return source.fail("option " + source.option(key) + " expects " + expected + ", got '" +
                           got + "'");
      }
      case po::validation_error::multiple_values_not_allowed:
        return source.fail("option " + source.option(key) + " takes a single value");
      case po::validation_error::at_least_one_value_required:
        return source.fail("option " + source.option(key) + " needs a value");
      default:
        return source.fail(std::string(error.what()));
    }
  }
  if (const auto* multiple = dynamic_cast<const po::multiple_occurrences*>(&error)) {
    return source.fail("option " + source.option(key_of(multiple->get_option_name())) +
                       " was given more than once");
  }
  if (const auto* required = dynamic_cast<const po::required_option*>(&error)) {
    return source.fail("option '--" + key_of(required->get_option_name()) +
                       "' is required (give it on the command line or in --config)");
  }
  return source.fail(std::string(error.what()));
}

// Boost's lexical_cast turns "-1" into 4294967295 for an unsigned option; refuse that.
void reject_negative_unsigned(const po::parsed_options& parsed, const po::options_description& all,
                              const Source& source) {
  for (const auto& option : parsed.options) {
    const po::option_description* description = find_option(all, option.string_key);
    if (description == nullptr || !is_unsigned_semantic(description->semantic().get())) {
      continue;
    }
    for (const auto& token : option.value) {
      const auto first = token.find_first_not_of(" \t");
      if (first != std::string::npos && token[first] == '-') {
        throw UsageError(source.fail("option " + source.option(option.string_key) +
                                     " expects a non-negative integer, got '" + token + "'"));
      }
    }
  }
}

void store_checked(const po::parsed_options& parsed, po::variables_map& values,
                   const po::options_description& all, const Source& source) {
  try {
    po::store(parsed, values);
  } catch (const po::error& error) {
    throw UsageError(describe(error, source, all, &parsed));
  }
  reject_negative_unsigned(parsed, all, source);
}

// Boost takes the token after "--capacity-factor" as its value even when it is the next
// option ("--capacity-factor --iters 3"), which then surfaces as a confusing error about
// "3". Catch the forgotten value first.
void reject_option_as_value(int argc, char** argv, const po::options_description& all,
                            const Source& source) {
  for (int i = 1; i + 1 < argc; ++i) {
    const std::string word = argv[i];
    const std::string next = argv[i + 1];
    if (word.rfind("--", 0) != 0 || word.find('=') != std::string::npos ||
        next.rfind("--", 0) != 0 || next.size() <= 2) {
      continue;
    }
    const po::option_description* option = find_option(all, key_of(word));
    if (option == nullptr || option->semantic()->max_tokens() == 0 ||
        find_option(all, key_of(next)) == nullptr) {
      continue;
    }
    throw UsageError(source.fail("option '" + word + "' needs a value (it is followed by '" +
                                 next.substr(0, next.find('=')) + "')"));
  }
}

// The first argument that is not an option, for "unexpected argument 'x'".
std::string stray_argument(int argc, char** argv, const po::options_description& all,
                           const po::positional_options_description& positional) {
  try {
    const po::parsed_options loose = po::command_line_parser(argc, argv)
                                         .options(all)
                                         .style(kCommandLineStyle)
                                         .allow_unregistered()
                                         .run();
    const std::vector<std::string> positionals =
        po::collect_unrecognized(loose.options, po::include_positional);
    std::vector<std::string> plain;
    for (const auto& token : positionals) {
      if (token.empty() || token.front() != '-') {
        plain.push_back(token);
      }
    }
    const unsigned allowed = positional.max_total_count();
    if (allowed < plain.size()) {
      return plain[allowed];
    }
  } catch (const po::error&) {
    // Fall through: the caller reports the generic message.
  }
  return "";
}

std::string shortest(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

template <typename T>
bool format_as(const boost::any& value, std::string& text) {
  if (const T* typed = boost::any_cast<T>(&value)) {
    if constexpr (std::is_same_v<T, std::string>) {
      text = *typed;
    } else if constexpr (std::is_same_v<T, bool>) {
      text = *typed ? "true" : "false";
    } else if constexpr (std::is_floating_point_v<T>) {
      text = shortest(static_cast<double>(*typed));
    } else {
      text = std::to_string(*typed);
    }
    return true;
  }
  return false;
}

template <typename T>
bool format_list_as(const boost::any& value, std::string& text) {
  if (const auto* list = boost::any_cast<std::vector<T>>(&value)) {
    text.clear();
    for (const T& item : *list) {
      std::string one;
      format_as<T>(boost::any(item), one);
      text += (text.empty() ? "" : ",") + one;
    }
    return true;
  }
  return false;
}

std::string format_value(const boost::any& value) {
  std::string text;
  if (format_as<std::string>(value, text) || format_as<int>(value, text) ||
      format_as<long>(value, text) || format_as<long long>(value, text) ||
      format_as<unsigned>(value, text) || format_as<unsigned long>(value, text) ||
      format_as<unsigned long long>(value, text) || format_as<double>(value, text) ||
      format_as<float>(value, text) || format_as<bool>(value, text) ||
      format_list_as<std::string>(value, text) || format_list_as<int>(value, text) ||
      format_list_as<double>(value, text)) {
    return text;
  }
  return "(set)";
}

bool mentions(const po::parsed_options& parsed, const std::string& key) {
  for (const auto& option : parsed.options) {
    if (option.string_key == key) {
      return true;
    }
  }
  return false;
}

}  // namespace

po::options_description common_options() {
  po::options_description common("common options");
  // clang-format off
  common.add_options()
      ("help,h", po::bool_switch(), "print the options of this command and exit")
      ("config", po::value<std::string>()->value_name("FILE"),
       "read options from an INI file (name = value, the long option names); "
       "the command line wins");
  // clang-format on
  return common;
}

void print_command_help(std::ostream& out, const std::string& command, const std::string& summary,
                        const po::options_description& options, const std::string& synopsis) {
  out << "usage: moebench " << command << " " << synopsis << "\n";
  if (!summary.empty()) {
    out << summary << "\n";
  }
  po::options_description all;  // one description so both groups share the column layout
  all.add(options).add(common_options());
  out << "\n" << all << "\n";
}

std::string format_command_line(int argc, char** argv) {
  std::string line = "moebench";
  for (int i = 0; i < argc; ++i) {
    const std::string argument = argv[i] != nullptr ? argv[i] : "";
    const bool plain =
        !argument.empty() &&
        argument.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789_-+=.,/:@%^") == std::string::npos;
    line += ' ';
    if (plain) {
      line += argument;
    } else {
      line += '\'';
      for (const char c : argument) {
        line += c == '\'' ? std::string("'\\''") : std::string(1, c);
      }
      line += '\'';
    }
  }
  return line;
}

ParsedCommand parse_command(const std::string& command, int argc, char** argv,
                            const po::options_description& options,
                            const po::positional_options_description* positional) {
  ParsedCommand parsed;
  parsed.command_line = format_command_line(argc, argv);

  po::options_description all;
  all.add(options).add(common_options());
  const po::positional_options_description no_positional;
  const po::positional_options_description& positional_used =
      positional != nullptr ? *positional : no_positional;

  Source from_command_line;
  from_command_line.help_hint = "run 'moebench " + command + " --help' for the options";

  reject_option_as_value(argc, argv, all, from_command_line);
  po::parsed_options given(&all);
  try {
    given = po::command_line_parser(argc, argv)
                .options(all)
                .positional(positional_used)
                .style(kCommandLineStyle)
                .run();
  } catch (const po::too_many_positional_options_error&) {
    const std::string stray = stray_argument(argc, argv, all, positional_used);
    throw UsageError(from_command_line.fail(
        stray.empty() ? std::string("too many arguments") : "unexpected argument '" + stray + "'"));
  } catch (const po::error& error) {
    throw UsageError(describe(error, from_command_line, all, nullptr));
  }
  store_checked(given, parsed.values, all, from_command_line);

  parsed.help = parsed.values["help"].as<bool>();
  if (parsed.help) {
    return parsed;  // no config file, no required-option checks: the command prints usage
  }

  po::parsed_options from_file_options(&all);
  bool have_config = false;
  if (parsed.values.count("config") != 0) {
    Source from_file = from_command_line;
    from_file.config_file = true;
    from_file.path = parsed.values["config"].as<std::string>();
    std::ifstream file(from_file.path);
    if (!file) {
      throw UsageError("cannot read config file '" + from_file.path + "' (check the path)");
    }
    try {
      from_file_options = po::parse_config_file(file, all, /*allow_unregistered=*/false);
    } catch (const po::error& error) {
      throw UsageError(describe(error, from_file, all, nullptr));
    }
    if (file.bad()) {
      throw UsageError("cannot read config file '" + from_file.path + "' (check the path)");
    }
    store_checked(from_file_options, parsed.values, all, from_file);
    have_config = true;
  }

  try {
    po::notify(parsed.values);
  } catch (const po::error& error) {
    throw UsageError(describe(error, from_command_line, all, nullptr));
  }

  for (const auto& option : options.options()) {
    const std::string& key = option->long_name();
    const auto found = parsed.values.find(key);
    if (found == parsed.values.end() || found->second.empty()) {
      parsed.resolved.emplace_back(key, "(unset)");
      parsed.resolved_sources.emplace_back("unset");
      continue;
    }
    parsed.resolved.emplace_back(key, format_value(found->second.value()));
    if (found->second.defaulted()) {
      parsed.resolved_sources.emplace_back("default");
    } else if (mentions(given, key)) {
      parsed.resolved_sources.emplace_back("command line");
    } else if (have_config && mentions(from_file_options, key)) {
      parsed.resolved_sources.emplace_back("config file");
    } else {
      parsed.resolved_sources.emplace_back("default");
    }
  }
  return parsed;
}

void print_config_table(std::ostream& out, const std::string& command,
                        const ParsedCommand& parsed) {
  std::size_t name_width = 0;
  std::size_t value_width = 0;
  for (const auto& [name, value] : parsed.resolved) {
    name_width = std::max(name_width, name.size());
    value_width = std::max(value_width, value.size());
  }
  const bool with_sources = parsed.resolved_sources.size() == parsed.resolved.size();
  out << "moebench " << command << " \u2014 configuration\n";
  for (std::size_t i = 0; i < parsed.resolved.size(); ++i) {
    const auto& [name, value] = parsed.resolved[i];
    out << "  " << name << ' ' << std::string(name_width - name.size() + 3, '.') << ' ' << value;
    const bool show_source = with_sources && parsed.resolved_sources[i] != "default" &&
                             parsed.resolved_sources[i] != "unset";
    if (show_source) {
      out << std::string(value_width - value.size() + 2, ' ') << '(' << parsed.resolved_sources[i]
          << ')';
    }
    out << '\n';
  }
}

}  // namespace moebench::cli
