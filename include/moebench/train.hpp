// `moebench train`: trains the MoE transformer language model with expert parallelism
// (experts sharded over the ranks, tokens exchanged by all-to-all under the capacity factor,
// dense parameters data-parallel with one bucketed all-reduce per step), evaluates on the
// validation split and writes every group of the trace (DESIGN §5).
#pragma once

#include <string>

namespace moebench {

// argv[0] is "train". Returns the exit status; throws UsageError on bad input.
int run_train_command(int argc, char** argv);

// Learning rate at `step` (0-based): linear warm-up from lr/warmup to lr over `warmup` steps,
// then cosine decay to min_ratio * lr at the last step.
double learning_rate_at(int step, int steps, int warmup, double lr, double min_ratio);

}  // namespace moebench
