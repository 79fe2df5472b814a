// Synthetic router inputs of the benchmarks; see synthetic_inputs.hpp.
#include "moebench/synthetic_inputs.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "moebench/random.hpp"

namespace moebench {

void make_synthetic_inputs(float* logits, int32_t* ids, int64_t T, int E,
                           const SyntheticInputs& spec, uint64_t stream) {
  const bool zipf = spec.distribution == "zipf";
  std::vector<double> cdf;
  if (zipf) {
    cdf.resize(static_cast<size_t>(spec.vocab));
    double sum = 0.0;
    for (int v = 0; v < spec.vocab; ++v) cdf[v] = (sum += std::pow(v + 1.0, -spec.zipf_s));
    for (double& c : cdf) c /= sum;
  }
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    for (int e = 0; e < E; ++e) {
      double value =
          spec.logit_std * random_normal(spec.seed, stream, static_cast<uint64_t>(t * E + e));
      if (zipf) value -= spec.zipf_s * std::log(e + 1.0);
      logits[t * E + e] = static_cast<float>(value);
    }
    const double u = random_uniform(spec.seed, stream ^ 0xABCDEF, static_cast<uint64_t>(t));
    auto id = static_cast<int32_t>(u * spec.vocab);
    if (zipf) id = static_cast<int32_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
    ids[t] = std::min(id, spec.vocab - 1);
  }
}

}  // namespace moebench
