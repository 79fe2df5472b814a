// Experts: the local experts' feed-forward networks, evaluated as grouped GEMMs over the rows
// each expert received.
//
// Each expert e is  y = GELU(x W1[e] + b1[e]) W2[e] + b2[e]   (d -> h -> d),
// with GELU the tanh approximation (GPT-2 / PyTorch approximate="tanh"):
//   GELU(u) = 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))).
//
// Rows are grouped expert-major: expert e owns rows [row_offsets[e], row_offsets[e+1]) of
// every [N, .] buffer below (N = row_offsets[num_experts]). An expert may own zero rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moebench {

struct ExpertShape {
  int num_experts = 0;  // experts held by this rank (E_local)
  int d_model = 0;      // d
  int d_hidden = 0;     // h
};

// Views into one contiguous parameter (or gradient) allocation.
struct ExpertParams {
  float* w1 = nullptr;  // [E_local, d, h]  row-major per expert
  float* b1 = nullptr;  // [E_local, h]
  float* w2 = nullptr;  // [E_local, h, d]
  float* b2 = nullptr;  // [E_local, d]
};

// Number of floats of one full parameter set for `shape`.
int64_t expert_param_count(const ExpertShape& shape);

// Carves an ExpertParams out of `storage` (at least expert_param_count floats), in the order
// w1, b1, w2, b2.
ExpertParams expert_params_view(float* storage, const ExpertShape& shape);

// The expert FFN products' operand type; accumulation and every output are fp32 in both.
// bf16 runs on the CUDA backend only (CudaExperts); the CPU experts are fp32.
enum class GemmPrecision { fp32, bf16 };
const char* to_string(GemmPrecision precision);
// Throws UsageError naming `option` on anything but "fp32" or "bf16".
GemmPrecision parse_gemm_precision(const std::string& option, const std::string& name);

// AdamW weight-decay flags of one parameter set, per element: 1 for W1 and W2, 0 for biases.
std::vector<uint8_t> expert_decay_mask(const ExpertShape& shape);

// Deterministic initialisation: expert with *global* index first_global_expert + e draws from
// random stream (layer_seed, global index), so the same expert gets the same weights whatever
// the rank count. W1 ~ N(0, 1/d), W2 ~ N(0, 1/h), biases 0.
void expert_params_init(ExpertParams params, const ExpertShape& shape, uint64_t layer_seed,
                        int first_global_expert);

// Activations saved by the forward pass for the backward pass.
struct ExpertActivations {
  float* hidden_pre = nullptr;  // [N, h]  x W1 + b1
  float* hidden_act = nullptr;  // [N, h]  GELU(hidden_pre)
};

// Fast path: OpenMP over blocks of each expert's rows (and, for weight gradients, of hidden
// columns), a single-threaded OpenBLAS sgemm per block, bias and GELU beside it
// (src/experts/experts_fast.cpp).
// out: [N, d]; in: [N, d].
void experts_forward(float* out, ExpertActivations saved, const float* in,
                     const ExpertParams& params, const int64_t* row_offsets,
                     const ExpertShape& shape);

// How experts_backward writes the parameter gradients.
enum class GradWrite {
  accumulate,  // grads += this call's gradient (the caller clears them between steps)
  overwrite,   // grads = this call's gradient, whatever they held: no clearing pass (a step's
               // 8 MB at the quickstart model), and an expert without rows gets zeros
};

// Gradients: d_in [N, d] is overwritten; `grads` per `write` (the same bits either way when
// accumulating into zeros). d_hidden is scratch [N, h].
void experts_backward(float* d_in, ExpertParams grads, float* d_hidden, const float* d_out,
                      const float* in, ExpertActivations saved, const ExpertParams& params,
                      const int64_t* row_offsets, const ExpertShape& shape,
                      GradWrite write = GradWrite::accumulate);

// Reference: plain loops, no BLAS, no threads. The fast path is tested against these.
void experts_forward_reference(float* out, ExpertActivations saved, const float* in,
                               const ExpertParams& params, const int64_t* row_offsets,
                               const ExpertShape& shape);
void experts_backward_reference(float* d_in, ExpertParams grads, float* d_hidden,
                                const float* d_out, const float* in, ExpertActivations saved,
                                const ExpertParams& params, const int64_t* row_offsets,
                                const ExpertShape& shape,
                                GradWrite write = GradWrite::accumulate);

// GELU (tanh approximation) and its derivative, shared with the dense model.
float gelu(float u);
float gelu_derivative(float u);

}  // namespace moebench
