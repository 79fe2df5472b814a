// The dense layers' products on cuBLAS, and the order of their kernels (dense_kernels.cu). See
// dense_cuda.hpp; the CPU originals: src/layers/matmul.cpp and attention.cpp.
//
// Every call below computes a row-major product as the column-major product of the stored
// buffers: a row-major X [r, c] is, as stored, the column-major X^T [c, r] with leading
// dimension c. cublasSgemm(transa, transb, m, n, k, A, lda, B, ldb, C, ldc) computes the
// column-major C [m, n] = op(A) [m, k] op(B) [k, n]; with op = N, A is stored [m, k] (lda >= m),
// with op = T it is stored [k, m] (lda >= k); likewise B. Each call carries its derivation.
#include <cublas_v2.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda_check.hpp"
#include "dense_cuda.hpp"
#include "moebench/check.hpp"

namespace moebench {
namespace {

void check_stream(cublasContext* blas, CUstream_st* stream) {
  cudaStream_t bound = nullptr;
  MOEBENCH_CUBLAS_CHECK(cublasGetStream(blas, &bound));
  MOEBENCH_CHECK(bound == stream, "the cuBLAS handle must be bound to the layers' stream");
}

// rows >= 0; the widths > 0 (cuBLAS refuses a leading dimension of 0).
void check_sizes(int rows, int width1, int width2, const char* what) {
  MOEBENCH_CHECK(rows >= 0 && width1 > 0 && width2 > 0,
                 std::string(what) + ": rows must be >= 0 and widths > 0");
}

void check_heads(int C, int NH) {
  MOEBENCH_CHECK(NH > 0 && C > 0 && C % NH == 0, "attention: channels " + std::to_string(C) +
                                            " are not divisible by heads " + std::to_string(NH));
}

// B NH fits cuBLAS's int batch count; T T (a square's stride) and the counts fit int64.
int batch_count(int B, int NH) {
  const int64_t pairs = int64_t{B} * NH;
  MOEBENCH_CHECK(pairs <= INT_MAX, "attention: B * NH does not fit cuBLAS's batch count");
  return static_cast<int>(pairs);
}

// The scale of the scores, as the CPU computes it.
float score_scale(int hs) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hs))); }

}  // namespace

void cuda_matmul_forward(cublasContext* blas, float* out, const float* inp, const float* weight,
                         const float* bias, int N, int C, int OC, CUstream_st* stream) {
  check_sizes(N, C, OC, "matmul_forward");
  check_stream(blas, stream);
  if (N == 0) return;
  // out [N, OC] = inp [N, C] W [C, OC]  <=>  column-major out^T [OC, N] = W^T [OC, C] inp^T [C, N]:
  //   A = weight, stored as W^T [OC, C] ld OC, op N (m = OC, k = C)
  //   B = inp,    stored as inp^T [C, N] ld C, op N (k = C, n = N)
  //   C = out,    stored as out^T [OC, N] ld OC, beta = 0 (out is not read)
  const float one = 1.0f, zero = 0.0f;
  MOEBENCH_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, OC, N, C, &one, weight, OC,
                                    inp, C, &zero, out, OC));
  if (bias != nullptr) dense_detail::launch_add_bias(out, bias, N, OC, stream);
}

void cuda_matmul_backward(cublasContext* blas, float* dinp, float* dweight, float* dbias,
                          const float* dout, const float* inp, const float* weight, int N, int C,
                          int OC, CUstream_st* stream) {
  check_sizes(N, C, OC, "matmul_backward");
  check_stream(blas, stream);
  if (N == 0) return;  // nothing to add
  const float one = 1.0f;
  // dinp [N, C] += dout [N, OC] W^T  <=>  column-major dinp^T [C, N] += W [C, OC] dout^T [OC, N]:
  //   A = weight, stored as W^T [OC, C] ld OC, op T gives W [C, OC] (m = C, k = OC)
  //   B = dout,   stored as dout^T [OC, N] ld OC, op N (k = OC, n = N)
  //   C = dinp,   stored as dinp^T [C, N] ld C, beta = 1
  MOEBENCH_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, C, N, OC, &one, weight, OC,
                                    dout, OC, &one, dinp, C));
  // dweight [C, OC] += inp^T [C, N] dout [N, OC]  <=>  column-major
  // dweight^T [OC, C] += dout^T [OC, N] inp [N, C]:
  //   A = dout,    stored as dout^T [OC, N] ld OC, op N (m = OC, k = N)
  //   B = inp,     stored as inp^T [C, N] ld C, op T gives inp [N, C] (k = N, n = C)
  //   C = dweight, stored as dweight^T [OC, C] ld OC, beta = 1
  MOEBENCH_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, OC, C, N, &one, dout, OC, inp,
                                    C, &one, dweight, OC));
  if (dbias != nullptr) dense_detail::launch_bias_grad(dbias, dout, N, OC, stream);
}

void cuda_lm_head_forward(cublasContext* blas, float* logits, const float* inp, const float* wte,
                          int N, int C, int V) {
  check_sizes(N, C, V, "lm_head_forward");
  if (N == 0) return;
  // logits [N, V] = inp [N, C] wte^T [C, V]  <=>  column-major
  // logits^T [V, N] = wte [V, C] inp^T [C, N]:
  //   A = wte,    stored as wte^T [C, V] ld C, op T gives wte [V, C] (m = V, k = C)
  //   B = inp,    stored as inp^T [C, N] ld C, op N (k = C, n = N)
  //   C = logits, stored as logits^T [V, N] ld V, beta = 0
  const float one = 1.0f, zero = 0.0f;
  MOEBENCH_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, V, N, C, &one, wte, C, inp, C,
                                    &zero, logits, V));
}

void cuda_lm_head_backward(cublasContext* blas, float* dinp, float* dwte, const float* dlogits,
                           const float* inp, const float* wte, int N, int C, int V) {
  check_sizes(N, C, V, "lm_head_backward");
  if (N == 0) return;
  const float one = 1.0f;
  // dinp [N, C] += dlogits [N, V] wte [V, C]  <=>  column-major
  // dinp^T [C, N] += wte^T [C, V] dlogits^T [V, N]:
  //   A = wte,     stored as wte^T [C, V] ld C, op N (m = C, k = V)
  //   B = dlogits, stored as dlogits^T [V, N] ld V, op N (k = V, n = N)
  //   C = dinp,    stored as dinp^T [C, N] ld C, beta = 1
  MOEBENCH_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, C, N, V, &one, wte, C, dlogits,
                                    V, &one, dinp, C));
  // dwte [V, C] += dlogits^T [V, N] inp [N, C]  <=>  column-major
  // dwte^T [C, V] += inp^T [C, N] dlogits [N, V]:
  //   A = inp,     stored as inp^T [C, N] ld C, op N (m = C, k = N)
  //   B = dlogits, stored as dlogits^T [V, N] ld V, op T gives dlogits [N, V] (k = N, n = V)
  //   C = dwte,    stored as dwte^T [C, V] ld C, beta = 1
  MOEBENCH_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, C, V, N, &one, inp, C, dlogits,
                                    V, &one, dwte, C));
}

int64_t cuda_attention_forward_scratch_floats(int B, int T, int C) {
  return 3 * int64_t{B} * T * C;
}

int64_t cuda_attention_backward_scratch_floats(int B, int T, int C, int NH) {
  return 5 * int64_t{B} * T * C + int64_t{B} * NH * T * T;
}

// The per-pair products. In every one, a head's [T, hs] block (q, k, v, dO, y, dq, dk, dv of
// pair p = b NH + h, at offset p T hs) is, as stored, the column-major [hs, T] matrix with
// ld hs, and a square [T, T] (att, dA, dS, at offset p T T) the column-major transpose [T, T]
// with ld T. Strides: T hs between pairs' blocks, T T between squares; batch = B NH.
void cuda_attention_forward(cublasContext* blas, float* out, float* att, float* scratch,
                            const float* qkv, int B, int T, int C, int NH, CUstream_st* stream) {
  check_heads(C, NH);
  MOEBENCH_CHECK(B >= 0 && T >= 0, "attention_forward: negative size");
  check_stream(blas, stream);
  const int pairs = batch_count(B, NH);
  if (pairs == 0 || T == 0) return;
  const int hs = C / NH;
  const int64_t head_block = int64_t{T} * hs;  // floats of one pair's [T, hs]
  const int64_t square = int64_t{T} * T;       // floats of one pair's [T, T]
  const int64_t btc = int64_t{B} * T * C;
  float* q = scratch;  // [B, NH, T, hs] each
  float* k = scratch + btc;
  float* v = scratch + 2 * btc;
  float* y = q;  // q is dead once the scores are computed (stream order)
  const int64_t C3 = 3 * int64_t{C};
  dense_detail::launch_split_heads(q, qkv, C3, B, T, NH, hs, stream);
  dense_detail::launch_split_heads(k, qkv + C, C3, B, T, NH, hs, stream);
  dense_detail::launch_split_heads(v, qkv + 2 * int64_t{C}, C3, B, T, NH, hs, stream);

  const float one = 1.0f, zero = 0.0f;
  // Scores, per pair: att [T, T] = q [T, hs] k^T [hs, T] (unscaled; the softmax scales)
  //   <=> column-major att^T [T, T] = k [T, hs] q^T [hs, T]:
  //   A = k,   stored as k^T [hs, T] ld hs, op T gives k [T, hs] (m = T, k = hs), stride T hs
  //   B = q,   stored as q^T [hs, T] ld hs, op N (k = hs, n = T), stride T hs
  //   C = att, stored as att^T [T, T] ld T, stride T T, beta = 0
  // so column-major C(t2, t) = sum_i k[t2, i] q[t, i] lands at att + t T + t2 = att[t, t2].
  // Every entry of the square is written, the future ones included.
  MOEBENCH_CUBLAS_CHECK(cublasSgemmStridedBatched(blas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, &one,
                                                  k, hs, head_block, q, hs, head_block, &zero, att,
                                                  T, square, pairs));
  dense_detail::launch_causal_softmax(att, int64_t{pairs} * T, T, score_scale(hs), stream);
  // y [T, hs] = att [T, T] v [T, hs]  <=>  column-major y^T [hs, T] = v^T [hs, T] att^T [T, T]:
  //   A = v,   stored as v^T [hs, T] ld hs, op N (m = hs, k = T), stride T hs
  //   B = att, stored as att^T [T, T] ld T, op N (k = T, n = T), stride T T
  //   C = y,   stored as y^T [hs, T] ld hs, stride T hs, beta = 0
  MOEBENCH_CUBLAS_CHECK(cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, &one,
                                                  v, hs, head_block, att, T, square, &zero, y, hs,
                                                  head_block, pairs));
  dense_detail::launch_merge_heads(out, C, y, B, T, NH, hs, false, stream);
}

void cuda_attention_backward(cublasContext* blas, float* dqkv, float* scratch, const float* dout,
                             const float* qkv, const float* att, int B, int T, int C, int NH,
                             CUstream_st* stream) {
  check_heads(C, NH);
  MOEBENCH_CHECK(B >= 0 && T >= 0, "attention_backward: negative size");
  check_stream(blas, stream);
  const int pairs = batch_count(B, NH);
  if (pairs == 0 || T == 0) return;
  const int hs = C / NH;
  const int64_t head_block = int64_t{T} * hs;
  const int64_t square = int64_t{T} * T;
  const int64_t btc = int64_t{B} * T * C;
  float* q = scratch;  // [B, NH, T, hs] each
  float* k = scratch + btc;
  float* v = scratch + 2 * btc;
  float* d_out = scratch + 3 * btc;
  float* dv = scratch + 4 * btc;
  float* d_att = scratch + 5 * btc;  // [B, NH, T, T]: dA, then dS in place
  float* dq = d_out;                 // d_out is dead after dV and dA (stream order)
  float* dk = v;                     // v is dead after dA
  const int64_t C3 = 3 * int64_t{C};
  dense_detail::launch_split_heads(q, qkv, C3, B, T, NH, hs, stream);
  dense_detail::launch_split_heads(k, qkv + C, C3, B, T, NH, hs, stream);
  dense_detail::launch_split_heads(v, qkv + 2 * int64_t{C}, C3, B, T, NH, hs, stream);
  dense_detail::launch_split_heads(d_out, dout, C, B, T, NH, hs, stream);

  const float one = 1.0f, zero = 0.0f;
  // dv [T, hs] = att^T [T, T] dO [T, hs]  <=>  column-major dv^T [hs, T] = dO^T [hs, T] att [T, T]:
  //   A = dO,  stored as dO^T [hs, T] ld hs, op N (m = hs, k = T), stride T hs
  //   B = att, stored as att^T [T, T] ld T, op T gives att [T, T] (k = T, n = T), stride T T
  //   C = dv,  stored as dv^T [hs, T] ld hs, stride T hs, beta = 0
  // so dv[t2, i] = sum_t dO[t, i] att[t, t2] (att is 0 for t2 > t: only causal pairs add).
  MOEBENCH_CUBLAS_CHECK(cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, &one,
                                                  d_out, hs, head_block, att, T, square, &zero, dv,
                                                  hs, head_block, pairs));
  // dA [T, T] = dO [T, hs] v^T [hs, T]  <=>  column-major dA^T [T, T] = v [T, hs] dO^T [hs, T]
  // (the scores' product with k -> v and q -> dO):
  //   A = v,  stored as v^T [hs, T] ld hs, op T gives v [T, hs] (m = T, k = hs), stride T hs
  //   B = dO, stored as dO^T [hs, T] ld hs, op N (k = hs, n = T), stride T hs
  //   C = dA, stored as dA^T [T, T] ld T, stride T T, beta = 0
  MOEBENCH_CUBLAS_CHECK(cublasSgemmStridedBatched(blas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, &one,
                                                  v, hs, head_block, d_out, hs, head_block, &zero,
                                                  d_att, T, square, pairs));
  // dS = att (dA - rowsum(att dA)) scale, 0 above the diagonal.
  dense_detail::launch_causal_softmax_backward(d_att, att, int64_t{pairs} * T, T, score_scale(hs),
                                               stream);
  // dq [T, hs] = dS [T, T] k [T, hs]  <=>  column-major dq^T [hs, T] = k^T [hs, T] dS^T [T, T]
  // (the forward's y = att v with att -> dS, v -> k):
  //   A = k,  stored as k^T [hs, T] ld hs, op N (m = hs, k = T), stride T hs
  //   B = dS, stored as dS^T [T, T] ld T, op N (k = T, n = T), stride T T
  //   C = dq, stored as dq^T [hs, T] ld hs, stride T hs, beta = 0
  MOEBENCH_CUBLAS_CHECK(cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, &one,
                                                  k, hs, head_block, d_att, T, square, &zero, dq,
                                                  hs, head_block, pairs));
  // dk [T, hs] = dS^T [T, T] q [T, hs]  <=>  column-major dk^T [hs, T] = q^T [hs, T] dS [T, T]
  // (dV's product with att -> dS, dO -> q):
  //   A = q,  stored as q^T [hs, T] ld hs, op N (m = hs, k = T), stride T hs
  //   B = dS, stored as dS^T [T, T] ld T, op T gives dS [T, T] (k = T, n = T), stride T T
  //   C = dk, stored as dk^T [hs, T] ld hs, stride T hs, beta = 0 (dk overwrites v, which no
  //   product reads any more)
  MOEBENCH_CUBLAS_CHECK(cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, &one,
                                                  q, hs, head_block, d_att, T, square, &zero, dk,
                                                  hs, head_block, pairs));
  // dqkv [B, T, 3C] += dq, dk, dv in their thirds.
  dense_detail::launch_merge_heads(dqkv, C3, dq, B, T, NH, hs, true, stream);
  dense_detail::launch_merge_heads(dqkv + C, C3, dk, B, T, NH, hs, true, stream);
  dense_detail::launch_merge_heads(dqkv + 2 * int64_t{C}, C3, dv, B, T, NH, hs, true, stream);
}

}  // namespace moebench
