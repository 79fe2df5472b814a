// The MoE layer (DESIGN §2): route -> dispatch -> experts -> combine, forward and backward,
// with experts sharded over the ranks of `comm`.
//
//   y = sum over kept assignments (t, e) of gate[t, e] * Expert_e(x_t)         [T, d]
//
// The residual connection is the caller's (a dropped assignment contributes nothing here).
// The layer's objective adds the router losses of §3 (aux and z-loss) to whatever loss the
// caller differentiates, so backward() includes their gradients.
//
// Parameters: the router network (replicated; its gradient is this rank's contribution and
// the caller sums or averages it over ranks) and this rank's E_local experts (global experts
// [rank E_local, (rank+1) E_local); no reduction needed). Both are initialised from the seed
// so that every rank count gives the same model.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "moebench/dispatcher.hpp"
#include "moebench/experts.hpp"
#include "moebench/router_net.hpp"
#include "moebench/routing.hpp"

namespace moebench {

struct MoELayerConfig {
  RoutingConfig routing;
  RouterArch router_arch = RouterArch::linear;
  int router_hidden = 64;  // h of the mlp routers
  int d_model = 64;        // d
  int d_hidden = 256;      // expert FFN width
  DispatchMode dispatch = DispatchMode::ragged;
  // The expert products' operands (fp32 accumulation either way); bf16 on the GPU only.
  GemmPrecision expert_precision = GemmPrecision::fp32;
  uint64_t seed = 1234;
};

// Throws UsageError naming the option and the fix when `config` cannot run on `ranks` ranks
// (routing options, E divisible by the rank count, positive sizes). The CPU and GPU layers
// both check with it before building anything.
void validate_moe_layer_config(const MoELayerConfig& config, int ranks);

// Seconds per phase on this rank, summed over calls.
struct MoELayerTimings {
  double router = 0.0;   // router network and routing plan (forward and backward)
  double experts = 0.0;  // expert FFNs (forward and backward)
};

class MoELayer {
 public:
  // Collective. Validates the configuration (UsageError naming the option and the fix),
  // allocates every buffer for up to max_tokens tokens and initialises the parameters.
  MoELayer(const MoELayerConfig& config, MPI_Comm comm, int max_tokens);

  // y [T, d]; x [T, d]; token_ids [T] (hash routing; may be null otherwise). Collective.
  void forward(float* y, const float* x, const int32_t* token_ids, int num_tokens);
  // dx [T, d] from dy [T, d]. Overwrites dx and the parameter gradients (router and
  // experts): nothing needs clearing between steps. Collective.
  void backward(float* dx, const float* dy);
  // balance = bias: update the selection bias from the global demand of the last forward.
  void update_balance_bias(MPI_Comm comm);

  const MoELayerConfig& config() const { return config_; }
  const RoutingPlan& plan() const { return plan_; }
  // [T, E] of the last forward; empty (no router) for hash routing
  const float* logits() const { return logits_.data(); }
  Dispatcher& dispatcher() { return dispatcher_; }
  const MoELayerTimings& timings() const { return timings_; }
  void reset_counters();

  std::vector<float>& router_params() { return router_params_; }
  std::vector<float>& router_grads() { return router_grads_; }
  std::vector<float>& expert_params() { return expert_params_; }
  std::vector<float>& expert_grads() { return expert_grads_; }
  std::vector<float>& selection_bias() { return selection_bias_; }
  ExpertShape expert_shape() const { return expert_shape_; }
  RouterNetShape router_shape() const { return router_shape_; }

 private:
  MoELayerConfig config_;
  int max_tokens_;
  int num_tokens_ = 0;
  RouterNetShape router_shape_;
  ExpertShape expert_shape_;
  RoutingPlan plan_;
  Dispatcher dispatcher_;
  MoELayerTimings timings_;

  std::vector<float> router_params_, router_grads_;  // [router_param_count]
  std::vector<float> expert_params_, expert_grads_;  // [expert_param_count]
  std::vector<float> selection_bias_;                // [E]
  std::vector<int64_t> global_demand_;               // [E] scratch for the bias update
  const float* input_ = nullptr;                     // x of the last forward (caller-owned)

  std::vector<float> logits_;        // [T, E]; these router buffers are empty for hash routing
  std::vector<float> router_saved_;  // [T, router activations]
  std::vector<float> expert_in_;     // [N, d] expert-major
  std::vector<float> expert_out_;    // [N, d]
  std::vector<float> hidden_pre_;    // [N, h]
  std::vector<float> hidden_act_;    // [N, h]
  // Backward scratch.
  std::vector<float> d_gate_;        // [T, slots]
  std::vector<float> d_logits_;      // [T, E]
  std::vector<float> router_scratch_;  // [T, router activations]
  std::vector<float> d_expert_out_;  // [N, d]
  std::vector<float> d_expert_in_;   // [N, d]
  std::vector<float> d_hidden_;      // [N, h]
};

}  // namespace moebench
