// exp(x) for float, 16 lanes at a time, so that softmax and entropy loops run on SIMD
// registers (GCC does not vectorise std::exp without -ffast-math). Cephes' expf: x = n ln2 + r
// with |r| <= ln2/2 (Cody-Waite split of ln2), a degree-7 polynomial for e^r, and 2^n built
// in the exponent bits. Relative error <= 2e-7 over [-87, 88] (tests/routing/test_fast_exp.cpp);
// inputs are clamped to that range, so exp(-inf) gives ~1.6e-38 rather than 0.
//
// The same template serves one float and a GCC/Clang vector of 16 floats.
#pragma once

#include <bit>
#include <cstdint>

namespace moebench {

using Floats16 = float __attribute__((vector_size(16 * sizeof(float))));
using Ints16 = int32_t __attribute__((vector_size(16 * sizeof(int32_t))));

namespace detail {

inline int32_t to_int(float x) { return static_cast<int32_t>(x); }
inline Ints16 to_int(Floats16 x) { return __builtin_convertvector(x, Ints16); }
inline float to_float(int32_t x) { return static_cast<float>(x); }
inline Floats16 to_float(Ints16 x) { return __builtin_convertvector(x, Floats16); }

template <typename F>
inline F exp_kernel(F x) {
  const F lo = F{} - 87.0f, hi = F{} + 88.0f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  // n = floor(x log2(e) + 1/2): truncate, then step down where truncation rounded up.
  const F t = x * 1.44269504088896341f + 0.5f;
  auto i = to_int(t);
  const F truncated = to_float(i);
  const F n = truncated > t ? truncated - 1.0f : truncated;
  i = to_int(n);
  F r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const F r2 = r * r;
  F y = F{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  return y * std::bit_cast<F>((i + 127) << 23);
}

}  // namespace detail

inline float fast_exp(float x) { return detail::exp_kernel(x); }
inline Floats16 fast_exp(Floats16 x) { return detail::exp_kernel(x); }

// out[i] = exp(in[i] - shift) for i < n; out may equal in. The last n % 16 elements go
// through the vector kernel too, in a zero-padded vector: a scalar exp costs about as much as
// a vector one, and with rows of 1 to 128 elements (causal attention) the scalar tail took
// most of the softmax's time.
inline void fast_exp_shifted(float* out, const float* in, float shift, int n) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    Floats16 v;
    __builtin_memcpy(&v, in + i, sizeof(v));
    v = fast_exp(v - shift);
    __builtin_memcpy(out + i, &v, sizeof(v));
  }
  if (i < n) {
    const auto bytes = static_cast<size_t>(n - i) * sizeof(float);
    Floats16 v = {};
    __builtin_memcpy(&v, in + i, bytes);
    v = fast_exp(v - shift);
    __builtin_memcpy(out + i, &v, bytes);
  }
}

// max of x[0..n), n >= 1, 16 lanes at a time (a scalar max chain does not vectorise).
inline float row_max(const float* x, int n) {
  float best = x[0];
  int i = 0;
  if (n >= 16) {
    Floats16 lanes;
    __builtin_memcpy(&lanes, x, sizeof(lanes));
    for (i = 16; i + 16 <= n; i += 16) {
      Floats16 v;
      __builtin_memcpy(&v, x + i, sizeof(v));
      lanes = v > lanes ? v : lanes;
    }
    for (int b = 0; b < 16; ++b) best = lanes[b] > best ? lanes[b] : best;
  }
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  return best;
}

// sum of x[0..n) in 16 float partial sums (independent chains), combined in double.
inline double row_sum(const float* x, int n) {
  Floats16 lanes = {};
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    Floats16 v;
    __builtin_memcpy(&v, x + i, sizeof(v));
    lanes += v;
  }
  double sum = 0.0;
  for (int b = 0; b < 16; ++b) sum += lanes[b];
  for (; i < n; ++i) sum += x[i];
  return sum;
}

}  // namespace moebench
