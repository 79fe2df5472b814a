// The CUDA TrainBackend (train_backend.hpp): CudaMoETransformer on this rank's GPU, the
// replicated gradients averaged with ncclAllReduce on the communication stream, the norm's
// sums of squares and AdamW as kernels. The host sees what the training loop reads: the loss,
// the gradient norm, each MoE layer's plan and logits (downloaded when asked for, once per
// forward) and the checkpoint buffers (host mirrors synchronised around saving and loading).
// Phase times are CUDA-event device times (the layers' router and experts, the dispatcher's
// permutes and exchanges), read once per step after the optimizer.
#include <mpi.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "exchange_nccl.hpp"
#include "layers_cuda.hpp"
#include "model_cuda.hpp"
#include "moebench/check.hpp"
#include "moebench/cuda.hpp"
#include "moebench/train_backend.hpp"
#include "routing_cuda.hpp"

namespace moebench {

namespace {

// One parameter group on the device: values and gradients (the model's), AdamW moments and
// decay flags (ours), and host mirrors for checkpoints.
struct DeviceGroup {
  float* params = nullptr;
  float* grads = nullptr;
  int64_t count = 0;
  bool replicated = true;  // dense (averaged over ranks) or this rank's experts
  DeviceArray<float> m, v;
  DeviceArray<uint8_t> decay;  // empty = every element decays
  std::vector<float> host_params, host_m, host_v;
};

class CudaTrainBackend final : public TrainBackend {
 public:
  CudaTrainBackend(const ModelConfig& config, MPI_Comm comm, int B, int T)
      : comm_(comm), context_(comm), model_(config, context_, B, T), moe_(model_.moe_layers()) {
    ranks_ = context_.size();
    add_group(model_.dense_params().data(), model_.dense_grads().data(),
              static_cast<int64_t>(model_.dense_params().size()), true,
              dense_decay_mask(model_.tensors()));
    for (CudaMoELayer* layer : moe_) {
      add_group(layer->router_params().data(), layer->router_grads().data(),
                static_cast<int64_t>(layer->router_params().size()), true, {});
      add_group(layer->expert_params().data(), layer->expert_grads().data(),
                static_cast<int64_t>(layer->expert_params().size()), false,
                expert_decay_mask(layer->expert_shape()));
      router_count_ += static_cast<int64_t>(layer->router_params().size());
      expert_count_ += static_cast<int64_t>(layer->expert_params().size());
    }
    int64_t largest = 0;
    for (const auto& g : groups_) largest = std::max(largest, g->count);
    squares_scratch_.resize(static_cast<size_t>(cuda_sum_of_squares_scratch_doubles(largest)));
    squares_.resize(groups_.size());
    squares_host_.assign(groups_.size(), 0.0);
    host_plans_.resize(moe_.size());
    host_logits_.resize(moe_.size());
    for (size_t l = 0; l < moe_.size(); ++l) {
      const MoELayerConfig& c = moe_[l]->config();
      host_plans_[l].reserve(c.routing, B * T);
      if (has_learned_router(c.routing.router)) {
        host_logits_[l].assign(static_cast<size_t>(B) * T * c.routing.num_experts, 0.0f);
      }
    }
    fresh_.assign(moe_.size() * 2, false);
    context_.synchronize();
  }

  const char* name() const override { return "cuda"; }
  std::string device() const override { return context_.info().name; }

  float forward(const int32_t* tokens, const int32_t* targets, int B, int T) override {
    std::fill(fresh_.begin(), fresh_.end(), false);
    return model_.forward(tokens, targets, B, T);
  }
  float aux_loss() override { return model_.aux_loss(); }
  // Waits for the backward pass, so that the trainer's clock charges it to the step's compute
  // (the gradient reduction would wait for it anyway, and be charged for it).
  void backward() override {
    model_.backward();
    context_.synchronize();
  }

  double reduce_gradients() override {
    CUstream_st* compute = context_.compute_stream();
    if (ranks_ > 1) {
      // The communication stream waits for backward; the optimizer's kernels for the sums.
      context_.order_after(context_.comm_stream(), compute);
      for (const auto& g : groups_) {
        if (g->replicated && g->count > 0) {
          nccl_allreduce_average(g->grads, static_cast<size_t>(g->count), context_.nccl(),
                                 context_.comm_stream());
        }
      }
      context_.order_after(compute, context_.comm_stream());
    }
    for (size_t i = 0; i < groups_.size(); ++i) {
      cuda_sum_of_squares(squares_.data() + i, squares_scratch_.data(), groups_[i]->grads,
                          groups_[i]->count, compute);
    }
    copy_to_host(squares_host_.data(), squares_.data(), squares_.bytes(), compute);
    // Replicated groups once, experts summed over ranks, in group order as on the CPU.
    double squares[2] = {0.0, 0.0};
    for (size_t i = 0; i < groups_.size(); ++i) {
      squares[groups_[i]->replicated ? 0 : 1] += squares_host_[i];
    }
    return global_gradient_norm(squares[0], squares[1], comm_);
  }

  void optimizer_step(double learning_rate, double weight_decay, float clip, int step) override {
    AdamWSettings adam;
    adam.learning_rate = static_cast<float>(learning_rate);
    adam.weight_decay = static_cast<float>(weight_decay);
    const double expert_scale = 1.0 / static_cast<double>(ranks_);
    for (const auto& g : groups_) {
      adam.grad_scale = g->replicated ? clip : static_cast<float>(clip * expert_scale);
      cuda_adamw_update(g->params, g->m.data(), g->v.data(), g->grads,
                        g->decay.size() > 0 ? g->decay.data() : nullptr, g->count, adam, step,
                        context_.compute_stream());
    }
    for (CudaMoELayer* layer : moe_) layer->update_balance_bias(comm_);
  }

  const std::vector<ParamTensor>& tensors() const override { return model_.tensors(); }
  int64_t router_param_count() const override { return router_count_; }
  int64_t expert_param_count_local() const override { return expert_count_; }

  int moe_layer_count() const override { return static_cast<int>(moe_.size()); }
  const MoELayerConfig& moe_config(int layer) const override { return moe_[layer]->config(); }
  const RoutingPlan& plan(int layer) override {
    if (!fresh_[2 * layer]) {
      download_plan(host_plans_[layer], moe_[layer]->plan(), context_.compute_stream());
      fresh_[2 * layer] = true;
    }
    return host_plans_[layer];
  }
  const float* logits(int layer) override {
    if (host_logits_[layer].empty()) return nullptr;  // hash routing
    if (!fresh_[2 * layer + 1]) {
      const size_t count =
          static_cast<size_t>(moe_[layer]->num_tokens()) * moe_[layer]->config().routing.num_experts;
      copy_to_host(host_logits_[layer].data(), moe_[layer]->logits(), count * sizeof(float),
                   context_.compute_stream());
      fresh_[2 * layer + 1] = true;
    }
    return host_logits_[layer].data();
  }
  MoELayerTimings layer_timings(int layer) override { return moe_[layer]->timings(); }
  DispatchTimings dispatch_timings(int layer) override {
    return moe_[layer]->dispatcher().timings();
  }
  const std::vector<std::vector<int64_t>>& bytes_sent(int layer) override {
    return moe_[layer]->dispatcher().bytes_sent();
  }
  void reset_counters() override {
    for (CudaMoELayer* layer : moe_) layer->reset_counters();
  }

  void add_checkpoint_buffers(CheckpointState& state) override {
    for (size_t i = 0; i < groups_.size(); ++i) {
      DeviceGroup& g = *groups_[i];
      add_group_checkpoint_buffers(state, i, g.replicated, &g.host_params, &g.host_m, &g.host_v);
    }
    for (size_t l = 0; l < moe_.size(); ++l) {
      state.buffers.push_back({selection_bias_checkpoint_name(l), &moe_[l]->selection_bias()});
    }
  }

  void sync_to_host() override {
    CUstream_st* stream = context_.compute_stream();
    for (const auto& g : groups_) {
      const size_t bytes = static_cast<size_t>(g->count) * sizeof(float);
      copy_to_host(g->host_params.data(), g->params, bytes, stream);
      copy_to_host(g->host_m.data(), g->m.data(), bytes, stream);
      copy_to_host(g->host_v.data(), g->v.data(), bytes, stream);
    }
  }

  void sync_from_host() override {
    CUstream_st* stream = context_.compute_stream();
    for (const auto& g : groups_) {
      const size_t bytes = static_cast<size_t>(g->count) * sizeof(float);
      copy_to_device(g->params, g->host_params.data(), bytes, stream);
      copy_to_device(g->m.data(), g->host_m.data(), bytes, stream);
      copy_to_device(g->v.data(), g->host_v.data(), bytes, stream);
    }
    for (CudaMoELayer* layer : moe_) layer->upload_selection_bias();
    context_.synchronize();
  }

 private:
  void add_group(float* params, float* grads, int64_t count, bool replicated,
                 const std::vector<uint8_t>& decay) {
    CUstream_st* stream = context_.compute_stream();
    auto g = std::make_unique<DeviceGroup>();
    g->params = params;
    g->grads = grads;
    g->count = count;
    g->replicated = replicated;
    g->m.resize(static_cast<size_t>(count));
    g->v.resize(static_cast<size_t>(count));
    fill_zero(g->m.data(), g->m.bytes(), stream);
    fill_zero(g->v.data(), g->v.bytes(), stream);
    if (!decay.empty()) {
      g->decay.resize(decay.size());
      copy_to_device(g->decay.data(), decay.data(), decay.size(), stream);
    }
    g->host_params.assign(static_cast<size_t>(count), 0.0f);
    g->host_m.assign(static_cast<size_t>(count), 0.0f);
    g->host_v.assign(static_cast<size_t>(count), 0.0f);
    groups_.push_back(std::move(g));
  }

  MPI_Comm comm_;
  int ranks_ = 1;
  CudaContext context_;
  CudaMoETransformer model_;
  std::vector<CudaMoELayer*> moe_;
  std::vector<std::unique_ptr<DeviceGroup>> groups_;
  int64_t router_count_ = 0, expert_count_ = 0;
  DeviceArray<double> squares_scratch_;
  DeviceArray<double> squares_;        // [groups] each group's sum of squares
  std::vector<double> squares_host_;   // [groups]
  std::vector<RoutingPlan> host_plans_;          // [layers]
  std::vector<std::vector<float>> host_logits_;  // [layers][T E]
  std::vector<bool> fresh_;  // [layers, 2]: plan, logits downloaded since the last forward
};

}  // namespace

std::unique_ptr<TrainBackend> make_cuda_train_backend(const ModelConfig& config, MPI_Comm comm,
                                                      int B, int T) {
  // What the GPU routing cannot run is refused before any device is touched (the same on
  // every rank); then CudaContext refuses a rank without a GPU of its own.
  validate_gpu_routing_config(config.moe.routing);
  return std::make_unique<CudaTrainBackend>(config, comm, B, T);
}

}  // namespace moebench
