// upfirdn2d host code shared by the CPU (_C) and CUDA (_C_cuda) extensions: argument checks and
// the parameter struct. setup.py compiles this file into both.
#include "upfirdn2d/upfirdn2d.h"

#include <cstdlib>
#include <limits>

#include "common/checks.h"

namespace ganfast {

namespace {

constexpr int64_t kIntMax = std::numeric_limits<int>::max();

// Checks one axis's factors and padding and returns its output size. The tap arithmetic is in int:
// the upsampled, padded extent (and every index it derives) must fit in 31 bits.
int64_t axis_output_size(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1, int64_t taps,
                         const char* axis) {
  TORCH_CHECK(up >= 1, "ganfast: upfirdn2d up", axis, " must be >= 1, got ", up);
  TORCH_CHECK(down >= 1, "ganfast: upfirdn2d down", axis, " must be >= 1, got ", down);
  TORCH_CHECK(up <= kIntMax && down <= kIntMax && std::llabs(pad0) <= kIntMax / 2 && std::llabs(pad1) <= kIntMax / 2,
              "ganfast: upfirdn2d up", axis, ", down", axis, " and the ", axis, " paddings must fit in 31 bits, got up ",
              up, ", down ", down, ", padding [", pad0, ", ", pad1, "]");
  const int64_t extent = in * up + std::llabs(pad0) + std::llabs(pad1) + taps + down;
  TORCH_CHECK(extent <= kIntMax, "ganfast: upfirdn2d along ", axis, ": the upsampled, padded extent (", in, " * ", up,
              " + padding [", pad0, ", ", pad1, "] + ", taps, " taps) must fit in 31 bits");
  const int64_t num = in * up + pad0 + pad1 - taps + down;
  return num >= 0 ? num / down : -1;  // floor division; only its sign matters when negative
}

}  // namespace

Upfirdn2dParams make_upfirdn2d_params(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy,
                                      int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0,
                                      int64_t py1, bool flip_filter, double gain, bool allow_double) {
  TORCH_CHECK(x.dim() == 4, "ganfast: upfirdn2d x must be [N, C, H, W], got shape ", x.sizes());
  const at::ScalarType st = x.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || st == at::kFloat || (allow_double && st == at::kDouble),
              "ganfast: upfirdn2d x must be float16, bfloat16, float32", allow_double ? " or float64" : "",
              " on ", x.device().type(), ", got ", st);
  TORCH_CHECK(x.is_contiguous(), "ganfast: upfirdn2d x must be contiguous (NCHW), got strides ", x.strides());
  TORCH_CHECK(f.dim() == 2, "ganfast: upfirdn2d f must be a [fh, fw] filter (a separable one as its outer product), "
              "got shape ", f.sizes());
  TORCH_CHECK(f.size(0) >= 1 && f.size(1) >= 1, "ganfast: upfirdn2d f must have at least one tap, got shape ", f.sizes());
  const at::ScalarType acc = st == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(f.scalar_type() == acc, "ganfast: upfirdn2d f must have dtype ", acc, " (the accumulation dtype for x of dtype ",
              st, "), got ", f.scalar_type());
  TORCH_CHECK(f.is_contiguous(), "ganfast: upfirdn2d f must be contiguous, got strides ", f.strides());
  TORCH_CHECK(f.device() == x.device(), "ganfast: upfirdn2d f must be on x's device ", x.device(), ", got ", f.device());
  const int64_t fh = f.size(0), fw = f.size(1);
  TORCH_CHECK(x.size(2) <= kIntMax && x.size(3) <= kIntMax && fh * fw <= kIntMax,
              "ganfast: upfirdn2d x's H, W and f's size must fit in 31 bits, got x ", x.sizes(), ", f ", f.sizes());
  const int64_t out_w = axis_output_size(x.size(3), upx, downx, px0, px1, fw, "x");
  const int64_t out_h = axis_output_size(x.size(2), upy, downy, py0, py1, fh, "y");
  TORCH_CHECK(out_h >= 1 && out_w >= 1, "ganfast: upfirdn2d output would be empty (", out_h, " x ", out_w,
              ") for x ", x.sizes(), ", f ", f.sizes(), ", up [", upx, ", ", upy, "], down [", downx, ", ", downy,
              "], padding [", px0, ", ", px1, ", ", py0, ", ", py1, "]");
  Upfirdn2dParams p{};
  p.x = x.data_ptr();
  p.f = f.data_ptr();
  p.out = nullptr;
  p.planes = x.size(0) * x.size(1);
  p.in_h = static_cast<int>(x.size(2));
  p.in_w = static_cast<int>(x.size(3));
  p.out_h = static_cast<int>(out_h);
  p.out_w = static_cast<int>(out_w);
  p.fh = static_cast<int>(fh);
  p.fw = static_cast<int>(fw);
  p.upx = static_cast<int>(upx);
  p.upy = static_cast<int>(upy);
  p.downx = static_cast<int>(downx);
  p.downy = static_cast<int>(downy);
  p.px0 = static_cast<int>(px0);
  p.py0 = static_cast<int>(py0);
  p.flip_filter = flip_filter;
  p.gain = gain;
  return p;
}

at::Tensor upfirdn2d_output(const at::Tensor& x, const Upfirdn2dParams& p, const c10::optional<at::Tensor>& out) {
  const std::vector<int64_t> shape{x.size(0), x.size(1), p.out_h, p.out_w};
  if (!out.has_value()) return at::empty(shape, x.options());
  TORCH_CHECK(out->sizes() == at::IntArrayRef(shape), "ganfast: upfirdn2d out must have shape ", at::IntArrayRef(shape),
              ", got ", out->sizes());
  GANFAST_CHECK_SAME_DTYPE(*out, x, "upfirdn2d out");
  TORCH_CHECK(out->device() == x.device(), "ganfast: upfirdn2d out must be on ", x.device(), ", got ", out->device());
  TORCH_CHECK(out->is_contiguous(), "ganfast: upfirdn2d out must be contiguous, got strides ", out->strides());
  return *out;
}

}  // namespace ganfast
