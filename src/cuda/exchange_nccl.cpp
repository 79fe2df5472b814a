// NCCL all-to-all and all-reduce. See exchange_nccl.hpp.
#include "exchange_nccl.hpp"

#include <cuda_runtime_api.h>

#include "cuda_check.hpp"
#include "moebench/check.hpp"

namespace moebench {
namespace {

// An NCCL group that is closed on every path: if a call inside it throws, the destructor ends
// the group (its status ignored), so the thread is not left inside an open group.
class NcclGroup {
 public:
  NcclGroup() { MOEBENCH_NCCL_CHECK(ncclGroupStart()); }
  ~NcclGroup() {
    if (open_) (void)ncclGroupEnd();
  }
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;
  void end() {
    open_ = false;
    MOEBENCH_NCCL_CHECK(ncclGroupEnd());
  }

 private:
  bool open_ = true;
};

}  // namespace

size_t nccl_type_size(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: break;
  }
  MOEBENCH_CHECK(false, "nccl_type_size: unsupported NCCL data type");
  return 0;
}

void nccl_alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    ncclDataType_t type, ncclComm* comm, CUstream_st* stream) {
  int size = 0;
  MOEBENCH_NCCL_CHECK(ncclCommCount(comm, &size));
  const size_t element = nccl_type_size(type);
  const char* send_bytes = static_cast<const char*>(send);
  char* recv_bytes = static_cast<char*>(recv);
  for (int peer = 0; peer < size; ++peer) {  // checked before the group is opened
    MOEBENCH_CHECK(send_counts[peer] >= 0 && recv_counts[peer] >= 0 && send_displs[peer] >= 0 &&
                       recv_displs[peer] >= 0,
                   "negative count or displacement");
  }
  NcclGroup group;
  for (int peer = 0; peer < size; ++peer) {
    if (send_counts[peer] > 0) {
      MOEBENCH_NCCL_CHECK(ncclSend(send_bytes + static_cast<size_t>(send_displs[peer]) * element,
                                   static_cast<size_t>(send_counts[peer]), type, peer, comm,
                                   stream));
    }
    if (recv_counts[peer] > 0) {
      MOEBENCH_NCCL_CHECK(ncclRecv(recv_bytes + static_cast<size_t>(recv_displs[peer]) * element,
                                   static_cast<size_t>(recv_counts[peer]), type, peer, comm,
                                   stream));
    }
  }
  group.end();
}

void nccl_alltoall(const void* send, void* recv, size_t count, ncclDataType_t type,
                   ncclComm* comm, CUstream_st* stream) {
  if (count == 0) return;
  int size = 0;
  MOEBENCH_NCCL_CHECK(ncclCommCount(comm, &size));
  const size_t bytes = count * nccl_type_size(type);
  const char* send_bytes = static_cast<const char*>(send);
  char* recv_bytes = static_cast<char*>(recv);
  NcclGroup group;
  for (int peer = 0; peer < size; ++peer) {
    MOEBENCH_NCCL_CHECK(
        ncclSend(send_bytes + static_cast<size_t>(peer) * bytes, count, type, peer, comm, stream));
    MOEBENCH_NCCL_CHECK(
        ncclRecv(recv_bytes + static_cast<size_t>(peer) * bytes, count, type, peer, comm, stream));
  }
  group.end();
}

void nccl_allreduce_average(float* data, size_t count, ncclComm* comm, CUstream_st* stream) {
  if (count == 0) return;
  MOEBENCH_NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat32, ncclAvg, comm, stream));
}

}  // namespace moebench
