// Routing (DESIGN §3): router logits -> a routing plan, and the plan's gradient back to the
// logits. Pure local computation on one group (one rank's micro-batch); no communication.
//
// Notation: T tokens in the group, E experts, k choices per token, z = logits [T, E],
// p = softmax(z) in fp32, C = capacity per expert per group.
//
// A plan has `slots` entries per token (k for token-choice routers; for expert_choice the
// per-token limit, or E when unlimited). Entry (t, s) names an expert (or -1 when empty), its
// gate (combine weight before dropping), whether it was kept, and its position in the
// expert's buffer (0 <= position < C when kept). A dropped assignment contributes nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moebench {

enum class RouterKind { top1, topk_hard, softk, hash, expert_choice };
enum class DropPolicy { position, prob };
enum class BalanceKind { none, aux, bias };

struct RoutingConfig {
  RouterKind router = RouterKind::topk_hard;
  int num_experts = 8;           // E
  int top_k = 1;                 // k
  double capacity_factor = 1.0;  // CF; <= 0 means dropless (token-choice routers only)
  DropPolicy drop_policy = DropPolicy::position;
  float temperature = 1.0f;        // softk: tau
  bool renorm_after_drop = false;  // softk: renormalise gates over the kept choices
  bool hard_gates = false;         // top1: gate 1 instead of p
  int ec_max_per_token = -1;       // expert_choice: per-token limit; -1 = k, 0 = no limit
  BalanceKind balance = BalanceKind::none;
  float aux_loss_coeff = 0.01f;   // alpha
  float z_loss_coeff = 0.0f;      // beta
  float bias_update_rate = 1e-3f;  // gamma (balance = bias)
};

// Names as used on the command line and in traces ("top1", "position", "aux", ...).
const char* to_string(RouterKind kind);
const char* to_string(DropPolicy policy);
const char* to_string(BalanceKind kind);
// Throw UsageError naming `option` and the accepted values on an unknown name.
RouterKind parse_router_kind(const std::string& option, const std::string& name);
DropPolicy parse_drop_policy(const std::string& option, const std::string& name);
// "auto" resolves to aux for learned token-choice routers and none for hash/expert_choice.
BalanceKind parse_balance_kind(const std::string& option, const std::string& name,
                               RouterKind router);

bool is_token_choice(RouterKind kind);  // top1, topk_hard, softk, hash
bool has_learned_router(RouterKind kind);  // everything but hash

// Checks the combination (k <= E, top1 needs k = 1, dropless only for token choice, balance
// only for learned token-choice routers, temperature > 0, ...). Throws UsageError whose
// message names the option and the fix.
void validate_routing_config(const RoutingConfig& config);

// C = max(1, ceil(CF * T * k / E)); for CF <= 0 (dropless) returns T * k (never binding).
int expert_capacity(const RoutingConfig& config, int num_tokens);
// Entries per token in a plan.
int plan_slots(const RoutingConfig& config);

// The documented hash: expert_j(t) = (id * A + B + j * C) mod E with the odd constants below,
// computed in unsigned 64-bit arithmetic; if expert_j repeats an earlier choice of the same
// token (possible when gcd(C, E) > 1), the next expert index (mod E) not yet taken is used.
inline constexpr uint64_t kHashA = 2654435761ULL;  // Knuth's multiplicative constant
inline constexpr uint64_t kHashB = 40503ULL;
inline constexpr uint64_t kHashC = 7919ULL;
void hash_experts(int* experts, int32_t token_id, int num_experts, int top_k);

struct RoutingPlan {
  int num_tokens = 0;   // T
  int num_experts = 0;  // E
  int slots = 0;        // entries per token
  int capacity = 0;     // C
  std::vector<int32_t> expert;    // [T, slots]  expert index, -1 = empty entry
  std::vector<float> gate;        // [T, slots]  combine weight before dropping
  std::vector<uint8_t> kept;      // [T, slots]  1 if the assignment holds a slot
  std::vector<int32_t> position;  // [T, slots]  slot in the expert's buffer, -1 if not kept
  std::vector<int64_t> demand;    // [E]  assignments requested of each expert
  std::vector<int64_t> load;      // [E]  assignments kept by each expert
  // Saved for the backward pass (filled when the router is learned):
  std::vector<float> probs;       // [T, E]  softmax(z)
  std::vector<float> logsumexp;   // [T]
  float aux_loss = 0.0f;          // alpha * E * sum_e f_e P_e  (0 unless balance = aux)
  float z_loss = 0.0f;            // beta * mean_t logsumexp(z_t)^2

  // Sizes every buffer for up to max_tokens tokens (call once; route() never allocates
  // when T <= max_tokens).
  void reserve(const RoutingConfig& config, int max_tokens);
  int64_t kept_assignments() const;

  // Scratch owned by the plan so that route() does not allocate.
  std::vector<int32_t> order_scratch;   // [T]
  std::vector<uint8_t> chosen_scratch;  // [T, E] (expert_choice)
  std::vector<float> column_scratch;    // [E, T] (expert_choice: p by expert)
  int max_tokens_ = 0;
};

// Builds the plan for one group.
//   logits    [T, E]  router output z (unused for hash; may be null then)
//   token_ids [T]     token ids (hash only; may be null otherwise)
//   selection_bias [E] added to z for selection only (balance = bias); may be null
void route(RoutingPlan& plan, const float* logits, const int32_t* token_ids,
           const float* selection_bias, int num_tokens, const RoutingConfig& config);

// Gradient of the layer's objective with respect to the logits:
//   d_logits [T, E] (overwritten) = d(gates)/dz applied to d_gate [T, slots]
//                                   + d(aux_loss)/dz + d(z_loss)/dz.
// d_gate holds dL/d(gate) for kept entries (entries that are not kept are ignored).
void route_backward(float* d_logits, const float* d_gate, const RoutingPlan& plan,
                    const RoutingConfig& config);

// DeepSeek-V3 auxiliary-loss-free balancing: bias[e] += gamma * sign(mean(demand) - demand[e]),
// with `demand` the global per-expert demand of the step (identical on all ranks, so the bias
// stays replicated).
void update_selection_bias(float* bias, const int64_t* demand, const RoutingConfig& config);

}  // namespace moebench
