// Synthetic router inputs of the benchmarks (`moebench capacity`, `moebench alltoall --pattern
// routed`): logits and token ids that are a pure function of (seed, stream, index), so every
// rank count and thread count sees the same ones.
//   gaussian: z[t, e] = std * N(0, 1); token ids uniform over the vocabulary;
//   zipf:     z[t, e] = std * N(0, 1) - s * log(e + 1), so expert e's popularity is proportional
//             to (e + 1)^-s on average; token ids zipf(s) distributed.
#pragma once

#include <cstdint>
#include <string>

namespace boost::program_options {
class options_description;
class variables_map;
}  // namespace boost::program_options

namespace moebench {

struct SyntheticInputs {
  std::string distribution = "gaussian";  // gaussian | zipf
  double logit_std = 1.0;
  double zipf_s = 1.0;
  int vocab = 50257;  // token-id range (hash routing)
  uint64_t seed = 1234;
};

// The stream of batch `batch` of rank `rank` at E experts.
inline uint64_t synthetic_stream(int E, int rank, int batch) {
  return (static_cast<uint64_t>(E) << 40) ^ (static_cast<uint64_t>(rank) << 20) ^
         static_cast<uint64_t>(batch);
}

// The options that set them: --distribution, --logit-std, --zipf-s, --vocab.
void add_synthetic_input_options(boost::program_options::options_description& options);
// Their values, checked (UsageError naming the option); `seed` is the command's --seed.
SyntheticInputs resolve_synthetic_inputs(const boost::program_options::variables_map& values,
                                         uint64_t seed);

// logits [T, E] and ids [T] of one batch.
void make_synthetic_inputs(float* logits, int32_t* ids, int64_t T, int E,
                           const SyntheticInputs& spec, uint64_t stream);

}  // namespace moebench
