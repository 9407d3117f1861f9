// upfirdn2d on CUDA: same contract as upfirdn2d_cpu (see upfirdn2d.h). Every output pixel is
// common/upfirdn2d_math.h's upfirdn2d_pixel over the taps axis_taps / clip_taps give it, the code
// the CPU kernel runs on its border pixels (and the CPU tests check).
//
// Tiled kernel (the usual path). A block makes a tile of tile_h x tile_w outputs (powers of two,
// up to 16 x 64) of `ppb` consecutive planes: several planes per block when a plane is smaller
// than a tile, as StyleGAN's 4x4 and 8x8 maps are, so that a block still has ~1024 outputs. It
// stages the filter, in correlation order, and the input tile those outputs read (zero outside the
// image) in shared memory as A, so each input pixel is read from global memory once per tile (plus
// the halo of fh / up rows and fw / up columns), then each of the 256 threads makes the outputs
// threadIdx.x, threadIdx.x + 256, ... of the tile, x fastest (coalesced stores). Template
// parameters UP, DOWN fix the factors of both axes for the common cases (1, 1), (2, 1), (1, 2), so
// the tap arithmetic folds to shifts; (0, 0) reads them from the arguments.
//
// Direct kernel (the fallback): one thread per output, reading x and f from global memory. For
// tiles that do not fit the shared-memory budget (large filters or factors), and tiles that would
// stage far more input than their outputs read (down much larger than the filter).
//
// This file holds the kernels and their launch function only (no torch header: see
// common/cuda_launch.h); argument checks and allocation are in upfirdn2d_cuda_host.cpp.
#include "upfirdn2d/upfirdn2d_cuda_launch.h"

#include <algorithm>
#include <limits>

#include "common/fast_divmod.h"

namespace ganfast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTileWShift = 6;                 // tiles up to 64 outputs wide
constexpr int kMaxTileHShift = 4;                 // and 16 tall
constexpr int kOutputsPerBlock = 1024;            // planes per block are added up to this many outputs
constexpr int64_t kSmemBudget = 48 * 1024;        // dynamic shared memory without an opt-in
constexpr int64_t kMaxStagedPerTapRead = 4;       // staged pixels per tap read, at most, for the tiled path

// Everything the kernels read; A is the accumulation type.
template <typename T>
struct Args {
  using A = typename acc_type<T>::type;
  const T* x;      // [planes, in_h, in_w]
  const A* f;      // [fh, fw], as given (FilterView applies flip_filter)
  T* out;          // [planes, out_h, out_w]
  int64_t planes;
  int in_h, in_w, out_h, out_w, fh, fw, upx, upy, downx, downy, px0, py0;
  bool flip_filter;
  A gain;
  // Tiled kernel: tile_w = 1 << tw_shift, tile_h = 1 << th_shift, ppb planes per block; the
  // staged input tile is tin_h x tin_w; the grid is [plane groups, tiles_y, tiles_x] flattened.
  int tw_shift, th_shift, ppb, tin_w, tin_h, tiles_x, tiles_y;
};

// Pixel (i, j) of one plane of x in global memory, as A.
template <typename T>
struct GlobalPlane {
  using A = typename acc_type<T>::type;
  const T* data;
  int w;
  __host__ __device__ __forceinline__ A operator()(int i, int j) const {
    return static_cast<A>(data[static_cast<int64_t>(i) * w + j]);
  }
};

template <typename T, int UP, int DOWN>
__global__ void __launch_bounds__(kThreads) upfirdn2d_tile_kernel(const Args<T> a) {
  using A = typename acc_type<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int taps = a.fh * a.fw;
  A* ks = reinterpret_cast<A*>(smem_raw);  // [fh * fw] the correlation kernel
  A* xs = ks + taps;                       // [ppb, tin_h, tin_w] the input tiles
  const int upx = UP ? UP : a.upx, upy = UP ? UP : a.upy;
  const int downx = DOWN ? DOWN : a.downx, downy = DOWN ? DOWN : a.downy;

  // 32-bit division: the grid has < 2^31 blocks.
  unsigned b = blockIdx.x;
  const int ox0 = int(b % unsigned(a.tiles_x)) << a.tw_shift;
  b /= unsigned(a.tiles_x);
  const int oy0 = int(b % unsigned(a.tiles_y)) << a.th_shift;
  const int64_t plane0 = int64_t(b / unsigned(a.tiles_y)) * a.ppb;
  // The tile's first input pixel: the first tap of output (oy0, ox0).
  const int bx = first_input(ox0, upx, downx, a.px0), by = first_input(oy0, upy, downy, a.py0);

  const FilterView<A> f{a.f, taps, a.flip_filter};
  for (int i = threadIdx.x; i < taps; i += kThreads) ks[i] = f(i);
  const int tin = a.tin_h * a.tin_w;
  for (int i = threadIdx.x; i < a.ppb * tin; i += kThreads) {
    const int p = i / tin, r = i - p * tin;
    const int row = r / a.tin_w, col = r - row * a.tin_w;
    const int iy = by + row, ix = bx + col;
    const int64_t plane = plane0 + p;
    A v = A(0);
    if (plane < a.planes && iy >= 0 && iy < a.in_h && ix >= 0 && ix < a.in_w)
      v = static_cast<A>(a.x[(plane * a.in_h + iy) * a.in_w + ix]);
    xs[i] = v;
  }
  __syncthreads();

  const FilterView<A> k{ks, taps, /*flip_filter=*/true};  // already in correlation order
  const int plane_shift = a.tw_shift + a.th_shift;
  const int tw_mask = (1 << a.tw_shift) - 1, th_mask = (1 << a.th_shift) - 1;
  for (int i = threadIdx.x; i < (a.ppb << plane_shift); i += kThreads) {
    const int p = i >> plane_shift;
    const int oy = oy0 + ((i >> a.tw_shift) & th_mask), ox = ox0 + (i & tw_mask);
    const int64_t plane = plane0 + p;
    if (plane >= a.planes || oy >= a.out_h || ox >= a.out_w) continue;
    const AxisTaps ty = clip_taps(axis_taps(oy, upy, downy, a.py0, a.fh), upy, a.in_h);
    const AxisTaps tx = clip_taps(axis_taps(ox, upx, downx, a.px0, a.fw), upx, a.in_w);
    const PlaneView<A> src{xs + p * tin, a.tin_w, by, bx};
    const A v = upfirdn2d_pixel<A>(src, k, a.fw, upx, upy, ty, tx);
    a.out[(plane * a.out_h + oy) * a.out_w + ox] = static_cast<T>(a.gain * v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
upfirdn2d_direct_kernel(const Args<T> a, const FastDivmod out_w, const FastDivmod out_h, const uint64_t total) {
  using A = typename acc_type<T>::type;
  const FilterView<A> k{a.f, a.fh * a.fw, a.flip_filter};
  for (uint64_t idx = uint64_t(blockIdx.x) * kThreads + threadIdx.x; idx < total; idx += uint64_t(gridDim.x) * kThreads) {
    uint64_t row, ox, plane, oy;
    out_w.divmod(idx, row, ox);
    out_h.divmod(row, plane, oy);
    const AxisTaps ty = clip_taps(axis_taps(int(oy), a.upy, a.downy, a.py0, a.fh), a.upy, a.in_h);
    const AxisTaps tx = clip_taps(axis_taps(int(ox), a.upx, a.downx, a.px0, a.fw), a.upx, a.in_w);
    const GlobalPlane<T> src{a.x + int64_t(plane) * a.in_h * a.in_w, a.in_w};
    a.out[idx] = static_cast<T>(a.gain * upfirdn2d_pixel<A>(src, k, a.fw, a.upx, a.upy, ty, tx));
  }
}

// ---- host side ----

int log2_ceil(int64_t v) {
  int l = 0;
  while ((int64_t(1) << l) < v) ++l;
  return l;
}

struct TilePlan {
  bool tiled;
  int tw_shift, th_shift, ppb, tin_w, tin_h, tiles_x, tiles_y;
  int64_t blocks;
  size_t smem;
};

// Input pixels along one axis that a tile of 2^shift outputs reads (the first tap of its first
// output to the last tap of its last).
int64_t tile_input(int shift, int64_t up, int64_t down, int64_t taps) {
  return (((int64_t(1) << shift) - 1) * down + taps - 1) / up + 1;
}

template <typename A>
TilePlan plan_tiles(const Upfirdn2dParams& p) {
  TilePlan t{};
  t.tw_shift = std::min(kMaxTileWShift, log2_ceil(p.out_w));
  t.th_shift = std::min(kMaxTileHShift, log2_ceil(p.out_h));
  t.ppb = static_cast<int>(std::min<int64_t>(p.planes, std::max(1, kOutputsPerBlock >> (t.tw_shift + t.th_shift))));
  int64_t tin_w = 0, tin_h = 0, bytes = 0;
  for (;;) {  // shrink planes per block, then the tile, until it fits the budget
    tin_w = tile_input(t.tw_shift, p.upx, p.downx, p.fw);
    tin_h = tile_input(t.th_shift, p.upy, p.downy, p.fh);
    bytes = (int64_t(p.fh) * p.fw + t.ppb * tin_w * tin_h) * int64_t(sizeof(A));
    if (bytes <= kSmemBudget) break;
    if (t.ppb > 1) t.ppb = (t.ppb + 1) / 2;
    else if (t.th_shift > 0 && t.th_shift + 2 >= t.tw_shift) --t.th_shift;
    else if (t.tw_shift > 0) --t.tw_shift;
    else break;
  }
  const int64_t outputs = int64_t(t.ppb) << (t.tw_shift + t.th_shift);
  const int64_t taps_read = std::max<int64_t>(1, int64_t(ceil_div(p.fh, p.upy)) * ceil_div(p.fw, p.upx));
  t.tiles_x = static_cast<int>((p.out_w + (int64_t(1) << t.tw_shift) - 1) >> t.tw_shift);
  t.tiles_y = static_cast<int>((p.out_h + (int64_t(1) << t.th_shift) - 1) >> t.th_shift);
  t.blocks = (p.planes + t.ppb - 1) / t.ppb * t.tiles_x * t.tiles_y;
  t.tiled = bytes <= kSmemBudget && t.ppb * tin_w * tin_h <= kMaxStagedPerTapRead * outputs * taps_read &&
            t.blocks <= std::numeric_limits<int>::max();
  t.tin_w = static_cast<int>(std::min<int64_t>(tin_w, std::numeric_limits<int>::max()));
  t.tin_h = static_cast<int>(std::min<int64_t>(tin_h, std::numeric_limits<int>::max()));
  t.smem = static_cast<size_t>(bytes);
  return t;
}

template <typename T>
Args<T> make_args(const Upfirdn2dParams& p, const TilePlan& t) {
  using A = typename acc_type<T>::type;
  Args<T> a{};
  a.x = static_cast<const T*>(p.x);
  a.f = static_cast<const A*>(p.f);
  a.out = static_cast<T*>(p.out);
  a.planes = p.planes;
  a.in_h = p.in_h;
  a.in_w = p.in_w;
  a.out_h = p.out_h;
  a.out_w = p.out_w;
  a.fh = p.fh;
  a.fw = p.fw;
  a.upx = p.upx;
  a.upy = p.upy;
  a.downx = p.downx;
  a.downy = p.downy;
  a.px0 = p.px0;
  a.py0 = p.py0;
  a.flip_filter = p.flip_filter;
  a.gain = static_cast<A>(p.gain);
  a.tw_shift = t.tw_shift;
  a.th_shift = t.th_shift;
  a.ppb = t.ppb;
  a.tin_w = t.tin_w;
  a.tin_h = t.tin_h;
  a.tiles_x = t.tiles_x;
  a.tiles_y = t.tiles_y;
  return a;
}

template <typename T, int UP, int DOWN>
void launch_tiled(const Args<T>& a, const TilePlan& t, cudaStream_t stream) {
  upfirdn2d_tile_kernel<T, UP, DOWN><<<static_cast<unsigned>(t.blocks), kThreads, t.smem, stream>>>(a);
}

template <typename T>
cudaError_t launch_upfirdn2d_typed(const Upfirdn2dParams& p, cudaStream_t stream) {
  using A = typename acc_type<T>::type;
  const TilePlan t = plan_tiles<A>(p);
  const Args<T> a = make_args<T>(p, t);
  if (!t.tiled) {
    const uint64_t total = uint64_t(p.planes) * p.out_h * p.out_w;
    int device = 0, sms = 0, threads_per_sm = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess)
      err = cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device);
    if (err != cudaSuccess) return err;
    // Enough blocks to fill the GPU a few times over; the grid-stride loop covers the rest.
    const uint64_t resident = uint64_t(sms) * (threads_per_sm / kThreads);
    const unsigned blocks = static_cast<unsigned>(std::min((total + kThreads - 1) / kThreads, 4 * resident));
    upfirdn2d_direct_kernel<T><<<blocks, kThreads, 0, stream>>>(a, FastDivmod(uint64_t(p.out_w)),
                                                                FastDivmod(uint64_t(p.out_h)), total);
    return cudaGetLastError();
  }
  const bool same = p.upx == p.upy && p.downx == p.downy;
  if (same && p.upx == 1 && p.downx == 1) launch_tiled<T, 1, 1>(a, t, stream);
  else if (same && p.upx == 2 && p.downx == 1) launch_tiled<T, 2, 1>(a, t, stream);
  else if (same && p.upx == 1 && p.downx == 2) launch_tiled<T, 1, 2>(a, t, stream);
  else launch_tiled<T, 0, 0>(a, t, stream);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, cudaStream_t stream) {
  // Checked by the host file already; FastDivmod needs divisors >= 1.
  if (p.planes <= 0 || p.out_h < 1 || p.out_w < 1) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32: return launch_upfirdn2d_typed<float>(p, stream);
    case DType::kFloat16: return launch_upfirdn2d_typed<c10::Half>(p, stream);
    case DType::kBFloat16: return launch_upfirdn2d_typed<c10::BFloat16>(p, stream);
    default: return cudaErrorInvalidValue;  // no float64 on CUDA (make_upfirdn2d_params checks it)
  }
}

}  // namespace ganfast
