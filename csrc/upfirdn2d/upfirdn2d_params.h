// upfirdn2d: the params struct shared by the CPU kernels, the CUDA host file and the CUDA kernels
// (no torch header, so the kernel .cu can include it); the tap arithmetic is in
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

}  // namespace ganfast
