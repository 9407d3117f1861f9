// modulated_conv2d's parameter structs, without torch headers: shared by modulated_conv2d.h (CPU
// and host code) and modulated_conv2d_cuda_launch.h (the torch-free CUDA launch functions). The
// layouts and types are described in modulated_conv2d.h.
#pragma once
#include <cstdint>

namespace ganfast {

struct ModconvEpilogueParams {
  const void* a;         // [N, C, M] contiguous, dtype D
  const void* g;         // like a (backward only)
  void* out;             // like a: out (forward) or da (backward)
  const void* dcoef;     // [N, C] A, or nullptr (no demodulation)
  const void* bias;      // [C] A, or nullptr
  const void* noise;     // D, element (n, c, h, w) at n * nsN + c * nsC + h * nsH + w * nsW; or nullptr
  int64_t nsN, nsC, nsH, nsW;
  bool noise_flat;       // each noise plane is M contiguous elements
  void* sums;            // [N, C, 2] A (backward): sum dz, sum dz * a
  int64_t N, C, H, W, M;
  int act;               // ganfast::Act
  double alpha, gain;
  double clamp;          // host_clamp'ed: +infinity when the op does not clamp
  bool has_clamp;
};

struct ModconvDemodParams {
  const void* weight;    // [Cout, Cin, K] contiguous (K = kh * kw), dtype D
  const void* styles;    // [N, Cin] contiguous A
  void* dcoef;           // [N, Cout] A
  int64_t N, Cout, Cin, K;
};

}  // namespace ganfast
