// The MoE layer: route -> dispatch -> experts -> combine. See moe_layer.hpp.
#include "moebench/moe_layer.hpp"

#include <algorithm>
#include <sstream>

#include "moebench/check.hpp"

namespace moebench {

namespace {

int comm_size(MPI_Comm comm) {
  int size = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &size));
  return size;
}

int comm_rank(MPI_Comm comm) {
  int rank = 0;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  return rank;
}

// Checked before any member is built (the dispatcher asserts E % P == 0).
const MoELayerConfig& validated(const MoELayerConfig& config, MPI_Comm comm) {
  validate_moe_layer_config(config, comm_size(comm));
  return config;
}

// The CPU experts compute in fp32 only.
const MoELayerConfig& validated_for_cpu(const MoELayerConfig& config) {
  if (config.expert_precision != GemmPrecision::fp32) {
    throw UsageError("--expert-precision " + std::string(to_string(config.expert_precision)) +
                     " needs --backend cuda (the CPU experts compute in fp32)");
  }
  return config;
}

}  // namespace

void validate_moe_layer_config(const MoELayerConfig& config, int ranks) {
  validate_routing_config(config.routing);
  const int E = config.routing.num_experts;
  std::ostringstream message;
  if (E % ranks != 0) {
    message << "--experts " << E << " is not divisible by the " << ranks
            << " ranks: experts are sharded evenly across ranks (use a multiple of " << ranks
            << " experts, or a rank count that divides " << E << ")";
  } else if (config.d_model < 1 || config.d_hidden < 1) {
    message << "--d-model and the expert hidden size must be >= 1";
  } else if (config.router_arch != RouterArch::linear && config.router_hidden < 1) {
    message << "--router-hidden must be >= 1 for --router-arch " << to_string(config.router_arch);
  } else {
    return;
  }
  throw UsageError(message.str());
}

MoELayer::MoELayer(const MoELayerConfig& config, MPI_Comm comm, int max_tokens)
    : config_(validated_for_cpu(validated(config, comm))),
      max_tokens_(max_tokens),
      dispatcher_(comm, config.routing.num_experts, config.d_model, config.dispatch) {
  const int E = config.routing.num_experts;
  router_shape_ = RouterNetShape{config.router_arch, config.d_model, config.router_hidden, E};
  expert_shape_ = ExpertShape{dispatcher_.local_experts(), config.d_model, config.d_hidden};

  plan_.reserve(config.routing, max_tokens);
  dispatcher_.reserve(config.routing, max_tokens);

  // Hash routing has no learned router: no parameters, logits or router activations.
  const bool learned = has_learned_router(config.routing.router);
  router_params_.assign(learned ? router_param_count(router_shape_) : 0, 0.0f);
  router_grads_.assign(router_params_.size(), 0.0f);
  if (learned) router_params_init(router_params_.data(), router_shape_, config.seed);
  expert_params_.assign(expert_param_count(expert_shape_), 0.0f);
  expert_grads_.assign(expert_params_.size(), 0.0f);
  expert_params_init(expert_params_view(expert_params_.data(), expert_shape_), expert_shape_,
                     config.seed, comm_rank(comm) * expert_shape_.num_experts);
  selection_bias_.assign(E, 0.0f);
  global_demand_.assign(E, 0);

  const int64_t T = max_tokens, d = config.d_model, h = config.d_hidden;
  const int64_t N = dispatcher_.max_expert_rows();
  const int64_t router_width = learned ? router_activation_floats_per_token(router_shape_) : 0;
  const int64_t logit_floats = learned ? T * E : 0;
  logits_.assign(logit_floats, 0.0f);
  router_saved_.assign(T * router_width, 0.0f);
  router_scratch_.assign(T * router_width, 0.0f);
  expert_in_.assign(N * d, 0.0f);
  expert_out_.assign(N * d, 0.0f);
  hidden_pre_.assign(N * h, 0.0f);
  hidden_act_.assign(N * h, 0.0f);
  d_gate_.assign(T * plan_.slots, 0.0f);
  d_logits_.assign(logit_floats, 0.0f);
  d_expert_out_.assign(N * d, 0.0f);
  d_expert_in_.assign(N * d, 0.0f);
  d_hidden_.assign(N * h, 0.0f);
}

void MoELayer::forward(float* y, const float* x, const int32_t* token_ids, int num_tokens) {
  MOEBENCH_CHECK(num_tokens <= max_tokens_, "more tokens than the layer was built for");
  num_tokens_ = num_tokens;
  input_ = x;
  const bool learned = has_learned_router(config_.routing.router);
  {
    const double start = MPI_Wtime();
    if (learned) {
      router_forward(logits_.data(), router_saved_.data(), x, router_params_.data(), num_tokens,
                     router_shape_);
    }
    route(plan_, learned ? logits_.data() : nullptr, token_ids, selection_bias_.data(),
          num_tokens, config_.routing);
    timings_.router += MPI_Wtime() - start;
  }
  dispatcher_.set_plan(plan_);
  dispatcher_.dispatch(expert_in_.data(), x);
  {
    const double start = MPI_Wtime();
    experts_forward(expert_out_.data(), ExpertActivations{hidden_pre_.data(), hidden_act_.data()},
                    expert_in_.data(), expert_params_view(expert_params_.data(), expert_shape_),
                    dispatcher_.expert_row_offsets(), expert_shape_);
    timings_.experts += MPI_Wtime() - start;
  }
  dispatcher_.combine(y, expert_out_.data());
}

void MoELayer::backward(float* dx, const float* dy) {
  const int T = num_tokens_;
  const int64_t d = config_.d_model;
  dispatcher_.combine_backward(d_expert_out_.data(), d_gate_.data(), dy);
  {
    const double start = MPI_Wtime();
    experts_backward(d_expert_in_.data(), expert_params_view(expert_grads_.data(), expert_shape_),
                     d_hidden_.data(), d_expert_out_.data(), expert_in_.data(),
                     ExpertActivations{hidden_pre_.data(), hidden_act_.data()},
                     expert_params_view(expert_params_.data(), expert_shape_),
                     dispatcher_.expert_row_offsets(), expert_shape_, GradWrite::overwrite);
    timings_.experts += MPI_Wtime() - start;
  }
  std::fill(dx, dx + T * d, 0.0f);
  dispatcher_.dispatch_backward(dx, d_expert_in_.data());
  if (has_learned_router(config_.routing.router)) {
    const double start = MPI_Wtime();
    route_backward(d_logits_.data(), d_gate_.data(), plan_, config_.routing);
    std::fill(router_grads_.begin(), router_grads_.end(), 0.0f);  // router_backward adds
    router_backward(dx, router_grads_.data(), router_scratch_.data(), d_logits_.data(), input_,
                    router_saved_.data(), router_params_.data(), T, router_shape_);
    timings_.router += MPI_Wtime() - start;
  }
}

void MoELayer::update_balance_bias(MPI_Comm comm) {
  if (config_.routing.balance != BalanceKind::bias) return;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(plan_.demand.data(), global_demand_.data(),
                                   static_cast<int>(global_demand_.size()), MPI_INT64_T, MPI_SUM,
                                   comm));
  update_selection_bias(selection_bias_.data(), global_demand_.data(), config_.routing);
}

void MoELayer::reset_counters() {
  timings_ = MoELayerTimings{};
  dispatcher_.reset_counters();
}

}  // namespace moebench
