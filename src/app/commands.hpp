// The subcommands built into the moebench binary (DESIGN §1), in the order
// `moebench --help` lists them.
#pragma once

#include <vector>

#include "moebench/cli.hpp"

std::vector<moebench::cli::Command> moebench_commands();
