// Synthetic router inputs of the benchmarks; see synthetic_inputs.hpp.
#include "moebench/synthetic_inputs.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "moebench/check.hpp"
#include "moebench/random.hpp"

namespace moebench {

namespace po = boost::program_options;

void add_synthetic_input_options(po::options_description& options) {
  options.add_options()
      ("distribution", po::value<std::string>()->default_value("gaussian"),
       "synthetic router logits: gaussian (iid normal) | zipf (expert popularity skew)")
      ("logit-std", po::value<double>()->default_value(1.0), "standard deviation of the logits")
      ("zipf-s", po::value<double>()->default_value(1.0),
       "zipf exponent: expert e's popularity is proportional to (e+1)^-s; also skews hash token ids")
      ("vocab", po::value<int>()->default_value(50257), "token-id range for hash routing");
}

SyntheticInputs resolve_synthetic_inputs(const po::variables_map& values, uint64_t seed) {
  SyntheticInputs in;
  in.distribution = values["distribution"].as<std::string>();
  in.logit_std = values["logit-std"].as<double>();
  in.zipf_s = values["zipf-s"].as<double>();
  in.vocab = values["vocab"].as<int>();
  in.seed = seed;
  if (in.distribution != "gaussian" && in.distribution != "zipf") {
    throw UsageError("--distribution: unknown value '" + in.distribution +
                     "' (accepted: gaussian, zipf)");
  }
  if (!(std::isfinite(in.logit_std) && in.logit_std >= 0.0)) {
    throw UsageError("--logit-std must be a number >= 0");
  }
  if (!(std::isfinite(in.zipf_s) && in.zipf_s >= 0.0)) {
    throw UsageError("--zipf-s must be a number >= 0");
  }
  if (in.vocab < 1) throw UsageError("--vocab must be >= 1");
  return in;
}

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
