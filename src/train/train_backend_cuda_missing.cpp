// make_cuda_train_backend (train_backend.hpp) in a build without the CUDA backend:
// --backend cuda gets one message saying how to build it. The real one is
// src/cuda/train_backend_cuda.cpp.
#include "moebench/check.hpp"
#include "moebench/cuda.hpp"
#include "moebench/train_backend.hpp"

#if !MOEBENCH_HAVE_CUDA

namespace moebench {

std::unique_ptr<TrainBackend> make_cuda_train_backend(const ModelConfig& /*config*/,
                                                      MPI_Comm /*comm*/, int /*B*/, int /*T*/) {
  throw UsageError(cuda_backend_missing_message());
}

}  // namespace moebench

#endif
