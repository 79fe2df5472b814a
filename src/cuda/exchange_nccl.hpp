// NCCL exchanges of the CUDA backend: ragged and uniform all-to-all as grouped
// ncclSend/ncclRecv (one pair per peer, the rank itself included, inside one
// ncclGroupStart/ncclGroupEnd), and the dense-gradient all-reduce. Buffers are device memory;
// counts and displacements are host arrays in elements of `type`. Everything is enqueued on
// `stream` (the context's communication stream) and returns without waiting.
#pragma once

#include <nccl.h>

#include <cstddef>
#include <cstdint>

#include "moebench/cuda.hpp"

namespace moebench {

size_t nccl_type_size(ncclDataType_t type);

// Rank r sends send_counts[p] elements from send + send_displs[p] to every p, and receives
// recv_counts[p] elements from p into recv + recv_displs[p] (MPI_Alltoallv's contract; zero
// counts post nothing, which both sides agree on because they agree on the counts).
// send_counts etc.: [size of the communicator].
void nccl_alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    ncclDataType_t type, ncclComm* comm, CUstream_st* stream);

// count elements to and from every peer: send [P, count] -> recv [P, count].
void nccl_alltoall(const void* send, void* recv, size_t count, ncclDataType_t type,
                   ncclComm* comm, CUstream_st* stream);

// data [count] = mean over ranks of data (ncclAvg, in place): the dense gradients.
void nccl_allreduce_average(float* data, size_t count, ncclComm* comm, CUstream_st* stream);

}  // namespace moebench
