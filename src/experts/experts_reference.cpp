// Reference expert FFN: plain loops, double accumulation, no BLAS, no threads. Slow on
// purpose; it is the oracle the fast path (experts_fast.cpp) is tested against.
#include <cstdint>

#include "experts_internal.hpp"
#include "moebench/experts.hpp"

namespace moebench {

void experts_forward_reference(float* out, ExpertActivations saved, const float* in,
                               const ExpertParams& params, const int64_t* row_offsets,
                               const ExpertShape& shape) {
  detail::check_expert_arguments(row_offsets, shape);
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  for (int e = 0; e < shape.num_experts; ++e) {
    const detail::ExpertSlice p = detail::expert_slice(params, shape, e);
    for (int64_t r = row_offsets[e]; r < row_offsets[e + 1]; ++r) {
      const float* x = in + r * d;                  // [d]
      float* pre = saved.hidden_pre + r * h;        // [h]
      float* act = saved.hidden_act + r * h;        // [h]
      for (int64_t j = 0; j < h; ++j) {
        double sum = p.b1[j];
        for (int64_t i = 0; i < d; ++i) sum += double{x[i]} * double{p.w1[i * h + j]};
        pre[j] = static_cast<float>(sum);
        act[j] = gelu(pre[j]);
      }
      float* y = out + r * d;                       // [d]
      for (int64_t k = 0; k < d; ++k) {
        double sum = p.b2[k];
        for (int64_t j = 0; j < h; ++j) sum += double{act[j]} * double{p.w2[j * d + k]};
        y[k] = static_cast<float>(sum);
      }
    }
  }
}

void experts_backward_reference(float* d_in, ExpertParams grads, float* d_hidden,
                                const float* d_out, const float* in, ExpertActivations saved,
                                const ExpertParams& params, const int64_t* row_offsets,
                                const ExpertShape& shape, GradWrite write) {
  detail::check_expert_arguments(row_offsets, shape);
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  // What a gradient element's sum starts from.
  const auto start = [write](float old) {
    return write == GradWrite::accumulate ? double{old} : 0.0;
  };
  for (int e = 0; e < shape.num_experts; ++e) {
    const int64_t first = row_offsets[e];
    const int64_t last = row_offsets[e + 1];
    const detail::ExpertSlice p = detail::expert_slice(params, shape, e);
    const detail::ExpertSlice g = detail::expert_slice(grads, shape, e);

    // Per row: d_hidden = (d_out W2^T) * GELU'(hidden_pre), then d_in = d_hidden W1^T.
    for (int64_t r = first; r < last; ++r) {
      const float* dy = d_out + r * d;               // [d]
      const float* pre = saved.hidden_pre + r * h;   // [h]
      float* dh = d_hidden + r * h;                  // [h]
      for (int64_t j = 0; j < h; ++j) {
        double sum = 0.0;
        for (int64_t k = 0; k < d; ++k) sum += double{dy[k]} * double{p.w2[j * d + k]};
        dh[j] = static_cast<float>(sum * double{gelu_derivative(pre[j])});
      }
      float* dx = d_in + r * d;                      // [d]
      for (int64_t i = 0; i < d; ++i) {
        double sum = 0.0;
        for (int64_t j = 0; j < h; ++j) sum += double{dh[j]} * double{p.w1[i * h + j]};
        dx[i] = static_cast<float>(sum);
      }
    }

    // Parameter gradients: sums over this expert's rows, added to start(old value).
    for (int64_t i = 0; i < d; ++i) {        // dW1 [d, h] += in^T d_hidden
      for (int64_t j = 0; j < h; ++j) {
        double sum = 0.0;
        for (int64_t r = first; r < last; ++r) {
          sum += double{in[r * d + i]} * double{d_hidden[r * h + j]};
        }
        g.w1[i * h + j] = static_cast<float>(start(g.w1[i * h + j]) + sum);
      }
    }
    for (int64_t j = 0; j < h; ++j) {        // db1 [h] += column sums of d_hidden
      double sum = 0.0;
      for (int64_t r = first; r < last; ++r) sum += double{d_hidden[r * h + j]};
      g.b1[j] = static_cast<float>(start(g.b1[j]) + sum);
    }
    for (int64_t j = 0; j < h; ++j) {        // dW2 [h, d] += hidden_act^T d_out
      for (int64_t k = 0; k < d; ++k) {
        double sum = 0.0;
        for (int64_t r = first; r < last; ++r) {
          sum += double{saved.hidden_act[r * h + j]} * double{d_out[r * d + k]};
        }
        g.w2[j * d + k] = static_cast<float>(start(g.w2[j * d + k]) + sum);
      }
    }
    for (int64_t k = 0; k < d; ++k) {        // db2 [d] += column sums of d_out
      double sum = 0.0;
      for (int64_t r = first; r < last; ++r) sum += double{d_out[r * d + k]};
      g.b2[k] = static_cast<float>(start(g.b2[k]) + sum);
    }
  }
}

}  // namespace moebench
