// Checkpoints on one rank (MPI_COMM_SELF): the round trip is bitwise, a save replaces the
// previous checkpoint and clears what an interrupted one left, and every missing, damaged or
// mismatched checkpoint is refused with a message naming the problem, the buffers untouched.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/checkpoint.hpp"

namespace moebench {
namespace {

namespace fs = std::filesystem;

const std::string kIdentity = "d-model=16\nexperts=4\nseed=1234\n";

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "moebench-ckpt-XXXXXX").string();
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

// A small model's state. Values make any byte mix-up visible: a distinct value per element
// and per buffer, plus -0, +-inf, a denormal and a NaN with a payload (bitwise, not ==).
struct Model {
  std::vector<float> dense, dense_m, experts, bias;

  Model(float seed, size_t experts_size = 48) : dense(40), dense_m(40), experts(experts_size), bias(4) {
    for (std::vector<float>* b : {&dense, &dense_m, &experts, &bias}) {
      for (size_t i = 0; i < b->size(); ++i) (*b)[i] = seed + 0.001f * static_cast<float>(i);
      seed += 100.0f;
    }
    dense[0] = -0.0f;
    dense[1] = std::numeric_limits<float>::infinity();
    dense[2] = -std::numeric_limits<float>::infinity();
    dense[3] = std::numeric_limits<float>::denorm_min();
    const uint32_t nan_bits = 0x7fc01234u;
    std::memcpy(&dense[4], &nan_bits, sizeof nan_bits);
  }
  void fill(float value) {
    for (std::vector<float>* b : {&dense, &dense_m, &experts, &bias}) b->assign(b->size(), value);
  }
  CheckpointState state(int64_t step, const std::string& identity = kIdentity) {
    CheckpointState s;
    s.step = step;
    s.identity = identity;
    s.buffers = {{"dense", &dense}, {"dense.m", &dense_m}, {"experts.0", &experts}, {"bias.0", &bias}};
    return s;
  }
};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool bitwise_equal(const Model& a, const Model& b) {
  return bitwise_equal(a.dense, b.dense) && bitwise_equal(a.dense_m, b.dense_m) &&
         bitwise_equal(a.experts, b.experts) && bitwise_equal(a.bias, b.bias);
}

// The UsageError message of `f`, or a marker that fails every expectation on it.
std::string usage_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "<no UsageError>";
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Rewrites PATH/meta through `edit` (on its text without the checksum line) and appends a
// fresh checksum line, as the format defines it: FNV-1a 64 of every byte before that line.
// An independent implementation, so this also checks the documented format.
void rewrite_meta(const std::string& dir, const std::function<std::string(std::string)>& edit) {
  const std::vector<char> bytes = read_bytes(dir + "/meta");
  std::string text(bytes.begin(), bytes.end());
  text = edit(text.substr(0, text.rfind("checksum ")));
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
  char line[40];
  std::snprintf(line, sizeof line, "checksum %016" PRIx64 "\n", hash);
  text += line;
  write_bytes(dir + "/meta", std::vector<char>(text.begin(), text.end()));
}

std::string replace_once(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// A saved checkpoint of Model(1) at step 7, and an all-sentinel model to load into.
class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tmp.ok());
    CheckpointState s = saved.state(7);
    save_checkpoint(dir, MPI_COMM_SELF, s);
    target.fill(-5.0f);
  }
  // Loads into `target` (identity and buffers as given) and returns the refusal message;
  // also checks that a refused load left every buffer as it was.
  std::string refusal(const std::string& identity = kIdentity) {
    CheckpointState s = target.state(0, identity);
    const std::string message = usage_error_of([&] { load_checkpoint(dir, MPI_COMM_SELF, s); });
    Model untouched(0.0f, target.experts.size());
    untouched.fill(-5.0f);
    EXPECT_TRUE(bitwise_equal(target, untouched)) << "a refused load changed the buffers";
    return message;
  }

  TempDir tmp;
  std::string dir = tmp / "ckpt";
  Model saved{1.0f};
  Model target{0.0f};
};

TEST_F(CheckpointTest, RoundTripIsBitwise) {
  CheckpointState s = target.state(0);
  EXPECT_EQ(load_checkpoint(dir, MPI_COMM_SELF, s), 7);
  EXPECT_EQ(s.step, 7);
  EXPECT_TRUE(bitwise_equal(target, saved));
  const CheckpointInfo info = read_checkpoint_info(dir);
  EXPECT_EQ(info.ranks, 1);
  EXPECT_EQ(info.step, 7);
  EXPECT_EQ(info.identity, kIdentity);
  EXPECT_TRUE(checkpoint_exists(dir, MPI_COMM_SELF));
  EXPECT_TRUE(checkpoint_exists(dir + "/", MPI_COMM_SELF));
  // Exactly the two files, and nothing left beside the directory.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"meta", "rank_0.bin"}));
  EXPECT_FALSE(fs::exists(dir + ".partial"));
  EXPECT_FALSE(fs::exists(dir + ".previous"));
}

TEST(Checkpoint, EmptyBufferAndEmptyIdentityRoundTrip) {
  TempDir tmp;
  ASSERT_TRUE(tmp.ok());
  std::vector<float> empty, one{3.5f};
  CheckpointState s{0, "", {{"empty", &empty}, {"one", &one}}};
  save_checkpoint(tmp / "c", MPI_COMM_SELF, s);
  one[0] = 0.0f;
  EXPECT_EQ(load_checkpoint(tmp / "c", MPI_COMM_SELF, s), 0);
  EXPECT_EQ(one[0], 3.5f);
  EXPECT_EQ(read_checkpoint_info(tmp / "c").identity, "");
}

TEST_F(CheckpointTest, SavingAgainReplacesTheCheckpoint) {
  Model later(2.0f);
  CheckpointState s = later.state(9);
  save_checkpoint(dir, MPI_COMM_SELF, s);
  CheckpointState t = target.state(0);
  EXPECT_EQ(load_checkpoint(dir, MPI_COMM_SELF, t), 9);
  EXPECT_TRUE(bitwise_equal(target, later));
  EXPECT_FALSE(fs::exists(dir + ".partial"));
  EXPECT_FALSE(fs::exists(dir + ".previous"));
}

TEST_F(CheckpointTest, InterruptedSaveLeavesNothingThatLoads) {
  // What a save that died while writing leaves: PATH.partial with a rank file and no meta.
  const std::string other = tmp / "other";
  fs::create_directory(other + ".partial");
  fs::copy_file(dir + "/rank_0.bin", other + ".partial/rank_0.bin");
  CheckpointState s = target.state(0);
  const std::string message = usage_error_of([&] { load_checkpoint(other, MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("'" + other + "'"), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
  EXPECT_FALSE(checkpoint_exists(other, MPI_COMM_SELF));
  // The next save clears it.
  CheckpointState again = saved.state(8);
  save_checkpoint(other, MPI_COMM_SELF, again);
  EXPECT_FALSE(fs::exists(other + ".partial"));
  EXPECT_EQ(load_checkpoint(other, MPI_COMM_SELF, s), 8);
}

TEST_F(CheckpointTest, DirectoryWithoutMetaIsIncomplete) {
  fs::remove(dir + "/meta");
  const std::string message = refusal();
  EXPECT_NE(message.find("incomplete"), std::string::npos) << message;
  EXPECT_NE(message.find("'" + dir + "'"), std::string::npos) << message;
  EXPECT_FALSE(checkpoint_exists(dir, MPI_COMM_SELF));
}

TEST_F(CheckpointTest, InterruptedSwapPointsToThePreviousCheckpoint) {
  fs::rename(dir, dir + ".previous");
  const std::string message = refusal();
  EXPECT_NE(message.find("rename it to '" + dir + "'"), std::string::npos) << message;
}

TEST(Checkpoint, MissingPathIsRefused) {
  TempDir tmp;
  ASSERT_TRUE(tmp.ok());
  std::vector<float> buffer(3);
  CheckpointState s{0, kIdentity, {{"b", &buffer}}};
  const std::string missing = tmp / "nowhere";
  const std::string message = usage_error_of([&] { load_checkpoint(missing, MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("'" + missing + "': it does not exist; check the path"), std::string::npos)
      << message;
  EXPECT_FALSE(checkpoint_exists(missing, MPI_COMM_SELF));
  EXPECT_NE(usage_error_of([&] { read_checkpoint_info(missing); }).find("does not exist"),
            std::string::npos);
}

TEST(Checkpoint, SaveRefusesToReplaceWhatIsNotACheckpoint) {
  TempDir tmp;
  ASSERT_TRUE(tmp.ok());
  std::vector<float> buffer(3, 1.0f);
  CheckpointState s{1, kIdentity, {{"b", &buffer}}};
  const std::string notes_dir = tmp / "results";
  fs::create_directory(notes_dir);
  write_bytes(notes_dir + "/notes.txt", {'h', 'i'});
  std::string message = usage_error_of([&] { save_checkpoint(notes_dir, MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("is not a moebench checkpoint (it holds 'notes.txt')"), std::string::npos)
      << message;
  EXPECT_TRUE(fs::exists(notes_dir + "/notes.txt"));
  EXPECT_FALSE(fs::exists(notes_dir + ".partial"));

  write_bytes(tmp / "file", {'x'});
  message = usage_error_of([&] { save_checkpoint(tmp / "file", MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("is not a checkpoint directory"), std::string::npos) << message;
  EXPECT_EQ(read_bytes(tmp / "file").size(), 1u);

  for (const char* bare : {".", "..", "/", ""}) {  // refused before touching anything
    message = usage_error_of([&] { save_checkpoint(bare, MPI_COMM_SELF, s); });
    EXPECT_TRUE(message.find("names no directory of its own") != std::string::npos ||
                message.find("path is empty") != std::string::npos)
        << message;
  }

  message = usage_error_of([&] { save_checkpoint(tmp / "no/such/dir", MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;

  // An empty directory may be used (e.g. made by a job script).
  fs::create_directory(tmp / "empty");
  save_checkpoint(tmp / "empty", MPI_COMM_SELF, s);
  EXPECT_TRUE(checkpoint_exists(tmp / "empty", MPI_COMM_SELF));
}

TEST_F(CheckpointTest, CorruptByteIsRefusedByTheChecksum) {
  std::vector<char> bytes = read_bytes(dir + "/rank_0.bin");
  bytes[bytes.size() - 8 - 5] ^= 0x10;  // inside the last buffer's data
  write_bytes(dir + "/rank_0.bin", bytes);
  const std::string message = refusal();
  EXPECT_NE(message.find("'" + dir + "/rank_0.bin' is corrupt: checksum mismatch"), std::string::npos)
      << message;
}

TEST_F(CheckpointTest, TruncatedRankFileIsRefused) {
  const auto size = fs::file_size(dir + "/rank_0.bin");
  fs::resize_file(dir + "/rank_0.bin", size / 2);
  const std::string message = refusal();
  EXPECT_NE(message.find("rank_0.bin' is truncated (" + std::to_string(size / 2) + " of " +
                         std::to_string(size) + " bytes)"),
            std::string::npos)
      << message;
}

TEST_F(CheckpointTest, DamagedMetaIsRefusedByItsChecksum) {
  std::vector<char> bytes = read_bytes(dir + "/meta");
  const std::string text(bytes.begin(), bytes.end());
  bytes[text.find("step 7")] = 'S';
  write_bytes(dir + "/meta", bytes);
  std::string message = refusal();
  EXPECT_NE(message.find("meta' is damaged (checksum mismatch"), std::string::npos) << message;

  fs::resize_file(dir + "/meta", bytes.size() - 10);
  message = refusal();
  EXPECT_NE(message.find("does not end in its checksum line"), std::string::npos) << message;
}

TEST_F(CheckpointTest, OtherFormatVersionsAndForeignFilesAreRefused) {
  std::vector<char> bytes = read_bytes(dir + "/rank_0.bin");
  bytes[8] = 2;  // version
  write_bytes(dir + "/rank_0.bin", bytes);
  std::string message = refusal();
  EXPECT_NE(message.find("has format version 2 but this moebench reads 1"), std::string::npos) << message;
  bytes[0] = 'X';  // magic
  write_bytes(dir + "/rank_0.bin", bytes);
  message = refusal();
  EXPECT_NE(message.find("bad magic"), std::string::npos) << message;

  rewrite_meta(dir, [](std::string text) { return replace_once(text, "moebench-checkpoint 1", "moebench-checkpoint 9"); });
  message = refusal();
  EXPECT_NE(message.find("format version 9 but this moebench reads version 1"), std::string::npos) << message;
}

TEST_F(CheckpointTest, RankFileOfAnotherSaveIsRefused) {
  Model other(3.0f);  // same shapes, other values
  CheckpointState s = other.state(7);
  save_checkpoint(tmp / "other", MPI_COMM_SELF, s);
  fs::copy_file(tmp / "other/rank_0.bin", dir + "/rank_0.bin", fs::copy_options::overwrite_existing);
  const std::string message = refusal();
  EXPECT_NE(message.find("does not belong to this checkpoint"), std::string::npos) << message;
}

TEST_F(CheckpointTest, RankCountMismatchSaysHowToResume) {
  // Pretend the checkpoint was written by 4 ranks (rank lines 1..3 copy rank 0's).
  rewrite_meta(dir, [](std::string text) {
    const size_t rank_line = text.find("rank 0 ");
    const std::string line = text.substr(rank_line, text.find('\n', rank_line) + 1 - rank_line);
    std::string more;
    for (int r = 1; r < 4; ++r) more += replace_once(line, "rank 0", "rank " + std::to_string(r));
    text.insert(rank_line + line.size(), more);
    return replace_once(text, "ranks 1\n", "ranks 4\n");
  });
  EXPECT_EQ(read_checkpoint_info(dir).ranks, 4);
  const std::string message = refusal();
  EXPECT_NE(message.find("it was saved with 4 ranks but this run has 1; resume with mpirun -np 4"),
            std::string::npos)
      << message;
}

TEST_F(CheckpointTest, IdentityMismatchNamesTheFirstDifferingKey) {
  std::string message = refusal("d-model=16\nexperts=8\nseed=1234\n");
  EXPECT_NE(message.find("it was saved with experts=4 but this run has experts=8"), std::string::npos)
      << message;
  message = refusal("d-model=16\nexperts=4\n");
  EXPECT_NE(message.find("it was saved with seed=1234 and this run has no 'seed'"), std::string::npos)
      << message;
  message = refusal(kIdentity + "top-k=2\n");
  EXPECT_NE(message.find("this run has top-k=2, which the checkpoint does not record"),
            std::string::npos)
      << message;
  message = refusal("experts=4\nd-model=16\nseed=1234\n");
  EXPECT_NE(message.find("another order"), std::string::npos) << message;
}

TEST_F(CheckpointTest, BufferMismatchNamesTheBuffer) {
  // Another size: a different model slipped past the identity.
  Model bigger(0.0f, 64);
  bigger.fill(-5.0f);
  CheckpointState s = bigger.state(0);
  std::string message = usage_error_of([&] { load_checkpoint(dir, MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("holds 48 floats in buffer 'experts.0' but this run's has 64"),
            std::string::npos)
      << message;
  EXPECT_EQ(bigger.experts[0], -5.0f);

  s = target.state(0);
  s.buffers[1].first = "dense.v";
  message = usage_error_of([&] { load_checkpoint(dir, MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("holds buffer 'dense.m' where this run has 'dense.v'"), std::string::npos)
      << message;

  std::vector<float> extra(2);
  s = target.state(0);
  s.buffers.push_back({"extra", &extra});
  message = usage_error_of([&] { load_checkpoint(dir, MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("lacks buffer 'extra' of this run"), std::string::npos) << message;

  s = target.state(0);
  s.buffers.pop_back();
  message = usage_error_of([&] { load_checkpoint(dir, MPI_COMM_SELF, s); });
  EXPECT_NE(message.find("holds buffer 'bias.0' that this run does not have"), std::string::npos)
      << message;
  EXPECT_EQ(target.dense[5], -5.0f);
}

}  // namespace
}  // namespace moebench
