// Error handling shared by every component.
//
//  - UsageError: bad input from the user (options, files). The message names the problem and
//    the fix; the binary prints it once (rank 0) and exits non-zero on every rank.
//  - MOEBENCH_MPI_CHECK / MOEBENCH_H5_CHECK / MOEBENCH_CHECK: a failed library call or a broken
//    internal invariant. They throw moebench::Error naming the call, file and line.
#pragma once

#include <stdexcept>
#include <string>

namespace moebench {

// A failed library call or a violated invariant (a bug, or the system refusing something).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from the user; what() is the complete message to print.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);
[[noreturn]] void throw_h5_error(const char* call, const char* file, int line);
[[noreturn]] void throw_check_error(const char* condition, const std::string& message,
                                    const char* file, int line);

}  // namespace moebench

// MPI calls: any return other than MPI_SUCCESS throws (MPI_ERRORS_RETURN is set on the
// communicators moebench uses, so errors come back here instead of aborting).
#define MOEBENCH_MPI_CHECK(call)                                            \
  do {                                                                      \
    int moebench_mpi_rc_ = (call);                                          \
    if (moebench_mpi_rc_ != 0) {                                            \
      ::moebench::throw_mpi_error(moebench_mpi_rc_, #call, __FILE__, __LINE__); \
    }                                                                       \
  } while (0)

// HDF5 calls: herr_t and hid_t are negative on failure. Evaluates to the call's value.
#define MOEBENCH_H5_CHECK(call)                                             \
  ([&]() {                                                                  \
    auto moebench_h5_rc_ = (call);                                          \
    if (moebench_h5_rc_ < 0) {                                              \
      ::moebench::throw_h5_error(#call, __FILE__, __LINE__);                \
    }                                                                       \
    return moebench_h5_rc_;                                                 \
  }())

// Internal invariants, on in every build type.
#define MOEBENCH_CHECK(condition, message)                                  \
  do {                                                                      \
    if (!(condition)) {                                                     \
      ::moebench::throw_check_error(#condition, (message), __FILE__, __LINE__); \
    }                                                                       \
  } while (0)
