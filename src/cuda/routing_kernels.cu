// Routing kernels: softmax, top-k and gates, hash, capacity positions, expert choice and the
// router losses. Semantics and exactness: routing_cuda.hpp; the CPU original:
// src/routing/routing.cpp.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <vector>

#include "cuda_check.hpp"
#include "routing_cuda.hpp"
#include "warp_reduce.cuh"

namespace moebench {
namespace {

using cuda_detail::kFullMask;
using cuda_detail::kWarpSize;
using cuda_detail::warp_max;
using cuda_detail::warp_sum;

constexpr int kBlock = 256;                         // threads per block unless stated
constexpr int kWarpsPerBlock = kBlock / kWarpSize;  // tokens per block in warp-per-token kernels
constexpr int kRankChunk = 1024;  // entries of the visiting order per chunk (capacity ranks)
constexpr int kNoIndex = INT_MAX;  // an empty top-k candidate
// Expert-indexed shared memory (histograms, running positions) is E ints.
constexpr int kMaxGpuExperts = 8192;

enum RouterCode : int { kTop1 = 0, kTopkHard = 1, kSoftk = 2, kHash = 3, kExpertChoice = 4 };

int router_code(RouterKind kind) {
  switch (kind) {
    case RouterKind::top1: return kTop1;
    case RouterKind::topk_hard: return kTopkHard;
    case RouterKind::softk: return kSoftk;
    case RouterKind::hash: return kHash;
    case RouterKind::expert_choice: return kExpertChoice;
  }
  return -1;
}

// As in routing.cpp: the configurations whose plan carries p = softmax(z).
bool needs_probabilities(const RoutingConfig& config) {
  return config.router == RouterKind::top1 || config.router == RouterKind::expert_choice ||
         config.balance == BalanceKind::aux || config.z_loss_coeff > 0.0f ||
         (config.drop_policy == DropPolicy::prob && has_learned_router(config.router));
}

int blocks_for(int64_t items, int per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  MOEBENCH_CHECK(blocks <= INT_MAX, "grid too large");
  return static_cast<int>(blocks);
}

// The top-k order of routing.cpp: larger score first, ties to the lower index; kNoIndex
// (an empty candidate) loses to everything.
__device__ __forceinline__ bool better(float a_value, int a_index, float b_value, int b_index) {
  if (a_index == kNoIndex) return false;
  if (b_index == kNoIndex) return true;
  return a_value > b_value || (a_value == b_value && a_index < b_index);
}

// Row softmax of z [E] by one warp, as softmax_rows in routing.cpp: p = exp(z - max) / sum,
// the sum in double, logsumexp = max + log(sum). Writes p [E] and *logsumexp (lane 0);
// returns max and 1/sum so that a lane can recompute any p[e] bit for bit.
__device__ void warp_softmax(float* p, float* logsumexp, float& max_out, float& inv_out,
                             const float* z, int num_experts, int lane) {
  float max_z = -INFINITY;
  for (int e = lane; e < num_experts; e += kWarpSize) max_z = fmaxf(max_z, z[e]);
  max_z = warp_max(max_z);
  double sum = 0.0;
  for (int e = lane; e < num_experts; e += kWarpSize) sum += static_cast<double>(expf(z[e] - max_z));
  sum = warp_sum(sum);
  const float inv = static_cast<float>(1.0 / sum);
  for (int e = lane; e < num_experts; e += kWarpSize) p[e] = expf(z[e] - max_z) * inv;
  if (lane == 0) *logsumexp = max_z + static_cast<float>(log(sum));
  max_out = max_z;
  inv_out = inv;
}

// Token-choice selection, one warp per token: optional softmax, top-K of z (+ bias) and the
// gates before dropping.
//   expert, gate [T, K]; probs [T, E] and logsumexp [T] (written when probs != null);
//   logits [T, E]; bias [E] or null.
// Each lane keeps the best K of the experts e = lane (mod 32) in registers, sorted; K rounds
// of a warp arg-max over the lanes' heads then give the top K in order.
template <int K>
__global__ void select_topk_kernel(int32_t* expert, float* gate, float* probs, float* logsumexp,
                                   const float* logits, const float* bias, int num_tokens,
                                   int num_experts, int router, int hard_gates,
                                   float temperature) {
  const int lane = threadIdx.x % kWarpSize;
  const int t = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (t >= num_tokens) return;  // the whole warp leaves together
  const float* z = logits + static_cast<int64_t>(t) * num_experts;

  float max_z = 0.0f, inv_sum = 0.0f;
  if (probs != nullptr) {
    warp_softmax(probs + static_cast<int64_t>(t) * num_experts, logsumexp + t, max_z, inv_sum, z,
                 num_experts, lane);
  }

  float best_value[K];
  int best_index[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    best_value[j] = -INFINITY;
    best_index[j] = kNoIndex;
  }
  for (int e = lane; e < num_experts; e += kWarpSize) {
    float value = bias != nullptr ? z[e] + bias[e] : z[e];
    int index = e;
#pragma unroll
    for (int j = 0; j < K; ++j) {  // insertion: the candidate bubbles to its place
      if (better(value, index, best_value[j], best_index[j])) {
        const float v = best_value[j];
        const int i = best_index[j];
        best_value[j] = value;
        best_index[j] = index;
        value = v;
        index = i;
      }
    }
  }

  int chosen[K];
#pragma unroll
  for (int r = 0; r < K; ++r) {
    float value = best_value[0];
    int index = best_index[0];
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
      const float other_value = __shfl_xor_sync(kFullMask, value, offset);
      const int other_index = __shfl_xor_sync(kFullMask, index, offset);
      if (better(other_value, other_index, value, index)) {
        value = other_value;
        index = other_index;
      }
    }
    chosen[r] = index;  // the same on every lane
    if (index != kNoIndex && best_index[0] == index) {  // the owner pops its head
#pragma unroll
      for (int j = 0; j + 1 < K; ++j) {
        best_value[j] = best_value[j + 1];
        best_index[j] = best_index[j + 1];
      }
      best_value[K - 1] = -INFINITY;
      best_index[K - 1] = kNoIndex;
    }
  }

  if (lane != 0) return;
  int32_t* out_expert = expert + static_cast<int64_t>(t) * K;
  float* out_gate = gate + static_cast<int64_t>(t) * K;
#pragma unroll
  for (int j = 0; j < K; ++j) out_expert[j] = chosen[j];
  if (router == kTop1) {
    // p of the chosen expert, the same expression warp_softmax stored
    out_gate[0] = hard_gates ? 1.0f : expf(z[chosen[0]] - max_z) * inv_sum;
  } else if (router == kSoftk) {
    // softmax over the K selected logits / tau (the bias never enters the gates)
    float max_selected = z[chosen[0]];
#pragma unroll
    for (int j = 1; j < K; ++j) max_selected = fmaxf(max_selected, z[chosen[j]]);
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      out_gate[j] = expf((z[chosen[j]] - max_selected) / temperature);
      sum += out_gate[j];
    }
#pragma unroll
    for (int j = 0; j < K; ++j) out_gate[j] /= sum;
  } else {  // topk_hard
#pragma unroll
    for (int j = 0; j < K; ++j) out_gate[j] = 1.0f / static_cast<float>(K);
  }
}

// Softmax only (expert choice), one warp per token.
__global__ void softmax_kernel(float* probs, float* logsumexp, const float* logits,
                               int num_tokens, int num_experts) {
  const int lane = threadIdx.x % kWarpSize;
  const int t = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (t >= num_tokens) return;
  float max_z = 0.0f, inv_sum = 0.0f;
  warp_softmax(probs + static_cast<int64_t>(t) * num_experts, logsumexp + t, max_z, inv_sum,
               logits + static_cast<int64_t>(t) * num_experts, num_experts, lane);
}

// Hash routing, one thread per token: hash_experts of routing.cpp, gates 1/k.
__global__ void hash_kernel(int32_t* expert, float* gate, const int32_t* token_ids,
                            int num_tokens, int num_experts, int top_k, uint64_t hash_a,
                            uint64_t hash_b, uint64_t hash_c) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= num_tokens) return;
  const uint64_t experts = static_cast<uint64_t>(num_experts);
  const uint64_t base = static_cast<uint64_t>(static_cast<uint32_t>(token_ids[t])) * hash_a + hash_b;
  int32_t* out = expert + static_cast<int64_t>(t) * top_k;
  for (int j = 0; j < top_k; ++j) {
    int e = static_cast<int>((base + static_cast<uint64_t>(j) * hash_c) % experts);
    for (bool clash = true; clash;) {  // probe to the next expert not yet taken
      clash = false;
      for (int i = 0; i < j; ++i) {
        if (out[i] == e) {
          clash = true;
          e = (e + 1) % num_experts;
          break;
        }
      }
    }
    out[j] = e;
    gate[static_cast<int64_t>(t) * top_k + j] = 1.0f / static_cast<float>(top_k);
  }
}

// ---- Capacity: positions as ordered ranks per expert ---------------------------------------
//
// The visiting order has n = T * slots entries. Token choice visits choice-major: v = j T + t
// is entry (t, j); expert choice visits entries in storage order (t, s). The position of an
// entry is the number of earlier entries (in visiting order) with the same expert.

__device__ __forceinline__ int64_t visited_entry(int64_t v, int num_tokens, int slots,
                                                 int choice_major) {
  return choice_major ? (v % num_tokens) * slots + v / num_tokens : v;
}

// chunk_counts [chunks, E]: entries per expert in each chunk of kRankChunk visits.
// Dynamic shared memory: E ints.
__global__ void chunk_histogram_kernel(int32_t* chunk_counts, const int32_t* expert, int64_t n,
                                       int num_tokens, int slots, int choice_major,
                                       int num_experts) {
  extern __shared__ int histogram[];
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) histogram[e] = 0;
  __syncthreads();
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kRankChunk;
  const int64_t end = begin + kRankChunk < n ? begin + kRankChunk : n;
  for (int64_t v = begin + threadIdx.x; v < end; v += blockDim.x) {
    const int e = expert[visited_entry(v, num_tokens, slots, choice_major)];
    if (e >= 0) atomicAdd(&histogram[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    chunk_counts[static_cast<int64_t>(blockIdx.x) * num_experts + e] = histogram[e];
  }
}

// One warp per expert: chunk_offsets[c, e] (counts in, exclusive prefix sums over c out);
// the total is demand (token choice: load = min(total, C)) or load (expert choice: demand is
// min(C, T), every selected entry is kept).
__global__ void chunk_scan_kernel(int32_t* chunk_offsets, int32_t* demand, int32_t* load,
                                  int chunks, int num_experts, int capacity,
                                  int expert_choice_demand) {
  const int lane = threadIdx.x % kWarpSize;
  const int e = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (e >= num_experts) return;
  int carry = 0;
  for (int base = 0; base < chunks; base += kWarpSize) {
    const int c = base + lane;
    const int64_t at = static_cast<int64_t>(c) * num_experts + e;
    const int value = c < chunks ? chunk_offsets[at] : 0;
    int inclusive = value;
#pragma unroll
    for (int offset = 1; offset < kWarpSize; offset <<= 1) {
      const int up = __shfl_up_sync(kFullMask, inclusive, offset);
      if (lane >= offset) inclusive += up;
    }
    if (c < chunks) chunk_offsets[at] = carry + inclusive - value;
    carry += __shfl_sync(kFullMask, inclusive, kWarpSize - 1);
  }
  if (lane == 0) {
    if (expert_choice_demand < 0) {
      demand[e] = carry;
      load[e] = carry < capacity ? carry : capacity;
    } else {
      demand[e] = expert_choice_demand;
      load[e] = carry;
    }
  }
}

// One warp per chunk, 32 visits at a time in order: an entry's rank is the running count of
// its expert (from the chunk's offsets) plus the lanes before it with the same expert
// (__match_any_sync). With apply_capacity, ranks >= C are dropped (kept 0, position -1);
// otherwise every entry with an expert is kept at its rank. Entries without an expert are
// left as they are. Dynamic shared memory: E ints.
__global__ void chunk_rank_kernel(int32_t* position, uint8_t* kept, const int32_t* chunk_offsets,
                                  const int32_t* expert, int64_t n, int num_tokens, int slots,
                                  int choice_major, int num_experts, int capacity,
                                  int apply_capacity) {
  extern __shared__ int next_position[];
  const int lane = threadIdx.x;
  for (int e = lane; e < num_experts; e += kWarpSize) {
    next_position[e] = chunk_offsets[static_cast<int64_t>(blockIdx.x) * num_experts + e];
  }
  __syncwarp();
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kRankChunk;
  const int64_t end = begin + kRankChunk < n ? begin + kRankChunk : n;
  for (int64_t base = begin; base < end; base += kWarpSize) {
    const int64_t v = base + lane;
    const int64_t entry = v < end ? visited_entry(v, num_tokens, slots, choice_major) : 0;
    const int e = v < end ? expert[entry] : -1;
    const unsigned peers = __match_any_sync(kFullMask, e);
    const int before = __popc(peers & ((1u << lane) - 1u));
    const int rank = e >= 0 ? next_position[e] + before : 0;
    __syncwarp();
    if (e >= 0 && lane == 31 - __clz(peers)) next_position[e] += __popc(peers);
    __syncwarp();
    if (e < 0) continue;
    if (apply_capacity) {
      const bool keep = rank < capacity;
      kept[entry] = keep ? 1 : 0;
      position[entry] = keep ? rank : -1;
    } else {
      kept[entry] = 1;
      position[entry] = rank;
    }
  }
}

// softk with renorm_after_drop, one thread per token: gates = softmax over the kept choices'
// logits / tau, 0 for dropped ones.
__global__ void renormalize_kernel(float* gate, const uint8_t* kept, const int32_t* expert,
                                   const float* logits, int num_tokens, int num_experts,
                                   int top_k, float temperature) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= num_tokens) return;
  const int64_t base = static_cast<int64_t>(t) * top_k;
  const float* z = logits + static_cast<int64_t>(t) * num_experts;
  float max_z = -INFINITY;
  for (int j = 0; j < top_k; ++j) {
    if (kept[base + j]) max_z = fmaxf(max_z, z[expert[base + j]]);
  }
  float sum = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    const float g = kept[base + j] ? expf((z[expert[base + j]] - max_z) / temperature) : 0.0f;
    gate[base + j] = g;
    sum += g;
  }
  if (sum > 0.0f) {
    for (int j = 0; j < top_k; ++j) gate[base + j] /= sum;
  }
}

// ---- Expert choice ---------------------------------------------------------------------------

// One block per expert e: chosen[t, e] = 1 for the `take` tokens with the largest p[t, e],
// ties to the lower token. p >= 0, so the order of p is the order of its bits as unsigned
// integers: a 4-pass radix select (8 bits per pass) finds the bits of the take-th largest
// value v and how many of the tokens equal to v are taken; a pass in token order then marks
// every token above v and the first of those equal to v.
__global__ void expert_choice_select_kernel(uint8_t* chosen, const float* probs, int num_tokens,
                                            int num_experts, int take) {
  __shared__ unsigned histogram[256];
  __shared__ unsigned prefix, prefix_mask;
  __shared__ int remaining;
  __shared__ int warp_ties[kWarpsPerBlock];
  __shared__ int ties_before;
  const int e = blockIdx.x;
  const int tid = threadIdx.x;
  const int lane = tid % kWarpSize, warp = tid / kWarpSize;
  auto bits_of = [&](int t) {
    return __float_as_uint(probs[static_cast<int64_t>(t) * num_experts + e]);
  };
  if (tid == 0) {
    prefix = 0u;
    prefix_mask = 0u;
    remaining = take;
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    histogram[tid] = 0u;  // kBlock == 256 bins
    __syncthreads();
    for (int t = tid; t < num_tokens; t += kBlock) {
      const unsigned bits = bits_of(t);
      if ((bits & prefix_mask) == prefix) atomicAdd(&histogram[(bits >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid == 0) {  // the bin, from the top, that holds the remaining-th largest candidate
      int left = remaining;
      int bin = 255;
      for (; bin > 0; --bin) {
        if (static_cast<int>(histogram[bin]) >= left) break;
        left -= static_cast<int>(histogram[bin]);
      }
      prefix |= static_cast<unsigned>(bin) << shift;
      prefix_mask |= 255u << shift;
      remaining = left;
      ties_before = 0;
    }
    __syncthreads();
  }
  const unsigned threshold = prefix;  // bits of v
  const int ties_taken = remaining;   // tokens equal to v that are taken (>= 1)
  for (int base = 0; base < num_tokens; base += kBlock) {
    const int t = base + tid;
    const unsigned bits = t < num_tokens ? bits_of(t) : 0u;
    const bool tie = t < num_tokens && bits == threshold;
    const unsigned ballot = __ballot_sync(kFullMask, tie);
    if (lane == 0) warp_ties[warp] = __popc(ballot);
    __syncthreads();
    int rank = ties_before + __popc(ballot & ((1u << lane) - 1u));
    for (int w = 0; w < warp; ++w) rank += warp_ties[w];
    if (t < num_tokens) {
      chosen[static_cast<int64_t>(t) * num_experts + e] =
          (bits > threshold || (tie && rank < ties_taken)) ? 1 : 0;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 0; w < kWarpsPerBlock; ++w) ties_before += warp_ties[w];
    }
    __syncthreads();
  }
}

// One thread per token: its chosen experts by descending logit (ties: lower expert, an
// insertion in expert order exactly as routing.cpp), at most `slots`; gates p[t, e]; the
// positions come from chunk_rank_kernel afterwards.
__global__ void expert_choice_token_kernel(int32_t* expert, float* gate, uint8_t* kept,
                                           int32_t* position, const uint8_t* chosen,
                                           const float* logits, const float* probs,
                                           int num_tokens, int num_experts, int slots) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= num_tokens) return;
  const int64_t base = static_cast<int64_t>(t) * slots;
  const int64_t row = static_cast<int64_t>(t) * num_experts;
  const float* z = logits + row;
  int32_t* out = expert + base;
  int count = 0;
  for (int e = 0; e < num_experts; ++e) {
    if (!chosen[row + e]) continue;
    int p = count < slots ? count : slots;
    while (p > 0 && z[out[p - 1]] < z[e]) {
      if (p < slots) out[p] = out[p - 1];
      --p;
    }
    if (p < slots) out[p] = e;
    if (count < slots) ++count;
  }
  for (int s = 0; s < slots; ++s) {
    const bool used = s < count;
    if (!used) out[s] = -1;
    kept[base + s] = used ? 1 : 0;
    gate[base + s] = used ? probs[row + out[s]] : 0.0f;
    position[base + s] = -1;
  }
}

// ---- Router losses ---------------------------------------------------------------------------

__device__ double block_sum(double value, double* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kBlock / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = scratch[0];
  __syncthreads();
  return total;
}

// One block per expert: column_sums[e] = sum_t p[t, e] (double).
__global__ void column_sum_kernel(double* column_sums, const float* probs, int num_tokens,
                                  int num_experts) {
  __shared__ double scratch[kBlock];
  const int e = blockIdx.x;
  double sum = 0.0;
  for (int t = threadIdx.x; t < num_tokens; t += kBlock) {
    sum += probs[static_cast<int64_t>(t) * num_experts + e];
  }
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) column_sums[e] = sum;
}

// One block: losses[0] = alpha E sum_e f_e P_e (f_e = demand_e / (T k), P_e = column mean),
// losses[1] = beta mean_t logsumexp_t^2; each only when enabled.
__global__ void losses_kernel(float* losses, const double* column_sums, const int32_t* demand,
                              const float* logsumexp, int num_tokens, int num_experts, int top_k,
                              int aux, float aux_coeff, int z_loss, float z_coeff) {
  __shared__ double scratch[kBlock];
  const double tokens = static_cast<double>(num_tokens);
  if (aux) {
    double sum = 0.0;
    for (int e = threadIdx.x; e < num_experts; e += kBlock) {
      sum += static_cast<double>(demand[e]) / (tokens * top_k) * (column_sums[e] / tokens);
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) losses[0] = static_cast<float>(static_cast<double>(aux_coeff) * num_experts * sum);
  }
  if (z_loss) {
    double sum = 0.0;
    for (int t = threadIdx.x; t < num_tokens; t += kBlock) {
      sum += static_cast<double>(logsumexp[t]) * logsumexp[t];
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) losses[1] = static_cast<float>(z_coeff * sum / tokens);
  }
}

// ---- Host side -------------------------------------------------------------------------------

int64_t rank_chunks(int64_t entries) { return (entries + kRankChunk - 1) / kRankChunk; }

// Positions, kept flags, demand and load from the plan's experts (see the kernels above).
void assign_positions(DeviceRoutingPlan& plan, bool choice_major, bool expert_choice,
                      cudaStream_t stream) {
  const int T = plan.num_tokens, E = plan.num_experts, slots = plan.slots;
  const int64_t n = static_cast<int64_t>(T) * slots;
  const int chunks = static_cast<int>(rank_chunks(n));
  const size_t shared_bytes = sizeof(int) * static_cast<size_t>(E);
  chunk_histogram_kernel<<<chunks, kBlock, shared_bytes, stream>>>(
      plan.chunk_offsets.data(), plan.expert.data(), n, T, slots, choice_major ? 1 : 0, E);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  const int expert_choice_demand = expert_choice ? std::min(plan.capacity, T) : -1;
  chunk_scan_kernel<<<blocks_for(E, kWarpsPerBlock), kBlock, 0, stream>>>(
      plan.chunk_offsets.data(), plan.demand.data(), plan.load.data(), chunks, E, plan.capacity,
      expert_choice_demand);
  MOEBENCH_CUDA_LAUNCH_CHECK();
  chunk_rank_kernel<<<chunks, kWarpSize, shared_bytes, stream>>>(
      plan.position.data(), plan.kept.data(), plan.chunk_offsets.data(), plan.expert.data(), n, T,
      slots, choice_major ? 1 : 0, E, plan.capacity, expert_choice ? 0 : 1);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

template <int K>
void launch_select(DeviceRoutingPlan& plan, const float* logits, const float* bias, bool probs,
                   const RoutingConfig& config, cudaStream_t stream) {
  const int T = plan.num_tokens;
  select_topk_kernel<K><<<blocks_for(T, kWarpsPerBlock), kBlock, 0, stream>>>(
      plan.expert.data(), plan.gate.data(), probs ? plan.probs.data() : nullptr,
      probs ? plan.logsumexp.data() : nullptr, logits, bias, T, plan.num_experts,
      router_code(config.router), config.hard_gates ? 1 : 0, config.temperature);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

void select_token_choice(DeviceRoutingPlan& plan, const float* logits, const float* bias,
                         bool probs, const RoutingConfig& config, cudaStream_t stream) {
  switch (config.top_k) {
    case 1: return launch_select<1>(plan, logits, bias, probs, config, stream);
    case 2: return launch_select<2>(plan, logits, bias, probs, config, stream);
    case 3: return launch_select<3>(plan, logits, bias, probs, config, stream);
    case 4: return launch_select<4>(plan, logits, bias, probs, config, stream);
    case 5: return launch_select<5>(plan, logits, bias, probs, config, stream);
    case 6: return launch_select<6>(plan, logits, bias, probs, config, stream);
    case 7: return launch_select<7>(plan, logits, bias, probs, config, stream);
    case 8: return launch_select<8>(plan, logits, bias, probs, config, stream);
    default: MOEBENCH_CHECK(false, "top-k outside 1..kMaxGpuTopK reached the GPU router");
  }
}

// route_backward (routing.cpp), one thread per token, in the CPU's order of operations: dz of
// the gates (through p for top1's soft gates and expert choice, through the softmax over the
// selected logits for softk), of the aux loss (through p) and of the z-loss.
struct RouteBackwardParams {
  bool gate_is_prob = false, aux = false, softk = false, renorm = false, z_loss = false;
  double aux_scale = 0.0;  // alpha E / (T k T)
  float temperature = 1.0f, z_loss_coeff = 0.0f;
};

__global__ void route_backward_kernel(float* d_logits, const float* d_gate, const int32_t* expert,
                                      const uint8_t* kept, const float* gate, const float* probs,
                                      const float* logsumexp, const int32_t* demand, int T, int E,
                                      int slots, RouteBackwardParams params) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T) return;
  float* dz = d_logits + static_cast<int64_t>(t) * E;
  for (int e = 0; e < E; ++e) dz[e] = 0.0f;
  const int64_t base = static_cast<int64_t>(t) * slots;
  const float* p = probs + static_cast<int64_t>(t) * E;
  if (params.gate_is_prob || params.aux) {
    // dz_j = p_j (dp_j - sum_e p_e dp_e); the dot product in double.
    double dot = 0.0;
    if (params.aux) {
      for (int e = 0; e < E; ++e) dot += p[e] * (params.aux_scale * static_cast<double>(demand[e]));
    }
    if (params.gate_is_prob) {
      for (int s = 0; s < slots; ++s) {
        if (kept[base + s]) dot += static_cast<double>(p[expert[base + s]]) * d_gate[base + s];
      }
    }
    for (int e = 0; e < E; ++e) {
      const double dp = params.aux_scale * static_cast<double>(demand[e]);
      dz[e] = static_cast<float>(p[e] * (dp - dot));
    }
    if (params.gate_is_prob) {
      for (int s = 0; s < slots; ++s) {
        if (kept[base + s]) dz[expert[base + s]] += p[expert[base + s]] * d_gate[base + s];
      }
    }
  }
  if (params.softk) {
    // dz_i = w_i (dw_i - sum_j w_j dw_j) / tau over the selected (or, renormalised, kept)
    // entries; dw = 0 where not kept.
    double dot = 0.0;
    for (int s = 0; s < slots; ++s) {
      if (kept[base + s]) dot += static_cast<double>(gate[base + s]) * d_gate[base + s];
    }
    for (int s = 0; s < slots; ++s) {
      const int e = expert[base + s];
      if (e < 0 || (params.renorm && !kept[base + s])) continue;
      const double dw = kept[base + s] ? d_gate[base + s] : 0.0;
      dz[e] += static_cast<float>(gate[base + s] * (dw - dot) / params.temperature);
    }
  }
  if (params.z_loss) {
    // d/dz_j of beta mean_t lse_t^2 = beta 2 lse_t p_j / T
    const float scale = params.z_loss_coeff * 2.0f * logsumexp[t] / static_cast<float>(T);
    for (int e = 0; e < E; ++e) dz[e] += scale * p[e];
  }
}

}  // namespace

void validate_gpu_routing_config(const RoutingConfig& config) {
  validate_routing_config(config);
  std::ostringstream message;
  if (config.router != RouterKind::hash && config.router != RouterKind::expert_choice &&
      config.top_k > kMaxGpuTopK) {
    message << "--top-k " << config.top_k << " is above the CUDA backend's maximum of "
            << kMaxGpuTopK << " for learned routers (use --top-k <= " << kMaxGpuTopK
            << " or --backend cpu)";
  } else if (config.drop_policy == DropPolicy::prob && config.router != RouterKind::hash) {
    message << "--drop-policy prob is not implemented in the CUDA backend yet (use --drop-policy "
               "position or --backend cpu)";
  } else if (config.num_experts > kMaxGpuExperts) {
    message << "--experts " << config.num_experts << " is above the CUDA backend's maximum of "
            << kMaxGpuExperts << " (use --backend cpu)";
  } else {
    return;
  }
  throw UsageError(message.str());
}

void DeviceRoutingPlan::reserve(const RoutingConfig& config, int max_tokens_in) {
  validate_gpu_routing_config(config);
  MOEBENCH_CHECK(max_tokens_in >= 0, "max_tokens must be non-negative");
  num_experts = config.num_experts;
  slots = plan_slots(config);
  max_tokens = max_tokens_in;
  const size_t entries = static_cast<size_t>(max_tokens) * static_cast<size_t>(slots);
  const size_t E = static_cast<size_t>(num_experts);
  expert.resize(entries);
  gate.resize(entries);
  kept.resize(entries);
  position.resize(entries);
  demand.resize(E);
  load.resize(E);
  probs.resize(static_cast<size_t>(max_tokens) * E);
  logsumexp.resize(static_cast<size_t>(max_tokens));
  losses.resize(2);
  chunk_offsets.resize(static_cast<size_t>(rank_chunks(static_cast<int64_t>(entries))) * E);
  column_sums.resize(E);
  if (config.router == RouterKind::expert_choice) {
    chosen.resize(static_cast<size_t>(max_tokens) * E);
  }
}

void cuda_route(DeviceRoutingPlan& plan, const float* logits, const int32_t* token_ids,
                const float* selection_bias, int num_tokens, const RoutingConfig& config,
                CUstream_st* stream) {
  validate_gpu_routing_config(config);  // reserve() checked its own configuration, not this one
  MOEBENCH_CHECK(num_tokens >= 0 && num_tokens <= plan.max_tokens &&
                     plan.num_experts == config.num_experts && plan.slots == plan_slots(config),
                 "DeviceRoutingPlan::reserve was not called for this configuration and size");
  MOEBENCH_CHECK(config.router == RouterKind::hash ? token_ids != nullptr : logits != nullptr,
                 "hash routing needs token ids; learned routers need logits");
  plan.num_tokens = num_tokens;
  plan.capacity = expert_capacity(config, num_tokens);
  plan.has_probabilities = needs_probabilities(config);
  const int T = num_tokens, E = config.num_experts;
  fill_zero(plan.losses.data(), plan.losses.bytes(), stream);
  if (T == 0) {
    fill_zero(plan.demand.data(), plan.demand.bytes(), stream);
    fill_zero(plan.load.data(), plan.load.bytes(), stream);
    return;
  }
  const bool probabilities = needs_probabilities(config);
  const float* bias = config.balance == BalanceKind::bias ? selection_bias : nullptr;

  if (config.router == RouterKind::expert_choice) {
    softmax_kernel<<<blocks_for(T, kWarpsPerBlock), kBlock, 0, stream>>>(
        plan.probs.data(), plan.logsumexp.data(), logits, T, E);
    MOEBENCH_CUDA_LAUNCH_CHECK();
    expert_choice_select_kernel<<<E, kBlock, 0, stream>>>(plan.chosen.data(), plan.probs.data(), T,
                                                          E, std::min(plan.capacity, T));
    MOEBENCH_CUDA_LAUNCH_CHECK();
    expert_choice_token_kernel<<<blocks_for(T, kBlock), kBlock, 0, stream>>>(
        plan.expert.data(), plan.gate.data(), plan.kept.data(), plan.position.data(),
        plan.chosen.data(), logits, plan.probs.data(), T, E, plan.slots);
    MOEBENCH_CUDA_LAUNCH_CHECK();
    assign_positions(plan, /*choice_major=*/false, /*expert_choice=*/true, stream);
  } else {
    if (config.router == RouterKind::hash) {
      hash_kernel<<<blocks_for(T, kBlock), kBlock, 0, stream>>>(
          plan.expert.data(), plan.gate.data(), token_ids, T, E, config.top_k, kHashA, kHashB,
          kHashC);
      MOEBENCH_CUDA_LAUNCH_CHECK();
    } else {
      select_token_choice(plan, logits, bias, probabilities, config, stream);
    }
    assign_positions(plan, /*choice_major=*/true, /*expert_choice=*/false, stream);
    if (config.router == RouterKind::softk && config.renorm_after_drop) {
      renormalize_kernel<<<blocks_for(T, kBlock), kBlock, 0, stream>>>(
          plan.gate.data(), plan.kept.data(), plan.expert.data(), logits, T, E, config.top_k,
          config.temperature);
      MOEBENCH_CUDA_LAUNCH_CHECK();
    }
  }

  const bool aux = config.balance == BalanceKind::aux;
  const bool z_loss = config.z_loss_coeff > 0.0f;
  if (aux) {
    column_sum_kernel<<<E, kBlock, 0, stream>>>(plan.column_sums.data(), plan.probs.data(), T, E);
    MOEBENCH_CUDA_LAUNCH_CHECK();
  }
  if (aux || z_loss) {
    losses_kernel<<<1, kBlock, 0, stream>>>(plan.losses.data(), plan.column_sums.data(),
                                            plan.demand.data(), plan.logsumexp.data(), T, E,
                                            config.top_k, aux ? 1 : 0, config.aux_loss_coeff,
                                            z_loss ? 1 : 0, config.z_loss_coeff);
    MOEBENCH_CUDA_LAUNCH_CHECK();
  }
}

void download_plan(RoutingPlan& host, const DeviceRoutingPlan& plan, CUstream_st* stream) {
  const int T = plan.num_tokens, E = plan.num_experts;
  MOEBENCH_CHECK(host.max_tokens_ >= T && host.num_experts == E && host.slots == plan.slots,
                 "download_plan: the host plan was reserved for another configuration or size");
  const size_t entries = static_cast<size_t>(T) * static_cast<size_t>(plan.slots);
  host.num_tokens = T;
  host.capacity = plan.capacity;
  copy_to_host(host.expert.data(), plan.expert.data(), entries * sizeof(int32_t), stream);
  copy_to_host(host.gate.data(), plan.gate.data(), entries * sizeof(float), stream);
  copy_to_host(host.kept.data(), plan.kept.data(), entries * sizeof(uint8_t), stream);
  copy_to_host(host.position.data(), plan.position.data(), entries * sizeof(int32_t), stream);
  std::vector<int32_t> counts(static_cast<size_t>(E));
  copy_to_host(counts.data(), plan.demand.data(), counts.size() * sizeof(int32_t), stream);
  std::copy(counts.begin(), counts.end(), host.demand.begin());
  copy_to_host(counts.data(), plan.load.data(), counts.size() * sizeof(int32_t), stream);
  std::copy(counts.begin(), counts.end(), host.load.begin());
  if (plan.has_probabilities) {
    copy_to_host(host.probs.data(), plan.probs.data(),
                 static_cast<size_t>(T) * static_cast<size_t>(E) * sizeof(float), stream);
    copy_to_host(host.logsumexp.data(), plan.logsumexp.data(),
                 static_cast<size_t>(T) * sizeof(float), stream);
  }
  float losses[2] = {0.0f, 0.0f};
  copy_to_host(losses, plan.losses.data(), sizeof(losses), stream);
  host.aux_loss = losses[0];
  host.z_loss = losses[1];
}

void cuda_route_backward(float* d_logits, const float* d_gate, const DeviceRoutingPlan& plan,
                         const RoutingConfig& config, CUstream_st* stream) {
  MOEBENCH_CHECK(has_learned_router(config.router),
                 "cuda_route_backward: hash routing has no logits to differentiate");
  MOEBENCH_CHECK(plan.num_experts == config.num_experts && plan.slots == plan_slots(config),
                 "cuda_route_backward: the plan was routed under another configuration");
  const int T = plan.num_tokens, E = plan.num_experts;
  if (T == 0) return;
  RouteBackwardParams params;
  params.gate_is_prob = (config.router == RouterKind::top1 && !config.hard_gates) ||
                        config.router == RouterKind::expert_choice;
  params.aux = config.balance == BalanceKind::aux;
  params.softk = config.router == RouterKind::softk;
  params.renorm = config.renorm_after_drop;
  params.z_loss = config.z_loss_coeff > 0.0f;
  params.aux_scale = params.aux ? static_cast<double>(config.aux_loss_coeff) * E /
                                      (static_cast<double>(T) * config.top_k * T)
                                : 0.0;
  params.temperature = config.temperature;
  params.z_loss_coeff = config.z_loss_coeff;
  MOEBENCH_CHECK(!(params.gate_is_prob || params.aux || params.z_loss) || plan.has_probabilities,
                 "cuda_route_backward: the plan carries no probabilities for this configuration");
  route_backward_kernel<<<blocks_for(T, kBlock), kBlock, 0, stream>>>(
      d_logits, d_gate, plan.expert.data(), plan.kept.data(), plan.gate.data(), plan.probs.data(),
      plan.logsumexp.data(), plan.demand.data(), T, E, plan.slots, params);
  MOEBENCH_CUDA_LAUNCH_CHECK();
}

}  // namespace moebench
