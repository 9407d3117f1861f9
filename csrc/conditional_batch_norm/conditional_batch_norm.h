// conditional_batch_norm (BigGAN's ccbn): parameters and per-element math shared by the CPU and
// CUDA kernels of the four-pass kernel contract (ganfast/ops/conditional_batch_norm/reference.py).
//
// x, dy [N, C, H, W] contiguous NCHW, M = H * W pixels per (n, c) plane; the small tensors are of
// the accumulation type A (float; double for double x, CPU only):
//   mean, rstd, c1, c2 [C];  gain, bias [N, C].
// Per element of plane (n, c):
//   xhat = (x - mean[c]) * rstd[c]
//   z    = xhat * gain[n, c] + bias[n, c],      y = relu(z) when relu, else z
//   dz   = dy * (z > 0 when relu)
//   dx   = rstd[c] * (gain[n, c] * dz - c1[c] - xhat * c2[c])
// The passes:
//   channel_stats  x            -> [C, 2]     (mean, M2) over (N, H, W)
//   forward_apply  x            -> y
//   backward_sums  dy, x        -> [N, C, 2]  (sum dz, sum dz * xhat) per plane
//   backward_dx    dy, x, c1,c2 -> dx
//
// Statistics: shifted sums s1 = sum (x - pivot), s2 = sum (x - pivot)^2 accumulated in double, the
// pivot being the channel's first element x[0, c, 0, 0]. The data sit within a few standard
// deviations of the pivot, so s2 - s1^2 / count cancels at most a few digits of double's sixteen,
// even when the mean is 1000x the standard deviation (where sum x^2 - (sum x)^2 / count in float
// keeps nothing). One pivot per channel makes the partial sums of any split of a channel
// (planes, chunks) add up directly.
#pragma once
#include <cstdint>
#include <torch/extension.h>

#include "common/host_device.h"

namespace ganfast {

struct CbnParams {
  const void* x;      // [N, C, M] contiguous, dtype D
  const void* dy;     // like x (backward)
  void* out;          // like x: y (forward_apply) or dx (backward_dx)
  const void* mean;   // [C] A
  const void* rstd;   // [C] A
  const void* gain;   // [N, C] A
  const void* bias;   // [N, C] A
  const void* c1;     // [C] A (backward_dx)
  const void* c2;     // [C] A (backward_dx)
  void* sums;         // [C, 2] A (channel_stats) or [N, C, 2] A (backward_sums)
  int64_t N, C, M;
  bool relu;
};

// ---- per-element math ----

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
  m2 = v > 0.0 ? v : 0.0;           // rounding can leave a constant channel's M2 at -0 or -tiny
}

// ---- host code shared by both extensions (conditional_batch_norm_common.cpp) ----

// Checks the arguments of one pass with messages naming them and returns its params (out and
// sums null). dy, c1, c2: given for the passes that take them. mean, rstd, gain, bias: given for
// every pass but channel_stats. allow_double: float64 x is supported (CPU only).
CbnParams make_cbn_params(const at::Tensor& x, const c10::optional<at::Tensor>& dy,
                          const c10::optional<at::Tensor>& mean, const c10::optional<at::Tensor>& rstd,
                          const c10::optional<at::Tensor>& gain, const c10::optional<at::Tensor>& bias,
                          const c10::optional<at::Tensor>& c1, const c10::optional<at::Tensor>& c2, bool relu,
                          bool allow_double);

// The accumulation dtype for x: float, or double for double x.
at::ScalarType cbn_acc_dtype(const at::Tensor& x);

// [C, 2] (mean, M2) of x over (N, H, W). Empty channels (N * H * W == 0) give NaN, as the reference.
at::Tensor cbn_channel_stats_cpu(const at::Tensor& x);
// y [N, C, H, W]; out: optional preallocated output like x (the tests pass a NaN-filled one).
at::Tensor cbn_forward_apply_cpu(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
                                 const at::Tensor& gain, const at::Tensor& bias, bool relu,
                                 const c10::optional<at::Tensor>& out = c10::nullopt);
// [N, C, 2] (sum dz, sum dz * xhat) per plane.
at::Tensor cbn_backward_sums_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                 const at::Tensor& rstd, const at::Tensor& gain, const at::Tensor& bias, bool relu);
// dx [N, C, H, W]; out as forward_apply's.
at::Tensor cbn_backward_dx_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                               const at::Tensor& rstd, const at::Tensor& gain, const at::Tensor& bias, bool relu,
                               const at::Tensor& c1, const at::Tensor& c2,
                               const c10::optional<at::Tensor>& out = c10::nullopt);
#ifdef GANFAST_WITH_CUDA
at::Tensor cbn_channel_stats_cuda(const at::Tensor& x);
at::Tensor cbn_forward_apply_cuda(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
                                  const at::Tensor& gain, const at::Tensor& bias, bool relu,
                                  const c10::optional<at::Tensor>& out = c10::nullopt);
at::Tensor cbn_backward_sums_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                  const at::Tensor& rstd, const at::Tensor& gain, const at::Tensor& bias, bool relu);
at::Tensor cbn_backward_dx_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                const at::Tensor& rstd, const at::Tensor& gain, const at::Tensor& bias, bool relu,
                                const at::Tensor& c1, const at::Tensor& c2,
                                const c10::optional<at::Tensor>& out = c10::nullopt);
#endif

}  // namespace ganfast
