// The binary's main and the error policy (DESIGN §1): one message, a non-zero exit on every
// rank, no hang.
//
//  - UsageError (bad input): the lowest rank that raised it (rank 0 when all did, the usual
//    case) prints "moebench <command>: error: <message>" once; every rank exits with 2.
//    Ranks agree on that at the end through a non-blocking all-reduce; a rank holding a
//    UsageError whose peers never arrive (they wait in a collective it left) prints its
//    message and aborts the job after kUsageAgreementTimeout instead of hanging.
//  - Any other exception: "moebench <command>: error on rank R: <what>", MPI_Abort.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/cli.hpp"

#ifndef MOEBENCH_VERSION
#define MOEBENCH_VERSION "0.1.0"
#endif

namespace moebench::cli {
namespace {

// How long a rank holding a UsageError waits for the others at the end before it concludes
// they are stuck in a collective it left, prints its message and aborts the job.
constexpr auto kUsageAgreementTimeout = std::chrono::seconds(10);

void flush_all() {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(stdout);
  std::fflush(stderr);
}

[[noreturn]] void abort_job(const std::string& command, int rank, const std::string& what,
                            int code) {
  std::fprintf(stderr, "moebench%s%s: error on rank %d: %s\n", command.empty() ? "" : " ",
               command.c_str(), rank, what.c_str());
  flush_all();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; in case it does, still stop this rank
}

std::string command_names(const std::vector<Command>& commands) {
  std::string names;
  for (const auto& command : commands) {
    names += (names.empty() ? "" : ", ") + command.name;
  }
  return names;
}

void print_usage(std::FILE* out, const std::vector<Command>& commands) {
  std::fprintf(out, "usage: moebench <command> [options]\n\ncommands:\n");
  std::size_t width = 0;
  for (const auto& command : commands) {
    width = std::max(width, command.name.size());
  }
  for (const auto& command : commands) {
    std::fprintf(out, "  %-*s  %s\n", static_cast<int>(width), command.name.c_str(),
                 command.summary.c_str());
  }
  if (commands.empty()) {
    std::fprintf(out, "  (none built into this binary yet)\n");
  }
  std::fprintf(out,
               "\n'moebench <command> --help' lists the options of a command; any option can\n"
               "also come from an INI file with --config FILE (the command line wins).\n"
               "Run on several ranks with MPI, e.g. launch/mpirun.sh -np 4 moebench <command>.\n"
               "'moebench --version' prints the version.\n");
}

// Edit distance, for "did you mean".
std::size_t distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string unknown_command_message(const std::string& word, const std::vector<Command>& commands) {
  if (!word.empty() && word.front() == '-') {
    return "moebench: unknown option '" + word +
           "'; usage: moebench <command> [options] (run 'moebench --help')";
  }
  std::string message = "moebench: unknown command '" + word + "'; ";
  if (commands.empty()) {
    return message + "no commands are built into this binary yet";
  }
  message += "commands are: " + command_names(commands);
  for (const auto& command : commands) {
    if (distance(word, command.name) <= 2) {
      message += " (did you mean '" + command.name + "'?)";
      break;
    }
  }
  return message;
}

struct Outcome {
  int code = 0;
  bool usage_error = false;
  std::string message;
};

// Collective over MPI_COMM_WORLD: every rank returns the same exit status.
int agree_on_exit(const std::string& command, const Outcome& outcome, int rank) {
  int local[2] = {outcome.usage_error ? rank : INT_MAX, -outcome.code};  // MIN of both
  int global[2] = {INT_MAX, 0};
  MPI_Request request = MPI_REQUEST_NULL;
  MOEBENCH_MPI_CHECK(MPI_Iallreduce(local, global, 2, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &request));
  if (!outcome.usage_error) {
    MOEBENCH_MPI_CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE));
  } else {
    const auto start = std::chrono::steady_clock::now();
    int done = 0;
    while (true) {
      MOEBENCH_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
      if (done != 0) {
        break;
      }
      if (std::chrono::steady_clock::now() - start > kUsageAgreementTimeout) {
        abort_job(command, rank, outcome.message + " (other ranks did not finish; aborting)", 2);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  if (global[0] != INT_MAX) {
    if (rank == global[0]) {
      std::fprintf(stderr, "moebench %s: error: %s\n", command.c_str(), outcome.message.c_str());
    }
    return 2;
  }
  return -global[1];
}

int dispatch(int argc, char** argv, const std::vector<Command>& commands, int rank) {
  if (argc < 2) {
    if (rank == 0) {
      print_usage(stderr, commands);
    }
    return 2;
  }
  const std::string word = argv[1];
  if (word == "--help" || word == "-h" || word == "help") {
    if (rank == 0) {
      print_usage(stdout, commands);
    }
    return 0;
  }
  if (word == "--version") {
    if (rank == 0) {
      std::printf("moebench %s\n", MOEBENCH_VERSION);
    }
    return 0;
  }
  const auto found = std::find_if(commands.begin(), commands.end(),
                                  [&](const Command& command) { return command.name == word; });
  if (found == commands.end()) {
    if (rank == 0) {
      std::fprintf(stderr, "%s\n", unknown_command_message(word, commands).c_str());
    }
    return 2;
  }

  Outcome outcome;
  try {
    outcome.code = found->run(argc - 1, argv + 1);
  } catch (const UsageError& error) {
    outcome.usage_error = true;
    outcome.message = error.what();
  } catch (const std::exception& error) {
    abort_job(word, rank, error.what(), 1);
  } catch (...) {
    abort_job(word, rank, "unknown exception", 1);
  }
  flush_all();
  return agree_on_exit(word, outcome, rank);
}

}  // namespace

void agree_or_throw(MPI_Comm comm, bool local_ok, const std::string& message) {
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  int failing = local_ok ? INT_MAX : rank;
  int first_failing = INT_MAX;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&failing, &first_failing, 1, MPI_INT, MPI_MIN, comm));
  if (first_failing == INT_MAX) {
    return;
  }
  int length =
      rank == first_failing ? static_cast<int>(std::min<std::size_t>(message.size(), INT_MAX)) : 0;
  MOEBENCH_MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT, first_failing, comm));
  std::string text(static_cast<std::size_t>(length), '\0');
  if (rank == first_failing) {
    text.assign(message, 0, static_cast<std::size_t>(length));
  }
  if (length > 0) {
    MOEBENCH_MPI_CHECK(MPI_Bcast(text.data(), length, MPI_CHAR, first_failing, comm));
  }
  throw UsageError(text);
}

int run_main(int argc, char** argv, const std::vector<Command>& commands) {
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "moebench: MPI_Init_thread failed (is the MPI installation usable?)\n");
    return 1;
  }
  int rank = 0;
  int code = 0;
  try {
    MOEBENCH_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MOEBENCH_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    code = dispatch(argc, argv, commands, rank);
  } catch (const std::exception& error) {
    abort_job(argc > 1 ? argv[1] : "", rank, error.what(), 1);
  }
  flush_all();
  if (MPI_Finalize() != MPI_SUCCESS) {
    std::fprintf(stderr, "moebench: MPI_Finalize failed on rank %d\n", rank);
    return code != 0 ? code : 1;
  }
  return code;
}

}  // namespace moebench::cli
