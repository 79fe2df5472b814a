// `moebench capacity` (see capacity.hpp). Per grid cell, after --warmup-iters untimed
// iterations, each of --iters iterations does on every rank:
//   route (timed) -> set_plan (ragged: count exchange) -> pack + dispatch exchange ->
//   combine exchange + combine (identity experts)
// and afterwards checks that every token came back as (sum of its kept gates) * x_t. The
// cells run here (--backend cpu) or on the GPU (CudaCapacityCells, capacity_cell.hpp).
#include "moebench/capacity.hpp"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "moebench/blas.hpp"
#include "moebench/capacity_cell.hpp"
#include "moebench/check.hpp"
#include "moebench/cli.hpp"
#include "moebench/cuda.hpp"
#include "moebench/dispatcher.hpp"
#include "moebench/metrics.hpp"
#include "moebench/random.hpp"
#include "moebench/synthetic_inputs.hpp"
#include "moebench/routing.hpp"
#include "moebench/table.hpp"
#include "moebench/trace.hpp"

namespace moebench {

namespace {

namespace po = boost::program_options;

struct CapacityOptions {
  std::vector<double> capacity_factors;
  std::vector<int> experts;
  std::vector<int> top_ks;
  RoutingConfig routing;  // router, drop policy, temperature, ... (E, k, CF set per cell)
  DispatchMode dispatch = DispatchMode::ragged;
  Backend backend = Backend::cpu;
  SyntheticInputs inputs;  // distribution, logit std, zipf s, vocabulary, seed
  int tokens = 0;
  int d_model = 0;
  int iters = 0;
  int warmup_iters = 0;
  int logit_batches = 0;
  int threads = 1;
  uint64_t seed = 0;
  std::string out;
};

po::options_description capacity_options() {
  po::options_description options("moebench capacity options");
  options.add_options()
      ("capacity-factor", po::value<std::string>()->default_value("0.9,1.0,1.05,1.1,1.25,1.5"),
       "capacity factors to sweep (comma-separated; 0 = dropless, token-choice routers only)")
      ("experts", po::value<std::string>()->default_value("64,128,256"),
       "expert counts to sweep (each a multiple of the rank count)")
      ("top-k", po::value<std::string>()->default_value("1,2,4"), "top-k values to sweep")
      ("router", po::value<std::string>()->default_value("topk_hard"),
       "top1 | topk_hard | softk | hash | expert_choice")
      ("drop-policy", po::value<std::string>()->default_value("position"),
       "which assignments keep their slot when an expert is full: position | prob")
      ("temperature", po::value<double>()->default_value(1.0), "softk gate temperature")
      ("renorm-after-drop", po::bool_switch(), "softk: renormalise gates over kept choices")
      ("hard-gates", po::bool_switch(), "top1: gate 1 instead of p")
      ("ec-max-per-token", po::value<int>()->default_value(-1),
       "expert_choice: experts a token may keep (-1 = top-k, 0 = no limit)")
      ("dispatch", po::value<std::string>()->default_value("ragged"), "ragged | padded")
      ("backend", po::value<std::string>()->default_value("cpu"),
       "cpu | cuda: route, pack, exchange (MPI | NCCL) and combine on the CPU or on each "
       "rank's GPU (a build with -DMOEBENCH_CUDA=ON)")
      ("tokens", po::value<int>()->default_value(4096), "tokens per rank per iteration (T)")
      ("d-model", po::value<int>()->default_value(256), "hidden size d: floats per token row")
      ("iters", po::value<int>()->default_value(200), "timed iterations per grid cell")
      ("warmup-iters", po::value<int>()->default_value(10), "untimed iterations per grid cell")
      ("logit-batches", po::value<int>()->default_value(8),
       "distinct batches of synthetic logits per rank, cycled through the iterations")
      ("threads", po::value<int>()->default_value(1),
       "OpenMP threads per rank (BLAS runs single-threaded inside them)")
      ("seed", po::value<uint64_t>()->default_value(1234), "seed of the synthetic logits and rows")
      ("out", po::value<std::string>()->default_value("capacity.h5"),
       "HDF5 trace path; the CSV is written beside it (same name, .csv)");
  add_synthetic_input_options(options);
  return options;
}

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}

// The routing configuration of grid cell (E, k, cf).
RoutingConfig cell_config(const RoutingConfig& base, int E, int k, double cf) {
  RoutingConfig cell = base;
  cell.num_experts = E;
  cell.top_k = k;
  cell.capacity_factor = cf;
  return cell;
}

// Every cell's configuration, in the grid's order: experts (outer) x top-k x CF (inner).
std::vector<RoutingConfig> cell_configs(const CapacityOptions& o) {
  std::vector<RoutingConfig> cells;
  for (int E : o.experts) {
    for (int k : o.top_ks) {
      for (double cf : o.capacity_factors) cells.push_back(cell_config(o.routing, E, k, cf));
    }
  }
  return cells;
}

CapacityOptions resolve(const po::variables_map& vm, int ranks) {
  CapacityOptions o;
  o.capacity_factors = cli::parse_double_list("--capacity-factor", vm["capacity-factor"].as<std::string>());
  for (double cf : o.capacity_factors) {
    std::ostringstream text;
    text << "--capacity-factor: entry " << cf
         << " is negative (use a factor > 0, or 0 for dropless routing)";
    require(cf >= 0.0, text.str());
  }
  o.experts = cli::parse_int_list("--experts", vm["experts"].as<std::string>(), 1);
  o.top_ks = cli::parse_int_list("--top-k", vm["top-k"].as<std::string>(), 1);
  o.routing.router = parse_router_kind("--router", vm["router"].as<std::string>());
  o.routing.drop_policy = parse_drop_policy("--drop-policy", vm["drop-policy"].as<std::string>());
  o.routing.temperature = static_cast<float>(vm["temperature"].as<double>());
  o.routing.renorm_after_drop = vm["renorm-after-drop"].as<bool>();
  o.routing.hard_gates = vm["hard-gates"].as<bool>();
  o.routing.ec_max_per_token = vm["ec-max-per-token"].as<int>();
  o.routing.balance = BalanceKind::none;  // synthetic logits: nothing to balance
  o.dispatch = parse_dispatch_mode("--dispatch", vm["dispatch"].as<std::string>());
  o.backend = parse_backend("--backend", vm["backend"].as<std::string>());
  o.tokens = vm["tokens"].as<int>();
  o.d_model = vm["d-model"].as<int>();
  o.iters = vm["iters"].as<int>();
  o.warmup_iters = vm["warmup-iters"].as<int>();
  o.logit_batches = vm["logit-batches"].as<int>();
  o.threads = vm["threads"].as<int>();
  o.seed = vm["seed"].as<uint64_t>();
  o.inputs = resolve_synthetic_inputs(vm, o.seed);
  o.out = vm["out"].as<std::string>();
  require(o.tokens >= 1, "--tokens must be >= 1");
  require(o.d_model >= 1, "--d-model must be >= 1");
  require(o.iters >= 1, "--iters must be >= 1");
  require(o.warmup_iters >= 0, "--warmup-iters must be >= 0");
  require(o.logit_batches >= 1, "--logit-batches must be >= 1");
  require(o.threads >= 1, "--threads must be >= 1");
  for (int E : o.experts) {
    std::ostringstream text;
    text << "--experts " << E << " is not divisible by the " << ranks
         << " ranks: experts are sharded evenly across ranks (use multiples of " << ranks
         << ", or run with a rank count that divides every expert count)";
    require(E % ranks == 0, text.str());
  }
  // Validate every cell before anything runs, so bad input fails before any output.
  for (const RoutingConfig& cell : cell_configs(o)) validate_routing_config(cell);
  return o;
}

// Synthetic router logits [batches][T, E] for this rank, and token ids [batches][T]
// (synthetic_inputs.hpp).
void make_inputs(std::vector<float>& logits, std::vector<int32_t>& ids, const CapacityOptions& o,
                 int E, int rank) {
  const int64_t T = o.tokens;
  logits.resize(static_cast<size_t>(o.logit_batches) * T * E);
  ids.resize(static_cast<size_t>(o.logit_batches) * T);
  for (int b = 0; b < o.logit_batches; ++b) {
    make_synthetic_inputs(logits.data() + static_cast<int64_t>(b) * T * E,
                          ids.data() + static_cast<int64_t>(b) * T, T, E, o.inputs,
                          synthetic_stream(E, rank, b));
  }
}

// One cell on the CPU: the Dispatcher over MPI, wall-clock times. plan and y receive the last
// iteration's plan and output.
CapacityCellResult run_cell_cpu(const CapacityCellSetup& s, MPI_Comm comm, RoutingPlan& plan,
                                std::vector<float>& y) {
  const RoutingConfig& config = s.config;
  const int T = s.tokens, E = config.num_experts;
  plan.reserve(config, T);
  Dispatcher dispatcher(comm, E, s.d_model, s.dispatch);
  dispatcher.reserve(config, T);
  std::vector<float> expert_rows(static_cast<size_t>(dispatcher.max_expert_rows()) * s.d_model);
  y.resize(static_cast<size_t>(T) * s.d_model);
  RoutingStats stats;
  stats.reset(E);
  const bool learned = has_learned_router(config.router);

  double route_seconds = 0.0;
  for (int it = 0; it < s.warmup_iters + s.iters; ++it) {
    if (it == s.warmup_iters) {
      dispatcher.reset_counters();
      route_seconds = 0.0;
    }
    const int batch = it % s.logit_batches;
    const float* z = s.logits + static_cast<int64_t>(batch) * T * E;
    const int32_t* token_ids = s.token_ids + static_cast<int64_t>(batch) * T;
    MOEBENCH_MPI_CHECK(MPI_Barrier(comm));
    const double start = MPI_Wtime();
    route(plan, learned ? z : nullptr, token_ids, nullptr, T, config);
    route_seconds += MPI_Wtime() - start;
    dispatcher.set_plan(plan);
    dispatcher.dispatch(expert_rows.data(), s.x);
    dispatcher.combine(y.data(), expert_rows.data());  // identity experts
    if (it >= s.warmup_iters) routing_stats_add(stats, plan, learned ? z : nullptr, config);
  }

  CapacityCellResult result;
  result.capacity = static_cast<int>(plan.capacity);
  routing_stats_allreduce(stats, comm);
  result.metrics = routing_metrics(stats);
  set_dispatch_results(result, route_seconds, dispatcher.timings(), dispatcher.bytes_sent(),
                       s.iters);
  return result;
}

// Tokens of y [T, d] that are not (sum of their kept gates) * x_t, summed over ranks.
int64_t wrong_tokens(const RoutingPlan& plan, const float* x, const std::vector<float>& y,
                     int d_model, MPI_Comm comm) {
  int64_t wrong = 0;
  for (int t = 0; t < plan.num_tokens; ++t) {
    float gate_sum = 0.0f;
    for (int s = 0; s < plan.slots; ++s) {
      const int64_t entry = static_cast<int64_t>(t) * plan.slots + s;
      if (plan.kept[entry]) gate_sum += plan.gate[entry];
    }
    for (int i = 0; i < d_model; ++i) {
      const float expected = gate_sum * x[static_cast<size_t>(t) * d_model + i];
      if (std::abs(y[static_cast<size_t>(t) * d_model + i] - expected) > 1e-5f * (1.0f + std::abs(expected))) {
        ++wrong;
        break;
      }
    }
  }
  int64_t total = 0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&wrong, &total, 1, MPI_INT64_T, MPI_SUM, comm));
  return total;
}

double reduce(double value, MPI_Op op, MPI_Comm comm) {
  double result = 0.0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, op, comm));
  return result;
}

}  // namespace

int run_capacity_command(int argc, char** argv) {
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  const po::options_description options = capacity_options();
  const cli::ParsedCommand parsed = cli::parse_command("capacity", argc, argv, options);
  if (parsed.help) {
    if (rank == 0) {
      std::cout << "usage: mpirun -np P moebench capacity [options]\n\n"
                   "Capacity microbenchmark: routes synthetic logits over a capacity-factor x\n"
                   "experts x top-k grid, exchanges the kept rows between ranks and reports\n"
                   "dropping, balance, routing time, pack/combine throughput and exchange cost.\n\n"
                << options << "  --config FILE           INI file with the same option names\n";
    }
    return 0;
  }
  const CapacityOptions o = resolve(parsed.values, ranks);
  // --backend cuda: every cell checked against what the GPU routing runs, then each rank's GPU
  // and the NCCL communicator, before any output.
  std::unique_ptr<CudaCapacityCells> gpu;
  if (o.backend == Backend::cuda) {
    for (const RoutingConfig& cell : cell_configs(o)) CudaCapacityCells::validate(cell);
    gpu = std::make_unique<CudaCapacityCells>(comm);
  }
  set_compute_threads(o.threads);
  if (rank == 0) cli::print_config_table(std::cout, "capacity", parsed);

  TraceWriter trace(o.out, comm, TraceRunInfo{"capacity", parsed.command_line, parsed.resolved},
                    /*flush_every=*/1 << 30);
  ResultTable table({{"experts", 7, 0}, {"top_k", 5, 0}, {"capacity_factor", 15, 2},
                     {"capacity", 8, 0}, {"drop_rate", 9, 4}, {"token_drop_rate", 15, 4},
                     {"load_cv", 7, 3}, {"max_load_ratio", 14, 2}, {"route_ms", 8, 3},
                     {"route_Massign_per_s", 19, 1}, {"pack_Mtok_per_s", 15, 1},
                     {"combine_Mtok_per_s", 18, 1}, {"exchange_ms", 11, 3},
                     {"MB_per_rank", 11, 2}, {"wrong", 5, 0}});
  std::string csv_error;
  if (rank == 0) {
    try {
      table.open_csv(csv_path_beside(o.out));
    } catch (const UsageError& error) {
      csv_error = error.what();
    }
  }
  cli::agree_or_throw(comm, csv_error.empty(), csv_error);

  const std::string group = "/bench/capacity";
  trace.set_attribute(group, "router", std::string(to_string(o.routing.router)));
  trace.set_attribute(group, "dispatch", std::string(to_string(o.dispatch)));
  trace.set_attribute(group, "backend", std::string(to_string(o.backend)));
  if (gpu) trace.set_attribute(group, "device", gpu->device_name());
  trace.set_attribute(group, "distribution", o.inputs.distribution);
  trace.set_attribute(group, "tokens_per_rank", static_cast<int64_t>(o.tokens));
  trace.set_attribute(group, "d_model", static_cast<int64_t>(o.d_model));
  trace.set_attribute(group, "iters", static_cast<int64_t>(o.iters));
  const char* replicated_names[] = {"experts", "top_k", "capacity_factor", "capacity",
                                    "drop_rate", "token_drop_rate", "load_cv", "max_load_ratio",
                                    "unused_experts", "router_entropy", "gate_entropy",
                                    "mean_topk_prob", "route_ms", "pack_tokens_per_s",
                                    "combine_tokens_per_s", "exchange_ms", "bytes_per_rank_mean",
                                    "bytes_per_rank_max", "wrong"};
  std::map<std::string, TraceSeries> columns;
  for (const char* name : replicated_names) {
    columns[name] = trace.series(group + "/" + name, TraceType::float64, {}, TraceLayout::replicated);
  }
  TraceSeries rank_route = trace.series(group + "/route_ms_per_rank", TraceType::float64, {},
                                        TraceLayout::per_rank, "ms", "routing-plan time per iteration");
  TraceSeries rank_exchange = trace.series(group + "/exchange_ms_per_rank", TraceType::float64, {},
                                           TraceLayout::per_rank, "ms",
                                           "dispatch + combine exchange (ragged: incl. counts) per iteration");
  TraceSeries rank_bytes = trace.series(group + "/bytes_sent", TraceType::float64, {ranks},
                                        TraceLayout::per_rank, "bytes",
                                        "token-row bytes this rank sent each rank per iteration, dispatch + combine");

  std::vector<float> x(static_cast<size_t>(o.tokens) * o.d_model);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>(random_normal(o.seed, 0xC0FFEEULL + static_cast<uint64_t>(rank), i));
  }
  if (rank == 0) {
    std::printf("\n# moebench capacity: router %s, dispatch %s, %s logits, %d tokens/rank, d=%d, %d ranks, %d thread(s)/rank\n",
                to_string(o.routing.router), to_string(o.dispatch), o.inputs.distribution.c_str(),
                o.tokens, o.d_model, ranks, o.threads);
    if (gpu) {
      std::printf("# backend cuda on %s (rank 0's device): device times from CUDA events, NCCL exchanges\n",
                  gpu->device_name().c_str());
    }
    std::printf("# times: route = mean over ranks; exchange = slowest rank; MB_per_rank = mean sent per rank (incl. self)\n");
    table.print_header(stdout);
  }

  int64_t total_wrong = 0;
  std::vector<float> logits;
  std::vector<int32_t> ids;
  for (int E : o.experts) {
    make_inputs(logits, ids, o, E, rank);
    for (int k : o.top_ks) {
      for (double cf : o.capacity_factors) {
        const CapacityCellSetup setup{cell_config(o.routing, E, k, cf),
                                      o.dispatch,
                                      o.tokens,
                                      o.d_model,
                                      o.iters,
                                      o.warmup_iters,
                                      o.logit_batches,
                                      logits.data(),
                                      ids.data(),
                                      x.data()};
        RoutingPlan last_plan;
        std::vector<float> y;
        const CapacityCellResult cell = gpu ? gpu->run(setup, comm, last_plan, y)
                                            : run_cell_cpu(setup, comm, last_plan, y);
        const int64_t wrong = wrong_tokens(last_plan, x.data(), y, o.d_model, comm);
        total_wrong += wrong;

        const double route_ms = 1e3 * reduce(cell.route_s, MPI_SUM, comm) / ranks;
        const double exchange_ms = 1e3 * reduce(cell.exchange_s, MPI_MAX, comm);
        const double pack_s = reduce(cell.permute_s, MPI_MAX, comm);
        const double combine_s = reduce(cell.unpermute_s, MPI_MAX, comm);
        double sent = 0.0;
        for (double b : cell.bytes_to_peer) sent += b;
        const double bytes_mean = reduce(sent, MPI_SUM, comm) / ranks;
        const double bytes_max = reduce(sent, MPI_MAX, comm);
        const RoutingMetrics& m = cell.metrics;
        const double assignments = static_cast<double>(o.tokens) * k;
        const std::map<std::string, double> values = {
            {"experts", E}, {"top_k", k}, {"capacity_factor", cf}, {"capacity", cell.capacity},
            {"drop_rate", m.drop_rate}, {"token_drop_rate", m.token_drop_rate},
            {"load_cv", m.load_cv}, {"max_load_ratio", m.max_load_ratio},
            {"unused_experts", m.unused_experts}, {"router_entropy", m.router_entropy},
            {"gate_entropy", m.gate_entropy}, {"mean_topk_prob", m.mean_topk_prob},
            {"route_ms", route_ms}, {"pack_tokens_per_s", o.tokens / pack_s},
            {"combine_tokens_per_s", o.tokens / combine_s}, {"exchange_ms", exchange_ms},
            {"bytes_per_rank_mean", bytes_mean}, {"bytes_per_rank_max", bytes_max},
            {"wrong", static_cast<double>(wrong)}};
        for (const char* name : replicated_names) {
          const double value = values.at(name);
          columns[name].append(&value);
        }
        const double my_route_ms = 1e3 * cell.route_s, my_exchange_ms = 1e3 * cell.exchange_s;
        rank_route.append(&my_route_ms);
        rank_exchange.append(&my_exchange_ms);
        rank_bytes.append(cell.bytes_to_peer.data());
        trace.flush();
        if (rank == 0) {
          table.add_row(stdout, {static_cast<double>(E), static_cast<double>(k), cf,
                                 static_cast<double>(cell.capacity), m.drop_rate, m.token_drop_rate,
                                 m.load_cv, m.max_load_ratio, route_ms,
                                 assignments / (route_ms * 1e-3) / 1e6, o.tokens / pack_s / 1e6,
                                 o.tokens / combine_s / 1e6, exchange_ms, bytes_mean / 1e6,
                                 static_cast<double>(wrong)});
        }
      }
    }
  }
  trace.set_attribute(group, "complete", static_cast<int64_t>(1));
  trace.close();
  if (rank == 0) {
    table.close_csv();
    std::printf("# wrote %s and %s\n", o.out.c_str(), csv_path_beside(o.out).c_str());
    std::printf("# Wrong tokens: %lld  %s\n", static_cast<long long>(total_wrong),
                total_wrong == 0 ? "OK" : "FAILED");
  }
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace moebench
