// Routing strategies, capacity and their gradients (DESIGN §3). See routing.hpp.
#include "moebench/routing.hpp"

#include <algorithm>
#include <functional>
#include <cmath>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <limits>
#include <numeric>
#include <sstream>

#include "moebench/check.hpp"
#include "moebench/fast_exp.hpp"

namespace moebench {

namespace {

// Row-wise softmax of z [T, E] into probs, with logsumexp [T]. The exponentials are
// fast_exp (vectorised); the normaliser is summed in double.
void softmax_rows(float* probs, float* logsumexp, const float* logits, int num_tokens,
                  int num_experts) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < num_tokens; ++t) {
    const float* z = logits + static_cast<int64_t>(t) * num_experts;
    float* p = probs + static_cast<int64_t>(t) * num_experts;
    const float max_z = row_max(z, num_experts);
    fast_exp_shifted(p, z, max_z, num_experts);
    const double sum = row_sum(p, num_experts);
    const float inv = static_cast<float>(1.0 / sum);
    for (int e = 0; e < num_experts; ++e) p[e] *= inv;
    logsumexp[t] = max_z + static_cast<float>(std::log(sum));
  }
}

// Bit b set where lanes[b] >= tau, for 16 lanes.
using Lanes16 = Floats16;
inline uint32_t candidate_mask(const Lanes16& lanes, float tau) {
#if defined(__AVX512F__)
  __m512 v;
  std::memcpy(&v, &lanes, sizeof(v));
  return _mm512_cmp_ps_mask(v, _mm512_set1_ps(tau), _CMP_GE_OQ);
#elif defined(__AVX__)
  __m256 lo, hi;
  std::memcpy(&lo, &lanes, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&lanes) + sizeof(lo), sizeof(hi));
  const __m256 t = _mm256_set1_ps(tau);
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(lo, t, _CMP_GE_OQ))) |
         (static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(hi, t, _CMP_GE_OQ))) << 8);
#else
  uint32_t mask = 0;
  for (int b = 0; b < 16; ++b) mask |= static_cast<uint32_t>(lanes[b] >= tau) << b;
  return mask;
#endif
}

// Top-k of scores[0..n) (+ bias when given): indices in descending score order, ties to the
// lower index. Scores must be finite.
//
// Fast path (n >= 4 * kLanes, k <= kLanes / 2): split the row into kLanes strided blocks
// (block b = {i : i mod kLanes = b}) and take each block's maximum with a vectorisable pass.
// The k-th largest block maximum tau is a lower bound on the k-th largest score (the k best
// blocks hold k distinct scores >= tau), so only scores >= tau, which live in blocks whose
// maximum is >= tau, can be selected: those few blocks are scanned and their candidates
// inserted in (score desc, index asc) order. Otherwise: one insertion pass over the row.
template <bool kHasBias>
void select_topk(int* best_index, const float* scores, const float* bias, int n, int k) {
  constexpr int kLanes = 16;
  float best_value[64];
  int filled = 0;
  // Inserts (value, index) if it beats the current k-th entry; order: value desc, index asc.
  auto insert = [&](float value, int index) {
    if (filled == k && !(value > best_value[k - 1] ||
                         (value == best_value[k - 1] && index < best_index[k - 1]))) {
      return;
    }
    int p = filled < k ? filled : k - 1;
    while (p > 0 && (best_value[p - 1] < value ||
                     (best_value[p - 1] == value && best_index[p - 1] > index))) {
      best_value[p] = best_value[p - 1];
      best_index[p] = best_index[p - 1];
      --p;
    }
    best_value[p] = value;
    best_index[p] = index;
    if (filled < k) ++filled;
  };
  auto score = [&](int i) { return kHasBias ? scores[i] + bias[i] : scores[i]; };

  if (n < 4 * kLanes || k > kLanes / 2) {
    for (int i = 0; i < n; ++i) insert(score(i), i);
    return;
  }
  // Block maxima, kLanes at a time (GCC/Clang vector extension: one AVX-512 register, or
  // two AVX2 / four SSE registers).
  static_assert(kLanes == 16, "candidate_mask handles 16 lanes");
  using Lanes = Lanes16;
  auto load = [&](int i) {
    Lanes v;
    std::memcpy(&v, scores + i, sizeof(Lanes));
    if constexpr (kHasBias) {
      Lanes b;
      std::memcpy(&b, bias + i, sizeof(Lanes));
      v += b;
    }
    return v;
  };
  Lanes lane_max = load(0);
  const int full = n / kLanes * kLanes;
  for (int row = kLanes; row < full; row += kLanes) {
    const Lanes v = load(row);
    lane_max = v > lane_max ? v : lane_max;
  }
  float block_max[kLanes];
  std::memcpy(block_max, &lane_max, sizeof(Lanes));
  if (full < n) {  // fold the tail into the first lanes
    for (int i = full; i < n; ++i) block_max[i - full] = std::max(block_max[i - full], score(i));
    std::memcpy(&lane_max, block_max, sizeof(Lanes));
  }
  // tau = k-th largest block maximum = the largest block maximum m_b with at least k maxima
  // >= m_b. Branch-free: 16 mask compares and popcounts (a data-dependent insertion list
  // here cost more than the whole scan, in branch mispredictions).
  float tau = -std::numeric_limits<float>::infinity();
  for (int b = 0; b < kLanes; ++b) {
    const float m = block_max[b];
    const int at_least = __builtin_popcount(candidate_mask(lane_max, m));
    tau = at_least >= k && m > tau ? m : tau;
  }
  // Candidates: scores >= tau, found a row of kLanes at a time, inserted in index order.
  for (int row = 0; row < full; row += kLanes) {
    const Lanes v = load(row);
    uint32_t hits = candidate_mask(v, tau);
    while (hits != 0) {
      const int b = __builtin_ctz(hits);
      hits &= hits - 1;
      insert(v[b], row + b);
    }
  }
  for (int i = full; i < n; ++i) {
    if (score(i) >= tau) insert(score(i), i);
  }
}

bool needs_probabilities(const RoutingConfig& config) {
  return config.router == RouterKind::top1 || config.router == RouterKind::expert_choice ||
         config.balance == BalanceKind::aux || config.z_loss_coeff > 0.0f ||
         (config.drop_policy == DropPolicy::prob && has_learned_router(config.router));
}

[[noreturn]] void bad_name(const std::string& option, const std::string& name,
                           const char* accepted) {
  std::ostringstream message;
  message << option << ": unknown value '" << name << "' (accepted: " << accepted << ")";
  throw UsageError(message.str());
}

// Token-choice routers: selection, gates, then capacity filled choice-major.
void route_token_choice(RoutingPlan& plan, const float* logits, const int32_t* token_ids,
                        const float* selection_bias, const RoutingConfig& config) {
  const int T = plan.num_tokens, E = plan.num_experts, k = config.top_k;
  const bool hash = config.router == RouterKind::hash;

#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    int* chosen = plan.expert.data() + static_cast<int64_t>(t) * k;
    float* gate = plan.gate.data() + static_cast<int64_t>(t) * k;
    if (hash) {
      hash_experts(chosen, token_ids[t], E, k);
    } else if (selection_bias != nullptr) {
      select_topk<true>(chosen, logits + static_cast<int64_t>(t) * E, selection_bias, E, k);
    } else {
      select_topk<false>(chosen, logits + static_cast<int64_t>(t) * E, nullptr, E, k);
    }
    switch (config.router) {
      case RouterKind::top1:
        gate[0] = config.hard_gates ? 1.0f : plan.probs[static_cast<int64_t>(t) * E + chosen[0]];
        break;
      case RouterKind::topk_hard:
      case RouterKind::hash:
        for (int j = 0; j < k; ++j) gate[j] = 1.0f / static_cast<float>(k);
        break;
      case RouterKind::softk: {
        // softmax over the k selected logits / tau (the bias never enters the gates)
        const float* z = logits + static_cast<int64_t>(t) * E;
        float max_z = z[chosen[0]];
        for (int j = 1; j < k; ++j) max_z = std::max(max_z, z[chosen[j]]);
        float sum = 0.0f;
        for (int j = 0; j < k; ++j) {
          gate[j] = std::exp((z[chosen[j]] - max_z) / config.temperature);
          sum += gate[j];
        }
        for (int j = 0; j < k; ++j) gate[j] /= sum;
        break;
      }
      case RouterKind::expert_choice:
        break;  // not a token-choice router
    }
  }

  // Capacity: all first choices, then all second choices, ... (GShard). Within a choice, in
  // token order (position) or by descending p of that assignment, ties to the lower token.
  std::fill(plan.demand.begin(), plan.demand.end(), 0);
  std::fill(plan.load.begin(), plan.load.end(), 0);
  const bool by_prob = config.drop_policy == DropPolicy::prob && !hash;
  int* order = plan.order_scratch.data();
  for (int j = 0; j < k; ++j) {
    std::iota(order, order + T, 0);
    if (by_prob) {
      const float* probs = plan.probs.data();
      const int32_t* expert = plan.expert.data();
      std::stable_sort(order, order + T, [&](int a, int b) {
        return probs[static_cast<int64_t>(a) * E + expert[static_cast<int64_t>(a) * k + j]] >
               probs[static_cast<int64_t>(b) * E + expert[static_cast<int64_t>(b) * k + j]];
      });
    }
    for (int i = 0; i < T; ++i) {
      const int64_t entry = static_cast<int64_t>(order[i]) * k + j;
      const int e = plan.expert[entry];
      ++plan.demand[e];
      if (plan.load[e] < plan.capacity) {
        plan.kept[entry] = 1;
        plan.position[entry] = static_cast<int32_t>(plan.load[e]++);
      } else {
        plan.kept[entry] = 0;
        plan.position[entry] = -1;
      }
    }
  }

  if (config.router == RouterKind::softk && config.renorm_after_drop) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; ++t) {
      const int64_t base = static_cast<int64_t>(t) * k;
      const float* z = logits + static_cast<int64_t>(t) * E;
      float max_z = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < k; ++j)
        if (plan.kept[base + j]) max_z = std::max(max_z, z[plan.expert[base + j]]);
      float sum = 0.0f;
      for (int j = 0; j < k; ++j) {
        plan.gate[base + j] =
            plan.kept[base + j] ? std::exp((z[plan.expert[base + j]] - max_z) / config.temperature)
                                : 0.0f;
        sum += plan.gate[base + j];
      }
      if (sum > 0.0f)
        for (int j = 0; j < k; ++j) plan.gate[base + j] /= sum;
    }
  }
}

// Expert choice: each expert takes its top-C tokens by p[:, e] (ties to the lower token);
// each token keeps at most `limit` of the experts that chose it, ranked by its logits.
void route_expert_choice(RoutingPlan& plan, const float* logits) {
  const int T = plan.num_tokens, E = plan.num_experts, slots = plan.slots;
  const int take = std::min(plan.capacity, T);
  uint8_t* chosen = plan.chosen_scratch.data();  // [T, E]
  std::fill(chosen, chosen + static_cast<int64_t>(T) * E, uint8_t{0});
  const float* probs = plan.probs.data();
  // Columns of p, contiguous per expert: [E, T].
  float* columns = plan.column_scratch.data();
  constexpr int kTile = 32;  // tiled transpose: both sides stay in cache
  for (int t0 = 0; t0 < T; t0 += kTile) {
    for (int e0 = 0; e0 < E; e0 += kTile) {
      const int t1 = std::min(t0 + kTile, T), e1 = std::min(e0 + kTile, E);
      for (int e = e0; e < e1; ++e) {
        for (int t = t0; t < t1; ++t) {
          columns[static_cast<int64_t>(e) * T + t] = probs[static_cast<int64_t>(t) * E + e];
        }
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int e = 0; e < E; ++e) {
    // The take-th largest probability v: tokens above v are all taken, tokens equal to v in
    // token order until the expert is full (ties go to the lower token).
    const float* column = columns + static_cast<int64_t>(e) * T;
    // A min-heap of the `take` largest values seen; most values lose against its top.
    thread_local std::vector<float> heap;
    heap.assign(column, column + take);
    std::make_heap(heap.begin(), heap.end(), std::greater<float>());
    for (int t = take; t < T; ++t) {
      if (column[t] > heap.front()) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<float>());
        heap.back() = column[t];
        std::push_heap(heap.begin(), heap.end(), std::greater<float>());
      }
    }
    const float v = heap.front();
    int above = 0;
    for (int t = 0; t < T; ++t) above += column[t] > v;
    int ties_left = take - above;
    for (int t = 0; t < T; ++t) {
      if (column[t] > v || (column[t] == v && ties_left-- > 0)) {
        chosen[static_cast<int64_t>(t) * E + e] = 1;
      }
    }
    plan.demand[e] = take;
    plan.load[e] = 0;
  }
  for (int t = 0; t < T; ++t) {
    const int64_t base = static_cast<int64_t>(t) * slots;
    const float* z = logits + static_cast<int64_t>(t) * E;
    int count = 0;
    // Insertion by descending logit (ties: lower expert first), truncated at `slots`.
    for (int e = 0; e < E; ++e) {
      if (!chosen[static_cast<int64_t>(t) * E + e]) continue;
      int p = count < slots ? count : slots;
      while (p > 0 && z[plan.expert[base + p - 1]] < z[e]) {
        if (p < slots) plan.expert[base + p] = plan.expert[base + p - 1];
        --p;
      }
      if (p < slots) plan.expert[base + p] = e;
      if (count < slots) ++count;
    }
    for (int s = 0; s < slots; ++s) {
      const bool used = s < count;
      if (!used) plan.expert[base + s] = -1;
      const int e = plan.expert[base + s];
      plan.kept[base + s] = used ? 1 : 0;
      plan.gate[base + s] = used ? probs[static_cast<int64_t>(t) * E + e] : 0.0f;
      plan.position[base + s] = used ? static_cast<int32_t>(plan.load[e]++) : -1;
    }
  }
}

}  // namespace

const char* to_string(RouterKind kind) {
  switch (kind) {
    case RouterKind::top1: return "top1";
    case RouterKind::topk_hard: return "topk_hard";
    case RouterKind::softk: return "softk";
    case RouterKind::hash: return "hash";
    case RouterKind::expert_choice: return "expert_choice";
  }
  return "?";
}

const char* to_string(DropPolicy policy) {
  return policy == DropPolicy::position ? "position" : "prob";
}

const char* to_string(BalanceKind kind) {
  switch (kind) {
    case BalanceKind::none: return "none";
    case BalanceKind::aux: return "aux";
    case BalanceKind::bias: return "bias";
  }
  return "?";
}

RouterKind parse_router_kind(const std::string& option, const std::string& name) {
  for (RouterKind kind : {RouterKind::top1, RouterKind::topk_hard, RouterKind::softk,
                          RouterKind::hash, RouterKind::expert_choice}) {
    if (name == to_string(kind)) return kind;
  }
  bad_name(option, name, "top1, topk_hard, softk, hash, expert_choice");
}

DropPolicy parse_drop_policy(const std::string& option, const std::string& name) {
  if (name == "position") return DropPolicy::position;
  if (name == "prob") return DropPolicy::prob;
  bad_name(option, name, "position, prob");
}

BalanceKind parse_balance_kind(const std::string& option, const std::string& name,
                               RouterKind router) {
  if (name == "auto") {
    return (is_token_choice(router) && has_learned_router(router)) ? BalanceKind::aux
                                                                    : BalanceKind::none;
  }
  for (BalanceKind kind : {BalanceKind::none, BalanceKind::aux, BalanceKind::bias}) {
    if (name == to_string(kind)) return kind;
  }
  bad_name(option, name, "auto, none, aux, bias");
}

bool is_token_choice(RouterKind kind) { return kind != RouterKind::expert_choice; }
bool has_learned_router(RouterKind kind) { return kind != RouterKind::hash; }

void validate_routing_config(const RoutingConfig& config) {
  const int E = config.num_experts, k = config.top_k;
  std::ostringstream message;
  if (E < 1) {
    message << "--experts must be >= 1 (got " << E << ")";
  } else if (k < 1) {
    message << "--top-k must be >= 1 (got " << k << ")";
  } else if (k > E) {
    message << "--top-k " << k << " exceeds --experts " << E
            << ": a token cannot choose more distinct experts than exist (use --top-k <= " << E
            << ")";
  } else if (k > 64) {
    message << "--top-k " << k << " is larger than the supported maximum of 64";
  } else if (config.router == RouterKind::top1 && k != 1) {
    message << "--router top1 routes each token to one expert, but --top-k is " << k
            << " (use --top-k 1, or --router topk_hard / softk for k > 1)";
  } else if (!std::isfinite(config.capacity_factor)) {
    message << "--capacity-factor must be a finite number (got " << config.capacity_factor << ")";
  } else if (config.capacity_factor <= 0.0 && !is_token_choice(config.router)) {
    message << "--capacity-factor " << config.capacity_factor
            << " means dropless, which only token-choice routers support; expert_choice needs "
               "a capacity factor > 0";
  } else if (!(config.temperature > 0.0f)) {
    message << "--temperature must be > 0 (got " << config.temperature << ")";
  } else if (config.ec_max_per_token < -1) {
    message << "--ec-max-per-token must be >= 0 (0 = no limit; got " << config.ec_max_per_token
            << ")";
  } else if (config.balance != BalanceKind::none &&
             !(is_token_choice(config.router) && has_learned_router(config.router))) {
    message << "--balance " << to_string(config.balance) << " applies to learned token-choice "
            << "routers (top1, topk_hard, softk); --router " << to_string(config.router)
            << " needs --balance none (or auto)";
  } else if (config.router == RouterKind::hash && config.z_loss_coeff > 0.0f) {
    message << "--z-loss applies to learned routers; --router hash has no logits (use --z-loss 0)";
  } else if (config.z_loss_coeff < 0.0f || config.aux_loss_coeff < 0.0f) {
    message << "--z-loss and --aux-loss-coeff must be >= 0";
  } else {
    return;
  }
  throw UsageError(message.str());
}

int expert_capacity(const RoutingConfig& config, int num_tokens) {
  const int64_t assignments = static_cast<int64_t>(num_tokens) * config.top_k;
  if (config.capacity_factor <= 0.0) return static_cast<int>(assignments);  // dropless
  const double exact = config.capacity_factor * static_cast<double>(assignments) /
                       static_cast<double>(config.num_experts);
  // Products within 1e-9 (relative) of an integer are that integer: 1.1 * 640 is 704, not 705.
  const double capacity = std::ceil(exact * (1.0 - 1e-9));
  return static_cast<int>(std::max(1.0, capacity));
}

int plan_slots(const RoutingConfig& config) {
  if (config.router != RouterKind::expert_choice) return config.top_k;
  if (config.ec_max_per_token == 0) return config.num_experts;
  return config.ec_max_per_token < 0 ? config.top_k
                                     : std::min(config.ec_max_per_token, config.num_experts);
}

void hash_experts(int* experts, int32_t token_id, int num_experts, int top_k) {
  const uint64_t E = static_cast<uint64_t>(num_experts);
  const uint64_t base = static_cast<uint64_t>(static_cast<uint32_t>(token_id)) * kHashA + kHashB;
  for (int j = 0; j < top_k; ++j) {
    int e = static_cast<int>((base + static_cast<uint64_t>(j) * kHashC) % E);
    for (bool clash = true; clash;) {  // probe to the next expert not yet taken
      clash = false;
      for (int i = 0; i < j; ++i) {
        if (experts[i] == e) {
          clash = true;
          e = (e + 1) % num_experts;
          break;
        }
      }
    }
    experts[j] = e;
  }
}

void RoutingPlan::reserve(const RoutingConfig& config, int max_tokens) {
  num_experts = config.num_experts;
  slots = plan_slots(config);
  const int64_t entries = static_cast<int64_t>(max_tokens) * slots;
  expert.assign(entries, -1);
  gate.assign(entries, 0.0f);
  kept.assign(entries, 0);
  position.assign(entries, -1);
  demand.assign(num_experts, 0);
  load.assign(num_experts, 0);
  probs.assign(static_cast<int64_t>(max_tokens) * num_experts, 0.0f);
  logsumexp.assign(max_tokens, 0.0f);
  order_scratch.assign(max_tokens, 0);
  if (config.router == RouterKind::expert_choice) {
    chosen_scratch.assign(static_cast<int64_t>(max_tokens) * num_experts, 0);
    column_scratch.assign(static_cast<int64_t>(max_tokens) * num_experts, 0.0f);
  }
  max_tokens_ = max_tokens;
}

int64_t RoutingPlan::kept_assignments() const {
  return std::accumulate(load.begin(), load.end(), int64_t{0});
}

void route(RoutingPlan& plan, const float* logits, const int32_t* token_ids,
           const float* selection_bias, int num_tokens, const RoutingConfig& config) {
  MOEBENCH_CHECK(num_tokens <= plan.max_tokens_ && plan.num_experts == config.num_experts &&
                     plan.slots == plan_slots(config),
                 "RoutingPlan::reserve was not called for this configuration and size");
  MOEBENCH_CHECK(config.router == RouterKind::hash ? token_ids != nullptr : logits != nullptr,
                 "hash routing needs token ids; learned routers need logits");
  plan.num_tokens = num_tokens;
  plan.capacity = expert_capacity(config, num_tokens);
  const int T = num_tokens, E = config.num_experts;
  const bool probabilities = needs_probabilities(config);
  if (probabilities) softmax_rows(plan.probs.data(), plan.logsumexp.data(), logits, T, E);

  if (config.router == RouterKind::expert_choice) {
    route_expert_choice(plan, logits);
  } else {
    route_token_choice(plan, logits, token_ids,
                       config.balance == BalanceKind::bias ? selection_bias : nullptr, config);
  }

  // An empty group has no loss (0, as the GPU path gives), not 0 / 0.
  plan.aux_loss = 0.0f;
  if (config.balance == BalanceKind::aux && T > 0) {
    // alpha * E * sum_e f_e * P_e, f_e = demand_e / (T k), P_e = mean_t p[t, e]
    double sum = 0.0;
    for (int e = 0; e < E; ++e) {
      double mean_p = 0.0;
      for (int t = 0; t < T; ++t) mean_p += plan.probs[static_cast<int64_t>(t) * E + e];
      mean_p /= T;
      sum += static_cast<double>(plan.demand[e]) / (static_cast<double>(T) * config.top_k) * mean_p;
    }
    plan.aux_loss = static_cast<float>(static_cast<double>(config.aux_loss_coeff) * E * sum);
  }
  plan.z_loss = 0.0f;
  if (config.z_loss_coeff > 0.0f && T > 0) {
    double sum = 0.0;
    for (int t = 0; t < T; ++t) sum += static_cast<double>(plan.logsumexp[t]) * plan.logsumexp[t];
    plan.z_loss = static_cast<float>(config.z_loss_coeff * sum / T);
  }
}

void route_backward(float* d_logits, const float* d_gate, const RoutingPlan& plan,
                    const RoutingConfig& config) {
  const int T = plan.num_tokens, E = plan.num_experts, slots = plan.slots;
  const bool gate_is_prob = (config.router == RouterKind::top1 && !config.hard_gates) ||
                            config.router == RouterKind::expert_choice;
  const bool aux = config.balance == BalanceKind::aux;
  const bool z_loss = config.z_loss_coeff > 0.0f;
  // d(aux)/d p[t, e] = alpha * E * f_e / T = aux_scale * demand_e, the same for every token
  // (f_e = demand_e / (T k)); computed per use, so the backward pass allocates nothing.
  const double aux_scale = aux ? static_cast<double>(config.aux_loss_coeff) * E /
                                     (static_cast<double>(T) * config.top_k * T)
                               : 0.0;
  const int64_t* demand = plan.demand.data();
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    float* dz = d_logits + static_cast<int64_t>(t) * E;
    std::fill(dz, dz + E, 0.0f);
    const int64_t base = static_cast<int64_t>(t) * slots;
    const float* p = plan.probs.data() + static_cast<int64_t>(t) * E;

    if (gate_is_prob || aux) {
      // Gradient through p = softmax(z): dz_j = p_j (dp_j - sum_e p_e dp_e).
      // dp is sparse for the gates and dense for aux; accumulate sum_e p_e dp_e in double.
      double dot = 0.0;
      if (aux) {
        for (int e = 0; e < E; ++e) dot += p[e] * (aux_scale * static_cast<double>(demand[e]));
      }
      if (gate_is_prob) {
        for (int s = 0; s < slots; ++s)
          if (plan.kept[base + s]) dot += static_cast<double>(p[plan.expert[base + s]]) * d_gate[base + s];
      }
      for (int e = 0; e < E; ++e) {
        const double dp = aux_scale * static_cast<double>(demand[e]);
        dz[e] = static_cast<float>(p[e] * (dp - dot));
      }
      if (gate_is_prob) {
        for (int s = 0; s < slots; ++s)
          if (plan.kept[base + s]) dz[plan.expert[base + s]] += p[plan.expert[base + s]] * d_gate[base + s];
      }
    }
    if (config.router == RouterKind::softk) {
      // gates w = softmax(z_S / tau) over S (the selected entries, or the kept ones after
      // renormalisation): dz_i = w_i (dw_i - sum_j w_j dw_j) / tau; dw = 0 when not kept.
      double dot = 0.0;
      for (int s = 0; s < slots; ++s)
        if (plan.kept[base + s]) dot += static_cast<double>(plan.gate[base + s]) * d_gate[base + s];
      for (int s = 0; s < slots; ++s) {
        const int e = plan.expert[base + s];
        if (e < 0 || (config.renorm_after_drop && !plan.kept[base + s])) continue;
        const double dw = plan.kept[base + s] ? d_gate[base + s] : 0.0;
        dz[e] += static_cast<float>(plan.gate[base + s] * (dw - dot) / config.temperature);
      }
    }
    if (z_loss) {
      // d/dz_j of beta * mean_t lse_t^2 = beta * 2 lse_t p_j / T
      const float scale = config.z_loss_coeff * 2.0f * plan.logsumexp[t] / static_cast<float>(T);
      for (int e = 0; e < E; ++e) dz[e] += scale * p[e];
    }
  }
}

void update_selection_bias(float* bias, const int64_t* demand, const RoutingConfig& config) {
  const int E = config.num_experts;
  double mean = 0.0;
  for (int e = 0; e < E; ++e) mean += static_cast<double>(demand[e]);
  mean /= E;
  for (int e = 0; e < E; ++e) {
    const double diff = mean - static_cast<double>(demand[e]);
    const float sign = diff > 0.0 ? 1.0f : (diff < 0.0 ? -1.0f : 0.0f);
    bias[e] += config.bias_update_rate * sign;
  }
}

}  // namespace moebench
