// `moebench alltoall`: the all-to-all benchmark, nccl-tests style. For each message size it
// times each exchange algorithm, reduces the time per iteration across ranks (average and
// max), reports algbw and busbw, and checks every received element after the timed loop.
#pragma once

namespace moebench {

// argv[0] is "alltoall". Returns the exit status (1 if any element arrived wrong).
int run_alltoall_command(int argc, char** argv);

// nccl-tests' definitions (docs/alltoall.md): size = bytes each rank sends in all (its whole
// send buffer, size / P to each rank, itself included); algbw = size / time;
// busbw = algbw * (P - 1) / P, the bytes that cross between ranks per unit time.
double alltoall_algbw(double size_bytes, double seconds);
double alltoall_busbw(double size_bytes, double seconds, int ranks);

}  // namespace moebench
