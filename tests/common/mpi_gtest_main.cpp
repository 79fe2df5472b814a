// Shared GoogleTest main: initialises MPI (so tests may use MPI_COMM_WORLD under mpirun
// or as a singleton), silences the result printer on ranks other than 0, and makes the
// exit code reflect a failure on any rank.
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int local_failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&local_failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (local_failed && rank != 0) {
    // Failures on other ranks would be invisible with the printer removed.
    fprintf(stderr, "[rank %d] test failures on this rank (rerun with --gtest_filter to see them)\n", rank);
  }
  MPI_Finalize();
  return any_failed;
}
