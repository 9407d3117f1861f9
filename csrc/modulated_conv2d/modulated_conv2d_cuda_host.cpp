// modulated_conv2d's torch side of the CUDA kernels (checks, outputs, workspace, stream); kernels in the .cu.
#include "common/cuda_host.h"
#include "modulated_conv2d/modulated_conv2d.h"
#include "modulated_conv2d/modulated_conv2d_cuda_launch.h"

#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "common/checks.h"

namespace ganfast {
namespace {

ModconvDevice current_device() {
  const auto* props = at::cuda::getCurrentDeviceProperties();
  return {props->multiProcessorCount, props->maxThreadsPerMultiProcessor};
}

}  // namespace

at::Tensor modconv_epilogue_forward_cuda(const at::Tensor& a, const c10::optional<at::Tensor>& dcoef,
                                         const c10::optional<at::Tensor>& noise,
                                         const c10::optional<at::Tensor>& bias, int64_t act, double alpha,
                                         double gain, double clamp, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(a, at::kCUDA, "a");
  const c10::cuda::CUDAGuard device_guard(a.device());
  ModconvEpilogueParams p = make_modconv_epilogue_params(a, c10::nullopt, dcoef, noise, bias, act, alpha, gain, clamp);
  at::Tensor y = output_like(a, out);
  p.out = y.data_ptr();
  if (a.numel() == 0) return y;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  GANFAST_CHECK_LAUNCH(launch_modconv_epilogue_forward(p, to_dtype(a.scalar_type()), current_device(), stream));
  return y;
}

std::vector<at::Tensor> modconv_epilogue_backward_cuda(
    const at::Tensor& g, const at::Tensor& a, const c10::optional<at::Tensor>& dcoef,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, int64_t act, double alpha,
    double gain, double clamp, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(a, at::kCUDA, "a");
  const c10::cuda::CUDAGuard device_guard(a.device());
  ModconvEpilogueParams p = make_modconv_epilogue_params(a, g, dcoef, noise, bias, act, alpha, gain, clamp);
  at::Tensor da = output_like(a, out);
  at::Tensor sums = at::empty({p.N, p.C, 2}, a.options().dtype(modconv_acc_dtype(a.scalar_type())));
  p.out = da.data_ptr();
  p.sums = sums.data_ptr();
  if (a.numel() == 0) return {da, sums.zero_()};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const DType dtype = to_dtype(a.scalar_type());
  const ModconvDevice dev = current_device();
  const ModconvBackwardGrid grid = modulated_conv2d_backward_grid(p, dtype, dev);
  TORCH_CHECK(grid.blocks <= std::numeric_limits<int>::max(),
              "ganfast: modconv epilogue backward on CUDA: tensor too large for one launch (", grid.blocks,
              " blocks)");
  at::Tensor ws;
  if (grid.splits > 1) {
    ws = at::empty({p.N * p.C * grid.splits * 2}, a.options().dtype(modconv_acc_dtype(a.scalar_type())));
  }
  GANFAST_CHECK_LAUNCH(
      launch_modconv_epilogue_backward(p, dtype, grid.splits > 1 ? ws.data_ptr() : nullptr, dev, stream));
  return {da, sums};
}

at::Tensor modconv_demod_cuda(const at::Tensor& weight, const at::Tensor& styles) {
  GANFAST_CHECK_DEVICE(weight, at::kCUDA, "weight");
  const c10::cuda::CUDAGuard device_guard(weight.device());
  at::Tensor styles_acc;
  ModconvDemodParams p = make_modconv_demod_params(weight, styles, &styles_acc);
  at::Tensor dcoef = at::empty({p.N, p.Cout}, styles_acc.options());
  if (dcoef.numel() == 0) return dcoef;
  TORCH_CHECK(p.Cout <= std::numeric_limits<int>::max(), "ganfast: modconv demod on CUDA: Cout ", p.Cout,
              " is more than one launch's blocks");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  p.dcoef = dcoef.data_ptr();
  GANFAST_CHECK_LAUNCH(launch_modconv_demod(p, to_dtype(weight.scalar_type()), stream));
  return dcoef;
}

}  // namespace ganfast
