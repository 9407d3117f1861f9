// Division by a divisor fixed for a whole launch, without the GPU's slow 64-bit integer divide:
// the round-up method of Granlund & Montgomery, "Division by invariant integers using
// multiplication" (PLDI 1994, figure 4.1), for unsigned 64-bit n and any divisor d >= 1:
//   l = ceil(log2 d),  m = floor(2^64 * (2^l - d) / d) + 1,
//   t = mulhi(m, n),   n / d = (t + ((n - t) >> min(l, 1))) >> max(l - 1, 0).
// Exact for every n < 2^64 (no overflow: n - t >= 0 and the sum stays below 2^64).
// __host__ __device__ so the CPU can check it against `/`.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace ganfast {

GANFAST_HD uint64_t umulhi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

struct FastDivmod {
  uint64_t divisor;
  uint64_t multiplier;
  uint32_t shift1, shift2;

  FastDivmod() = default;

  // Host side, once per launch. d must be >= 1.
  explicit FastDivmod(uint64_t d) : divisor(d) {
    using u128 = unsigned __int128;
    uint32_t l = 0;
    while ((u128(1) << l) < d) ++l;
    multiplier = static_cast<uint64_t>((u128(1) << 64) * ((u128(1) << l) - d) / d + 1);
    shift1 = l < 1 ? l : 1;
    shift2 = l > 1 ? l - 1 : 0;
  }

  GANFAST_HD uint64_t div(uint64_t n) const {
    const uint64_t t = umulhi64(multiplier, n);
    return (t + ((n - t) >> shift1)) >> shift2;
  }

  // q = n / d, r = n % d.
  GANFAST_HD void divmod(uint64_t n, uint64_t& q, uint64_t& r) const {
    q = div(n);
    r = n - q * divisor;
  }
};

}  // namespace ganfast
