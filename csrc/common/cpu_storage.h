// How CPU kernels load and store each dtype so that GCC vectorizes the loops. c10::BFloat16 and
// c10::Half are structs: loads of them get no vector type. bf16 goes through its raw bits
// (branch-free, round-to-nearest-even, as c10's conversion). fp16 keeps c10::Half's conversion
// (scalar): without AVX512-FP16, GCC 12 does not vectorize _Float16 conversions.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace ganfast {

template <typename scalar_t> struct CpuStorage {
  using raw = scalar_t;
  using acc = typename acc_type<scalar_t>::type;
  static inline acc load(raw v) { return static_cast<acc>(v); }
  static inline raw store(acc v) { return static_cast<raw>(v); }
};

template <> struct CpuStorage<c10::BFloat16> {
  using raw = uint16_t;
  using acc = float;
  static inline float load(uint16_t b) {
    const uint32_t u = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  static inline uint16_t store(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return f != f ? uint16_t(0x7FC0) : static_cast<uint16_t>(rounded);  // NaN stays NaN
  }
};
static_assert(sizeof(c10::BFloat16) == sizeof(uint16_t), "bf16 raw bits");

}  // namespace ganfast
