// NcclAlltoall (alltoall_nccl.hpp) in a build without the CUDA backend: --backend cuda gets
// one message saying how to build it. The real one is src/cuda/alltoall_nccl.cpp.
#include "moebench/alltoall_nccl.hpp"

#include "moebench/check.hpp"

#if !MOEBENCH_HAVE_CUDA

namespace moebench {

struct NcclAlltoall::Impl {};

NcclAlltoall::NcclAlltoall(MPI_Comm /*comm*/, int64_t /*max_elements*/) {
  throw UsageError(cuda_backend_missing_message());
}

NcclAlltoall::~NcclAlltoall() = default;

void NcclAlltoall::reserve(int64_t /*elements*/) {
  throw UsageError(cuda_backend_missing_message());
}

std::string NcclAlltoall::device_name() const { return {}; }

void NcclAlltoall::run_through_host(const float* /*send*/, const ExchangeCounts& /*counts*/,
                                    float* /*recv*/) {
  throw UsageError(cuda_backend_missing_message());
}

void NcclAlltoall::time(const ExchangeCounts& /*forward*/, const ExchangeCounts* /*backward*/,
                        int /*warmup*/, int /*iters*/, double* /*seconds*/, MPI_Comm /*comm*/) {
  throw UsageError(cuda_backend_missing_message());
}

}  // namespace moebench

#endif
