// Unit tests of the command-line machinery: list parsing, parse_command with INI files, the
// error messages (they must name the option and the bad value), the resolved table, and
// agree_or_throw.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/cli.hpp"

namespace {

namespace cli = moebench::cli;
namespace po = boost::program_options;

// argv for parse_command: owns the strings, argv[0] is the command name.
class Argv {
 public:
  explicit Argv(std::vector<std::string> words) : words_(std::move(words)) {
    for (auto& word : words_) {
      pointers_.push_back(word.data());
    }
    pointers_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(words_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> words_;
  std::vector<char*> pointers_;
};

// A scratch INI file removed at the end of the test.
class IniFile {
 public:
  explicit IniFile(const std::string& text) {
    static int counter = 0;
    path_ = ::testing::TempDir() + "moebench_test_cli_" + std::to_string(::getpid()) + "_" +
            std::to_string(counter++) + ".ini";
    std::ofstream(path_) << text;
  }
  ~IniFile() { std::remove(path_.c_str()); }
  IniFile(const IniFile&) = delete;
  IniFile& operator=(const IniFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

po::options_description capacity_options() {
  po::options_description options("capacity options");
  // clang-format off
  options.add_options()
      ("iters", po::value<int>()->default_value(10), "timed iterations")
      ("capacity-factor", po::value<std::string>()->default_value("1.0"), "CF list")
      ("lr", po::value<double>()->default_value(0.25), "learning rate")
      ("tokens", po::value<std::int64_t>()->default_value(4096), "tokens per rank")
      ("seed", po::value<unsigned>()->default_value(1234u), "seed")
      ("verbose", po::bool_switch(), "more output")
      ("out", po::value<std::string>(), "trace path");
  // clang-format on
  return options;
}

cli::ParsedCommand parse(std::vector<std::string> words,
                         const po::positional_options_description* positional = nullptr) {
  words.insert(words.begin(), "capacity");
  Argv args(std::move(words));
  return cli::parse_command("capacity", args.argc(), args.argv(), capacity_options(), positional);
}

// The UsageError message of parse(words), or "(no error)".
std::string usage_error_of(std::vector<std::string> words) {
  try {
    parse(std::move(words));
  } catch (const moebench::UsageError& error) {
    return error.what();
  }
  return "(no error)";
}

std::string resolved_value(const cli::ParsedCommand& parsed, const std::string& name) {
  for (const auto& [key, value] : parsed.resolved) {
    if (key == name) {
      return value;
    }
  }
  return "(missing)";
}

std::string resolved_source(const cli::ParsedCommand& parsed, const std::string& name) {
  for (std::size_t i = 0; i < parsed.resolved.size(); ++i) {
    if (parsed.resolved[i].first == name) {
      return parsed.resolved_sources.at(i);
    }
  }
  return "(missing)";
}

template <typename Function>
std::string message_of(Function&& function) {
  try {
    function();
  } catch (const moebench::UsageError& error) {
    return error.what();
  }
  return "(no error)";
}

// EXPECT_CONTAINS(text, part): text contains part; prints both otherwise.
::testing::AssertionResult Contains(const char* text_expression, const char* part_expression,
                                    const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << text_expression << " does not contain " << part_expression
                                       << "\n  text: " << text << "\n  part: " << part;
}
#define EXPECT_CONTAINS(text, part) EXPECT_PRED_FORMAT2(Contains, text, part)

// ---------------------------------------------------------------- lists

TEST(DoubleList, ParsesEntriesAndTrimsSpaces) {
  EXPECT_EQ(cli::parse_double_list("--capacity-factor", "0.9,1.0,1.25"),
            (std::vector<double>{0.9, 1.0, 1.25}));
  EXPECT_EQ(cli::parse_double_list("--capacity-factor", " 2 , -1.5e-1,+3 "),
            (std::vector<double>{2.0, -0.15, 3.0}));
  EXPECT_EQ(cli::parse_double_list("--capacity-factor", "0"), (std::vector<double>{0.0}));
}

TEST(DoubleList, RejectsNonNumberNamingOptionAndEntry) {
  const std::string message =
      message_of([] { cli::parse_double_list("--capacity-factor", "1.0,abc"); });
  EXPECT_EQ(message,
            "--capacity-factor: entry 'abc' of '1.0,abc' is not a number (expected a "
            "comma-separated list such as 0.9,1.0,1.25)");
}

TEST(DoubleList, RejectsTrailingJunkEmptyEntriesAndNonFinite) {
  EXPECT_CONTAINS(message_of([] { cli::parse_double_list("--capacity-factor", "1.0x"); }),
                  "entry '1.0x' of '1.0x' is not a number");
  EXPECT_CONTAINS(message_of([] { cli::parse_double_list("--capacity-factor", "1.0,,2"); }),
                  "--capacity-factor: empty entry in '1.0,,2'");
  EXPECT_CONTAINS(message_of([] { cli::parse_double_list("--capacity-factor", "1.0,"); }),
                  "empty entry");
  EXPECT_CONTAINS(message_of([] { cli::parse_double_list("--capacity-factor", "  "); }),
                  "--capacity-factor: empty value");
  EXPECT_CONTAINS(message_of([] { cli::parse_double_list("--capacity-factor", "1,inf"); }),
                  "entry 'inf' of '1,inf' is not a finite number");
  EXPECT_CONTAINS(message_of([] { cli::parse_double_list("--capacity-factor", "nan"); }),
                  "is not a finite number");
  EXPECT_CONTAINS(message_of([] { cli::parse_double_list("--capacity-factor", "1e999"); }),
                  "entry '1e999' of '1e999' is out of range");
  EXPECT_CONTAINS(message_of([] { cli::parse_double_list("--capacity-factor", "1 2"); }),
                  "entry '1 2' of '1 2' is not a number");
}

TEST(IntList, ParsesEntries) {
  EXPECT_EQ(cli::parse_int_list("--experts", "64,128", 1), (std::vector<int>{64, 128}));
  EXPECT_EQ(cli::parse_int_list("--experts", " 8 ", 1), (std::vector<int>{8}));
  EXPECT_EQ(cli::parse_int_list("--top-k", "0,-3", -3), (std::vector<int>{0, -3}));
}

TEST(IntList, RejectsBelowMinimumNamingOptionAndEntry) {
  const std::string message = message_of([] { cli::parse_int_list("--experts", "8,-4", 1); });
  EXPECT_CONTAINS(message, "--experts: entry '-4' must be an integer >= 1");
  EXPECT_CONTAINS(message_of([] { cli::parse_int_list("--experts", "0", 1); }),
                  "entry '0' must be an integer >= 1");
}

TEST(IntList, RejectsNonIntegers) {
  EXPECT_CONTAINS(message_of([] { cli::parse_int_list("--experts", "8,abc", 1); }),
                  "--experts: entry 'abc' of '8,abc' is not an integer");
  EXPECT_CONTAINS(message_of([] { cli::parse_int_list("--experts", "1.5", 1); }),
                  "entry '1.5' of '1.5' is not an integer");
  EXPECT_CONTAINS(message_of([] { cli::parse_int_list("--experts", "4,,8", 1); }),
                  "--experts: empty entry in '4,,8'");
  EXPECT_CONTAINS(message_of([] { cli::parse_int_list("--experts", "", 1); }),
                  "--experts: empty value");
  EXPECT_CONTAINS(message_of([] { cli::parse_int_list("--experts", "99999999999", 1); }),
                  "entry '99999999999' must be an integer >= 1 and <= 2147483647");
}

TEST(IntList, AddsDashesToABareOptionName) {
  EXPECT_CONTAINS(message_of([] { cli::parse_int_list("experts", "x", 1); }),
                  "--experts: entry 'x'");
}

// ---------------------------------------------------------------- parse_command

TEST(ParseCommand, ResolvedListsEveryOptionWithDefaultsInDeclarationOrder) {
  const cli::ParsedCommand parsed = parse({});
  EXPECT_FALSE(parsed.help);
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"iters", "10"},  {"capacity-factor", "1.0"}, {"lr", "0.25"},    {"tokens", "4096"},
      {"seed", "1234"}, {"verbose", "false"},       {"out", "(unset)"}};
  EXPECT_EQ(parsed.resolved, expected);
  ASSERT_EQ(parsed.resolved_sources.size(), parsed.resolved.size());
  EXPECT_EQ(resolved_source(parsed, "iters"), "default");
  EXPECT_EQ(resolved_source(parsed, "out"), "unset");
}

TEST(ParseCommand, CommandLineValuesAreTypedAndResolved) {
  const cli::ParsedCommand parsed =
      parse({"--iters", "5", "--capacity-factor=0.9,1.25", "--lr", "1e-3", "--tokens", "8589934592",
             "--verbose", "--out", "run.h5"});
  EXPECT_EQ(parsed.values["iters"].as<int>(), 5);
  EXPECT_EQ(parsed.values["tokens"].as<std::int64_t>(), std::int64_t{8589934592});
  EXPECT_TRUE(parsed.values["verbose"].as<bool>());
  EXPECT_EQ(resolved_value(parsed, "iters"), "5");
  EXPECT_EQ(resolved_value(parsed, "capacity-factor"), "0.9,1.25");
  EXPECT_EQ(resolved_value(parsed, "lr"), "0.001");
  EXPECT_EQ(resolved_value(parsed, "tokens"), "8589934592");
  EXPECT_EQ(resolved_value(parsed, "verbose"), "true");
  EXPECT_EQ(resolved_value(parsed, "out"), "run.h5");
  EXPECT_EQ(resolved_source(parsed, "iters"), "command line");
  EXPECT_EQ(resolved_source(parsed, "seed"), "default");
}

TEST(ParseCommand, ConfigFileIsReadAndCommandLineWins) {
  const IniFile ini("# capacity sweep\niters = 7\nlr = 0.5\nverbose = true\n");
  const cli::ParsedCommand parsed = parse({"--iters", "3", "--config", ini.path()});
  EXPECT_EQ(parsed.values["iters"].as<int>(), 3);
  EXPECT_DOUBLE_EQ(parsed.values["lr"].as<double>(), 0.5);
  EXPECT_TRUE(parsed.values["verbose"].as<bool>());
  EXPECT_EQ(resolved_value(parsed, "iters"), "3");
  EXPECT_EQ(resolved_source(parsed, "iters"), "command line");
  EXPECT_EQ(resolved_value(parsed, "lr"), "0.5");
  EXPECT_EQ(resolved_source(parsed, "lr"), "config file");
  EXPECT_EQ(resolved_value(parsed, "seed"), "1234");
  EXPECT_EQ(resolved_source(parsed, "seed"), "default");
  // --config and --help are common options, not part of the command's configuration.
  for (const auto& [name, value] : parsed.resolved) {
    EXPECT_NE(name, "config");
    EXPECT_NE(name, "help");
  }
}

TEST(ParseCommand, UnknownOptionOnTheCommandLine) {
  EXPECT_EQ(usage_error_of({"--foo"}),
            "unknown option '--foo'; run 'moebench capacity --help' for the options");
  EXPECT_CONTAINS(usage_error_of({"--foo=3"}), "unknown option '--foo'");
  // No prefix guessing: an abbreviation is not silently taken for --iters.
  EXPECT_CONTAINS(usage_error_of({"--iter", "5"}), "unknown option '--iter'");
}

TEST(ParseCommand, UnknownKeyInTheConfigFileNamesFileAndKey) {
  const IniFile ini("iters = 7\nbogus-key = 1\n");
  const std::string message = usage_error_of({"--config", ini.path()});
  EXPECT_CONTAINS(message, "config file '" + ini.path() + "'");
  EXPECT_CONTAINS(message, "unknown option 'bogus-key'");
  EXPECT_CONTAINS(message, "moebench capacity --help");
}

TEST(ParseCommand, BadIntegerNamesOptionAndValue) {
  EXPECT_EQ(usage_error_of({"--iters", "abc"}),
            "option '--iters' expects an integer, got 'abc'; run 'moebench capacity --help' "
            "for the options");
  EXPECT_CONTAINS(usage_error_of({"--iters", "2.5"}),
                  "option '--iters' expects an integer, got '2.5'");
  EXPECT_CONTAINS(usage_error_of({"--lr", "fast"}), "option '--lr' expects a number, got 'fast'");
  EXPECT_CONTAINS(usage_error_of({"--seed=-1"}),
                  "option '--seed' expects a non-negative integer, got '-1'");
}

TEST(ParseCommand, BadValueInTheConfigFileNamesFileKeyAndValue) {
  const IniFile ini("iters = lots\n");
  const std::string message = usage_error_of({"--config", ini.path()});
  EXPECT_CONTAINS(message, "config file '" + ini.path() + "'");
  EXPECT_CONTAINS(message, "option 'iters' expects an integer, got 'lots'");
}

TEST(ParseCommand, MalformedConfigLine) {
  const IniFile ini("iters 7\n");
  EXPECT_CONTAINS(usage_error_of({"--config", ini.path()}),
                  "line 'iters 7' is not of the form 'name = value'");
}

TEST(ParseCommand, MissingConfigFile) {
  const std::string path = ::testing::TempDir() + "moebench_no_such_file.ini";
  EXPECT_EQ(usage_error_of({"--config", path}),
            "cannot read config file '" + path + "' (check the path)");
}

TEST(ParseCommand, MissingValueRepeatedOptionAndStrayArgument) {
  EXPECT_CONTAINS(usage_error_of({"--iters"}), "option '--iters' needs a value");
  EXPECT_CONTAINS(usage_error_of({"--capacity-factor", "--iters", "3"}),
                  "option '--capacity-factor' needs a value (it is followed by '--iters')");
  // A negative number is a value, not an option.
  EXPECT_EQ(parse({"--iters", "-3"}).values["iters"].as<int>(), -3);
  EXPECT_CONTAINS(usage_error_of({"--iters", "1", "--iters", "2"}),
                  "option '--iters' was given more than once");
  EXPECT_CONTAINS(usage_error_of({"--iters", "1", "extra"}), "unexpected argument 'extra'");
  EXPECT_CONTAINS(usage_error_of({"--verbose=yes"}), "option '--verbose' takes no value");
}

TEST(ParseCommand, PositionalArgumentsWhenDeclared) {
  po::options_description options("analyze options");
  // clang-format off
  options.add_options()
      ("trace", po::value<std::vector<std::string>>(), "trace files")
      ("csv", po::value<std::string>(), "CSV output");
  // clang-format on
  po::positional_options_description positional;
  positional.add("trace", -1);
  Argv args({"analyze", "a.h5", "--csv", "out.csv", "b.h5"});
  const cli::ParsedCommand parsed =
      cli::parse_command("analyze", args.argc(), args.argv(), options, &positional);
  EXPECT_EQ(parsed.values["trace"].as<std::vector<std::string>>(),
            (std::vector<std::string>{"a.h5", "b.h5"}));
  EXPECT_EQ(resolved_value(parsed, "trace"), "a.h5,b.h5");

  po::positional_options_description one;
  one.add("csv", 1);
  Argv too_many({"analyze", "x.csv", "y.csv"});
  EXPECT_CONTAINS(message_of([&] {
                    cli::parse_command("analyze", too_many.argc(), too_many.argv(), options, &one);
                  }),
                  "unexpected argument 'y.csv'");
}

TEST(ParseCommand, HelpIsReportedAndSkipsTheConfigFile) {
  EXPECT_TRUE(parse({"--help"}).help);
  EXPECT_TRUE(parse({"-h"}).help);
  // --help wins over a config file that does not exist: the user asked for the options.
  EXPECT_TRUE(parse({"--config", "/nonexistent/x.ini", "--help"}).help);
  EXPECT_FALSE(parse({"--iters", "2"}).help);
}

TEST(ParseCommand, RequiredOptionMissing) {
  po::options_description options("train options");
  options.add_options()("data", po::value<std::string>()->required(), "corpus");
  Argv args({"train"});
  EXPECT_CONTAINS(
      message_of([&] { cli::parse_command("train", args.argc(), args.argv(), options); }),
      "option '--data' is required");
}

TEST(ParseCommand, CommandLineTextQuotesWhatNeedsIt) {
  const cli::ParsedCommand parsed = parse({"--iters", "5", "--out", "my run.h5"});
  EXPECT_EQ(parsed.command_line, "moebench capacity --iters 5 --out 'my run.h5'");
  Argv args({"capacity", "--out", "it's"});
  EXPECT_EQ(cli::format_command_line(args.argc(), args.argv()),
            "moebench capacity --out 'it'\\''s'");
}

TEST(ConfigTable, PrintsHeaderAndOneRowPerOption) {
  const IniFile ini("lr = 0.5\n");
  const cli::ParsedCommand parsed = parse({"--iters", "3", "--config", ini.path()});
  std::ostringstream out;
  cli::print_config_table(out, "capacity", parsed);
  const std::string table = out.str();
  EXPECT_EQ(table.rfind("moebench capacity \u2014 configuration\n", 0), 0u) << table;
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'),
            static_cast<long>(parsed.resolved.size()) + 1)
      << table;
  EXPECT_CONTAINS(table, "  iters ............. 3        (command line)\n");
  EXPECT_CONTAINS(table, "  lr ................ 0.5      (config file)\n");
  EXPECT_CONTAINS(table, "  capacity-factor ... 1.0\n");  // defaults carry no source
  EXPECT_CONTAINS(table, "  out ............... (unset)\n");
}

// ---------------------------------------------------------------- agree_or_throw

TEST(AgreeOrThrow, NoThrowWhenEveryRankIsFine) {
  EXPECT_NO_THROW(cli::agree_or_throw(MPI_COMM_WORLD, true, "unused"));
}

TEST(AgreeOrThrow, EveryRankThrowsTheMessageOfTheLowestFailingRank) {
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // Ranks size/2 .. size-1 fail (rank 0 alone on one process); rank size/2 speaks for all.
  const bool ok = rank < size / 2;
  const int first_failing = size / 2;
  const std::string expected = "--experts: rank " + std::to_string(first_failing) + " says no";
  EXPECT_EQ(message_of([&] {
              cli::agree_or_throw(MPI_COMM_WORLD, ok,
                                  "--experts: rank " + std::to_string(rank) + " says no");
            }),
            expected);
}

}  // namespace

namespace moebench::cli {
namespace {

TEST(ByteSize, SuffixesAreBinaryMultiples) {
  EXPECT_EQ(parse_byte_size("--max-bytes", "4096"), 4096);
  EXPECT_EQ(parse_byte_size("--max-bytes", "64K"), 64 * 1024);
  EXPECT_EQ(parse_byte_size("--max-bytes", "16M"), 16 * 1024 * 1024);
  EXPECT_EQ(parse_byte_size("--max-bytes", "2g"), int64_t{2} << 30);
}

TEST(ByteSize, BadSizesNameTheOption) {
  for (const char* bad : {"", "M", "0", "-5", "1.5M", "12Q", "10MB"}) {
    try {
      parse_byte_size("max-bytes", bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const UsageError& error) {
      EXPECT_NE(std::string(error.what()).find("--max-bytes: '"), std::string::npos) << error.what();
    }
  }
}

}  // namespace
}  // namespace moebench::cli
