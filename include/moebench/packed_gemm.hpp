// Small matrix products against a packed B operand, for causal attention.
//
// Attention multiplies, per (batch, head) pair, blocks of a T x T square by [T, hs] slices of
// Q, K, V and their gradients, with hs = C / heads (32 in the quickstart): products with k or
// n = hs. Through OpenBLAS (its small-matrix kernels) one core ran attention's 50 MFLOP of
// forward products in 2.1 ms and 100 MFLOP of backward ones in 2.8 ms, softmax included: 24
// and 36 GFLOP/s against a core's ~100 (`OMP_NUM_THREADS=1 build/bench/bench_layers` and
// `bench_sgemm`; now 1.2-1.7 and 1.8-2.3 ms). Here the hs-wide operand is packed once per pair
// or query block (pack_b: a few KiB) and sgemm_packed
// reads the other in place, as stored or transposed, with the results of a micro-tile in
// registers for the whole k loop.
//
// Layout of a packed B (op(B) is [k, n]): ceil(n / kPackedPanelCols) panels, each [k, 32]
// row-major and contiguous, the last one zero-padded to 32 columns; panel j holds columns
// [32 j, 32 j + 32). A product may use the first n' <= n columns of a packed B (its first
// panels), but must use the k it was packed with.
//
// Numerics: every element of C is alpha times one chain over p = 0, 1, ..., k-1 of
// acc += op(A)[i, p] op(B)[p, j] starting from 0, plus C when accumulating, whatever m, n, the
// row block or the thread: results do not depend on how callers split the rows. The AVX-512
// kernel fuses each step into one FMA; the portable kernel (built where AVX-512 is not, and
// always built for the tests) leaves contraction to the compiler. Both agree with a
// double-precision product to float rounding of a k-term sum.
#pragma once

#include <cstdint>
#include <memory>

namespace moebench {

inline constexpr int64_t kPackedPanelCols = 32;

// Floats a packed op(B) of shape [k, n] occupies.
int64_t packed_b_floats(int64_t k, int64_t n);

// Packs op(B) [k, n] into `packed` (packed_b_floats(k, n) floats): op(B) = B stored [k, n]
// (row stride ldb), or with transpose_b = B^T of a B stored [n, k] (row stride ldb).
void pack_b(bool transpose_b, int64_t k, int64_t n, const float* b, int64_t ldb, float* packed);

// C [m, n] = alpha op(A) op(B), or C += alpha op(A) op(B) with accumulate. op(A) [m, k] is A
// stored [m, k] (row stride lda), or with transpose_a A^T of an A stored [k, m] (row stride
// lda), read in place; op(B) packed by pack_b with the same k. Runs on the calling thread;
// m, n or k == 0 is allowed.
void sgemm_packed(bool transpose_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* packed_b, bool accumulate, float* c, int64_t ldc);

// A 64-byte aligned float buffer that grows on demand and keeps its size otherwise.
class PackedBuffer {
 public:
  float* reserve(int64_t floats);  // returns the buffer, at least `floats` long
  float* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> data_;
  int64_t capacity_ = 0;
};

namespace detail {
// The portable kernel behind sgemm_packed, callable on any build so that the tests check it
// next to the AVX-512 one. Same contract as sgemm_packed.
void sgemm_packed_portable(bool transpose_a, int64_t m, int64_t n, int64_t k, float alpha,
                           const float* a, int64_t lda, const float* packed_b, bool accumulate,
                           float* c, int64_t ldc);
}  // namespace detail

}  // namespace moebench
