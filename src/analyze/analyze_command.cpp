// `moebench analyze TRACE...` (see analyze.hpp). Rank 0 reads every trace and builds all rows
// first; only then are the outputs written (each to NAME.partial, renamed when all are
// written), so a bad trace leaves no output behind. Other ranks only wait for the verdict.
#include <mpi.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "moebench/analyze.hpp"
#include "moebench/check.hpp"
#include "moebench/cli.hpp"

namespace moebench {

namespace {

namespace po = boost::program_options;

po::options_description analyze_options() {
  po::options_description options("moebench analyze options");
  options.add_options()
      ("csv", po::value<std::string>()->default_value("")->value_name("FILE"),
       "write every row to this CSV file (one column set for all kinds)")
      ("markdown", po::value<std::string>()->default_value("")->value_name("FILE"),
       "write the Markdown tables (one per kind; also printed on stdout) to this file")
      ("out-dir", po::value<std::string>()->default_value("")->value_name("DIR"),
       "write DIR/summary.csv and DIR/summary.md, for whichever of --csv and --markdown is not "
       "given (DIR is created)")
      ("window", po::value<int>()->default_value(100)->value_name("N"),
       "training runs: average the per-step columns over the last N steps (never the trace's "
       "first step)");
  return options;
}

// Writes `text` to PATH.partial; commit() renames it to PATH once every output is written.
void write_partial(const std::string& path, const std::string& text, const std::string& option) {
  const std::string partial = path + ".partial";
  std::FILE* file = std::fopen(partial.c_str(), "w");
  if (file == nullptr) {
    throw UsageError("cannot write " + option + " '" + partial + "': " + std::strerror(errno) +
                     " (check the directory, or pass another " + option + ")");
  }
  const bool written = std::fwrite(text.data(), 1, text.size(), file) == text.size();
  if (std::fclose(file) != 0 || !written) {
    const std::string reason = std::strerror(errno);
    std::remove(partial.c_str());
    throw UsageError("cannot write " + option + " '" + partial + "': " + reason);
  }
}

void commit(const std::string& path) {
  const std::string partial = path + ".partial";
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    throw UsageError("cannot rename '" + partial + "' to '" + path + "': " + std::strerror(errno));
  }
}

// Everything rank 0 does: read, summarize, write, print.
void analyze_traces(const std::vector<std::string>& traces, int window, std::string csv_path,
                    std::string markdown_path, const std::string& out_dir) {
  std::vector<analyze::SummaryRow> rows;
  for (const std::string& trace : traces) {
    std::vector<std::string> warnings;
    const std::vector<analyze::SummaryRow> found = analyze::summarize_trace(trace, window, warnings);
    for (const std::string& warning : warnings) {
      std::fprintf(stderr, "moebench analyze: warning: %s\n", warning.c_str());
    }
    rows.insert(rows.end(), found.begin(), found.end());
  }
  const std::string markdown = analyze::render_markdown(rows);
  if (!out_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(out_dir, error);
    if (error) {
      throw UsageError("--out-dir: cannot create '" + out_dir + "': " + error.message() +
                       " (pass another directory)");
    }
    if (csv_path.empty()) csv_path = (std::filesystem::path(out_dir) / "summary.csv").string();
    if (markdown_path.empty()) markdown_path = (std::filesystem::path(out_dir) / "summary.md").string();
  }
  try {
    if (!csv_path.empty()) write_partial(csv_path, analyze::render_csv(rows), "--csv");
    if (!markdown_path.empty()) write_partial(markdown_path, markdown, "--markdown");
  } catch (const UsageError&) {
    if (!csv_path.empty()) std::remove((csv_path + ".partial").c_str());
    throw;
  }
  for (const std::string& path : {csv_path, markdown_path}) {
    if (path.empty()) continue;
    commit(path);
    std::fprintf(stderr, "# wrote %s\n", path.c_str());
  }
  std::fputs(markdown.c_str(), stdout);
  std::fflush(stdout);
}

}  // namespace

int run_analyze_command(int argc, char** argv) {
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const po::options_description options = analyze_options();
  po::options_description all;
  all.add(options).add_options()("trace", po::value<std::vector<std::string>>(), "trace files");
  po::positional_options_description positional;
  positional.add("trace", -1);
  const cli::ParsedCommand parsed = cli::parse_command("analyze", argc, argv, all, &positional);
  if (parsed.help) {
    if (rank == 0) {
      cli::print_command_help(std::cout, "analyze",
                              "Reads train, capacity and alltoall traces and writes the summary "
                              "table: one row per training run, one per benchmark grid cell.\n"
                              "The Markdown goes to stdout; messages go to stderr. Columns: "
                              "docs/analyze.md.",
                              options, "[options] TRACE...");
    }
    return 0;
  }
  const po::variables_map& vm = parsed.values;
  const std::vector<std::string> traces =
      vm.count("trace") != 0 ? vm["trace"].as<std::vector<std::string>>() : std::vector<std::string>();
  if (traces.empty()) {
    throw UsageError("give at least one trace: moebench analyze [options] TRACE... (run 'moebench "
                     "analyze --help' for the options)");
  }
  const int window = vm["window"].as<int>();
  if (window < 1) throw UsageError("--window must be >= 1 (steps of a training run to average over)");

  std::string error;
  if (rank == 0) {
    cli::print_config_table(std::cerr, "analyze", parsed);
    try {
      analyze_traces(traces, window, vm["csv"].as<std::string>(), vm["markdown"].as<std::string>(),
                     vm["out-dir"].as<std::string>());
    } catch (const UsageError& failure) {
      error = failure.what();
    }
  }
  cli::agree_or_throw(comm, error.empty(), error);
  return 0;
}

}  // namespace moebench
