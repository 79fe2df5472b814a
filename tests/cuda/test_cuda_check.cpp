// The checked-call macros and the backend option: host-only, so these run (and must pass)
// on machines without a GPU too.
#include <gtest/gtest.h>

#include <string>

#include "cuda_check.hpp"
#include "gpu_test_support.hpp"
#include "moebench/cuda.hpp"

namespace moebench {
namespace {

const bool registered = test::register_gpu_environment();

// The message of the Error thrown by `action` (empty if none was thrown).
template <typename Action>
std::string error_message(Action action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST(CudaCheck, SuccessIsSilent) {
  EXPECT_NO_THROW(MOEBENCH_CUDA_CHECK(cudaSuccess));
  EXPECT_NO_THROW(MOEBENCH_CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
  EXPECT_NO_THROW(MOEBENCH_NCCL_CHECK(ncclSuccess));
}

TEST(CudaCheck, FailuresNameTheCallTheLocationAndTheLibraryError) {
  const std::string cuda = error_message([] { MOEBENCH_CUDA_CHECK(cudaErrorInvalidValue); });
  expect_contains(cuda, "CUDA call failed: cudaErrorInvalidValue");
  expect_contains(cuda, "cudaErrorInvalidValue");  // cudaGetErrorName
  expect_contains(cuda, cudaGetErrorString(cudaErrorInvalidValue));
  expect_contains(cuda, "test_cuda_check.cpp:");

  const std::string blas =
      error_message([] { MOEBENCH_CUBLAS_CHECK(CUBLAS_STATUS_NOT_INITIALIZED); });
  expect_contains(blas, "cuBLAS call failed");
  expect_contains(blas, "CUBLAS_STATUS_NOT_INITIALIZED");
  expect_contains(blas, cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED));
  expect_contains(blas, "test_cuda_check.cpp:");

  const std::string nccl = error_message([] { MOEBENCH_NCCL_CHECK(ncclInvalidArgument); });
  expect_contains(nccl, "NCCL call failed");
  expect_contains(nccl, ncclGetErrorString(ncclInvalidArgument));
  expect_contains(nccl, "test_cuda_check.cpp:");
}

TEST(CudaBackendOption, ParsesCpuAndCudaAndNamesTheOptionOtherwise) {
  EXPECT_EQ(parse_backend("--backend", "cpu"), Backend::cpu);
  EXPECT_EQ(parse_backend("--backend", "cuda"), Backend::cuda);
  EXPECT_STREQ(to_string(Backend::cuda), "cuda");
  try {
    parse_backend("--backend", "gpu");
    ADD_FAILURE() << "no UsageError";
  } catch (const UsageError& error) {
    EXPECT_STREQ(error.what(), "--backend: unknown value 'gpu' (accepted: cpu, cuda)");
  }
}

}  // namespace
}  // namespace moebench
