// moebench: one binary, one subcommand per benchmark (DESIGN §1).
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0) {
    std::printf("usage: moebench <command> [options]\n");
    return argc < 2 ? 2 : 0;
  }
  std::fprintf(stderr, "moebench: unknown command '%s'\n", argv[1]);
  return 2;
}
