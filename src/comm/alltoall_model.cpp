// The alpha-beta model of the exchange algorithms. See alltoall_model.hpp.
#include "moebench/alltoall_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>

#include "moebench/check.hpp"

namespace moebench {

namespace {

struct WeightedSums {
  double w = 0.0, x = 0.0, y = 0.0, xx = 0.0, xy = 0.0;
};

double weighted_residual(const std::vector<double>& x, const std::vector<double>& y,
                         const std::vector<double>& w, double a, double b) {
  double sum = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double r = y[i] - a - b * x[i];
    sum += w[i] * r * r;
  }
  return sum;
}

}  // namespace

LinearFit fit_linear_nonnegative(const std::vector<double>& x, const std::vector<double>& y,
                                 FitWeighting weighting) {
  if (x.size() != y.size()) {
    std::ostringstream message;
    message << "alpha-beta fit: " << x.size() << " sizes but " << y.size() << " times";
    throw UsageError(message.str());
  }
  for (size_t i = 0; i < x.size(); ++i) {
    const bool bad_y = !std::isfinite(y[i]) || (weighting == FitWeighting::relative && y[i] <= 0.0);
    if (!std::isfinite(x[i]) || bad_y) {
      std::ostringstream message;
      message << "alpha-beta fit: point " << i << " (size " << x[i] << ", time " << y[i]
              << ") is not usable (sizes and times must be finite, times > 0)";
      throw UsageError(message.str());
    }
  }
  const std::set<double> distinct(x.begin(), x.end());
  if (distinct.size() < 2) {
    std::ostringstream message;
    message << "alpha-beta fit: needs at least 2 distinct sizes, got " << distinct.size()
            << " (sweep a range: --max-bytes >= --min-bytes * --step-factor)";
    throw UsageError(message.str());
  }
  std::vector<double> w(x.size(), 1.0);
  if (weighting == FitWeighting::relative) {
    for (size_t i = 0; i < x.size(); ++i) w[i] = 1.0 / (y[i] * y[i]);
  }
  WeightedSums s;
  for (size_t i = 0; i < x.size(); ++i) {
    s.w += w[i];
    s.x += w[i] * x[i];
    s.y += w[i] * y[i];
    s.xx += w[i] * x[i] * x[i];
    s.xy += w[i] * x[i] * y[i];
  }
  LinearFit fit;
  fit.points = static_cast<int>(x.size());
  // Normal equations, centred for accuracy: b = sum w (x - xm)(y - ym) / sum w (x - xm)^2.
  const double xm = s.x / s.w, ym = s.y / s.w;
  double sxx = 0.0, sxy = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxx += w[i] * (x[i] - xm) * (x[i] - xm);
    sxy += w[i] * (x[i] - xm) * (y[i] - ym);
  }
  double b = sxy / sxx;
  double a = ym - b * xm;
  if (a < 0.0 || b < 0.0) {
    // The optimum over a, b >= 0 lies on an edge: a = 0 (b = sum wxy / sum wxx) or b = 0
    // (a = weighted mean of y), each clamped at 0; take the better one.
    const double b_only = std::max(0.0, s.xy / s.xx);
    const double a_only = std::max(0.0, ym);
    if (weighted_residual(x, y, w, 0.0, b_only) <= weighted_residual(x, y, w, a_only, 0.0)) {
      a = 0.0;
      b = b_only;
    } else {
      a = a_only;
      b = 0.0;
    }
    fit.clamped = true;
  }
  fit.intercept = a;
  fit.slope = b;
  double total = 0.0;
  for (size_t i = 0; i < x.size(); ++i) total += w[i] * (y[i] - ym) * (y[i] - ym);
  const double residual = weighted_residual(x, y, w, a, b);
  fit.r2 = total > 0.0 ? 1.0 - residual / total : (residual == 0.0 ? 1.0 : 0.0);
  return fit;
}

ExchangeShape exchange_shape(ExchangeAlgorithm algorithm, int ranks, int ranks_per_node,
                             double size_bytes) {
  MOEBENCH_CHECK(ranks >= 1 && ranks_per_node >= 1 && ranks % ranks_per_node == 0,
                 "exchange_shape: ranks_per_node must divide ranks");
  const int P = ranks, L = ranks_per_node, N = ranks / ranks_per_node;
  const double m = size_bytes / P;  // bytes for one destination rank
  ExchangeShape shape;
  if (algorithm == ExchangeAlgorithm::hierarchical) {
    shape.intra_messages = L - 1;
    shape.intra_message_bytes = N * m;
    shape.inter_messages = N - 1;
    shape.inter_message_bytes = L * m;
  } else {
    shape.intra_messages = L - 1;
    shape.intra_message_bytes = m;
    shape.inter_messages = P - L;
    shape.inter_message_bytes = m;
  }
  return shape;
}

double predict_exchange_seconds(const ExchangeShape& shape, const LinkCost& intra,
                                const LinkCost& inter) {
  return shape.intra_messages * (intra.latency_s + intra.seconds_per_byte * shape.intra_message_bytes) +
         shape.inter_messages * (inter.latency_s + inter.seconds_per_byte * shape.inter_message_bytes);
}

LinkCost link_cost_from_fit(const LinearFit& fit, ExchangeAlgorithm algorithm, int ranks,
                            int ranks_per_node) {
  // Messages and bytes per rank per byte of size, at the measuring shape.
  const ExchangeShape shape = exchange_shape(algorithm, ranks, ranks_per_node, 1.0);
  const int messages = shape.intra_messages + shape.inter_messages;
  const double bytes_per_size = shape.intra_messages * shape.intra_message_bytes +
                                shape.inter_messages * shape.inter_message_bytes;
  LinkCost cost;
  if (messages == 0 || bytes_per_size <= 0.0) {
    cost.latency_s = cost.seconds_per_byte = std::numeric_limits<double>::quiet_NaN();
    return cost;
  }
  cost.latency_s = fit.intercept / messages;
  cost.seconds_per_byte = fit.slope / bytes_per_size;
  return cost;
}

}  // namespace moebench
