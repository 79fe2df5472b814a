// `moebench alltoall` (see alltoall_bench.hpp): the options, their validation, and the
// dispatch to a pattern (alltoall_uniform.cpp, alltoall_routed.cpp, alltoall_replay.cpp).
#include "moebench/alltoall_bench.hpp"

#include <mpi.h>

#include <algorithm>
#include <limits>
#include <cmath>
#include <iostream>
#include <set>
#include <sstream>

#include "alltoall_internal.hpp"
#include "moebench/check.hpp"

namespace moebench {

namespace po = boost::program_options;
using namespace alltoall_detail;

namespace {

po::options_description alltoall_options() {
  po::options_description common("common options");
  common.add_options()
      ("pattern", po::value<std::string>()->default_value("uniform"),
       "traffic: uniform (size sweep, size / P bytes to every rank) | routed (the byte matrix of "
       "real routing plans: the cost-per-router table) | replay (the matrices of a train trace)")
      ("backend", po::value<std::string>()->default_value("cpu"),
       "cpu (MPI between host buffers) | cuda (NCCL between device buffers, one GPU per rank, "
       "CUDA-event timings, --algorithm nccl; needs -DMOEBENCH_CUDA=ON)")
      ("algorithm", po::value<std::string>()->default_value("alltoallv,pairwise,hierarchical"),
       "exchange algorithms to measure (comma-separated): alltoallv | pairwise | hierarchical | "
       "raw (MPI_Alltoallv called directly by the benchmark loop: the reference for the wrapper)"
       " | nccl (--backend cuda, and its default there)")
      ("ranks-per-node", po::value<int>()->default_value(0),
       "hierarchical: ranks per (virtual) node; 0 = the ranks that share memory")
      ("warmup-iters", po::value<int>()->default_value(5), "untimed iterations per measurement")
      ("iters", po::value<int>()->default_value(20), "timed iterations per measurement")
      ("seed", po::value<uint64_t>()->default_value(1234), "seed of the checked data and the logits")
      ("out", po::value<std::string>()->default_value("alltoall.h5"),
       "HDF5 trace path; the CSVs are written beside it (same name, .csv, _fit.csv, _predict.csv)");
  po::options_description uniform("--pattern uniform");
  uniform.add_options()
      ("min-bytes", po::value<std::string>()->default_value("1K"),
       "smallest size: bytes each rank sends in all (K, M, G suffixes)")
      ("max-bytes", po::value<std::string>()->default_value("16M"), "largest size")
      ("step-factor", po::value<int>()->default_value(2), "multiply the size by this between rows (>= 2)")
      ("predict", po::value<std::string>()->default_value(""),
       "rank counts at which to print the alpha-beta MODEL's time per exchange (e.g. 8,64,512,4096)")
      ("predict-ranks-per-node", po::value<int>()->default_value(8),
       "ranks per node of the predicted machines (a count up to it is one node)")
      ("predict-bytes", po::value<std::string>()->default_value(""),
       "bytes each rank sends in the predicted exchange (default: --max-bytes)")
      ("intra-bw", po::value<double>()->default_value(0.0),
       "intra-node link bandwidth of the model, GB/s (0 = each algorithm's fitted 1/beta)")
      ("inter-bw", po::value<double>()->default_value(0.0),
       "inter-node link bandwidth of the model, GB/s (0 = the fitted 1/beta)")
      ("inter-latency-us", po::value<double>()->default_value(-1.0),
       "inter-node message latency of the model, us (< 0 = the fitted alpha)");
  po::options_description routed("--pattern routed");
  routed.add_options()
      ("router", po::value<std::string>()->default_value("top1,topk_hard,softk,hash,expert_choice"),
       "routers to compare (comma-separated): top1 | topk_hard | softk | hash | expert_choice "
       "(top1 always routes with k = 1)")
      ("experts", po::value<int>()->default_value(64), "experts E (a multiple of the rank count)")
      ("top-k", po::value<std::string>()->default_value("2"), "top-k values (comma-separated)")
      ("capacity-factor", po::value<std::string>()->default_value("1.25"),
       "capacity factors (comma-separated; 0 = dropless, token-choice routers only)")
      ("dispatch", po::value<std::string>()->default_value("ragged"),
       "exchange layout the Dispatcher times and the algorithms move: ragged | padded")
      ("drop-policy", po::value<std::string>()->default_value("position"), "position | prob")
      ("ec-max-per-token", po::value<int>()->default_value(-1),
       "expert_choice: experts a token may keep (-1 = top-k, 0 = no limit)")
      ("tokens", po::value<int>()->default_value(2048), "tokens per rank (T)")
      ("d-model", po::value<int>()->default_value(256), "hidden size d: a token row is d * 4 bytes");
  add_synthetic_input_options(routed);
  po::options_description replay("--pattern replay");
  replay.add_options()
      ("replay", po::value<std::string>()->default_value(""),
       "trace of a `moebench train` run whose /comm byte matrices are replayed (same rank count)")
      ("replay-steps", po::value<int>()->default_value(0), "replay the first N steps (0 = all)");
  po::options_description options("moebench alltoall options");
  options.add(common).add(uniform).add(routed).add(replay);
  return options;
}

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) items.push_back(item);
  return items;
}

void resolve_uniform(AlltoallOptions& o, const po::variables_map& vm, int ranks) {
  o.min_bytes = cli::parse_byte_size("--min-bytes", vm["min-bytes"].as<std::string>());
  o.max_bytes = cli::parse_byte_size("--max-bytes", vm["max-bytes"].as<std::string>());
  o.step_factor = vm["step-factor"].as<int>();
  require(o.max_bytes >= o.min_bytes, "--max-bytes must be >= --min-bytes");
  require(o.max_bytes / ranks / static_cast<int64_t>(sizeof(float)) <= (1LL << 30),
          "--max-bytes is too large: at most 4 GiB per peer");
  // The exchange's offsets and counts are int elements (MPI's and the buffers' layout).
  require(o.max_bytes / static_cast<int64_t>(sizeof(float)) <= std::numeric_limits<int>::max(),
          "--max-bytes is too large: at most 8 GiB in all per rank (2^31 - 1 floats)");
  require(o.step_factor >= 2, "--step-factor must be >= 2");
  const std::string predict = vm["predict"].as<std::string>();
  if (predict.empty()) return;
  o.predict_ranks = cli::parse_int_list("--predict", predict, 1);
  o.predict_ranks_per_node = vm["predict-ranks-per-node"].as<int>();
  require(o.predict_ranks_per_node >= 1, "--predict-ranks-per-node must be >= 1");
  for (int p : o.predict_ranks) {
    std::ostringstream text;
    text << "--predict: " << p << " ranks do not fill nodes of --predict-ranks-per-node "
         << o.predict_ranks_per_node << " (give multiples of it, or counts up to it for one node)";
    require(p <= o.predict_ranks_per_node || p % o.predict_ranks_per_node == 0, text.str());
  }
  const std::string bytes = vm["predict-bytes"].as<std::string>();
  o.predict_bytes = bytes.empty() ? o.max_bytes : cli::parse_byte_size("--predict-bytes", bytes);
  o.intra_bw_GBps = vm["intra-bw"].as<double>();
  o.inter_bw_GBps = vm["inter-bw"].as<double>();
  o.inter_latency_us = vm["inter-latency-us"].as<double>();
  require(std::isfinite(o.intra_bw_GBps) && o.intra_bw_GBps >= 0.0,
          "--intra-bw must be a bandwidth in GB/s >= 0 (0 = the fitted one)");
  require(std::isfinite(o.inter_bw_GBps) && o.inter_bw_GBps >= 0.0,
          "--inter-bw must be a bandwidth in GB/s >= 0 (0 = the fitted one)");
  require(std::isfinite(o.inter_latency_us), "--inter-latency-us must be a number (< 0 = the fitted alpha)");
  std::ostringstream one_rank;
  one_rank << "--predict needs a measuring run on at least 2 ranks (this one has " << ranks
           << "; on one rank no message crosses, so there is no alpha or beta to fit): "
              "launch/mpirun.sh -np 2 or more";
  require(ranks >= 2, one_rank.str());
  // The fit needs two distinct sizes as the sweep will really send them (whole floats).
  std::set<int64_t> sizes;
  for (int64_t size = o.min_bytes; size <= o.max_bytes; size *= o.step_factor) {
    sizes.insert(size / ranks / static_cast<int64_t>(sizeof(float)));
  }
  require(sizes.size() >= 2,
          "--predict needs the alpha-beta fit, which needs at least 2 distinct sizes: "
          "widen the sweep (--max-bytes >= --min-bytes * --step-factor)");
}

void resolve_routed(AlltoallOptions& o, const po::variables_map& vm, int ranks) {
  for (const std::string& name : split_list(vm["router"].as<std::string>())) {
    o.routers.push_back(parse_router_kind("--router", name));
  }
  require(!o.routers.empty(), "--router: give at least one router");
  o.top_ks = cli::parse_int_list("--top-k", vm["top-k"].as<std::string>(), 1);
  o.capacity_factors = cli::parse_double_list("--capacity-factor", vm["capacity-factor"].as<std::string>());
  for (double cf : o.capacity_factors) {
    std::ostringstream text;
    text << "--capacity-factor: entry " << cf
         << " is negative (use a factor > 0, or 0 for dropless routing)";
    require(cf >= 0.0, text.str());
  }
  RoutedOptions& r = o.routed;
  r.routing.num_experts = vm["experts"].as<int>();
  r.routing.drop_policy = parse_drop_policy("--drop-policy", vm["drop-policy"].as<std::string>());
  r.routing.ec_max_per_token = vm["ec-max-per-token"].as<int>();
  r.routing.balance = BalanceKind::none;  // synthetic logits: nothing to balance
  r.dispatch = parse_dispatch_mode("--dispatch", vm["dispatch"].as<std::string>());
  r.inputs = resolve_synthetic_inputs(vm, o.seed);
  r.tokens = vm["tokens"].as<int>();
  r.d_model = vm["d-model"].as<int>();
  require(r.tokens >= 1, "--tokens must be >= 1");
  require(r.d_model >= 1, "--d-model must be >= 1");
  const int E = r.routing.num_experts;
  require(E >= 1, "--experts must be >= 1");
  std::ostringstream divisible;
  divisible << "--experts " << E << " is not divisible by the " << ranks
            << " ranks: experts are sharded evenly across ranks (use a multiple of " << ranks
            << ", or run with a rank count that divides " << E << ")";
  require(E % ranks == 0, divisible.str());
  // Every cell is validated before anything runs (k > E, expert_choice with CF 0, ...).
  for (RouterKind router : o.routers) {
    for (int k : o.top_ks) {
      for (double cf : o.capacity_factors) {
        RoutingConfig cell = r.routing;
        cell.router = router;
        cell.top_k = router == RouterKind::top1 ? 1 : k;
        cell.capacity_factor = cf;
        validate_routing_config(cell);
        // top1 ignores --top-k, but k > E is still a mistake in the command line.
        std::ostringstream text;
        text << "--top-k " << k << " exceeds --experts " << E << " (use k <= E)";
        require(k <= E, text.str());
      }
    }
  }
}

AlltoallOptions resolve(const po::variables_map& vm, int ranks) {
  AlltoallOptions o;
  o.pattern = vm["pattern"].as<std::string>();
  require(o.pattern == "uniform" || o.pattern == "routed" || o.pattern == "replay",
          "--pattern: unknown value '" + o.pattern + "' (accepted: uniform, routed, replay)");
  o.backend = parse_backend("--backend", vm["backend"].as<std::string>());
  o.algorithms = split_list(vm["algorithm"].as<std::string>());
  require(!o.algorithms.empty(), "--algorithm: give at least one algorithm");
  for (const std::string& name : o.algorithms) {
    const auto& labels = algorithm_labels();
    require(std::find(labels.begin(), labels.end(), name) != labels.end(),
            "--algorithm: unknown value '" + name +
                "' (accepted: alltoallv, pairwise, hierarchical, raw, nccl)");
  }
  if (o.backend == Backend::cuda) {
#if !MOEBENCH_HAVE_CUDA
    require(false, cuda_backend_missing_message());
#endif
    if (vm["algorithm"].defaulted()) o.algorithms = {"nccl"};
    require(o.algorithms == std::vector<std::string>{"nccl"},
            "--backend cuda measures the nccl algorithm only (drop --algorithm, or pass "
            "--algorithm nccl)");
  } else {
    require(std::find(o.algorithms.begin(), o.algorithms.end(), "nccl") == o.algorithms.end(),
            "--algorithm nccl exchanges device buffers: it needs --backend cuda");
  }
  o.ranks_per_node = vm["ranks-per-node"].as<int>();
  o.warmup_iters = vm["warmup-iters"].as<int>();
  o.iters = vm["iters"].as<int>();
  require(o.warmup_iters >= 0 && o.iters >= 1, "--warmup-iters must be >= 0 and --iters >= 1");
  o.seed = vm["seed"].as<uint64_t>();
  o.out = vm["out"].as<std::string>();
  o.replay = vm["replay"].as<std::string>();
  o.replay_steps = vm["replay-steps"].as<int>();
  require(o.replay_steps >= 0, "--replay-steps must be >= 0 (0 = every step)");
  require(o.replay.empty() || o.pattern == "replay",
          "--replay is read only with --pattern replay (add --pattern replay, or drop --replay)");
  require(vm["predict"].as<std::string>().empty() || o.pattern == "uniform",
          "--predict models the uniform size sweep's alpha-beta fit (use it with --pattern uniform)");
  if (o.pattern == "uniform") resolve_uniform(o, vm, ranks);
  if (o.pattern == "routed") resolve_routed(o, vm, ranks);
  if (o.pattern == "replay") {
    require(!o.replay.empty(),
            "--pattern replay needs --replay TRACE (the --out of a moebench train run)");
  }
  return o;
}

}  // namespace


int run_alltoall_command(int argc, char** argv) {
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  const po::options_description options = alltoall_options();
  const cli::ParsedCommand parsed = cli::parse_command("alltoall", argc, argv, options);
  if (parsed.help) {
    if (rank == 0) {
      cli::print_command_help(std::cout, "alltoall",
                              "All-to-all benchmark, nccl-tests style: a size sweep with an "
                              "alpha-beta model (--pattern uniform), the cost of each router's "
                              "traffic (--pattern routed), or a training trace's exchanges "
                              "replayed (--pattern replay); every element checked (#wrong, "
                              "OK/FAILED).",
                              options);
    }
    return 0;
  }
  const AlltoallOptions o = resolve(parsed.values, ranks);
  if (o.pattern == "routed") return run_routed_pattern(o, parsed, comm);
  if (o.pattern == "replay") return run_replay_pattern(o, parsed, comm);
  return run_uniform_pattern(o, parsed, comm);
}

}  // namespace moebench
