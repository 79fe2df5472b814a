// Checked CUDA runtime, cuBLAS and NCCL calls (STYLE lesson 6): every return code is
// compared with the library's success value, and a failure throws moebench::Error naming the
// call, the file and line, the numeric code and the library's own error string.
//
//   MOEBENCH_CUDA_CHECK(cudaMemcpyAsync(...));
//   MOEBENCH_CUBLAS_CHECK(cublasSgemm(...));
//   MOEBENCH_NCCL_CHECK(ncclSend(...));
//   MOEBENCH_CUDA_LAUNCH_CHECK();   // after a <<<...>>> launch: a bad configuration
//
// Kernel launches report configuration errors through cudaGetLastError(); errors raised while
// a kernel runs surface at the next synchronising call, which is checked like any other.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <sstream>
#include <string>

#include "moebench/check.hpp"

namespace moebench::cuda_detail {

[[noreturn]] inline void throw_library_error(const char* library, long code, const char* name,
                                             const char* text, const char* call,
                                             const char* file, int line) {
  std::ostringstream message;
  message << library << " call failed: " << call << " returned " << code;
  if (name != nullptr) message << " " << name;
  message << " (" << (text != nullptr ? text : "no description") << ") at " << file << ":"
          << line;
  throw Error(message.str());
}

inline void check_cuda(cudaError_t code, const char* call, const char* file, int line) {
  if (code == cudaSuccess) return;
  throw_library_error("CUDA", static_cast<long>(code), cudaGetErrorName(code),
                      cudaGetErrorString(code), call, file, line);
}

inline void check_cublas(cublasStatus_t code, const char* call, const char* file, int line) {
  if (code == CUBLAS_STATUS_SUCCESS) return;
  throw_library_error("cuBLAS", static_cast<long>(code), cublasGetStatusName(code),
                      cublasGetStatusString(code), call, file, line);
}

inline void check_nccl(ncclResult_t code, const char* call, const char* file, int line) {
  if (code == ncclSuccess) return;
  // ncclGetLastError(nullptr) returns the last error message of any communicator in this
  // thread, which usually says more than the code's generic string.
  std::string text = ncclGetErrorString(code);
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && last[0] != '\0') text += std::string("; ") + last;
  throw_library_error("NCCL", static_cast<long>(code), nullptr, text.c_str(), call, file, line);
}

}  // namespace moebench::cuda_detail

#define MOEBENCH_CUDA_CHECK(call) \
  ::moebench::cuda_detail::check_cuda((call), #call, __FILE__, __LINE__)
#define MOEBENCH_CUBLAS_CHECK(call) \
  ::moebench::cuda_detail::check_cublas((call), #call, __FILE__, __LINE__)
#define MOEBENCH_NCCL_CHECK(call) \
  ::moebench::cuda_detail::check_nccl((call), #call, __FILE__, __LINE__)
#define MOEBENCH_CUDA_LAUNCH_CHECK() \
  ::moebench::cuda_detail::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
