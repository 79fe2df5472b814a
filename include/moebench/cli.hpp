// Command-line machinery shared by every subcommand: Boost.Program_options with INI config
// files, comma-separated lists, the resolved-configuration table, and the error policy.
//
// Error policy (DESIGN §1): bad input raises moebench::UsageError whose message names the
// option and the fix; run_command prints it once (rank 0) and every rank exits with status 2.
// Errors that only some ranks can see go through agree_or_throw first so no rank is left
// waiting in a collective.
#pragma once

#include <mpi.h>

#include <boost/program_options.hpp>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace moebench::cli {

namespace po = boost::program_options;

// "0.9,1.0,1.25" -> {0.9, 1.0, 1.25}. Throws UsageError naming `option` and the bad entry
// (empty entry, not a number, trailing junk, not finite).
std::vector<double> parse_double_list(const std::string& option, const std::string& text);

// "64,128" -> {64, 128}. Each entry must be an integer >= min_value (message says so).
std::vector<int> parse_int_list(const std::string& option, const std::string& text,
                                int min_value);

// "4096", "64K", "16M", "1G" -> bytes (binary multiples, as nccl-tests' -b/-e). Throws
// UsageError naming `option` for anything else or a value < 1.
int64_t parse_byte_size(const std::string& option, const std::string& text);

struct ParsedCommand {
  po::variables_map values;
  bool help = false;             // --help was given: print usage, run nothing
  std::string command_line;      // "moebench <command> <args...>" as typed
  // Every option of the description with its resolved value as text (defaults included),
  // in declaration order; what the config table and the trace's /config show.
  std::vector<std::pair<std::string, std::string>> resolved;
  // Parallel to `resolved`: where each value came from: "default", "config file",
  // "command line", or "unset" (no default and not given).
  std::vector<std::string> resolved_sources;
};

// The options every command has: -h/--help and --config FILE.
po::options_description common_options();

// `moebench <command> --help`: usage line, summary, the command's options, the common ones.
// `synopsis` replaces "[options]" in the usage line (e.g. "[options] TRACE...").
void print_command_help(std::ostream& out, const std::string& command,
                        const std::string& summary, const po::options_description& options,
                        const std::string& synopsis = "[options]");

// "moebench" + argv[0..argc) joined with spaces (arguments that need it shell-quoted), so
// the line can be pasted back into a shell.
std::string format_command_line(int argc, char** argv);

// Parses argv[1..argc) (argv[0] is the command name) against `options` plus the common
// `--help` and `--config FILE` (INI: `name = value`, the same names as the long options;
// the command line wins over the file). Unknown options, missing values, bad types, an
// unreadable config file: UsageError with "run 'moebench <command> --help' for the options".
ParsedCommand parse_command(const std::string& command, int argc, char** argv,
                            const po::options_description& options,
                            const po::positional_options_description* positional = nullptr);

// The resolved configuration as a fixed-width two-column table.
void print_config_table(std::ostream& out, const std::string& command,
                        const ParsedCommand& parsed);

// Collective: if `local_ok` is false on any rank, every rank throws UsageError carrying the
// message of the lowest such rank.
void agree_or_throw(MPI_Comm comm, bool local_ok, const std::string& message);

struct Command {
  std::string name;
  std::string summary;                          // one line for `moebench --help`
  std::function<int(int argc, char** argv)> run;  // argv[0] is the command name
};

// The binary's main: MPI_Init, dispatch on argv[1] to one of `commands`, the error policy
// above (UsageError -> message on rank 0, exit 2 everywhere; any other exception -> message
// with the rank, MPI_Abort so no rank hangs), MPI_Finalize. `moebench`, `moebench --help`
// list the commands; `moebench --version` prints the version.
int run_main(int argc, char** argv, const std::vector<Command>& commands);

}  // namespace moebench::cli
