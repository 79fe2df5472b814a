// Registry of subcommands: one line per command, name, one-line summary, entry point.
#include "commands.hpp"

#include "moebench/alltoall_bench.hpp"
#include "moebench/analyze.hpp"
#include "moebench/capacity.hpp"
#include "moebench/data.hpp"
#include "moebench/train.hpp"

std::vector<moebench::cli::Command> moebench_commands() {
  return {
      {"train",
       "trains the MoE transformer LM with experts sharded across ranks; writes the trace",
       moebench::run_train_command},
      {"capacity",
       "capacity microbenchmark: CF x E x K grid of routing, packing, exchange and dropping",
       moebench::run_capacity_command},
      {"alltoall",
       "all-to-all benchmark: time, algbw and busbw per message size and exchange algorithm",
       moebench::run_alltoall_command},
      {"analyze",
       "reads train, capacity and alltoall traces; writes the summary table (CSV, Markdown)",
       moebench::run_analyze_command},
      {"data",
       "prepares token shards: byte-level or BPE (SentencePiece) tokens of a text or the built-in corpus",
       moebench::run_data_command},
  };
}
