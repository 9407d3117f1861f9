// upfirdn2d: the torch-side declarations shared by the CPU and CUDA extensions. The op's
// definition and the params struct are in upfirdn2d_params.h, which has no torch header so that
// the CUDA kernels can include it too; the tap arithmetic is in common/upfirdn2d_math.h.
#pragma once
#include <cstdint>
#include <torch/extension.h>

#include "upfirdn2d/upfirdn2d_params.h"

namespace ganfast {

// Host code shared by both extensions (upfirdn2d_common.cpp). Checks every argument with a
// message naming it (device placement of x is the caller's; allow_double: whether float64 x is
// supported here) and returns the params with out = nullptr.
Upfirdn2dParams make_upfirdn2d_params(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy,
                                      int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0,
                                      int64_t py1, bool flip_filter, double gain, bool allow_double);

// The output [N, C, out_h, out_w]: `out` when given (checked: that shape, x's dtype and device,
// contiguous; the tests pass a NaN-filled one so an unwritten element fails), else a new tensor.
at::Tensor upfirdn2d_output(const at::Tensor& x, const Upfirdn2dParams& p, const c10::optional<at::Tensor>& out);

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool flip_filter,
                         double gain, const c10::optional<at::Tensor>& out = c10::nullopt);
#ifdef GANFAST_WITH_CUDA
at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool flip_filter,
                          double gain, const c10::optional<at::Tensor>& out = c10::nullopt);
#endif

}  // namespace ganfast
