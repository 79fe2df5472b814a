// The MoE transformer (model.hpp) on the GPU: the same configuration, dense parameter layout
// and initialisation (dense_layout, dense_params_init, moe_block_config: a seed gives the same
// model on either backend), forward and backward in MoETransformer's order, over the GPU
// layers (layers_cuda.hpp, dense_cuda.hpp), CudaExperts with one expert for the dense FFN
// blocks, and CudaMoELayer for the MoE blocks.
//
// Tokens and targets are host arrays: they come from the data loader, are checked on the host
// (the CPU layers' messages) and uploaded; backward() builds the embedding's backward index
// from the forward's tokens on the host, so they must stay valid until then (as the CPU
// model's). forward() returns the mean cross-entropy of this rank's positions, which makes the
// host wait for the step's forward work (the losses come back to be summed in the CPU's order).
// Parameters, gradients and activations are device memory; backward() overwrites every
// gradient (dense and every MoE layer's).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "experts_cuda.hpp"
#include "layers_cuda.hpp"
#include "moe_layer_cuda.hpp"
#include "moebench/cuda.hpp"
#include "moebench/model.hpp"

namespace moebench {

class CudaMoETransformer {
 public:
  // Collective over the context's ranks (the expert-parallel group). B, T: the largest batch.
  CudaMoETransformer(const ModelConfig& config, CudaContext& context, int max_batch,
                     int max_seq_len, ExpertGemm gemm = ExpertGemm::per_expert);
  ~CudaMoETransformer();
  CudaMoETransformer(const CudaMoETransformer&) = delete;
  CudaMoETransformer& operator=(const CudaMoETransformer&) = delete;

  // tokens, targets [B, T] in host memory, each in [0, vocab) (else moebench::Error, before
  // any device work); tokens must stay valid until backward(). Returns this rank's mean
  // cross-entropy. Collective.
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  // Gradients of mean CE + router losses, written over every gradient. Collective.
  void backward();

  const ModelConfig& config() const { return config_; }
  // Sum over MoE blocks of aux + z-loss of the last forward (copied from the device).
  float aux_loss() const;
  const float* logits() const { return logits_.data(); }  // device [B, T, V]

  DeviceArray<float>& dense_params() { return dense_params_; }
  DeviceArray<float>& dense_grads() { return dense_grads_; }
  const std::vector<ParamTensor>& tensors() const { return layout_.tensors; }
  std::vector<CudaMoELayer*> moe_layers();

 private:
  struct Block;
  ModelConfig config_;
  CudaContext& context_;
  DenseLayout layout_;
  int max_batch_, max_T_;
  int B_ = 0, T_ = 0;

  DeviceArray<float> dense_params_, dense_grads_;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::unique_ptr<CudaExperts> dense_ffn_;  // one expert: the dense FFN blocks' GELU MLP

  DeviceArray<int32_t> tokens_, targets_;    // [B, T]
  const int32_t* tokens_host_ = nullptr;     // the last forward's (caller-owned)
  EncoderBackwardIndex encoder_index_;       // host
  DeviceArray<int32_t> encoder_index_device_;
  std::vector<float> losses_host_;           // [B T]

  DeviceArray<float> x0_;                            // [B, T, C]
  DeviceArray<float> lnf_, lnf_mean_, lnf_rstd_;     // [B, T, C], [B, T], [B, T]
  DeviceArray<float> logits_;                        // [B, T, V]
  DeviceArray<float> probs_;                         // [B, T, V]; dlogits after backward
  DeviceArray<float> losses_;                        // [B, T]
  DeviceArray<float> d_stream_, d_lnf_, d_ln_, d_atty_;  // [B, T, C]
  DeviceArray<float> d_qkv_;                             // [B, T, 3C]
  DeviceArray<float> d_hidden_;                          // [B, T, H]
  DeviceArray<float> attention_scratch_;  // the larger of forward's and backward's
  DeviceArray<float> layernorm_scratch_;
};

}  // namespace moebench
