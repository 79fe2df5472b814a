// Routing on the GPU (DESIGN §3): router logits -> a routing plan, on device memory, with the
// same semantics as route() in src/routing/routing.cpp (docs/routing.md):
//
//  - top-k of z (+ the selection bias), ties to the lower expert index; one warp per token;
//  - gates: top1 p of the chosen expert (or 1 with hard gates), topk_hard and hash 1/k,
//    softk softmax of the k selected logits / tau (renormalised over the kept ones with
//    renorm_after_drop), expert_choice p[t, e];
//  - capacity filled choice-major, in token order within a choice (drop policy "position"):
//    the position of assignment (j, t) in expert e's buffer is the number of assignments to e
//    before it in the order (0, 0), (0, 1), ..., (0, T-1), (1, 0), ... It is computed exactly,
//    as an ordered rank per expert over chunks of that order (per-chunk histograms, a scan
//    over chunks per expert, then a warp pass in order inside each chunk);
//  - expert choice: each expert takes the min(C, T) tokens with the largest p[:, e] (ties to
//    the lower token) by an exact radix select on the bits of p; each token keeps its chosen
//    experts with the largest logits (ties: lower expert), at most `slots`; positions follow
//    token order.
//
// Integer results (experts, kept, positions, demand, load) equal the CPU plan's whenever the
// inputs that decide them are equal: the logits for token-choice routers and for the per-token
// ranking of expert choice; for expert choice's per-expert selection also p, which the GPU
// computes with expf (CUDA's, <= 2 ulp) where the CPU uses fast_exp (<= 2e-7 relative), so two
// tokens whose p[:, e] differ by ~1e-7 can be ordered differently at the capacity boundary.
// Floating-point results (p, logsumexp, gates, aux and z losses) agree within ~1e-6.
//
// Not on the GPU yet: --drop-policy prob (its order depends on p to the last bit, see above)
// and top-k above kMaxGpuTopK; cuda_route rejects them with a UsageError. The backward pass
// (cuda_route_backward) follows route_backward.
#pragma once

#include <cstdint>

#include "moebench/cuda.hpp"
#include "moebench/routing.hpp"

namespace moebench {

inline constexpr int kMaxGpuTopK = 8;

// Throws UsageError naming the option when the GPU path cannot run `config`.
void validate_gpu_routing_config(const RoutingConfig& config);

// A routing plan in device memory; fields mirror RoutingPlan (routing.hpp). Counts are int32.
struct DeviceRoutingPlan {
  int num_tokens = 0;   // T
  int num_experts = 0;  // E
  int slots = 0;        // entries per token
  int capacity = 0;     // C
  DeviceArray<int32_t> expert;    // [T, slots]  -1 = empty entry
  DeviceArray<float> gate;        // [T, slots]
  DeviceArray<uint8_t> kept;      // [T, slots]
  DeviceArray<int32_t> position;  // [T, slots]  -1 if not kept
  DeviceArray<int32_t> demand;    // [E]
  DeviceArray<int32_t> load;      // [E]
  DeviceArray<float> probs;       // [T, E]  softmax(z) (when the configuration needs it)
  DeviceArray<float> logsumexp;   // [T]     (likewise)
  bool has_probabilities = false;  // whether the last cuda_route wrote probs and logsumexp
  DeviceArray<float> losses;      // [2]  aux_loss, z_loss

  // Scratch, sized by reserve().
  DeviceArray<int32_t> chunk_offsets;  // [chunks, E]  histogram, then exclusive scan
  DeviceArray<double> column_sums;     // [E]  sum_t p[t, e] (aux loss)
  DeviceArray<uint8_t> chosen;         // [T, E]  expert choice: expert e took token t
  int max_tokens = 0;

  // Sizes every buffer for up to max_tokens tokens (call once; cuda_route never allocates).
  void reserve(const RoutingConfig& config, int max_tokens);
};

// Builds the plan for one group on `stream`. All pointers are device memory.
//   logits         [T, E]  router output z (null for hash)
//   token_ids      [T]     hash only (null otherwise)
//   selection_bias [E]     added to z for selection when balance = bias (may be null)
// Asynchronous: nothing is copied to the host.
void cuda_route(DeviceRoutingPlan& plan, const float* logits, const int32_t* token_ids,
                const float* selection_bias, int num_tokens, const RoutingConfig& config,
                CUstream_st* stream);

// Copies the plan into a host RoutingPlan that reserve()d at least plan.num_tokens tokens
// under the same configuration (counts widened to int64); probs and logsumexp only when the
// routing computed them (as route() leaves them alone otherwise). Waits for `stream`.
void download_plan(RoutingPlan& host, const DeviceRoutingPlan& plan, CUstream_st* stream);

// The backward pass of the plan of the last cuda_route under `config` (routing.hpp's
// route_backward): d_logits [T, E] (overwritten) from d_gate [T, slots] (dL/d gate, 0 where
// not kept), including the aux and z losses' gradients. Learned routers only. One thread per
// token in route_backward's order of operations; the results agree with the CPU's within the
// plans' own differences (gates and p, a few 1e-7). Device pointers; asynchronous on `stream`.
void cuda_route_backward(float* d_logits, const float* d_gate, const DeviceRoutingPlan& plan,
                         const RoutingConfig& config, CUstream_st* stream);

}  // namespace moebench
