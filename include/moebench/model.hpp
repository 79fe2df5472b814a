// The MoE transformer language model (DESIGN §2, issue "moebench train"): token and learned
// position embeddings, pre-LayerNorm blocks with causal multi-head attention and an FFN that
// is an MoE layer (every --moe-every-th block, starting with block 0) or a dense GELU MLP,
// a final LayerNorm and the tied output head, softmax cross-entropy averaged over positions.
//
//   x = wte[tokens] + wpe[t]
//   for each block:  x = x + proj(attn(LN1(x) Wqkv + bqkv)) ;  x = x + FFN(LN2(x))
//   logits = LN_f(x) wte^T ;  loss = mean CE(logits, targets) + sum over MoE blocks of aux + z
//
// Dense parameters (everything but the experts, routers included) are replicated: their
// gradients are this rank's and the trainer averages them over ranks. Expert parameters live
// on one rank (MoELayer). Every buffer is allocated once, in the constructor.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moebench/moe_layer.hpp"

namespace moebench {

struct ModelConfig {
  int vocab = 256;        // V
  int max_seq_len = 128;  // maximum T (rows of wpe)
  int d_model = 128;      // C
  int layers = 2;         // L
  int heads = 4;          // NH
  int ffn_hidden = 512;   // H of the dense FFN blocks
  int moe_every = 1;      // block i is MoE when i % moe_every == 0
  MoELayerConfig moe;     // routing, router, experts (moe.d_model is set to d_model)
  uint64_t seed = 1234;

  bool is_moe_block(int block) const { return block % moe_every == 0; }
};

// Checks the model's shape options (UsageError naming the option and the fix).
void validate_model_config(const ModelConfig& config);

// Model FLOPs of one training token (forward + backward = 3 x forward), the numerator of model
// FLOP utilisation: 2 FLOPs per weight a token meets in a matrix product -- attention
// projections (4 C^2), dense FFNs (2 C H), the router, k experts (2 C h each) of each MoE
// block, the tied head (C V) -- plus 2 x 2 x C x (T + 1) / 2 per block for causal attention
// scores and values (a token attends to (T + 1) / 2 positions on average). Nominal: dropped
// assignments count (they are the model's, not the run's); norms, GELU, softmax and the
// embedding lookup do not.
double model_flops_per_token(const ModelConfig& config, int seq_len);

// One named tensor of the dense parameter buffer.
struct ParamTensor {
  std::string name;
  int64_t offset = 0;  // floats into the buffer
  int64_t size = 0;
  bool decay = false;  // AdamW weight decay (matrices and embeddings; not norms or biases)
};

// Offsets (floats into the dense buffer) of one block's dense tensors; the FFN's are -1 in
// MoE blocks, whose FFN is an MoE layer.
struct BlockLayout {
  bool moe = false;
  int64_t ln1_w = -1, ln1_b = -1, qkv_w = -1, qkv_b = -1, proj_w = -1, proj_b = -1;
  int64_t ln2_w = -1, ln2_b = -1;
  int64_t fc1_w = -1, fc1_b = -1, fc2_w = -1, fc2_b = -1;
};

// The dense parameter buffer of a model: its named tensors in order, and where the model's
// pieces are in it. The same on every backend.
struct DenseLayout {
  std::vector<ParamTensor> tensors;
  std::vector<BlockLayout> blocks;
  int64_t wte = 0, wpe = 0, lnf_w = 0, lnf_b = 0;
  int64_t total = 0;  // floats
};

// Validates the configuration (validate_model_config) and lays the dense tensors out.
DenseLayout dense_layout(const ModelConfig& config);
// GPT-2 initialisation from config.seed: N(0, 0.02) for matrices and embeddings, the
// projections into the residual stream scaled by 1/sqrt(2 L); norm weights 1, biases 0.
// params [layout.total].
void dense_params_init(float* params, const DenseLayout& layout, const ModelConfig& config);
// AdamW weight-decay flags of the dense buffer, per element (ParamTensor::decay).
std::vector<uint8_t> dense_decay_mask(const std::vector<ParamTensor>& tensors);
// The MoE layer of block `block`: config.moe with d_model set and the block's own seed.
MoELayerConfig moe_block_config(const ModelConfig& config, int block);

class MoETransformer {
 public:
  // Collective over `comm` (the expert-parallel group). B, T: the largest batch.
  MoETransformer(const ModelConfig& config, MPI_Comm comm, int max_batch, int max_seq_len);
  ~MoETransformer();

  // Forward over tokens [B, T] with targets [B, T]; returns the mean cross-entropy of this
  // rank's positions (the router losses are in aux_loss()). Collective.
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  // Gradients of mean CE + router losses, written over the gradient buffers (dense and every
  // MoE layer's): nothing needs clearing between steps. Collective.
  void backward();

  const ModelConfig& config() const { return config_; }
  float aux_loss() const;  // sum over MoE blocks of aux + z-loss of the last forward
  const float* logits() const { return logits_.data(); }  // [B, T, V] of the last forward

  // Dense parameters: one buffer (for the all-reduce and AdamW) described by tensors().
  std::vector<float>& dense_params() { return dense_params_; }
  std::vector<float>& dense_grads() { return dense_grads_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  // The MoE layers, in block order (router parameters and experts live there).
  std::vector<MoELayer*> moe_layers();
  int64_t expert_param_count_local() const;  // this rank's expert floats, all MoE blocks

 private:
  struct Block;
  ModelConfig config_;
  MPI_Comm comm_;
  int max_batch_, max_T_;
  int B_ = 0, T_ = 0;
  const int32_t* tokens_ = nullptr;
  const int32_t* targets_ = nullptr;

  std::vector<ParamTensor> tensors_;
  std::vector<float> dense_params_, dense_grads_;
  float *wte_ = nullptr, *wpe_ = nullptr, *lnf_w_ = nullptr, *lnf_b_ = nullptr;
  std::vector<std::unique_ptr<Block>> blocks_;

  // Activations and gradients of the residual stream and the head.
  std::vector<float> x0_;                // [B, T, C] embeddings
  std::vector<float> lnf_, lnf_mean_, lnf_rstd_;  // [B, T, C], [B, T], [B, T]
  std::vector<float> logits_;            // [B, T, V]
  std::vector<float> probs_;             // [B, T, V] softmax; dlogits after backward
  std::vector<float> losses_;            // [B, T]
  // Backward scratch shared by all blocks.
  std::vector<float> d_stream_, d_lnf_, d_ln_, d_atty_;  // [B, T, C]
  std::vector<float> d_qkv_;                             // [B, T, 3C]
  std::vector<float> d_hidden_;                          // [B, T, H]
  std::vector<float> attention_scratch_;
};

}  // namespace moebench
