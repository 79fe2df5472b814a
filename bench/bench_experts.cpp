// Grouped expert FFN throughput against one large sgemm on the same machine.
//
// Prints, for the same thread settings: (1) GFLOP/s of one square cblas_sgemm (the baseline),
// (2) GFLOP/s of experts_forward and of experts_forward + experts_backward at MoE shapes, with
// even and uneven (Zipf-like, some experts empty) rows per expert, as fractions of the
// baseline. The cases are timed round-robin (one run of each case per round), so a shared
// machine's changing load hits all of them alike; a case's fraction of the baseline is the
// median over rounds of (its GFLOP/s / the baseline's GFLOP/s in the same round), and its
// time is the median over rounds. `warmup` untimed rounds come first.
// FLOPs count the GEMMs only (forward 2 x 2 N d h, backward 4 x 2 N d h); bias, GELU and
// bias gradients are work the layer does but not counted, so they show up as lost efficiency.
// The "sgemm only" rows issue one whole-expert sgemm per expert and product, threaded by
// OpenBLAS itself, without the elementwise work; the baseline is OpenBLAS's own threaded sgemm
// too. experts_forward/backward run their blocks under OpenMP with single-threaded BLAS
// (blas.hpp), so each case sets the BLAS threads it needs before it runs.
//
// Usage: bench_experts [repetitions=7] [warmup=2] [baseline_size=2048] [E d h rows]
//   (default shape E = 16, d = 512, h = 2048, 8192 rows; the quickstart's is 8 128 512 2048)
// Threads: OMP_NUM_THREADS (the experts' team and the BLAS threads of the OpenBLAS cases).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "moebench/experts.hpp"
#include "moebench/random.hpp"

namespace {

using moebench::ExpertActivations;
using moebench::ExpertParams;
using moebench::ExpertShape;

void fill_normal(std::vector<float>& values, uint64_t stream, double stddev) {
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = static_cast<float>(stddev * moebench::random_normal(99, stream, i));
  }
}

// Rows per expert proportional to 1/(rank+1) (Zipf, s = 1), the last `empty` experts get none;
// rounding remainders go to the first expert. Sums to `total`.
std::vector<int64_t> zipf_counts(int experts, int empty, int64_t total) {
  std::vector<double> weight(static_cast<size_t>(experts), 0.0);
  for (int e = 0; e < experts - empty; ++e) weight[static_cast<size_t>(e)] = 1.0 / (e + 1);
  const double sum = std::accumulate(weight.begin(), weight.end(), 0.0);
  std::vector<int64_t> counts(weight.size());
  for (size_t e = 0; e < weight.size(); ++e) {
    counts[e] = static_cast<int64_t>(std::floor(static_cast<double>(total) * weight[e] / sum));
  }
  counts[0] += total - std::accumulate(counts.begin(), counts.end(), int64_t{0});
  return counts;
}

// total rows split evenly, the remainder to the first experts.
std::vector<int64_t> even_counts(int experts, int64_t total) {
  std::vector<int64_t> counts(static_cast<size_t>(experts), total / experts);
  for (int64_t e = 0; e < total % experts; ++e) ++counts[static_cast<size_t>(e)];
  return counts;
}

struct Case {
  std::string name;
  double flops;
  std::function<void()> run;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// The six per-expert sgemm calls of forward + backward (or the two of forward), nothing else.
void experts_sgemm_only(bool with_backward, const std::vector<int64_t>& offsets,
                        const ExpertShape& shape, const float* in, float* pre, float* out,
                        float* d_hidden, const float* d_out, float* d_in, const ExpertParams& p,
                        const ExpertParams& g) {
  const int di = shape.d_model;
  const int hi = shape.d_hidden;
  const int64_t d = di;
  const int64_t h = hi;
  for (int e = 0; e < shape.num_experts; ++e) {
    const int rows = static_cast<int>(offsets[e + 1] - offsets[e]);
    if (rows == 0) continue;
    const float* x = in + offsets[e] * d;
    float* hp = pre + offsets[e] * h;
    const float* w1 = p.w1 + e * d * h;
    const float* w2 = p.w2 + e * h * d;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hi, di, 1.0f, x, di, w1, hi,
                0.0f, hp, hi);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, di, hi, 1.0f, hp, hi, w2, di,
                0.0f, out + offsets[e] * d, di);
    if (!with_backward) continue;
    float* dh = d_hidden + offsets[e] * h;
    const float* dy = d_out + offsets[e] * d;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi, di, rows, 1.0f, hp, hi, dy, di,
                1.0f, g.w2 + e * h * d, di);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, hi, di, 1.0f, dy, di, w2, di,
                0.0f, dh, hi);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, di, hi, rows, 1.0f, x, di, dh, hi,
                1.0f, g.w1 + e * d * h, hi);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, di, hi, 1.0f, dh, hi, w1, hi,
                0.0f, d_in + offsets[e] * d, di);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int repetitions = argc > 1 ? std::atoi(argv[1]) : 7;
  const int warmup = argc > 2 ? std::atoi(argv[2]) : 2;
  const int baseline_size = argc > 3 ? std::atoi(argv[3]) : 2048;
  const bool custom_shape = argc > 7;
  const ExpertShape shape{custom_shape ? std::atoi(argv[4]) : 16,
                          custom_shape ? std::atoi(argv[5]) : 512,
                          custom_shape ? std::atoi(argv[6]) : 2048};
  const int64_t total_rows = custom_shape ? std::atoll(argv[7]) : 8192;
  if (shape.num_experts < 3 || shape.d_model < 1 || shape.d_hidden < 1 || total_rows < 1) {
    std::fprintf(stderr, "bench_experts: E must be >= 3 and d, h, rows >= 1\n");
    return 2;
  }
  const int threads = omp_get_max_threads();
  const auto openblas_threads = [threads] { openblas_set_num_threads(threads); };
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  std::printf("# bench_experts: %d threads (OMP_WAIT_POLICY=%s); E = %d, d = %d, h = %d, "
              "%lld rows\n", threads, wait_policy != nullptr ? wait_policy : "unset",
              shape.num_experts, shape.d_model, shape.d_hidden,
              static_cast<long long>(total_rows));
  std::printf("# %s\n", openblas_get_config());
  std::printf("# %d timed rounds after %d warm-up rounds, cases round-robin; medians; "
              "FLOPs = GEMM FLOPs only\n", repetitions, warmup);

  // (1) Baseline: one square sgemm.
  const int n = baseline_size;
  const auto n2 = static_cast<size_t>(n) * static_cast<size_t>(n);
  std::vector<float> a(n2);
  std::vector<float> b(n2);
  std::vector<float> c(n2);
  fill_normal(a, 1, 1.0);
  fill_normal(b, 2, 1.0);
  std::vector<Case> cases;
  cases.push_back({"sgemm " + std::to_string(n) + "^3", 2.0 * n * double(n) * n, [&] {
                     openblas_threads();
                     cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f,
                                 a.data(), n, b.data(), n, 0.0f, c.data(), n);
                   }});

  // (2) Experts at MoE shapes.
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  std::vector<float> params(static_cast<size_t>(moebench::expert_param_count(shape)));
  std::vector<float> grads(params.size(), 0.0f);
  const ExpertParams p = moebench::expert_params_view(params.data(), shape);
  const ExpertParams g = moebench::expert_params_view(grads.data(), shape);
  moebench::expert_params_init(p, shape, 7, 0);
  std::vector<float> in(static_cast<size_t>(total_rows * d));
  std::vector<float> out(in.size());
  std::vector<float> d_out(in.size());
  std::vector<float> d_in(in.size());
  std::vector<float> pre(static_cast<size_t>(total_rows * h));
  std::vector<float> act(pre.size());
  std::vector<float> d_hidden(pre.size());
  fill_normal(in, 3, 1.0);
  fill_normal(d_out, 4, 1.0);
  const ExpertActivations saved{pre.data(), act.data()};

  const std::vector<std::pair<std::string, std::vector<int64_t>>> distributions = {
      {"even", even_counts(shape.num_experts, total_rows)},
      {"zipf", zipf_counts(shape.num_experts, 2, total_rows)},
  };
  std::vector<std::vector<int64_t>> offsets;  // one per distribution, [E_local + 1]
  for (const auto& [label, counts] : distributions) {
    offsets.emplace_back(counts.size() + 1, 0);
    std::partial_sum(counts.begin(), counts.end(), offsets.back().begin() + 1);
    std::printf("# %s: rows per expert", label.c_str());
    for (int64_t count : counts) std::printf(" %lld", static_cast<long long>(count));
    std::printf("\n");
  }
  const double product_flops = 2.0 * static_cast<double>(total_rows * d * h);  // one GEMM
  for (size_t i = 0; i < distributions.size(); ++i) {
    const std::string& label = distributions[i].first;
    const int64_t* o = offsets[i].data();
    const auto forward = [&, o] {
      moebench::experts_forward(out.data(), saved, in.data(), p, o, shape);
    };
    const auto forward_backward = [&, o] {
      moebench::experts_forward(out.data(), saved, in.data(), p, o, shape);
      moebench::experts_backward(d_in.data(), g, d_hidden.data(), d_out.data(), in.data(), saved,
                                 p, o, shape);
    };
    const std::vector<int64_t>& off = offsets[i];
    cases.push_back({label + ": sgemm only, fwd", 2 * product_flops, [&, off] {
                       openblas_threads();
                       experts_sgemm_only(false, off, shape, in.data(), pre.data(), out.data(),
                                          d_hidden.data(), d_out.data(), d_in.data(), p, g);
                     }});
    cases.push_back({label + ": experts_forward", 2 * product_flops, forward});
    cases.push_back({label + ": sgemm only, fwd+bwd", 6 * product_flops, [&, off] {
                       openblas_threads();
                       experts_sgemm_only(true, off, shape, in.data(), pre.data(), out.data(),
                                          d_hidden.data(), d_out.data(), d_in.data(), p, g);
                     }});
    cases.push_back({label + ": experts_forward+backward", 6 * product_flops, forward_backward});
  }

  // Round-robin timing.
  std::vector<std::vector<double>> seconds(cases.size());
  for (int round = -warmup; round < repetitions; ++round) {
    for (size_t k = 0; k < cases.size(); ++k) {
      const auto start = std::chrono::steady_clock::now();
      cases[k].run();
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (round >= 0) seconds[k].push_back(elapsed);
    }
  }

  std::printf("%-32s %10s %10s %9s\n", "case", "median_ms", "GFLOP/s", "vs_sgemm");
  for (size_t k = 0; k < cases.size(); ++k) {
    std::vector<double> ratio(static_cast<size_t>(repetitions));
    for (size_t r = 0; r < ratio.size(); ++r) {
      ratio[r] = (cases[k].flops / seconds[k][r]) / (cases[0].flops / seconds[0][r]);
    }
    const double time = median(seconds[k]);
    std::printf("%-32s %10.2f %10.1f %8.1f%%\n", cases[k].name.c_str(), time * 1e3,
                cases[k].flops / time * 1e-9, 100.0 * median(ratio));
  }

  // Correctness is tested in test_experts; here only check, outside the timed loop, that the
  // last runs produced finite values.
  cases.back().run();
  bool finite = true;
  for (const std::vector<float>* buffer : {&out, &d_in, &grads}) {
    finite = finite && std::all_of(buffer->begin(), buffer->end(),
                                   [](float v) { return std::isfinite(v); });
  }
  std::printf("# %s\n", finite ? "OK (outputs finite)" : "FAILED (non-finite outputs)");
  return finite ? 0 : 1;
}
