// CudaMoELayer: the MoE layer's forward and backward on the GPU. See moe_layer_cuda.hpp; the
// CPU original, whose order of operations this follows: src/moe/moe_layer.cpp.
#include "moe_layer_cuda.hpp"

#include <algorithm>

#include "moebench/check.hpp"
#include "router_net_cuda.hpp"

namespace moebench {

namespace {

// Checked before any member is built (the dispatcher asserts E % P == 0).
const MoELayerConfig& validated(const MoELayerConfig& config, const CudaContext& context) {
  validate_moe_layer_config(config, context.size());
  validate_gpu_routing_config(config.routing);
  return config;
}

size_t to_size(int64_t count) { return static_cast<size_t>(count); }

}  // namespace

CudaMoELayer::CudaMoELayer(const MoELayerConfig& config, CudaContext& context, int max_tokens,
                           ExpertGemm gemm)
    : config_(validated(config, context)),
      context_(context),
      max_tokens_(max_tokens),
      learned_(has_learned_router(config.routing.router)),
      router_shape_{config.router_arch, config.d_model, config.router_hidden,
                    config.routing.num_experts},
      expert_shape_{config.routing.num_experts / context.size(), config.d_model, config.d_hidden},
      dispatcher_(context, config.routing.num_experts, config.d_model, config.dispatch),
      experts_(expert_shape_, context.blas(), context.compute_stream(), gemm,
               config.expert_precision) {
  MOEBENCH_CHECK(max_tokens >= 0, "max_tokens must be non-negative");
  CUstream_st* stream = context.compute_stream();
  const int E = config.routing.num_experts;
  plan_.reserve(config.routing, max_tokens);
  dispatcher_.reserve(config.routing, max_tokens);

  // Parameters as MoELayer initialises them (same seed, same global expert numbering).
  std::vector<float> host;
  if (learned_) {
    host.assign(to_size(router_param_count(router_shape_)), 0.0f);
    router_params_init(host.data(), router_shape_, config.seed);
    router_params_.resize(host.size());
    router_grads_.resize(host.size());
    copy_to_device(router_params_.data(), host.data(), router_params_.bytes(), stream);
    fill_zero(router_grads_.data(), router_grads_.bytes(), stream);
  }
  host.assign(to_size(expert_param_count(expert_shape_)), 0.0f);
  expert_params_init(expert_params_view(host.data(), expert_shape_), expert_shape_, config.seed,
                     context.rank() * expert_shape_.num_experts);
  expert_params_.resize(host.size());
  expert_grads_.resize(host.size());
  copy_to_device(expert_params_.data(), host.data(), expert_params_.bytes(), stream);
  fill_zero(expert_grads_.data(), expert_grads_.bytes(), stream);
  selection_bias_host_.assign(to_size(E), 0.0f);
  selection_bias_.resize(to_size(E));
  fill_zero(selection_bias_.data(), selection_bias_.bytes(), stream);
  demand_host_.assign(to_size(E), 0);
  local_demand_.assign(to_size(E), 0);
  global_demand_.assign(to_size(E), 0);

  const int64_t T = max_tokens, d = config.d_model, h = config.d_hidden;
  const int64_t N = dispatcher_.max_expert_rows();
  if (config.expert_precision == GemmPrecision::bf16) experts_.reserve(N);  // bf16 operand copies
  const int64_t router_width = learned_ ? router_activation_floats_per_token(router_shape_) : 0;
  const int64_t logit_floats = learned_ ? T * E : 0;
  logits_.resize(to_size(logit_floats));
  router_saved_.resize(to_size(T * router_width));
  router_scratch_.resize(to_size(T * router_width));
  expert_in_.resize(to_size(N * d));
  expert_out_.resize(to_size(N * d));
  hidden_pre_.resize(to_size(N * h));
  hidden_act_.resize(to_size(N * h));
  d_gate_.resize(to_size(T * plan_.slots));
  d_logits_.resize(to_size(logit_floats));
  d_expert_out_.resize(to_size(N * d));
  d_expert_in_.resize(to_size(N * d));
  d_hidden_.resize(to_size(N * h));
  // copy_to_device returns once a pageable host buffer is staged (CUDA's documented
  // behaviour for host-to-device cudaMemcpyAsync), so `host` could be reused at once; this
  // only finishes the set-up before the first step.
  context.synchronize();
}

void CudaMoELayer::forward(float* y, const float* x, const int32_t* token_ids, int num_tokens) {
  MOEBENCH_CHECK(num_tokens >= 0 && num_tokens <= max_tokens_,
                 "more tokens than the layer was built for");
  num_tokens_ = num_tokens;
  input_ = x;
  CUstream_st* stream = context_.compute_stream();
  int pair = timers_.start(stream);
  if (learned_) {
    cuda_router_forward(context_.blas(), stream, logits_.data(), router_saved_.data(), x,
                        router_params_.data(), num_tokens, router_shape_);
  }
  cuda_route(plan_, learned_ ? logits_.data() : nullptr, token_ids, selection_bias_.data(),
             num_tokens, config_.routing, stream);
  timers_.stop(pair, stream, kRouterPhase);
  dispatcher_.set_plan(plan_);
  dispatcher_.dispatch(expert_in_.data(), x);
  pair = timers_.start(stream);
  experts_.forward(expert_out_.data(), ExpertActivations{hidden_pre_.data(), hidden_act_.data()},
                   expert_in_.data(), expert_params_view(expert_params_.data(), expert_shape_),
                   dispatcher_.expert_row_offsets());
  timers_.stop(pair, stream, kExpertsPhase);
  dispatcher_.combine(y, expert_out_.data());
}

void CudaMoELayer::backward(float* dx, const float* dy) {
  const int T = num_tokens_;
  CUstream_st* stream = context_.compute_stream();
  dispatcher_.combine_backward(d_expert_out_.data(), d_gate_.data(), dy);
  // CudaExperts accumulates and leaves experts without rows alone: clearing first makes the
  // gradients overwritten, zeros for an empty expert (MoELayer's GradWrite::overwrite).
  int pair = timers_.start(stream);
  fill_zero(expert_grads_.data(), expert_grads_.bytes(), stream);
  experts_.backward(d_expert_in_.data(), expert_params_view(expert_grads_.data(), expert_shape_),
                    d_hidden_.data(), d_expert_out_.data(), expert_in_.data(),
                    ExpertActivations{hidden_pre_.data(), hidden_act_.data()},
                    expert_params_view(expert_params_.data(), expert_shape_),
                    dispatcher_.expert_row_offsets());
  timers_.stop(pair, stream, kExpertsPhase);
  fill_zero(dx, to_size(int64_t{T} * config_.d_model) * sizeof(float), stream);
  dispatcher_.dispatch_backward(dx, d_expert_in_.data());
  if (learned_) {
    pair = timers_.start(stream);
    cuda_route_backward(d_logits_.data(), d_gate_.data(), plan_, config_.routing, stream);
    fill_zero(router_grads_.data(), router_grads_.bytes(), stream);  // the backward adds
    cuda_router_backward(context_.blas(), stream, dx, router_grads_.data(),
                         router_scratch_.data(), d_logits_.data(), input_, router_saved_.data(),
                         router_params_.data(), T, router_shape_);
    timers_.stop(pair, stream, kRouterPhase);
  }
}

MoELayerTimings CudaMoELayer::timings() {
  const std::vector<double>& seconds = timers_.resolve();
  return MoELayerTimings{seconds[kRouterPhase], seconds[kExpertsPhase]};
}

void CudaMoELayer::reset_counters() {
  timers_.reset();
  dispatcher_.reset_counters();
}

void CudaMoELayer::update_balance_bias(MPI_Comm comm) {
  if (config_.routing.balance != BalanceKind::bias) return;
  copy_to_host(demand_host_.data(), plan_.demand.data(), demand_host_.size() * sizeof(int32_t),
               context_.compute_stream());
  std::copy(demand_host_.begin(), demand_host_.end(), local_demand_.begin());
  MOEBENCH_MPI_CHECK(MPI_Allreduce(local_demand_.data(), global_demand_.data(),
                                   static_cast<int>(global_demand_.size()), MPI_INT64_T, MPI_SUM,
                                   comm));
  update_selection_bias(selection_bias_host_.data(), global_demand_.data(), config_.routing);
  upload_selection_bias();
}

void CudaMoELayer::upload_selection_bias() {
  MOEBENCH_CHECK(selection_bias_host_.size() == selection_bias_.size(),
                 "selection bias resized on the host");
  copy_to_device(selection_bias_.data(), selection_bias_host_.data(), selection_bias_.bytes(),
                 context_.compute_stream());
}

}  // namespace moebench
