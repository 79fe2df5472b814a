// Little-endian integers in byte buffers, for the project's binary formats (token shards,
// checkpoints): the files read the same on every machine.
#pragma once

#include <cstdint>
#include <vector>

namespace moebench {

inline void put_u32(unsigned char* out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<unsigned char>(value >> (8 * i));
}
inline void put_u64(unsigned char* out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(value >> (8 * i));
}
inline void append_u32(std::vector<unsigned char>& out, uint32_t value) {
  out.resize(out.size() + 4);
  put_u32(out.data() + out.size() - 4, value);
}
inline void append_u64(std::vector<unsigned char>& out, uint64_t value) {
  out.resize(out.size() + 8);
  put_u64(out.data() + out.size() - 8, value);
}
inline uint32_t get_u32(const unsigned char* in) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= static_cast<uint32_t>(in[i]) << (8 * i);
  return value;
}
inline uint64_t get_u64(const unsigned char* in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value |= static_cast<uint64_t>(in[i]) << (8 * i);
  return value;
}

}  // namespace moebench
