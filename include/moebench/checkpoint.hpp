// Checkpoints of `moebench train`: every rank's state written to one directory, so a run
// resumed from it continues the loss curve bitwise identically to an uninterrupted run with
// the same rank count.
//
// A checkpoint is a directory (it must be on a filesystem every rank sees):
//   PATH/rank_<r>.bin  one per rank: that rank's named float buffers (format in checkpoint.cpp)
//                      ending in an FNV-1a 64 checksum of every byte before it
//   PATH/meta          text, written last: format version, rank count, step, each rank file's
//                      size and checksum, the run's identity, and a checksum of the lines above
// A save writes everything into PATH.partial/ and then swaps it into place with one rename
// (an atomic exchange where the filesystem has one), so a crash at any point leaves either the
// previous checkpoint or the new one at PATH, never a mixture that looks complete. Saving over
// PATH is allowed only when PATH is a checkpoint (or an empty directory): nothing else in it
// is ever deleted.
//
// Every refusal is a UsageError naming the path and the fix, raised on every rank (through
// cli::agree_or_throw), so no rank is left waiting in a collective.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moebench {

// What one rank saves and restores. The buffers are not owned: save reads them, load fills
// them in place (each must already have the size it had when saved; nothing is resized).
struct CheckpointState {
  // Steps completed = the next step to run (batches are a pure function of (seed, step), and
  // AdamW's bias correction uses step + 1, so this is the whole position of the run).
  int64_t step = 0;
  // The resolved settings that must match on resume, as "key=value" lines (e.g. "experts=8");
  // the same on every rank. Compared exactly; a refusal names the first key that differs.
  std::string identity;
  // name -> buffer, in a fixed order. Names are unique, non-empty, without '\n'. The list may
  // differ between ranks (each rank's experts); it must be the same on save and load of a rank.
  std::vector<std::pair<std::string, std::vector<float>*>> buffers;
};

// What PATH/meta records (read without touching the rank files).
struct CheckpointInfo {
  int ranks = 0;
  int64_t step = 0;
  std::string identity;
};

// Collective over `comm`. Writes `state` of every rank to the checkpoint directory `path`,
// replacing a previous checkpoint there. All ranks must pass the same path, step and identity.
// UsageError (every rank) when `path` exists and is not a checkpoint, or a directory or file
// cannot be written (the message carries errno's text).
void save_checkpoint(const std::string& path, MPI_Comm comm, const CheckpointState& state);

// Collective over `comm`. Validates the checkpoint at `path` against this run and fills
// `state.buffers` in place; sets and returns `state.step`. Refuses (UsageError on every rank,
// the buffers untouched) when the checkpoint is missing or incomplete, a file is truncated,
// damaged (checksum) or of another format version, it was saved with another rank count
// ("resume with mpirun -np P"), with another identity (names the first differing key), or
// its buffers differ in name, count or size from `state.buffers`.
int64_t load_checkpoint(const std::string& path, MPI_Comm comm, CheckpointState& state);

// Collective over `comm`: whether `path` holds a complete checkpoint (PATH/meta exists, as seen
// by rank 0). For "resume if there is something to resume from".
bool checkpoint_exists(const std::string& path, MPI_Comm comm);

// Not collective: reads and validates PATH/meta alone (e.g. to print what a resume will
// start from). UsageError when it is missing, incomplete or damaged.
CheckpointInfo read_checkpoint_info(const std::string& path);

}  // namespace moebench
