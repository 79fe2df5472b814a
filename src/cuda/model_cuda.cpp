// CudaMoETransformer: the model's forward and backward on the GPU. See model_cuda.hpp; the
// CPU original, whose order of operations this follows: src/model/model.cpp.
#include "model_cuda.hpp"

#include <algorithm>

#include "dense_cuda.hpp"
#include "moebench/check.hpp"

namespace moebench {

namespace {

size_t to_size(int64_t count) { return static_cast<size_t>(count); }

}  // namespace

struct CudaMoETransformer::Block : BlockLayout {
  std::unique_ptr<CudaMoELayer> moe_layer;  // MoE blocks
  // Activations of the last forward pass, as MoETransformer::Block.
  DeviceArray<float> ln1, ln1_mean, ln1_rstd;  // [B,T,C], [B,T], [B,T]
  DeviceArray<float> qkv;                      // [B, T, 3C]
  DeviceArray<float> atty;                     // [B, T, C]
  DeviceArray<float> att;                      // [B, NH, T, T]
  DeviceArray<float> proj;                     // [B, T, C]
  DeviceArray<float> mid;                      // [B, T, C]
  DeviceArray<float> ln2, ln2_mean, ln2_rstd;  // [B,T,C], [B,T], [B,T]
  DeviceArray<float> ffn;                      // [B, T, C]
  DeviceArray<float> hidden_pre, hidden_act;   // [B, T, H] dense FFN
  DeviceArray<float> out;                      // [B, T, C]
};

CudaMoETransformer::CudaMoETransformer(const ModelConfig& config, CudaContext& context,
                                       int max_batch, int max_seq_len, ExpertGemm gemm)
    : config_(config),
      context_(context),
      layout_(dense_layout(config)),
      max_batch_(max_batch),
      max_T_(max_seq_len) {
  config_.moe.d_model = config_.d_model;
  CUstream_st* stream = context.compute_stream();
  const int64_t C = config_.d_model, V = config_.vocab, H = config_.ffn_hidden;
  const int64_t N = int64_t{max_batch} * max_seq_len;
  {
    std::vector<float> host(to_size(layout_.total));
    dense_params_init(host.data(), layout_, config_);
    dense_params_.resize(host.size());
    dense_grads_.resize(host.size());
    copy_to_device(dense_params_.data(), host.data(), dense_params_.bytes(), stream);
    fill_zero(dense_grads_.data(), dense_grads_.bytes(), stream);
  }
  bool any_dense_ffn = false;
  for (int b = 0; b < config_.layers; ++b) {
    auto block = std::make_unique<Block>();
    static_cast<BlockLayout&>(*block) = layout_.blocks[b];
    Block& k = *block;
    if (k.moe) {
      k.moe_layer = std::make_unique<CudaMoELayer>(moe_block_config(config_, b), context,
                                                   static_cast<int>(N), gemm);
    } else {
      any_dense_ffn = true;
      k.hidden_pre.resize(to_size(N * H));
      k.hidden_act.resize(to_size(N * H));
    }
    for (DeviceArray<float>* a : {&k.ln1, &k.atty, &k.proj, &k.mid, &k.ln2, &k.ffn, &k.out}) {
      a->resize(to_size(N * C));
    }
    for (DeviceArray<float>* a : {&k.ln1_mean, &k.ln1_rstd, &k.ln2_mean, &k.ln2_rstd}) {
      a->resize(to_size(N));
    }
    k.qkv.resize(to_size(3 * N * C));
    k.att.resize(to_size(int64_t{max_batch} * config_.heads * max_seq_len * max_seq_len));
    blocks_.push_back(std::move(block));
  }
  if (any_dense_ffn) {
    dense_ffn_ = std::make_unique<CudaExperts>(
        ExpertShape{1, config_.d_model, config_.ffn_hidden}, context.blas(), stream, gemm);
  }
  tokens_.resize(to_size(N));
  targets_.resize(to_size(N));
  encoder_index_device_.resize(to_size(cuda_encoder_backward_index_ints(max_batch, max_seq_len)));
  losses_host_.assign(to_size(N), 0.0f);
  for (DeviceArray<float>* a : {&x0_, &lnf_, &d_stream_, &d_lnf_, &d_ln_, &d_atty_}) {
    a->resize(to_size(N * C));
  }
  lnf_mean_.resize(to_size(N));
  lnf_rstd_.resize(to_size(N));
  losses_.resize(to_size(N));
  logits_.resize(to_size(N * V));
  probs_.resize(to_size(N * V));
  d_qkv_.resize(to_size(3 * N * C));
  d_hidden_.resize(to_size(N * H));
  attention_scratch_.resize(to_size(std::max(
      cuda_attention_forward_scratch_floats(max_batch, max_seq_len, config_.d_model),
      cuda_attention_backward_scratch_floats(max_batch, max_seq_len, config_.d_model,
                                             config_.heads))));
  layernorm_scratch_.resize(
      to_size(cuda_layernorm_backward_scratch_floats(max_batch, max_seq_len, config_.d_model)));
  // The host parameter copy is gone already (copy_to_device returns once a pageable buffer is
  // staged); this only finishes the set-up before the first step.
  context.synchronize();
}

CudaMoETransformer::~CudaMoETransformer() = default;

float CudaMoETransformer::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  MOEBENCH_CHECK(B >= 1 && T >= 1 && B <= max_batch_ && T <= max_T_ && T <= config_.max_seq_len,
                 "batch larger than the model was built for");
  const int C = config_.d_model, V = config_.vocab, NH = config_.heads;
  const int N = B * T;
  // Checked on the host (the device kernels cannot refuse): the CPU layers' messages.
  check_token_ids(tokens, N, V);
  check_crossentropy_targets(targets, N, V);
  B_ = B;
  T_ = T;
  tokens_host_ = tokens;
  CUstream_st* stream = context_.compute_stream();
  cublasContext* blas = context_.blas();
  copy_to_device(tokens_.data(), tokens, to_size(N) * sizeof(int32_t), stream);
  copy_to_device(targets_.data(), targets, to_size(N) * sizeof(int32_t), stream);

  const float* P = dense_params_.data();
  cuda_encoder_forward(x0_.data(), tokens_.data(), P + layout_.wte, P + layout_.wpe, B, T, C, V,
                       stream);
  const float* in = x0_.data();
  for (auto& block : blocks_) {
    Block& k = *block;
    cuda_layernorm_forward(k.ln1.data(), k.ln1_mean.data(), k.ln1_rstd.data(), in, P + k.ln1_w,
                           P + k.ln1_b, B, T, C, stream);
    cuda_matmul_forward(blas, k.qkv.data(), k.ln1.data(), P + k.qkv_w, P + k.qkv_b, N, C, 3 * C,
                        stream);
    cuda_attention_forward(blas, k.atty.data(), k.att.data(), attention_scratch_.data(),
                           k.qkv.data(), B, T, C, NH, stream);
    cuda_matmul_forward(blas, k.proj.data(), k.atty.data(), P + k.proj_w, P + k.proj_b, N, C, C,
                        stream);
    cuda_residual_forward(k.mid.data(), in, k.proj.data(), int64_t{N} * C, stream);
    cuda_layernorm_forward(k.ln2.data(), k.ln2_mean.data(), k.ln2_rstd.data(), k.mid.data(),
                           P + k.ln2_w, P + k.ln2_b, B, T, C, stream);
    if (k.moe) {
      k.moe_layer->forward(k.ffn.data(), k.ln2.data(), tokens_.data(), N);
    } else {
      float* params = dense_params_.data();
      const int64_t rows[2] = {0, N};
      dense_ffn_->forward(k.ffn.data(), ExpertActivations{k.hidden_pre.data(), k.hidden_act.data()},
                          k.ln2.data(),
                          ExpertParams{params + k.fc1_w, params + k.fc1_b, params + k.fc2_w,
                                       params + k.fc2_b},
                          rows);
    }
    cuda_residual_forward(k.out.data(), k.mid.data(), k.ffn.data(), int64_t{N} * C, stream);
    in = k.out.data();
  }
  cuda_layernorm_forward(lnf_.data(), lnf_mean_.data(), lnf_rstd_.data(), in, P + layout_.lnf_w,
                         P + layout_.lnf_b, B, T, C, stream);
  cuda_lm_head_forward(blas, logits_.data(), lnf_.data(), P + layout_.wte, N, C, V);
  cuda_crossentropy_softmax_forward(losses_.data(), probs_.data(), logits_.data(),
                                    targets_.data(), N, V, stream);
  copy_to_host(losses_host_.data(), losses_.data(), to_size(N) * sizeof(float), stream);
  double sum = 0.0;
  for (int i = 0; i < N; ++i) sum += losses_host_[i];
  return static_cast<float>(sum / N);
}

void CudaMoETransformer::backward() {
  const int B = B_, T = T_, C = config_.d_model, V = config_.vocab, NH = config_.heads;
  const int N = B * T;
  const size_t nc_bytes = to_size(int64_t{N} * C) * sizeof(float);
  CUstream_st* stream = context_.compute_stream();
  cublasContext* blas = context_.blas();
  const float* P = dense_params_.data();
  float* G = dense_grads_.data();
  float* params = dense_params_.data();
  // The embedding's backward index, from the forward's tokens (host; still the caller's), built
  // here so that forward-only passes (evaluation) do not pay for it.
  build_encoder_backward_index(encoder_index_, tokens_host_, B, T, V);
  upload_encoder_backward_index(encoder_index_device_.data(), encoder_index_, stream);
  fill_zero(G, dense_grads_.bytes(), stream);  // the dense layers add into them
  // dlogits overwrites probs (mean CE, dloss = 1).
  cuda_crossentropy_softmax_backward(probs_.data(), probs_.data(), targets_.data(), 1.0f, N, V,
                                     stream);
  fill_zero(d_lnf_.data(), nc_bytes, stream);
  cuda_lm_head_backward(blas, d_lnf_.data(), G + layout_.wte, probs_.data(), lnf_.data(),
                        P + layout_.wte, N, C, V);
  fill_zero(d_stream_.data(), nc_bytes, stream);
  cuda_layernorm_backward(d_stream_.data(), G + layout_.lnf_w, G + layout_.lnf_b,
                          layernorm_scratch_.data(), d_lnf_.data(), blocks_.back()->out.data(),
                          P + layout_.lnf_w, lnf_mean_.data(), lnf_rstd_.data(), B, T, C, stream);
  for (int b = static_cast<int>(blocks_.size()) - 1; b >= 0; --b) {
    Block& k = *blocks_[b];
    const float* in = b == 0 ? x0_.data() : blocks_[b - 1]->out.data();
    // out = mid + ffn(LN2(mid)); d_stream holds dL/d out. Both FFNs overwrite d_ln.
    if (k.moe) {
      k.moe_layer->backward(d_ln_.data(), d_stream_.data());
    } else {
      const int64_t rows[2] = {0, N};
      dense_ffn_->backward(d_ln_.data(),
                           ExpertParams{G + k.fc1_w, G + k.fc1_b, G + k.fc2_w, G + k.fc2_b},
                           d_hidden_.data(), d_stream_.data(), k.ln2.data(),
                           ExpertActivations{k.hidden_pre.data(), k.hidden_act.data()},
                           ExpertParams{params + k.fc1_w, params + k.fc1_b, params + k.fc2_w,
                                        params + k.fc2_b},
                           rows);
    }
    // d_stream += LN2's part: dL/d mid.
    cuda_layernorm_backward(d_stream_.data(), G + k.ln2_w, G + k.ln2_b, layernorm_scratch_.data(),
                            d_ln_.data(), k.mid.data(), P + k.ln2_w, k.ln2_mean.data(),
                            k.ln2_rstd.data(), B, T, C, stream);
    // mid = in + proj(attn(LN1(in))).
    fill_zero(d_atty_.data(), nc_bytes, stream);
    cuda_matmul_backward(blas, d_atty_.data(), G + k.proj_w, G + k.proj_b, d_stream_.data(),
                         k.atty.data(), P + k.proj_w, N, C, C, stream);
    fill_zero(d_qkv_.data(), 3 * nc_bytes, stream);
    cuda_attention_backward(blas, d_qkv_.data(), attention_scratch_.data(), d_atty_.data(),
                            k.qkv.data(), k.att.data(), B, T, C, NH, stream);
    fill_zero(d_ln_.data(), nc_bytes, stream);
    cuda_matmul_backward(blas, d_ln_.data(), G + k.qkv_w, G + k.qkv_b, d_qkv_.data(),
                         k.ln1.data(), P + k.qkv_w, N, C, 3 * C, stream);
    // d_stream += LN1's part: dL/d in.
    cuda_layernorm_backward(d_stream_.data(), G + k.ln1_w, G + k.ln1_b, layernorm_scratch_.data(),
                            d_ln_.data(), in, P + k.ln1_w, k.ln1_mean.data(), k.ln1_rstd.data(),
                            B, T, C, stream);
  }
  cuda_encoder_backward(G + layout_.wte, G + layout_.wpe, d_stream_.data(),
                        encoder_index_device_.data(), encoder_index_.distinct, B, T, C, stream);
}

float CudaMoETransformer::aux_loss() const {
  float sum = 0.0f;
  for (const auto& block : blocks_) {
    if (!block->moe) continue;
    float losses[2] = {0.0f, 0.0f};  // aux, z
    copy_to_host(losses, block->moe_layer->plan().losses.data(), sizeof(losses),
                 context_.compute_stream());
    sum += losses[0] + losses[1];
  }
  return sum;
}

std::vector<CudaMoELayer*> CudaMoETransformer::moe_layers() {
  std::vector<CudaMoELayer*> layers;
  for (auto& block : blocks_) {
    if (block->moe) layers.push_back(block->moe_layer.get());
  }
  return layers;
}

}  // namespace moebench
