// Reference linear layer and tied head: plain loops, double accumulation, one thread. Slow on
// purpose; the fast path (matmul.cpp) is tested against these.
#include <cstdint>

#include "moebench/layers.hpp"

namespace moebench {

void matmul_forward_reference(float* out, const float* inp, const float* weight, const float* bias,
                              int N, int C, int OC) {
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t o = 0; o < OC; ++o) {
      double sum = bias != nullptr ? double{bias[o]} : 0.0;
      for (int64_t i = 0; i < C; ++i) sum += double{inp[r * C + i]} * double{weight[i * OC + o]};
      out[r * OC + o] = static_cast<float>(sum);
    }
  }
}

void matmul_backward_reference(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, int N, int C, int OC) {
  for (int64_t r = 0; r < N; ++r) {  // dinp [N, C] += dout W^T
    for (int64_t i = 0; i < C; ++i) {
      double sum = 0.0;
      for (int64_t o = 0; o < OC; ++o) sum += double{dout[r * OC + o]} * double{weight[i * OC + o]};
      dinp[r * C + i] = static_cast<float>(double{dinp[r * C + i]} + sum);
    }
  }
  for (int64_t i = 0; i < C; ++i) {  // dweight [C, OC] += inp^T dout
    for (int64_t o = 0; o < OC; ++o) {
      double sum = 0.0;
      for (int64_t r = 0; r < N; ++r) sum += double{inp[r * C + i]} * double{dout[r * OC + o]};
      dweight[i * OC + o] = static_cast<float>(double{dweight[i * OC + o]} + sum);
    }
  }
  if (dbias == nullptr) return;
  for (int64_t o = 0; o < OC; ++o) {  // dbias [OC] += column sums of dout
    double sum = 0.0;
    for (int64_t r = 0; r < N; ++r) sum += double{dout[r * OC + o]};
    dbias[o] = static_cast<float>(double{dbias[o]} + sum);
  }
}

void lm_head_forward_reference(float* logits, const float* inp, const float* wte, int N, int C,
                               int V) {
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t v = 0; v < V; ++v) {
      double sum = 0.0;
      for (int64_t i = 0; i < C; ++i) sum += double{inp[r * C + i]} * double{wte[v * C + i]};
      logits[r * V + v] = static_cast<float>(sum);
    }
  }
}

void lm_head_backward_reference(float* dinp, float* dwte, const float* dlogits, const float* inp,
                                const float* wte, int N, int C, int V) {
  for (int64_t r = 0; r < N; ++r) {  // dinp [N, C] += dlogits wte
    for (int64_t i = 0; i < C; ++i) {
      double sum = 0.0;
      for (int64_t v = 0; v < V; ++v) sum += double{dlogits[r * V + v]} * double{wte[v * C + i]};
      dinp[r * C + i] = static_cast<float>(double{dinp[r * C + i]} + sum);
    }
  }
  for (int64_t v = 0; v < V; ++v) {  // dwte [V, C] += dlogits^T inp
    for (int64_t i = 0; i < C; ++i) {
      double sum = 0.0;
      for (int64_t r = 0; r < N; ++r) sum += double{dlogits[r * V + v]} * double{inp[r * C + i]};
      dwte[v * C + i] = static_cast<float>(double{dwte[v * C + i]} + sum);
    }
  }
}

}  // namespace moebench
