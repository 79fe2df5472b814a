// Variable all-to-all exchange algorithms (the --algorithm of `moebench alltoall`). Every
// algorithm has the contract of MPI_Alltoallv: rank r sends send_counts[d] elements starting
// at send_displs[d] to rank d, and receives recv_counts[s] elements from rank s at
// recv_displs[s] (counts and displacements in elements of `type`).
//
//   alltoallv     the MPI collective itself
//   pairwise      P - 1 rounds of MPI_Sendrecv, round i: send to r + i, receive from r - i
//                 (mod P); the local block is a copy
//   hierarchical  two levels (the 2D scheme Tutel uses at scale): with ranks grouped into
//                 nodes of L ranks (rank r = node n, local index l):
//                   1. inside each node, rank (n, l) sends local peer (n, l') every block
//                      bound for a rank of local index l' on any node;
//                   2. between nodes, among the ranks of equal local index, rank (n, l')
//                      forwards to (m, l') the blocks bound for (m, l');
//                   3. the blocks are reordered by source rank into the receive buffer.
//                 Nodes come from MPI_COMM_TYPE_SHARED, or ranks_per_node emulates them.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace moebench {

enum class ExchangeAlgorithm { alltoallv, pairwise, hierarchical };
const char* to_string(ExchangeAlgorithm algorithm);
ExchangeAlgorithm parse_exchange_algorithm(const std::string& option, const std::string& name);

class AlltoallvExchange {
 public:
  // Collective over comm. ranks_per_node: 0 = the ranks sharing memory
  // (MPI_COMM_TYPE_SHARED); otherwise consecutive groups of that many ranks, which must divide
  // the rank count (UsageError otherwise). Every node must have the same number of ranks.
  AlltoallvExchange(MPI_Comm comm, ExchangeAlgorithm algorithm, int ranks_per_node = 0);
  ~AlltoallvExchange();
  AlltoallvExchange(const AlltoallvExchange&) = delete;
  AlltoallvExchange& operator=(const AlltoallvExchange&) = delete;

  // Collective. Element sizes are taken from `type` (a contiguous basic type).
  void run(const void* send, const int* send_counts, const int* send_displs, void* recv,
           const int* recv_counts, const int* recv_displs, MPI_Datatype type);

  ExchangeAlgorithm algorithm() const { return algorithm_; }
  int nodes() const { return nodes_; }
  int ranks_per_node() const { return ranks_per_node_; }

 private:
  void run_pairwise(const char* send, const int* send_counts, const int* send_displs, char* recv,
                    const int* recv_counts, const int* recv_displs, MPI_Datatype type, int size);
  void run_hierarchical(const char* send, const int* send_counts, const int* send_displs,
                        char* recv, const int* recv_counts, const int* recv_displs,
                        MPI_Datatype type, int size);

  MPI_Comm comm_;
  ExchangeAlgorithm algorithm_;
  int rank_ = 0, ranks_ = 1;
  int nodes_ = 1, ranks_per_node_ = 1, node_ = 0, local_ = 0;
  MPI_Comm local_comm_ = MPI_COMM_NULL;  // the ranks of this node, ordered by local index
  MPI_Comm cross_comm_ = MPI_COMM_NULL;  // the ranks of this local index, ordered by node
  // Scratch reused across calls (grown when a call needs more).
  std::vector<int> world_of_;     // [N * L] rank of comm at (node n, local index l)
  std::vector<int> node_counts_;  // [L, P] send counts of every rank of this node
  std::vector<int64_t> block_offset_;  // [L, N] stage-1 block offsets (elements)
  std::vector<char> stage1_, stage2_;
  std::vector<int> counts_a_, displs_a_, counts_b_, displs_b_;
};

}  // namespace moebench
