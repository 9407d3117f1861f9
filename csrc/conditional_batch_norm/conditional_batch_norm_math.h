// conditional_batch_norm's per-element math (the formulas in conditional_batch_norm.h), without
// torch headers: shared by the CPU kernels (through conditional_batch_norm.h) and the CUDA kernels
// (conditional_batch_norm_cuda.cu, which includes no torch header).
#pragma once
#include "common/host_device.h"

namespace ganfast {

template <typename T> GANFAST_HD T cbn_xhat(T x, T mean, T rstd) { return (x - mean) * rstd; }
template <typename T> GANFAST_HD T cbn_z(T xhat, T gain, T bias) { return xhat * gain + bias; }
// relu(z) (a NaN z stays NaN, as torch.relu).
template <bool RELU, typename T> GANFAST_HD T cbn_y(T z) { return RELU && z < T(0) ? T(0) : z; }
// dy where relu passes the gradient (z > 0), else 0.
template <bool RELU, typename T> GANFAST_HD T cbn_dz(T dy, T z) { return RELU && !(z > T(0)) ? T(0) : dy; }
template <typename T> GANFAST_HD T cbn_dx(T dz, T xhat, T rstd, T gain, T c1, T c2) {
  return rstd * (gain * dz - c1 - xhat * c2);
}

// (mean, M2) of `count` > 0 values from their sums about `pivot`: s1 = sum (v - pivot),
// s2 = sum (v - pivot)^2.
GANFAST_HD void cbn_moments(double count, double pivot, double s1, double s2, double& mean, double& m2) {
  const double shift = s1 / count;  // mean - pivot
  mean = pivot + shift;
  const double v = s2 - s1 * shift;
  // rounding can leave a constant channel's M2 at -tiny; a NaN (a channel holding +-inf) stays NaN
  m2 = v < 0.0 ? 0.0 : v;
}

}  // namespace ganfast
