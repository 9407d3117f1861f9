// upfirdn2d on the CPU.
//
// Work items are (plane, block of output rows), spread over the threads by at::parallel_for. An
// item copies the input rows it reads into a row buffer with zero columns on both sides (fp16 /
// bf16 converted to fp32 there, once per pixel), wide enough that every output's x taps land inside
// it: no output needs a bounds check along x (the padded geometry: plan_padding). Along y, an
// output row's taps are clipped to the image (clip_taps). For each x phase q (the outputs
// m * up_x + q, which share their taps) a tap loop over m adds k * x into the phase's part of an
// accumulator row (phase-major, so the accumulation is contiguous; the interleave happens once, at
// the store). The loop reads x contiguously for down_x = 1, with stride 2 for down_x = 2 ((up_x,
// down_x) in (1, 1), (2, 1), (1, 2) are template parameters), runtime strides otherwise.
//
// A separable filter (k[fy][fx] = ky[fy] * kx[fx] to rounding, as every setup_filter of a 1-D
// filter) takes two passes: each input row is filtered along x once (kx) into a row of out_w
// values, and each output row sums its y taps of those rows (ky): about fh / up_y + fw / up_x
// multiply-adds per output instead of (fh / up_y) * (fw / up_x), e.g. 8 instead of 16 for the
// 4x4 filters of StyleGAN2's resampling.
#include "upfirdn2d/upfirdn2d.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_storage.h"

namespace ganfast {

namespace {

constexpr int64_t kMinWork = int64_t(1) << 15;  // multiply-adds per work item, at least
constexpr int64_t kItemsPerThread = 4;          // work items per thread, when the output has that many rows

// One x phase: the outputs ox = m * up_x + q, m in [0, count), reading taps (inside the padded row:
// every output is interior, so every phase starts at m = 0). Their sums sit at
// [offset, offset + count) of the accumulator row (phase-major).
struct Phase {
  AxisTaps taps;
  int q, count, offset;
};

// The x geometry every row shares: input rows are held with `left` zero pixels before and `right`
// after (padded width pw), and output ox then reads from padded pixel m * down + taps.i + l, all
// inside [0, pw).
struct RowPlan {
  int left, right, pw;
  std::vector<Phase> phases;
};

RowPlan plan_row(const Upfirdn2dParams& p) {
  const int64_t up = p.upx, down = p.downx;
  RowPlan r{};
  // `left` input pixels of zeros move the leading padding to px0 - left * up <= 0: output 0's first
  // tap then reads padded pixel >= 0. int64_t: a crop (px0 < 0) with large extents stays in range.
  r.left = p.px0 > 0 ? static_cast<int>(ceil_div<int64_t>(p.px0, up)) : 0;
  const int64_t pad0 = int64_t(p.px0) - int64_t(r.left) * up;
  // The last output's last tap reads padded pixel floor((last u) / up).
  const int64_t last = floor_div<int64_t>(int64_t(p.out_w - 1) * down + p.fw - 1 - pad0, up);
  r.pw = static_cast<int>(std::max<int64_t>(int64_t(r.left) + p.in_w, last + 1));
  r.right = r.pw - r.left - p.in_w;
  int offset = 0;
  for (int q = 0; q < std::min(p.upx, p.out_w); ++q) {
    const int count = ceil_div(p.out_w - q, p.upx);
    if (count > 0) {
      r.phases.push_back(Phase{axis_taps(q, p.upx, p.downx, static_cast<int>(pad0), p.fw), q, count, offset});
      offset += count;
    }
  }
  return r;
}

// Output rows per work item: about kMinWork multiply-adds, fewer when the planes alone do not give
// every thread kItemsPerThread items.
int rows_per_item(const Upfirdn2dParams& p) {
  const int64_t taps = std::max<int64_t>(1, int64_t(ceil_div(p.fh, p.upy)) * ceil_div(p.fw, p.upx));
  const int64_t per_row = std::max<int64_t>(1, int64_t(p.out_w) * taps);
  int64_t rows = std::min<int64_t>(p.out_h, (kMinWork + per_row - 1) / per_row);
  const int64_t want_items = kItemsPerThread * at::get_num_threads();
  if (p.planes < want_items) rows = std::min(rows, std::max<int64_t>(1, p.planes * p.out_h / want_items));
  return static_cast<int>(std::max<int64_t>(1, rows));
}

// k [fh * fw] (correlation order) as ky (x) kx when its rank-1 reconstruction matches every tap to
// a few ulps of the largest; returns false otherwise.
template <typename acc_t>
bool split_separable(const acc_t* k, int fh, int fw, std::vector<acc_t>& ky, std::vector<acc_t>& kx) {
  int best = 0;
  for (int i = 1; i < fh * fw; ++i)
    if (std::abs(k[i]) > std::abs(k[best])) best = i;
  const acc_t pivot = k[best];
  if (pivot == acc_t(0) || !std::isfinite(pivot)) return false;
  const int by = best / fw, bx = best % fw;
  ky.assign(static_cast<size_t>(fh), acc_t(0));
  kx.assign(static_cast<size_t>(fw), acc_t(0));
  for (int x = 0; x < fw; ++x) kx[x] = k[by * fw + x];
  for (int y = 0; y < fh; ++y) ky[y] = k[y * fw + bx] / pivot;
  const acc_t tol = acc_t(8) * std::numeric_limits<acc_t>::epsilon() * std::abs(pivot);
  for (int y = 0; y < fh; ++y)
    for (int x = 0; x < fw; ++x)
      if (!(std::abs(ky[y] * kx[x] - k[y * fw + x]) <= tol)) return false;
  return true;
}

// The phase sums of one padded input row xrow along x with the x filter kx (a row of the 2-D
// kernel, or the separable factor), added into acc (phase-major).
template <int UPX, int DOWNX, typename acc_t>
inline void filter_row(const RowPlan& plan, const acc_t* kx, const acc_t* __restrict xrow, int upx, int downx,
                       acc_t* __restrict acc) {
  for (const Phase& ph : plan.phases) {
    acc_t* __restrict ap = acc + ph.offset;
    const int count = ph.count;
    for (int l = 0; l < ph.taps.n; ++l) {
      const acc_t kv = kx[ph.taps.t + l * upx];
      const acc_t* __restrict xs = xrow + ph.taps.i + l;
      if constexpr (DOWNX == 1) {
#pragma omp simd
        for (int j = 0; j < count; ++j) ap[j] += kv * xs[j];
      } else {
#pragma omp simd
        for (int j = 0; j < count; ++j) ap[j] += kv * xs[j * downx];
      }
    }
  }
}

// k: the correlation kernel [fh, fw] (f flipped unless flip_filter); ky / kx: its separable factors
// (nullptr: not separable); gain is applied at the store.
template <typename S, int UPX, int DOWNX, typename acc_t = typename S::acc>
void upfirdn2d_planes(const Upfirdn2dParams& p, const acc_t* k, const acc_t* ky, const acc_t* kx) {
  using raw_t = typename S::raw;
  const auto* x = static_cast<const raw_t*>(p.x);
  auto* out = static_cast<raw_t*>(p.out);
  const int H = p.in_h, W = p.in_w, OW = p.out_w, fw = p.fw;
  const int upx = UPX ? UPX : p.upx, downx = DOWNX ? DOWNX : p.downx, upy = p.upy, downy = p.downy;
  const acc_t gain = static_cast<acc_t>(p.gain);
  const RowPlan plan = plan_row(p);
  const int PW = plan.pw;
  const bool separable = ky != nullptr;
  const int rows = rows_per_item(p);
  const int64_t blocks = (p.out_h + rows - 1) / rows;
  at::parallel_for(0, p.planes * blocks, 1, [&](int64_t begin, int64_t end) {
    // padded: the item's input rows with their zero columns; filtered: (separable) those rows
    // filtered along x, OW each; acc_row: one output row's phase sums.
    std::vector<acc_t> padded, filtered, acc_row(static_cast<size_t>(std::max(OW, 1)));
    acc_t* __restrict acc = acc_row.data();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / blocks;
      const int oy_a = static_cast<int>(item % blocks) * rows, oy_b = std::min(p.out_h, oy_a + rows);
      // The input rows [r0, r1) of the image this item's outputs read.
      const int r0 = std::clamp(first_input(oy_a, upy, downy, p.py0), 0, H);
      const int r1 = std::clamp(last_input(oy_b - 1, upy, downy, p.py0, p.fh) + 1, r0, H);
      const int nrows = r1 - r0;
      padded.resize(static_cast<size_t>(nrows) * PW);
      const raw_t* xr = x + (plane * H + r0) * W;
      for (int r = 0; r < nrows; ++r) {      // zeros only in the margins; the image row between them
        acc_t* __restrict row = padded.data() + int64_t(r) * PW;
        std::fill(row, row + plan.left, acc_t(0));
        std::fill(row + plan.left + W, row + PW, acc_t(0));
        acc_t* __restrict dst = row + plan.left;
        const raw_t* __restrict src = xr + int64_t(r) * W;
#pragma omp simd
        for (int j = 0; j < W; ++j) dst[j] = S::load(src[j]);
      }
      if (separable) {
        filtered.assign(static_cast<size_t>(nrows) * OW, acc_t(0));
        for (int r = 0; r < nrows; ++r)
          filter_row<UPX, DOWNX>(plan, kx, padded.data() + int64_t(r) * PW, upx, downx,
                                 filtered.data() + int64_t(r) * OW);
      }
      for (int oy = oy_a; oy < oy_b; ++oy) {
        const AxisTaps ty = clip_taps(axis_taps(oy, upy, downy, p.py0, p.fh), upy, H);
        std::fill(acc, acc + OW, acc_t(0));
        for (int a = 0; a < ty.n; ++a) {
          const int row = ty.i + a - r0;
          const int fy = ty.t + a * upy;
          if (separable) {
            const acc_t kv = ky[fy];
            const acc_t* __restrict hs = filtered.data() + int64_t(row) * OW;
#pragma omp simd
            for (int j = 0; j < OW; ++j) acc[j] += kv * hs[j];
          } else {
            filter_row<UPX, DOWNX>(plan, k + fy * fw, padded.data() + int64_t(row) * PW, upx, downx, acc);
          }
        }
        raw_t* __restrict orow = out + (plane * p.out_h + oy) * OW;
        for (const Phase& ph : plan.phases) {
          const acc_t* __restrict ap = acc + ph.offset;
          raw_t* __restrict op = orow + ph.q;
          const int count = ph.count;
          if constexpr (UPX == 1) {
#pragma omp simd
            for (int j = 0; j < count; ++j) op[j] = S::store(gain * ap[j]);
          } else {
#pragma omp simd
            for (int j = 0; j < count; ++j) op[j * upx] = S::store(gain * ap[j]);
          }
        }
      }
    }
  });
}

template <typename S>
void upfirdn2d_dispatch(const Upfirdn2dParams& p) {
  using acc_t = typename S::acc;
  const int count = p.fh * p.fw;
  const FilterView<acc_t> f{static_cast<const acc_t*>(p.f), count, p.flip_filter};
  std::vector<acc_t> k(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) k[i] = f(i);
  std::vector<acc_t> ky, kx;
  const bool separable = p.fh > 1 && p.fw > 1 && split_separable(k.data(), p.fh, p.fw, ky, kx);
  const acc_t* sy = separable ? ky.data() : nullptr;
  const acc_t* sx = separable ? kx.data() : nullptr;
  if (p.upx == 1 && p.downx == 1) upfirdn2d_planes<S, 1, 1>(p, k.data(), sy, sx);
  else if (p.upx == 2 && p.downx == 1) upfirdn2d_planes<S, 2, 1>(p, k.data(), sy, sx);
  else if (p.upx == 1 && p.downx == 2) upfirdn2d_planes<S, 1, 2>(p, k.data(), sy, sx);
  else upfirdn2d_planes<S, 0, 0>(p, k.data(), sy, sx);
}

}  // namespace

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool flip_filter,
                         double gain, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(x, at::kCPU, "upfirdn2d x");
  Upfirdn2dParams p = make_upfirdn2d_params(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain,
                                            /*allow_double=*/true);
  at::Tensor y = upfirdn2d_output(x, p, out);
  p.out = y.data_ptr();
  if (p.planes == 0) return y;
  switch (x.scalar_type()) {
    case at::kFloat: upfirdn2d_dispatch<CpuStorage<float>>(p); break;
    case at::kDouble: upfirdn2d_dispatch<CpuStorage<double>>(p); break;
    case at::kHalf: upfirdn2d_dispatch<CpuStorage<c10::Half>>(p); break;
    case at::kBFloat16: upfirdn2d_dispatch<CpuStorage<c10::BFloat16>>(p); break;
    default: TORCH_CHECK(false, "ganfast: upfirdn2d x has an unsupported dtype ", x.scalar_type());  // checked above
  }
  return y;
}

}  // namespace ganfast
