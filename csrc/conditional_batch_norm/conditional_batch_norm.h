// conditional_batch_norm (BigGAN's ccbn): parameters and per-element math shared by the CPU and
// CUDA kernels of the four-pass kernel contract (ganfast/ops/conditional_batch_norm/reference.py).
// (The struct and the math themselves sit in the torch-free conditional_batch_norm_params.h and
// conditional_batch_norm_math.h, which the CUDA kernels include without this header.)
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
#include <tuple>
#include <torch/extension.h>

#include "common/host_device.h"
#include "conditional_batch_norm/conditional_batch_norm_math.h"    // per-element math
#include "conditional_batch_norm/conditional_batch_norm_params.h"  // CbnParams

namespace ganfast {

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
// The eager path's whole forward in one call (conditional_batch_norm_common.cpp, on this
// extension's passes): (y, mean [C], var [C] biased) from the batch (training) or running
// statistics; training updates running_mean / running_var in place when given. gain, bias: [N, C]
// per sample, or [C] per channel (torch BatchNorm's weight and bias, for ganfast.nn.BatchNormAct2d),
// in the accumulation dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor> cbn_forward_step(const at::Tensor& x, const at::Tensor& gain,
                                                                const at::Tensor& bias,
                                                                const c10::optional<at::Tensor>& running_mean,
                                                                const c10::optional<at::Tensor>& running_var,
                                                                bool training, double momentum, double eps, bool relu);
// ... and its backward: (dx, dgain, dbias) from dy and the forward's mean and var; dgain and dbias
// have gain's and bias's shapes ([C]: summed over the batch, as autograd's backward of expand).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cbn_backward_step(const at::Tensor& dy, const at::Tensor& x,
                                                                 const at::Tensor& gain, const at::Tensor& bias,
                                                                 const at::Tensor& mean, const at::Tensor& var,
                                                                 bool training, double eps, bool relu);

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
