// The CPU TrainBackend (train_backend.hpp): MoETransformer, the gradient all-reduce over MPI
// in one bucket, the norm and AdamW over host buffers.
#include <mpi.h>

#include <algorithm>

#include "moebench/check.hpp"
#include "moebench/layers.hpp"
#include "moebench/train_backend.hpp"

namespace moebench {

namespace {

// One parameter group: values, gradients, AdamW moments, decay flags (empty = all decay).
struct ParamGroup {
  std::vector<float>* params;
  std::vector<float>* grads;
  std::vector<float> m, v;
  std::vector<uint8_t> decay;
  bool replicated;  // dense (averaged over ranks) or this rank's experts
};

class CpuTrainBackend final : public TrainBackend {
 public:
  CpuTrainBackend(const ModelConfig& config, MPI_Comm comm, int B, int T)
      : comm_(comm), model_(config, comm, B, T), moe_(model_.moe_layers()) {
    MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks_));
    // Parameter groups: the dense buffer, each layer's router (dense), each layer's experts.
    groups_.push_back({&model_.dense_params(), &model_.dense_grads(), {}, {},
                       dense_decay_mask(model_.tensors()), true});
    for (MoELayer* layer : moe_) {
      groups_.push_back({&layer->router_params(), &layer->router_grads(), {}, {}, {}, true});
      groups_.push_back({&layer->expert_params(), &layer->expert_grads(), {}, {},
                         expert_decay_mask(layer->expert_shape()), false});
    }
    for (MoELayer* layer : moe_) router_count_ += static_cast<int64_t>(layer->router_params().size());
    int64_t bucket_size = 0;
    for (ParamGroup& g : groups_) {
      g.m.assign(g.params->size(), 0.0f);
      g.v.assign(g.params->size(), 0.0f);
      if (g.replicated) bucket_size += static_cast<int64_t>(g.grads->size());
    }
    bucket_.assign(ranks_ > 1 ? static_cast<size_t>(bucket_size) : 0, 0.0f);  // one rank: none
  }

  const char* name() const override { return "cpu"; }
  std::string device() const override { return ""; }

  float forward(const int32_t* tokens, const int32_t* targets, int B, int T) override {
    return model_.forward(tokens, targets, B, T);
  }
  float aux_loss() override { return model_.aux_loss(); }
  void backward() override { model_.backward(); }

  double reduce_gradients() override {
    // One bucketed all-reduce for everything replicated, averaged over ranks (on one rank the
    // mean is the gradient itself: no copies).
    if (ranks_ > 1) {
      int64_t offset = 0;
      for (const ParamGroup& g : groups_) {
        if (!g.replicated) continue;
        std::copy(g.grads->begin(), g.grads->end(), bucket_.begin() + offset);
        offset += static_cast<int64_t>(g.grads->size());
      }
      MOEBENCH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, bucket_.data(),
                                       static_cast<int>(bucket_.size()), MPI_FLOAT, MPI_SUM,
                                       comm_));
      offset = 0;
      const float inv_ranks = 1.0f / static_cast<float>(ranks_);
      for (ParamGroup& g : groups_) {
        if (!g.replicated) continue;
        for (size_t i = 0; i < g.grads->size(); ++i) (*g.grads)[i] = bucket_[offset + i] * inv_ranks;
        offset += static_cast<int64_t>(g.grads->size());
      }
    }
    // Replicated groups once, experts summed over ranks; the experts' 1 / ranks is applied
    // to the squares here and to the gradient in AdamW (grad_scale), not by a pass of its own.
    double squares[2] = {0.0, 0.0};
    for (const ParamGroup& g : groups_) {
      squares[g.replicated ? 0 : 1] +=
          sum_of_squares(g.grads->data(), static_cast<int64_t>(g.grads->size()));
    }
    return global_gradient_norm(squares[0], squares[1], comm_);
  }

  void optimizer_step(double learning_rate, double weight_decay, float clip, int step) override {
    AdamWSettings adam;
    adam.learning_rate = static_cast<float>(learning_rate);
    adam.weight_decay = static_cast<float>(weight_decay);
    const double expert_scale = 1.0 / static_cast<double>(ranks_);
    for (ParamGroup& g : groups_) {
      adam.grad_scale = g.replicated ? clip : static_cast<float>(clip * expert_scale);
      adamw_update(g.params->data(), g.m.data(), g.v.data(), g.grads->data(),
                   g.decay.empty() ? nullptr : g.decay.data(),
                   static_cast<int64_t>(g.params->size()), adam, step);
    }
    for (MoELayer* layer : moe_) layer->update_balance_bias(comm_);
  }

  const std::vector<ParamTensor>& tensors() const override { return model_.tensors(); }
  int64_t router_param_count() const override { return router_count_; }
  int64_t expert_param_count_local() const override { return model_.expert_param_count_local(); }

  int moe_layer_count() const override { return static_cast<int>(moe_.size()); }
  const MoELayerConfig& moe_config(int layer) const override { return moe_[layer]->config(); }
  const RoutingPlan& plan(int layer) override { return moe_[layer]->plan(); }
  const float* logits(int layer) override { return moe_[layer]->logits(); }
  MoELayerTimings layer_timings(int layer) override { return moe_[layer]->timings(); }
  DispatchTimings dispatch_timings(int layer) override {
    return moe_[layer]->dispatcher().timings();
  }
  const std::vector<std::vector<int64_t>>& bytes_sent(int layer) override {
    return moe_[layer]->dispatcher().bytes_sent();
  }
  void reset_counters() override {
    for (MoELayer* layer : moe_) layer->reset_counters();
  }

  void add_checkpoint_buffers(CheckpointState& state) override {
    for (size_t g = 0; g < groups_.size(); ++g) {
      add_group_checkpoint_buffers(state, g, groups_[g].replicated, groups_[g].params,
                                   &groups_[g].m, &groups_[g].v);
    }
    for (size_t l = 0; l < moe_.size(); ++l) {
      state.buffers.push_back({selection_bias_checkpoint_name(l), &moe_[l]->selection_bias()});
    }
  }

 private:
  MPI_Comm comm_;
  int ranks_ = 1;
  MoETransformer model_;
  std::vector<MoELayer*> moe_;
  std::vector<ParamGroup> groups_;
  std::vector<float> bucket_;  // [replicated floats] (more than one rank)
  int64_t router_count_ = 0;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cpu_train_backend(const ModelConfig& config, MPI_Comm comm,
                                                     int B, int T) {
  return std::make_unique<CpuTrainBackend>(config, comm, B, T);
}

}  // namespace moebench
