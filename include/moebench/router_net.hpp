// Router architectures (DESIGN §3): hidden states x [T, d] -> logits z [T, E].
//   linear        z = x W                              W  [d, E]
//   mlp           z = GELU(x W1) W2                     W1 [d, h], W2 [h, E]
//   mlp_hadamard  z = (GELU(x Wa) ⊙ (x Wb)) Wo          Wa, Wb [d, h], Wo [h, E]
// No biases. Parameters are replicated on every rank (dense); their gradients are summed by
// the caller. Parameters are stored contiguously in the order listed.
#pragma once

#include <cstdint>
#include <string>

namespace moebench {

enum class RouterArch { linear, mlp, mlp_hadamard };

const char* to_string(RouterArch arch);
RouterArch parse_router_arch(const std::string& option, const std::string& name);

struct RouterNetShape {
  RouterArch arch = RouterArch::linear;
  int d_model = 0;      // d
  int hidden = 0;       // h (mlp, mlp_hadamard)
  int num_experts = 0;  // E
};

int64_t router_param_count(const RouterNetShape& shape);
// Floats of saved activations per token (0 for linear).
int64_t router_activation_floats_per_token(const RouterNetShape& shape);

// Deterministic init from (seed, stream): input projections ~ N(0, 1/d), the output
// projection ~ N(0, 1/h) (linear: N(0, 1/d)).
void router_params_init(float* params, const RouterNetShape& shape, uint64_t seed);

// logits [T, E]; saved [T, router_activation_floats_per_token]; x [T, d].
void router_forward(float* logits, float* saved, const float* x, const float* params, int T,
                    const RouterNetShape& shape);

// d_x [T, d] and d_params are accumulated (+=). scratch holds
// router_activation_floats_per_token floats per token.
void router_backward(float* d_x, float* d_params, float* scratch, const float* d_logits,
                     const float* x, const float* saved, const float* params, int T,
                     const RouterNetShape& shape);

}  // namespace moebench
