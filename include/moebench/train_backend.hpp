// What `moebench train`'s loop (src/train/train.cpp) needs from the model on one backend:
// forward and backward, the gradient reduction and optimizer step, and the MoE layers' plans,
// counters and checkpoint buffers as host data. Two implementations: the CPU one
// (src/train/train_backend_cpu.cpp, MoETransformer) and the CUDA one (src/cuda/
// train_backend_cuda.cpp, CudaMoETransformer; in a build without the CUDA backend
// make_cuda_train_backend refuses with cuda_backend_missing_message()).
//
// One optimizer step, both backends (DESIGN §2):
//   the replicated gradients (dense + routers) averaged over the ranks;
//   the global gradient norm: replicated groups once, experts' squares summed over ranks and
//     scaled by 1 / ranks^2 (experts hold the gradient of the sum of the ranks' mean losses);
//   AdamW with grad_scale = clip (replicated) or clip / ranks (experts);
//   the balancing bias of each MoE layer from the global demand.
#pragma once

#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/checkpoint.hpp"
#include "moebench/dispatcher.hpp"
#include "moebench/model.hpp"
#include "moebench/moe_layer.hpp"
#include "moebench/routing.hpp"

namespace moebench {

class TrainBackend {
 public:
  virtual ~TrainBackend() = default;

  virtual const char* name() const = 0;    // "cpu" or "cuda"
  virtual std::string device() const = 0;  // e.g. "NVIDIA H200"; "" on the CPU

  // This rank's mean cross-entropy over tokens, targets [B, T] (host). Collective.
  virtual float forward(const int32_t* tokens, const int32_t* targets, int B, int T) = 0;
  // Sum over MoE blocks of aux + z-loss of the last forward.
  virtual float aux_loss() = 0;
  // Gradients of the last forward's loss, written over every gradient. Collective.
  virtual void backward() = 0;
  // Averages the replicated gradients over the ranks and returns the global gradient norm
  // (before clipping). Collective.
  virtual double reduce_gradients() = 0;
  // AdamW over every group (step = 1, 2, ...) with the clip factor, then the balancing bias
  // update of every MoE layer. Collective.
  virtual void optimizer_step(double learning_rate, double weight_decay, float clip,
                              int step) = 0;

  // The parameter table: dense tensors, routers' and this rank's experts' float counts.
  virtual const std::vector<ParamTensor>& tensors() const = 0;
  virtual int64_t router_param_count() const = 0;        // all MoE layers
  virtual int64_t expert_param_count_local() const = 0;  // this rank, all MoE layers

  // The MoE layers in block order, as host data of the last forward.
  virtual int moe_layer_count() const = 0;
  virtual const MoELayerConfig& moe_config(int layer) const = 0;
  virtual const RoutingPlan& plan(int layer) = 0;
  virtual const float* logits(int layer) = 0;  // [T, E]; null for hash routing
  // Counters since reset_counters(): seconds per phase and bytes per exchange phase and peer.
  virtual MoELayerTimings layer_timings(int layer) = 0;
  virtual DispatchTimings dispatch_timings(int layer) = 0;
  virtual const std::vector<std::vector<int64_t>>& bytes_sent(int layer) = 0;
  virtual void reset_counters() = 0;

  // Every buffer a resumed run needs (parameters, AdamW moments, balancing biases), as host
  // vectors: registered once; sync_to_host() before saving them, sync_from_host() after
  // loading them (no-ops where the host vectors are the model's own).
  virtual void add_checkpoint_buffers(CheckpointState& state) = 0;
  virtual void sync_to_host() {}
  virtual void sync_from_host() {}
};

// Shared by the backends.
//
// The global gradient norm from this rank's sums of squares: the replicated groups' (the same
// on every rank after the average) once, the experts' summed over the ranks and scaled by
// 1 / ranks^2. Collective.
inline double global_gradient_norm(double replicated_squares, double expert_squares,
                                   MPI_Comm comm) {
  int ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  MOEBENCH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &expert_squares, 1, MPI_DOUBLE, MPI_SUM, comm));
  const double expert_scale = 1.0 / static_cast<double>(ranks);
  return std::sqrt(replicated_squares + expert_squares * expert_scale * expert_scale);
}

// Registers parameter group `group`'s host buffers under the names every checkpoint uses
// ("group<g>.dense.params", ".adam_m", ".adam_v"; ".experts" for this rank's experts).
inline void add_group_checkpoint_buffers(CheckpointState& state, size_t group, bool replicated,
                                         std::vector<float>* params, std::vector<float>* m,
                                         std::vector<float>* v) {
  const std::string name = "group" + std::to_string(group) + (replicated ? ".dense" : ".experts");
  state.buffers.push_back({name + ".params", params});
  state.buffers.push_back({name + ".adam_m", m});
  state.buffers.push_back({name + ".adam_v", v});
}

// The name of MoE layer `layer`'s balancing bias in checkpoints.
inline std::string selection_bias_checkpoint_name(size_t layer) {
  return "layer" + std::to_string(layer) + ".selection_bias";
}

// Collective over comm. B, T: the batch of every step.
std::unique_ptr<TrainBackend> make_cpu_train_backend(const ModelConfig& config, MPI_Comm comm,
                                                     int B, int T);
// Throws UsageError on every rank when a rank has no GPU of its own, or (CPU build) always.
std::unique_ptr<TrainBackend> make_cuda_train_backend(const ModelConfig& config, MPI_Comm comm,
                                                      int B, int T);

}  // namespace moebench
