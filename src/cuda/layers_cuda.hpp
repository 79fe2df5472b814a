// The model's dense layers on the GPU (fp32): embedding, LayerNorm, residual, softmax
// cross-entropy, AdamW and the gradient's sum of squares, with the semantics of
// include/moebench/layers.hpp (the CPU functions in src/layers are the reference):
//
//  - The same argument order as the CPU function (outputs, inputs, shapes), then a trailing
//    stream. Every pointer is device memory unless stated; every call is asynchronous on
//    `stream` (nothing waits for the host) and allocates nothing: scratch comes from the
//    caller, sized once by the *_scratch_* function beside the call.
//  - Which outputs accumulate (+=) and which are overwritten is as on the CPU: backward
//    functions accumulate into gradients, except cuda_crossentropy_softmax_backward, which
//    overwrites dlogits (and may be given dlogits == probs).
//  - Deterministic: no floating-point atomics, and every sum has a fixed order that depends
//    on the shapes only (never on the launch or the scheduling), so two runs give the same
//    bits. The reductions over rows (LayerNorm's dweight and dbias, sum_of_squares) first
//    write one partial sum per fixed chunk of rows or elements to scratch, then a second
//    kernel adds the partials in chunk order.
//  - Exactness against the CPU: the embedding (both passes), residual and the cross-entropy
//    backward run the CPU's float operations in the CPU's order and give the same bits; the
//    embedding gradients add the rows into the gradient one at a time in row order, as
//    encoder_backward does. LayerNorm keeps the CPU's double row sums (so mean and rstd
//    agree to the float rounding); the softmax denominator is summed in double, where the CPU
//    adds 16 float lanes and combines them in double (a few 1e-7 relative apart); the GPU's exp is CUDA's
//    expf (<= 2 ulp) where the CPU uses fast_exp (<= 2e-7 relative). LayerNorm's parameter
//    gradients are summed in chunks of rows, so they differ from the CPU's one running sum by
//    float rounding. AdamW runs the CPU's operations in the CPU's order; nvcc may fuse a
//    multiply and an add (as GCC may on the CPU), a few ulp apart.
//  - Invalid token ids and targets: a kernel cannot throw, so the caller checks the host copy
//    (the data loader's) with check_token_ids / check_crossentropy_targets, or builds the
//    embedding's backward index, which checks too; they throw moebench::Error worded as the
//    CPU functions. An id that reaches a kernel unchecked is not read out of bounds: the rows
//    it touches become NaN (encoder forward: that row of out; cross-entropy: that row's loss
//    and dlogits).
//
// The embedding gradient dwte [V, C] is a scatter over repeating tokens. Rather than atomics,
// the caller (who has the tokens on the host anyway) builds an EncoderBackwardIndex per step:
// the distinct tokens in ascending order and, for each, the rows r = b T + t where it occurs,
// ascending (a CSR matrix, one counting sort over the vocabulary). It is uploaded with one
// copy; cuda_encoder_backward then runs one block per distinct token, which adds that token's
// rows into dwte in row order. A token that fills a large share of the batch leaves its block
// with proportionally more rows (load imbalance, not a wrong result).
#pragma once

#include <cstdint>
#include <vector>

#include "moebench/cuda.hpp"
#include "moebench/layers.hpp"

namespace moebench {

// ---- host-side checks (host memory; throw moebench::Error as the CPU functions do) ------
// "token <id> at position <r> is outside the vocabulary [0, V)" (encoder_forward's message).
void check_token_ids(const int32_t* tokens, int64_t count, int V);
// "cross-entropy target <id> at row <n> is outside the vocabulary [0, V)".
void check_crossentropy_targets(const int32_t* targets, int N, int V);

// ---- embedding -------------------------------------------------------------------------
// out [B, T, C] = wte[tokens[b, t]] + wpe[t]. tokens [B, T] (checked on the host); wte [V, C];
// wpe [>= T, C].
void cuda_encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                          int B, int T, int C, int V, CUstream_st* stream);

// The rows of each distinct token, built on the host from the step's tokens. One int32 array,
// uploaded as it is (packed), laid out as
//   packed = [ token [D] | offsets [D + 1] | rows [B T] ]
// token ascending; rows offsets[d] .. offsets[d + 1] - 1 of `rows` are the rows r = b T + t
// holding token[d], ascending. D = distinct (<= B T).
struct EncoderBackwardIndex {
  int distinct = 0;             // D
  int rows = 0;                 // B T
  std::vector<int32_t> packed;  // [2 D + 1 + B T]
  std::vector<int32_t> cursor;  // [V]  the builder's scratch
};
// Fills `index` from tokens [B, T] (host memory) after checking them (check_token_ids's
// error). O(B T + V). The vectors are sized for the largest D = B T on the first call, so later
// calls with the same B, T and V allocate nothing.
void build_encoder_backward_index(EncoderBackwardIndex& index, const int32_t* tokens, int B, int T,
                                  int V);
// int32s of the device buffer an index of B T rows needs: 3 B T + 1 (the packed size at D = B T).
int64_t cuda_encoder_backward_index_ints(int B, int T);
// device_index [cuda_encoder_backward_index_ints] <- index.packed, on `stream`. The host
// vector may be reused once this returns (a pageable copy may wait for `stream`).
void upload_encoder_backward_index(int32_t* device_index, const EncoderBackwardIndex& index,
                                   CUstream_st* stream);
// dwte [V, C] += dout rows of each token, dwpe [>= T, C] += dout summed over b, each element in
// row order (as encoder_backward). dout [B, T, C]; device_index: the uploaded index of this
// step's tokens, distinct_tokens = its `distinct`.
void cuda_encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* device_index,
                           int distinct_tokens, int B, int T, int C, CUstream_st* stream);

// ---- LayerNorm (eps = 1e-5, biased variance) ---------------------------------------------
// out [B, T, C]; mean, rstd [B, T] saved; inp [B, T, C]; weight, bias [C]. One warp per row,
// row sums in double as the CPU.
void cuda_layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                            const float* weight, const float* bias, int B, int T, int C,
                            CUstream_st* stream);
// Floats of scratch cuda_layernorm_backward needs: 2 C ceil(B T / kLayerNormRowChunk).
inline constexpr int kLayerNormRowChunk = 64;  // rows per partial sum of dweight and dbias
int64_t cuda_layernorm_backward_scratch_floats(int B, int T, int C);
// dinp [B, T, C] +=, dweight [C] +=, dbias [C] +=; scratch [cuda_layernorm_backward_scratch_
// floats] (contents undefined after). dinp: one warp per row. dweight, dbias: per chunk of
// kLayerNormRowChunk rows and per column, a sum in row order (scratch), then per column the
// chunk sums in chunk order, added to the gradient.
void cuda_layernorm_backward(float* dinp, float* dweight, float* dbias, float* scratch,
                             const float* dout, const float* inp, const float* weight,
                             const float* mean, const float* rstd, int B, int T, int C,
                             CUstream_st* stream);

// ---- residual ----------------------------------------------------------------------------
// out [N] = inp1 + inp2 (out may alias either input).
void cuda_residual_forward(float* out, const float* inp1, const float* inp2, int64_t N,
                           CUstream_st* stream);
// dinp1 [N] += dout; dinp2 [N] += dout.
void cuda_residual_backward(float* dinp1, float* dinp2, const float* dout, int64_t N,
                            CUstream_st* stream);

// ---- softmax cross-entropy ---------------------------------------------------------------
// probs [N, V] = softmax(logits) (expf, the denominator summed in double); losses [N] = logsumexp -
// logit of the target. logits [N, V]; targets [N] (checked on the host). One block per row.
void cuda_crossentropy_softmax_forward(float* losses, float* probs, const float* logits,
                                       const int32_t* targets, int N, int V, CUstream_st* stream);
// dlogits [N, V] = (probs - onehot(targets)) * dloss / N, OVERWRITTEN (may alias probs).
void cuda_crossentropy_softmax_backward(float* dlogits, const float* probs,
                                        const int32_t* targets, float dloss, int N, int V,
                                        CUstream_st* stream);

// ---- AdamW ---------------------------------------------------------------------------------
// adamw_update on the GPU: params, m, v [n] in place; grads [n]; decay_mask [n] or nullptr
// (decay everything). step >= 1, else moebench::Error before anything is launched. The bias
// corrections are computed on the host in double, as on the CPU.
void cuda_adamw_update(float* params, float* m, float* v, const float* grads,
                       const uint8_t* decay_mask, int64_t n, const AdamWSettings& settings,
                       int step, CUstream_st* stream);

// ---- sum of squares ------------------------------------------------------------------------
// *result (one device double) = sum of values[i]^2 in double. Each block of kSquaresBlock
// elements (layers.hpp's block size) is summed into scratch by one thread block (per-thread
// strided sums, then a fixed tree), then one block adds the block sums the same way. Read
// *result after synchronising with `stream`.
int64_t cuda_sum_of_squares_scratch_doubles(int64_t n);
void cuda_sum_of_squares(double* result, double* scratch, const float* values, int64_t n,
                         CUstream_st* stream);

}  // namespace moebench
