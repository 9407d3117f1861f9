// modulated_conv2d's per-element math (the formulas in modulated_conv2d.h), without torch headers:
// shared by the CPU kernels (through modulated_conv2d.h) and the CUDA kernels
// (modulated_conv2d_cuda.cu, which includes no torch header).
#pragma once
#include "common/bias_act_math.h"

namespace ganfast {

constexpr double kDemodEps = 1e-8;

// z in the accumulation type, in the reference's order: (a * dcoef + noise) + bias.
template <typename T> GANFAST_HD T modconv_z(T a, T d, T noise, T b) { return a * d + noise + b; }

// out given z. kClamp = false is bias_act_element with an infinite clamp, minus the compares.
template <Act A, bool kClamp, typename T>
GANFAST_HD T modconv_y(T z, T alpha, T gain, T clamp) {
  if (kClamp) return bias_act_element<A, 0, T>(z, T(0), T(0), alpha, gain, clamp);
  return ActFn<A, T>::f(z, alpha) * gain;
}

// dz = dL/dz given z and g = dL/dout: bias_act_element's order 1 with its closed-interval clamp
// mask written as one compare of |y| (vectorized, the mask of bias_act_element's two compares
// costs the CPU loop about half its instructions). kClamp = false: no f(z) for the mask.
template <Act A, bool kClamp, typename T>
GANFAST_HD T modconv_dz(T z, T g, T alpha, T gain, T clamp) {
  const T dz = g * gain * ActFn<A, T>::d1(z, alpha);
  if (!kClamp) return dz;
  const T y = ActFn<A, T>::f(z, alpha) * gain;
  return (y < T(0) ? -y : y) <= clamp ? dz : T(0);
}

// The demodulation coefficient of a sum of squared modulated weights.
template <typename T> GANFAST_HD T demod_coefficient(T sum_sq) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(float)) return rsqrtf(sum_sq + T(kDemodEps));
  else return ::rsqrt(sum_sq + T(kDemodEps));
#else
  return T(1) / std::sqrt(sum_sq + T(kDemodEps));
#endif
}

}  // namespace ganfast
