// Benchmark: the exchange algorithms of `moebench alltoall` (AlltoallvExchange: alltoallv,
// pairwise, hierarchical) against a raw MPI_Alltoallv of the same buffers, interleaved in one
// run: every iteration times each of the four once, in an order that rotates with the
// iteration, each between barriers, so machine noise and drift hit all alike. Uniform traffic
// (size / P bytes to every rank). The slowest rank's time per iteration; medians over the
// iterations; ratio = median over iterations of (time / raw's time in the same iteration).
// Afterwards every algorithm's result is compared with raw's.
//
//   launch/mpirun.sh -np 4 build/bench/bench_alltoall [ranks_per_node iters size...]
//
// Defaults: ranks_per_node 2 (the hierarchical algorithm's virtual nodes), 200 iterations
// after 20 warm-up, sizes 64K 1M 4M 16M (bytes each rank sends in all).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "moebench/alltoall.hpp"
#include "moebench/random.hpp"

using namespace moebench;

namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const int ranks_per_node = argc > 1 ? std::atoi(argv[1]) : 2;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 200;
  const int warmup = 20;
  std::vector<long long> sizes;
  for (int i = 3; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
  if (sizes.empty()) sizes = {64LL << 10, 1LL << 20, 4LL << 20, 16LL << 20};

  // Variant 0 is raw MPI_Alltoallv; 1..3 the AlltoallvExchange algorithms.
  const char* names[] = {"raw", "alltoallv", "pairwise", "hierarchical"};
  std::vector<std::unique_ptr<AlltoallvExchange>> exchanges;
  for (ExchangeAlgorithm a : {ExchangeAlgorithm::alltoallv, ExchangeAlgorithm::pairwise,
                              ExchangeAlgorithm::hierarchical}) {
    exchanges.push_back(std::make_unique<AlltoallvExchange>(MPI_COMM_WORLD, a, ranks_per_node));
  }
  const long long max_per_peer = *std::max_element(sizes.begin(), sizes.end()) / ranks / 4;
  std::vector<float> send(static_cast<size_t>(max_per_peer * ranks)), recv(send.size()),
      reference(send.size());
  for (size_t i = 0; i < send.size(); ++i) send[i] = static_cast<float>(random_bits(7, rank, i) >> 40);
  std::vector<int> counts(ranks), displs(ranks);
  auto run = [&](int variant, float* out) {
    if (variant == 0) {
      MPI_Alltoallv(send.data(), counts.data(), displs.data(), MPI_FLOAT, out, counts.data(),
                    displs.data(), MPI_FLOAT, MPI_COMM_WORLD);
    } else {
      exchanges[variant - 1]->run(send.data(), counts.data(), displs.data(), out, counts.data(),
                                  displs.data(), MPI_FLOAT);
    }
  };
  if (rank == 0) {
    std::printf("# bench_alltoall: %d ranks, %d node(s) x %d, %d iterations after %d warm-up, interleaved;\n"
                "# slowest rank per iteration; times: median over iterations; ratio: median over iterations of\n"
                "# time / raw time of the same iteration\n",
                ranks, exchanges[2]->nodes(), exchanges[2]->ranks_per_node(), iters, warmup);
    std::printf("%12s %10s %18s %18s %18s %6s\n", "size_bytes", "raw_us", "alltoallv", "pairwise",
                "hierarchical", "check");
  }
  std::vector<std::vector<double>> times(4, std::vector<double>(iters));
  double mine[4], slowest[4];
  for (long long size : sizes) {
    const long long per_peer = size / ranks / 4;
    for (int p = 0; p < ranks; ++p) {
      counts[p] = static_cast<int>(per_peer);
      displs[p] = static_cast<int>(per_peer * p);
    }
    for (int it = 0; it < warmup + iters; ++it) {
      for (int j = 0; j < 4; ++j) {
        const int variant = (it + j) % 4;
        MPI_Barrier(MPI_COMM_WORLD);
        const double start = MPI_Wtime();
        run(variant, recv.data());
        mine[variant] = MPI_Wtime() - start;
      }
      MPI_Allreduce(mine, slowest, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (it >= warmup) {
        for (int v = 0; v < 4; ++v) times[v][it - warmup] = slowest[v];
      }
    }
    // Every algorithm must deliver what raw MPI_Alltoallv delivers.
    long long wrong = 0;
    run(0, reference.data());
    for (int v = 1; v < 4; ++v) {
      std::fill(recv.begin(), recv.end(), -1.0f);
      run(v, recv.data());
      for (long long i = 0; i < per_peer * ranks; ++i) wrong += recv[i] != reference[i];
    }
    MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    const double raw = median(times[0]);
    if (rank == 0) {
      std::printf("%12lld %10.1f", per_peer * ranks * 4, 1e6 * raw);
      for (int v = 1; v < 4; ++v) {
        std::vector<double> ratio(iters);  // paired: the same iteration's raw time
        for (int i = 0; i < iters; ++i) ratio[i] = times[v][i] / times[0][i];
        std::printf(" %9.1f (%5.3fx)", 1e6 * median(times[v]), median(ratio));
      }
      std::printf(" %6s\n", wrong == 0 ? "OK" : "WRONG");
    }
  }
  if (rank == 0) std::printf("# variants: %s, %s, %s, %s\n", names[0], names[1], names[2], names[3]);
  exchanges.clear();  // their communicators are freed before MPI_Finalize
  MPI_Finalize();
  return 0;
}
