// CudaCapacityCells (capacity_cell.hpp) in a build without the CUDA backend: --backend cuda
// gets one message saying how to build it. The real one is src/cuda/capacity_cuda.cpp.
#include "moebench/capacity_cell.hpp"
#include "moebench/check.hpp"
#include "moebench/cuda.hpp"

#if !MOEBENCH_HAVE_CUDA

namespace moebench {

struct CudaCapacityCells::Impl {};

CudaCapacityCells::CudaCapacityCells(MPI_Comm /*comm*/) {
  throw UsageError(cuda_backend_missing_message());
}

CudaCapacityCells::~CudaCapacityCells() = default;

void CudaCapacityCells::validate(const RoutingConfig& /*config*/) {
  throw UsageError(cuda_backend_missing_message());
}

std::string CudaCapacityCells::device_name() const { return {}; }

CapacityCellResult CudaCapacityCells::run(const CapacityCellSetup& /*setup*/, MPI_Comm /*comm*/,
                                          RoutingPlan& /*last_plan*/, std::vector<float>& /*y*/) {
  throw UsageError(cuda_backend_missing_message());
}

}  // namespace moebench

#endif
