// Dense FFN (C -> H -> C, GELU tanh) on the expert kernels with one expert owning every row,
// so the dense model and an MoE model with E = 1 run the same code; the reference twins use
// the expert reference kernels. See layers.hpp.
#include <cstdint>

#include "moebench/experts.hpp"
#include "moebench/layers.hpp"

namespace moebench {
namespace {

// ExpertParams and ExpertActivations hold non-const pointers; the forward and backward
// kernels only read params and the saved activations, so these const_casts never lead to a
// write through a const pointer.
ExpertParams read_only_params(const float* w1, const float* b1, const float* w2, const float* b2) {
  return ExpertParams{const_cast<float*>(w1), const_cast<float*>(b1), const_cast<float*>(w2),
                      const_cast<float*>(b2)};
}

}  // namespace

void gelu_mlp_forward(float* out, float* hidden_pre, float* hidden_act, const float* inp,
                      const float* w1, const float* b1, const float* w2, const float* b2, int N,
                      int C, int H) {
  const int64_t row_offsets[2] = {0, N};  // one expert, rows [0, N)
  experts_forward(out, ExpertActivations{hidden_pre, hidden_act}, inp,
                  read_only_params(w1, b1, w2, b2), row_offsets, ExpertShape{1, C, H});
}

void gelu_mlp_backward(float* dinp, float* dw1, float* db1, float* dw2, float* db2, float* d_hidden,
                       const float* dout, const float* inp, const float* hidden_pre,
                       const float* hidden_act, const float* w1, const float* w2, int N, int C,
                       int H) {
  const int64_t row_offsets[2] = {0, N};
  const ExpertActivations saved{const_cast<float*>(hidden_pre), const_cast<float*>(hidden_act)};
  experts_backward(dinp, ExpertParams{dw1, db1, dw2, db2}, d_hidden, dout, inp, saved,
                   read_only_params(w1, nullptr, w2, nullptr), row_offsets, ExpertShape{1, C, H});
}

// Reference: the expert reference kernels (plain loops, double accumulation).
void gelu_mlp_forward_reference(float* out, float* hidden_pre, float* hidden_act, const float* inp,
                                const float* w1, const float* b1, const float* w2, const float* b2,
                                int N, int C, int H) {
  const int64_t row_offsets[2] = {0, N};
  experts_forward_reference(out, ExpertActivations{hidden_pre, hidden_act}, inp,
                            read_only_params(w1, b1, w2, b2), row_offsets, ExpertShape{1, C, H});
}

void gelu_mlp_backward_reference(float* dinp, float* dw1, float* db1, float* dw2, float* db2,
                                 float* d_hidden, const float* dout, const float* inp,
                                 const float* hidden_pre, const float* hidden_act, const float* w1,
                                 const float* w2, int N, int C, int H) {
  const int64_t row_offsets[2] = {0, N};
  experts_backward_reference(
      dinp, ExpertParams{dw1, db1, dw2, db2}, d_hidden, dout, inp,
      ExpertActivations{const_cast<float*>(hidden_pre), const_cast<float*>(hidden_act)},
      read_only_params(w1, nullptr, w2, nullptr), row_offsets, ExpertShape{1, C, H});
}

}  // namespace moebench
