// The whole MoE transformer on one process: finite-difference check of every gradient
// (dense, router and expert parameters) of mean cross-entropy + router losses.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/model.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

ModelConfig tiny_config(RouterKind router) {
  ModelConfig config;
  config.vocab = 11;
  config.max_seq_len = 5;
  config.d_model = 8;
  config.layers = 2;
  config.heads = 2;
  config.ffn_hidden = 12;
  config.moe_every = 2;  // block 0 MoE, block 1 dense
  config.moe.routing.router = router;
  config.moe.routing.num_experts = 4;
  config.moe.routing.top_k = router == RouterKind::top1 ? 1 : 2;
  config.moe.routing.capacity_factor = 1.0;
  config.moe.routing.balance = parse_balance_kind("--balance", "auto", router);
  config.moe.routing.aux_loss_coeff = 0.1f;
  config.moe.routing.z_loss_coeff = has_learned_router(router) ? 0.01f : 0.0f;
  config.moe.d_hidden = 10;
  config.seed = 5;
  return config;
}

class ModelGradient : public ::testing::TestWithParam<RouterKind> {};

TEST_P(ModelGradient, MatchesFiniteDifferences) {
  const int B = 2, T = 5;
  MoETransformer model(tiny_config(GetParam()), MPI_COMM_SELF, B, T);
  // Larger weights than the 0.02 init so the gradients are well above fp32 noise.
  for (size_t i = 0; i < model.dense_params().size(); ++i) {
    model.dense_params()[i] += static_cast<float>(0.3 * random_normal(9, 1, i));
  }
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    tokens[i] = static_cast<int32_t>(random_bits(9, 2, i) % 11);
    targets[i] = static_cast<int32_t>(random_bits(9, 3, i) % 11);
  }
  auto objective = [&]() {
    return static_cast<double>(model.forward(tokens.data(), targets.data(), B, T)) + model.aux_loss();
  };
  objective();
  const RoutingPlan plan = model.moe_layers()[0]->plan();
  model.backward();
  std::vector<std::vector<float>*> params = {&model.dense_params()};
  std::vector<std::vector<float>> grads = {model.dense_grads()};
  std::vector<std::string> names = {"dense"};
  for (MoELayer* layer : model.moe_layers()) {
    params.push_back(&layer->router_params());
    grads.push_back(layer->router_grads());
    names.push_back("router");
    params.push_back(&layer->expert_params());
    grads.push_back(layer->expert_grads());
    names.push_back("experts");
  }
  // Central differences, eps 1e-2: truncation and fp32 rounding errors are ~1e-4 at these
  // magnitudes; 3e-3 + 3 % leaves room while a wrong term is O(0.1).
  const float eps = 1e-2f;
  int checked = 0, skipped = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    std::vector<float>& values = *params[p];
    for (size_t i = 0; i < values.size(); ++i) {
      const float saved = values[i];
      values[i] = saved + eps;
      const double up = objective();
      const bool same_up = model.moe_layers()[0]->plan().expert == plan.expert &&
                           model.moe_layers()[0]->plan().kept == plan.kept;
      values[i] = saved - eps;
      const double down = objective();
      const bool same_down = model.moe_layers()[0]->plan().expert == plan.expert &&
                             model.moe_layers()[0]->plan().kept == plan.kept;
      values[i] = saved;
      if (!same_up || !same_down) {
        ++skipped;
        continue;
      }
      const double numeric = (up - down) / (2.0 * eps);
      EXPECT_NEAR(grads[p][i], numeric, 3e-3 + 3e-2 * std::abs(numeric))
          << names[p] << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 20 * (skipped + 1));
}

INSTANTIATE_TEST_SUITE_P(Routers, ModelGradient,
                         ::testing::Values(RouterKind::softk, RouterKind::top1,
                                           RouterKind::expert_choice, RouterKind::hash),
                         [](const ::testing::TestParamInfo<RouterKind>& param_info) {
                           return std::string(to_string(param_info.param));
                         });

// backward() writes every gradient (dense, router, experts) over what the buffers held: the
// same step again over NaN-filled buffers gives the first run's bits. Nothing clears them between
// training steps, so a gradient it only added to would carry NaN (or last step's values).
TEST(Model, BackwardOverwritesEveryGradient) {
  const int B = 2, T = 5;
  MoETransformer model(tiny_config(RouterKind::softk), MPI_COMM_SELF, B, T);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    tokens[i] = static_cast<int32_t>(random_bits(10, 2, i) % 11);
    targets[i] = static_cast<int32_t>(random_bits(10, 3, i) % 11);
  }
  MoELayer& moe = *model.moe_layers()[0];
  const auto all_grads = [&] {
    return std::vector<std::vector<float>>{model.dense_grads(), moe.router_grads(),
                                           moe.expert_grads()};
  };
  model.forward(tokens.data(), targets.data(), B, T);
  model.backward();
  const std::vector<std::vector<float>> first = all_grads();
  for (std::vector<float>* g : {&model.dense_grads(), &moe.router_grads(), &moe.expert_grads()}) {
    std::fill(g->begin(), g->end(), std::nanf(""));
  }
  model.forward(tokens.data(), targets.data(), B, T);  // backward consumes the probabilities
  model.backward();
  const std::vector<std::vector<float>> second = all_grads();
  const char* names[] = {"dense", "router", "experts"};
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_FALSE(first[i].empty()) << names[i];
    EXPECT_EQ(second[i], first[i]) << names[i];
  }
}

TEST(Model, HeadsMustDivideDModel) {
  ModelConfig config = tiny_config(RouterKind::softk);
  config.heads = 3;
  EXPECT_THROW(MoETransformer(config, MPI_COMM_SELF, 1, 4), UsageError);
}

// Counted by hand: C = 4, V = 10, T = 3, block 0 MoE (E = 4, k = 2, expert width 6, linear
// router), block 1 dense (H = 8). Weights a token meets: head 40; block 0: 4C^2 = 64, router
// 16, experts 2 x 2 x 4 x 6 = 96; block 1: 64 + 2 x 4 x 8 = 64. Attention 2 blocks x 2 x 2 x
// C x (T + 1) / 2 = 64. Forward 2 x 344 + 64 = 752; training 3 x 752.
TEST(Model, FlopsPerTokenCountedByHand) {
  ModelConfig config;
  config.vocab = 10;
  config.d_model = 4;
  config.layers = 2;
  config.moe_every = 2;
  config.ffn_hidden = 8;
  config.moe.d_model = 4;
  config.moe.d_hidden = 6;
  config.moe.routing.num_experts = 4;
  config.moe.routing.top_k = 2;
  config.moe.router_arch = RouterArch::linear;
  EXPECT_DOUBLE_EQ(model_flops_per_token(config, 3), 3.0 * 752);
  config.moe.router_arch = RouterArch::mlp;  // router d h + h E = 20 + 20 instead of 16
  config.moe.router_hidden = 5;
  EXPECT_DOUBLE_EQ(model_flops_per_token(config, 3), 3.0 * (752 + 2 * 24));
  config.moe_every = 1;  // block 1 MoE too: 64 + 40 + 96 instead of 128
  EXPECT_DOUBLE_EQ(model_flops_per_token(config, 3), 3.0 * (752 + 2 * 24 + 2 * 72));
}

}  // namespace
}  // namespace moebench
