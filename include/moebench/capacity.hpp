// `moebench capacity`: the capacity microbenchmark. Over a grid of capacity factor x experts x
// top-k it routes synthetic router logits, packs the kept token rows, exchanges them with the
// dispatcher (identity experts) and combines them back, measuring dropping, balance, routing
// time, pack/combine throughput and exchange cost per rank.
#pragma once

namespace moebench {

// argv[0] is "capacity". Returns the exit status; throws UsageError on bad input.
int run_capacity_command(int argc, char** argv);

}  // namespace moebench
