// conditional_batch_norm's four passes on CUDA (fp16 / bf16 / fp32 x, float math): same contract
// as the CPU kernels (see conditional_batch_norm.h), per-element math from that header.
//
// Loads and stores go in 16-byte packs (4 floats, 8 halves) when every plane is a whole number of
// packs and the tensors are 16-byte aligned (V = 16 / sizeof(T)); otherwise element by element
// (V = 1). A pack never straddles two planes.
//
//   channel_stats: one block per (channel, chunk of its N * M / V packs), the chunks sized so the
//     grid fills the GPU about twice. Each thread sums d = x - pivot and d^2 over a pack in float
//     (exact differences: the data sit near the pivot, the channel's first element) and carries
//     the sums in double; the block's double sums go to a workspace [C, chunks, 2], and a second
//     kernel (one warp per channel) adds them in a fixed order and finishes with cbn_moments.
//     Deterministic, no atomics.
//   forward_apply, backward_dx: elementwise, a grid-stride loop over the flat packs; the plane and
//     channel of a pack from FastDivmod (no 64-bit divides).
//   backward_sums: tpp threads per plane (a power of two, about 2 packs each, at most the block),
//     256 / tpp planes per block; per-thread float sums, a shuffle butterfly over the plane's
//     lanes, then shared memory across its warps when tpp > 32.
//
// This file holds the kernels and their launch functions only (no torch headers, see
// common/cuda_launch.h); conditional_batch_norm_cuda_host.cpp checks the arguments, allocates the
// outputs and channel_stats's workspace (sized by conditional_batch_norm_stats_splits below) and
// passes the SM count.
#include "conditional_batch_norm/conditional_batch_norm_cuda_launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>

#include "common/fast_divmod.h"
#include "conditional_batch_norm/conditional_batch_norm_math.h"

namespace ganfast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// ---- storage: raw bits and their conversion to / from float ----

template <typename T> struct Dev;
template <> struct Dev<float> {
  using raw = float;
  static __device__ __forceinline__ float to(raw v) { return v; }
  static __device__ __forceinline__ raw from(float v) { return v; }
};
template <> struct Dev<c10::Half> {
  using raw = unsigned short;
  static __device__ __forceinline__ float to(raw v) { return __half2float(__ushort_as_half(v)); }
  static __device__ __forceinline__ raw from(float v) { return __half_as_ushort(__float2half_rn(v)); }
};
template <> struct Dev<c10::BFloat16> {
  using raw = unsigned short;
  static __device__ __forceinline__ float to(raw v) { return __uint_as_float(static_cast<unsigned>(v) << 16); }
  static __device__ __forceinline__ raw from(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
};

template <typename T, int V> union PackBits {
  uint4 u;
  typename Dev<T>::raw r[V];
};

// V elements at p (16-byte aligned when V > 1) as floats.
template <typename T, int V>
__device__ __forceinline__ void load_pack(const T* p, float (&v)[V]) {
  using raw = typename Dev<T>::raw;
  if constexpr (V == 1) {
    v[0] = Dev<T>::to(__ldg(reinterpret_cast<const raw*>(p)));
  } else {
    static_assert(V * sizeof(raw) == sizeof(uint4), "a pack is 16 bytes");
    PackBits<T, V> b;
    b.u = __ldg(reinterpret_cast<const uint4*>(p));
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = Dev<T>::to(b.r[k]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const float (&v)[V]) {
  using raw = typename Dev<T>::raw;
  if constexpr (V == 1) {
    *reinterpret_cast<raw*>(p) = Dev<T>::from(v[0]);
  } else {
    PackBits<T, V> b;
#pragma unroll
    for (int k = 0; k < V; ++k) b.r[k] = Dev<T>::from(v[k]);
    *reinterpret_cast<uint4*>(p) = b.u;
  }
}

// Everything the elementwise and backward_sums kernels read.
template <typename T>
struct Args {
  const T* x;         // [N * C, M]
  const T* dy;        // like x (backward)
  T* out;             // like x: y or dx
  const float* mean;  // [C]
  const float* rstd;  // [C]
  const float* gain;  // [N, C], element (n, c) at n * gain_sn + c
  const float* bias;  // [N, C], element (n, c) at n * bias_sn + c
  const float* c1;    // [C] (backward_dx)
  const float* c2;    // [C] (backward_dx)
  float* sums;        // [N * C, 2] (backward_sums)
  int64_t NC, M;
  int64_t gain_sn, bias_sn;  // C, or 0: one value per channel
  FastDivmod C;       // plane -> channel
  FastDivmod M_div;   // flat element -> plane
};

// Per-plane constants of the elementwise math.
struct PlaneConsts {
  float mean, rstd, gain, bias;
  int64_t c;
};

template <typename T>
__device__ __forceinline__ PlaneConsts plane_consts(const Args<T>& a, int64_t plane) {
  uint64_t n, c;
  a.C.divmod(static_cast<uint64_t>(plane), n, c);
  const int64_t ni = static_cast<int64_t>(n), ci = static_cast<int64_t>(c);
  return {__ldg(a.mean + c), __ldg(a.rstd + c), __ldg(a.gain + ni * a.gain_sn + ci),
          __ldg(a.bias + ni * a.bias_sn + ci), ci};
}

// ---- channel_stats ----

// Block b = c * splits + chunk: (sum d, sum d^2), d = x - x[0, c, 0, 0], over packs
// [chunk * chunk_packs, ...) of channel c's N * Mv packs (Mv = M / V per plane), into ws[b].
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
cbn_stats_partial_kernel(const T* __restrict__ x, double* __restrict__ ws, int64_t C, int64_t Mv, FastDivmod Mv_div,
                         int64_t packs, int64_t chunk_packs, unsigned splits) {
  __shared__ double smem[2][kWarps];
  const unsigned c = blockIdx.x / splits, chunk = blockIdx.x % splits;
  const T* xc = x + int64_t(c) * Mv * V;  // plane (0, c)
  float pv[1];
  load_pack<T, 1>(xc, pv);
  const float pivot = pv[0];
  const int64_t v0 = int64_t(chunk) * chunk_packs, v1 = min(packs, v0 + chunk_packs);
  double s1 = 0.0, s2 = 0.0;
#pragma unroll 2
  for (int64_t v = v0 + threadIdx.x; v < v1; v += kThreads) {
    uint64_t n, q;
    Mv_div.divmod(static_cast<uint64_t>(v), n, q);
    float xv[V];
    load_pack<T, V>(xc + (int64_t(n) * C * Mv + int64_t(q)) * V, xv);
    float t1 = 0.f, t2 = 0.f;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float d = xv[k] - pivot;
      t1 += d;
      t2 += d * d;
    }
    s1 += t1;
    s2 += t2;
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    s1 += __shfl_xor_sync(0xffffffffu, s1, off);
    s2 += __shfl_xor_sync(0xffffffffu, s2, off);
  }
  const int w = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) {
    smem[0][w] = s1;
    smem[1][w] = s2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double t1 = 0.0, t2 = 0.0;
#pragma unroll
    for (int u = 0; u < kWarps; ++u) {
      t1 += smem[0][u];
      t2 += smem[1][u];
    }
    ws[2 * int64_t(blockIdx.x)] = t1;
    ws[2 * int64_t(blockIdx.x) + 1] = t2;
  }
}

// One warp per channel: the sum of its `splits` partials (fixed order), then (mean, M2).
template <typename T>
__global__ void __launch_bounds__(kThreads)
cbn_stats_finalize_kernel(const T* __restrict__ x, const double* __restrict__ ws, float* __restrict__ stats, int64_t C,
                          int64_t M, unsigned splits, double count) {
  const int64_t c = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (c >= C) return;  // whole warps
  const double* w = ws + 2 * c * splits;
  double s1 = 0.0, s2 = 0.0;
  for (unsigned i = lane; i < splits; i += 32) {
    s1 += w[2 * i];
    s2 += w[2 * i + 1];
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    s1 += __shfl_xor_sync(0xffffffffu, s1, off);
    s2 += __shfl_xor_sync(0xffffffffu, s2, off);
  }
  if (lane == 0) {
    float pv[1];
    load_pack<T, 1>(x + c * M, pv);
    double mean, m2;
    cbn_moments(count, static_cast<double>(pv[0]), s1, s2, mean, m2);
    stats[2 * c] = static_cast<float>(mean);
    stats[2 * c + 1] = static_cast<float>(m2);
  }
}

// ---- forward_apply, backward_dx: elementwise over packs ----

template <bool RELU, typename T, int V>
__global__ void __launch_bounds__(kThreads) cbn_forward_apply_kernel(const Args<T> a, int64_t packs) {
  for (int64_t v = int64_t(blockIdx.x) * kThreads + threadIdx.x; v < packs; v += int64_t(gridDim.x) * kThreads) {
    const int64_t i = v * V;
    const PlaneConsts k = plane_consts(a, static_cast<int64_t>(a.M_div.div(static_cast<uint64_t>(i))));
    float xv[V], yv[V];
    load_pack<T, V>(a.x + i, xv);
#pragma unroll
    for (int j = 0; j < V; ++j) yv[j] = cbn_y<RELU>(cbn_z(cbn_xhat(xv[j], k.mean, k.rstd), k.gain, k.bias));
    store_pack<T, V>(a.out + i, yv);
  }
}

template <bool RELU, typename T, int V>
__global__ void __launch_bounds__(kThreads) cbn_backward_dx_kernel(const Args<T> a, int64_t packs) {
  for (int64_t v = int64_t(blockIdx.x) * kThreads + threadIdx.x; v < packs; v += int64_t(gridDim.x) * kThreads) {
    const int64_t i = v * V;
    const PlaneConsts k = plane_consts(a, static_cast<int64_t>(a.M_div.div(static_cast<uint64_t>(i))));
    const float k1 = __ldg(a.c1 + k.c), k2 = __ldg(a.c2 + k.c);
    float xv[V], gv[V], dv[V];
    load_pack<T, V>(a.x + i, xv);
    load_pack<T, V>(a.dy + i, gv);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float h = cbn_xhat(xv[j], k.mean, k.rstd);
      const float dz = cbn_dz<RELU>(gv[j], cbn_z(h, k.gain, k.bias));
      dv[j] = cbn_dx(dz, h, k.rstd, k.gain, k1, k2);
    }
    store_pack<T, V>(a.out + i, dv);
  }
}

// ---- backward_sums: tpp = 1 << tpp_shift threads per plane ----

template <bool RELU, typename T, int V>
__global__ void __launch_bounds__(kThreads) cbn_backward_sums_kernel(const Args<T> a, int tpp_shift) {
  __shared__ float smem[2][kWarps];
  const int tpp = 1 << tpp_shift;
  const int row = threadIdx.x & (tpp - 1);
  const int64_t plane = int64_t(blockIdx.x) * (kThreads >> tpp_shift) + (threadIdx.x >> tpp_shift);
  float s1 = 0.f, s2 = 0.f;
  if (plane < a.NC) {
    const PlaneConsts k = plane_consts(a, plane);
    const T* xp = a.x + plane * a.M;
    const T* dp = a.dy + plane * a.M;
    const int64_t Mv = a.M / V;
#pragma unroll 2
    for (int64_t v = row; v < Mv; v += tpp) {
      float xv[V], gv[V];
      load_pack<T, V>(xp + v * V, xv);
      load_pack<T, V>(dp + v * V, gv);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float h = cbn_xhat(xv[j], k.mean, k.rstd);
        const float dz = cbn_dz<RELU>(gv[j], cbn_z(h, k.gain, k.bias));
        s1 += dz;
        s2 += dz * h;
      }
    }
  }
  // The plane's lanes: an aligned run of tpp threads (within a warp when tpp <= 32).
  const int width = tpp < 32 ? tpp : 32;
  for (int off = width >> 1; off >= 1; off >>= 1) {
    s1 += __shfl_xor_sync(0xffffffffu, s1, off);
    s2 += __shfl_xor_sync(0xffffffffu, s2, off);
  }
  if (tpp > 32) {  // the same for the whole block
    const int w = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) {
      smem[0][w] = s1;
      smem[1][w] = s2;
    }
    __syncthreads();
    if (row == 0) {
      s1 = s2 = 0.f;
      for (int u = 0; u < (tpp >> 5); ++u) {
        s1 += smem[0][w + u];
        s2 += smem[1][w + u];
      }
    }
  }
  if (plane < a.NC && row == 0) {
    a.sums[2 * plane] = s1;
    a.sums[2 * plane + 1] = s2;
  }
}

// ---- launch side ----

template <typename F>
cudaError_t dispatch_cuda_dtype(DType dtype, F&& fn) {
  switch (dtype) {
    case DType::kFloat32: return fn(float{});
    case DType::kFloat16: return fn(c10::Half{});
    case DType::kBFloat16: return fn(c10::BFloat16{});
    default: return cudaErrorInvalidValue;  // float16, bfloat16 or float32 on cuda (checked before)
  }
}

template <typename F>
cudaError_t dispatch_relu(bool relu, F&& fn) {
  if (relu) return fn(std::true_type{});
  return fn(std::false_type{});
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The pack of a launch: kV = 16 / sizeof(T) when each plane is whole packs and the pointers are
// 16-byte aligned, else 1.
int pack_width(int kV, int64_t M, std::initializer_list<const void*> ptrs) {
  bool vec = M % kV == 0;
  for (const void* p : ptrs) vec = vec && aligned16(p);
  return vec ? kV : 1;
}

// kV of x's dtype (0: none the kernels take).
int max_pack(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 16 / sizeof(float);
    case DType::kFloat16: return 16 / sizeof(c10::Half);
    case DType::kBFloat16: return 16 / sizeof(c10::BFloat16);
    default: return 0;
  }
}

// fn(std::integral_constant<int, V>), V from pack_width.
template <typename T, typename F>
cudaError_t dispatch_pack(int64_t M, std::initializer_list<const void*> ptrs, F&& fn) {
  constexpr int kV = 16 / sizeof(T);
  if (pack_width(kV, M, ptrs) == kV) return fn(std::integral_constant<int, kV>{});
  return fn(std::integral_constant<int, 1>{});
}

template <typename T>
Args<T> make_args(const CbnParams& p) {
  Args<T> a{};
  a.x = static_cast<const T*>(p.x);
  a.dy = static_cast<const T*>(p.dy);
  a.out = static_cast<T*>(p.out);
  a.mean = static_cast<const float*>(p.mean);
  a.rstd = static_cast<const float*>(p.rstd);
  a.gain = static_cast<const float*>(p.gain);
  a.bias = static_cast<const float*>(p.bias);
  a.c1 = static_cast<const float*>(p.c1);
  a.c2 = static_cast<const float*>(p.c2);
  a.sums = static_cast<float*>(p.sums);
  a.NC = p.N * p.C;
  a.M = p.M;
  a.gain_sn = p.gain_sn;
  a.bias_sn = p.bias_sn;
  a.C = FastDivmod(static_cast<uint64_t>(p.C));
  a.M_div = FastDivmod(static_cast<uint64_t>(p.M));
  return a;
}

// Blocks of a grid-stride loop over `packs`: enough for a few waves, no more than the packs need.
unsigned elementwise_blocks(int64_t packs, int sm_count) {
  const int64_t need = (packs + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(need, int64_t(sm_count) * (2048 / kThreads) * 4));
}

// channel_stats's grid for packs of V elements.
struct StatsGrid {
  int64_t Mv, packs, splits, chunk_packs;
};
StatsGrid stats_grid(const CbnParams& p, int V, int sm_count) {
  const int64_t Mv = p.M / V, packs = p.N * Mv;
  // About two waves of blocks, each thread at least 4 packs.
  const int64_t target = 2 * int64_t(sm_count) * (2048 / kThreads);
  const int64_t max_splits = std::max<int64_t>(1, packs / (kThreads * 4));
  int64_t splits = std::min(max_splits, std::max<int64_t>(1, (target + p.C - 1) / p.C));
  const int64_t chunk_packs = (packs + splits - 1) / splits;
  splits = (packs + chunk_packs - 1) / chunk_packs;
  return {Mv, packs, splits, chunk_packs};
}

// backward_sums's grid for packs of V elements: 1 << shift threads per plane.
struct SumsGrid {
  int shift;
  int64_t blocks;
};
SumsGrid sums_grid(int64_t NC, int64_t M, int V) {
  const int64_t Mv = M / V;
  int shift = 0;  // threads per plane: about 2 packs each, at most the block
  while ((int64_t(2) << shift) < Mv && (1 << shift) < kThreads) ++shift;
  const int64_t per_block = kThreads >> shift;
  return {shift, (NC + per_block - 1) / per_block};
}

template <typename T>
cudaError_t launch_channel_stats(const CbnParams& p, double* ws, int sm_count, cudaStream_t stream) {
  return dispatch_pack<T>(p.M, {p.x}, [&](auto vc) {
    constexpr int V = decltype(vc)::value;
    const StatsGrid g = stats_grid(p, V, sm_count);
    if (p.C * g.splits > std::numeric_limits<int>::max()) return cudaErrorInvalidValue;  // checked before
    cbn_stats_partial_kernel<T, V><<<static_cast<unsigned>(p.C * g.splits), kThreads, 0, stream>>>(
        static_cast<const T*>(p.x), ws, p.C, g.Mv, FastDivmod(static_cast<uint64_t>(g.Mv)), g.packs, g.chunk_packs,
        static_cast<unsigned>(g.splits));
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    cbn_stats_finalize_kernel<T><<<static_cast<unsigned>((p.C + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
        static_cast<const T*>(p.x), ws, static_cast<float*>(p.sums), p.C, p.M, static_cast<unsigned>(g.splits),
        static_cast<double>(p.N * p.M));
    return cudaGetLastError();
  });
}

template <bool RELU, typename T>
cudaError_t launch_forward_apply(const CbnParams& p, int sm_count, cudaStream_t stream) {
  const Args<T> a = make_args<T>(p);
  return dispatch_pack<T>(p.M, {p.x, p.out}, [&](auto vc) {
    constexpr int V = decltype(vc)::value;
    const int64_t packs = a.NC * a.M / V;
    cbn_forward_apply_kernel<RELU, T, V><<<elementwise_blocks(packs, sm_count), kThreads, 0, stream>>>(a, packs);
    return cudaGetLastError();
  });
}

template <bool RELU, typename T>
cudaError_t launch_backward_dx(const CbnParams& p, int sm_count, cudaStream_t stream) {
  const Args<T> a = make_args<T>(p);
  return dispatch_pack<T>(p.M, {p.x, p.dy, p.out}, [&](auto vc) {
    constexpr int V = decltype(vc)::value;
    const int64_t packs = a.NC * a.M / V;
    cbn_backward_dx_kernel<RELU, T, V><<<elementwise_blocks(packs, sm_count), kThreads, 0, stream>>>(a, packs);
    return cudaGetLastError();
  });
}

template <bool RELU, typename T>
cudaError_t launch_backward_sums(const CbnParams& p, cudaStream_t stream) {
  const Args<T> a = make_args<T>(p);
  return dispatch_pack<T>(p.M, {p.x, p.dy}, [&](auto vc) {
    constexpr int V = decltype(vc)::value;
    const SumsGrid g = sums_grid(a.NC, a.M, V);
    if (g.blocks > std::numeric_limits<int>::max()) return cudaErrorInvalidValue;  // checked before
    cbn_backward_sums_kernel<RELU, T, V><<<static_cast<unsigned>(g.blocks), kThreads, 0, stream>>>(a, g.shift);
    return cudaGetLastError();
  });
}

}  // namespace

int64_t conditional_batch_norm_stats_splits(const CbnParams& p, DType dtype, int sm_count) {
  const int kV = max_pack(dtype);
  if (kV == 0 || p.N * p.M <= 0 || sm_count <= 0) return 1;
  return stats_grid(p, pack_width(kV, p.M, {p.x}), sm_count).splits;
}

int64_t conditional_batch_norm_sums_blocks(const CbnParams& p, DType dtype) {
  const int kV = max_pack(dtype);
  if (kV == 0) return 0;
  return sums_grid(p.N * p.C, p.M, pack_width(kV, p.M, {p.x, p.dy})).blocks;
}

cudaError_t launch_cbn_channel_stats(const CbnParams& p, DType dtype, double* workspace, int sm_count,
                                     cudaStream_t stream) {
  if (p.N * p.M <= 0 || p.C <= 0 || sm_count <= 0 || workspace == nullptr) return cudaErrorInvalidValue;
  return dispatch_cuda_dtype(dtype,
                             [&](auto t) { return launch_channel_stats<decltype(t)>(p, workspace, sm_count, stream); });
}

cudaError_t launch_cbn_forward_apply(const CbnParams& p, DType dtype, int sm_count, cudaStream_t stream) {
  if (p.N * p.C * p.M <= 0 || sm_count <= 0) return cudaErrorInvalidValue;
  return dispatch_cuda_dtype(dtype, [&](auto t) {
    return dispatch_relu(p.relu, [&](auto r) {
      return launch_forward_apply<decltype(r)::value, decltype(t)>(p, sm_count, stream);
    });
  });
}

cudaError_t launch_cbn_backward_sums(const CbnParams& p, DType dtype, cudaStream_t stream) {
  if (p.N * p.C * p.M <= 0) return cudaErrorInvalidValue;
  return dispatch_cuda_dtype(dtype, [&](auto t) {
    return dispatch_relu(p.relu,
                         [&](auto r) { return launch_backward_sums<decltype(r)::value, decltype(t)>(p, stream); });
  });
}

cudaError_t launch_cbn_backward_dx(const CbnParams& p, DType dtype, int sm_count, cudaStream_t stream) {
  if (p.N * p.C * p.M <= 0 || sm_count <= 0) return cudaErrorInvalidValue;
  return dispatch_cuda_dtype(dtype, [&](auto t) {
    return dispatch_relu(p.relu, [&](auto r) {
      return launch_backward_dx<decltype(r)::value, decltype(t)>(p, sm_count, stream);
    });
  });
}

}  // namespace ganfast
