// CudaContext: device = rank within the node, NCCL communicator bootstrapped over MPI, one
// compute and one communication stream. See include/moebench/cuda.hpp.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <vector>

#include "cuda_check.hpp"
#include "moebench/check.hpp"
#include "moebench/cuda.hpp"

namespace moebench {

namespace {

struct DeviceChoice {
  int device = -1;
  int local_rank = 0;
  int local_size = 1;
  std::string reason;  // empty when every rank of comm has a device of its own
};

// Collective over comm. A rank uses device local_rank when its node shows at least as many
// devices as it has ranks; otherwise device local_rank % count, which is accepted only if
// the ranks of the node still land on distinct physical devices (compared by UUID: the case
// of a launcher that gives each rank its own CUDA_VISIBLE_DEVICES).
DeviceChoice choose_device(MPI_Comm comm) {
  DeviceChoice choice;
  int rank = 0, size = 1;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &size));
  MPI_Comm node = MPI_COMM_NULL;
  MOEBENCH_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(node, &choice.local_rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(node, &choice.local_size));

  int count = 0;
  char why[256] = {0};  // this rank's cudaGetDeviceCount failure, if any
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count <= 0) {
    std::snprintf(why, sizeof(why), "%s",
                  status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    count = 0;
    (void)cudaGetLastError();  // clear the runtime's error state
  }

  // The lowest rank without any device, and its reason, go to every rank.
  const int my_first_missing = count == 0 ? rank : size;
  int first_missing = size;
  MOEBENCH_MPI_CHECK(
      MPI_Allreduce(&my_first_missing, &first_missing, 1, MPI_INT, MPI_MIN, comm));
  if (first_missing < size) {
    MOEBENCH_MPI_CHECK(MPI_Bcast(why, sizeof(why), MPI_CHAR, first_missing, comm));
    why[sizeof(why) - 1] = '\0';
    std::ostringstream message;
    message << "no CUDA device is visible on rank " << first_missing
            << " (cudaGetDeviceCount: " << why
            << "); the CUDA backend needs one GPU per MPI rank";
    choice.reason = message.str();
    MOEBENCH_MPI_CHECK(MPI_Comm_free(&node));
    return choice;
  }

  choice.device = choice.local_rank < count ? choice.local_rank : choice.local_rank % count;
  cudaDeviceProp prop{};
  MOEBENCH_CUDA_CHECK(cudaGetDeviceProperties(&prop, choice.device));
  std::vector<char> uuids(static_cast<size_t>(choice.local_size) * sizeof(prop.uuid.bytes));
  MOEBENCH_MPI_CHECK(MPI_Allgather(prop.uuid.bytes, sizeof(prop.uuid.bytes), MPI_BYTE,
                                   uuids.data(), sizeof(prop.uuid.bytes), MPI_BYTE, node));
  int shared = 0;  // this node has two ranks on one physical device
  for (int a = 0; a < choice.local_size && !shared; ++a) {
    for (int b = a + 1; b < choice.local_size && !shared; ++b) {
      shared = std::memcmp(&uuids[a * sizeof(prop.uuid.bytes)], &uuids[b * sizeof(prop.uuid.bytes)],
                           sizeof(prop.uuid.bytes)) == 0;
    }
  }
  const int my_shared = shared ? rank : size;
  int first_shared = size;  // the lowest rank on a node with a shared GPU
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&my_shared, &first_shared, 1, MPI_INT, MPI_MIN, comm));
  const int my_count = count;
  int min_count = 0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&my_count, &min_count, 1, MPI_INT, MPI_MIN, comm));
  int max_local = 0;
  MOEBENCH_MPI_CHECK(MPI_Allreduce(&choice.local_size, &max_local, 1, MPI_INT, MPI_MAX, comm));
  if (first_shared < size) {
    std::ostringstream message;
    message << "fewer CUDA devices than ranks on a node (" << max_local
            << " ranks on one node, as few as " << min_count
            << " devices visible; rank " << first_shared
            << " would share its GPU): the CUDA backend uses one GPU per rank (device = rank "
               "within the node), so start at most as many ranks per node as it has GPUs";
    choice.reason = message.str();
  }
  MOEBENCH_MPI_CHECK(MPI_Comm_free(&node));
  return choice;
}

}  // namespace

std::string cuda_unavailable_reason(MPI_Comm comm) { return choose_device(comm).reason; }

struct CudaContext::Impl {
  int rank = 0, size = 1, local_rank = 0;
  CudaDeviceInfo info;
  cudaStream_t compute = nullptr;
  cudaStream_t comm = nullptr;
  cudaEvent_t order_event = nullptr;
  cublasHandle_t blas = nullptr;
  ncclComm_t nccl = nullptr;

  // Destructors must not throw: failures are reported on stderr.
  ~Impl() {
    auto report = [](const char* what, const char* text) {
      std::fprintf(stderr, "moebench: %s failed while releasing the CUDA context: %s\n", what,
                   text);
    };
    // Released while an exception propagates, this rank may have left an exchange its peers
    // are still in (or theirs may never come): waiting for the streams could then hang, so
    // NCCL's pending work is aborted first and the communicator is not destroyed collectively.
    if (nccl != nullptr && std::uncaught_exceptions() > 0) {
      const ncclResult_t status = ncclCommAbort(nccl);
      if (status != ncclSuccess) report("ncclCommAbort", ncclGetErrorString(status));
      nccl = nullptr;
    }
    if (compute != nullptr) {
      const cudaError_t status = cudaStreamSynchronize(compute);
      if (status != cudaSuccess) report("cudaStreamSynchronize", cudaGetErrorString(status));
    }
    if (comm != nullptr) {
      const cudaError_t status = cudaStreamSynchronize(comm);
      if (status != cudaSuccess) report("cudaStreamSynchronize", cudaGetErrorString(status));
    }
    if (nccl != nullptr) {
      const ncclResult_t status = ncclCommDestroy(nccl);
      if (status != ncclSuccess) report("ncclCommDestroy", ncclGetErrorString(status));
    }
    if (blas != nullptr) {
      const cublasStatus_t status = cublasDestroy(blas);
      if (status != CUBLAS_STATUS_SUCCESS) report("cublasDestroy", cublasGetStatusString(status));
    }
    if (order_event != nullptr) {
      const cudaError_t status = cudaEventDestroy(order_event);
      if (status != cudaSuccess) report("cudaEventDestroy", cudaGetErrorString(status));
    }
    for (cudaStream_t stream : {compute, comm}) {
      if (stream == nullptr) continue;
      const cudaError_t status = cudaStreamDestroy(stream);
      if (status != cudaSuccess) report("cudaStreamDestroy", cudaGetErrorString(status));
    }
  }
};

CudaContext::CudaContext(MPI_Comm comm) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  MOEBENCH_MPI_CHECK(MPI_Comm_rank(comm, &s.rank));
  MOEBENCH_MPI_CHECK(MPI_Comm_size(comm, &s.size));
  const DeviceChoice choice = choose_device(comm);
  if (!choice.reason.empty()) {
    throw UsageError("--backend cuda: " + choice.reason + " (or use --backend cpu)");
  }
  s.local_rank = choice.local_rank;
  MOEBENCH_CUDA_CHECK(cudaSetDevice(choice.device));

  cudaDeviceProp prop{};
  MOEBENCH_CUDA_CHECK(cudaGetDeviceProperties(&prop, choice.device));
  int memory_clock_khz = 0, bus_width_bits = 0;
  MOEBENCH_CUDA_CHECK(
      cudaDeviceGetAttribute(&memory_clock_khz, cudaDevAttrMemoryClockRate, choice.device));
  MOEBENCH_CUDA_CHECK(
      cudaDeviceGetAttribute(&bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, choice.device));
  s.info.device = choice.device;
  s.info.name = prop.name;
  s.info.compute_major = prop.major;
  s.info.compute_minor = prop.minor;
  s.info.multiprocessors = prop.multiProcessorCount;
  s.info.global_memory_bytes = prop.totalGlobalMem;
  s.info.peak_memory_bandwidth_gbs =
      2.0 * memory_clock_khz * 1e3 * (bus_width_bits / 8.0) / 1e9;

  MOEBENCH_CUDA_CHECK(cudaStreamCreateWithFlags(&s.compute, cudaStreamNonBlocking));
  MOEBENCH_CUDA_CHECK(cudaStreamCreateWithFlags(&s.comm, cudaStreamNonBlocking));
  MOEBENCH_CUDA_CHECK(cudaEventCreateWithFlags(&s.order_event, cudaEventDisableTiming));
  MOEBENCH_CUBLAS_CHECK(cublasCreate(&s.blas));
  MOEBENCH_CUBLAS_CHECK(cublasSetStream(s.blas, s.compute));
  // Plain fp32 products (no TF32 tensor cores): the backend is compared with the CPU one.
  MOEBENCH_CUBLAS_CHECK(cublasSetMathMode(s.blas, CUBLAS_DEFAULT_MATH));

  // Rank 0's id and whether it got one travel together: if ncclGetUniqueId fails there, every
  // rank throws instead of the others waiting in the broadcast.
  struct {
    ncclResult_t status;
    ncclUniqueId id;
  } boot;
  std::memset(&boot, 0, sizeof(boot));
  if (s.rank == 0) boot.status = ncclGetUniqueId(&boot.id);
  MOEBENCH_MPI_CHECK(MPI_Bcast(&boot, sizeof(boot), MPI_BYTE, 0, comm));
  if (boot.status != ncclSuccess) {
    throw Error(std::string("ncclGetUniqueId failed on rank 0: ") +
                ncclGetErrorString(boot.status) + " (NCCL_DEBUG=WARN says why)");
  }
  MOEBENCH_NCCL_CHECK(ncclCommInitRank(&s.nccl, s.size, boot.id, s.rank));
}

CudaContext::~CudaContext() = default;

int CudaContext::rank() const { return impl_->rank; }
int CudaContext::size() const { return impl_->size; }
int CudaContext::local_rank() const { return impl_->local_rank; }
const CudaDeviceInfo& CudaContext::info() const { return impl_->info; }
CUstream_st* CudaContext::compute_stream() const { return impl_->compute; }
CUstream_st* CudaContext::comm_stream() const { return impl_->comm; }
cublasContext* CudaContext::blas() const { return impl_->blas; }
ncclComm* CudaContext::nccl() const { return impl_->nccl; }

void CudaContext::order_after(CUstream_st* waiting, CUstream_st* producer) {
  if (waiting == producer) return;
  MOEBENCH_CUDA_CHECK(cudaEventRecord(impl_->order_event, producer));
  MOEBENCH_CUDA_CHECK(cudaStreamWaitEvent(waiting, impl_->order_event, 0));
}

void CudaContext::synchronize() const {
  MOEBENCH_CUDA_CHECK(cudaStreamSynchronize(impl_->compute));
  MOEBENCH_CUDA_CHECK(cudaStreamSynchronize(impl_->comm));
}

}  // namespace moebench
