// Helpers shared by the reference and the fast expert paths (not part of the public API).
#pragma once

#include <cstdint>

#include "moebench/experts.hpp"

namespace moebench::detail {

// Throws moebench::Error unless the shape is positive and row_offsets is non-decreasing with
// row_offsets[0] >= 0. Costs O(num_experts).
void check_expert_arguments(const int64_t* row_offsets, const ExpertShape& shape);

// Pointers to expert e's slices of a parameter (or gradient) set.
struct ExpertSlice {
  float* w1;  // [d, h]
  float* b1;  // [h]
  float* w2;  // [h, d]
  float* b2;  // [d]
};

inline ExpertSlice expert_slice(const ExpertParams& params, const ExpertShape& shape, int e) {
  const int64_t d = shape.d_model;
  const int64_t h = shape.d_hidden;
  return ExpertSlice{params.w1 + e * d * h, params.b1 + e * h, params.w2 + e * h * d,
                     params.b2 + e * d};
}

}  // namespace moebench::detail
