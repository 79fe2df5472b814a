// Every exchange algorithm delivers exactly what MPI_Alltoallv delivers, on random ragged
// count matrices with empty rows and columns, on 1, 2 and 4 ranks, and for the hierarchical
// algorithm with 1 rank per node, P ranks per node and (P = 4) 2 virtual nodes of 2.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "moebench/alltoall.hpp"
#include "moebench/check.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

struct Exchange {
  std::vector<int> send_counts, send_displs, recv_counts, recv_displs;
  std::vector<int32_t> send;
  int recv_total = 0;
};

// counts[src][dst] = f(seed, src, dst): 0 with probability 1/4 (and whole rows/columns empty
// for some seeds), otherwise up to 37 elements; value of element i from src to dst encodes
// (seed, src, dst, i) so any misplaced element is detected.
Exchange make_exchange(uint64_t seed, int rank, int ranks) {
  auto count = [&](int src, int dst) {
    if (seed % 3 == 0 && src == 1) return 0;  // an empty row
    if (seed % 3 == 1 && dst == 0) return 0;  // an empty column
    const uint64_t bits = random_bits(seed, static_cast<uint64_t>(src) * 1000 + dst, 0);
    return bits % 4 == 0 ? 0 : static_cast<int>(bits % 37);
  };
  Exchange x;
  x.send_counts.resize(ranks);
  x.send_displs.resize(ranks);
  x.recv_counts.resize(ranks);
  x.recv_displs.resize(ranks);
  int send_total = 0;
  for (int p = 0; p < ranks; ++p) {
    x.send_counts[p] = count(rank, p);
    x.recv_counts[p] = count(p, rank);
    // Gaps between blocks, so displacements are not just prefix sums.
    x.send_displs[p] = send_total + p;
    x.recv_displs[p] = x.recv_total + 2 * p;
    send_total += x.send_counts[p] + p;
    x.recv_total += x.recv_counts[p] + 2 * p;
  }
  x.send.assign(send_total, -1);
  for (int p = 0; p < ranks; ++p) {
    for (int i = 0; i < x.send_counts[p]; ++i) {
      x.send[x.send_displs[p] + i] =
          static_cast<int32_t>(random_bits(seed, static_cast<uint64_t>(rank) * 1000 + p, i + 1) >> 33);
    }
  }
  return x;
}

void check_algorithm(ExchangeAlgorithm algorithm, int ranks_per_node) {
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  AlltoallvExchange exchange(MPI_COMM_WORLD, algorithm, ranks_per_node);
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    Exchange x = make_exchange(seed, rank, ranks);
    std::vector<int32_t> expected(x.recv_total + 1, -7), got(x.recv_total + 1, -7);
    MPI_Alltoallv(x.send.data(), x.send_counts.data(), x.send_displs.data(), MPI_INT32_T,
                  expected.data(), x.recv_counts.data(), x.recv_displs.data(), MPI_INT32_T,
                  MPI_COMM_WORLD);
    exchange.run(x.send.data(), x.send_counts.data(), x.send_displs.data(), got.data(),
                 x.recv_counts.data(), x.recv_displs.data(), MPI_INT32_T);
    ASSERT_EQ(got, expected) << to_string(algorithm) << " seed " << seed << " rank " << rank;
  }
}

TEST(Alltoall, CollectiveMatchesItself) { check_algorithm(ExchangeAlgorithm::alltoallv, 0); }
TEST(Alltoall, PairwiseMatchesAlltoallv) { check_algorithm(ExchangeAlgorithm::pairwise, 0); }
TEST(Alltoall, HierarchicalSharedMemoryNodes) {
  check_algorithm(ExchangeAlgorithm::hierarchical, 0);
}
TEST(Alltoall, HierarchicalOneRankPerNode) { check_algorithm(ExchangeAlgorithm::hierarchical, 1); }
TEST(Alltoall, HierarchicalTwoVirtualNodes) {
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (ranks % 2 != 0) GTEST_SKIP() << "needs an even rank count";
  AlltoallvExchange probe(MPI_COMM_WORLD, ExchangeAlgorithm::hierarchical, ranks / 2 > 0 ? 2 : 1);
  EXPECT_EQ(probe.nodes(), ranks / 2);
  EXPECT_EQ(probe.ranks_per_node(), 2);
  check_algorithm(ExchangeAlgorithm::hierarchical, 2);
}

TEST(Alltoall, RanksPerNodeMustDivideTheRankCount) {
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  try {
    AlltoallvExchange bad(MPI_COMM_WORLD, ExchangeAlgorithm::hierarchical, ranks + 1);
    ADD_FAILURE() << "no error";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("--ranks-per-node"), std::string::npos);
  }
}

}  // namespace
}  // namespace moebench
