// Router architectures: forward and backward on OpenBLAS. See router_net.hpp.
#include "moebench/router_net.hpp"

#include <cmath>
#include <sstream>

#include "moebench/blas.hpp"
#include "moebench/check.hpp"
#include "moebench/experts.hpp"
#include "moebench/random.hpp"

namespace moebench {

namespace {

// C [m, n] = beta * C + A [m, k] * B [k, n] with optional transposes; row-major, dense.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, const float* a, const float* b,
          float beta, float* c) {
  sgemm_parallel(trans_a, trans_b, m, n, k, 1.0f, a, trans_a ? m : k, b, trans_b ? k : n, beta,
                 c, n);
}

// Splits a parameter block into its input projection(s) and output projection:
// linear: a = W; mlp: a = W1, out = W2; mlp_hadamard: a = Wa, b = Wb, out = Wo.
template <typename Pointer>
void carve(Pointer params, const RouterNetShape& s, Pointer* a, Pointer* b, Pointer* out) {
  const int64_t d = s.d_model, h = s.hidden;
  *a = params;
  *b = nullptr;
  *out = nullptr;
  switch (s.arch) {
    case RouterArch::linear: break;
    case RouterArch::mlp: *out = params + d * h; break;
    case RouterArch::mlp_hadamard:
      *b = params + d * h;
      *out = params + 2 * d * h;
      break;
  }
}

}  // namespace

const char* to_string(RouterArch arch) {
  switch (arch) {
    case RouterArch::linear: return "linear";
    case RouterArch::mlp: return "mlp";
    case RouterArch::mlp_hadamard: return "mlp_hadamard";
  }
  return "?";
}

RouterArch parse_router_arch(const std::string& option, const std::string& name) {
  for (RouterArch arch : {RouterArch::linear, RouterArch::mlp, RouterArch::mlp_hadamard}) {
    if (name == to_string(arch)) return arch;
  }
  std::ostringstream message;
  message << option << ": unknown value '" << name << "' (accepted: linear, mlp, mlp_hadamard)";
  throw UsageError(message.str());
}

int64_t router_param_count(const RouterNetShape& s) {
  const int64_t d = s.d_model, h = s.hidden, E = s.num_experts;
  switch (s.arch) {
    case RouterArch::linear: return d * E;
    case RouterArch::mlp: return d * h + h * E;
    case RouterArch::mlp_hadamard: return 2 * d * h + h * E;
  }
  return 0;
}

int64_t router_activation_floats_per_token(const RouterNetShape& s) {
  switch (s.arch) {
    case RouterArch::linear: return 0;
    case RouterArch::mlp: return 2 * static_cast<int64_t>(s.hidden);            // pre, act
    case RouterArch::mlp_hadamard: return 4 * static_cast<int64_t>(s.hidden);   // a_pre, a, b, a*b
  }
  return 0;
}

void router_params_init(float* params, const RouterNetShape& s, uint64_t seed) {
  const int64_t d = s.d_model, h = s.hidden;
  const int64_t in_count = s.arch == RouterArch::linear ? d * s.num_experts
                                                        : (s.arch == RouterArch::mlp ? d * h : 2 * d * h);
  const int64_t total = router_param_count(s);
  const double in_std = 1.0 / std::sqrt(static_cast<double>(d));
  const double out_std = s.arch == RouterArch::linear ? in_std : 1.0 / std::sqrt(static_cast<double>(h));
  for (int64_t i = 0; i < total; ++i) {
    const double std = i < in_count ? in_std : out_std;
    params[i] = static_cast<float>(std * random_normal(seed, /*stream=*/0x726f75746572ULL, static_cast<uint64_t>(i)));
  }
}

void router_forward(float* logits, float* saved, const float* x, const float* params, int T,
                    const RouterNetShape& s) {
  const int d = s.d_model, h = s.hidden, E = s.num_experts;
  const float *w_a, *w_b, *w_out;
  carve(params, s, &w_a, &w_b, &w_out);
  if (T == 0) return;
  if (s.arch == RouterArch::linear) {
    gemm(false, false, T, E, d, x, w_a, 0.0f, logits);
    return;
  }
  const int64_t th = static_cast<int64_t>(T) * h;
  float* a_pre = saved;       // [T, h]
  float* a_act = saved + th;  // [T, h]
  gemm(false, false, T, h, d, x, w_a, 0.0f, a_pre);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < th; ++i) a_act[i] = gelu(a_pre[i]);
  if (s.arch == RouterArch::mlp) {
    gemm(false, false, T, E, h, a_act, w_out, 0.0f, logits);
    return;
  }
  float* b = saved + 2 * th;     // [T, h]  x Wb
  float* prod = saved + 3 * th;  // [T, h]  GELU(x Wa) * (x Wb)
  gemm(false, false, T, h, d, x, w_b, 0.0f, b);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < th; ++i) prod[i] = a_act[i] * b[i];
  gemm(false, false, T, E, h, prod, w_out, 0.0f, logits);
}

void router_backward(float* d_x, float* d_params, float* scratch, const float* d_logits,
                     const float* x, const float* saved, const float* params, int T,
                     const RouterNetShape& s) {
  const int d = s.d_model, h = s.hidden, E = s.num_experts;
  const float *w_a, *w_b, *w_out;
  carve(params, s, &w_a, &w_b, &w_out);
  float *dw_a, *dw_b, *dw_out;
  carve(d_params, s, &dw_a, &dw_b, &dw_out);
  if (T == 0) return;
  if (s.arch == RouterArch::linear) {
    gemm(true, false, d, E, T, x, d_logits, 1.0f, dw_a);  // dW += x^T dz
    gemm(false, true, T, d, E, d_logits, w_a, 1.0f, d_x);  // dx += dz W^T
    return;
  }
  const int64_t th = static_cast<int64_t>(T) * h;
  const float* a_pre = saved;
  const float* a_act = saved + th;
  float* d_a = scratch;  // [T, h]
  if (s.arch == RouterArch::mlp) {
    gemm(true, false, h, E, T, a_act, d_logits, 1.0f, dw_out);  // dW2 += act^T dz
    gemm(false, true, T, h, E, d_logits, w_out, 0.0f, d_a);     // d act = dz W2^T
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < th; ++i) d_a[i] *= gelu_derivative(a_pre[i]);
    gemm(true, false, d, h, T, x, d_a, 1.0f, dw_a);  // dW1 += x^T d pre
    gemm(false, true, T, d, h, d_a, w_a, 1.0f, d_x);  // dx += d pre W1^T
    return;
  }
  const float* b = saved + 2 * th;
  const float* prod = saved + 3 * th;
  float* d_prod = scratch + th;  // [T, h]
  float* d_b = scratch + 2 * th;  // [T, h]
  gemm(true, false, h, E, T, prod, d_logits, 1.0f, dw_out);  // dWo += prod^T dz
  gemm(false, true, T, h, E, d_logits, w_out, 0.0f, d_prod);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < th; ++i) {
    d_b[i] = d_prod[i] * a_act[i];
    d_a[i] = d_prod[i] * b[i] * gelu_derivative(a_pre[i]);
  }
  gemm(true, false, d, h, T, x, d_a, 1.0f, dw_a);
  gemm(true, false, d, h, T, x, d_b, 1.0f, dw_b);
  gemm(false, true, T, d, h, d_a, w_a, 1.0f, d_x);
  gemm(false, true, T, d, h, d_b, w_b, 1.0f, d_x);
}

}  // namespace moebench
