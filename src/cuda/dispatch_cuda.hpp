// Permute, unpermute and combine on the GPU: the local (non-communicating) half of the
// Dispatcher (dispatcher.hpp), on device memory, for a DeviceRoutingPlan.
//
// Send layout (as the CPU Dispatcher): one row per kept assignment, grouped by global expert
// e in slot-position order; expert e's rows start at send_offsets[e]:
//   ragged: send_offsets = exclusive prefix sums of load;  padded: send_offsets[e] = e C,
//   expert e owns C rows, the rows past its load are padding (zero).
// With one rank the send layout is also the expert-major layout the experts compute on; with
// several, cuda_copy_blocks reorders between source-major and expert-major blocks.
//
// Arithmetic: permute and the block copies move bits; gather_to_tokens sums, per token, the
// weighted rows in slot order like the CPU loop (fp32, possibly fused multiply-adds on either
// side: a few ulp); combine_backward's d_gate is a dot product over d summed in another order
// than the CPU's (fp32, relative error ~ d 2^-24 of sum |dy row| at worst).
#pragma once

#include <cstdint>

#include "moebench/cuda.hpp"
#include "routing_cuda.hpp"

namespace moebench {

// send_offsets [E + 1] (rows) from the plan's load (device): ragged or padded (e * C).
void cuda_send_offsets(int64_t* send_offsets, const DeviceRoutingPlan& plan, bool padded,
                       CUstream_st* stream);

// send [rows, d]: the row of x [T, d] for every kept entry at send_offsets[e] + position.
void cuda_permute(float* send, const float* x, const DeviceRoutingPlan& plan,
                  const int64_t* send_offsets, int d_model, CUstream_st* stream);

// Padded layout: zero the rows [send_offsets[e] + load[e], send_offsets[e] + C) of every e.
void cuda_zero_padding_rows(float* send, const DeviceRoutingPlan& plan,
                            const int64_t* send_offsets, int d_model, CUstream_st* stream);

// out [T, d] = (accumulate ? out : 0) + sum over t's kept entries, in slot order, of
// w * rows[send row], w = gate (use_gates) or 1. Combine is (use_gates, !accumulate); the
// backward of dispatch is (!use_gates, accumulate).
void cuda_gather_to_tokens(float* out, const float* rows, const DeviceRoutingPlan& plan,
                           const int64_t* send_offsets, int d_model, bool use_gates,
                           bool accumulate, CUstream_st* stream);

// Backward of combine, at the source: for every kept entry (t, s) with send row r,
//   d_gate[t, s] = dot(dy[t], returned_rows[r]),   send_grad[r] = gate[t, s] * dy[t];
// d_gate is 0 for entries that are not kept. send_grad [rows, d], d_gate [T, slots].
void cuda_combine_backward(float* send_grad, float* d_gate, const float* dy,
                           const float* returned_rows, const DeviceRoutingPlan& plan,
                           const int64_t* send_offsets, int d_model, CUstream_st* stream);

// dst rows [dst_row[b], dst_row[b] + rows[b]) = src rows [src_row[b], ...) for b < blocks.
// dst_row, src_row, rows: device arrays [blocks].
void cuda_copy_blocks(float* dst, const float* src, const int64_t* dst_row,
                      const int64_t* src_row, const int32_t* rows, int blocks, int d_model,
                      CUstream_st* stream);

}  // namespace moebench
