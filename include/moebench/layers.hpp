// Dense layers of the MoE language model (llm.c style): a decoder-only transformer with
// token embedding wte [V, C], learned position embedding wpe [maxT, C], pre-LayerNorm blocks
//   x = x + Attn(LN1(x));   x = x + FFN(LN2(x))      (FFN: an MoE layer or gelu_mlp)
// a final LayerNorm, the tied output head logits = LN_f(x) wte^T, and softmax cross-entropy
// averaged over the B*T positions.
//
// Conventions, for every function below:
//  - Outputs first, then inputs, then shape integers. B batch, T sequence length, C channels
//    (d_model), NH heads, hs = C / NH head size, H FFN hidden width, V vocabulary, N rows
//    (usually B*T). Buffers are row-major; the shape of each is written beside it.
//  - Weight matrices are stored [in, out] row-major (W [C, OC]: out = inp W), as in
//    experts.hpp, so a dense FFN and an expert share one layout. The tied head is the one
//    exception: it reads wte [V, C] as stored (logits = inp wte^T).
//  - Backward functions ACCUMULATE (+=) into every gradient they produce (the caller zeroes
//    gradients once per step), except:
//      gelu_mlp_backward        overwrites dinp (like experts_backward and MoELayer::backward,
//                               so either FFN drops into a block the same way);
//      crossentropy_softmax_backward  overwrites dlogits (the start of the backward chain).
//  - Nothing allocates: activations, saved tensors and scratch are passed in by the caller,
//    sized once from the configuration.
//  - Work is spread with OpenMP, BLAS single-threaded inside it (blas.hpp); results do not
//    depend on the thread count (every sum has a fixed order, every split a fixed size).
//  - Functions that use BLAS have a `_reference` twin (plain loops, double accumulation, one
//    thread): the oracle the fast path is tested against.
#pragma once

#include <cstdint>

namespace moebench {

// ---- embedding -------------------------------------------------------------------------
// out [B, T, C] = wte[tokens[b, t]] + wpe[t].
// tokens [B, T] in [0, V) (else moebench::Error); wte [V, C]; wpe [>= T, C].
void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                     int T, int C, int V);
// dwte [V, C] += dout rows scattered by token; dwpe [>= T, C] += dout summed over b.
// dout [B, T, C]; tokens [B, T] (assumed checked by encoder_forward).
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                      int T, int C);

// ---- LayerNorm (eps = 1e-5, biased variance, as PyTorch) -------------------------------
// out [B, T, C] = (inp - mean) * rstd * weight + bias; saves mean [B, T] and
// rstd [B, T] = 1 / sqrt(var + eps). inp [B, T, C]; weight, bias [C].
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int B, int T, int C);
// dinp [B, T, C] +=, dweight [C] +=, dbias [C] +=.
// dout, inp [B, T, C]; weight [C]; mean, rstd [B, T] from the forward pass.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int B, int T, int C);

// ---- linear layer: out = inp W + bias, W stored [C, OC] row-major ----------------------
// out [N, OC]; inp [N, C]; weight [C, OC]; bias [OC] or nullptr (no bias).
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC);
// dinp [N, C] += dout W^T; dweight [C, OC] += inp^T dout; dbias [OC] += column sums of dout
// (dbias may be nullptr when there is no bias). dout [N, OC]; inp [N, C]; weight [C, OC].
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC);
void matmul_forward_reference(float* out, const float* inp, const float* weight, const float* bias,
                              int N, int C, int OC);
void matmul_backward_reference(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, int N, int C, int OC);

// ---- tied output head: logits = inp wte^T, wte [V, C] as the embedding stores it --------
// logits [N, V]; inp [N, C]; wte [V, C]. No bias.
void lm_head_forward(float* logits, const float* inp, const float* wte, int N, int C, int V);
// dinp [N, C] += dlogits wte; dwte [V, C] += dlogits^T inp. dlogits [N, V]; inp [N, C].
void lm_head_backward(float* dinp, float* dwte, const float* dlogits, const float* inp,
                      const float* wte, int N, int C, int V);
void lm_head_forward_reference(float* logits, const float* inp, const float* wte, int N, int C,
                               int V);
void lm_head_backward_reference(float* dinp, float* dwte, const float* dlogits, const float* inp,
                                const float* wte, int N, int C, int V);

// ---- causal multi-head self-attention --------------------------------------------------
// qkv [B, T, 3C]: q = qkv[..., 0:C], k = qkv[..., C:2C], v = qkv[..., 2C:3C]; head h uses
// columns h*hs .. (h+1)*hs - 1 of each. For query t of head h:
//   att[b, h, t, t2] = softmax_{t2 <= t}(q_t . k_t2 / sqrt(hs)), 0 for t2 > t
//   out[b, t, h*hs:(h+1)*hs] = sum_{t2 <= t} att[b, h, t, t2] v_t2
// out [B, T, C]; att [B, NH, T, T] (saved for backward; every entry written). C % NH == 0.
// The fast path computes, per (b, h) pair on one OpenMP thread, S = Q K^T and out = P V and in
// backward dP = dout V^T, dQ += dS K, dK += dS^T Q, dV += P^T dout as sgemms over 64-row query
// blocks and the keys each block can see (the masked part of the diagonal blocks is computed
// and zeroed), with the softmax and its backward row by row between them. The _reference
// versions loop over the causal pairs.
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);
void attention_forward_reference(float* out, float* att, const float* qkv, int B, int T, int C,
                                 int NH);
// Floats of scratch attention_backward (and its reference) needs: B * NH * T * T.
int64_t attention_backward_scratch_floats(int B, int T, int NH);
// dqkv [B, T, 3C] +=. scratch [attention_backward_scratch_floats] (contents undefined after).
// dout [B, T, C]; qkv [B, T, 3C]; att [B, NH, T, T] from the forward pass.
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH);
void attention_backward_reference(float* dqkv, float* scratch, const float* dout,
                                  const float* qkv, const float* att, int B, int T, int C, int NH);

// ---- dense FFN: out = GELU(inp W1 + b1) W2 + b2 (C -> H -> C, GELU tanh) ------------------
// The expert kernels of experts.hpp with one expert, so a dense block and an MoE block with
// E = 1 compute the same thing. out [N, C]; hidden_pre, hidden_act [N, H] (saved);
// inp [N, C]; w1 [C, H]; b1 [H]; w2 [H, C]; b2 [C].
void gelu_mlp_forward(float* out, float* hidden_pre, float* hidden_act, const float* inp,
                      const float* w1, const float* b1, const float* w2, const float* b2, int N,
                      int C, int H);
// dinp [N, C] is OVERWRITTEN; dw1 [C, H], db1 [H], dw2 [H, C], db2 [C] +=.
// d_hidden: scratch [N, H]. dout [N, C]; the rest as in the forward pass.
void gelu_mlp_backward(float* dinp, float* dw1, float* db1, float* dw2, float* db2, float* d_hidden,
                       const float* dout, const float* inp, const float* hidden_pre,
                       const float* hidden_act, const float* w1, const float* w2, int N, int C,
                       int H);
void gelu_mlp_forward_reference(float* out, float* hidden_pre, float* hidden_act, const float* inp,
                                const float* w1, const float* b1, const float* w2, const float* b2,
                                int N, int C, int H);
void gelu_mlp_backward_reference(float* dinp, float* dw1, float* db1, float* dw2, float* db2,
                                 float* d_hidden, const float* dout, const float* inp,
                                 const float* hidden_pre, const float* hidden_act, const float* w1,
                                 const float* w2, int N, int C, int H);

// ---- residual ----------------------------------------------------------------------------
// out [N] = inp1 [N] + inp2 [N] (N elements; out may alias either input).
void residual_forward(float* out, const float* inp1, const float* inp2, int64_t N);
// dinp1 [N] += dout; dinp2 [N] += dout.
void residual_backward(float* dinp1, float* dinp2, const float* dout, int64_t N);

// ---- softmax cross-entropy ---------------------------------------------------------------
// probs [N, V] = softmax(logits); losses [N] = -log probs[n, targets[n]] (evaluated as
// logsumexp - logit, so it stays finite when the probability underflows).
// logits [N, V]; targets [N] in [0, V) (else moebench::Error, nothing written).
// The mean loss is (1/N) sum losses.
void crossentropy_softmax_forward(float* losses, float* probs, const float* logits,
                                  const int32_t* targets, int N, int V);
// Gradient of the MEAN loss scaled by dloss (dL/d mean-loss, 1 for plain training):
// dlogits [N, V] = (probs - onehot(targets)) * dloss / N, OVERWRITTEN; dlogits may alias
// probs. probs [N, V] from the forward pass; targets [N] in [0, V) (else moebench::Error).
void crossentropy_softmax_backward(float* dlogits, const float* probs, const int32_t* targets,
                                   float dloss, int N, int V);

// ---- AdamW (Loshchilov & Hutter; PyTorch torch.optim.AdamW semantics) ---------------------
struct AdamWSettings {
  float learning_rate = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  // The gradient the update uses is grad_scale * grads: averaging over ranks and the global
  // norm clip folded into the one pass that reads the gradient anyway.
  float grad_scale = 1.0f;
};
// One step over n parameters, step = 1, 2, ... (the count including this one; else Error):
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   m_hat = m / (1 - beta1^step);  v_hat = v / (1 - beta2^step)
//   param -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * param)
// where wd = weight_decay for elements with decay_mask[i] != 0 and 0 elsewhere (the caller
// clears the mask on norms and biases); decay_mask == nullptr decays every element.
// with g = grad_scale * grads[i] (as one float product),
// params, m, v [n] updated in place; grads [n]; decay_mask [n] or nullptr.
void adamw_update(float* params, float* m, float* v, const float* grads, const uint8_t* decay_mask,
                  int64_t n, const AdamWSettings& settings, int step);

// sum of values[i]^2 in double, for the global gradient norm. OpenMP over fixed blocks of
// kSquaresBlock elements, each summed in order, the block sums added in block order: the
// result does not depend on the thread count.
inline constexpr int64_t kSquaresBlock = 16384;
double sum_of_squares(const float* values, int64_t n);

}  // namespace moebench
