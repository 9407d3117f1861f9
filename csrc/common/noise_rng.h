// Counter-based standard-normal noise, shared by the CPU and CUDA kernels (the Triton kernels and
// ganfast/ops/adain_noise/reference.py::draw_noise compute the same bits; that file is the spec).
//
// One value per (sample n, pixel p), independent of the channel, so a kernel regenerates it
// wherever it needs it (forward and backward) instead of storing a noise tensor:
//   k0, k1   = low and high 32 bits of the 64-bit seed
//   key_j(n) = mix32(mix32(k0 ^ mix32(2n + j)) ^ k1)          j = 0, 1 (two streams)
//   h_j      = mix32(key_j(n) ^ mix32(p))
//   u1       = ((h_0 >> 8) + 1) * 2^-24   in (0, 1]
//   u2       =  (h_1 >> 8)      * 2^-24   in [0, 1)
//   noise    = sqrt(-2 ln u1) * cos(2 pi u2)                     (Box-Muller; |noise| <= 5.77)
// mix32 is a 32-bit integer finalizer (xor-shift-multiply, constants 0x21f0aaad and 0x735a2d97,
// shifts 16, 15, 15): a bijection with full avalanche, so neighbouring pixels are uncorrelated.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace ganfast {

GANFAST_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x21f0aaadu;
  x ^= x >> 15;
  x *= 0x735a2d97u;
  x ^= x >> 15;
  return x;
}

// The two stream keys of sample n (computed once per sample, not per pixel).
struct NoiseKeys {
  uint32_t k0, k1;
};

GANFAST_HD NoiseKeys noise_keys(uint64_t seed, uint32_t n) {
  const uint32_t lo = static_cast<uint32_t>(seed), hi = static_cast<uint32_t>(seed >> 32);
  return NoiseKeys{mix32(mix32(lo ^ mix32(2u * n)) ^ hi), mix32(mix32(lo ^ mix32(2u * n + 1u)) ^ hi)};
}

// Standard-normal noise at pixel p of the sample whose keys are `k`, computed in T (float for
// fp16/bf16/fp32 kernels, double for fp64 ones: the uniforms are exact in both).
template <typename T>
GANFAST_HD T noise_at(NoiseKeys k, uint32_t p) {
  const uint32_t q = mix32(p);
  const uint32_t h0 = mix32(k.k0 ^ q), h1 = mix32(k.k1 ^ q);
  const T u1 = static_cast<T>((h0 >> 8) + 1u) * T(5.9604644775390625e-8);  // 2^-24
  const T u2 = static_cast<T>(h1 >> 8) * T(5.9604644775390625e-8);
  // ln u1 as log1p(u1 - 1): u1 - 1 is exact, and --use_fast_math maps logf (not log1pf) to the
  // approximate __logf, whose absolute error would swamp noise values near 0.
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(float)) {
    return sqrtf(-2.0f * log1pf(u1 - 1.0f)) * cospif(2.0f * u2);
  } else {
    return ::sqrt(-2.0 * ::log1p(u1 - 1.0)) * ::cospi(2.0 * u2);
  }
#else
  return std::sqrt(T(-2) * std::log1p(u1 - T(1))) * std::cos(T(6.28318530717958647692) * u2);
#endif
}

}  // namespace ganfast
