// upfirdn2d: the tap arithmetic shared by the CPU and CUDA kernels, so the CPU tests exercise the
// index math the GPU runs (ganfast/ops/upfirdn2d/reference.py::run is the spec).
//
// Along one axis, output o reads the zero-upsampled, padded input at u = o * down + t - pad0 for
// the taps t in [0, taps) of the correlation kernel k; u is a real input pixel, i = u / up, only
// when up divides u. Those taps are t0, t0 + up, t0 + 2 up, ... with t0 = (pad0 - o * down) mod up,
// and they read consecutive input pixels i0, i0 + 1, ... with i0 = (o * down - pad0 + t0) / up
// (exact). So an output reads about (taps / up)^2 of the filter (polyphase), never a zero.
//
// Outputs o = m * up + q share the taps of phase q = o mod up and read inputs m * down + i0(q) + l:
// the CPU kernel's vectorized inner loop runs over m.
//
// Indices are int: the binding checks that every upsampled, padded extent fits in 31 bits.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace ganfast {

// Floor and ceiling of a / b for b > 0 and any sign of a (I: int, or int64_t in host plans).
template <typename I> GANFAST_HD I floor_div(I a, I b) {
  const I q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
template <typename I> GANFAST_HD I ceil_div(I a, I b) {
  const I q = a / b;
  return (a % b != 0 && a > 0) ? q + 1 : q;
}

// The taps of one output along one axis: filter taps t, t + up, ..., reading input pixels
// i, i + 1, ...; n of them (n may be 0).
struct AxisTaps {
  int t;
  int i;
  int n;
};

// The taps of output o, before bounds: some may read outside the input.
GANFAST_HD AxisTaps axis_taps(int o, int up, int down, int pad0, int taps) {
  const int u0 = o * down - pad0;
  int t0 = (-u0) % up;
  if (t0 < 0) t0 += up;
  AxisTaps a;
  a.t = t0;
  a.i = (u0 + t0) / up;
  a.n = t0 < taps ? (taps - 1 - t0) / up + 1 : 0;
  return a;
}

// Keeps the taps that read input pixels in [0, in) (the others read padding zeros).
GANFAST_HD AxisTaps clip_taps(AxisTaps a, int up, int in) {
  if (a.i < 0) {
    const int skip = -a.i;
    a.t += skip * up;
    a.i = 0;
    a.n -= skip;
  }
  if (a.i + a.n > in) a.n = in - a.i;
  if (a.n < 0) a.n = 0;
  return a;
}

// First input pixel any output from o onward can read (unclipped): that of output o's first tap.
GANFAST_HD int first_input(int o, int up, int down, int pad0) { return ceil_div(o * down - pad0, up); }
// Last input pixel any output up to o can read (unclipped).
GANFAST_HD int last_input(int o, int up, int down, int pad0, int taps) {
  return floor_div(o * down - pad0 + taps - 1, up);
}

// A plane of accumulation-type pixels of which rows [row0, ...) and columns [col0, ...) are held,
// row_stride apart: pixel (i, j) is data[(i - row0) * row_stride + (j - col0)].
template <typename A>
struct PlaneView {
  const A* data;
  int64_t row_stride;
  int row0, col0;
  GANFAST_HD A operator()(int i, int j) const {
    return data[static_cast<int64_t>(i - row0) * row_stride + (j - col0)];
  }
};

// Tap idx = fy * fw + fx of the correlation kernel k from the filter f [fh, fw] (count = fh * fw
// taps): k is f flipped on both axes (a true convolution), which for a contiguous [fh, fw] is the
// flat array reversed, or f itself when flip_filter.
template <typename A>
struct FilterView {
  const A* f;
  int count;
  bool flip_filter;
  GANFAST_HD A operator()(int idx) const { return f[flip_filter ? idx : count - 1 - idx]; }
};

// One output pixel, before gain: sum over its in-bounds taps (ty, tx from clip_taps) of k * x.
// Src: (i, j) -> input pixel in A; Filt: tap index -> k in A.
template <typename A, typename Src, typename Filt>
GANFAST_HD A upfirdn2d_pixel(const Src& x, const Filt& k, int fw, int upx, int upy, AxisTaps ty, AxisTaps tx) {
  A acc = A(0);
  for (int a = 0; a < ty.n; ++a) {
    const int krow = (ty.t + a * upy) * fw + tx.t;
    for (int b = 0; b < tx.n; ++b) acc += k(krow + b * upx) * x(ty.i + a, tx.i + b);
  }
  return acc;
}

}  // namespace ganfast
