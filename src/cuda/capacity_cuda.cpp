// `moebench capacity --backend cuda`: CudaCapacityCells (capacity_cell.hpp). Each rank drives
// the device CudaContext picks; per cell the synthetic logits, token ids and rows go to the
// device once, then every iteration routes on the compute stream (cuda_route, timed by CUDA
// events between MPI barriers) and runs the CudaDispatcher's set_plan, dispatch and combine,
// which time their own phases. After each timed iteration the plan is downloaded for the
// routing statistics (outside the timed work); after the last, y comes back for the check.
#include <algorithm>
#include <vector>

#include "dispatcher_cuda.hpp"
#include "moebench/capacity_cell.hpp"
#include "moebench/check.hpp"
#include "moebench/cuda.hpp"
#include "routing_cuda.hpp"

namespace moebench {

struct CudaCapacityCells::Impl {
  CudaContext context;
  CudaEventTimer route_timer;

  explicit Impl(MPI_Comm comm) : context(comm) {}
};

CudaCapacityCells::CudaCapacityCells(MPI_Comm comm) : impl_(std::make_unique<Impl>(comm)) {}

CudaCapacityCells::~CudaCapacityCells() = default;

void CudaCapacityCells::validate(const RoutingConfig& config) {
  validate_gpu_routing_config(config);
}

std::string CudaCapacityCells::device_name() const { return impl_->context.info().name; }

CapacityCellResult CudaCapacityCells::run(const CapacityCellSetup& s, MPI_Comm comm,
                                          RoutingPlan& last_plan, std::vector<float>& y) {
  CudaContext& context = impl_->context;
  CUstream_st* stream = context.compute_stream();
  const RoutingConfig& config = s.config;
  const int T = s.tokens, E = config.num_experts;
  const size_t d = static_cast<size_t>(s.d_model);
  const bool learned = has_learned_router(config.router);

  DeviceRoutingPlan plan;
  plan.reserve(config, T);
  CudaDispatcher dispatcher(context, E, s.d_model, s.dispatch);
  dispatcher.reserve(config, T);
  const size_t batches = static_cast<size_t>(s.logit_batches);
  DeviceArray<float> logits(learned ? batches * T * E : 0);
  DeviceArray<int32_t> token_ids(batches * T);
  DeviceArray<float> x(T * d), y_device(T * d);
  DeviceArray<float> expert_rows(static_cast<size_t>(dispatcher.max_expert_rows()) * d);
  if (learned) copy_to_device(logits.data(), s.logits, logits.bytes(), stream);
  copy_to_device(token_ids.data(), s.token_ids, token_ids.bytes(), stream);
  copy_to_device(x.data(), s.x, x.bytes(), stream);
  last_plan.reserve(config, T);
  RoutingStats stats;
  stats.reset(E);

  double route_seconds = 0.0;
  for (int it = 0; it < s.warmup_iters + s.iters; ++it) {
    if (it == s.warmup_iters) {
      dispatcher.reset_counters();
      route_seconds = 0.0;
    }
    const int64_t batch = it % s.logit_batches;
    const float* z = learned ? logits.data() + batch * T * E : nullptr;
    MOEBENCH_MPI_CHECK(MPI_Barrier(comm));
    impl_->route_timer.start(stream);
    cuda_route(plan, z, token_ids.data() + batch * T, nullptr, T, config, stream);
    impl_->route_timer.stop(stream);
    route_seconds += 1e-3 * static_cast<double>(impl_->route_timer.elapsed_ms());
    dispatcher.set_plan(plan);
    dispatcher.dispatch(expert_rows.data(), x.data());
    dispatcher.combine(y_device.data(), expert_rows.data());  // identity experts
    if (it >= s.warmup_iters) {
      download_plan(last_plan, plan, stream);
      routing_stats_add(stats, last_plan, learned ? s.logits + batch * T * E : nullptr, config);
    }
  }
  // The last iteration is a timed one (iters >= 1): last_plan holds its plan.
  y.resize(T * d);
  copy_to_host(y.data(), y_device.data(), y_device.bytes(), stream);

  CapacityCellResult result;
  result.capacity = plan.capacity;
  routing_stats_allreduce(stats, comm);
  result.metrics = routing_metrics(stats);
  set_dispatch_results(result, route_seconds, dispatcher.timings(), dispatcher.bytes_sent(),
                       s.iters);
  return result;
}

}  // namespace moebench
