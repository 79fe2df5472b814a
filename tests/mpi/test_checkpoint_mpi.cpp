// Checkpoints on P ranks (CTest runs this under mpirun with 1, 2 and 4): every rank's own
// buffers round-trip bitwise, and a problem that only one rank sees (its file corrupt,
// truncated, missing, its buffers another size) is refused on every rank with that rank's
// message, as are a checkpoint of another rank count or identity and a missing path.
#include <gtest/gtest.h>
#include <mpi.h>

#include <array>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/checkpoint.hpp"

namespace moebench {
namespace {

namespace fs = std::filesystem;

struct World {
  int rank = 0;
  int size = 1;
  World() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
};

// A directory made by rank 0 and broadcast, so all ranks name the same one; removed by rank 0
// once every rank is done with it.
class SharedDir {
 public:
  explicit SharedDir(const World& world) : world_(world) {
    std::array<char, 4096> name{};
    if (world.rank == 0) {
      const std::string pattern = (fs::temp_directory_path() / "moebench-ckpt-mpi-XXXXXX").string();
      pattern.copy(name.data(), name.size() - 1);
      if (mkdtemp(name.data()) == nullptr) name[0] = '\0';
    }
    MPI_Bcast(name.data(), static_cast<int>(name.size()), MPI_CHAR, 0, MPI_COMM_WORLD);
    path_ = name.data();
  }
  ~SharedDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    std::error_code ignored;
    if (world_.rank == 0 && !path_.empty()) fs::remove_all(path_, ignored);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  bool ok() const { return !path_.empty(); }

 private:
  World world_;
  std::string path_;
};

// Value of element i of buffer b on rank r: distinct for every (r, b, i), exact in float.
float value(int r, int b, size_t i) { return 10000.0f * static_cast<float>(r) + 1000.0f * static_cast<float>(b) + static_cast<float>(i); }

std::string identity(int ranks, int experts = 8) {
  return "d-model=16\nexperts=" + std::to_string(experts) + "\nranks=" + std::to_string(ranks) + "\n";
}

// One rank's state: the dense parameters and their moment (the same on every rank), this
// rank's experts (its own values, and a size that differs by rank) and a routing bias.
struct RankState {
  std::vector<float> dense, dense_m, experts, bias;

  RankState(int rank, size_t extra_experts = 0)
      : dense(33), dense_m(33), experts(12 + 4 * static_cast<size_t>(rank) + extra_experts), bias(8) {
    for (size_t i = 0; i < dense.size(); ++i) dense[i] = value(0, 0, i), dense_m[i] = value(0, 1, i);
    for (size_t i = 0; i < experts.size(); ++i) experts[i] = value(rank, 2, i);
    for (size_t i = 0; i < bias.size(); ++i) bias[i] = value(rank, 3, i);
  }
  void fill(float x) {
    for (std::vector<float>* b : {&dense, &dense_m, &experts, &bias}) b->assign(b->size(), x);
  }
  CheckpointState state(int64_t step, const std::string& id) {
    return {step, id, {{"dense", &dense}, {"dense.m", &dense_m}, {"experts.0", &experts}, {"bias.0", &bias}}};
  }
  bool operator==(const RankState& o) const {
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    return same(dense, o.dense) && same(dense_m, o.dense_m) && same(experts, o.experts) && same(bias, o.bias);
  }
};

std::string usage_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "<no UsageError>";
}

// Saves every rank's RankState at step 5 into `dir`, collectively over the world.
void save_world(const World& world, const std::string& dir) {
  RankState mine(world.rank);
  CheckpointState s = mine.state(5, identity(world.size));
  save_checkpoint(dir, MPI_COMM_WORLD, s);
}

// Loads `dir` on every rank into a sentinel-filled state and returns the refusal; checks that
// the buffers stayed as they were.
std::string refusal_on_load(const World& world, const std::string& dir,
                            const std::string& id, size_t extra_experts = 0) {
  RankState target(world.rank, extra_experts);
  target.fill(-7.0f);
  RankState untouched = target;
  CheckpointState s = target.state(0, id);
  const std::string message = usage_error_of([&] { load_checkpoint(dir, MPI_COMM_WORLD, s); });
  EXPECT_TRUE(target == untouched) << "rank " << world.rank << ": a refused load changed the buffers";
  return message;
}

// Runs `edit` on rank 0 only, then lets every rank continue.
void on_rank0(const World& world, const std::function<void()>& edit) {
  if (world.rank == 0) edit();
  MPI_Barrier(MPI_COMM_WORLD);
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE((text).find(part), std::string::npos) << "rank message: " << (text)

TEST(CheckpointMpi, EveryRanksBuffersRoundTripBitwise) {
  const World world;
  SharedDir tmp(world);
  ASSERT_TRUE(tmp.ok());
  save_world(world, tmp / "ckpt");
  RankState target(world.rank);
  target.fill(0.0f);
  CheckpointState s = target.state(0, identity(world.size));
  EXPECT_EQ(load_checkpoint(tmp / "ckpt", MPI_COMM_WORLD, s), 5);
  EXPECT_EQ(s.step, 5);
  EXPECT_TRUE(target == RankState(world.rank)) << "rank " << world.rank;
  const CheckpointInfo info = read_checkpoint_info(tmp / "ckpt");
  EXPECT_EQ(info.ranks, world.size);
  EXPECT_EQ(info.step, 5);
  EXPECT_EQ(info.identity, identity(world.size));
  EXPECT_TRUE(checkpoint_exists(tmp / "ckpt", MPI_COMM_WORLD));
  EXPECT_TRUE(fs::exists(tmp / ("ckpt/rank_" + std::to_string(world.rank) + ".bin")));
  EXPECT_FALSE(fs::exists(tmp / ("ckpt/rank_" + std::to_string(world.size) + ".bin")));
  EXPECT_FALSE(fs::exists(tmp / "ckpt.partial"));
}

TEST(CheckpointMpi, CorruptByteInTheLastRanksFileIsRefusedOnEveryRank) {
  const World world;
  SharedDir tmp(world);
  ASSERT_TRUE(tmp.ok());
  save_world(world, tmp / "ckpt");
  const std::string last = tmp / ("ckpt/rank_" + std::to_string(world.size - 1) + ".bin");
  on_rank0(world, [&] {
    std::fstream file(last, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(-12, std::ios::end);  // inside the last buffer's data
    const char byte = static_cast<char>(file.get() ^ 0x01);
    file.seekp(-12, std::ios::end);
    file.put(byte);
  });
  const std::string message = refusal_on_load(world, tmp / "ckpt", identity(world.size));
  EXPECT_CONTAINS(message, "'" + last + "' is corrupt: checksum mismatch");
}

TEST(CheckpointMpi, TruncatedOrMissingRankFileIsRefusedOnEveryRank) {
  const World world;
  SharedDir tmp(world);
  ASSERT_TRUE(tmp.ok());
  save_world(world, tmp / "ckpt");
  const std::string last = tmp / ("ckpt/rank_" + std::to_string(world.size - 1) + ".bin");
  on_rank0(world, [&] { fs::resize_file(last, fs::file_size(last) - 20); });
  std::string message = refusal_on_load(world, tmp / "ckpt", identity(world.size));
  EXPECT_CONTAINS(message, "'" + last + "' is truncated");
  on_rank0(world, [&] { fs::remove(last); });
  message = refusal_on_load(world, tmp / "ckpt", identity(world.size));
  EXPECT_CONTAINS(message, "'" + last + "' is missing");
}

TEST(CheckpointMpi, BufferSizeDifferingOnOneRankIsRefusedOnEveryRank) {
  const World world;
  SharedDir tmp(world);
  ASSERT_TRUE(tmp.ok());
  save_world(world, tmp / "ckpt");
  // Only the last rank's experts have another size in this run.
  const size_t extra = world.rank == world.size - 1 ? 3 : 0;
  const std::string message = refusal_on_load(world, tmp / "ckpt", identity(world.size), extra);
  const size_t saved = 12 + 4 * static_cast<size_t>(world.size - 1);
  EXPECT_CONTAINS(message, "rank_" + std::to_string(world.size - 1) + ".bin' holds " +
                               std::to_string(saved) + " floats in buffer 'experts.0' but this run's has " +
                               std::to_string(saved + 3));
}

TEST(CheckpointMpi, OtherRankCountIsRefusedWithTheLaunchToUse) {
  const World world;
  SharedDir tmp(world);
  ASSERT_TRUE(tmp.ok());
  save_world(world, tmp / "ckpt");
  // As if saved by P + 1 ranks: meta edited, with its checksum (FNV-1a 64 of the lines above
  // the checksum line) recomputed.
  on_rank0(world, [&] {
    std::ifstream in(tmp / "ckpt/meta", std::ios::binary);
    std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    text = text.substr(0, text.rfind("checksum "));
    const std::string ranks_line = "ranks " + std::to_string(world.size) + "\n";
    text.replace(text.find(ranks_line), ranks_line.size(), "ranks " + std::to_string(world.size + 1) + "\n");
    const size_t identity_at = text.find("identity ");
    text.insert(identity_at, "rank " + std::to_string(world.size) + " 1 0000000000000000\n");
    uint64_t hash = 14695981039346656037ull;
    for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
    char line[40];
    std::snprintf(line, sizeof line, "checksum %016" PRIx64 "\n", hash);
    std::ofstream(tmp / "ckpt/meta", std::ios::binary | std::ios::trunc) << text << line;
  });
  const std::string more = std::to_string(world.size + 1);
  std::string message = refusal_on_load(world, tmp / "ckpt", identity(world.size));
  EXPECT_CONTAINS(message, "it was saved with " + more + " ranks but this run has " +
                               std::to_string(world.size) + "; resume with mpirun -np " + more);
  if (world.size < 2) return;

  // Saved by the first half of the ranks (a sub-communicator), resumed by all of them, and
  // the other way round.
  const int half = world.size / 2;
  MPI_Comm first_half = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, world.rank < half ? 0 : MPI_UNDEFINED, world.rank, &first_half);
  if (first_half != MPI_COMM_NULL) {
    RankState mine(world.rank);
    CheckpointState s = mine.state(5, identity(world.size));
    save_checkpoint(tmp / "half", first_half, s);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  message = refusal_on_load(world, tmp / "half", identity(world.size));
  EXPECT_CONTAINS(message, "it was saved with " + std::to_string(half) + " ranks but this run has " +
                               std::to_string(world.size) + "; resume with mpirun -np " +
                               std::to_string(half));
  save_world(world, tmp / "full");
  if (first_half != MPI_COMM_NULL) {
    RankState target(world.rank);
    target.fill(-7.0f);
    CheckpointState s = target.state(0, identity(world.size));
    message = usage_error_of([&] { load_checkpoint(tmp / "full", first_half, s); });
    EXPECT_CONTAINS(message, "it was saved with " + std::to_string(world.size) +
                                 " ranks but this run has " + std::to_string(half) +
                                 "; resume with mpirun -np " + std::to_string(world.size));
    MPI_Comm_free(&first_half);
  }
}

TEST(CheckpointMpi, IdentityMismatchNamesTheKeyOnEveryRank) {
  const World world;
  SharedDir tmp(world);
  ASSERT_TRUE(tmp.ok());
  save_world(world, tmp / "ckpt");
  const std::string message = refusal_on_load(world, tmp / "ckpt", identity(world.size, 16));
  EXPECT_CONTAINS(message, "it was saved with experts=8 but this run has experts=16");
}

TEST(CheckpointMpi, MissingPathIsRefusedOnEveryRank) {
  const World world;
  SharedDir tmp(world);
  ASSERT_TRUE(tmp.ok());
  const std::string message = refusal_on_load(world, tmp / "never-saved", identity(world.size));
  EXPECT_CONTAINS(message, "'" + (tmp / "never-saved") + "': it does not exist; check the path");
  EXPECT_FALSE(checkpoint_exists(tmp / "never-saved", MPI_COMM_WORLD));
}

TEST(CheckpointMpi, SaveOverAForeignDirectoryIsRefusedOnEveryRank) {
  const World world;
  SharedDir tmp(world);
  ASSERT_TRUE(tmp.ok());
  on_rank0(world, [&] {
    fs::create_directory(tmp / "results");
    std::ofstream(tmp / "results/notes.txt") << "keep me\n";
  });
  RankState mine(world.rank);
  CheckpointState s = mine.state(5, identity(world.size));
  const std::string message = usage_error_of([&] { save_checkpoint(tmp / "results", MPI_COMM_WORLD, s); });
  EXPECT_CONTAINS(message, "is not a moebench checkpoint (it holds 'notes.txt')");
  EXPECT_TRUE(fs::exists(tmp / "results/notes.txt"));
}

}  // namespace
}  // namespace moebench
