// Writes one case of the tiny MoE transformer for the PyTorch reference
// (tests/model/torch_reference.py, run by tests/cli/torch_reference.sh): the configuration,
// the inputs, every parameter, the routing plan of each MoE layer, and what the C++ model
// computes from them (logits, losses and every gradient). Not a gtest: a small program.
//
//   usage: export_model_case OUT.bin [--router R] [--router-arch A] [--top-k K]
//          [--capacity-factor CF] [--temperature TAU] [--renorm-after-drop 0|1]
//          [--hard-gates 0|1] [--drop-policy position|prob] [--ec-max-per-token N]
//          [--balance auto|aux|none] [--aux-loss-coeff A] [--z-loss B] [--seed S]
//
// The model is the one of tests/model/test_model.cpp, a little larger: V 32, C 16, 3 blocks
// (0 and 2 MoE, 1 dense: moe_every 2), 2 heads, E 4 experts of width 12, router width 8,
// B 2 x T 8 tokens (max_seq_len 10, so two rows of wpe are unused); dense weights perturbed
// by N(0, 0.3) so that gradients stand well above fp32 noise. --seed S (default 5) seeds the
// model's initialisation; the perturbation, tokens and targets use S + 4.
//
// File format (little-endian; every record self-describing):
//   magic "MOEBREF1" (8 bytes), uint32 version (1), uint32 record count, then per record:
//   uint32 name length, name bytes (no terminator), uint32 dtype (0 float32, 1 int32,
//   2 float64, 3 UTF-8 text), uint32 ndim, int64 dims[ndim], the data row-major
//   (product of dims elements; ndim 0 = one scalar; text: dims [bytes]).
//
// Records (N = B*T rows, E experts, S plan slots per token, h router width, H expert width):
//   config.*                      scalars and texts of the case (router, router_arch, ...)
//   tokens, targets               int32 [B, T]
//   <name>                        every dense tensor of MoETransformer::tensors(), shaped
//                                 (weights [in, out] as layers.hpp stores them; wte [V, C])
//   blockI.moe.router.<w>         router parameters of MoE block I (router_net.hpp order):
//                                 linear: w [C, E]; mlp: w1 [C, h], w2 [h, E];
//                                 mlp_hadamard: wa [C, h], wb [C, h], wo [h, E]
//   blockI.moe.experts.<w>        expert parameters (experts.hpp: one allocation, in the
//                                 order w1 [E, C, H], b1 [E, H], w2 [E, H, C], b2 [E, C])
//   blockI.moe.plan.*             routing plan: expert, kept, position int32 [N, S], gate
//                                 float32 [N, S], demand and load int32 [E], capacity
//   blockI.moe.router_logits      float32 [N, E] (learned routers only)
//   blockI.moe.aux_loss, .z_loss  float32 scalars of the layer
//   logits [B, T, V], loss (mean CE), aux_loss (sum over MoE blocks of aux + z-loss)
//   grad.<parameter name>         the gradient of loss + aux_loss for every parameter above
#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/model.hpp"
#include "moebench/random.hpp"

namespace moebench {
namespace {

constexpr int kBatch = 2;   // B
constexpr int kSeqLen = 8;  // T

enum class DType : uint32_t { float32 = 0, int32 = 1, float64 = 2, text = 3 };

// Collects records in memory; write() puts the header and all of them into one file.
class RecordWriter {
 public:
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& dims,
           const void* data, size_t element_bytes) {
    int64_t count = 1;
    for (int64_t d : dims) count *= d;
    put<uint32_t>(static_cast<uint32_t>(name.size()));
    bytes_.insert(bytes_.end(), name.begin(), name.end());
    put<uint32_t>(static_cast<uint32_t>(dtype));
    put<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (int64_t d : dims) put<int64_t>(d);
    const auto* p = static_cast<const char*>(data);
    bytes_.insert(bytes_.end(), p, p + static_cast<size_t>(count) * element_bytes);
    ++records_;
  }
  void floats(const std::string& name, const float* data, const std::vector<int64_t>& dims) {
    add(name, DType::float32, dims, data, sizeof(float));
  }
  template <typename Int>
  void ints(const std::string& name, const Int* data, const std::vector<int64_t>& dims) {
    int64_t count = 1;
    for (int64_t d : dims) count *= d;
    std::vector<int32_t> values(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) values[i] = static_cast<int32_t>(data[i]);
    add(name, DType::int32, dims, values.data(), sizeof(int32_t));
  }
  void scalar(const std::string& name, int32_t value) { add(name, DType::int32, {}, &value, 4); }
  void scalar(const std::string& name, float value) { add(name, DType::float32, {}, &value, 4); }
  void scalar(const std::string& name, double value) { add(name, DType::float64, {}, &value, 8); }
  void text(const std::string& name, const std::string& value) {
    add(name, DType::text, {static_cast<int64_t>(value.size())}, value.data(), 1);
  }

  void write(const std::string& path) const {
    std::ofstream out(path, std::ios::binary);
    const uint32_t version = 1, records = records_;
    out.write("MOEBREF1", 8);
    out.write(reinterpret_cast<const char*>(&version), 4);
    out.write(reinterpret_cast<const char*>(&records), 4);
    out.write(bytes_.data(), static_cast<std::streamsize>(bytes_.size()));
    if (!out) throw Error("cannot write " + path);
  }

 private:
  template <typename Value>
  void put(Value value) {
    char raw[sizeof(Value)];
    std::memcpy(raw, &value, sizeof(Value));
    bytes_.insert(bytes_.end(), raw, raw + sizeof(Value));
  }
  std::vector<char> bytes_;
  uint32_t records_ = 0;
};

struct CaseOptions {
  std::string out;
  std::string router = "softk", router_arch = "linear", drop_policy = "position";
  std::string balance = "auto";
  int top_k = 2;
  double capacity_factor = 0.75;
  float temperature = 1.0f;
  int renorm_after_drop = 0, hard_gates = 0, ec_max_per_token = -1;
  float aux_loss_coeff = 0.1f;
  float z_loss = 0.01f;
  uint64_t seed = 5;
};

CaseOptions parse_options(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {
    throw UsageError("usage: export_model_case OUT.bin [--router R] [--router-arch A] ...");
  }
  CaseOptions o;
  o.out = argv[1];
  for (int i = 2; i < argc; i += 2) {
    const std::string key = argv[i];
    if (i + 1 >= argc) throw UsageError(key + " needs a value");
    const std::string value = argv[i + 1];
    if (key == "--router") o.router = value;
    else if (key == "--router-arch") o.router_arch = value;
    else if (key == "--drop-policy") o.drop_policy = value;
    else if (key == "--balance") o.balance = value;
    else if (key == "--top-k") o.top_k = std::stoi(value);
    else if (key == "--capacity-factor") o.capacity_factor = std::stod(value);
    else if (key == "--temperature") o.temperature = std::stof(value);
    else if (key == "--renorm-after-drop") o.renorm_after_drop = std::stoi(value);
    else if (key == "--hard-gates") o.hard_gates = std::stoi(value);
    else if (key == "--ec-max-per-token") o.ec_max_per_token = std::stoi(value);
    else if (key == "--aux-loss-coeff") o.aux_loss_coeff = std::stof(value);
    else if (key == "--z-loss") o.z_loss = std::stof(value);
    else if (key == "--seed") o.seed = std::stoull(value);
    else throw UsageError("unknown option " + key);
  }
  return o;
}

ModelConfig model_config(const CaseOptions& o) {
  ModelConfig config;
  config.vocab = 32;
  config.max_seq_len = 10;
  config.d_model = 16;
  config.layers = 3;
  config.heads = 2;
  config.ffn_hidden = 24;
  config.moe_every = 2;  // blocks 0 and 2 MoE, block 1 dense
  RoutingConfig& r = config.moe.routing;
  r.router = parse_router_kind("--router", o.router);
  r.num_experts = 4;
  r.top_k = o.top_k;
  r.capacity_factor = o.capacity_factor;
  r.drop_policy = parse_drop_policy("--drop-policy", o.drop_policy);
  r.temperature = o.temperature;
  r.renorm_after_drop = o.renorm_after_drop != 0;
  r.hard_gates = o.hard_gates != 0;
  r.ec_max_per_token = o.ec_max_per_token;
  r.balance = parse_balance_kind("--balance", o.balance, r.router);
  r.aux_loss_coeff = o.aux_loss_coeff;
  r.z_loss_coeff = has_learned_router(r.router) ? o.z_loss : 0.0f;
  config.moe.router_arch = parse_router_arch("--router-arch", o.router_arch);
  config.moe.router_hidden = 8;
  config.moe.d_hidden = 12;
  config.seed = o.seed;
  return config;
}

// Shape of a dense tensor from its name (model.cpp's naming); checked against its size.
std::vector<int64_t> dense_shape(const ParamTensor& t, const ModelConfig& c) {
  const int64_t C = c.d_model, V = c.vocab, H = c.ffn_hidden, maxT = c.max_seq_len;
  auto ends_with = [&](const char* suffix) {
    const std::string s = suffix;
    return t.name.size() >= s.size() && t.name.compare(t.name.size() - s.size(), s.size(), s) == 0;
  };
  std::vector<int64_t> shape;
  if (t.name == "wte") shape = {V, C};
  else if (t.name == "wpe") shape = {maxT, C};
  else if (ends_with("attn.qkv.weight")) shape = {C, 3 * C};
  else if (ends_with("attn.qkv.bias")) shape = {3 * C};
  else if (ends_with("attn.proj.weight")) shape = {C, C};
  else if (ends_with("mlp.fc1.weight")) shape = {C, H};
  else if (ends_with("mlp.fc1.bias")) shape = {H};
  else if (ends_with("mlp.fc2.weight")) shape = {H, C};
  else shape = {C};  // LayerNorm weights and biases, proj.bias, fc2.bias
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  MOEBENCH_CHECK(count == t.size, "unexpected size of dense tensor " + t.name);
  return shape;
}

// Named views (offset, shape) of a router parameter block (router_net.hpp order).
struct Piece {
  std::string name;
  int64_t offset;
  std::vector<int64_t> shape;
};
std::vector<Piece> router_pieces(const RouterNetShape& s) {
  const int64_t d = s.d_model, h = s.hidden, E = s.num_experts;
  switch (s.arch) {
    case RouterArch::linear: return {{"w", 0, {d, E}}};
    case RouterArch::mlp: return {{"w1", 0, {d, h}}, {"w2", d * h, {h, E}}};
    case RouterArch::mlp_hadamard:
      return {{"wa", 0, {d, h}}, {"wb", d * h, {d, h}}, {"wo", 2 * d * h, {h, E}}};
  }
  return {};
}
std::vector<Piece> expert_pieces(const ExpertShape& s) {
  const int64_t E = s.num_experts, d = s.d_model, h = s.d_hidden;
  return {{"w1", 0, {E, d, h}},
          {"b1", E * d * h, {E, h}},
          {"w2", E * d * h + E * h, {E, h, d}},
          {"b2", 2 * E * d * h + E * h, {E, d}}};
}

void export_case(const CaseOptions& o) {
  const ModelConfig config = model_config(o);
  const int B = kBatch, T = kSeqLen, N = B * T;
  const uint64_t data_seed = o.seed + 4;
  MoETransformer model(config, MPI_COMM_SELF, B, T);
  // As in test_model.cpp: larger weights than the 0.02 init so gradients are not tiny.
  for (size_t i = 0; i < model.dense_params().size(); ++i) {
    model.dense_params()[i] += static_cast<float>(0.3 * random_normal(data_seed, 1, i));
  }
  std::vector<int32_t> tokens(N), targets(N);
  for (int i = 0; i < N; ++i) {
    tokens[i] = static_cast<int32_t>(random_bits(data_seed, 2, i) % static_cast<uint64_t>(config.vocab));
    targets[i] = static_cast<int32_t>(random_bits(data_seed, 3, i) % static_cast<uint64_t>(config.vocab));
  }
  const float loss = model.forward(tokens.data(), targets.data(), B, T);
  const float aux_loss = model.aux_loss();
  model.backward();

  RecordWriter w;
  const RoutingConfig& r = config.moe.routing;
  w.text("config.router", o.router);
  w.text("config.router_arch", o.router_arch);
  w.text("config.balance", to_string(r.balance));
  w.scalar("config.vocab", config.vocab);
  w.scalar("config.max_seq_len", config.max_seq_len);
  w.scalar("config.d_model", config.d_model);
  w.scalar("config.layers", config.layers);
  w.scalar("config.heads", config.heads);
  w.scalar("config.ffn_hidden", config.ffn_hidden);
  w.scalar("config.moe_every", config.moe_every);
  w.scalar("config.num_experts", r.num_experts);
  w.scalar("config.top_k", r.top_k);
  w.scalar("config.router_hidden", config.moe.router_hidden);
  w.scalar("config.expert_hidden", config.moe.d_hidden);
  w.scalar("config.batch", B);
  w.scalar("config.seq_len", T);
  w.scalar("config.capacity_factor", r.capacity_factor);
  w.scalar("config.temperature", r.temperature);
  w.scalar("config.renorm_after_drop", static_cast<int32_t>(r.renorm_after_drop));
  w.scalar("config.hard_gates", static_cast<int32_t>(r.hard_gates));
  w.scalar("config.aux_loss_coeff", r.balance == BalanceKind::aux ? r.aux_loss_coeff : 0.0f);
  w.scalar("config.z_loss_coeff", r.z_loss_coeff);
  w.scalar("config.seed", static_cast<int32_t>(o.seed));
  w.ints("tokens", tokens.data(), {B, T});
  w.ints("targets", targets.data(), {B, T});

  // Parameters and their gradients.
  for (const ParamTensor& t : model.tensors()) {
    const std::vector<int64_t> shape = dense_shape(t, config);
    w.floats(t.name, model.dense_params().data() + t.offset, shape);
    w.floats("grad." + t.name, model.dense_grads().data() + t.offset, shape);
  }
  std::vector<MoELayer*> layers = model.moe_layers();
  size_t next_layer = 0;
  for (int block = 0; block < config.layers; ++block) {
    if (!config.is_moe_block(block)) continue;
    MoELayer& layer = *layers.at(next_layer++);
    const std::string p = "block" + std::to_string(block) + ".moe.";
    if (has_learned_router(r.router)) {
      for (const Piece& piece : router_pieces(layer.router_shape())) {
        w.floats(p + "router." + piece.name, layer.router_params().data() + piece.offset, piece.shape);
        w.floats("grad." + p + "router." + piece.name, layer.router_grads().data() + piece.offset,
                 piece.shape);
      }
      w.floats(p + "router_logits", layer.logits(), {N, r.num_experts});
    }
    for (const Piece& piece : expert_pieces(layer.expert_shape())) {
      w.floats(p + "experts." + piece.name, layer.expert_params().data() + piece.offset, piece.shape);
      w.floats("grad." + p + "experts." + piece.name, layer.expert_grads().data() + piece.offset,
               piece.shape);
    }
    const RoutingPlan& plan = layer.plan();
    const std::vector<int64_t> entries = {N, plan.slots};
    w.ints(p + "plan.expert", plan.expert.data(), entries);
    w.ints(p + "plan.kept", plan.kept.data(), entries);
    w.ints(p + "plan.position", plan.position.data(), entries);
    w.floats(p + "plan.gate", plan.gate.data(), entries);
    w.ints(p + "plan.demand", plan.demand.data(), {r.num_experts});
    w.ints(p + "plan.load", plan.load.data(), {r.num_experts});
    w.scalar(p + "plan.capacity", static_cast<int32_t>(plan.capacity));
    w.scalar(p + "aux_loss", plan.aux_loss);
    w.scalar(p + "z_loss", plan.z_loss);
  }
  w.floats("logits", model.logits(), {B, T, config.vocab});
  w.scalar("loss", loss);
  w.scalar("aux_loss", aux_loss);
  w.write(o.out);
}

}  // namespace
}  // namespace moebench

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 0;
  try {
    moebench::export_case(moebench::parse_options(argc, argv));
  } catch (const std::exception& error) {
    std::cerr << "export_model_case: " << error.what() << "\n";
    status = 1;
  }
  MPI_Finalize();
  return status;
}
