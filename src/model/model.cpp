// The MoE transformer: forward and backward over the layers of layers.hpp and MoELayer.
// See model.hpp.
#include "moebench/model.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "moebench/check.hpp"
#include "moebench/layers.hpp"
#include "moebench/random.hpp"

namespace moebench {

// One transformer block: where its parameters are in the dense buffers, and its activations.
struct MoETransformer::Block : BlockLayout {
  std::unique_ptr<MoELayer> moe_layer;  // MoE blocks
  // Activations of the last forward pass (B, T, C, NH, H of the model).
  std::vector<float> ln1, ln1_mean, ln1_rstd;  // [B,T,C], [B,T], [B,T]
  std::vector<float> qkv;                      // [B, T, 3C]
  std::vector<float> atty;                     // [B, T, C] attention output before proj
  std::vector<float> att;                      // [B, NH, T, T]
  std::vector<float> proj;                     // [B, T, C]
  std::vector<float> mid;                      // [B, T, C] x + attention branch
  std::vector<float> ln2, ln2_mean, ln2_rstd;  // [B,T,C], [B,T], [B,T]
  std::vector<float> ffn;                      // [B, T, C]
  std::vector<float> hidden_pre, hidden_act;   // [B, T, H] dense FFN
  std::vector<float> out;                      // [B, T, C] block output
};

void validate_model_config(const ModelConfig& c) {
  std::ostringstream message;
  if (c.d_model < 1 || c.layers < 1 || c.heads < 1 || c.ffn_hidden < 1 || c.vocab < 2) {
    message << "--d-model, --layers, --heads and the FFN width must be >= 1";
  } else if (c.d_model % c.heads != 0) {
    message << "--d-model " << c.d_model << " is not divisible by --heads " << c.heads
            << " (each head takes d_model / heads channels; pick heads that divide d_model)";
  } else if (c.moe_every < 1) {
    message << "--moe-every must be >= 1 (1 = every block is MoE)";
  } else if (c.max_seq_len < 1) {
    message << "--seq-len must be >= 1";
  } else {
    return;
  }
  throw UsageError(message.str());
}

double model_flops_per_token(const ModelConfig& c, int seq_len) {
  const double C = c.d_model, V = c.vocab, T = seq_len;
  const MoELayerConfig& moe = c.moe;
  const double router = static_cast<double>(router_param_count(
      RouterNetShape{moe.router_arch, c.d_model, moe.router_hidden, moe.routing.num_experts}));
  const double experts = static_cast<double>(moe.routing.top_k) * 2.0 * C * moe.d_hidden;
  double weights = C * V;  // the tied head
  for (int block = 0; block < c.layers; ++block) {
    weights += 4.0 * C * C + (c.is_moe_block(block) ? router + experts : 2.0 * C * c.ffn_hidden);
  }
  const double attention = c.layers * 2.0 * 2.0 * C * (T + 1.0) / 2.0;
  return 3.0 * (2.0 * weights + attention);
}

DenseLayout dense_layout(const ModelConfig& config) {
  validate_model_config(config);
  const int64_t C = config.d_model, V = config.vocab, H = config.ffn_hidden;
  DenseLayout layout;
  auto add = [&](const std::string& name, int64_t size, bool decay) {
    const int64_t offset = layout.total;
    layout.tensors.push_back({name, offset, size, decay});
    layout.total += size;
    return offset;
  };
  layout.wte = add("wte", V * C, true);
  layout.wpe = add("wpe", static_cast<int64_t>(config.max_seq_len) * C, true);
  for (int b = 0; b < config.layers; ++b) {
    BlockLayout block;
    const std::string p = "block" + std::to_string(b) + ".";
    block.moe = config.is_moe_block(b);
    block.ln1_w = add(p + "ln1.weight", C, false);
    block.ln1_b = add(p + "ln1.bias", C, false);
    block.qkv_w = add(p + "attn.qkv.weight", C * 3 * C, true);
    block.qkv_b = add(p + "attn.qkv.bias", 3 * C, false);
    block.proj_w = add(p + "attn.proj.weight", C * C, true);
    block.proj_b = add(p + "attn.proj.bias", C, false);
    block.ln2_w = add(p + "ln2.weight", C, false);
    block.ln2_b = add(p + "ln2.bias", C, false);
    if (!block.moe) {
      block.fc1_w = add(p + "mlp.fc1.weight", C * H, true);
      block.fc1_b = add(p + "mlp.fc1.bias", H, false);
      block.fc2_w = add(p + "mlp.fc2.weight", H * C, true);
      block.fc2_b = add(p + "mlp.fc2.bias", C, false);
    }
    layout.blocks.push_back(block);
  }
  layout.lnf_w = add("lnf.weight", C, false);
  layout.lnf_b = add("lnf.bias", C, false);
  return layout;
}

void dense_params_init(float* params, const DenseLayout& layout, const ModelConfig& config) {
  std::fill(params, params + layout.total, 0.0f);
  const double residual_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(config.layers));
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    const ParamTensor& t = layout.tensors[i];
    float* data = params + t.offset;
    const bool norm_weight = t.name.find("ln") != std::string::npos &&
                             t.name.find(".weight") != std::string::npos;
    if (norm_weight) {
      std::fill(data, data + t.size, 1.0f);
    } else if (t.decay) {
      const bool into_residual = t.name.find("proj.weight") != std::string::npos ||
                                 t.name.find("fc2.weight") != std::string::npos;
      const double std = 0.02 * (into_residual ? residual_scale : 1.0);
      for (int64_t j = 0; j < t.size; ++j) {
        data[j] = static_cast<float>(std * random_normal(config.seed, 0x6d6f64656cULL + i, j));
      }
    }
  }
}

std::vector<uint8_t> dense_decay_mask(const std::vector<ParamTensor>& tensors) {
  const int64_t total = tensors.empty() ? 0 : tensors.back().offset + tensors.back().size;
  std::vector<uint8_t> mask(static_cast<size_t>(total), 0);
  for (const ParamTensor& t : tensors) {
    if (t.decay) std::fill(mask.begin() + t.offset, mask.begin() + t.offset + t.size, 1);
  }
  return mask;
}

MoELayerConfig moe_block_config(const ModelConfig& config, int block) {
  MoELayerConfig moe = config.moe;
  moe.d_model = config.d_model;
  moe.seed = config.seed + 1000003ULL * static_cast<uint64_t>(block + 1);
  return moe;
}

MoETransformer::MoETransformer(const ModelConfig& config, MPI_Comm comm, int max_batch,
                               int max_seq_len)
    : config_(config), comm_(comm), max_batch_(max_batch), max_T_(max_seq_len) {
  const DenseLayout layout = dense_layout(config_);
  config_.moe.d_model = config_.d_model;
  const int64_t C = config_.d_model, V = config_.vocab, H = config_.ffn_hidden;
  tensors_ = layout.tensors;
  for (int b = 0; b < config_.layers; ++b) {
    auto block = std::make_unique<Block>();
    static_cast<BlockLayout&>(*block) = layout.blocks[b];
    if (block->moe) {
      block->moe_layer =
          std::make_unique<MoELayer>(moe_block_config(config_, b), comm, max_batch * max_seq_len);
    }
    blocks_.push_back(std::move(block));
  }
  dense_params_.assign(layout.total, 0.0f);
  dense_grads_.assign(layout.total, 0.0f);
  dense_params_init(dense_params_.data(), layout, config_);
  wte_ = dense_params_.data() + layout.wte;
  wpe_ = dense_params_.data() + layout.wpe;
  lnf_w_ = dense_params_.data() + layout.lnf_w;
  lnf_b_ = dense_params_.data() + layout.lnf_b;

  const int64_t N = static_cast<int64_t>(max_batch) * max_seq_len;
  for (auto& block : blocks_) {
    block->ln1.assign(N * C, 0.0f);
    block->ln1_mean.assign(N, 0.0f);
    block->ln1_rstd.assign(N, 0.0f);
    block->qkv.assign(N * 3 * C, 0.0f);
    block->atty.assign(N * C, 0.0f);
    block->att.assign(static_cast<int64_t>(max_batch) * config_.heads * max_seq_len * max_seq_len, 0.0f);
    block->proj.assign(N * C, 0.0f);
    block->mid.assign(N * C, 0.0f);
    block->ln2.assign(N * C, 0.0f);
    block->ln2_mean.assign(N, 0.0f);
    block->ln2_rstd.assign(N, 0.0f);
    block->ffn.assign(N * C, 0.0f);
    block->out.assign(N * C, 0.0f);
    if (!block->moe) {
      block->hidden_pre.assign(N * H, 0.0f);
      block->hidden_act.assign(N * H, 0.0f);
    }
  }
  x0_.assign(N * C, 0.0f);
  lnf_.assign(N * C, 0.0f);
  lnf_mean_.assign(N, 0.0f);
  lnf_rstd_.assign(N, 0.0f);
  logits_.assign(N * V, 0.0f);
  probs_.assign(N * V, 0.0f);
  losses_.assign(N, 0.0f);
  d_stream_.assign(N * C, 0.0f);
  d_lnf_.assign(N * C, 0.0f);
  d_ln_.assign(N * C, 0.0f);
  d_qkv_.assign(N * 3 * C, 0.0f);
  d_atty_.assign(N * C, 0.0f);
  d_hidden_.assign(N * H, 0.0f);
  attention_scratch_.assign(attention_backward_scratch_floats(max_batch, max_seq_len, config_.heads), 0.0f);
}

MoETransformer::~MoETransformer() = default;

float MoETransformer::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  MOEBENCH_CHECK(B <= max_batch_ && T <= max_T_ && T <= config_.max_seq_len,
                 "batch larger than the model was built for");
  B_ = B;
  T_ = T;
  tokens_ = tokens;
  targets_ = targets;
  const int C = config_.d_model, V = config_.vocab, NH = config_.heads, H = config_.ffn_hidden;
  const int N = B * T;
  const float* P = dense_params_.data();
  encoder_forward(x0_.data(), tokens, wte_, wpe_, B, T, C, V);
  const float* in = x0_.data();
  for (auto& block : blocks_) {
    Block& k = *block;
    layernorm_forward(k.ln1.data(), k.ln1_mean.data(), k.ln1_rstd.data(), in, P + k.ln1_w,
                      P + k.ln1_b, B, T, C);
    matmul_forward(k.qkv.data(), k.ln1.data(), P + k.qkv_w, P + k.qkv_b, N, C, 3 * C);
    attention_forward(k.atty.data(), k.att.data(), k.qkv.data(), B, T, C, NH);
    matmul_forward(k.proj.data(), k.atty.data(), P + k.proj_w, P + k.proj_b, N, C, C);
    residual_forward(k.mid.data(), in, k.proj.data(), static_cast<int64_t>(N) * C);
    layernorm_forward(k.ln2.data(), k.ln2_mean.data(), k.ln2_rstd.data(), k.mid.data(),
                      P + k.ln2_w, P + k.ln2_b, B, T, C);
    if (k.moe) {
      k.moe_layer->forward(k.ffn.data(), k.ln2.data(), tokens, N);
    } else {
      gelu_mlp_forward(k.ffn.data(), k.hidden_pre.data(), k.hidden_act.data(), k.ln2.data(),
                       P + k.fc1_w, P + k.fc1_b, P + k.fc2_w, P + k.fc2_b, N, C, H);
    }
    residual_forward(k.out.data(), k.mid.data(), k.ffn.data(), static_cast<int64_t>(N) * C);
    in = k.out.data();
  }
  layernorm_forward(lnf_.data(), lnf_mean_.data(), lnf_rstd_.data(), in, lnf_w_, lnf_b_, B, T, C);
  lm_head_forward(logits_.data(), lnf_.data(), wte_, N, C, V);
  crossentropy_softmax_forward(losses_.data(), probs_.data(), logits_.data(), targets, N, V);
  double sum = 0.0;
  for (int i = 0; i < N; ++i) sum += losses_[i];
  return static_cast<float>(sum / N);
}

void MoETransformer::backward() {
  const int B = B_, T = T_, C = config_.d_model, V = config_.vocab, NH = config_.heads,
            H = config_.ffn_hidden;
  const int N = B * T;
  const int64_t NC = static_cast<int64_t>(N) * C;
  const float* P = dense_params_.data();
  float* G = dense_grads_.data();
  float* dwte = G + (wte_ - P);
  float* dwpe = G + (wpe_ - P);
  std::fill(dense_grads_.begin(), dense_grads_.end(), 0.0f);  // the dense layers add into them
  // dlogits overwrites probs (mean CE, dloss = 1).
  crossentropy_softmax_backward(probs_.data(), probs_.data(), targets_, 1.0f, N, V);
  std::fill(d_lnf_.begin(), d_lnf_.begin() + NC, 0.0f);
  lm_head_backward(d_lnf_.data(), dwte, probs_.data(), lnf_.data(), wte_, N, C, V);
  std::fill(d_stream_.begin(), d_stream_.begin() + NC, 0.0f);
  const float* last = blocks_.back()->out.data();
  layernorm_backward(d_stream_.data(), G + (lnf_w_ - P), G + (lnf_b_ - P), d_lnf_.data(), last,
                     lnf_w_, lnf_mean_.data(), lnf_rstd_.data(), B, T, C);
  for (int b = static_cast<int>(blocks_.size()) - 1; b >= 0; --b) {
    Block& k = *blocks_[b];
    const float* in = b == 0 ? x0_.data() : blocks_[b - 1]->out.data();
    // out = mid + ffn(LN2(mid)); d_stream holds dL/d out.
    if (k.moe) {
      k.moe_layer->backward(d_ln_.data(), d_stream_.data());
    } else {
      gelu_mlp_backward(d_ln_.data(), G + k.fc1_w, G + k.fc1_b, G + k.fc2_w, G + k.fc2_b,
                        d_hidden_.data(), d_stream_.data(), k.ln2.data(), k.hidden_pre.data(),
                        k.hidden_act.data(), P + k.fc1_w, P + k.fc2_w, N, C, H);
    }
    // d_stream += LN2's part: it then holds dL/d mid. The residual's gradients are summed in
    // place, as the stream itself is.
    layernorm_backward(d_stream_.data(), G + k.ln2_w, G + k.ln2_b, d_ln_.data(), k.mid.data(),
                       P + k.ln2_w, k.ln2_mean.data(), k.ln2_rstd.data(), B, T, C);
    // mid = in + proj(attn(LN1(in))).
    std::fill(d_atty_.begin(), d_atty_.begin() + NC, 0.0f);
    matmul_backward(d_atty_.data(), G + k.proj_w, G + k.proj_b, d_stream_.data(), k.atty.data(),
                    P + k.proj_w, N, C, C);
    std::fill(d_qkv_.begin(), d_qkv_.begin() + 3 * NC, 0.0f);
    attention_backward(d_qkv_.data(), attention_scratch_.data(), d_atty_.data(), k.qkv.data(),
                       k.att.data(), B, T, C, NH);
    std::fill(d_ln_.begin(), d_ln_.begin() + NC, 0.0f);
    matmul_backward(d_ln_.data(), G + k.qkv_w, G + k.qkv_b, d_qkv_.data(), k.ln1.data(),
                    P + k.qkv_w, N, C, 3 * C);
    // d_stream += LN1's part: dL/d in.
    layernorm_backward(d_stream_.data(), G + k.ln1_w, G + k.ln1_b, d_ln_.data(), in, P + k.ln1_w,
                       k.ln1_mean.data(), k.ln1_rstd.data(), B, T, C);
  }
  encoder_backward(dwte, dwpe, d_stream_.data(), tokens_, B, T, C);
}

float MoETransformer::aux_loss() const {
  float sum = 0.0f;
  for (const auto& block : blocks_) {
    if (block->moe) sum += block->moe_layer->plan().aux_loss + block->moe_layer->plan().z_loss;
  }
  return sum;
}

std::vector<MoELayer*> MoETransformer::moe_layers() {
  std::vector<MoELayer*> layers;
  for (auto& block : blocks_) {
    if (block->moe) layers.push_back(block->moe_layer.get());
  }
  return layers;
}

int64_t MoETransformer::expert_param_count_local() const {
  int64_t total = 0;
  for (const auto& block : blocks_) {
    if (block->moe) total += static_cast<int64_t>(block->moe_layer->expert_params().size());
  }
  return total;
}

}  // namespace moebench
