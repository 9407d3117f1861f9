// upfirdn2d on the CPU.
//
// Work items are (plane, block of output rows), spread over the threads by at::parallel_for. An
// item reads its input rows (fp16 / bf16 converted to fp32 once per item, not once per tap) and
// makes each output row in a row buffer. For each input row the output row's y taps read (clipped
// to the image), and each x phase q (the outputs m * up_x + q, which share their taps), it adds
// k * x tap by tap in a loop over m into the phase's part of the buffer (phase-major, so the
// accumulation is contiguous; the interleave happens once, at the store). The loop reads x
// contiguously for down_x = 1, with stride 2 for down_x = 2 ((up_x, down_x) in (1, 1), (2, 1),
// (1, 2) are template parameters), runtime strides otherwise. It covers the interior outputs,
// whose x taps all land inside the image; the few border outputs go through upfirdn2d_pixel, the
// per-pixel tap loop the CUDA kernels run.
#include "upfirdn2d/upfirdn2d.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_storage.h"

namespace ganfast {

namespace {

constexpr int64_t kMinWork = int64_t(1) << 15;  // multiply-adds per work item, at least
constexpr int64_t kItemsPerThread = 4;          // work items per thread, when the output has that many rows

// One x phase of the interior: the outputs ox = m * up_x + q, m in [m0, m1), all reading taps
// (unclipped: inside the image). Their sums sit at [offset, offset + m1 - m0) of the row buffer
// (phase-major, so the tap loops read and write it contiguously).
struct Phase {
  AxisTaps taps;
  int q, m0, m1, offset;
};

// The x layout every output row shares.
struct RowPlan {
  int ox_lo, ox_hi;  // the interior outputs [ox_lo, ox_hi)
  std::vector<Phase> phases;
};

RowPlan plan_row(const Upfirdn2dParams& p) {
  // ox is interior when its first tap position u0 = ox * down - pad0 is > -up (its first real tap
  // reads i >= 0) and its last, u0 + fw - 1, is < W * up (i < W). Both are monotone in ox.
  // int64_t: pad0 - up may leave int.
  const int64_t up = p.upx, down = p.downx, out_w = p.out_w;
  const int64_t lo = std::clamp<int64_t>(floor_div<int64_t>(int64_t(p.px0) - up, down) + 1, 0, out_w);
  const int64_t hi = std::clamp<int64_t>(ceil_div<int64_t>(int64_t(p.in_w) * up + p.px0 - p.fw + 1, down), lo, out_w);
  RowPlan r{static_cast<int>(lo), static_cast<int>(hi), {}};
  int offset = 0;
  for (int q = 0; q < std::min(p.upx, p.out_w); ++q) {
    const int m0 = ceil_div(r.ox_lo - q, p.upx), m1 = ceil_div(r.ox_hi - q, p.upx);
    if (m1 > m0) {
      r.phases.push_back(Phase{axis_taps(q, p.upx, p.downx, p.px0, p.fw), q, m0, m1, offset});
      offset += m1 - m0;
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

// k: the correlation kernel [fh, fw] (f flipped unless flip_filter); gain is applied at the store.
template <typename S, int UPX, int DOWNX, typename acc_t = typename S::acc>
void upfirdn2d_planes(const Upfirdn2dParams& p, const acc_t* k) {
  using raw_t = typename S::raw;
  constexpr bool kConvert = !std::is_same<raw_t, acc_t>::value;
  const auto* x = static_cast<const raw_t*>(p.x);
  auto* out = static_cast<raw_t*>(p.out);
  const int H = p.in_h, W = p.in_w, OW = p.out_w, fw = p.fw;
  const int upx = UPX ? UPX : p.upx, downx = DOWNX ? DOWNX : p.downx, upy = p.upy, downy = p.downy;
  const acc_t gain = static_cast<acc_t>(p.gain);
  const RowPlan plan = plan_row(p);
  const FilterView<acc_t> kview{k, p.fh * fw, /*flip_filter=*/true};  // k is already in correlation order
  const int rows = rows_per_item(p);
  const int64_t blocks = (p.out_h + rows - 1) / rows;
  at::parallel_for(0, p.planes * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row_buf(static_cast<size_t>(OW)), converted;
    acc_t* __restrict acc = row_buf.data();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / blocks;
      const int oy_a = static_cast<int>(item % blocks) * rows, oy_b = std::min(p.out_h, oy_a + rows);
      // The input rows [r0, r1) of the image this item's outputs read.
      const int r0 = std::clamp(first_input(oy_a, upy, downy, p.py0), 0, H);
      const int r1 = std::clamp(last_input(oy_b - 1, upy, downy, p.py0, p.fh) + 1, r0, H);
      const raw_t* xr = x + (plane * H + r0) * W;
      const acc_t* in_rows;
      if constexpr (kConvert) {
        const int64_t count = int64_t(r1 - r0) * W;
        converted.resize(static_cast<size_t>(count));
        acc_t* __restrict dst = converted.data();
#pragma omp simd
        for (int64_t j = 0; j < count; ++j) dst[j] = S::load(xr[j]);
        in_rows = converted.data();
      } else {
        in_rows = xr;
      }
      const PlaneView<acc_t> src{in_rows, W, r0, 0};
      for (int oy = oy_a; oy < oy_b; ++oy) {
        const AxisTaps ty = clip_taps(axis_taps(oy, upy, downy, p.py0, p.fh), upy, H);
        raw_t* __restrict orow = out + (plane * p.out_h + oy) * OW;
        std::fill(acc, acc + (plan.ox_hi - plan.ox_lo), acc_t(0));
        for (int a = 0; a < ty.n; ++a) {
          const acc_t* xrow = in_rows + int64_t(ty.i + a - r0) * W;
          const acc_t* krow = k + (ty.t + a * upy) * fw;
          for (const Phase& ph : plan.phases) {
            acc_t* __restrict ap = acc + ph.offset;
            const int count = ph.m1 - ph.m0;
            for (int l = 0; l < ph.taps.n; ++l) {
              const acc_t kv = krow[ph.taps.t + l * upx];
              const acc_t* __restrict xs = xrow + ph.taps.i + l + int64_t(ph.m0) * downx;
#pragma omp simd
              for (int j = 0; j < count; ++j) ap[j] += kv * xs[j * downx];
            }
          }
        }
        for (const Phase& ph : plan.phases) {
          const acc_t* __restrict ap = acc + ph.offset;
          raw_t* __restrict op = orow + int64_t(ph.m0) * upx + ph.q;
          const int count = ph.m1 - ph.m0;
#pragma omp simd
          for (int j = 0; j < count; ++j) op[j * upx] = S::store(gain * ap[j]);
        }
        auto border = [&](int ox0, int ox1) {
          for (int ox = ox0; ox < ox1; ++ox) {
            const AxisTaps tx = clip_taps(axis_taps(ox, upx, downx, p.px0, fw), upx, W);
            orow[ox] = S::store(gain * upfirdn2d_pixel<acc_t>(src, kview, fw, upx, upy, ty, tx));
          }
        };
        border(0, plan.ox_lo);
        border(plan.ox_hi, OW);
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
  if (p.upx == 1 && p.downx == 1) upfirdn2d_planes<S, 1, 1>(p, k.data());
  else if (p.upx == 2 && p.downx == 1) upfirdn2d_planes<S, 2, 1>(p, k.data());
  else if (p.upx == 1 && p.downx == 2) upfirdn2d_planes<S, 1, 2>(p, k.data());
  else upfirdn2d_planes<S, 0, 0>(p, k.data());
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
