// bias_act on CUDA: one elementwise pass over the storage of x (and g, gg); same contract as
// bias_act_cpu (see bias_act.h), per-element math from common/bias_act_math.h.
//
// Work split. The kernel walks the flat storage offsets i of [outer, C, inner] with a
// grid-stride loop and finds the bias index (i / inner) % C with two multiply-shift divisions
// (common/fast_divmod.h), once per 16-byte vector. A vector inside one row takes one bias value;
// with inner == 1 and an aligned bias slice, the biases are one vector load; otherwise (rows
// shorter than a vector) the position steps element by element. One flat kernel rather than a
// 2-D grid over rows because GAN layers span every row length: 4x4 maps (inner = 16), 1024x1024
// maps (inner = 2^20) and channels_last / [N, C] (inner = 1). A row-per-block grid idles most
// threads on short rows and caps gridDim.y at 65535 rows; the flat walk keeps every lane busy
// and lets a vector straddle rows.
//
// Vectors. When x, g, gg and out are all 16-byte aligned the main loop moves 16 bytes per access
// (4 floats, 8 halves or bfloat16s, 2 doubles); the tail after the last whole vector, or the
// whole tensor when some pointer is not aligned (x a view at an odd storage offset), goes through
// the scalar loop of the same kernel, so alignment costs no extra instantiation.
//
// Indices are 64-bit throughout: GAN activations exceed 2^31 elements at large batch x 1024^2.
//
// This file holds the kernel and its launch function only (no torch header: see
// common/cuda_launch.h); argument checks, allocation and the db reduction are in
// bias_act_cuda_host.cpp.
#include "bias_act/bias_act_cuda_launch.h"

#include <algorithm>

#include "common/fast_divmod.h"

namespace ganfast {
namespace {

constexpr int kThreads = 256;
constexpr int kVectorBytes = 16;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Where storage offset i sits: channel c (the bias index) and position in its row of `inner`.
struct RowPos {
  uint64_t c, pos;
};

__device__ __forceinline__ RowPos locate(uint64_t i, const FastDivmod& inner, const FastDivmod& channels) {
  uint64_t row, pos, rest, c;
  inner.divmod(i, row, pos);
  channels.divmod(row, rest, c);
  return {c, pos};
}

// Steps to the next storage offset.
__device__ __forceinline__ void advance(RowPos& at, const FastDivmod& inner, const FastDivmod& channels) {
  if (++at.pos == inner.divisor) {
    at.pos = 0;
    if (++at.c == channels.divisor) at.c = 0;
  }
}

__host__ __device__ __forceinline__ bool is_aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t load_bias(const scalar_t* __restrict__ b, uint64_t c) {
  return b ? static_cast<acc_t>(b[c]) : acc_t(0);
}

template <Act A, int Order, typename scalar_t, typename acc_t>
__device__ __forceinline__ scalar_t apply(scalar_t x, acc_t bv, scalar_t g, scalar_t gg, acc_t alpha,
                                          acc_t gain, acc_t clamp) {
  const acc_t z = static_cast<acc_t>(x) + bv;
  const acc_t gv = Order >= 1 ? static_cast<acc_t>(g) : acc_t(0);
  const acc_t ggv = Order == 2 ? static_cast<acc_t>(gg) : acc_t(0);
  return static_cast<scalar_t>(bias_act_element<A, Order, acc_t>(z, gv, ggv, alpha, gain, clamp));
}

// x, g, gg, out: [outer, C, inner] storage of numel elements (g from order 1, gg at order 2;
// nullptr below). b: [C] or nullptr. num_vectors: whole VEC-element vectors handled with 16-byte
// accesses (0 when a pointer is not 16-byte aligned); offsets from num_vectors * VEC on are
// scalar.
template <Act A, int Order, typename scalar_t>
__global__ void __launch_bounds__(kThreads)
bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                const scalar_t* __restrict__ g, const scalar_t* __restrict__ gg,
                scalar_t* __restrict__ out, uint64_t numel, uint64_t num_vectors, FastDivmod inner,
                FastDivmod channels, typename acc_type<scalar_t>::type alpha,
                typename acc_type<scalar_t>::type gain, typename acc_type<scalar_t>::type clamp) {
  using acc_t = typename acc_type<scalar_t>::type;
  constexpr int VEC = kVectorBytes / sizeof(scalar_t);
  using P = Pack<scalar_t, VEC>;
  const uint64_t stride = uint64_t(gridDim.x) * kThreads;
  const uint64_t tid = uint64_t(blockIdx.x) * kThreads + threadIdx.x;

  for (uint64_t v = tid; v < num_vectors; v += stride) {
    const uint64_t i = v * VEC;
    const P xv = *reinterpret_cast<const P*>(x + i);
    P gv, ggv, ov;
    if constexpr (Order >= 1) gv = *reinterpret_cast<const P*>(g + i);
    if constexpr (Order == 2) ggv = *reinterpret_cast<const P*>(gg + i);
    // The vector's bias values, gathered before the math so that one copy of it is unrolled.
    acc_t bv[VEC];
    RowPos at = locate(i, inner, channels);
    if (at.pos + VEC <= inner.divisor) {
      // Inside one row (NCHW with inner >= VEC): one bias value.
      const acc_t v0 = load_bias<scalar_t, acc_t>(b, at.c);
#pragma unroll
      for (int k = 0; k < VEC; ++k) bv[k] = v0;
    } else if (b != nullptr && inner.divisor == 1 && at.c + VEC <= channels.divisor &&
               is_aligned16(b + at.c)) {
      // channels_last / [N, C] with C % VEC == 0: the bias slice is itself one aligned vector.
      const P bp = *reinterpret_cast<const P*>(b + at.c);
#pragma unroll
      for (int k = 0; k < VEC; ++k) bv[k] = static_cast<acc_t>(bp.v[k]);
    } else {
      // Rows shorter than a vector, or a row boundary inside it.
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        bv[k] = load_bias<scalar_t, acc_t>(b, at.c);
        advance(at, inner, channels);
      }
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      ov.v[k] = apply<A, Order, scalar_t, acc_t>(xv.v[k], bv[k], Order >= 1 ? gv.v[k] : scalar_t(0),
                                                 Order == 2 ? ggv.v[k] : scalar_t(0), alpha, gain, clamp);
    *reinterpret_cast<P*>(out + i) = ov;
  }

  for (uint64_t i = num_vectors * VEC + tid; i < numel; i += stride) {
    const RowPos at = locate(i, inner, channels);
    out[i] = apply<A, Order, scalar_t, acc_t>(x[i], load_bias<scalar_t, acc_t>(b, at.c),
                                              Order >= 1 ? g[i] : scalar_t(0),
                                              Order == 2 ? gg[i] : scalar_t(0), alpha, gain, clamp);
  }
}

template <Act A, int Order, typename scalar_t>
void launch_bias_act_kernel(const BiasActParams& p, uint64_t resident, cudaStream_t stream) {
  using acc_t = typename acc_type<scalar_t>::type;
  constexpr int VEC = kVectorBytes / sizeof(scalar_t);
  const uint64_t numel = static_cast<uint64_t>(p.numel);
  const bool aligned = is_aligned16(p.x) && is_aligned16(p.out) &&
                       (Order < 1 || is_aligned16(p.g)) && (Order < 2 || is_aligned16(p.gg));
  const uint64_t num_vectors = aligned ? numel / VEC : 0;
  const uint64_t items = std::max(num_vectors, numel - num_vectors * VEC);
  // Enough blocks to fill every SM once; the grid-stride loop covers the rest.
  const unsigned blocks = static_cast<unsigned>(std::min((items + kThreads - 1) / kThreads, resident));
  bias_act_kernel<A, Order, scalar_t><<<blocks, kThreads, 0, stream>>>(
      static_cast<const scalar_t*>(p.x), static_cast<const scalar_t*>(p.b),
      static_cast<const scalar_t*>(p.g), static_cast<const scalar_t*>(p.gg),
      static_cast<scalar_t*>(p.out), numel, num_vectors, FastDivmod(uint64_t(p.inner)),
      FastDivmod(uint64_t(p.channels)), static_cast<acc_t>(p.s.alpha),
      static_cast<acc_t>(p.s.gain), static_cast<acc_t>(p.s.clamp));
}

// Blocks of kThreads that the current device holds at once: multiProcessorCount *
// (maxThreadsPerMultiProcessor / kThreads), as at::cuda::getCurrentDeviceProperties() gave them.
cudaError_t resident_blocks(uint64_t* resident) {
  int device = 0, sms = 0, threads_per_sm = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device);
  *resident = uint64_t(sms) * (threads_per_sm / kThreads);
  return err;
}

}  // namespace

cudaError_t launch_bias_act(const BiasActParams& p, DType dtype, cudaStream_t stream) {
  // Checked by the host file already; FastDivmod needs divisors >= 1.
  if (p.act < 0 || p.act >= kNumActs || p.order < 0 || p.order > 2 || p.numel <= 0 || p.channels < 1 ||
      p.inner < 1)
    return cudaErrorInvalidValue;
  uint64_t resident = 0;
  const cudaError_t err = resident_blocks(&resident);
  if (err != cudaSuccess) return err;
  GANFAST_DISPATCH_DTYPE(dtype, scalar_t, {
    dispatch_act_order(p.act, p.order, [&](auto a, auto o) {
      launch_bias_act_kernel<decltype(a)::value, decltype(o)::value, scalar_t>(p, resident, stream);
    });
  });
  return cudaGetLastError();
}

}  // namespace ganfast
