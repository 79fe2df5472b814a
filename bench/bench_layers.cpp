// The pieces of the training step that docs/benchmarks.md quotes, at the quickstart model's
// shapes (B 8, T 128, C 128, 4 heads; 2 x 8 experts of 128 -> 512 -> 128), with the threads of
// OMP_NUM_THREADS:
//  1. attention_forward / attention_backward (causal query blocks, pairs under OpenMP, the
//     products on packed_gemm.hpp);
//  2. adamw_update over the experts' 2.1 M parameters with the arrays evicted from cache first
//     (as in training, where a step's activations pass between two updates), against a loop
//     that moves the same bytes (reads g, m, v, p; writes m, v, p) as the memory baseline;
//  3. single-threaded sgemm over the tiles of each product of the step, for two tile sizes:
//     sgemm_parallel's largest (kGemmTileRowsMax x kGemmTileColsMax) and 64 x 256.
// Each case: best of `repetitions` after one untimed run (best, not median: the machine is
// shared, and the best run is the one least disturbed).
//
// Usage: bench_layers [repetitions=30]
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "moebench/blas.hpp"
#include "moebench/layers.hpp"
#include "moebench/random.hpp"

namespace {

std::vector<float> normal(size_t n, uint64_t stream, double scale = 1.0) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = static_cast<float>(scale * moebench::random_normal(3, stream, i));
  }
  return v;
}

double best_seconds(int repetitions, const std::function<void()>& before,
                    const std::function<void()>& run) {
  double best = 1e30;
  for (int r = -1; r < repetitions; ++r) {
    before();
    const double start = omp_get_wtime();
    run();
    const double elapsed = omp_get_wtime() - start;
    if (r >= 0) best = std::min(best, elapsed);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int repetitions = argc > 1 ? std::atoi(argv[1]) : 30;
  if (repetitions < 1) {
    std::fprintf(stderr, "usage: bench_layers [repetitions >= 1]\n");
    return 2;
  }
  moebench::set_compute_threads(omp_get_max_threads());
  std::printf("# bench_layers: %d threads, best of %d\n", omp_get_max_threads(), repetitions);
  const auto nothing = [] {};

  // 1. Attention.
  const int B = 8, T = 128, C = 128, NH = 4, N = B * T;
  const std::vector<float> qkv = normal(static_cast<size_t>(N) * 3 * C, 1);
  const std::vector<float> dout = normal(static_cast<size_t>(N) * C, 2);
  std::vector<float> out(dout.size()), att(static_cast<size_t>(B) * NH * T * T);
  std::vector<float> dqkv(qkv.size());
  std::vector<float> scratch(
      static_cast<size_t>(moebench::attention_backward_scratch_floats(B, T, NH)));
  const double forward = best_seconds(repetitions, nothing, [&] {
    moebench::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  });
  const double backward = best_seconds(repetitions, nothing, [&] {
    moebench::attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(),
                                 B, T, C, NH);
  });
  std::printf("attention B %d T %d C %d heads %d: forward %.3f ms, backward %.3f ms\n", B, T, C,
              NH, 1e3 * forward, 1e3 * backward);

  // 2. AdamW, cold.
  const int64_t n = 2 * 8 * (2 * 128 * 512 + 512 + 128);  // the quickstart's expert parameters
  std::vector<float> p = normal(static_cast<size_t>(n), 3, 0.02), m(p.size(), 0.0f),
                     v(p.size(), 0.0f);
  const std::vector<float> g = normal(static_cast<size_t>(n), 4, 1e-3);
  std::vector<uint8_t> mask(p.size(), 1);
  std::vector<float> evict(size_t{64} << 20 >> 2, 0.0f);  // 64 MiB, more than the L3
  const auto flush = [&] {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < evict.size(); ++i) evict[i] += 1.0f;
  };
  moebench::AdamWSettings settings;
  settings.weight_decay = 0.1f;
  int step = 0;
  const double adamw = best_seconds(repetitions, flush, [&] {
    moebench::adamw_update(p.data(), m.data(), v.data(), g.data(), mask.data(), n, settings,
                           ++step);
  });
  const double traffic = best_seconds(repetitions, flush, [&] {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float x = g[i] + m[i] + v[i] + p[i];
      m[i] = x;
      v[i] = x;
      p[i] = x;
    }
  });
  std::printf("adamw_update %lld parameters, cold: %.3f ms; a loop moving the same bytes: "
              "%.3f ms\n", static_cast<long long>(n), 1e3 * adamw, 1e3 * traffic);

  // 3. sgemm tiles, one thread.
  struct Product {
    const char* what;
    int64_t m, n, k;
    bool ta, tb;
  };
  const Product products[] = {{"qkv forward", 1024, 384, 128, false, false},
                              {"qkv dinp", 1024, 128, 384, false, true},
                              {"qkv dW", 128, 384, 1024, true, false},
                              {"head forward", 1024, 256, 128, false, true},
                              {"expert fc1 block", 128, 512, 128, false, false},
                              {"expert fc2 block", 128, 128, 512, false, false},
                              {"expert dh block", 128, 512, 128, false, true},
                              {"expert dW block", 256, 128, 256, true, false}};
  const std::vector<float> a = normal(size_t{1024} * 1024, 5), b = normal(size_t{1024} * 1024, 6);
  std::vector<float> c(size_t{1024} * 1024);
  const int64_t tiles[2][2] = {{moebench::kGemmTileRowsMax, moebench::kGemmTileColsMax}, {64, 256}};
  std::printf("single-threaded sgemm over the tiles of each product, GFLOP/s:\n");
  std::printf("%-18s %16s %10s %10s\n", "product", "m x n x k", "128x512", "64x256");
  for (const Product& pr : products) {
    std::printf("%-18s %4lld x%4lld x%5lld", pr.what, static_cast<long long>(pr.m),
                static_cast<long long>(pr.n), static_cast<long long>(pr.k));
    for (const auto& tile : tiles) {
      const int64_t lda = pr.ta ? pr.m : pr.k, ldb = pr.tb ? pr.k : pr.n;
      const double seconds = best_seconds(repetitions, nothing, [&] {
        for (int64_t i = 0; i < pr.m; i += tile[0]) {
          for (int64_t j = 0; j < pr.n; j += tile[1]) {
            const moebench::GemmTile t{i, std::min(tile[0], pr.m - i), j,
                                       std::min(tile[1], pr.n - j)};
            moebench::sgemm_tile(t, pr.ta, pr.tb, pr.k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f,
                                 c.data(), pr.n);
          }
        }
      });
      const double flops = 2.0 * static_cast<double>(pr.m * pr.n * pr.k);
      std::printf(" %10.1f", flops / seconds * 1e-9);
    }
    std::printf("\n");
  }
  return 0;
}
