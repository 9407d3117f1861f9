// modulated_conv2d: the two kernels the cpu and cuda backends add around torch's convolution,
// their parameters and the per-element math shared by the CPU and CUDA code.
// (The structs and the math themselves sit in the torch-free modulated_conv2d_params.h and
// modulated_conv2d_math.h, which the CUDA kernels include without this header.)
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
#include "modulated_conv2d/modulated_conv2d_math.h"    // per-element math
#include "modulated_conv2d/modulated_conv2d_params.h"  // the params structs

namespace ganfast {

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
