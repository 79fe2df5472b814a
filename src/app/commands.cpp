// Registry of subcommands: one line per command, name, one-line summary, entry point.
#include "commands.hpp"

#include "moebench/alltoall_bench.hpp"
#include "moebench/capacity.hpp"

std::vector<moebench::cli::Command> moebench_commands() {
  return {
      {"capacity",
       "capacity microbenchmark: CF x E x K grid of routing, packing, exchange and dropping",
       moebench::run_capacity_command},
      {"alltoall",
       "all-to-all benchmark: time, algbw and busbw per message size and exchange algorithm",
       moebench::run_alltoall_command},
  };
}
