// `moebench train` (see train.hpp). One step on every rank:
//   batch (this rank's slice of the global batch) -> forward -> backward ->
//   one all-reduce of the dense + router gradients (averaged) -> expert gradients / P ->
//   global gradient-norm clipping -> AdamW -> balancing bias update -> metrics and trace.
#include "moebench/train.hpp"

#include <mpi.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "moebench/blas.hpp"
#include "moebench/check.hpp"
#include "moebench/checkpoint.hpp"
#include "moebench/cli.hpp"
#include "moebench/cuda.hpp"
#include "moebench/data.hpp"
#include "moebench/metrics.hpp"
#include "moebench/model.hpp"
#include "moebench/trace.hpp"
#include "moebench/train_backend.hpp"

namespace moebench {

namespace {

namespace po = boost::program_options;

po::options_description train_options() {
  po::options_description options("moebench train options");
  options.add_options()
      ("data", po::value<std::string>()->default_value(""),
       "token shard or text file (default: the built-in story corpus)")
      ("tokenizer-model", po::value<std::string>()->default_value(""),
       "BPE data: the SentencePiece model that wrote --data, for bits per byte (default: "
       "beside the shard, data/x.bin -> data/x.model)")
      ("val-fraction", po::value<double>()->default_value(kDefaultValFraction),
       "fraction of the tokens (at the end) held out for validation")
      ("out", po::value<std::string>()->default_value("train.h5"), "HDF5 trace path")
      ("seed", po::value<uint64_t>()->default_value(1234), "seed of the weights and the batches")
      ("d-model", po::value<int>()->default_value(128), "model width C")
      ("layers", po::value<int>()->default_value(2), "transformer blocks")
      ("heads", po::value<int>()->default_value(4), "attention heads (must divide --d-model)")
      ("ffn-hidden", po::value<int>()->default_value(0), "dense FFN width (0 = 4 x d-model)")
      ("expert-hidden", po::value<int>()->default_value(0), "expert FFN width (0 = 4 x d-model)")
      ("moe-every", po::value<int>()->default_value(1),
       "block i has an MoE FFN when i % N == 0 (1 = every block), a dense FFN otherwise")
      ("experts", po::value<int>()->default_value(8), "experts E (a multiple of the rank count)")
      ("top-k", po::value<int>()->default_value(2), "choices per token k")
      ("capacity-factor", po::value<double>()->default_value(1.25), "CF (<= 0: dropless)")
      ("router", po::value<std::string>()->default_value("softk"),
       "top1 | topk_hard | softk | hash | expert_choice")
      ("router-arch", po::value<std::string>()->default_value("linear"),
       "linear | mlp | mlp_hadamard")
      ("router-hidden", po::value<int>()->default_value(64), "hidden width of the mlp routers")
      ("balance", po::value<std::string>()->default_value("auto"), "auto | none | aux | bias")
      ("aux-loss-coeff", po::value<double>()->default_value(0.01), "alpha of the aux loss")
      ("z-loss", po::value<double>()->default_value(0.0), "beta of the router z-loss")
      ("bias-update-rate", po::value<double>()->default_value(1e-3), "gamma of --balance bias")
      ("temperature", po::value<double>()->default_value(1.0), "softk gate temperature")
      ("renorm-after-drop", po::bool_switch(), "softk: renormalise gates over kept choices")
      ("hard-gates", po::bool_switch(), "top1: gate 1 instead of p")
      ("drop-policy", po::value<std::string>()->default_value("position"), "position | prob")
      ("ec-max-per-token", po::value<int>()->default_value(-1),
       "expert_choice: experts a token may keep (-1 = top-k, 0 = no limit)")
      ("dispatch", po::value<std::string>()->default_value("ragged"), "ragged | padded")
      ("seq-len", po::value<int>()->default_value(128), "tokens per sequence T")
      ("batch-size", po::value<int>()->default_value(8), "sequences per rank B")
      ("steps", po::value<int>()->default_value(1000), "optimizer steps")
      ("lr", po::value<double>()->default_value(1e-3), "peak learning rate")
      ("min-lr-ratio", po::value<double>()->default_value(0.1), "final lr / peak lr (cosine)")
      ("warmup", po::value<int>()->default_value(100), "linear warm-up steps")
      ("weight-decay", po::value<double>()->default_value(0.1),
       "AdamW decoupled weight decay (matrices and embeddings only)")
      ("grad-clip", po::value<double>()->default_value(1.0), "global gradient-norm clip (0 = off)")
      ("eval-every", po::value<int>()->default_value(200), "evaluate every N steps (and at the end)")
      ("eval-batches", po::value<int>()->default_value(4), "validation batches per evaluation")
      ("log-every", po::value<int>()->default_value(10), "print a progress line every N steps")
      ("trace-flush", po::value<int>()->default_value(50), "flush the trace every N steps")
      ("backend", po::value<std::string>()->default_value("cpu"),
       "cpu | cuda (one GPU per rank, NCCL exchanges; a build with -DMOEBENCH_CUDA=ON)")
      ("expert-precision", po::value<std::string>()->default_value("fp32"),
       "fp32 | bf16: the expert FFN products' operands, fp32 accumulation (bf16: --backend cuda)")
      ("threads", po::value<int>()->default_value(1),
       "OpenMP threads per rank (BLAS runs single-threaded inside them)")
      ("checkpoint-every", po::value<int>()->default_value(0),
       "write a checkpoint every N steps (0 = never) to --checkpoint")
      ("checkpoint", po::value<std::string>()->default_value(""),
       "directory of the checkpoints, one step_<N> directory each (default: the trace path "
       "with .ckpt instead of its extension)")
      ("resume", po::value<std::string>()->default_value(""),
       "continue from this checkpoint directory (same options and rank count)");
  return options;
}

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}

struct TrainOptions {
  ModelConfig model;
  std::string data, out, tokenizer_model;
  double val_fraction = 0.05, lr = 1e-3, min_lr_ratio = 0.1, weight_decay = 0.1, grad_clip = 1.0;
  int seq_len = 128, batch_size = 8, steps = 1000, warmup = 100, eval_every = 200,
      eval_batches = 4, log_every = 10, trace_flush = 50, threads = 1, checkpoint_every = 0;
  std::string checkpoint, resume;
  uint64_t seed = 1234;
  Backend backend = Backend::cpu;
};

TrainOptions resolve(const po::variables_map& vm) {
  TrainOptions o;
  o.data = vm["data"].as<std::string>();
  o.tokenizer_model = vm["tokenizer-model"].as<std::string>();
  o.out = vm["out"].as<std::string>();
  o.val_fraction = vm["val-fraction"].as<double>();
  o.seed = vm["seed"].as<uint64_t>();
  o.seq_len = vm["seq-len"].as<int>();
  o.batch_size = vm["batch-size"].as<int>();
  o.steps = vm["steps"].as<int>();
  o.lr = vm["lr"].as<double>();
  o.min_lr_ratio = vm["min-lr-ratio"].as<double>();
  o.warmup = vm["warmup"].as<int>();
  o.weight_decay = vm["weight-decay"].as<double>();
  o.grad_clip = vm["grad-clip"].as<double>();
  o.eval_every = vm["eval-every"].as<int>();
  o.eval_batches = vm["eval-batches"].as<int>();
  o.log_every = vm["log-every"].as<int>();
  o.trace_flush = vm["trace-flush"].as<int>();
  o.threads = vm["threads"].as<int>();
  o.backend = parse_backend("--backend", vm["backend"].as<std::string>());
  o.checkpoint_every = vm["checkpoint-every"].as<int>();
  o.resume = vm["resume"].as<std::string>();
  o.checkpoint = vm["checkpoint"].as<std::string>();
  if (o.checkpoint.empty()) {
    const auto slash = o.out.find_last_of('/');
    const auto dot = o.out.find_last_of('.');
    o.checkpoint = (dot != std::string::npos && (slash == std::string::npos || dot > slash)
                        ? o.out.substr(0, dot) : o.out) + ".ckpt";
  }
  require(o.checkpoint_every >= 0, "--checkpoint-every must be >= 0 (0 = never)");
  require(o.seq_len >= 1, "--seq-len must be >= 1");
  require(o.batch_size >= 1, "--batch-size must be >= 1");
  require(o.steps >= 1, "--steps must be >= 1");
  require(o.warmup >= 0, "--warmup must be >= 0");
  require(std::isfinite(o.lr) && o.lr > 0.0, "--lr must be a number > 0");
  require(o.min_lr_ratio >= 0.0 && o.min_lr_ratio <= 1.0, "--min-lr-ratio must be in [0, 1]");
  require(o.weight_decay >= 0.0, "--weight-decay must be >= 0");
  require(o.grad_clip >= 0.0, "--grad-clip must be >= 0 (0 = off)");
  require(o.eval_every >= 1 && o.eval_batches >= 1 && o.log_every >= 1 && o.trace_flush >= 1,
          "--eval-every, --eval-batches, --log-every and --trace-flush must be >= 1");
  require(o.threads >= 1, "--threads must be >= 1");

  ModelConfig& m = o.model;
  m.d_model = vm["d-model"].as<int>();
  m.layers = vm["layers"].as<int>();
  m.heads = vm["heads"].as<int>();
  m.ffn_hidden = vm["ffn-hidden"].as<int>() > 0 ? vm["ffn-hidden"].as<int>() : 4 * m.d_model;
  m.moe_every = vm["moe-every"].as<int>();
  m.max_seq_len = o.seq_len;
  m.seed = o.seed;
  MoELayerConfig& moe = m.moe;
  moe.d_model = m.d_model;
  moe.d_hidden = vm["expert-hidden"].as<int>() > 0 ? vm["expert-hidden"].as<int>() : 4 * m.d_model;
  moe.router_arch = parse_router_arch("--router-arch", vm["router-arch"].as<std::string>());
  moe.router_hidden = vm["router-hidden"].as<int>();
  moe.dispatch = parse_dispatch_mode("--dispatch", vm["dispatch"].as<std::string>());
  moe.expert_precision =
      parse_gemm_precision("--expert-precision", vm["expert-precision"].as<std::string>());
  RoutingConfig& r = moe.routing;
  r.router = parse_router_kind("--router", vm["router"].as<std::string>());
  r.num_experts = vm["experts"].as<int>();
  r.top_k = vm["top-k"].as<int>();
  r.capacity_factor = vm["capacity-factor"].as<double>();
  r.balance = parse_balance_kind("--balance", vm["balance"].as<std::string>(), r.router);
  r.aux_loss_coeff = static_cast<float>(vm["aux-loss-coeff"].as<double>());
  r.z_loss_coeff = static_cast<float>(vm["z-loss"].as<double>());
  r.bias_update_rate = static_cast<float>(vm["bias-update-rate"].as<double>());
  r.temperature = static_cast<float>(vm["temperature"].as<double>());
  r.renorm_after_drop = vm["renorm-after-drop"].as<bool>();
  r.hard_gates = vm["hard-gates"].as<bool>();
  r.drop_policy = parse_drop_policy("--drop-policy", vm["drop-policy"].as<std::string>());
  r.ec_max_per_token = vm["ec-max-per-token"].as<int>();
  validate_routing_config(r);
  validate_model_config(m);
  return o;
}

// The options a resumed run must share with the run that wrote the checkpoint: everything
// that shapes the model, the data, the batches and the schedule (not where output goes or
// how often it is printed).
std::string run_identity(const cli::ParsedCommand& parsed, int ranks) {
  const std::vector<std::string> free = {"out", "log-every", "eval-every", "eval-batches",
                                         "trace-flush", "checkpoint-every", "checkpoint", "resume"};
  std::string identity = "ranks=" + std::to_string(ranks) + "\n";
  for (const auto& [name, value] : parsed.resolved) {
    if (std::find(free.begin(), free.end(), name) != free.end()) continue;
    // Options that came after the first checkpoints are recorded only away from the value
    // those runs had, so that their checkpoints still resume (and, e.g., a checkpoint of one
    // backend is refused by the other).
    if ((name == "backend" && value == "cpu") || (name == "expert-precision" && value == "fp32")) {
      continue;
    }
    identity += name + "=" + value + "\n";
  }
  return identity;
}

}  // namespace

double learning_rate_at(int step, int steps, int warmup, double lr, double min_ratio) {
  if (step < warmup) return lr * (step + 1) / warmup;
  const int decay_steps = std::max(1, steps - warmup - 1);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / decay_steps);
  const double cosine = 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
  return lr * (min_ratio + (1.0 - min_ratio) * cosine);
}

int run_train_command(int argc, char** argv) {
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0, ranks = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &ranks));
  const po::options_description options = train_options();
  const cli::ParsedCommand parsed = cli::parse_command("train", argc, argv, options);
  if (parsed.help) {
    if (rank == 0) {
      cli::print_command_help(std::cout, "train",
                              "Trains the MoE transformer language model with experts sharded "
                              "over the ranks; writes the training trace.",
                              options);
    }
    return 0;
  }
  TrainOptions o = resolve(parsed.values);
  set_compute_threads(o.threads);
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  if (rank == 0 && o.threads > 1 && wait_policy != nullptr &&
      (std::string(wait_policy) == "passive" || std::string(wait_policy) == "PASSIVE")) {
    // libgomp reads it before main, so the note is all the program can do (docs/benchmarks.md).
    std::printf("# note: --threads %d with OMP_WAIT_POLICY=passive: every OpenMP region has to "
                "wake sleeping threads, which can halve the speed; unset it for libgomp's "
                "default\n", o.threads);
  }

  // Data: every rank opens it; a rank that cannot makes all of them stop with its message.
  // The model's vocabulary is the data's; token_bytes[id] (text bytes per token) turns the
  // validation loss into bits per byte, so byte-level and BPE runs compare.
  std::unique_ptr<TokenDataset> dataset;
  std::vector<int32_t> token_bytes;
  std::string data_error;
  try {
    if (o.data.empty() && !o.tokenizer_model.empty()) {
      throw UsageError("--tokenizer-model goes with the BPE shard it wrote (--data); the built-in "
                       "corpus is byte-level");
    }
    dataset = std::make_unique<TokenDataset>(
        o.data.empty() ? TokenDataset::builtin(kDefaultCorpusSeed, kDefaultCorpusBytes, o.val_fraction)
                       : TokenDataset::open(o.data, 0, o.val_fraction));
    dataset->require_seq_len(o.seq_len);
    token_bytes = token_bytes_for(dataset->vocab_size(), dataset->name(), o.tokenizer_model);
    o.model.vocab = static_cast<int>(dataset->vocab_size());
    validate_model_config(o.model);
  } catch (const UsageError& error) {
    data_error = error.what();
  }
  cli::agree_or_throw(comm, data_error.empty(), data_error);

  const int B = o.batch_size, T = o.seq_len, C = o.model.d_model;
  std::unique_ptr<TrainBackend> model = o.backend == Backend::cuda
                                            ? make_cuda_train_backend(o.model, comm, B, T)
                                            : make_cpu_train_backend(o.model, comm, B, T);
  const int layers = model->moe_layer_count();
  const int E = o.model.moe.routing.num_experts;
  int64_t dense_count = model->router_param_count();
  for (const ParamTensor& t : model->tensors()) dense_count += t.size;
  const int64_t expert_count_local = model->expert_param_count_local();
  int64_t expert_count = 0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&expert_count_local, &expert_count, 1, MPI_INT64_T, MPI_SUM, comm));

  // Everything a resumed run needs: parameters and AdamW moments of every group and the
  // balancing biases; the data position is the step (batches are a function of it).
  CheckpointState checkpoint;
  checkpoint.identity = run_identity(parsed, ranks);
  model->add_checkpoint_buffers(checkpoint);
  int first_step = 0;
  if (!o.resume.empty()) {
    first_step = static_cast<int>(load_checkpoint(o.resume, comm, checkpoint));
    model->sync_from_host();
    if (first_step >= o.steps) {
      throw UsageError("--resume: '" + o.resume + "' is at step " + std::to_string(first_step) +
                       ", the end of a " + std::to_string(o.steps) + "-step run; nothing to do");
    }
  }

  if (rank == 0) {
    cli::print_config_table(std::cout, "train", parsed);
    std::printf("\n# model: %d blocks (%zu MoE), d=%d, heads=%d, E=%d, k=%d, router %s/%s\n",
                o.model.layers, static_cast<size_t>(layers), C, o.model.heads, E, o.model.moe.routing.top_k,
                to_string(o.model.moe.routing.router), to_string(o.model.moe.router_arch));
    // Parameter table by kind (dense tensors grouped by the part of the model they belong to).
    long long embeddings = 0, attention = 0, norms = 0, dense_ffn = 0, routers = 0;
    for (const ParamTensor& t : model->tensors()) {
      if (t.name == "wte" || t.name == "wpe") embeddings += t.size;
      else if (t.name.find("attn.") != std::string::npos) attention += t.size;
      else if (t.name.find("mlp.") != std::string::npos) dense_ffn += t.size;
      else norms += t.size;
    }
    routers = static_cast<long long>(model->router_param_count());
    std::printf("# %-28s %12s\n", "parameters", "count");
    std::printf("# %-28s %12lld\n", "embeddings (wte tied, wpe)", embeddings);
    std::printf("# %-28s %12lld\n", "attention", attention);
    std::printf("# %-28s %12lld\n", "layer norms", norms);
    std::printf("# %-28s %12lld\n", "dense FFN blocks", dense_ffn);
    const std::string router_arch = has_learned_router(o.model.moe.routing.router)
                                        ? to_string(o.model.moe.router_arch)
                                        : "none: hash routing";
    std::printf("# %-28s %12lld\n", ("routers (" + router_arch + ")").c_str(), routers);
    std::printf("# %-28s %12lld  (%lld on each rank)\n", "experts", static_cast<long long>(expert_count),
                static_cast<long long>(expert_count_local));
    std::printf("# %-28s %12lld\n", "total", static_cast<long long>(dense_count + expert_count));
    std::printf("# data: %s (vocabulary %u), %lld train / %lld validation tokens; %d ranks x %d sequences x %d tokens per step\n",
                dataset->name().c_str(), dataset->vocab_size(), static_cast<long long>(dataset->train_size()),
                static_cast<long long>(dataset->val_size()), ranks, B, T);
  }

  TraceWriter trace(o.out, comm, TraceRunInfo{"train", parsed.command_line, parsed.resolved},
                    /*flush_every=*/0);
  auto scalar = [&](const std::string& path, const std::string& units, const std::string& what) {
    return trace.series(path, TraceType::float64, {}, TraceLayout::replicated, units, what);
  };
  TraceSeries s_step = scalar("/train/step", "", "step index (0-based)");
  TraceSeries s_loss = scalar("/train/loss", "nats", "mean training cross-entropy over all ranks");
  TraceSeries s_aux = scalar("/train/router_loss", "", "sum over MoE blocks of aux + z-loss, mean over ranks");
  TraceSeries s_lr = scalar("/train/lr", "", "learning rate");
  TraceSeries s_norm = scalar("/train/grad_norm", "", "global gradient norm before clipping");
  TraceSeries s_tps = scalar("/train/tokens_per_s", "tokens/s", "training tokens per second, all ranks");
  TraceSeries s_ms = scalar("/train/ms_per_step", "ms", "wall time of the step (slowest rank)");
  TraceSeries s_flops = scalar("/train/model_flops_per_s", "FLOP/s",
                               "tokens_per_s x model FLOPs per training token, all ranks");
  const double flops_per_token = model_flops_per_token(o.model, T);
  trace.set_attribute("/train", "model_flops_per_token", flops_per_token);
  TraceSeries e_step = scalar("/eval/step", "", "step of the evaluation");
  TraceSeries e_loss = scalar("/eval/loss", "nats", "mean validation cross-entropy");
  TraceSeries e_ppl = scalar("/eval/ppl", "", "exp(loss)");
  TraceSeries e_bpb = scalar("/eval/bpb", "bits/byte", "loss / ln 2 x tokens / bytes");
  TraceSeries e_bytes = scalar("/eval/bytes_per_token", "bytes",
                                "text bytes per predicted validation token (1 for byte-level data)");
  trace.set_attribute("/eval", "vocab_size", static_cast<int64_t>(dataset->vocab_size()));
  // What the options resolved to, typed, next to /config's strings as given: the balancing
  // that --balance auto chose, and the text and tokenizer the tokens came from.
  trace.set_attribute("/train", "balance", to_string(o.model.moe.routing.balance));
  trace.set_attribute("/train", "backend", model->name());
  if (o.backend == Backend::cuda) trace.set_attribute("/train", "device", model->device());
  const bool byte_level = dataset->vocab_size() == kByteVocabSize && o.tokenizer_model.empty();
  trace.set_attribute("/data", "source", dataset->name());
  trace.set_attribute("/data", "tokenizer", byte_level ? "byte" : "bpe");
  if (!byte_level) {
    trace.set_attribute("/data", "tokenizer_model", o.tokenizer_model.empty()
                                                        ? tokenizer_model_beside(o.data)
                                                        : o.tokenizer_model);
  }
  struct LayerSeries {
    TraceSeries drop, token_drop, cv, max_ratio, unused, router_entropy, gate_entropy, topk, aux, z;
    TraceSeries load, demand, bytes, exchange_ms;
  };
  std::vector<LayerSeries> layer_series;
  for (int l = 0; l < layers; ++l) {
    const std::string r = "/routing/layer_" + std::to_string(l) + "/";
    const std::string c = "/comm/layer_" + std::to_string(l) + "/";
    LayerSeries ls;
    ls.drop = scalar(r + "drop_rate", "fraction", "dropped / requested assignments");
    ls.token_drop = scalar(r + "token_drop_rate", "fraction", "tokens with no kept assignment");
    ls.cv = scalar(r + "load_cv", "", "std / mean of the expert loads");
    ls.max_ratio = scalar(r + "max_load_ratio", "", "max / mean load");
    ls.unused = scalar(r + "unused_experts", "experts", "experts with load 0");
    ls.router_entropy = scalar(r + "router_entropy", "nats", "mean H(p_t)");
    ls.gate_entropy = scalar(r + "gate_entropy", "nats", "mean entropy of the kept gates");
    ls.topk = scalar(r + "mean_topk_prob", "fraction", "mean p-mass of the selected experts");
    ls.aux = scalar(r + "aux_loss", "", "aux loss, mean over ranks");
    ls.z = scalar(r + "z_loss", "", "z-loss, mean over ranks");
    ls.load = trace.series(r + "load", TraceType::int64, {E}, TraceLayout::replicated,
                           "assignments", "kept assignments per expert, all ranks");
    ls.demand = trace.series(r + "demand", TraceType::int64, {E}, TraceLayout::replicated,
                             "assignments", "requested assignments per expert, all ranks");
    ls.bytes = trace.series(c + "bytes_sent", TraceType::int64, {kNumExchangePhases, ranks},
                            TraceLayout::per_rank, "bytes",
                            "[step, src, phase, dst]: token-row bytes src sent dst per exchange phase "
                            "(dispatch_forward, combine_forward, combine_backward, dispatch_backward)");
    ls.exchange_ms = trace.series(c + "exchange_ms", TraceType::float64, {kNumExchangePhases},
                                  TraceLayout::per_rank, "ms",
                                  "time in each exchange phase (dispatch_forward includes the "
                                  "ragged layout's count exchange)");
    layer_series.push_back(ls);
  }
  const char* phase_names[] = {"router", "permute", "exchange", "experts", "unpermute",
                               "dense", "allreduce", "optimizer", "trace_io"};
  constexpr int kPhases = 9;
  TraceSeries timing = trace.series("/timing/phase_ms", TraceType::float64, {kPhases},
                                    TraceLayout::per_rank, "ms",
                                    "per step and rank: router, permute, exchange, experts, unpermute, "
                                    "dense (rest of forward/backward), allreduce, optimizer, trace_io");
  {
    std::string names;
    for (const char* name : phase_names) names += std::string(names.empty() ? "" : ",") + name;
    trace.set_attribute("/timing", "phases", names);
  }
  TraceSeries sample_tokens = trace.series("/samples/tokens", TraceType::int32, {T},
                                           TraceLayout::replicated, "", "validation sequence (rank 0)");
  TraceSeries sample_experts = trace.series("/samples/experts", TraceType::int32,
                                            {static_cast<int64_t>(std::max(layers, 1)), T},
                                            TraceLayout::replicated, "",
                                            "first kept expert of each token per MoE block (-1 = dropped)");
  TraceSeries sample_step = scalar("/samples/step", "", "step of the sample");

  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  const BatchSlice slice{rank, ranks, B, T};
  std::vector<RoutingStats> stats(layers);
  // Per-step rows of the /comm series, allocated once.
  std::vector<int64_t> bytes(static_cast<size_t>(kNumExchangePhases) * ranks);
  std::vector<double> exchange_ms(kNumExchangePhases);
  double clock_total = 0.0, step_ms_total = 0.0;
  double phase_total[kPhases] = {};  // this rank's seconds per phase over the run

  auto evaluate = [&](int step) {
    double loss_sum = 0.0;      // sum over batches of the mean loss per token (nats)
    double target_bytes = 0.0;  // text bytes of the predicted tokens
    std::vector<RoutingStats> eval_stats(layers);
    for (auto& s : eval_stats) s.reset(E);
    for (int b = 0; b < o.eval_batches; ++b) {
      dataset->val_batch(inputs.data(), targets.data(), slice, b);
      loss_sum += model->forward(inputs.data(), targets.data(), B, T);
      for (int32_t target : targets) target_bytes += token_bytes[target];
      for (int l = 0; l < layers; ++l) {
        routing_stats_add(eval_stats[l], model->plan(l), model->logits(l),
                          model->moe_config(l).routing);
      }
      if (b == 0) {  // the sample: rank 0's first validation sequence and its experts
        std::vector<int32_t> experts(static_cast<size_t>(std::max(layers, 1)) * T, -1);
        for (int l = 0; l < layers; ++l) {
          const RoutingPlan& plan = model->plan(l);
          for (int t = 0; t < T; ++t) {
            for (int s = 0; s < plan.slots; ++s) {
              const int64_t entry = static_cast<int64_t>(t) * plan.slots + s;
              if (plan.kept[entry]) {
                experts[l * T + t] = plan.expert[entry];
                break;
              }
            }
          }
        }
        MOEBENCH_MPI_CHECK(MPI_Bcast(experts.data(), static_cast<int>(experts.size()), MPI_INT32_T, 0, comm));
        std::vector<int32_t> tokens(inputs.begin(), inputs.begin() + T);
        MOEBENCH_MPI_CHECK(MPI_Bcast(tokens.data(), T, MPI_INT32_T, 0, comm));
        const double at = step;
        sample_step.append(&at);
        sample_tokens.append(tokens.data());
        sample_experts.append(experts.data());
      }
    }
    double sums[2] = {loss_sum, target_bytes}, global[2] = {};
    MOEBENCH_MPI_CHECK(MPI_Allreduce(sums, global, 2, MPI_DOUBLE, MPI_SUM, comm));
    const double tokens = static_cast<double>(ranks) * o.eval_batches * B * T;
    const double loss = global[0] / (static_cast<double>(ranks) * o.eval_batches);
    // Total nats over the predicted tokens / ln 2 / their text bytes (= loss / ln 2 for bytes).
    const double bytes_per_token = std::max(global[1], 1.0) / tokens;
    const double bpb = loss / std::log(2.0) / bytes_per_token;
    const double ppl = std::exp(loss), at = step;
    e_step.append(&at);
    e_loss.append(&loss);
    e_ppl.append(&ppl);
    e_bpb.append(&bpb);
    e_bytes.append(&bytes_per_token);
    for (auto& s : eval_stats) routing_stats_allreduce(s, comm);
    if (rank == 0) {
      std::printf("eval  step %5d | val loss %.4f | ppl %.3f | %.4f bits/byte", step, loss, ppl, bpb);
      if (layers > 0) {
        const RoutingMetrics m = routing_metrics(eval_stats[0]);
        std::printf(" | block0 drop %.3f cv %.3f", m.drop_rate, m.load_cv);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    return std::make_pair(loss, bpb);
  };

  std::pair<double, double> last_eval{0.0, 0.0};
  const double run_start = MPI_Wtime();
  if (rank == 0 && first_step > 0) {
    std::printf("# resumed from %s at step %d\n", o.resume.c_str(), first_step);
  }
  for (int step = first_step; step < o.steps; ++step) {
    MOEBENCH_MPI_CHECK(MPI_Barrier(comm));
    const double step_start = MPI_Wtime();
    double phase[kPhases] = {};
    model->reset_counters();
    const double lr = learning_rate_at(step, o.steps, o.warmup, o.lr, o.min_lr_ratio);
    dataset->train_batch(inputs.data(), targets.data(), slice, step, o.seed);
    const double compute_start = MPI_Wtime();
    const float loss = model->forward(inputs.data(), targets.data(), B, T);
    const float router_loss = model->aux_loss();
    model->backward();
    const double compute_s = MPI_Wtime() - compute_start;

    // The replicated gradients averaged over the ranks and the global norm, then AdamW with
    // the clip (train_backend.hpp).
    double t0 = MPI_Wtime();
    const double grad_norm = model->reduce_gradients();
    phase[6] = MPI_Wtime() - t0;

    t0 = MPI_Wtime();
    const float clip = (o.grad_clip > 0.0 && grad_norm > o.grad_clip)
                           ? static_cast<float>(o.grad_clip / grad_norm) : 1.0f;
    model->optimizer_step(lr, o.weight_decay, clip, step + 1);
    phase[7] = MPI_Wtime() - t0;

    // Metrics of this step.
    double losses[2] = {loss, router_loss};
    MOEBENCH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, losses, 2, MPI_DOUBLE, MPI_SUM, comm));
    losses[0] /= ranks;
    losses[1] /= ranks;
    double moe_s = 0.0;
    for (int l = 0; l < layers; ++l) {
      stats[l].reset(E);
      routing_stats_add(stats[l], model->plan(l), model->logits(l), model->moe_config(l).routing);
      routing_stats_allreduce(stats[l], comm);
      const DispatchTimings dt = model->dispatch_timings(l);
      const MoELayerTimings lt = model->layer_timings(l);
      phase[0] += lt.router;
      phase[1] += dt.permute;
      phase[2] += dt.count_exchange;
      for (double x : dt.exchange) phase[2] += x;
      phase[3] += lt.experts;
      phase[4] += dt.unpermute;
    }
    for (int p = 0; p < 5; ++p) moe_s += phase[p];
    phase[5] = std::max(0.0, compute_s - moe_s);

    t0 = MPI_Wtime();
    const double step_index = step;
    s_step.append(&step_index);
    s_loss.append(&losses[0]);
    s_aux.append(&losses[1]);
    s_lr.append(&lr);
    s_norm.append(&grad_norm);
    for (int l = 0; l < layers; ++l) {
      const RoutingMetrics m = routing_metrics(stats[l]);
      LayerSeries& ls = layer_series[l];
      const double unused = m.unused_experts;
      ls.drop.append(&m.drop_rate);
      ls.token_drop.append(&m.token_drop_rate);
      ls.cv.append(&m.load_cv);
      ls.max_ratio.append(&m.max_load_ratio);
      ls.unused.append(&unused);
      ls.router_entropy.append(&m.router_entropy);
      ls.gate_entropy.append(&m.gate_entropy);
      ls.topk.append(&m.mean_topk_prob);
      ls.aux.append(&m.aux_loss);
      ls.z.append(&m.z_loss);
      ls.load.append(stats[l].load.data());
      ls.demand.append(stats[l].demand.data());
      const DispatchTimings dt = model->dispatch_timings(l);
      const std::vector<std::vector<int64_t>>& sent = model->bytes_sent(l);
      for (int p = 0; p < kNumExchangePhases; ++p) {
        for (int d = 0; d < ranks; ++d) bytes[p * ranks + d] = sent[p][d];
        exchange_ms[p] = 1e3 * dt.exchange[p];
      }
      // The ragged layout's count exchange opens the dispatch: it belongs to that phase (as
      // in capacity's exchange_ms), so the phases add up to /timing/phase_ms "exchange".
      exchange_ms[0] += 1e3 * dt.count_exchange;
      ls.bytes.append(bytes.data());
      ls.exchange_ms.append(exchange_ms.data());
    }
    if ((step + 1) % o.trace_flush == 0) trace.flush();
    phase[8] = MPI_Wtime() - t0;
    double phase_ms[kPhases];
    for (int p = 0; p < kPhases; ++p) {
      phase_ms[p] = 1e3 * phase[p];
      phase_total[p] += phase[p];
    }
    timing.append(phase_ms);

    double step_s = MPI_Wtime() - step_start;
    MOEBENCH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &step_s, 1, MPI_DOUBLE, MPI_MAX, comm));
    const double tokens_per_s = static_cast<double>(ranks) * B * T / step_s;
    const double step_ms = 1e3 * step_s;
    const double flops_per_s = tokens_per_s * flops_per_token;
    s_tps.append(&tokens_per_s);
    s_ms.append(&step_ms);
    s_flops.append(&flops_per_s);
    clock_total += step_s;
    step_ms_total += step_ms;

    if (rank == 0 && ((step + 1) % o.log_every == 0 || step == 0)) {
      const double eta = (MPI_Wtime() - run_start) / (step + 1 - first_step) * (o.steps - step - 1);
      std::printf("step %5d/%d | loss %.4f | lr %.2e | %.1f ms | %.0f tok/s", step + 1, o.steps,
                  losses[0], lr, step_ms, tokens_per_s);
      if (layers > 0) {
        const RoutingMetrics m = routing_metrics(stats[0]);
        std::printf(" | drop %.3f | cv %.3f", m.drop_rate, m.load_cv);
      }
      std::printf(" | ETA %.0fs\n", eta);
      std::fflush(stdout);
    }
    if ((step + 1) % o.eval_every == 0 && step + 1 < o.steps) last_eval = evaluate(step + 1);
    if (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0) {
      // One directory per checkpoint, <checkpoint>/step_<N> (resume from any of them).
      checkpoint.step = step + 1;
      std::string error;
      if (rank == 0 && ::mkdir(o.checkpoint.c_str(), 0755) != 0 && errno != EEXIST) {
        error = "cannot create checkpoint directory '" + o.checkpoint + "': " + std::strerror(errno) +
                " (pass another --checkpoint)";
      }
      cli::agree_or_throw(comm, error.empty(), error);
      const std::string path = o.checkpoint + "/step_" + std::to_string(step + 1);
      model->sync_to_host();
      save_checkpoint(path, comm, checkpoint);
      if (rank == 0) std::printf("# checkpoint: %s\n", path.c_str());
    }
  }
  last_eval = evaluate(o.steps);
  trace.set_attribute("/train", "complete", static_cast<int64_t>(1));
  trace.set_attribute("/eval", "final_loss", last_eval.first);
  trace.set_attribute("/eval", "final_bpb", last_eval.second);
  trace.close();
  if (rank == 0) {
    const double tokens = static_cast<double>(o.steps - first_step) * ranks * B * T;
    std::printf("\n# done: %d steps, %.0f tokens in %.1f s (%.0f tokens/s, model %.2f GFLOP/s = %.2f per rank)\n",
                o.steps - first_step, tokens, clock_total, tokens / clock_total,
                1e-9 * flops_per_token * tokens / clock_total,
                1e-9 * flops_per_token * tokens / clock_total / ranks);
    std::printf("# final validation: loss %.4f, perplexity %.3f, %.4f bits/byte\n", last_eval.first,
                std::exp(last_eval.first), last_eval.second);
    double accounted = 0.0;
    for (double x : phase_total) accounted += x;
    std::printf("# where rank 0's time went:");
    for (int p = 0; p < kPhases; ++p) {
      std::printf(" %s %.0f%%", phase_names[p], 100.0 * phase_total[p] / clock_total);
    }
    std::printf(", other (waiting, data, metrics) %.0f%%\n", 100.0 * (clock_total - accounted) / clock_total);
    std::printf("# trace: %s\n", o.out.c_str());
  }
  return 0;
}

}  // namespace moebench
