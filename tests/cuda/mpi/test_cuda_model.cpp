// The GPU model (CudaMoETransformer, src/cuda/model_cuda.cpp) against the CPU MoETransformer
// under mpirun with P = 1, 2, 4 ranks (one GPU per rank; skipped where a node has fewer GPUs
// than ranks): the same configuration and seed, every rank with its own batch, two
// forward/backward passes of different batch sizes, compared:
//  - the dense parameters each backend initialises from the seed: identical bits;
//  - the mean loss and the router losses; the logits;
//  - the routing decisions of every MoE block: identical;
//  - every dense gradient tensor, every MoE block's router and expert gradients.
// The routers read activations that differ between the backends by rounding (~1e-6 of the
// scale), so a token whose k-th and (k+1)-th logits are that close would be routed
// differently, the same way every run for these seeds. The models are small (<= 40 tokens a
// rank, 4 experts), which makes that improbable; a decision mismatch names the rank, and a
// near-tie is the first thing to check there before suspecting the kernels.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gpu_test_support.hpp"
#include "model_cuda.hpp"
#include "moebench/model.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

const bool registered = test::register_gpu_environment();

using test::all_ranks;

// Relative to the largest CPU value of each tensor. Both backends compute in fp32 with sums in
// different orders (OpenBLAS and the CPU's packed kernels against cuBLAS), exponentials from
// different libraries (fast_exp against expf) and the CPU's double sums where the GPU sums
// floats; each layer differs by ~1e-6 of its scale and the differences pass through the two
// blocks forward and back (about twenty chained operations). 1e-3 leaves room for that
// growth, and stays far below what a wrong index, a missing term, a lost accumulation, a
// swapped tensor or an unwritten gradient gives (O(1) of the scale). The losses are single
// numbers averaged over every position: 1e-5 relative.
constexpr double kTolerance = 1e-3;
constexpr double kLossTolerance = 1e-5;

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

std::vector<float> download(const DeviceArray<float>& device, CUstream_st* stream) {
  return test::to_host(device.data(), device.size(), stream);
}

double relative(const float* got, const float* want, size_t count) {
  return test::max_abs_diff(got, want, count) / std::max(test::max_abs(want, count), 1e-30);
}

// Collective; true when every rank was within.
bool within(const std::string& what, const float* got, const float* want, size_t count,
            double tolerance, double& worst) {
  const double diff = relative(got, want, count);
  const bool ok = diff <= tolerance;  // false for NaN
  EXPECT_TRUE(ok) << "rank " << world_rank() << ": " << what << " max rel diff " << diff;
  worst = std::isnan(diff) ? diff : std::max(worst, diff);
  return all_ranks(ok);
}

ModelConfig model_config(RouterKind router, RouterArch arch, int moe_every,
                         DispatchMode dispatch) {
  ModelConfig config;
  config.vocab = 67;
  config.max_seq_len = 24;
  config.d_model = 32;
  config.layers = 2;
  config.heads = 2;
  config.ffn_hidden = 48;
  config.moe_every = moe_every;
  config.moe.routing = test::make_config(router, 4, 2, 1.25);
  config.moe.router_arch = arch;
  config.moe.router_hidden = 16;
  config.moe.d_hidden = 40;
  config.moe.dispatch = dispatch;
  config.seed = 77;
  return config;
}

void run_model_case(const std::string& name, const ModelConfig& config) {
  SCOPED_TRACE(name);
  MOEBENCH_REQUIRE_GPU();
  const int rank = world_rank();
  if (rank == 0) std::printf("  %s\n", name.c_str());
  CUstream_st* stream = context.compute_stream();
  const int max_batch = 2, T = 20;
  MoETransformer cpu(config, MPI_COMM_WORLD, max_batch, T);
  CudaMoETransformer gpu(config, context, max_batch, T);
  const bool same_init = download(gpu.dense_params(), stream) == cpu.dense_params();
  EXPECT_TRUE(same_init) << "rank " << rank << ": initial dense parameters differ";
  ASSERT_TRUE(all_ranks(same_init));
  std::vector<MoELayer*> cpu_moe = cpu.moe_layers();
  std::vector<CudaMoELayer*> gpu_moe = gpu.moe_layers();
  ASSERT_EQ(cpu_moe.size(), gpu_moe.size());

  for (int pass = 0; pass < 2; ++pass) {
    SCOPED_TRACE("pass " + std::to_string(pass));
    const int B = pass == 0 ? max_batch : 1;
    std::vector<int32_t> tokens(static_cast<size_t>(B) * T), targets(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      const uint64_t stream_id = 10 * static_cast<uint64_t>(rank) + static_cast<uint64_t>(pass);
      tokens[i] = static_cast<int32_t>(random_bits(91, stream_id, i) % config.vocab);
      targets[i] = static_cast<int32_t>(random_bits(92, stream_id, i) % config.vocab);
    }
    const float cpu_loss = cpu.forward(tokens.data(), targets.data(), B, T);
    const float gpu_loss = gpu.forward(tokens.data(), targets.data(), B, T);
    const float cpu_aux = cpu.aux_loss(), gpu_aux = gpu.aux_loss();
    bool same = true;
    for (size_t l = 0; l < cpu_moe.size(); ++l) {
      RoutingPlan plan;
      plan.reserve(gpu_moe[l]->config().routing, max_batch * T);
      download_plan(plan, gpu_moe[l]->plan(), stream);
      same = same && plan.expert == cpu_moe[l]->plan().expert &&
             plan.kept == cpu_moe[l]->plan().kept && plan.position == cpu_moe[l]->plan().position;
    }
    EXPECT_TRUE(same) << "rank " << rank << ": routing decisions differ";
    ASSERT_TRUE(all_ranks(same)) << "routing decisions differ on some rank";
    cpu.backward();
    gpu.backward();

    double worst = 0.0;
    const double loss_diff = std::fabs(double{gpu_loss} - cpu_loss) / std::fabs(double{cpu_loss});
    bool ok = loss_diff <= kLossTolerance;
    EXPECT_TRUE(ok) << "rank " << rank << ": loss " << gpu_loss << " against " << cpu_loss;
    const double aux_diff = std::fabs(double{gpu_aux} - cpu_aux) /
                            std::max(std::fabs(double{cpu_aux}), 1e-30);
    EXPECT_LE(aux_diff, kLossTolerance) << "router losses " << gpu_aux << " against " << cpu_aux;
    ok = ok && aux_diff <= kLossTolerance;
    ASSERT_TRUE(all_ranks(ok));

    const size_t logit_count = static_cast<size_t>(B) * T * config.vocab;
    const std::vector<float> logits = test::to_host(gpu.logits(), logit_count, stream);
    ok = within("logits", logits.data(), cpu.logits(), logit_count, kTolerance, worst);
    const std::vector<float> grads = download(gpu.dense_grads(), stream);
    for (const ParamTensor& t : gpu.tensors()) {
      ok = within(t.name, grads.data() + t.offset, cpu.dense_grads().data() + t.offset,
                  static_cast<size_t>(t.size), kTolerance, worst) && ok;
    }
    for (size_t l = 0; l < cpu_moe.size(); ++l) {
      const std::vector<float> router = download(gpu_moe[l]->router_grads(), stream);
      const std::vector<float> experts = download(gpu_moe[l]->expert_grads(), stream);
      ok = within("moe" + std::to_string(l) + ".router", router.data(),
                  cpu_moe[l]->router_grads().data(), router.size(), kTolerance, worst) && ok;
      ok = within("moe" + std::to_string(l) + ".experts", experts.data(),
                  cpu_moe[l]->expert_grads().data(), experts.size(), kTolerance, worst) && ok;
    }
    if (rank == 0) {
      std::printf("    B=%d: loss %.6f (cpu %.6f), model max rel diff %.2g (rank 0)\n", B,
                  double{gpu_loss}, double{cpu_loss}, worst);
    }
    ASSERT_TRUE(ok);
  }
}

TEST(CudaModel, TopkHardEveryOtherBlock) {
  ModelConfig config =
      model_config(RouterKind::topk_hard, RouterArch::linear, 2, DispatchMode::ragged);
  config.moe.routing.balance = BalanceKind::aux;
  run_model_case("topk_hard k=2, linear router, aux, MoE block 0 + dense block 1, ragged", config);
}

TEST(CudaModel, SoftkMlpRouterEveryBlockPadded) {
  ModelConfig config = model_config(RouterKind::softk, RouterArch::mlp, 1, DispatchMode::padded);
  config.moe.routing.z_loss_coeff = 1e-3f;
  run_model_case("softk k=2, mlp router, z-loss, two MoE blocks, padded", config);
}

TEST(CudaModel, HashEveryBlock) {
  run_model_case("hash k=2, two MoE blocks, ragged",
                 model_config(RouterKind::hash, RouterArch::linear, 1, DispatchMode::ragged));
}

// Out-of-vocabulary tokens and targets are refused on the host with the CPU layers' errors,
// before any device work (every rank gets the same bad batch, so every rank throws).
TEST(CudaModel, RefusesOutOfVocabularyIds) {
  MOEBENCH_REQUIRE_GPU();
  const ModelConfig config =
      model_config(RouterKind::topk_hard, RouterArch::linear, 2, DispatchMode::ragged);
  CudaMoETransformer gpu(config, context, 1, 4);
  std::vector<int32_t> good = {1, 2, 3, 4}, bad = {1, 2, config.vocab, 4};
  EXPECT_THROW(gpu.forward(bad.data(), good.data(), 1, 4), Error);
  EXPECT_THROW(gpu.forward(good.data(), bad.data(), 1, 4), Error);
  // Still usable: a good batch goes through.
  EXPECT_TRUE(std::isfinite(gpu.forward(good.data(), good.data(), 1, 4)));
}

}  // namespace
}  // namespace moebench
