// All-to-all exchange algorithms. See alltoall.hpp.
#include "moebench/alltoall.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <sstream>

#include "moebench/check.hpp"

namespace moebench {

const char* to_string(ExchangeAlgorithm algorithm) {
  switch (algorithm) {
    case ExchangeAlgorithm::alltoallv: return "alltoallv";
    case ExchangeAlgorithm::pairwise: return "pairwise";
    case ExchangeAlgorithm::hierarchical: return "hierarchical";
  }
  return "?";
}

ExchangeAlgorithm parse_exchange_algorithm(const std::string& option, const std::string& name) {
  for (ExchangeAlgorithm a : {ExchangeAlgorithm::alltoallv, ExchangeAlgorithm::pairwise,
                              ExchangeAlgorithm::hierarchical}) {
    if (name == to_string(a)) return a;
  }
  throw UsageError(option + ": unknown value '" + name +
                   "' (accepted: alltoallv, pairwise, hierarchical)");
}

AlltoallvExchange::AlltoallvExchange(MPI_Comm comm, ExchangeAlgorithm algorithm,
                                     int ranks_per_node)
    : comm_(comm), algorithm_(algorithm) {
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks_));
  if (ranks_per_node < 0 || (ranks_per_node > 0 && ranks_ % ranks_per_node != 0)) {
    std::ostringstream message;
    message << "--ranks-per-node " << ranks_per_node << " does not divide the " << ranks_
            << " ranks into equal nodes (use a divisor of " << ranks_ << ", or 0 for the real nodes)";
    throw UsageError(message.str());
  }
  if (ranks_per_node > 0) {
    MOEBENCH_MPI_CHECK(MPI_Comm_split(comm, rank_ / ranks_per_node, rank_, &local_comm_));
  } else {
    MOEBENCH_MPI_CHECK(
        MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local_comm_));
  }
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(local_comm_, &local_));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(local_comm_, &ranks_per_node_));
  int min_size = 0, max_size = 0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&ranks_per_node_, &min_size, 1, MPI_INT, MPI_MIN, comm));
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&ranks_per_node_, &max_size, 1, MPI_INT, MPI_MAX, comm));
  if (min_size != max_size) {
    std::ostringstream message;
    message << "the nodes hold different numbers of ranks (" << min_size << " to " << max_size
            << "); the hierarchical exchange needs the same count on every node (launch an equal "
               "number of ranks per node, or pass --ranks-per-node)";
    throw UsageError(message.str());
  }
  nodes_ = ranks_ / ranks_per_node_;
  // Ranks of equal local index, ordered by node: the node index is this rank's position.
  MOEBENCH_MPI_CHECK(MPI_Comm_split(comm, local_, rank_, &cross_comm_));
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(cross_comm_, &node_));
  // world_of_[n * L + l]: the rank of comm at (node n, local index l).
  world_of_.assign(ranks_, 0);
  const int position = node_ * ranks_per_node_ + local_;
  std::vector<int> positions(ranks_);
  MOEBENCH_MPI_CHECK(MPI_Allgather(&position, 1, MPI_INT, positions.data(), 1, MPI_INT, comm));
  for (int r = 0; r < ranks_; ++r) world_of_[positions[r]] = r;
  node_counts_.assign(static_cast<size_t>(ranks_per_node_) * ranks_, 0);
  block_offset_.assign(static_cast<size_t>(ranks_per_node_) * nodes_, 0);
  counts_a_.assign(std::max(ranks_per_node_, nodes_), 0);
  displs_a_.assign(counts_a_.size(), 0);
  counts_b_.assign(counts_a_.size(), 0);
  displs_b_.assign(counts_a_.size(), 0);
}

AlltoallvExchange::~AlltoallvExchange() {
  if (local_comm_ != MPI_COMM_NULL) MPI_Comm_free(&local_comm_);
  if (cross_comm_ != MPI_COMM_NULL) MPI_Comm_free(&cross_comm_);
}

void AlltoallvExchange::run(const void* send, const int* send_counts, const int* send_displs,
                            void* recv, const int* recv_counts, const int* recv_displs,
                            MPI_Datatype type) {
  int size = 0;
  MOEBENCH_MPI_CHECK(MPI_Type_size(type, &size));
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  switch (algorithm_) {
    case ExchangeAlgorithm::alltoallv:
      MOEBENCH_MPI_CHECK(MPI_Alltoallv(send, send_counts, send_displs, type, recv, recv_counts,
                                       recv_displs, type, comm_));
      return;
    case ExchangeAlgorithm::pairwise:
      run_pairwise(s, send_counts, send_displs, r, recv_counts, recv_displs, type, size);
      return;
    case ExchangeAlgorithm::hierarchical:
      run_hierarchical(s, send_counts, send_displs, r, recv_counts, recv_displs, type, size);
      return;
  }
}

void AlltoallvExchange::run_pairwise(const char* send, const int* send_counts,
                                     const int* send_displs, char* recv, const int* recv_counts,
                                     const int* recv_displs, MPI_Datatype type, int size) {
  const int64_t es = size;
  std::memcpy(recv + recv_displs[rank_] * es, send + send_displs[rank_] * es,
              static_cast<size_t>(send_counts[rank_] * es));
  for (int step = 1; step < ranks_; ++step) {
    const int to = (rank_ + step) % ranks_;
    const int from = (rank_ - step + ranks_) % ranks_;
    MOEBENCH_MPI_CHECK(MPI_Sendrecv(send + send_displs[to] * es, send_counts[to], type, to, 0,
                                    recv + recv_displs[from] * es, recv_counts[from], type, from,
                                    0, comm_, MPI_STATUS_IGNORE));
  }
}

void AlltoallvExchange::run_hierarchical(const char* send, const int* send_counts,
                                         const int* send_displs, char* recv,
                                         const int* recv_counts, const int* recv_displs,
                                         MPI_Datatype type, int size) {
  const int L = ranks_per_node_, N = nodes_, P = ranks_;
  const int64_t es = size;
  // Every rank of the node needs the send counts of its local peers.
  MOEBENCH_MPI_CHECK(MPI_Allgather(send_counts, P, MPI_INT, node_counts_.data(), P, MPI_INT,
                                   local_comm_));
  auto at = [&](int node, int local) { return world_of_[node * L + local]; };
  // Elements rank (this node, peer) sends to rank dst.
  auto peer_count = [&](int peer, int dst) {
    return static_cast<int64_t>(node_counts_[static_cast<size_t>(peer) * P + dst]);
  };
  auto fits = [](int64_t value) {
    MOEBENCH_CHECK(value <= INT_MAX, "hierarchical exchange: counts exceed the MPI int limit");
    return static_cast<int>(value);
  };

  // Stage 1, inside the node: to local peer l' the blocks for (m, l'), m = 0..N-1, in node
  // order. From peer l arrive the blocks B[(n, l)][(m, local_)], m = 0..N-1, at
  // block_offset_[l * N + m] of stage2_.
  int64_t send_total = 0, recv_total = 0;
  for (int peer = 0; peer < L; ++peer) {
    counts_a_[peer] = 0;
    displs_a_[peer] = fits(send_total);
    displs_b_[peer] = fits(recv_total);
    for (int m = 0; m < N; ++m) {
      send_total += send_counts[at(m, peer)];
      block_offset_[static_cast<size_t>(peer) * N + m] = recv_total;
      recv_total += peer_count(peer, at(m, local_));
    }
    counts_a_[peer] = fits(send_total - displs_a_[peer]);
    counts_b_[peer] = fits(recv_total - displs_b_[peer]);
  }
  const size_t stage_bytes = static_cast<size_t>(std::max(send_total, recv_total) * es);
  if (stage1_.size() < stage_bytes) stage1_.resize(stage_bytes);
  if (stage2_.size() < stage_bytes) stage2_.resize(stage_bytes);
  char* out = stage1_.data();
  for (int peer = 0; peer < L; ++peer) {
    for (int m = 0; m < N; ++m) {
      const int dst = at(m, peer);
      const size_t bytes = static_cast<size_t>(send_counts[dst] * es);
      std::memcpy(out, send + send_displs[dst] * es, bytes);
      out += bytes;
    }
  }
  MOEBENCH_MPI_CHECK(MPI_Alltoallv(stage1_.data(), counts_a_.data(), displs_a_.data(), type,
                                   stage2_.data(), counts_b_.data(), displs_b_.data(), type,
                                   local_comm_));

  // Stage 2, between nodes (ranks of equal local index): to node m the blocks for
  // (m, local_) from every local peer l, in peer order; from node n arrive the blocks
  // B[(n, l)][this rank], l = 0..L-1.
  int64_t cross_send = 0, cross_recv = 0;
  for (int m = 0; m < N; ++m) {
    displs_a_[m] = fits(cross_send);
    displs_b_[m] = fits(cross_recv);
    for (int l = 0; l < L; ++l) {
      cross_send += peer_count(l, at(m, local_));
      cross_recv += recv_counts[at(m, l)];
    }
    counts_a_[m] = fits(cross_send - displs_a_[m]);
    counts_b_[m] = fits(cross_recv - displs_b_[m]);
  }
  const size_t cross_bytes = static_cast<size_t>(std::max(cross_send, cross_recv) * es);
  if (stage1_.size() < cross_bytes) stage1_.resize(cross_bytes);
  out = stage1_.data();
  for (int m = 0; m < N; ++m) {
    for (int l = 0; l < L; ++l) {
      const size_t bytes = static_cast<size_t>(peer_count(l, at(m, local_)) * es);
      std::memcpy(out, stage2_.data() + block_offset_[static_cast<size_t>(l) * N + m] * es, bytes);
      out += bytes;
    }
  }
  if (stage2_.size() < cross_bytes) stage2_.resize(cross_bytes);
  MOEBENCH_MPI_CHECK(MPI_Alltoallv(stage1_.data(), counts_a_.data(), displs_a_.data(), type,
                                   stage2_.data(), counts_b_.data(), displs_b_.data(), type,
                                   cross_comm_));

  // Stage 3: blocks arrived node-major, peer-minor; place each at its source's displacement.
  const char* in = stage2_.data();
  for (int n = 0; n < N; ++n) {
    for (int l = 0; l < L; ++l) {
      const int src = at(n, l);
      const size_t bytes = static_cast<size_t>(recv_counts[src] * es);
      std::memcpy(recv + recv_displs[src] * es, in, bytes);
      in += bytes;
    }
  }
}

}  // namespace moebench
