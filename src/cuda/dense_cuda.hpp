// The dense layers of the model on the GPU (layers.hpp): the linear layer, the tied output head
// and causal multi-head self-attention, fp32, with the CPU functions' layouts and contracts:
// outputs first, then inputs, then shapes; weights stored [in, out] row-major (the tied head
// reads wte [V, C] as stored); every backward ACCUMULATES (+=) into every gradient it produces.
// All pointers are device memory; all work is asynchronous on the context's compute stream
// (`blas` must be bound to `stream`, as CudaContext binds its handle; checked on each call);
// nothing allocates: attention's scratch is passed in, sized by the *_scratch_floats below.
// Row counts (N, B, T) may be 0 (nothing is enqueued); widths (C, OC, V, hs) must be > 0, else
// moebench::Error before anything is enqueued.
//
// cuBLAS mapping. cuBLAS is column-major, and a row-major [rows, cols] buffer is, as stored,
// the column-major [cols, rows] matrix (its transpose) with leading dimension cols. So every
// row-major product C = A B is computed as the column-major C^T = B^T A^T; each call's
// (transa, transb, m, n, k, lda, ldb, ldc) is derived next to it in dense_cuda.cpp. Products
// are cublasSgemm / cublasSgemmStridedBatched in fp32 (the context keeps CUBLAS_DEFAULT_MATH:
// no TF32); accumulating outputs use beta = 1.
//
// Attention follows llm.c (train_gpt2_fp32.cu): qkv [B, T, 3C] is permuted into q, k, v
// [B, NH, T, hs] (scratch), then per (b, h) pair, one strided-batched sgemm over the B NH pairs
// for each product:
//   forward   att = Q K^T (the full T x T square), then a causal softmax kernel turns every row
//             into softmax_{t2 <= t}(scale s) and writes 0 for t2 > t (scale = 1/sqrt(hs), as
//             the CPU: float(1/sqrt(double hs)) times the fp32 dot product); y = att V (the
//             zeros above the diagonal take part, adding exact zeros); out = y unpermuted.
//   backward  dV = att^T dO, dA = dO V^T, then a kernel dS = att (dA - rowsum_{t2<=t}(att dA))
//             scale (0 for t2 > t), dQ = dS K, dK = dS^T Q, and dq, dk, dv are added into dqkv.
// att is exactly what attention_forward_reference saves: softmax probabilities on and below
// the diagonal, +0.0 above it, every entry written.
//
// Arithmetic against the CPU. Sums are fp32 in cuBLAS's order (not the CPU's double or its
// packed-GEMM order); the softmax uses CUDA's expf (<= 2 ulp) where the CPU uses fast_exp
// (<= 2e-7 relative), and a warp's fp32 sum for the normaliser where the CPU sums in double.
// Differences are a few 1e-7 relative for the probabilities and grow like sqrt(K) 2^-24 with
// the length K of each dot product (tests/cuda/test_cuda_dense.cpp states the tolerances).
//
// Determinism: no floating-point atomics. Every output element is written by one thread (or one
// cuBLAS product) in a fixed order. The bias gradient is one block per 32 columns: 32 row lanes
// per column each sum rows lane, lane + 32, ... in order, and the 32 partial sums are added in
// a fixed tree in shared memory; the softmax sums are warp butterflies over fixed lanes.
// Results do not depend on scheduling: two runs give the same bits (on one GPU and cuBLAS
// version; cuBLAS picks its kernel from the shapes, deterministically for sgemm).
#pragma once

#include <cstdint>

// The handle types as the CUDA headers spell them (cudaStream_t = CUstream_st*,
// cublasHandle_t = cublasContext*), as in moebench/cuda.hpp.
struct CUstream_st;
struct cublasContext;

namespace moebench {

// ---- linear layer: out = inp W + bias, W stored [C, OC] row-major ---------------------------
// out [N, OC]; inp [N, C]; weight [C, OC]; bias [OC] or nullptr. One sgemm, then a bias kernel.
void cuda_matmul_forward(cublasContext* blas, float* out, const float* inp, const float* weight,
                         const float* bias, int N, int C, int OC, CUstream_st* stream);
// dinp [N, C] += dout W^T; dweight [C, OC] += inp^T dout; dbias [OC] += column sums of dout
// (dbias may be nullptr). dout [N, OC]; inp [N, C]; weight [C, OC].
void cuda_matmul_backward(cublasContext* blas, float* dinp, float* dweight, float* dbias,
                          const float* dout, const float* inp, const float* weight, int N, int C,
                          int OC, CUstream_st* stream);

// ---- tied output head: logits = inp wte^T, wte [V, C] --------------------------------------
// logits [N, V]; inp [N, C]; wte [V, C]. One sgemm (on the handle's stream; no kernel).
void cuda_lm_head_forward(cublasContext* blas, float* logits, const float* inp, const float* wte,
                          int N, int C, int V);
// dinp [N, C] += dlogits wte; dwte [V, C] += dlogits^T inp. dlogits [N, V]; inp [N, C].
void cuda_lm_head_backward(cublasContext* blas, float* dinp, float* dwte, const float* dlogits,
                           const float* inp, const float* wte, int N, int C, int V);

// ---- causal multi-head self-attention ------------------------------------------------------
// Floats of scratch cuda_attention_forward needs: 3 B T C (q, k, v [B, NH, T, hs]; y reuses q).
int64_t cuda_attention_forward_scratch_floats(int B, int T, int C);
// Floats of scratch cuda_attention_backward needs: 5 B T C + B NH T T (q, k, v, dO, dv
// [B, NH, T, hs] and dA [B, NH, T, T]; dq reuses dO's buffer and dk v's). The CPU's
// attention_backward needs B NH T T (attention_backward_scratch_floats).
int64_t cuda_attention_backward_scratch_floats(int B, int T, int C, int NH);
// out [B, T, C]; att [B, NH, T, T] (saved; every entry written, 0 above the diagonal);
// scratch [cuda_attention_forward_scratch_floats] (contents undefined after); qkv [B, T, 3C].
// C % NH == 0 (else moebench::Error, nothing enqueued).
void cuda_attention_forward(cublasContext* blas, float* out, float* att, float* scratch,
                            const float* qkv, int B, int T, int C, int NH, CUstream_st* stream);
// dqkv [B, T, 3C] +=. scratch [cuda_attention_backward_scratch_floats] (contents undefined
// after). dout [B, T, C]; qkv [B, T, 3C]; att [B, NH, T, T] from the forward pass.
void cuda_attention_backward(cublasContext* blas, float* dqkv, float* scratch, const float* dout,
                             const float* qkv, const float* att, int B, int T, int C, int NH,
                             CUstream_st* stream);

// ---- the kernels (dense_kernels.cu), launched by the functions above ------------------------
namespace dense_detail {

// out [N, OC] += bias [OC] broadcast over the rows.
void launch_add_bias(float* out, const float* bias, int64_t N, int OC, CUstream_st* stream);
// dbias [OC] += column sums of dout [N, OC] (fixed-order, see the top of this file).
void launch_bias_grad(float* dbias, const float* dout, int64_t N, int OC, CUstream_st* stream);
// dst [B, NH, T, hs] = the head columns of src, row (b, t) at src + (b T + t) ld.
void launch_split_heads(float* dst, const float* src, int64_t ld, int B, int T, int NH, int hs,
                        CUstream_st* stream);
// dst row (b, t) at dst + (b T + t) ld, head columns (=, or += when accumulate) src
// [B, NH, T, hs].
void launch_merge_heads(float* dst, int64_t ld, const float* src, int B, int T, int NH, int hs,
                        bool accumulate, CUstream_st* stream);
// att [rows, T] (rows = B NH T, row r is query t = r mod T): raw scores s in, causal
// softmax(scale s) out, 0 above the diagonal.
void launch_causal_softmax(float* att, int64_t rows, int T, float scale, CUstream_st* stream);
// d [rows, T]: dA in, dS = att (dA - sum_{t2<=t} att dA) scale out, 0 above the diagonal.
void launch_causal_softmax_backward(float* d, const float* att, int64_t rows, int T, float scale,
                                    CUstream_st* stream);

}  // namespace dense_detail

}  // namespace moebench
