// modulated_conv2d's epilogue and demodulation coefficients on CUDA: the same contracts as the CPU
// kernels (see modulated_conv2d.h), per-element math from modulated_conv2d_math.h / bias_act_math.h.
//
// Forward: an elementwise grid-stride walk over a (contiguous [N, C, M]). When M is a multiple of
// the 16-byte vector (4 floats, 8 halves, 2 doubles) and a and out are 16-byte aligned, each
// access moves one vector, which then lies inside one plane: one 64-bit multiply-shift division
// (common/fast_divmod.h) per vector finds its plane and pixel; otherwise the same code runs one
// element at a time. Each thread keeps kUnroll vectors' loads in flight before it computes.
//
// Backward: each block covers `slots` planes (n, c) and a chunk of their pixels, 32 to 256
// threads per plane (about kUnroll vectors each per step), so 4x4 maps take a warp per plane and
// 64x64 maps a block. The two plane sums (dz, dz * a) are reduced in a fixed order (warp xor
// butterfly, then the plane's warps in order through shared memory): deterministic, no atomics.
// Planes too large to fill the GPU with one block each are cut into `splits` chunks; the chunks'
// partial sums go to a workspace [N * C, splits, 2] that a second kernel adds up in order.
//
// Noise (any strided [N, C, H, W] view): flat planes are read as vectors when their offsets keep
// 16-byte alignment, else element by element; other views go through (h, w) = divmod(p, W).
//
// Demodulation: one block per output channel o. The block reads weight[o] once, sums w^2 over the
// kernel taps into shared memory per input channel (in chunks of kDemodChunk input channels), then
// warp w takes samples n = w, w + 8, ...: the dot product of styles[n]^2 with those sums (lanes
// over input channels, a xor butterfly), added up chunk by chunk in dcoef[n, o], then rsqrt.
//
// This file holds the kernels and their launch functions only (no torch headers, see
// common/cuda_launch.h); modulated_conv2d_cuda_host.cpp checks the arguments, allocates the
// outputs and the backward's workspace (sized by modulated_conv2d_backward_grid below) and passes
// the device's SM count and threads per SM.
#include "modulated_conv2d/modulated_conv2d_cuda_launch.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/bias_act_math.h"
#include "common/fast_divmod.h"
#include "common/host_device.h"
#include "modulated_conv2d/modulated_conv2d_math.h"

namespace ganfast {
namespace {

// The epilogue kernels state __launch_bounds__(kThreads, 1): without a minimum occupancy ptxas
// caps the double-precision backward at 64 registers (for 4 blocks per SM) and spills around the
// division slow-path call of sigmoid / swish; with it, they take 70 and do not spill.
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kVectorBytes = 16;
constexpr int kUnroll = 2;          // vectors per thread in flight
constexpr int kDemodChunk = 1024;   // input channels whose w^2 sums are held in shared memory at once
constexpr int kSumThreads = 256;

template <typename T> constexpr int vector_size() { return kVectorBytes / int(sizeof(T)); }

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

bool is_aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0; }

enum NoiseMode : int {
  kNoNoise = 0,
  kFlatVector = 1,  // flat planes, each vector's noise one aligned vector load
  kFlat = 2,        // flat planes, element loads
  kStrided = 3,     // any view: (h, w) from the pixel index
};

template <typename T>
struct EpilogueArgs {
  using A = typename acc_type<T>::type;
  const T* a;          // [NC, M]
  const T* g;          // [NC, M] (backward)
  T* out;              // [NC, M]: out or da
  const A* dcoef;      // [NC] or nullptr
  const A* bias;       // [C] or nullptr
  const T* noise;      // element (n, c, h, w) at n * nsN + c * nsC + h * nsH + w * nsW, or nullptr
  int64_t nsN, nsC, nsH, nsW;
  int noise_mode;
  A* sums;             // [NC, 2] (backward)
  A* ws;               // [NC, splits, 2] chunk partials (backward, splits > 1)
  uint64_t numel, NC, M;
  FastDivmod M_div, C_div, W_div;
  A alpha, gain, clamp;
  bool vectorized;     // M % V == 0 and a, out (and g) 16-byte aligned
  int tpp_shift;       // backward: 1 << tpp_shift threads per plane
  int64_t chunk_px;    // backward: pixels of a plane one block covers
  int64_t splits;      // backward: chunks per plane
};

// The noise at pixels p0 .. p0 + V - 1 (inside one plane) of plane (n, c), in A.
template <int V, typename T, typename A = typename acc_type<T>::type>
__device__ __forceinline__ void load_noise(const EpilogueArgs<T>& e, uint64_t n, uint64_t c, uint64_t p0,
                                           A (&nv)[V]) {
  if (e.noise_mode == kNoNoise) {
#pragma unroll
    for (int k = 0; k < V; ++k) nv[k] = A(0);
    return;
  }
  const T* base = e.noise + int64_t(n) * e.nsN + int64_t(c) * e.nsC;
  if (e.noise_mode == kFlatVector) {
    const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(base + p0);
#pragma unroll
    for (int k = 0; k < V; ++k) nv[k] = static_cast<A>(pk.v[k]);
  } else if (e.noise_mode == kFlat) {
#pragma unroll
    for (int k = 0; k < V; ++k) nv[k] = static_cast<A>(base[p0 + k]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      uint64_t h, w;
      e.W_div.divmod(p0 + k, h, w);
      nv[k] = static_cast<A>(base[int64_t(h) * e.nsH + int64_t(w) * e.nsW]);
    }
  }
}

// ---- forward ----

// Items of V elements: item v covers storage offsets v * V .. v * V + V - 1 (inside one plane).
template <Act ACT, int V, typename T, typename A = typename acc_type<T>::type>
__device__ __forceinline__ void forward_items(const EpilogueArgs<T>& e, uint64_t items) {
  using P = Pack<T, V>;
  const uint64_t stride = uint64_t(gridDim.x) * kThreads;
  for (uint64_t first = uint64_t(blockIdx.x) * kThreads + threadIdx.x; first < items; first += stride * kUnroll) {
    P av[kUnroll];
    A nv[kUnroll][V], d[kUnroll], b[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint64_t v = first + u * stride;
      if (v < items) {
        uint64_t q, p0, n, c;
        e.M_div.divmod(v * V, q, p0);
        e.C_div.divmod(q, n, c);
        av[u] = *reinterpret_cast<const P*>(e.a + v * V);
        load_noise<V>(e, n, c, p0, nv[u]);
        d[u] = e.dcoef ? e.dcoef[q] : A(1);
        b[u] = e.bias ? e.bias[c] : A(0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint64_t v = first + u * stride;
      if (v < items) {
        P ov;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const A z = modconv_z(static_cast<A>(av[u].v[k]), d[u], nv[u][k], b[u]);
          ov.v[k] = static_cast<T>(modconv_y<ACT, true>(z, e.alpha, e.gain, e.clamp));
        }
        *reinterpret_cast<P*>(e.out + v * V) = ov;
      }
    }
  }
}

template <Act ACT, typename T>
__global__ void __launch_bounds__(kThreads, 1) modconv_epilogue_forward_kernel(const EpilogueArgs<T> e) {
  constexpr int V = vector_size<T>();
  if (e.vectorized) forward_items<ACT, V>(e, e.numel / V);
  else forward_items<ACT, 1>(e, e.numel);
}

// ---- backward ----

// This thread's share of plane q's pixels [p_begin, p_end): writes da, adds to the two sums.
template <Act ACT, int V, typename T, typename A = typename acc_type<T>::type>
__device__ __forceinline__ void backward_chunk(const EpilogueArgs<T>& e, uint64_t q, uint64_t n, uint64_t c,
                                               int64_t p_begin, int64_t p_end, int lane, int tpp, A& s_dz,
                                               A& s_dza) {
  using P = Pack<T, V>;
  const A d = e.dcoef ? e.dcoef[q] : A(1), b = e.bias ? e.bias[c] : A(0);
  const int64_t plane = int64_t(q) * int64_t(e.M);
  const int64_t step = int64_t(tpp) * V;
  for (int64_t first = p_begin + int64_t(lane) * V; first < p_end; first += step * kUnroll) {
    P av[kUnroll], gv[kUnroll];
    A nv[kUnroll][V];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t p = first + u * step;
      if (p < p_end) {
        av[u] = *reinterpret_cast<const P*>(e.a + plane + p);
        gv[u] = *reinterpret_cast<const P*>(e.g + plane + p);
        load_noise<V>(e, n, c, uint64_t(p), nv[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t p = first + u * step;
      if (p < p_end) {
        P ov;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const A x = static_cast<A>(av[u].v[k]);
          const A dz = modconv_dz<ACT, true>(modconv_z(x, d, nv[u][k], b), static_cast<A>(gv[u].v[k]), e.alpha,
                                             e.gain, e.clamp);
          ov.v[k] = static_cast<T>(dz * d);
          s_dz += dz;
          s_dza += dz * x;
        }
        *reinterpret_cast<P*>(e.out + plane + p) = ov;
      }
    }
  }
}

// Sums s0, s1 over the tpp (32..256) threads of each plane; the plane's first thread gets the
// result. Every thread of the block calls it (tpp is the same for the whole block).
template <typename A>
__device__ __forceinline__ void plane_sum(A& s0, A& s1, int tpp, A* smem /* [2][kWarps] */) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    s0 += __shfl_xor_sync(0xffffffffu, s0, off);
    s1 += __shfl_xor_sync(0xffffffffu, s1, off);
  }
  if (tpp <= 32) return;
  const int warp = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) {
    smem[warp] = s0;
    smem[kWarps + warp] = s1;
  }
  __syncthreads();
  if ((threadIdx.x & (tpp - 1)) == 0) {
    s0 = s1 = A(0);
    for (int u = 0; u < tpp / 32; ++u) {  // the plane's warps, in order
      s0 += smem[warp + u];
      s1 += smem[kWarps + warp + u];
    }
  }
}

template <Act ACT, typename T>
__global__ void __launch_bounds__(kThreads, 1) modconv_epilogue_backward_kernel(const EpilogueArgs<T> e) {
  using A = typename acc_type<T>::type;
  constexpr int V = vector_size<T>();
  __shared__ A smem[2 * kWarps];
  // 32-bit division: the grid has < 2^31 blocks.
  const unsigned split = blockIdx.x % unsigned(e.splits), group = blockIdx.x / unsigned(e.splits);
  const int tpp = 1 << e.tpp_shift;
  const int lane = threadIdx.x & (tpp - 1);
  const uint64_t q = uint64_t(group) * uint64_t(kThreads >> e.tpp_shift) + (threadIdx.x >> e.tpp_shift);
  const bool valid = q < e.NC;
  A s_dz = A(0), s_dza = A(0);
  if (valid) {
    uint64_t n, c;
    e.C_div.divmod(q, n, c);
    const int64_t p_begin = int64_t(split) * e.chunk_px;
    const int64_t p_end = min(int64_t(e.M), p_begin + e.chunk_px);
    if (e.vectorized) backward_chunk<ACT, V>(e, q, n, c, p_begin, p_end, lane, tpp, s_dz, s_dza);
    else backward_chunk<ACT, 1>(e, q, n, c, p_begin, p_end, lane, tpp, s_dz, s_dza);
  }
  plane_sum(s_dz, s_dza, tpp, smem);
  if (valid && lane == 0) {
    A* dst = e.splits == 1 ? e.sums + 2 * q : e.ws + 2 * (q * uint64_t(e.splits) + split);
    dst[0] = s_dz;
    dst[1] = s_dza;
  }
}

// sums[q] = the sum over the chunks of ws[q, :], in chunk order; one thread per plane.
template <typename A>
__global__ void __launch_bounds__(kSumThreads)
modconv_sum_chunks_kernel(const A* __restrict__ ws, A* __restrict__ sums, uint64_t NC, int64_t splits) {
  const uint64_t q = uint64_t(blockIdx.x) * kSumThreads + threadIdx.x;
  if (q >= NC) return;
  const A* w = ws + 2 * q * uint64_t(splits);
  A s0 = A(0), s1 = A(0);
  for (int64_t s = 0; s < splits; ++s) {
    s0 += w[2 * s];
    s1 += w[2 * s + 1];
  }
  sums[2 * q] = s0;
  sums[2 * q + 1] = s1;
}

// ---- demodulation ----

template <typename T, typename A = typename acc_type<T>::type>
__global__ void __launch_bounds__(kThreads)
modconv_demod_kernel(const T* __restrict__ weight, const A* __restrict__ styles, A* __restrict__ dcoef, int64_t N,
                     int64_t Cout, int64_t Cin, int64_t K) {
  __shared__ A wsq[kDemodChunk];
  const int64_t o = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* wo = weight + o * Cin * K;
  for (int64_t i0 = 0; i0 < Cin; i0 += kDemodChunk) {
    const int64_t ci = min(int64_t(kDemodChunk), Cin - i0);
    for (int64_t i = threadIdx.x; i < ci; i += kThreads) {
      const T* wi = wo + (i0 + i) * K;
      A s = A(0);
      for (int64_t k = 0; k < K; ++k) {
        const A v = static_cast<A>(wi[k]);
        s += v * v;
      }
      wsq[i] = s;
    }
    __syncthreads();
    for (int64_t n = warp; n < N; n += kWarps) {
      const A* sn = styles + n * Cin + i0;
      A s = A(0);
      for (int64_t i = lane; i < ci; i += 32) s += sn[i] * sn[i] * wsq[i];
#pragma unroll
      for (int off = 16; off >= 1; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
      if (lane == 0) {
        A* dst = dcoef + n * Cout + o;  // this warp's running sum for (n, o)
        *dst = i0 == 0 ? s : *dst + s;
      }
    }
    __syncthreads();  // wsq is refilled by the next chunk
  }
  if (lane == 0) {
    for (int64_t n = warp; n < N; n += kWarps) {
      A* dst = dcoef + n * Cout + o;
      *dst = demod_coefficient(Cin > 0 ? *dst : A(0));
    }
  }
}

// ---- launch side ----

unsigned resident_blocks(ModconvDevice dev) {
  return unsigned(dev.sm_count) * unsigned(dev.max_threads_per_sm / kThreads);
}

bool valid_device(ModconvDevice dev) { return dev.sm_count > 0 && dev.max_threads_per_sm >= kThreads; }

// vector_size<T>() of a dtype (0: none the kernels take).
int vector_elems(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return vector_size<float>();
    case DType::kFloat16: return vector_size<c10::Half>();
    case DType::kBFloat16: return vector_size<c10::BFloat16>();
    case DType::kFloat64: return vector_size<double>();
  }
  return 0;
}

// EpilogueArgs::vectorized for vectors of V elements.
bool vectorizable(const ModconvEpilogueParams& p, int V) {
  return p.M % V == 0 && is_aligned16(p.a) && is_aligned16(p.out) && (p.g == nullptr || is_aligned16(p.g));
}

template <typename T>
EpilogueArgs<T> make_args(const ModconvEpilogueParams& p) {
  using A = typename acc_type<T>::type;
  constexpr int V = vector_size<T>();
  EpilogueArgs<T> e{};
  e.a = static_cast<const T*>(p.a);
  e.g = static_cast<const T*>(p.g);
  e.out = static_cast<T*>(p.out);
  e.dcoef = static_cast<const A*>(p.dcoef);
  e.bias = static_cast<const A*>(p.bias);
  e.noise = static_cast<const T*>(p.noise);
  e.nsN = p.nsN;
  e.nsC = p.nsC;
  e.nsH = p.nsH;
  e.nsW = p.nsW;
  e.sums = static_cast<A*>(p.sums);
  e.NC = uint64_t(p.N * p.C);
  e.M = uint64_t(p.M);
  e.numel = e.NC * e.M;
  e.M_div = FastDivmod(e.M);
  e.C_div = FastDivmod(uint64_t(p.C));
  e.W_div = FastDivmod(uint64_t(p.W));
  e.alpha = static_cast<A>(p.alpha);
  e.gain = static_cast<A>(p.gain);
  e.clamp = static_cast<A>(p.clamp);
  e.vectorized = vectorizable(p, V);
  const auto keeps_alignment = [](int64_t stride) { return (stride * int64_t(sizeof(T))) % kVectorBytes == 0; };
  if (p.noise == nullptr) e.noise_mode = kNoNoise;
  else if (!p.noise_flat) e.noise_mode = kStrided;
  else if (e.vectorized && is_aligned16(p.noise) && keeps_alignment(p.nsN) && keeps_alignment(p.nsC))
    e.noise_mode = kFlatVector;
  else e.noise_mode = kFlat;
  return e;
}

// The backward's grid for NC planes of M pixels, `elems` (V or 1) per access.
struct BackwardPlan {
  int tpp_shift;
  int64_t groups, chunk_px, splits;
};
BackwardPlan backward_plan(int64_t NC, int64_t M, int64_t elems, ModconvDevice dev) {
  // Threads per plane: about kUnroll vectors each per step, between a warp and the block.
  const int64_t per_thread = elems * kUnroll;
  int tpp_shift = 5;
  while (tpp_shift < 8 && (int64_t(1) << tpp_shift) * per_thread < M) ++tpp_shift;
  const int64_t slots = kThreads >> tpp_shift;
  const int64_t groups = (NC + slots - 1) / slots;
  const int64_t step_px = (int64_t(1) << tpp_shift) * per_thread;
  const int64_t steps = (M + step_px - 1) / step_px;
  // Enough blocks for two waves of the GPU, each plane cut into chunks of whole steps.
  const int64_t target = 2 * int64_t(resident_blocks(dev));
  const int64_t want = std::min(steps, std::max<int64_t>(1, (target + groups - 1) / groups));
  const int64_t chunk_px = ((steps + want - 1) / want) * step_px;
  return {tpp_shift, groups, chunk_px, (M + chunk_px - 1) / chunk_px};
}

template <Act ACT, typename T>
cudaError_t launch_forward(const ModconvEpilogueParams& p, ModconvDevice dev, cudaStream_t stream) {
  const EpilogueArgs<T> e = make_args<T>(p);
  const uint64_t items = e.vectorized ? e.numel / vector_size<T>() : e.numel;
  const uint64_t per_block = uint64_t(kThreads) * kUnroll;
  const unsigned blocks = unsigned(std::min<uint64_t>((items + per_block - 1) / per_block, resident_blocks(dev)));
  modconv_epilogue_forward_kernel<ACT, T><<<blocks, kThreads, 0, stream>>>(e);
  return cudaGetLastError();
}

template <Act ACT, typename T>
cudaError_t launch_backward(const ModconvEpilogueParams& p, void* workspace, ModconvDevice dev, cudaStream_t stream) {
  using A = typename acc_type<T>::type;
  EpilogueArgs<T> e = make_args<T>(p);
  const BackwardPlan b = backward_plan(int64_t(e.NC), int64_t(e.M), e.vectorized ? vector_size<T>() : 1, dev);
  const int64_t groups = b.groups;
  e.tpp_shift = b.tpp_shift;
  e.chunk_px = b.chunk_px;
  e.splits = b.splits;
  if (groups * e.splits > std::numeric_limits<int>::max()) return cudaErrorInvalidValue;  // checked before
  if (e.splits > 1) {
    if (workspace == nullptr) return cudaErrorInvalidValue;
    e.ws = static_cast<A*>(workspace);
  }
  modconv_epilogue_backward_kernel<ACT, T><<<unsigned(groups * e.splits), kThreads, 0, stream>>>(e);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (e.splits > 1) {
    const unsigned blocks = unsigned((e.NC + kSumThreads - 1) / kSumThreads);
    modconv_sum_chunks_kernel<A><<<blocks, kSumThreads, 0, stream>>>(e.ws, e.sums, e.NC, e.splits);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

}  // namespace

ModconvBackwardGrid modulated_conv2d_backward_grid(const ModconvEpilogueParams& p, DType dtype, ModconvDevice dev) {
  const int V = vector_elems(dtype);
  if (V == 0 || p.N * p.C * p.M <= 0 || !valid_device(dev)) return {0, 1};
  const BackwardPlan b = backward_plan(p.N * p.C, p.M, vectorizable(p, V) ? V : 1, dev);
  return {b.groups * b.splits, b.splits};
}

cudaError_t launch_modconv_epilogue_forward(const ModconvEpilogueParams& p, DType dtype, ModconvDevice dev,
                                            cudaStream_t stream) {
  if (p.N * p.C * p.M <= 0 || !valid_device(dev)) return cudaErrorInvalidValue;
  cudaError_t err = cudaErrorInvalidValue;  // stays for an unknown act (checked before)
  GANFAST_DISPATCH_DTYPE(dtype, scalar_t, dispatch_act(p.act, [&](auto act_c) {
    err = launch_forward<decltype(act_c)::value, scalar_t>(p, dev, stream);
  }));
  return err;
}

cudaError_t launch_modconv_epilogue_backward(const ModconvEpilogueParams& p, DType dtype, void* workspace,
                                             ModconvDevice dev, cudaStream_t stream) {
  if (p.N * p.C * p.M <= 0 || !valid_device(dev)) return cudaErrorInvalidValue;
  cudaError_t err = cudaErrorInvalidValue;  // stays for an unknown act (checked before)
  GANFAST_DISPATCH_DTYPE(dtype, scalar_t, dispatch_act(p.act, [&](auto act_c) {
    err = launch_backward<decltype(act_c)::value, scalar_t>(p, workspace, dev, stream);
  }));
  return err;
}

cudaError_t launch_modconv_demod(const ModconvDemodParams& p, DType dtype, cudaStream_t stream) {
  if (p.N * p.Cout <= 0 || p.Cout > std::numeric_limits<int>::max()) return cudaErrorInvalidValue;
  GANFAST_DISPATCH_DTYPE(dtype, scalar_t, {
    using A = typename acc_type<scalar_t>::type;
    modconv_demod_kernel<scalar_t><<<unsigned(p.Cout), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(p.weight), static_cast<const A*>(p.styles), static_cast<A*>(p.dcoef), p.N, p.Cout,
        p.Cin, p.K);
  });
  return cudaGetLastError();
}

}  // namespace ganfast
