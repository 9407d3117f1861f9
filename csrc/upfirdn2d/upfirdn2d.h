// upfirdn2d: parameters shared by the CPU and CUDA kernels; the tap arithmetic is in
// common/upfirdn2d_math.h.
//
// Per plane q = n * C + c of x [N * C, H, W] (ganfast/ops/upfirdn2d/reference.py::run is the spec):
//   out[q, oy, ox] = gain * sum_{fy, fx} k[fy, fx] * xu[q, oy * down_y + fy - pad_y0, ox * down_x + fx - pad_x0]
//   xu[q, y, x]    = x[q, y / up_y, x / up_x] when up_y | y, up_x | x and inside the image, else 0
//   k              = f flipped on both axes (a true convolution), or f itself when flip_filter
// out is [N * C, out_h, out_w] with out_h = (H * up_y + pad_y0 + pad_y1 - fh + down_y) / down_y
// (likewise out_w). Sums are in the accumulation type A: float for fp16 / bf16 / fp32 x (f is
// float32), double for fp64 x (f is float64).
#pragma once
#include <cstdint>
#include <torch/extension.h>

#include "common/upfirdn2d_math.h"

namespace ganfast {

struct Upfirdn2dParams {
  const void* x;   // [planes, in_h, in_w] contiguous, x's dtype
  const void* f;   // [fh, fw] contiguous, A
  void* out;       // [planes, out_h, out_w] contiguous, x's dtype
  int64_t planes;  // N * C
  int in_h, in_w, out_h, out_w, fh, fw;
  int upx, upy, downx, downy;
  int px0, py0;    // leading padding (negative: crop); the trailing padding only sets out_h, out_w
  bool flip_filter;
  double gain;
};

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
