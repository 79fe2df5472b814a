// The machine's measured sgemm peak: GFLOP/s of one square n x n x n cblas_sgemm, the median
// of `repetitions` timed calls after one untimed call. The denominator of model FLOP
// utilisation (bench/train_speed.sh): training FLOP/s over what the BLAS reaches on a large,
// well-shaped product with the same threads.
//
// Usage: bench_sgemm [n=2048] [repetitions=5]; threads: OPENBLAS_NUM_THREADS.
// Prints one line: RESULT sgemm_gflops=<median> n=<n> threads=<threads>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 2048;
  const int repetitions = argc > 2 ? std::atoi(argv[2]) : 5;
  if (n < 1 || repetitions < 1) {
    std::fprintf(stderr, "usage: bench_sgemm [n >= 1] [repetitions >= 1]\n");
    return 2;
  }
  const size_t elements = static_cast<size_t>(n) * n;
  std::vector<float> a(elements), b(elements), c(elements);
  for (size_t i = 0; i < elements; ++i) {
    a[i] = static_cast<float>(i % 7) * 0.25f - 0.75f;
    b[i] = static_cast<float>(i % 5) * 0.5f - 1.0f;
  }
  auto product = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(),
                n, 0.0f, c.data(), n);
  };
  product();  // warm-up: thread pool, page faults
  std::vector<double> gflops;
  for (int r = 0; r < repetitions; ++r) {
    const auto start = std::chrono::steady_clock::now();
    product();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    gflops.push_back(2.0 * n * static_cast<double>(n) * n / seconds * 1e-9);
  }
  std::sort(gflops.begin(), gflops.end());
  std::printf("RESULT sgemm_gflops=%.1f n=%d threads=%d\n", gflops[gflops.size() / 2], n,
              openblas_get_num_threads());
  return 0;
}
