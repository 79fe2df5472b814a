// moebench: one binary, one subcommand per benchmark (DESIGN §1). Dispatch, MPI setup and
// the error policy live in moebench::cli::run_main; the commands in commands.cpp.
#include "commands.hpp"
#include "moebench/cli.hpp"

int main(int argc, char** argv) { return moebench::cli::run_main(argc, argv, moebench_commands()); }
