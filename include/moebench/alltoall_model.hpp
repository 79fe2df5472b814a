// The alpha-beta (Hockney) model of the exchange algorithms (docs/alltoall.md, "The
// alpha-beta model"): a least-squares fit of exchange time against size, the per-message
// latency alpha and per-byte cost beta it implies, and predicted exchange times at other rank
// counts and node shapes.
//
//   one message of m bytes over a link:  alpha + beta * m      (bandwidth = 1 / beta)
//   one exchange (per rank, sequential):  sum over its messages of the above
//
// Message shapes of one exchange of `size` bytes per rank (size / P to every rank, itself
// included; the local block is a copy and costs nothing), P ranks in N nodes of L:
//   flat (alltoallv, pairwise): L - 1 intra-node and P - L inter-node messages of size / P
//   hierarchical:               L - 1 intra-node messages of N * size / P (stage 1), then
//                               N - 1 inter-node messages of L * size / P among the ranks of
//                               equal local index (stage 2)
#pragma once

#include <vector>

#include "moebench/alltoall.hpp"

namespace moebench {

// How the residuals of the fit are weighted.
//   absolute: minimise sum_i (y_i - a - b x_i)^2
//   relative: minimise sum_i ((y_i - a - b x_i) / y_i)^2, so a 1 KiB point counts as much as a
//             16 MiB one (with absolute weights the large sizes' noise swamps the latency)
enum class FitWeighting { absolute, relative };

struct LinearFit {
  double intercept = 0.0;  // a: seconds (for an exchange fit: latency of the whole exchange)
  double slope = 0.0;      // b: seconds per byte of x
  double r2 = 0.0;         // 1 - weighted residual / weighted total sum of squares
  int points = 0;
  // The unconstrained optimum had a negative parameter (noise); that parameter was fixed at 0
  // and the other refitted: the least-squares optimum over a, b >= 0.
  bool clamped = false;
};

// Fits y ~ a + b x by weighted least squares with a, b >= 0. x: sizes in bytes, y: seconds.
// Throws UsageError when x and y differ in length, when fewer than 2 distinct x are given, or
// when a value is not finite (relative weighting: a y <= 0).
LinearFit fit_linear_nonnegative(const std::vector<double>& x, const std::vector<double>& y,
                                 FitWeighting weighting);

// Hockney cost of one link kind: a message of m bytes takes latency_s + m * seconds_per_byte.
struct LinkCost {
  double latency_s = 0.0;         // alpha
  double seconds_per_byte = 0.0;  // beta; bandwidth = 1 / beta bytes/s
};

// Messages one rank sends in one exchange, by link kind (see the top of this file).
struct ExchangeShape {
  int intra_messages = 0;
  double intra_message_bytes = 0.0;
  int inter_messages = 0;
  double inter_message_bytes = 0.0;
};

// The shape of `algorithm` at `ranks` ranks in nodes of `ranks_per_node` (which must divide
// `ranks`; checked), each rank sending `size_bytes` in all.
ExchangeShape exchange_shape(ExchangeAlgorithm algorithm, int ranks, int ranks_per_node,
                             double size_bytes);

// Predicted seconds of one exchange: intra_messages * (intra.alpha + intra.beta * intra bytes)
// + inter_messages * (inter.alpha + inter.beta * inter bytes).
double predict_exchange_seconds(const ExchangeShape& shape, const LinkCost& intra,
                                const LinkCost& inter);

// The per-message alpha and beta implied by a fit t = a + b * size measured with `algorithm`
// at `ranks` ranks in nodes of `ranks_per_node`, every link counted as one kind (on one
// machine they are all shared memory): with M messages per rank and w * size bytes in them,
// t = M alpha + w size beta, so alpha = a / M and beta = b / w. NaN for 1 rank (no messages).
LinkCost link_cost_from_fit(const LinearFit& fit, ExchangeAlgorithm algorithm, int ranks,
                            int ranks_per_node);

}  // namespace moebench
