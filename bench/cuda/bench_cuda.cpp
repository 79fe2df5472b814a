// GPU benchmark of the CUDA backend's kernels, one process, one GPU (run by
// launch/gpu-check.sh; definitions in docs/cuda.md).
//
//  1. Device: name, SMs, theoretical peak DRAM bandwidth (2 x memory clock x bus width) and
//     the bandwidth a device-to-device cudaMemcpy reaches (bytes read + written / time).
//  2. Expert GEMMs: forward and forward + backward of E_local expert FFNs (d -> h -> d) over
//     N rows, even and Zipf-skewed (two experts empty), per-expert and grouped GEMM, with fp32
//     products and with bf16 operands (fp32 accumulation; the fp32 -> bf16 conversions are
//     part of the time), in TFLOP/s (GEMM FLOPs only: forward 4 N d h, backward 8 N d h) and
//     as a fraction of one large square cuBLAS product of the same precision measured in the
//     same run (sgemm; bf16 cublasGemmEx with fp32 accumulation and output), and for fp32 of
//     one dense [N, d] x [d, h] product (all rows through a single expert: what grouping can
//     reach at best).
//  3. Router and permute: linear router logits (cuBLAS), cuda_route, permute and combine for T
//     tokens, E experts, k = 2, CF 1.25; achieved bandwidth = compulsory bytes / time (bytes
//     each kernel must read and write at least, listed per row) against the peak and the copy.
//
// Every time is the median of --iters CUDA-event timings after --warmup untimed runs.
// Afterwards (outside the timed loops) results are checked against the CPU reference: the
// routing plan exactly (route()), the permuted rows bit for bit, and expert outputs of sampled
// rows (fp32 and bf16 products) against a double-precision evaluation; the last line says OK
// or FAILED (exit 1).
//
// Usage: bench_cuda [--quick] [--iters N] [--warmup N] [--tokens T] [--experts E]
//                   [--d-model d] [--d-hidden h] [--local-experts EL] [--expert-rows N]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_check.hpp"
#include "dispatch_cuda.hpp"
#include "experts_cuda.hpp"
#include "moebench/cuda.hpp"
#include "moebench/experts.hpp"
#include "moebench/router_net.hpp"
#include "moebench/routing.hpp"
#include "router_net_cuda.hpp"
#include "routing_cuda.hpp"

namespace {

using namespace moebench;

struct Options {
  int iters = 20, warmup = 5;
  int tokens = 65536, experts = 64, top_k = 2;
  int d_model = 1024, d_hidden = 4096;
  int local_experts = 8;
  int64_t expert_rows = 65536;
  int square = 8192;  // baseline sgemm size
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> long long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_cuda: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (arg == "--quick") {
      o.iters = 5;
      o.warmup = 2;
      o.tokens = 16384;
      o.d_hidden = 2048;
      o.expert_rows = 16384;
      o.square = 4096;
    } else if (arg == "--iters") {
      o.iters = static_cast<int>(value());
    } else if (arg == "--warmup") {
      o.warmup = static_cast<int>(value());
    } else if (arg == "--tokens") {
      o.tokens = static_cast<int>(value());
    } else if (arg == "--experts") {
      o.experts = static_cast<int>(value());
    } else if (arg == "--d-model") {
      o.d_model = static_cast<int>(value());
    } else if (arg == "--d-hidden") {
      o.d_hidden = static_cast<int>(value());
    } else if (arg == "--local-experts") {
      o.local_experts = static_cast<int>(value());
    } else if (arg == "--expert-rows") {
      o.expert_rows = value();
    } else {
      std::fprintf(stderr,
                   "usage: bench_cuda [--quick] [--iters N] [--warmup N] [--tokens T] "
                   "[--experts E] [--d-model d] [--d-hidden h] [--local-experts EL] "
                   "[--expert-rows N]\n");
      std::exit(2);
    }
  }
  if (o.iters < 1 || o.warmup < 0 || o.tokens < 1 || o.experts < 2 || o.d_model < 1 ||
      o.d_hidden < 1 || o.local_experts < 3 || o.expert_rows < o.local_experts) {
    std::fprintf(stderr, "bench_cuda: sizes must be positive (local experts >= 3)\n");
    std::exit(2);
  }
  return o;
}

// Cheap deterministic fill (xorshift, uniform in [-scale, scale)): the data only has to be
// reproducible and non-trivial.
void fill(std::vector<float>& values, uint64_t seed, float scale) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (float& v : values) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    v = scale * (static_cast<float>(s >> 40) / static_cast<float>(1 << 23) - 1.0f);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median milliseconds of `work` on `stream` over iters runs after warmup runs.
double time_ms(const Options& o, CUstream_st* stream, const std::function<void()>& work) {
  for (int i = 0; i < o.warmup; ++i) work();
  CudaEventTimer timer;
  std::vector<double> ms;
  for (int i = 0; i < o.iters; ++i) {
    timer.start(stream);
    work();
    timer.stop(stream);
    ms.push_back(timer.elapsed_ms());
  }
  return median(ms);
}

std::vector<int64_t> offsets_from(const std::vector<int64_t>& counts) {
  std::vector<int64_t> offsets(counts.size() + 1, 0);
  std::partial_sum(counts.begin(), counts.end(), offsets.begin() + 1);
  return offsets;
}

std::vector<int64_t> even_counts(int experts, int64_t total) {
  std::vector<int64_t> counts(static_cast<size_t>(experts), total / experts);
  counts[0] += total - total / experts * experts;
  return counts;
}

// Zipf (s = 1) over all but the last two experts, which get no rows.
std::vector<int64_t> zipf_counts(int experts, int64_t total) {
  std::vector<double> weight(static_cast<size_t>(experts), 0.0);
  for (int e = 0; e < experts - 2; ++e) weight[e] = 1.0 / (e + 1);
  const double sum = std::accumulate(weight.begin(), weight.end(), 0.0);
  std::vector<int64_t> counts(weight.size());
  for (size_t e = 0; e < weight.size(); ++e) {
    counts[e] = static_cast<int64_t>(std::floor(static_cast<double>(total) * weight[e] / sum));
  }
  counts[0] += total - std::accumulate(counts.begin(), counts.end(), int64_t{0});
  return counts;
}

double gelu_exact(double u) { return 0.5 * u * (1.0 + std::tanh(0.7978845608028654 * (u + 0.044715 * u * u * u))); }

int run(const Options& o) {
  CudaContext context(MPI_COMM_WORLD);
  CUstream_st* stream = context.compute_stream();
  const CudaDeviceInfo& info = context.info();
  bool ok = true;
  std::printf("# bench_cuda: %s (sm_%d%d, %d SMs, %.0f GiB), iterations: median of %d after %d warm-up\n",
              info.name.c_str(), info.compute_major, info.compute_minor, info.multiprocessors,
              static_cast<double>(info.global_memory_bytes) / (1 << 30), o.iters, o.warmup);

  // ---- 1. memory bandwidth references ----
  const size_t copy_bytes = size_t{1} << 30;
  DeviceArray<char> copy_a(copy_bytes), copy_b(copy_bytes);
  fill_zero(copy_a.data(), copy_bytes, stream);
  const double copy_ms = time_ms(o, stream, [&] {
    MOEBENCH_CUDA_CHECK(cudaMemcpyAsync(copy_b.data(), copy_a.data(), copy_bytes,
                                        cudaMemcpyDeviceToDevice, stream));
  });
  const double copy_gbs = 2.0 * static_cast<double>(copy_bytes) / (copy_ms * 1e6);
  const double peak_gbs = info.peak_memory_bandwidth_gbs;
  std::printf("\n## Memory\npeak DRAM (2 x clock x bus)  %8.0f GB/s\n", peak_gbs);
  std::printf("device-to-device copy 1 GiB  %8.0f GB/s  (%.0f%% of peak)\n", copy_gbs,
              100.0 * copy_gbs / peak_gbs);
  copy_a.resize(0);
  copy_b.resize(0);

  // ---- 2. expert GEMMs ----
  const float one = 1.0f, zero = 0.0f;
  double square_tflops = 0.0, square_bf16_tflops = 0.0;
  {
    const int n = o.square;
    const double flops = 2.0 * n * double(n) * n;
    DeviceArray<float> a(static_cast<size_t>(n) * n), b(a.size()), c(a.size());
    fill_zero(a.data(), a.bytes(), stream);
    fill_zero(b.data(), b.bytes(), stream);
    const double ms = time_ms(o, stream, [&] {
      MOEBENCH_CUBLAS_CHECK(cublasSgemm(context.blas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one,
                                        a.data(), n, b.data(), n, &zero, c.data(), n));
    });
    square_tflops = flops / (ms * 1e9);
    // The bf16 baseline: bf16 A and B, fp32 accumulation and C, as the bf16 expert products.
    DeviceArray<__nv_bfloat16> a16(a.size()), b16(a.size());
    fill_zero(a16.data(), a16.bytes(), stream);
    fill_zero(b16.data(), b16.bytes(), stream);
    const double bf16_ms = time_ms(o, stream, [&] {
      MOEBENCH_CUBLAS_CHECK(cublasGemmEx(context.blas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one,
                                         a16.data(), CUDA_R_16BF, n, b16.data(), CUDA_R_16BF, n,
                                         &zero, c.data(), CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT));
    });
    square_bf16_tflops = flops / (bf16_ms * 1e9);
  }
  const int EL = o.local_experts, d = o.d_model, h = o.d_hidden;
  const int64_t N = o.expert_rows;
  const double row_count = static_cast<double>(N);
  const ExpertShape shape{EL, d, h};
  double dense_tflops = 0.0;
  std::printf("\n## Expert GEMMs (fp32 without TF32; bf16 operands with fp32 accumulation, "
              "conversion timed): E_local=%d d=%d h=%d N=%lld rows\n", EL, d, h,
              static_cast<long long>(N));
  std::printf("square sgemm %d^3                    %7.1f TFLOP/s (fp32 baseline)\n", o.square,
              square_tflops);
  std::printf("square bf16 GemmEx %d^3              %7.1f TFLOP/s (bf16 baseline)\n", o.square,
              square_bf16_tflops);
  std::vector<float> params_host(static_cast<size_t>(expert_param_count(shape)));
  fill(params_host, 1, 1.0f / std::sqrt(static_cast<float>(d)));
  std::vector<float> in_host(static_cast<size_t>(N) * d);
  fill(in_host, 2, 1.0f);
  DeviceArray<float> params(params_host.size()), grads(params_host.size());
  copy_to_device(params.data(), params_host.data(), params.bytes(), stream);
  fill_zero(grads.data(), grads.bytes(), stream);
  DeviceArray<float> in(in_host.size()), out(in_host.size()), d_in(in_host.size());
  copy_to_device(in.data(), in_host.data(), in.bytes(), stream);
  DeviceArray<float> pre(static_cast<size_t>(N) * h), act(pre.size()), d_hidden(pre.size());
  {
    const ExpertParams view = expert_params_view(params.data(), shape);
    const double ms = time_ms(o, stream, [&] {  // in [N, d] W1_0 [d, h] -> pre [N, h]
      MOEBENCH_CUBLAS_CHECK(cublasSgemm(context.blas(), CUBLAS_OP_N, CUBLAS_OP_N, h,
                                        static_cast<int>(N), d, &one, view.w1, h, in.data(), d,
                                        &zero, pre.data(), h));
    });
    dense_tflops = 2.0 * row_count * d * h / (ms * 1e9);
    std::printf("dense [N,d]x[d,h] (one expert)        %7.1f TFLOP/s (%.0f%% of baseline)\n",
                dense_tflops, 100.0 * dense_tflops / square_tflops);
  }
  // %baseline: of the square product of the row's precision; %dense: of the fp32 dense product.
  std::printf("%-10s %-10s %-5s %-8s %10s %10s %10s %10s\n", "rows", "gemm", "prec", "pass", "ms",
              "TFLOP/s", "%baseline", "%dense");
  CudaExperts experts(shape, context.blas(), stream);
  experts.reserve(N);  // bf16 operand scratch: 2 (E_local d h + N (d + h)) bytes
  const ExpertParams view = expert_params_view(params.data(), shape);
  const ExpertParams grad_view = expert_params_view(grads.data(), shape);
  std::vector<int64_t> zipf_offsets;
  // Figures of merit: fwd + bwd, skewed rows, grouped GEMM; fp32 and bf16.
  double zipf_grouped_tflops = 0.0, zipf_grouped_bf16_tflops = 0.0;
  for (const char* layout : {"even", "zipf"}) {
    const std::vector<int64_t> offsets =
        offsets_from(std::strcmp(layout, "even") == 0 ? even_counts(EL, N) : zipf_counts(EL, N));
    if (std::strcmp(layout, "zipf") == 0) zipf_offsets = offsets;
    for (auto [precision, gemm] : {std::pair{GemmPrecision::fp32, ExpertGemm::per_expert},
                                   std::pair{GemmPrecision::fp32, ExpertGemm::grouped},
                                   std::pair{GemmPrecision::bf16, ExpertGemm::per_expert},
                                   std::pair{GemmPrecision::bf16, ExpertGemm::grouped}}) {
      experts.set_gemm(gemm);
      experts.set_precision(precision);
      const bool fp32 = precision == GemmPrecision::fp32;
      const double baseline_tflops = fp32 ? square_tflops : square_bf16_tflops;
      auto forward = [&] {
        experts.forward(out.data(), {pre.data(), act.data()}, in.data(), view, offsets.data());
      };
      auto both = [&] {
        forward();
        experts.backward(d_in.data(), grad_view, d_hidden.data(), out.data(), in.data(),
                         {pre.data(), act.data()}, view, offsets.data());
      };
      const double fwd_ms = time_ms(o, stream, forward);
      const double both_ms = time_ms(o, stream, both);
      const double fwd_tflops = 4.0 * row_count * d * h / (fwd_ms * 1e9);
      const double both_tflops = 12.0 * row_count * d * h / (both_ms * 1e9);
      if (std::strcmp(layout, "zipf") == 0 && gemm == ExpertGemm::grouped) {
        if (fp32) {
          zipf_grouped_tflops = both_tflops;
        } else {
          zipf_grouped_bf16_tflops = both_tflops;
        }
      }
      for (auto [pass, ms, tflops] : {std::tuple{"fwd", fwd_ms, fwd_tflops},
                                      std::tuple{"fwd+bwd", both_ms, both_tflops}}) {
        std::printf("%-10s %-10s %-5s %-8s %10.3f %10.1f %9.0f%% ", layout, to_string(gemm),
                    to_string(precision), pass, ms, tflops, 100.0 * tflops / baseline_tflops);
        if (fp32) {
          std::printf("%9.0f%%\n", 100.0 * tflops / dense_tflops);
        } else {
          std::printf("%10s\n", "-");
        }
      }
    }
  }
  // Check (zipf layout, grouped GEMM, each precision): 4 sampled rows per non-empty expert
  // against a double-precision evaluation, relative to the row's scale. fp32 sums over K <= h
  // terms: 1e-3. bf16 rounds every operand by up to 2^-9 relative: 2e-2, as in
  // tests/cuda/test_cuda_experts.cpp (where the margin is justified).
  for (auto [precision, tolerance] : {std::pair{GemmPrecision::fp32, 1e-3},
                                      std::pair{GemmPrecision::bf16, 2e-2}}) {
    experts.set_gemm(ExpertGemm::grouped);
    experts.set_precision(precision);
    experts.forward(out.data(), {pre.data(), act.data()}, in.data(), view, zipf_offsets.data());
    std::vector<float> out_host(in_host.size());
    copy_to_host(out_host.data(), out.data(), out.bytes(), stream);
    const ExpertParams hv = expert_params_view(params_host.data(), shape);
    double worst = 0.0;
    for (int e = 0; e < EL; ++e) {
      const int64_t first = zipf_offsets[e], rows = zipf_offsets[e + 1] - first;
      for (int64_t sample = 0; sample < std::min<int64_t>(rows, 4); ++sample) {
        const int64_t r = first + sample * (rows - 1) / 3;
        std::vector<double> hidden(static_cast<size_t>(h));
        for (int j = 0; j < h; ++j) {
          double u = hv.b1[int64_t{e} * h + j];
          for (int i = 0; i < d; ++i) u += double{in_host[r * d + i]} * hv.w1[(int64_t{e} * d + i) * h + j];
          hidden[j] = gelu_exact(u);
        }
        double scale = 1e-30, diff = 0.0;
        for (int c = 0; c < d; ++c) {
          double y = hv.b2[int64_t{e} * d + c];
          for (int j = 0; j < h; ++j) y += hidden[j] * hv.w2[(int64_t{e} * h + j) * d + c];
          scale = std::max(scale, std::fabs(y));
          diff = std::max(diff, std::fabs(y - out_host[r * d + c]));
        }
        worst = std::max(worst, diff / scale);
      }
    }
    const bool pass = worst <= tolerance;
    ok &= pass;
    std::printf("check: sampled expert outputs (%s) vs double precision: max rel diff %.2g %s\n",
                to_string(precision), worst, pass ? "OK" : "FAILED");
  }
  // Free the expert buffers before the router section.
  for (DeviceArray<float>* a : {&params, &grads, &in, &out, &d_in, &pre, &act, &d_hidden}) a->resize(0);

  // ---- 3. router + permute ----
  const int T = o.tokens, E = o.experts, k = o.top_k;
  RoutingConfig config;
  config.router = RouterKind::topk_hard;
  config.num_experts = E;
  config.top_k = k;
  config.capacity_factor = 1.25;
  config.balance = BalanceKind::none;
  std::printf("\n## Router and permute: T=%d E=%d k=%d d=%d CF=%.2f (bandwidth vs peak %.0f GB/s "
              "and copy %.0f GB/s)\n", T, E, k, d, config.capacity_factor, peak_gbs, copy_gbs);
  std::vector<float> x_host(static_cast<size_t>(T) * d), w_host(static_cast<size_t>(d) * E);
  fill(x_host, 3, 1.0f);
  fill(w_host, 4, 1.0f / std::sqrt(static_cast<float>(d)));
  DeviceArray<float> x(x_host.size()), w(w_host.size()), logits(static_cast<size_t>(T) * E);
  copy_to_device(x.data(), x_host.data(), x.bytes(), stream);
  copy_to_device(w.data(), w_host.data(), w.bytes(), stream);
  DeviceRoutingPlan plan;
  plan.reserve(config, T);
  const int64_t C = expert_capacity(config, T);
  DeviceArray<int64_t> send_offsets(static_cast<size_t>(E) + 1);
  DeviceArray<float> send(static_cast<size_t>(std::min<int64_t>(int64_t{T} * k, E * C)) * d);
  DeviceArray<float> y(x.size());

  const double logits_ms = time_ms(o, stream, [&] {
    cuda_router_forward(context.blas(), stream, logits.data(), nullptr, x.data(), w.data(), T,
                        RouterNetShape{RouterArch::linear, d, 0, E});
  });
  const double route_ms = time_ms(o, stream, [&] {
    cuda_route(plan, logits.data(), nullptr, nullptr, T, config, stream);
  });
  RoutingPlan host_plan;
  host_plan.reserve(config, T);
  download_plan(host_plan, plan, stream);
  const int64_t kept = host_plan.kept_assignments();
  const double permute_ms = time_ms(o, stream, [&] {
    cuda_send_offsets(send_offsets.data(), plan, false, stream);
    cuda_permute(send.data(), x.data(), plan, send_offsets.data(), d, stream);
  });
  const double combine_ms = time_ms(o, stream, [&] {
    cuda_gather_to_tokens(y.data(), send.data(), plan, send_offsets.data(), d, true, false, stream);
  });
  const double entries = static_cast<double>(T) * k;
  const double plan_bytes = entries * (4 + 4 + 1 + 4);  // expert, gate, kept, position
  const double row_bytes = static_cast<double>(kept) * d * 4;
  const double route_bytes = static_cast<double>(T) * E * 4 + plan_bytes;
  const double permute_bytes = 2.0 * row_bytes + entries * (4 + 1 + 4);
  const double combine_bytes = row_bytes + static_cast<double>(T) * d * 4 + plan_bytes;
  std::printf("%-16s %10s %12s %10s %8s %8s   %s\n", "kernel", "ms", "MB", "GB/s", "%peak",
              "%copy", "compulsory bytes");
  auto row = [&](const char* name, double ms, double bytes, const char* what) {
    const double gbs = bytes / (ms * 1e6);
    std::printf("%-16s %10.4f %12.1f %10.0f %7.0f%% %7.0f%%   %s\n", name, ms, bytes / 1e6, gbs,
                100.0 * gbs / peak_gbs, 100.0 * gbs / copy_gbs, what);
  };
  std::printf("%-16s %10.4f %12s %10s %8s %8s   %.1f GFLOP/s (x[T,d] W[d,E])\n", "router logits",
              logits_ms, "-", "-", "-", "-", 2.0 * T * double(d) * E / (logits_ms * 1e6));
  row("route", route_ms, route_bytes, "read logits; write plan");
  row("permute", permute_ms, permute_bytes, "read + write kept rows; read plan");
  row("route+permute", route_ms + permute_ms, route_bytes + permute_bytes, "sum of the two");
  row("combine", combine_ms, combine_bytes, "read kept rows + plan; write y");
  std::printf("kept %lld of %.0f assignments (C = %lld)\n", static_cast<long long>(kept), entries,
              static_cast<long long>(C));

  // Check: the plan against route() on the same logits, and the permuted rows bit for bit.
  {
    std::vector<float> logits_host(static_cast<size_t>(T) * E);
    copy_to_host(logits_host.data(), logits.data(), logits.bytes(), stream);
    RoutingPlan cpu;
    cpu.reserve(config, T);
    route(cpu, logits_host.data(), nullptr, nullptr, T, config);
    const bool plan_ok = cpu.expert == host_plan.expert && cpu.kept == host_plan.kept &&
                         cpu.position == host_plan.position && cpu.demand == host_plan.demand &&
                         cpu.load == host_plan.load;
    std::vector<float> send_host(static_cast<size_t>(kept) * d);
    copy_to_host(send_host.data(), send.data(), send_host.size() * sizeof(float), stream);
    std::vector<int64_t> offsets(static_cast<size_t>(E) + 1, 0);
    for (int e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + cpu.load[e];
    bool rows_ok = plan_ok;  // the rows are located through the (then identical) plan
    for (int64_t entry = 0; entry < static_cast<int64_t>(T) * k && rows_ok; ++entry) {
      if (!cpu.kept[entry]) continue;
      const int64_t r = offsets[cpu.expert[entry]] + cpu.position[entry];
      rows_ok = std::memcmp(&send_host[r * d], &x_host[entry / k * d], sizeof(float) * d) == 0;
    }
    ok &= plan_ok && rows_ok;
    std::printf("check: plan vs CPU route() %s; permuted rows %s\n", plan_ok ? "identical" : "DIFFER",
                rows_ok ? "identical" : "DIFFER");
  }
  const double route_permute_gbs = (route_bytes + permute_bytes) / ((route_ms + permute_ms) * 1e6);
  std::printf("\n# Expert FFN fwd+bwd (zipf rows, grouped GEMM): %.1f TFLOP/s = %.0f%% of the square "
              "sgemm\n", zipf_grouped_tflops, 100.0 * zipf_grouped_tflops / square_tflops);
  std::printf("# Expert FFN fwd+bwd, bf16 (zipf rows, grouped option): %.1f TFLOP/s = %.0f%% of "
              "the square bf16 GemmEx\n", zipf_grouped_bf16_tflops,
              100.0 * zipf_grouped_bf16_tflops / square_bf16_tflops);
  std::printf("# Route + permute: %.0f GB/s = %.0f%% of peak DRAM bandwidth (%.0f%% of copy)\n",
              route_permute_gbs, 100.0 * route_permute_gbs / peak_gbs,
              100.0 * route_permute_gbs / copy_gbs);
  std::printf("# Check: %s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 0;
  try {
    status = run(parse(argc, argv));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_cuda: %s\n", error.what());
    status = 1;
  }
  MPI_Finalize();
  return status;
}
