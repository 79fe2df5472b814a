// The GPU dense layers (src/cuda/layers_kernels.cu) against the CPU layers (src/layers, the
// reference), and the host-side checks and embedding index, which run without a GPU.
//
// Tolerances. Functions that run the CPU's float operations in the CPU's order are compared
// bit for bit: the embedding forward and backward (the backward adds each token's rows into
// dwte one at a time in row order, as encoder_backward does), residual, and the cross-entropy
// backward (given the same probs). The others:
//  - LayerNorm: mean and rstd come from double row sums on both sides, so they agree to the
//    float rounding (<= 1 ulp). out = (x - m) rstd w + b is then 3 float operations, possibly
//    fused differently on each side: a few ulp of the largest term, ~5e-7 of max |out|. dinp
//    likewise (the two row means in double, then 4 float operations). dweight and dbias are
//    float sums over <= 300 rows, in one run on the CPU and in chunks of 64 then over chunks on
//    the GPU: rounding grows like sqrt(rows) 2^-24 of the sum's scale, ~1e-6 for 300 rows.
//    kLayerNormTolerance = 1e-5 of the tensor's largest value (of the increment, for the
//    accumulated gradients) is 10x that, while a biased/unbiased variance mix-up moves out by
//    1 / (2C) >= 6.5e-4 (C <= 768), a missed row of a chunk moves dbias by ~|dout| = O(1) of a
//    sum of ~sqrt(rows) O(1), and dividing a row mean by C - 1 moves dinp by ~1/C of the mean
//    (the inputs have non-zero means so that these show).
//  - softmax: each p = exp(z - max) / sum. CUDA's expf is within 2 ulp (2.4e-7 relative), the
//    CPU's fast_exp within 2e-7; the sums (GPU: double; CPU: 16 float lanes combined in double, ~sqrt(V / 16) 2^-24
//    relative) then differ by at most ~5e-7 relative, the
//    float 1/sum and the product add 3 roundings: at most ~1.1e-6 relative per element.
//    kProbTolerance = 2e-6 relative per element; logits are N(0, 1), so every p >= ~1e-5 of
//    its row and a term left out of the sum (>= 1e-5 relative) or a wrong shift shows.
//    losses = log(sum) - (z_t - max) in double, rounded to float: the log differs by <= 4.4e-7,
//    plus one float rounding on each side (2^-24 |loss| each): kLossTolerance = 1e-6 +
//    2.4e-7 |loss|; a wrong target moves the loss by |z_t - z_t'| = O(1).
//  - AdamW: the same operations in the same order; either compiler may fuse a multiply-add. m
//    and v: <= 2 roundings of the larger term of b m + (1 - b) g: 1e-6 of that term. params:
//    the update lr (m_hat / (sqrt(v_hat) + eps) + wd p) has ~10 roundings, ~1.2e-6 of
//    lr (1 + |ratio|), plus the final subtraction's rounding of p:
//    1e-6 |p| + 1e-5 lr (1 + |ratio|), ratio = m_hat / (sqrt(v_hat) + eps).
//    A missing weight decay (lr wd |p| = 1e-3 |p|), a wrong bias correction (O(lr |ratio|)) or a
//    dropped grad_scale (m and v off by a factor) is far outside.
//  - sum_of_squares: the squares are exact in double; n additions in any order are within
//    n 2^-53 of the (positive) total; a missing element is >= 1e-7 of it for these sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gpu_test_support.hpp"
#include "layers_cuda.hpp"
#include "moebench/check.hpp"
#include "moebench/layers.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

const bool registered = test::register_gpu_environment();

constexpr double kLayerNormTolerance = 1e-5;
constexpr double kProbTolerance = 2e-6;
constexpr double kLossAbsoluteTolerance = 1e-6;
constexpr double kLossRelativeTolerance = 2.4e-7;

constexpr uint64_t kSeed = 91;

std::vector<float> normal(size_t count, uint64_t stream, double stddev, double offset = 0.0) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) {
    values[i] = static_cast<float>(offset + stddev * random_normal(kSeed, stream, i));
  }
  return values;
}

// Ids in [0, V) skewed towards 0 (u^3 V), so that small ids repeat many times.
std::vector<int32_t> skewed_ids(size_t count, int V, uint64_t stream) {
  std::vector<int32_t> ids(count);
  for (size_t i = 0; i < count; ++i) {
    const double u = random_uniform(kSeed, stream, i);
    ids[i] = static_cast<int32_t>(u * u * u * V);
  }
  return ids;
}

DeviceArray<float> poisoned(size_t count, CUstream_st* stream) {
  return test::to_device(std::vector<float>(count, std::numeric_limits<float>::quiet_NaN()),
                         stream);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> difference(a.size());
  for (size_t i = 0; i < a.size(); ++i) difference[i] = a[i] - b[i];
  return difference;
}

// what() of the Error f throws ("" if it throws none).
template <typename F>
std::string error_text(F f) {
  try {
    f();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

void expect_relative(const char* name, const std::vector<float>& got,
                     const std::vector<float>& want, double tolerance) {
  const double diff = test::relative_max_diff(got, want);
  EXPECT_LE(diff, tolerance) << name << ": max |gpu - cpu| / max |cpu|";
  std::printf("  %-8s max rel diff %.3g\n", name, diff);
}

// ---- host side: run without a GPU --------------------------------------------------------

TEST(CudaLayersHost, EncoderIndexListsEachTokensRowsInOrder) {
  EncoderBackwardIndex index;
  const std::vector<int32_t> tokens = {5, 2, 5, 0, 2, 5};  // B = 2, T = 3
  build_encoder_backward_index(index, tokens.data(), 2, 3, 6);
  EXPECT_EQ(index.distinct, 3);
  EXPECT_EQ(index.rows, 6);
  // [token D | offsets D + 1 | rows B T]
  const std::vector<int32_t> want = {0, 2, 5, 0, 1, 3, 6, 3, 1, 4, 0, 2, 5};
  EXPECT_EQ(index.packed, want);
  EXPECT_LE(static_cast<int64_t>(index.packed.size()), cuda_encoder_backward_index_ints(2, 3));

  // Rebuilt in place for the next step's tokens.
  const std::vector<int32_t> next = {1, 1, 1, 1};  // B = 1, T = 4
  build_encoder_backward_index(index, next.data(), 1, 4, 6);
  EXPECT_EQ(index.distinct, 1);
  EXPECT_EQ(index.packed, (std::vector<int32_t>{1, 0, 4, 0, 1, 2, 3}));
}

TEST(CudaLayersHost, OutOfVocabularyIdsAreRefusedAsOnTheCpu) {
  const std::vector<int32_t> tokens = {1, 2, 7, 0};  // V = 7: the 7 is outside
  const std::string want = "token 7 at position 2 is outside the vocabulary [0, 7)";
  EncoderBackwardIndex index;
  const std::string built =
      error_text([&] { build_encoder_backward_index(index, tokens.data(), 2, 2, 7); });
  EXPECT_NE(built.find(want), std::string::npos) << built;
  const std::string checked = error_text([&] { check_token_ids(tokens.data(), 4, 7); });
  EXPECT_NE(checked.find(want), std::string::npos) << checked;
  std::vector<float> out(4 * 3), wte(7 * 3), wpe(2 * 3);
  const std::string cpu = error_text(
      [&] { encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), 2, 2, 3, 7); });
  EXPECT_NE(cpu.find(want), std::string::npos) << cpu;
  const std::vector<int32_t> negative = {-1};
  EXPECT_NE(error_text([&] { check_token_ids(negative.data(), 1, 7); })
                .find("token -1 at position 0 is outside"),
            std::string::npos);

  const std::vector<int32_t> targets = {3, -1, 9};
  const std::string want_target =
      "cross-entropy target -1 at row 1 is outside the vocabulary [0, 10)";
  const std::string target_error =
      error_text([&] { check_crossentropy_targets(targets.data(), 3, 10); });
  EXPECT_NE(target_error.find(want_target), std::string::npos) << target_error;
  std::vector<float> losses(3), probs(30), logits(30);
  const std::string cpu_target = error_text([&] {
    crossentropy_softmax_forward(losses.data(), probs.data(), logits.data(), targets.data(), 3, 10);
  });
  EXPECT_NE(cpu_target.find(want_target), std::string::npos) << cpu_target;
  const std::vector<int32_t> high = {10};
  EXPECT_NE(error_text([&] { check_crossentropy_targets(high.data(), 1, 10); })
                .find("cross-entropy target 10 at row 0 is outside"),
            std::string::npos);
}

TEST(CudaLayersHost, AdamWRefusesStepZeroBeforeLaunching) {
  // Null pointers and no stream: the refusal comes before anything touches a device.
  const std::string text = error_text([] {
    cuda_adamw_update(nullptr, nullptr, nullptr, nullptr, nullptr, 10, AdamWSettings{}, 0,
                      nullptr);
  });
  EXPECT_NE(text.find("step must count from 1 (got 0)"), std::string::npos) << text;
}

// ---- GPU against CPU -------------------------------------------------------------------

struct EncoderShape {
  int B, T, C, V;
};

TEST(CudaLayers, EncoderMatchesCpuBitForBit) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  // C = 30 and 61 take the scalar path, 60 and 768 the float4 one; V = 50 repeats every token.
  for (const EncoderShape s : {EncoderShape{1, 1, 60, 1000}, EncoderShape{3, 67, 30, 1000},
                               EncoderShape{4, 128, 768, 1000}, EncoderShape{2, 33, 61, 50}}) {
    SCOPED_TRACE("B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) +
                 " C=" + std::to_string(s.C) + " V=" + std::to_string(s.V));
    const int max_T = s.T + 5;  // wpe has rows beyond T, which must stay untouched
    const size_t rows = static_cast<size_t>(s.B) * s.T, C = static_cast<size_t>(s.C);
    const std::vector<int32_t> tokens = skewed_ids(rows, s.V, 1);
    const std::vector<float> wte = normal(static_cast<size_t>(s.V) * C, 2, 1.0);
    const std::vector<float> wpe = normal(static_cast<size_t>(max_T) * C, 3, 1.0);
    const std::vector<float> dout = normal(rows * C, 4, 1.0);
    const std::vector<float> dwte_init = normal(wte.size(), 5, 1.0);
    const std::vector<float> dwpe_init = normal(wpe.size(), 6, 1.0);

    std::vector<float> out_cpu(rows * C), dwte_cpu = dwte_init, dwpe_cpu = dwpe_init;
    encoder_forward(out_cpu.data(), tokens.data(), wte.data(), wpe.data(), s.B, s.T, s.C, s.V);
    encoder_backward(dwte_cpu.data(), dwpe_cpu.data(), dout.data(), tokens.data(), s.B, s.T, s.C);

    DeviceArray<int32_t> tokens_gpu = test::to_device(tokens, stream);
    DeviceArray<float> wte_gpu = test::to_device(wte, stream);
    DeviceArray<float> wpe_gpu = test::to_device(wpe, stream);
    DeviceArray<float> dout_gpu = test::to_device(dout, stream);
    DeviceArray<float> out_gpu = poisoned(rows * C, stream);
    cuda_encoder_forward(out_gpu.data(), tokens_gpu.data(), wte_gpu.data(), wpe_gpu.data(), s.B,
                         s.T, s.C, s.V, stream);
    EXPECT_EQ(test::to_host(out_gpu.data(), rows * C, stream), out_cpu);

    EncoderBackwardIndex index;
    build_encoder_backward_index(index, tokens.data(), s.B, s.T, s.V);
    DeviceArray<int32_t> index_gpu(
        static_cast<size_t>(cuda_encoder_backward_index_ints(s.B, s.T)));
    upload_encoder_backward_index(index_gpu.data(), index, stream);
    DeviceArray<float> dwte_gpu = test::to_device(dwte_init, stream);
    DeviceArray<float> dwpe_gpu = test::to_device(dwpe_init, stream);
    cuda_encoder_backward(dwte_gpu.data(), dwpe_gpu.data(), dout_gpu.data(), index_gpu.data(),
                          index.distinct, s.B, s.T, s.C, stream);
    // Bit-identical to the CPU, hence also to any other run.
    EXPECT_EQ(test::to_host(dwte_gpu.data(), dwte_init.size(), stream), dwte_cpu);
    EXPECT_EQ(test::to_host(dwpe_gpu.data(), dwpe_init.size(), stream), dwpe_cpu);
    std::printf("  B=%d T=%d C=%d V=%d: %d distinct tokens\n", s.B, s.T, s.C, s.V, index.distinct);
  }
}

struct LayerNormShape {
  int B, T, C;
};

TEST(CudaLayers, LayerNormMatchesCpuAndIsDeterministic) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  // 201 rows: 4 chunks of kLayerNormRowChunk, the last partial; 64 rows: exactly one.
  for (const LayerNormShape s : {LayerNormShape{1, 1, 60}, LayerNormShape{3, 67, 60},
                                 LayerNormShape{2, 150, 768}, LayerNormShape{1, 5, 30},
                                 LayerNormShape{1, 64, 33}}) {
    SCOPED_TRACE("B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) +
                 " C=" + std::to_string(s.C));
    std::printf(" B=%d T=%d C=%d\n", s.B, s.T, s.C);
    const size_t rows = static_cast<size_t>(s.B) * s.T, C = static_cast<size_t>(s.C);
    // Non-zero means, so that an off-by-one in a row mean shows (tolerance comment).
    const std::vector<float> inp = normal(rows * C, 11, 2.0, 0.5);
    const std::vector<float> weight = normal(C, 12, 0.1, 1.0);
    const std::vector<float> bias = normal(C, 13, 0.2);
    const std::vector<float> dout = normal(rows * C, 14, 1.0, 0.3);
    const std::vector<float> dinp_init = normal(rows * C, 15, 1.0);
    const std::vector<float> dweight_init = normal(C, 16, 1.0);
    const std::vector<float> dbias_init = normal(C, 17, 1.0);

    std::vector<float> out_cpu(rows * C), mean_cpu(rows), rstd_cpu(rows);
    layernorm_forward(out_cpu.data(), mean_cpu.data(), rstd_cpu.data(), inp.data(), weight.data(),
                      bias.data(), s.B, s.T, s.C);
    std::vector<float> dinp_cpu = dinp_init, dweight_cpu = dweight_init, dbias_cpu = dbias_init;
    layernorm_backward(dinp_cpu.data(), dweight_cpu.data(), dbias_cpu.data(), dout.data(),
                       inp.data(), weight.data(), mean_cpu.data(), rstd_cpu.data(), s.B, s.T, s.C);

    DeviceArray<float> inp_gpu = test::to_device(inp, stream);
    DeviceArray<float> weight_gpu = test::to_device(weight, stream);
    DeviceArray<float> bias_gpu = test::to_device(bias, stream);
    DeviceArray<float> dout_gpu = test::to_device(dout, stream);
    DeviceArray<float> out_gpu = poisoned(rows * C, stream);
    DeviceArray<float> mean_gpu = poisoned(rows, stream);
    DeviceArray<float> rstd_gpu = poisoned(rows, stream);
    cuda_layernorm_forward(out_gpu.data(), mean_gpu.data(), rstd_gpu.data(), inp_gpu.data(),
                           weight_gpu.data(), bias_gpu.data(), s.B, s.T, s.C, stream);
    expect_relative("out", test::to_host(out_gpu.data(), rows * C, stream), out_cpu,
                    kLayerNormTolerance);
    expect_relative("mean", test::to_host(mean_gpu.data(), rows, stream), mean_cpu,
                    kLayerNormTolerance);
    expect_relative("rstd", test::to_host(rstd_gpu.data(), rows, stream), rstd_cpu,
                    kLayerNormTolerance);

    // Backward from the CPU's saved statistics, so that both sides read the same inputs; twice
    // from the same start, which must give the same bits.
    DeviceArray<float> mean_in = test::to_device(mean_cpu, stream);
    DeviceArray<float> rstd_in = test::to_device(rstd_cpu, stream);
    DeviceArray<float> scratch(
        static_cast<size_t>(cuda_layernorm_backward_scratch_floats(s.B, s.T, s.C)));
    std::vector<float> runs[2][3];
    for (auto& run : runs) {
      DeviceArray<float> dinp_gpu = test::to_device(dinp_init, stream);
      DeviceArray<float> dweight_gpu = test::to_device(dweight_init, stream);
      DeviceArray<float> dbias_gpu = test::to_device(dbias_init, stream);
      cuda_layernorm_backward(dinp_gpu.data(), dweight_gpu.data(), dbias_gpu.data(),
                              scratch.data(), dout_gpu.data(), inp_gpu.data(), weight_gpu.data(),
                              mean_in.data(), rstd_in.data(), s.B, s.T, s.C, stream);
      run[0] = test::to_host(dinp_gpu.data(), rows * C, stream);
      run[1] = test::to_host(dweight_gpu.data(), C, stream);
      run[2] = test::to_host(dbias_gpu.data(), C, stream);
    }
    for (int k = 0; k < 3; ++k) EXPECT_TRUE(same_bits(runs[0][k], runs[1][k])) << "output " << k;
    // The increments, so that the random start cannot hide a missing term.
    expect_relative("dinp", minus(runs[0][0], dinp_init), minus(dinp_cpu, dinp_init),
                    kLayerNormTolerance);
    expect_relative("dweight", minus(runs[0][1], dweight_init), minus(dweight_cpu, dweight_init),
                    kLayerNormTolerance);
    expect_relative("dbias", minus(runs[0][2], dbias_init), minus(dbias_cpu, dbias_init),
                    kLayerNormTolerance);
  }
}

TEST(CudaLayers, ResidualMatchesCpuBitForBit) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  for (const int64_t N : {int64_t{1}, int64_t{3}, int64_t{1001}, int64_t{768 * 37 + 2}}) {
    // shift 0: float4 path (cudaMalloc'd buffers are aligned); shift 1: the scalar path.
    for (const size_t shift : {size_t{0}, size_t{1}}) {
      SCOPED_TRACE("N=" + std::to_string(N) + " shift=" + std::to_string(shift));
      const size_t n = static_cast<size_t>(N) + shift;
      const std::vector<float> a = normal(n, 21, 1.0), b = normal(n, 22, 1.0);
      const std::vector<float> dout = normal(n, 23, 1.0);
      std::vector<float> out_cpu(n), da_cpu = normal(n, 24, 1.0), db_cpu = normal(n, 25, 1.0);
      const std::vector<float> da_init = da_cpu, db_init = db_cpu;
      residual_forward(out_cpu.data() + shift, a.data() + shift, b.data() + shift, N);
      residual_backward(da_cpu.data() + shift, db_cpu.data() + shift, dout.data() + shift, N);

      DeviceArray<float> a_gpu = test::to_device(a, stream), b_gpu = test::to_device(b, stream);
      DeviceArray<float> dout_gpu = test::to_device(dout, stream);
      DeviceArray<float> out_gpu = poisoned(n, stream);
      cuda_residual_forward(out_gpu.data() + shift, a_gpu.data() + shift, b_gpu.data() + shift, N,
                            stream);
      std::vector<float> out = test::to_host(out_gpu.data(), n, stream);
      EXPECT_EQ(std::vector<float>(out.begin() + static_cast<std::ptrdiff_t>(shift), out.end()),
                std::vector<float>(out_cpu.begin() + static_cast<std::ptrdiff_t>(shift),
                                   out_cpu.end()));
      // out aliasing the first input.
      cuda_residual_forward(a_gpu.data() + shift, a_gpu.data() + shift, b_gpu.data() + shift, N,
                            stream);
      out = test::to_host(a_gpu.data(), n, stream);
      EXPECT_EQ(std::vector<float>(out.begin() + static_cast<std::ptrdiff_t>(shift), out.end()),
                std::vector<float>(out_cpu.begin() + static_cast<std::ptrdiff_t>(shift),
                                   out_cpu.end()));

      DeviceArray<float> da_gpu = test::to_device(da_init, stream);
      DeviceArray<float> db_gpu = test::to_device(db_init, stream);
      cuda_residual_backward(da_gpu.data() + shift, db_gpu.data() + shift, dout_gpu.data() + shift,
                             N, stream);
      EXPECT_EQ(test::to_host(da_gpu.data(), n, stream), da_cpu);
      EXPECT_EQ(test::to_host(db_gpu.data(), n, stream), db_cpu);
    }
  }
}

struct CrossEntropyShape {
  int N, V;
};

TEST(CudaLayers, CrossEntropyMatchesCpu) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  const float dloss = 0.7f;
  for (const CrossEntropyShape s : {CrossEntropyShape{1, 1000}, CrossEntropyShape{37, 1000},
                                    CrossEntropyShape{300, 1000}, CrossEntropyShape{5, 33},
                                    CrossEntropyShape{3, 7}}) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " V=" + std::to_string(s.V));
    const size_t N = static_cast<size_t>(s.N), NV = N * static_cast<size_t>(s.V);
    std::vector<float> logits = normal(NV, 31, 1.0);
    // Row 0 shifted by 100: exp without the max shift would overflow.
    for (int v = 0; v < s.V; ++v) logits[static_cast<size_t>(v)] += 100.0f;
    std::vector<int32_t> targets(N);
    for (size_t n = 0; n < N; ++n) {
      targets[n] = static_cast<int32_t>(random_uniform(kSeed, 32, n) * s.V);
    }
    std::vector<float> losses_cpu(N), probs_cpu(NV), dlogits_cpu(NV);
    crossentropy_softmax_forward(losses_cpu.data(), probs_cpu.data(), logits.data(),
                                 targets.data(), s.N, s.V);
    crossentropy_softmax_backward(dlogits_cpu.data(), probs_cpu.data(), targets.data(), dloss,
                                  s.N, s.V);

    DeviceArray<float> logits_gpu = test::to_device(logits, stream);
    DeviceArray<int32_t> targets_gpu = test::to_device(targets, stream);
    std::vector<float> losses[2], probs[2];
    for (int run = 0; run < 2; ++run) {
      DeviceArray<float> losses_gpu = poisoned(N, stream), probs_gpu = poisoned(NV, stream);
      cuda_crossentropy_softmax_forward(losses_gpu.data(), probs_gpu.data(), logits_gpu.data(),
                                        targets_gpu.data(), s.N, s.V, stream);
      losses[run] = test::to_host(losses_gpu.data(), N, stream);
      probs[run] = test::to_host(probs_gpu.data(), NV, stream);
    }
    EXPECT_TRUE(same_bits(losses[0], losses[1]));
    EXPECT_TRUE(same_bits(probs[0], probs[1]));
    size_t bad_probs = 0, bad_losses = 0;
    double worst_prob = 0.0, worst_loss = 0.0;
    for (size_t i = 0; i < NV; ++i) {
      const double diff = std::fabs(double{probs[0][i]} - double{probs_cpu[i]});
      const double relative = diff / std::fabs(double{probs_cpu[i]});
      if (!(relative <= kProbTolerance)) ++bad_probs;
      if (relative > worst_prob || std::isnan(relative)) worst_prob = relative;
    }
    for (size_t n = 0; n < N; ++n) {
      const double diff = std::fabs(double{losses[0][n]} - double{losses_cpu[n]});
      const double bound =
          kLossAbsoluteTolerance + kLossRelativeTolerance * std::fabs(double{losses_cpu[n]});
      if (!(diff <= bound)) ++bad_losses;
      if (diff > worst_loss || std::isnan(diff)) worst_loss = diff;
    }
    EXPECT_EQ(bad_probs, 0u) << "worst relative difference " << worst_prob;
    EXPECT_EQ(bad_losses, 0u) << "worst absolute difference " << worst_loss;
    std::printf("  N=%d V=%d: probs max rel diff %.3g, losses max abs diff %.3g\n", s.N, s.V,
                worst_prob, worst_loss);

    // Backward from the CPU's probs: the same float operations, the same bits; into a separate
    // (poisoned) buffer and in place over probs.
    DeviceArray<float> probs_in = test::to_device(probs_cpu, stream);
    DeviceArray<float> dlogits_gpu = poisoned(NV, stream);
    cuda_crossentropy_softmax_backward(dlogits_gpu.data(), probs_in.data(), targets_gpu.data(),
                                       dloss, s.N, s.V, stream);
    EXPECT_EQ(test::to_host(dlogits_gpu.data(), NV, stream), dlogits_cpu);
    cuda_crossentropy_softmax_backward(probs_in.data(), probs_in.data(), targets_gpu.data(), dloss,
                                       s.N, s.V, stream);
    EXPECT_EQ(test::to_host(probs_in.data(), NV, stream), dlogits_cpu);
  }
}

struct AdamWCase {
  bool masked;
  int step;
  float grad_scale;
};

TEST(CudaLayers, AdamWMatchesCpu) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  const size_t n = 100003;
  const std::vector<float> params = normal(n, 41, 1.0), grads = normal(n, 42, 1.0);
  const std::vector<float> m_init = normal(n, 43, 0.1);
  std::vector<float> v_init = normal(n, 44, 0.01);
  for (float& value : v_init) value = std::fabs(value) + 1e-4f;
  std::vector<uint8_t> mask(n);
  for (size_t i = 0; i < n; ++i) mask[i] = random_uniform(kSeed, 45, i) < 0.5 ? 1 : 0;
  DeviceArray<float> grads_gpu = test::to_device(grads, stream);
  DeviceArray<uint8_t> mask_gpu = test::to_device(mask, stream);

  for (const AdamWCase c : {AdamWCase{false, 1, 0.37f}, AdamWCase{true, 1, 0.37f},
                            AdamWCase{false, 3, 0.37f}, AdamWCase{true, 3, 0.37f},
                            AdamWCase{true, 3, 1.0f}}) {
    SCOPED_TRACE(std::string(c.masked ? "masked" : "unmasked") + " step " +
                 std::to_string(c.step) + " grad_scale " + std::to_string(c.grad_scale));
    AdamWSettings settings;
    settings.learning_rate = 1e-2f;
    settings.weight_decay = 0.1f;
    settings.grad_scale = c.grad_scale;
    std::vector<float> p_cpu = params, m_cpu = m_init, v_cpu = v_init;
    adamw_update(p_cpu.data(), m_cpu.data(), v_cpu.data(), grads.data(),
                 c.masked ? mask.data() : nullptr, static_cast<int64_t>(n), settings, c.step);

    DeviceArray<float> p_gpu = test::to_device(params, stream);
    DeviceArray<float> m_gpu = test::to_device(m_init, stream);
    DeviceArray<float> v_gpu = test::to_device(v_init, stream);
    cuda_adamw_update(p_gpu.data(), m_gpu.data(), v_gpu.data(), grads_gpu.data(),
                      c.masked ? mask_gpu.data() : nullptr, static_cast<int64_t>(n), settings,
                      c.step, stream);
    const std::vector<float> p = test::to_host(p_gpu.data(), n, stream);
    const std::vector<float> m = test::to_host(m_gpu.data(), n, stream);
    const std::vector<float> v = test::to_host(v_gpu.data(), n, stream);

    const double b1 = settings.beta1, b2 = settings.beta2, lr = settings.learning_rate;
    const double m_correction = 1.0 / (1.0 - std::pow(b1, c.step));
    const double v_correction = 1.0 / (1.0 - std::pow(b2, c.step));
    size_t bad_m = 0, bad_v = 0, bad_p = 0;
    for (size_t i = 0; i < n; ++i) {
      const double g = double{grads[i]} * c.grad_scale;
      const double m_bound = 1e-6 * (b1 * std::fabs(m_init[i]) + (1.0 - b1) * std::fabs(g));
      const double v_bound = 1e-6 * (b2 * v_init[i] + (1.0 - b2) * g * g);
      const double ratio =
          m_cpu[i] * m_correction / (std::sqrt(v_cpu[i] * v_correction) + settings.eps);
      const double p_bound = 1e-6 * std::fabs(params[i]) + 1e-5 * lr * (1.0 + std::fabs(ratio));
      if (!(std::fabs(double{m[i]} - m_cpu[i]) <= m_bound)) ++bad_m;
      if (!(std::fabs(double{v[i]} - v_cpu[i]) <= v_bound)) ++bad_v;
      if (!(std::fabs(double{p[i]} - p_cpu[i]) <= p_bound)) ++bad_p;
    }
    EXPECT_EQ(bad_m, 0u);
    EXPECT_EQ(bad_v, 0u);
    EXPECT_EQ(bad_p, 0u);
    // The update moved the parameters: the comparison is not of two no-ops.
    EXPECT_GT(test::max_abs_diff(p.data(), params.data(), n), 1e-3);
    std::printf("  %s step %d grad_scale %.2f: params max abs diff %.3g\n",
                c.masked ? "masked" : "unmasked", c.step, static_cast<double>(c.grad_scale),
                test::max_abs_diff(p.data(), p_cpu.data(), n));
  }
}

TEST(CudaLayers, SumOfSquaresMatchesADoubleLoop) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  for (const int64_t n : {int64_t{0}, int64_t{1}, kSquaresBlock, kSquaresBlock + 1,
                          int64_t{1000003}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const std::vector<float> values = normal(static_cast<size_t>(std::max<int64_t>(n, 1)), 51, 1.0);
    double want = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      want += double{values[static_cast<size_t>(i)]} * values[static_cast<size_t>(i)];
    }
    DeviceArray<float> values_gpu = test::to_device(values, stream);
    DeviceArray<double> scratch(
        static_cast<size_t>(std::max<int64_t>(cuda_sum_of_squares_scratch_doubles(n), 1)));
    DeviceArray<double> result(2);
    const std::vector<double> poison = {std::nan(""), std::nan("")};
    copy_to_device(result.data(), poison.data(), 2 * sizeof(double), stream);
    cuda_sum_of_squares(result.data(), scratch.data(), values_gpu.data(), n, stream);
    cuda_sum_of_squares(result.data() + 1, scratch.data(), values_gpu.data(), n, stream);
    const std::vector<double> got = test::to_host(result.data(), 2, stream);
    EXPECT_EQ(std::memcmp(&got[0], &got[1], sizeof(double)), 0) << "two runs differ";
    const double bound = static_cast<double>(n) * 0x1.0p-53 * want;
    EXPECT_LE(std::fabs(got[0] - want), bound) << "gpu " << got[0] << " loop " << want;
    EXPECT_LE(std::fabs(sum_of_squares(values.data(), n) - want), bound);
    std::printf("  n=%lld: relative diff %.3g\n", static_cast<long long>(n),
                want > 0.0 ? std::fabs(got[0] - want) / want : std::fabs(got[0]));
  }
}

}  // namespace
}  // namespace moebench
