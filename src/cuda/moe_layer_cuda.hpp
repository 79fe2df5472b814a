// The MoE layer (moe_layer.hpp) on the GPU: router network -> cuda_route -> CudaDispatcher ->
// CudaExperts -> combine, forward and backward, with experts sharded over the context's ranks
// and the exchanges on NCCL. Same configuration, parameters (initialised from the seed exactly
// as MoELayer, so a seed gives the same model on either backend), layouts and contracts as
// the CPU MoELayer:
//
//   y = sum over kept assignments (t, e) of gate[t, e] * Expert_e(x_t)         [T, d]
//
// backward() overwrites dx and every parameter gradient, including the router losses' (aux
// and z) gradients through the routing plan (cuda_route_backward). The router gradient is
// this rank's contribution (the caller averages it over ranks with the dense gradients).
//
// Every x, y, dx, dy and token id pointer is device memory; x must stay valid and unchanged
// from forward() to backward(). Work goes to the context's compute stream (router, routing,
// permutes, experts) and communication stream (exchanges); forward() waits on the host only
// where the CudaDispatcher does (set_plan needs the loads). Not on the GPU: --drop-policy prob and top-k above 8 (UsageError, from
// validate_gpu_routing_config).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dispatcher_cuda.hpp"
#include "experts_cuda.hpp"
#include "moebench/cuda.hpp"
#include "moebench/moe_layer.hpp"
#include "phase_timers.hpp"
#include "routing_cuda.hpp"

namespace moebench {

class CudaMoELayer {
 public:
  // Validates the configuration as MoELayer does plus the GPU routing's limits (UsageError
  // naming the option and the fix), allocates every buffer for up to max_tokens tokens and
  // initialises the parameters. Collective over the context's ranks (count exchange setup).
  CudaMoELayer(const MoELayerConfig& config, CudaContext& context, int max_tokens,
               ExpertGemm gemm = ExpertGemm::per_expert);

  // y [T, d]; x [T, d]; token_ids [T] (hash routing; may be null otherwise). Collective.
  void forward(float* y, const float* x, const int32_t* token_ids, int num_tokens);
  // dx [T, d] (overwritten) from dy [T, d]; overwrites the parameter gradients. Collective.
  void backward(float* dx, const float* dy);
  // balance = bias: update the selection bias from the global demand of the last forward
  // (the demand comes to the host, is summed over `comm` and the bias goes back). Collective.
  void update_balance_bias(MPI_Comm comm);

  const MoELayerConfig& config() const { return config_; }
  int num_tokens() const { return num_tokens_; }
  const DeviceRoutingPlan& plan() const { return plan_; }
  CudaDispatcher& dispatcher() { return dispatcher_; }
  RouterNetShape router_shape() const { return router_shape_; }
  ExpertShape expert_shape() const { return expert_shape_; }

  // Device parameters and gradients in MoELayer's layouts (router_params() empty for hash
  // routing), and the selection bias [E].
  DeviceArray<float>& router_params() { return router_params_; }
  DeviceArray<float>& router_grads() { return router_grads_; }
  DeviceArray<float>& expert_params() { return expert_params_; }
  DeviceArray<float>& expert_grads() { return expert_grads_; }
  // The selection bias [E], host copy (update_balance_bias keeps it and the device's equal);
  // after changing it on the host (a resumed run), upload_selection_bias().
  std::vector<float>& selection_bias() { return selection_bias_host_; }
  void upload_selection_bias();
  // [T, E] router logits of the last forward (learned routers).
  const float* logits() const { return logits_.data(); }

  // Device seconds in the router (network, routing plan and their backward) and the expert
  // FFNs since the last reset, from CUDA events read now (waits for pending phases; read it
  // outside the timed work). The dispatcher keeps its own (dispatcher().timings()).
  MoELayerTimings timings();
  // Zeroes this layer's and its dispatcher's counters.
  void reset_counters();

 private:
  MoELayerConfig config_;
  CudaContext& context_;
  int max_tokens_;
  int num_tokens_ = 0;
  bool learned_;
  RouterNetShape router_shape_;
  ExpertShape expert_shape_;
  DeviceRoutingPlan plan_;
  CudaDispatcher dispatcher_;
  CudaExperts experts_;
  const float* input_ = nullptr;  // x of the last forward (caller-owned)
  static constexpr int kRouterPhase = 0, kExpertsPhase = 1;
  CudaPhaseTimers timers_{2};

  DeviceArray<float> router_params_, router_grads_;  // [router_param_count]
  DeviceArray<float> expert_params_, expert_grads_;  // [expert_param_count]
  DeviceArray<float> selection_bias_;                // [E]
  std::vector<float> selection_bias_host_;           // [E]
  std::vector<int32_t> demand_host_;                 // [E] scratch for the bias update
  std::vector<int64_t> local_demand_, global_demand_;  // [E]

  DeviceArray<float> logits_;          // [T, E]; router buffers are empty for hash routing
  DeviceArray<float> router_saved_;    // [T, router activations]
  DeviceArray<float> router_scratch_;  // [T, router activations]
  DeviceArray<float> expert_in_;       // [N, d] expert-major
  DeviceArray<float> expert_out_;      // [N, d]
  DeviceArray<float> hidden_pre_;      // [N, h]
  DeviceArray<float> hidden_act_;      // [N, h]
  DeviceArray<float> d_gate_;          // [T, slots]
  DeviceArray<float> d_logits_;        // [T, E]
  DeviceArray<float> d_expert_out_;    // [N, d]
  DeviceArray<float> d_expert_in_;     // [N, d]
  DeviceArray<float> d_hidden_;        // [N, h]
};

}  // namespace moebench
