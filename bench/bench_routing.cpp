// Benchmark: routing plan throughput (logits -> kept assignments) per core, per router.
//
//   OMP_NUM_THREADS=1 build/bench/bench_routing [tokens experts top_k iters [router]]
//
// Reports median time per route() call and assignments (T*k) per second. Logits are iid
// N(0, 1); CF = 1.25; drop policy position. Single process, no MPI communication.
#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "moebench/random.hpp"
#include "moebench/routing.hpp"

using namespace moebench;

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int T = argc > 1 ? std::atoi(argv[1]) : 4096;
  const int E = argc > 2 ? std::atoi(argv[2]) : 256;
  const int k = argc > 3 ? std::atoi(argv[3]) : 4;
  const int iters = argc > 4 ? std::atoi(argv[4]) : 50;
  const std::string only = argc > 5 ? argv[5] : "";
  std::vector<float> logits(static_cast<size_t>(T) * E);
  std::vector<int32_t> ids(T);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(random_normal(3, 0, i));
  for (int t = 0; t < T; ++t) ids[t] = static_cast<int32_t>(random_bits(3, 1, t) % 50257);
  std::printf("# bench_routing: T=%d E=%d k=%d CF=1.25, %d thread(s), median of %d calls\n", T, E,
              k, omp_get_max_threads(), iters);
  std::printf("%-16s %10s %16s\n", "router", "median_ms", "Massign_per_s");
  for (RouterKind router : {RouterKind::topk_hard, RouterKind::softk, RouterKind::hash,
                            RouterKind::top1, RouterKind::expert_choice}) {
    if (!only.empty() && only != to_string(router)) continue;
    RoutingConfig config;
    config.router = router;
    config.num_experts = E;
    config.top_k = router == RouterKind::top1 ? 1 : k;
    config.capacity_factor = 1.25;
    RoutingPlan plan;
    plan.reserve(config, T);
    std::vector<double> times;
    for (int it = 0; it < iters + 3; ++it) {
      const double start = MPI_Wtime();
      route(plan, logits.data(), ids.data(), nullptr, T, config);
      if (it >= 3) times.push_back(MPI_Wtime() - start);
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    std::printf("%-16s %10.3f %16.1f\n", to_string(router), 1e3 * median,
                static_cast<double>(T) * config.top_k / median / 1e6);
  }
  MPI_Finalize();
  return 0;
}
