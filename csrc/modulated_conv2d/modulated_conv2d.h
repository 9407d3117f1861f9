// modulated_conv2d: the two kernels the cpu and cuda backends add around torch's convolution,
// their parameters and the per-element math shared by the CPU and CUDA code.
// ganfast/ops/modulated_conv2d/reference.py ("kernel contracts of the fused backends") is the spec.
//
// Epilogue. For sample n, channel c, pixel p of the H*W = M plane, with a = the modulated
// convolution before demodulation:
//   z   = a * dcoef[n, c] + noise[n, c, p] + bias[c]
//   out = clamp(gain * f(z), -clamp, clamp)                     f: a bias_act activation
// Backward, given g = dL/dout:
//   dz  = g * gain * f'(z) * [|gain * f(z)| <= clamp]            (bias_act's conventions at kinks)
//   da  = dz * dcoef[n, c],  sums[n, c] = (sum_p dz, sum_p dz * a)
// dcoef, bias and the noise are optional (1, 0, 0 when absent).
//
// Demodulation. dcoef[n, o] = rsqrt(sum_i styles[n, i]^2 * wsq[o, i] + 1e-8), with
// wsq[o, i] = sum over the kernel taps of weight[o, i]^2: the per-sample weights are never formed.
//
// Memory view: a, g, out (and da) are contiguous [N, C, M]. The noise is any strided view of
// shape [N, C, H, W] (expanded: stride 0 along broadcast dims); a "flat" noise has each of its
// planes contiguous (element p of plane (n, c) at n * sN + c * sC + p), as [N, 1, H, W] or
// [1, 1, H, W] expanded, or a contiguous [N, C, H, W]. Small tensors (dcoef, bias, sums) are of
// the accumulation type A: float, or double for double a.
#pragma once
#include <cstdint>
#include <vector>
#include <torch/extension.h>

#include "common/bias_act_math.h"

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

// Host code shared by both extensions (modulated_conv2d_common.cpp): argument checks with clear
// messages naming the argument, and the params. g: given for the backward. out and sums are set
// by the caller.
ModconvEpilogueParams make_modconv_epilogue_params(
    const at::Tensor& a, const c10::optional<at::Tensor>& g, const c10::optional<at::Tensor>& dcoef,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, int64_t act,
    double alpha, double gain, double clamp);
// Checks weight and styles; returns the params with styles converted to the accumulation type
// (kept alive in *styles_acc) and dcoef unset.
ModconvDemodParams make_modconv_demod_params(const at::Tensor& weight, const at::Tensor& styles,
                                             at::Tensor* styles_acc);
// The accumulation dtype of a data dtype: float64 for float64, else float32.
at::ScalarType modconv_acc_dtype(at::ScalarType dtype);

// Forward: returns out. out (argument): optional preallocated output like a (the tests pass a
// NaN-filled one so an unwritten element fails).
at::Tensor modconv_epilogue_forward_cpu(const at::Tensor& a, const c10::optional<at::Tensor>& dcoef,
                                        const c10::optional<at::Tensor>& noise,
                                        const c10::optional<at::Tensor>& bias, int64_t act, double alpha,
                                        double gain, double clamp,
                                        const c10::optional<at::Tensor>& out = c10::nullopt);
// Backward: returns {da, sums}.
std::vector<at::Tensor> modconv_epilogue_backward_cpu(
    const at::Tensor& g, const at::Tensor& a, const c10::optional<at::Tensor>& dcoef,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, int64_t act, double alpha,
    double gain, double clamp, const c10::optional<at::Tensor>& out = c10::nullopt);
at::Tensor modconv_demod_cpu(const at::Tensor& weight, const at::Tensor& styles);
#ifdef GANFAST_WITH_CUDA
at::Tensor modconv_epilogue_forward_cuda(const at::Tensor& a, const c10::optional<at::Tensor>& dcoef,
                                         const c10::optional<at::Tensor>& noise,
                                         const c10::optional<at::Tensor>& bias, int64_t act, double alpha,
                                         double gain, double clamp,
                                         const c10::optional<at::Tensor>& out = c10::nullopt);
std::vector<at::Tensor> modconv_epilogue_backward_cuda(
    const at::Tensor& g, const at::Tensor& a, const c10::optional<at::Tensor>& dcoef,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, int64_t act, double alpha,
    double gain, double clamp, const c10::optional<at::Tensor>& out = c10::nullopt);
at::Tensor modconv_demod_cuda(const at::Tensor& weight, const at::Tensor& styles);
#endif

}  // namespace ganfast
