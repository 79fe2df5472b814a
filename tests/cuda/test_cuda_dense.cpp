// GPU dense layers (src/cuda/dense_cuda.cpp, dense_kernels.cu) against the CPU references of
// layers.hpp: matmul_*_reference and lm_head_*_reference (plain loops, double accumulation) and
// attention_*_reference (loops over the causal pairs, fast_exp softmax), on random data with
// shapes that are not multiples of any tile. Gradients start non-zero and the *increments* are
// compared, so a lost accumulation fails; outputs, att and scratch start as NaN, so an entry
// left unwritten (or a read of unwritten scratch) fails; every GPU run is made twice and must
// give the same bits.
//
// Tolerances, each relative to the largest magnitude of the reference tensor (att: absolute,
// its entries are probabilities in [0, 1]):
//  - kProductTolerance 1e-5 (linear layer, tied head). The reference sums in double; cuBLAS sums
//    K fp32 products (K = C <= 128, OC <= 384, V = 1000 or N <= 300) in its own order. For
//    random N(0, 1) data the rounding error of an entry is ~ sqrt(K) 2^-24 times the products'
//    rms (1), while the largest entry is ~ 4 sqrt(K): ~1e-8 of the scale, a few 1e-7 with
//    unlucky orders. 1e-5 leaves a wide margin; a transposed operand, a wrong leading dimension,
//    a missing bias or a lost accumulation changes entries by O(1) of the scale.
//  - kAttTolerance 5e-6 absolute (att). Scores are fp32 dot products over hs = 32 on both sides
//    (a few ulp apart), scaled to ~N(0, 1); the GPU's expf (<= 2 ulp) and the CPU's fast_exp
//    (<= 2e-7 relative) differ by <= ~4e-7 relative, and the normaliser (fp32 warp sum on the
//    GPU, double on the CPU, <= 130 terms) by ~1e-7..1e-6. A missing 1/sqrt(hs) (scores
//    5.7 times larger), a wrong mask or a transposed square is O(0.1..1).
//  - kAttentionTolerance 2e-5 (out, dqkv). Chains of two fp32 products over T <= 130 and
//    hs = 32 terms after the softmax above; the softmax backward's row sum is fp32 on the GPU
//    (double on the CPU). On the CPU, with a double-precision GEMM standing in for cuBLAS and
//    host copies of the kernels, these shapes gave <= 8e-7; fp32 products add ~1e-6. 2e-5
//    leaves a 10x margin; a missing scale is a factor 5.7, a lost accumulation O(1).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "dense_cuda.hpp"
#include "gpu_test_support.hpp"
#include "moebench/check.hpp"
#include "moebench/layers.hpp"

namespace moebench {
namespace {

const bool registered = test::register_gpu_environment();

constexpr double kProductTolerance = 1e-5;
constexpr double kAttTolerance = 5e-6;
constexpr double kAttentionTolerance = 2e-5;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

using test::minus;
using test::normal;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// max |got - want| / max |want| <= tolerance (NaN anywhere fails).
void expect_close(const char* name, const std::vector<float>& got, const std::vector<float>& want,
                  double tolerance) {
  const double diff = test::relative_max_diff(got, want);
  EXPECT_LE(diff, tolerance) << name << ": max |gpu - reference| / max |reference|";
  std::printf("  %-8s max rel diff %.3g\n", name, diff);
}

// ---- linear layer ----------------------------------------------------------------------------

struct MatmulProblem {
  int N, C, OC;
  bool with_bias;
  std::vector<float> inp, weight, bias, dout, dinp0, dweight0, dbias0;

  MatmulProblem(int n, int c, int oc, bool bias_on, uint64_t seed)
      : N(n), C(c), OC(oc), with_bias(bias_on) {
    const auto nc = static_cast<size_t>(N) * C, noc = static_cast<size_t>(N) * OC,
               coc = static_cast<size_t>(C) * OC;
    inp = normal(nc, seed, 1);
    weight = normal(coc, seed, 2);
    bias = normal(static_cast<size_t>(OC), seed, 3);
    dout = normal(noc, seed, 4);
    dinp0 = normal(nc, seed, 5);  // non-zero: gradients must be accumulated
    dweight0 = normal(coc, seed, 6);
    dbias0 = normal(static_cast<size_t>(OC), seed, 7);
  }
};

struct MatmulResult {
  std::vector<float> out, dinp, dweight, dbias;
};

MatmulResult matmul_reference(const MatmulProblem& p) {
  MatmulResult r{std::vector<float>(static_cast<size_t>(p.N) * p.OC), p.dinp0, p.dweight0,
                 p.dbias0};
  const float* bias = p.with_bias ? p.bias.data() : nullptr;
  matmul_forward_reference(r.out.data(), p.inp.data(), p.weight.data(), bias, p.N, p.C, p.OC);
  matmul_backward_reference(r.dinp.data(), r.dweight.data(),
                            p.with_bias ? r.dbias.data() : nullptr, p.dout.data(), p.inp.data(),
                            p.weight.data(), p.N, p.C, p.OC);
  return r;
}

MatmulResult matmul_gpu(const MatmulProblem& p, CudaContext& context) {
  CUstream_st* stream = context.compute_stream();
  const size_t noc = static_cast<size_t>(p.N) * p.OC;
  DeviceArray<float> inp = test::to_device(p.inp, stream);
  DeviceArray<float> weight = test::to_device(p.weight, stream);
  DeviceArray<float> bias = test::to_device(p.bias, stream);
  DeviceArray<float> dout = test::to_device(p.dout, stream);
  DeviceArray<float> dinp = test::to_device(p.dinp0, stream);
  DeviceArray<float> dweight = test::to_device(p.dweight0, stream);
  DeviceArray<float> dbias = test::to_device(p.dbias0, stream);
  DeviceArray<float> out = test::to_device(std::vector<float>(noc, kNaN), stream);
  cuda_matmul_forward(context.blas(), out.data(), inp.data(), weight.data(),
                      p.with_bias ? bias.data() : nullptr, p.N, p.C, p.OC, stream);
  cuda_matmul_backward(context.blas(), dinp.data(), dweight.data(),
                       p.with_bias ? dbias.data() : nullptr, dout.data(), inp.data(),
                       weight.data(), p.N, p.C, p.OC, stream);
  return {test::to_host(out.data(), noc, stream),
          test::to_host(dinp.data(), p.dinp0.size(), stream),
          test::to_host(dweight.data(), p.dweight0.size(), stream),
          test::to_host(dbias.data(), p.dbias0.size(), stream)};
}

TEST(CudaDense, MatmulMatchesReference) {
  MOEBENCH_REQUIRE_GPU();
  uint64_t seed = 100;
  for (const auto& [C, OC] : {std::pair{60, 150}, std::pair{128, 384}}) {
    for (const int N : {1, 7, 300}) {
      for (const bool with_bias : {false, true}) {
        SCOPED_TRACE(testing::Message() << "N=" << N << " C=" << C << " OC=" << OC
                                        << (with_bias ? " with bias" : " without bias"));
        std::printf(" matmul N=%d C=%d OC=%d %s\n", N, C, OC, with_bias ? "bias" : "no bias");
        const MatmulProblem p(N, C, OC, with_bias, ++seed);
        const MatmulResult want = matmul_reference(p);
        const MatmulResult got = matmul_gpu(p, context);
        expect_close("out", got.out, want.out, kProductTolerance);
        expect_close("dinp", minus(got.dinp, p.dinp0), minus(want.dinp, p.dinp0),
                     kProductTolerance);
        expect_close("dweight", minus(got.dweight, p.dweight0), minus(want.dweight, p.dweight0),
                     kProductTolerance);
        if (with_bias) {
          expect_close("dbias", minus(got.dbias, p.dbias0), minus(want.dbias, p.dbias0),
                       kProductTolerance);
        } else {
          EXPECT_TRUE(same_bits(got.dbias, p.dbias0));  // no bias, no bias gradient
        }
        const MatmulResult again = matmul_gpu(p, context);
        EXPECT_TRUE(same_bits(again.out, got.out) && same_bits(again.dinp, got.dinp) &&
                    same_bits(again.dweight, got.dweight) && same_bits(again.dbias, got.dbias))
            << "two runs differ";
      }
    }
  }
}

// ---- tied output head ------------------------------------------------------------------------

struct HeadResult {
  std::vector<float> logits, dinp, dwte;
};

TEST(CudaDense, LmHeadMatchesReference) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  constexpr int V = 1000;
  uint64_t seed = 200;
  for (const auto& [N, C] : {std::pair{1, 60}, std::pair{7, 60}, std::pair{300, 128}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " C=" << C << " V=" << V);
    std::printf(" lm_head N=%d C=%d V=%d\n", N, C, V);
    ++seed;
    const auto nc = static_cast<size_t>(N) * C, nv = static_cast<size_t>(N) * V,
               vc = static_cast<size_t>(V) * C;
    const std::vector<float> inp = normal(nc, seed, 1), wte = normal(vc, seed, 2),
                             dlogits = normal(nv, seed, 3), dinp0 = normal(nc, seed, 4),
                             dwte0 = normal(vc, seed, 5);
    HeadResult want{std::vector<float>(nv), dinp0, dwte0};
    lm_head_forward_reference(want.logits.data(), inp.data(), wte.data(), N, C, V);
    lm_head_backward_reference(want.dinp.data(), want.dwte.data(), dlogits.data(), inp.data(),
                               wte.data(), N, C, V);
    auto run = [&]() {
      DeviceArray<float> d_inp = test::to_device(inp, stream), d_wte = test::to_device(wte, stream),
                         d_dlogits = test::to_device(dlogits, stream),
                         d_dinp = test::to_device(dinp0, stream),
                         d_dwte = test::to_device(dwte0, stream),
                         d_logits = test::to_device(std::vector<float>(nv, kNaN), stream);
      cuda_lm_head_forward(context.blas(), d_logits.data(), d_inp.data(), d_wte.data(), N, C, V);
      cuda_lm_head_backward(context.blas(), d_dinp.data(), d_dwte.data(), d_dlogits.data(),
                            d_inp.data(), d_wte.data(), N, C, V);
      return HeadResult{test::to_host(d_logits.data(), nv, stream),
                        test::to_host(d_dinp.data(), nc, stream),
                        test::to_host(d_dwte.data(), vc, stream)};
    };
    const HeadResult got = run();
    expect_close("logits", got.logits, want.logits, kProductTolerance);
    expect_close("dinp", minus(got.dinp, dinp0), minus(want.dinp, dinp0), kProductTolerance);
    expect_close("dwte", minus(got.dwte, dwte0), minus(want.dwte, dwte0), kProductTolerance);
    const HeadResult again = run();
    EXPECT_TRUE(same_bits(again.logits, got.logits) && same_bits(again.dinp, got.dinp) &&
                same_bits(again.dwte, got.dwte))
        << "two runs differ";
  }
}

// ---- attention ---------------------------------------------------------------------------------

struct AttentionResult {
  std::vector<float> out, att, dqkv;
};

TEST(CudaDense, AttentionMatchesReference) {
  MOEBENCH_REQUIRE_GPU();
  CUstream_st* stream = context.compute_stream();
  constexpr int B = 2;
  uint64_t seed = 300;
  for (const auto& [C, NH] : {std::pair{64, 2}, std::pair{96, 3}}) {  // hs = 32
    for (const int T : {1, 5, 64, 130}) {
      SCOPED_TRACE(testing::Message() << "B=" << B << " T=" << T << " C=" << C << " NH=" << NH);
      std::printf(" attention B=%d T=%d C=%d NH=%d\n", B, T, C, NH);
      ++seed;
      const auto btc = static_cast<size_t>(B) * T * C;
      const auto squares = static_cast<size_t>(B) * NH * T * T;
      const std::vector<float> qkv = normal(3 * btc, seed, 1), dout = normal(btc, seed, 2),
                               dqkv0 = normal(3 * btc, seed, 3);
      AttentionResult want{std::vector<float>(btc), std::vector<float>(squares), dqkv0};
      std::vector<float> scratch(static_cast<size_t>(attention_backward_scratch_floats(B, T, NH)));
      attention_forward_reference(want.out.data(), want.att.data(), qkv.data(), B, T, C, NH);
      attention_backward_reference(want.dqkv.data(), scratch.data(), dout.data(), qkv.data(),
                                   want.att.data(), B, T, C, NH);
      auto run = [&]() {
        const auto forward_scratch =
            static_cast<size_t>(cuda_attention_forward_scratch_floats(B, T, C));
        const auto backward_scratch =
            static_cast<size_t>(cuda_attention_backward_scratch_floats(B, T, C, NH));
        DeviceArray<float> d_qkv = test::to_device(qkv, stream),
                           d_dout = test::to_device(dout, stream),
                           d_dqkv = test::to_device(dqkv0, stream),
                           d_out = test::to_device(std::vector<float>(btc, kNaN), stream),
                           d_att = test::to_device(std::vector<float>(squares, kNaN), stream),
                           d_scratch1 = test::to_device(
                               std::vector<float>(forward_scratch, kNaN), stream),
                           d_scratch2 = test::to_device(
                               std::vector<float>(backward_scratch, kNaN), stream);
        cuda_attention_forward(context.blas(), d_out.data(), d_att.data(), d_scratch1.data(),
                               d_qkv.data(), B, T, C, NH, stream);
        cuda_attention_backward(context.blas(), d_dqkv.data(), d_scratch2.data(), d_dout.data(),
                                d_qkv.data(), d_att.data(), B, T, C, NH, stream);
        return AttentionResult{test::to_host(d_out.data(), btc, stream),
                               test::to_host(d_att.data(), squares, stream),
                               test::to_host(d_dqkv.data(), 3 * btc, stream)};
      };
      const AttentionResult got = run();
      expect_close("out", got.out, want.out, kAttentionTolerance);
      const double att_diff = test::max_abs_diff(got.att.data(), want.att.data(), squares);
      EXPECT_LE(att_diff, kAttTolerance) << "att: max |gpu - reference|";
      std::printf("  %-8s max abs diff %.3g\n", "att", att_diff);
      // Above the diagonal: +0.0 exactly, as the CPU writes it.
      int64_t nonzero_future = 0;
      for (size_t row = 0; row < static_cast<size_t>(B) * NH * T; ++row) {
        const size_t t = row % static_cast<size_t>(T);
        for (size_t t2 = t + 1; t2 < static_cast<size_t>(T); ++t2) {
          const float value = got.att[row * static_cast<size_t>(T) + t2];
          if (!(value == 0.0f && !std::signbit(value))) ++nonzero_future;
        }
      }
      EXPECT_EQ(nonzero_future, 0) << "att entries above the diagonal that are not +0";
      expect_close("dqkv", minus(got.dqkv, dqkv0), minus(want.dqkv, dqkv0), kAttentionTolerance);
      const AttentionResult again = run();
      EXPECT_TRUE(same_bits(again.out, got.out) && same_bits(again.att, got.att) &&
                  same_bits(again.dqkv, got.dqkv))
          << "two runs differ";
    }
  }
}

// Refusals come before any device work (these run without a GPU): heads that do not divide the
// channels, zero widths.
TEST(CudaDenseRefusals, BadShapesAreErrors) {
  EXPECT_THROW(cuda_attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 2, 5, 64, 3,
                                      nullptr),
               Error);
  EXPECT_THROW(cuda_attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 2, 5,
                                       0, 1, nullptr),
               Error);
  EXPECT_THROW(cuda_matmul_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 4, 0, 8, nullptr),
               Error);
  EXPECT_THROW(cuda_lm_head_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 8, 0),
               Error);
}

}  // namespace
}  // namespace moebench
