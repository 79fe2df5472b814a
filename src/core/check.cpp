#include "moebench/check.hpp"

#include <mpi.h>

#include <sstream>

namespace moebench {

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    text[0] = '\0';
  }
  std::ostringstream message;
  message << "MPI call failed: " << call << " returned " << code << " (" << text << ") at "
          << file << ":" << line;
  throw Error(message.str());
}

void throw_h5_error(const char* call, const char* file, int line) {
  std::ostringstream message;
  message << "HDF5 call failed: " << call << " at " << file << ":" << line;
  throw Error(message.str());
}

void throw_check_error(const char* condition, const std::string& message, const char* file,
                       int line) {
  std::ostringstream text;
  text << "internal check failed: " << condition << " (" << message << ") at " << file << ":"
       << line;
  throw Error(text.str());
}

}  // namespace moebench
