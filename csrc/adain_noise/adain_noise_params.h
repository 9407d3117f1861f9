// adain_noise: parameters and per-element math shared by the CPU and CUDA kernels (no torch
// header, so the kernel .cu can include it; the torch-side declarations are in adain_noise.h).
//
// For sample n, channel c, pixel p of the H*W = M plane (ganfast/ops/adain_noise/reference.py is
// the spec):
//   z    = x + ns[c] * noise[n, p] + b[c]
//   y    = gain * f(z)                                  f: a bias_act activation (bias_act_math.h)
//   yhat = (y - mean_p y) * rstd,   rstd = rsqrt(var_p y + eps)   (biased variance)
//   out  = yhat * s[n, c] + t[n, c]
// Backward, given g = dL/dout, with the plane sums sg = sum_p g and sgy = sum_p g * yhat:
//   dL/ds = sgy,  dL/dt = sg
//   dz    = gain * f'(z) * rstd * s * (g - sg / M - yhat * sgy / M)      (= dL/dx)
//   plus the plane sums sum_p dz and sum_p dz * noise for the bias and noise-strength gradients.
//
// Memory view: x, g, out, dx are [N, C, M] with strides (sN, sC, sP): contiguous NCHW has
// sP = 1, sC = M; channels_last has sC = 1, sP = C. noise is [Nn, M] with batch stride 0 when
// Nn == 1. Small tensors (s, t, ns, b, stats, gradients) are of the accumulation type A: float,
// or double for double x.
#pragma once
#include <cstdint>

#include "common/bias_act_math.h"
#include "common/noise_rng.h"

namespace ganfast {

struct AdainNoiseParams {
  const void* x;        // [N, C, M] (strides sN, sC, sP), dtype D
  const void* g;        // like x (backward only)
  void* out;            // like x: out (forward) or dx (backward)
  const void* s;        // [N, C] A: style scale
  const void* t;        // [N, C] A: style bias (forward only)
  const void* noise;    // [Nn, M] D, or nullptr (no noise, or seeded noise)
  int64_t noise_sN;     // M, or 0 when one noise plane is shared by the batch
  const void* ns;       // [C] A, or nullptr (strength 1)
  const void* b;        // [C] A, or nullptr
  void* stats;          // [N, C, 2] A: mean(y), rstd (written by forward, read by backward)
  void* ds;             // [N, C] A (backward): sum g * yhat
  void* dt;             // [N, C] A (backward): sum g
  void* sdz;            // [N, C] A (backward): sum dz
  void* sdzn;           // [N, C] A (backward): sum dz * noise
  int64_t N, C, M;
  int64_t sN, sC, sP;
  int act;              // ganfast::Act
  double alpha, gain, eps;
  int64_t seed;         // < 0: no seeded noise
  bool has_noise() const { return noise != nullptr || seed >= 0; }
};

// z = x + ns * noise + b, in the accumulation type.
template <typename T> GANFAST_HD T adain_z(T x, T noise, T ns, T b) { return x + ns * noise + b; }

// dz given the recomputed z and yhat and the plane constants
// k = rstd * s, mg = sg / M, mgy = sgy / M.
template <Act A, typename T>
GANFAST_HD T adain_dz(T z, T g, T yhat, T alpha, T gain, T k, T mg, T mgy) {
  return gain * ActFn<A, T>::d1(z, alpha) * k * (g - mg - yhat * mgy);
}

}  // namespace ganfast
