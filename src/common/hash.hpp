// Stable key hashing for partition selection.
#pragma once

#include <cstdint>
#include <string_view>

namespace rill::detail {

// FNV-1a, 64-bit. Stable across processes, runs and builds (std::hash is
// not), so a key maps to the same partition after a restart.
inline std::uint64_t hash_key(std::string_view key) noexcept {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace rill::detail
