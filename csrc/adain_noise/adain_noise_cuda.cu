// adain_noise on CUDA: same contract as adain_noise_cpu (see adain_noise.h), per-element math from
// adain_noise.h, bias_act_math.h and noise_rng.h.
//
// Work split. Every kernel runs 256-thread blocks over "plane slots": a block covers `slots`
// consecutive planes q = n * C + c (so a slot group may straddle two samples) and a chunk of their
// pixels; thread t serves slot (t >> slot_shift) & slot_mask and pixel row
// (t >> row_shift) & row_mask, and walks pixels row, row + rows, ... of the chunk.
//   NCHW (sP == 1): the threads of a plane are consecutive and run along its contiguous pixels,
//     tpp = 1 .. 256 threads per plane (about 4 pixels each below 1024 pixels), so a 4x4 map
//     takes 4 threads and a block serves 64 planes.
//   channels_last (sC == 1): the slots are consecutive channels (16, fewer when C < 16) and the
//     rows pixels, so a warp reads 16 channels x 2 pixels: whole 32-byte sectors even in fp16.
// A tile is K elements per thread (16 for float math, 8 for double), held in registers.
//
// Paths.
//   fused (the plane fits one tile: NCHW up to 64x64 (fp64: 2048 pixels), channels_last up to
//   16x16): one kernel reads x (and g) once, reduces in registers and writes everything.
//   split (larger planes, up to 1024x1024): each plane is cut into S chunks of whole tiles, S
//   picked to fill the GPU, one block per (slot group, chunk); blocks write per-chunk partials to
//   a workspace [N * C, S, 2], a one-warp-per-plane kernel combines them (fixed order: the result
//   is deterministic, no atomics), and an apply kernel re-reads x.
//     forward:  stats partials -> finalize (stats) -> apply (out)
//     backward: (sg, sgy) partials -> sum (dt, ds) -> apply (dx, (sdz, sdzn) partials) -> sum
//
// Statistics. Each thread keeps (count, mean, M2) of its own elements: exact two-pass over the K
// values of a tile in registers, merged across tiles with Chan's formula. A block then combines
// its threads' triples as mean = sum(count_i mean_i) / count and
// M2 = sum(M2_i + count_i (mean_i - mean)^2), and the finalize kernel combines chunks the same
// way: every term of M2 is non-negative, so the variance has no cancellation even when
// |mean| >> std. Sums are fp32 (fp64 for double x).
//
// Seeded noise is drawn in the kernels (noise_at), in the forward and again in the backward;
// no noise tensor is materialized.
//
// This file holds the kernels and their launch functions only (no torch header: see
// common/cuda_launch.h); argument checks and the allocation of the outputs, stats and the split
// path's workspace are in adain_noise_cuda_host.cpp.
#include "adain_noise/adain_noise_cuda_launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <limits>

#include "common/fast_divmod.h"

namespace ganfast {
namespace {

// Every kernel states __launch_bounds__(kThreads, 1): with the minimum occupancy stated, ptxas
// keeps a register tile in registers instead of spilling a few words to reach the next occupancy
// step (which it otherwise does on sm_90 for the fused backward).
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kFinalizeThreads = 256;  // one warp per plane

// Elements per thread in one register tile (what the fused kernels hold of a plane), and in one
// step of the streaming kernels (loads in flight per thread; a divisor of tile_regs, so chunks of
// whole tiles are whole steps).
template <typename A> constexpr int tile_regs() { return sizeof(A) == sizeof(double) ? 8 : 16; }
template <typename A> constexpr int step_regs() { return 4; }

// ---- storage loads and stores (fp16 / bf16 through the CUDA types) ----

__device__ __forceinline__ float load_acc(const float* p) { return __ldg(p); }
__device__ __forceinline__ double load_acc(const double* p) { return __ldg(p); }
__device__ __forceinline__ float load_acc(const c10::Half* p) {
  return __half2float(__ldg(reinterpret_cast<const __half*>(p)));
}
__device__ __forceinline__ float load_acc(const c10::BFloat16* p) {
  return __bfloat162float(__ldg(reinterpret_cast<const __nv_bfloat16*>(p)));
}
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(c10::Half* p, float v) { *reinterpret_cast<__half*>(p) = __float2half_rn(v); }
__device__ __forceinline__ void store(c10::BFloat16* p, float v) {
  *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v);
}

__device__ __forceinline__ float rsqrt_acc(float v) { return rsqrtf(v); }
__device__ __forceinline__ double rsqrt_acc(double v) { return ::rsqrt(v); }

// ---- the launch shape ----

// Thread t of a block serves slot (t >> slot_shift) & slot_mask and pixel row
// (t >> row_shift) & row_mask; the threads of one slot differ only in the row bits.
struct Lanes {
  int slot_shift, slot_mask, row_shift, row_mask;
  __host__ __device__ int rows() const { return row_mask + 1; }
  __host__ __device__ int slots() const { return slot_mask + 1; }
  __host__ __device__ unsigned row_bits() const { return unsigned(row_mask) << row_shift; }
};

// Everything the kernels read; A is the accumulation type.
template <typename T>
struct Args {
  using A = typename acc_type<T>::type;
  const T* x;        // [N, C, M] strides (sN, sC, sP)
  const T* g;        // like x (backward)
  T* out;            // like x: out or dx
  const A* s;        // [N * C]
  const A* t;        // [N * C] (forward)
  const T* noise;    // [Nn, M] or nullptr
  const A* ns;       // [C] or nullptr
  const A* b;        // [C] or nullptr
  A* stats;          // [N * C, 2] mean, rstd: written by the forward, read by the backward
  A* ds;             // [N * C] sum g * yhat (backward)
  A* dt;             // [N * C] sum g
  A* sdz;            // [N * C] sum dz
  A* sdzn;           // [N * C] sum dz * noise
  A* ws;             // [N * C, S, 2] per-chunk partials (split path)
  int64_t NC, M, sN, sC, sP, noise_sN;
  FastDivmod C;      // q -> (n, c)
  uint64_t seed;
  bool seeded;
  A alpha, gain, eps;
  Lanes lanes;
  int64_t chunk_px;  // pixels per plane one block covers (a whole number of tiles)
  int64_t splits;    // chunks per plane, S
};

// This thread's plane and where its data sits.
template <typename T>
struct Slot {
  using A = typename acc_type<T>::type;
  int64_t q;         // plane n * C + c (plane 0 for an idle slot past the last plane)
  bool valid;
  int row;
  int64_t base;      // storage offset of (n, c, pixel 0)
  const T* noise;    // this sample's noise plane, or nullptr
  NoiseKeys keys;    // this sample's noise keys (seeded)
  A ns, b;
};

struct BlockPos {
  int64_t chunk, group;  // chunk of the planes, group of `slots` planes
};

// 32-bit division (the grid has < 2^31 blocks): a 64-bit one is a called subroutine whose ABI
// costs spills.
__device__ __forceinline__ BlockPos block_pos(int64_t splits) {
  const unsigned i = blockIdx.x, s = static_cast<unsigned>(splits);
  return {int64_t(i % s), int64_t(i / s)};
}

template <typename T>
__device__ __forceinline__ Slot<T> make_slot(const Args<T>& a, int64_t group) {
  using A = typename acc_type<T>::type;
  Slot<T> sl;
  const int idx = (threadIdx.x >> a.lanes.slot_shift) & a.lanes.slot_mask;
  sl.row = (threadIdx.x >> a.lanes.row_shift) & a.lanes.row_mask;
  const int64_t q = group * a.lanes.slots() + idx;
  sl.valid = q < a.NC;
  sl.q = sl.valid ? q : 0;
  uint64_t n, c;
  a.C.divmod(static_cast<uint64_t>(sl.q), n, c);
  sl.base = int64_t(n) * a.sN + int64_t(c) * a.sC;
  sl.noise = a.noise ? a.noise + int64_t(n) * a.noise_sN : nullptr;
  sl.keys = a.seeded ? noise_keys(a.seed, static_cast<uint32_t>(n)) : NoiseKeys{0u, 0u};
  sl.ns = a.ns ? a.ns[c] : A(1);
  sl.b = a.b ? a.b[c] : A(0);
  return sl;
}

// Pixel of element k of this thread's part of the tile starting at p0.
template <typename T>
__device__ __forceinline__ int64_t pixel(const Args<T>& a, const Slot<T>& sl, int64_t p0, int k) {
  return p0 + sl.row + int64_t(k) * a.lanes.rows();
}

// z and the noise of this thread's elements of the tile at p0; elements at pixels >= lim are
// not read (z = b, noise 0).
template <typename T, int K, typename A = typename acc_type<T>::type>
__device__ __forceinline__ void load_z(const Args<T>& a, const Slot<T>& sl, int64_t p0, int64_t lim,
                                       A (&z)[K], A (&nz)[K]) {
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t p = pixel(a, sl, p0, k);
    A xv = A(0), nv = A(0);
    if (p < lim) {
      xv = load_acc(a.x + sl.base + p * a.sP);
      if (a.seeded) nv = noise_at<A>(sl.keys, static_cast<uint32_t>(p));
      else if (sl.noise) nv = load_acc(sl.noise + p);
    }
    nz[k] = nv;
    z[k] = adain_z(xv, nv, sl.ns, sl.b);
  }
}

template <typename T, int K, typename A = typename acc_type<T>::type>
__device__ __forceinline__ void load_g(const Args<T>& a, const Slot<T>& sl, int64_t p0, int64_t lim, A (&g)[K]) {
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t p = pixel(a, sl, p0, k);
    g[k] = p < lim ? load_acc(a.g + sl.base + p * a.sP) : A(0);
  }
}

// Sums each of v[0..V) over the threads that share this thread's plane; all of them get the
// same bits (a xor butterfly inside the warp, then the warps in a fixed order). smem: [V][256].
template <int V, typename A>
__device__ __forceinline__ void plane_sum(A (&v)[V], unsigned row_bits, A* smem) {
  const unsigned lo = row_bits & 31u, hi = row_bits >> 5;
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    if (lo & off) {  // the same for the whole block
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] += __shfl_xor_sync(0xffffffffu, v[j], off);
    }
  }
  if (hi == 0) return;
  const int t = threadIdx.x, lane = t & 31, w = t >> 5;
#pragma unroll
  for (int j = 0; j < V; ++j) smem[j * kThreads + t] = v[j];
  __syncthreads();
#pragma unroll
  for (int j = 0; j < V; ++j) {
    A total = A(0);
#pragma unroll
    for (int u = 0; u < kWarps; ++u)
      if (((unsigned(u) ^ unsigned(w)) & ~hi) == 0) total += smem[j * kThreads + u * 32 + lane];
    v[j] = total;
  }
  __syncthreads();  // smem is reused by the next call
}

template <Act ACT, typename A>
__device__ __forceinline__ A act_y(A z, A alpha, A gain) {
  return gain * ActFn<ACT, A>::f(z, alpha);
}

// ---- forward ----

// Statistics of each plane's chunk. Fused (one tile per plane, one chunk): also normalizes from
// registers and writes out and stats. Otherwise writes the chunk's (mean, M2) to ws.
template <Act ACT, typename T>
__global__ void __launch_bounds__(kThreads, 1) adain_forward_stats_kernel(const Args<T> a, bool fused) {
  using A = typename acc_type<T>::type;
  constexpr int K = tile_regs<A>();
  __shared__ A smem[kThreads];
  const BlockPos bp = block_pos(a.splits);
  const Slot<T> sl = make_slot(a, bp.group);
  const int64_t tile_px = int64_t(K) * a.lanes.rows();
  const int64_t p_begin = bp.chunk * a.chunk_px, p_end = min(a.M, p_begin + a.chunk_px);
  const int64_t lim = sl.valid ? p_end : 0;
  A cnt = A(0), mean = A(0), m2 = A(0);  // this thread's elements so far
  A y[K], nz[K];
  for (int64_t p0 = p_begin; p0 < p_end; p0 += tile_px) {
    load_z<T, K>(a, sl, p0, lim, y, nz);
    A sum = A(0);
    int n_t = 0;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (pixel(a, sl, p0, k) < lim) {
        y[k] = act_y<ACT>(y[k], a.alpha, a.gain);
        sum += y[k];
        ++n_t;
      }
    }
    if (n_t > 0) {
      const A c_t = A(n_t), mean_t = sum / c_t;
      A sq = A(0);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const A d = y[k] - mean_t;
        if (pixel(a, sl, p0, k) < lim) sq += d * d;
      }
      const A tot = cnt + c_t, delta = mean_t - mean;
      mean += delta * (c_t / tot);
      m2 += sq + delta * delta * (cnt * c_t / tot);
      cnt = tot;
    }
  }
  // Combine the threads of each plane: count-weighted mean, then M2 about it.
  const A count = A(p_end - p_begin);
  A v[1] = {cnt * mean};
  plane_sum(v, a.lanes.row_bits(), smem);
  const A bmean = v[0] / count;
  const A d = mean - bmean;
  v[0] = m2 + cnt * d * d;
  plane_sum(v, a.lanes.row_bits(), smem);
  const A bm2 = v[0];
  if (fused) {
    const A rstd = rsqrt_acc(bm2 / count + a.eps);
    const A k_s = rstd * a.s[sl.q], t = a.t[sl.q];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t p = pixel(a, sl, p_begin, k);
      if (p < lim) store(a.out + sl.base + p * a.sP, (y[k] - bmean) * k_s + t);
    }
    if (sl.valid && sl.row == 0) {
      a.stats[2 * sl.q] = bmean;
      a.stats[2 * sl.q + 1] = rstd;
    }
  } else if (sl.valid && sl.row == 0) {
    A* w = a.ws + 2 * (sl.q * a.splits + bp.chunk);
    w[0] = bmean;
    w[1] = bm2;
  }
}

// stats[q] = (mean, rstd) from the S chunk partials (mean_i, M2_i) of plane q; one warp per plane.
template <typename A>
__global__ void __launch_bounds__(kFinalizeThreads)
adain_forward_finalize_kernel(const A* __restrict__ ws, A* __restrict__ stats, int64_t NC, int64_t splits,
                              int64_t M, int64_t chunk_px, A eps) {
  const int64_t q = int64_t(blockIdx.x) * (kFinalizeThreads / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (q >= NC) return;  // whole warps
  const A* w = ws + 2 * q * splits;
  A sum = A(0);
  for (int64_t i = lane; i < splits; i += 32) sum += A(min(chunk_px, M - i * chunk_px)) * w[2 * i];
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const A mean = sum / A(M);
  A m2 = A(0);
  for (int64_t i = lane; i < splits; i += 32) {
    const A d = w[2 * i] - mean;
    m2 += w[2 * i + 1] + A(min(chunk_px, M - i * chunk_px)) * d * d;
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) m2 += __shfl_xor_sync(0xffffffffu, m2, off);
  if (lane == 0) {
    stats[2 * q] = mean;
    stats[2 * q + 1] = rsqrt_acc(m2 / A(M) + eps);
  }
}

// out = (y - mean) * rstd * s + t over each block's chunk, y recomputed from x.
template <Act ACT, typename T>
__global__ void __launch_bounds__(kThreads, 1) adain_forward_apply_kernel(const Args<T> a) {
  using A = typename acc_type<T>::type;
  constexpr int K = step_regs<A>();
  const BlockPos bp = block_pos(a.splits);
  const Slot<T> sl = make_slot(a, bp.group);
  if (!sl.valid) return;  // no block-wide sync below
  const int64_t step_px = int64_t(K) * a.lanes.rows();
  const int64_t p_begin = bp.chunk * a.chunk_px, p_end = min(a.M, p_begin + a.chunk_px);
  const A mean = a.stats[2 * sl.q], rstd = a.stats[2 * sl.q + 1];
  const A k_s = rstd * a.s[sl.q], t = a.t[sl.q];
  A z[K], nz[K];
  for (int64_t p0 = p_begin; p0 < p_end; p0 += step_px) {
    load_z<T, K>(a, sl, p0, p_end, z, nz);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t p = pixel(a, sl, p0, k);
      if (p < p_end) store(a.out + sl.base + p * a.sP, (act_y<ACT>(z[k], a.alpha, a.gain) - mean) * k_s + t);
    }
  }
}

// ---- backward ----

// The whole backward of planes that fit one tile: x, g (and noise) read once, into registers.
template <Act ACT, typename T>
__global__ void __launch_bounds__(kThreads, 1) adain_backward_fused_kernel(const Args<T> a) {
  using A = typename acc_type<T>::type;
  constexpr int K = tile_regs<A>();
  __shared__ A smem[2 * kThreads];
  const Slot<T> sl = make_slot(a, blockIdx.x);
  const int64_t lim = sl.valid ? a.M : 0;
  const A mean = a.stats[2 * sl.q], rstd = a.stats[2 * sl.q + 1];
  A z[K], nz[K], g[K], h[K];
  load_z<T, K>(a, sl, 0, lim, z, nz);
  load_g<T, K>(a, sl, 0, lim, g);
  A v[2] = {A(0), A(0)};  // sg, sgy
#pragma unroll
  for (int k = 0; k < K; ++k) {
    h[k] = (act_y<ACT>(z[k], a.alpha, a.gain) - mean) * rstd;
    if (pixel(a, sl, 0, k) < lim) {
      v[0] += g[k];
      v[1] += g[k] * h[k];
    }
  }
  plane_sum(v, a.lanes.row_bits(), smem);
  const A sg = v[0], sgy = v[1];
  const A inv_m = A(1) / A(a.M);
  const A k_s = rstd * a.s[sl.q], mg = sg * inv_m, mgy = sgy * inv_m;
  v[0] = v[1] = A(0);  // sdz, sdzn
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t p = pixel(a, sl, 0, k);
    if (p < lim) {
      const A dz = adain_dz<ACT, A>(z[k], g[k], h[k], a.alpha, a.gain, k_s, mg, mgy);
      store(a.out + sl.base + p * a.sP, dz);
      v[0] += dz;
      v[1] += dz * nz[k];
    }
  }
  plane_sum(v, a.lanes.row_bits(), smem);
  if (sl.valid && sl.row == 0) {
    a.ds[sl.q] = sgy;
    a.dt[sl.q] = sg;
    a.sdz[sl.q] = v[0];
    a.sdzn[sl.q] = v[1];
  }
}

// Per-chunk (sum g, sum g * yhat) into ws.
template <Act ACT, typename T>
__global__ void __launch_bounds__(kThreads, 1) adain_backward_partial_kernel(const Args<T> a) {
  using A = typename acc_type<T>::type;
  constexpr int K = step_regs<A>();
  __shared__ A smem[2 * kThreads];
  const BlockPos bp = block_pos(a.splits);
  const Slot<T> sl = make_slot(a, bp.group);
  const int64_t step_px = int64_t(K) * a.lanes.rows();
  const int64_t p_begin = bp.chunk * a.chunk_px, p_end = min(a.M, p_begin + a.chunk_px);
  const int64_t lim = sl.valid ? p_end : 0;
  const A mean = a.stats[2 * sl.q], rstd = a.stats[2 * sl.q + 1];
  A v[2] = {A(0), A(0)};
  A z[K], nz[K], g[K];
  for (int64_t p0 = p_begin; p0 < p_end; p0 += step_px) {
    load_z<T, K>(a, sl, p0, lim, z, nz);
    load_g<T, K>(a, sl, p0, lim, g);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (pixel(a, sl, p0, k) < lim) {
        v[0] += g[k];
        v[1] += g[k] * ((act_y<ACT>(z[k], a.alpha, a.gain) - mean) * rstd);
      }
    }
  }
  plane_sum(v, a.lanes.row_bits(), smem);
  if (sl.valid && sl.row == 0) {
    A* w = a.ws + 2 * (sl.q * a.splits + bp.chunk);
    w[0] = v[0];
    w[1] = v[1];
  }
}

// dx over each chunk given the plane sums dt (sg) and ds (sgy); per-chunk (sum dz, sum dz * noise)
// into ws.
template <Act ACT, typename T>
__global__ void __launch_bounds__(kThreads, 1) adain_backward_apply_kernel(const Args<T> a) {
  using A = typename acc_type<T>::type;
  constexpr int K = step_regs<A>();
  __shared__ A smem[2 * kThreads];
  const BlockPos bp = block_pos(a.splits);
  const Slot<T> sl = make_slot(a, bp.group);
  const int64_t step_px = int64_t(K) * a.lanes.rows();
  const int64_t p_begin = bp.chunk * a.chunk_px, p_end = min(a.M, p_begin + a.chunk_px);
  const int64_t lim = sl.valid ? p_end : 0;
  const A mean = a.stats[2 * sl.q], rstd = a.stats[2 * sl.q + 1];
  const A inv_m = A(1) / A(a.M);
  const A k_s = rstd * a.s[sl.q], mg = a.dt[sl.q] * inv_m, mgy = a.ds[sl.q] * inv_m;
  A v[2] = {A(0), A(0)};
  A z[K], nz[K], g[K];
  for (int64_t p0 = p_begin; p0 < p_end; p0 += step_px) {
    load_z<T, K>(a, sl, p0, lim, z, nz);
    load_g<T, K>(a, sl, p0, lim, g);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t p = pixel(a, sl, p0, k);
      if (p < lim) {
        const A h = (act_y<ACT>(z[k], a.alpha, a.gain) - mean) * rstd;
        const A dz = adain_dz<ACT, A>(z[k], g[k], h, a.alpha, a.gain, k_s, mg, mgy);
        store(a.out + sl.base + p * a.sP, dz);
        v[0] += dz;
        v[1] += dz * nz[k];
      }
    }
  }
  plane_sum(v, a.lanes.row_bits(), smem);
  if (sl.valid && sl.row == 0) {
    A* w = a.ws + 2 * (sl.q * a.splits + bp.chunk);
    w[0] = v[0];
    w[1] = v[1];
  }
}

// out0[q], out1[q] = the sums over the S chunks of the pairs ws[q, :, 0], ws[q, :, 1]; one warp
// per plane, a fixed order.
template <typename A>
__global__ void __launch_bounds__(kFinalizeThreads)
adain_sum_partials_kernel(const A* __restrict__ ws, A* __restrict__ out0, A* __restrict__ out1, int64_t NC,
                          int64_t splits) {
  const int64_t q = int64_t(blockIdx.x) * (kFinalizeThreads / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (q >= NC) return;  // whole warps
  const A* w = ws + 2 * q * splits;
  A s0 = A(0), s1 = A(0);
  for (int64_t i = lane; i < splits; i += 32) {
    s0 += w[2 * i];
    s1 += w[2 * i + 1];
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    s0 += __shfl_xor_sync(0xffffffffu, s0, off);
    s1 += __shfl_xor_sync(0xffffffffu, s1, off);
  }
  if (lane == 0) {
    out0[q] = s0;
    out1[q] = s1;
  }
}

// ---- host side ----

int log2_exact(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}

struct Plan {
  Lanes lanes;
  int64_t chunk_px, splits, groups;
  bool fused;
  unsigned blocks() const { return static_cast<unsigned>(groups * splits); }
};

template <typename A>
cudaError_t plan_launch(const AdainNoiseParams& p, Plan* plan) {
  constexpr int K = tile_regs<A>();
  Plan pl{};
  if (p.sP == 1) {
    // NCHW: threads per plane, about 4 pixels each, at most the block.
    int tpp = 1;
    while (tpp < kThreads && int64_t(tpp) * 4 < p.M) tpp *= 2;
    pl.lanes = Lanes{log2_exact(tpp), kThreads / tpp - 1, 0, tpp - 1};
  } else {
    // channels_last: up to 16 consecutive channels per block row.
    int ct = 1;
    while (ct < 16 && ct < p.C) ct *= 2;
    pl.lanes = Lanes{0, ct - 1, log2_exact(ct), kThreads / ct - 1};
  }
  const int64_t NC = p.N * p.C;
  const int64_t tile_px = int64_t(K) * pl.lanes.rows();
  const int64_t tiles = (p.M + tile_px - 1) / tile_px;
  pl.groups = (NC + pl.lanes.slots() - 1) / pl.lanes.slots();
  if (tiles <= 1) {
    pl.fused = true;
    pl.chunk_px = tile_px;
    pl.splits = 1;
  } else {
    // Enough blocks for two waves of the GPU, in chunks of whole tiles.
    int device = 0, sms = 0, threads_per_sm = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess)
      err = cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device);
    if (err != cudaSuccess) return err;
    const int64_t target = 2 * int64_t(sms) * (threads_per_sm / kThreads);
    const int64_t want = std::min(tiles, std::max<int64_t>(1, (target + pl.groups - 1) / pl.groups));
    const int64_t tiles_per_chunk = (tiles + want - 1) / want;
    pl.fused = false;
    pl.chunk_px = tiles_per_chunk * tile_px;
    pl.splits = (p.M + pl.chunk_px - 1) / pl.chunk_px;
  }
  *plan = pl;
  return cudaSuccess;
}

// plan_launch for a launch: also checks the block count (the host file checks it first, with a
// message, through adain_noise_launch_info).
template <typename A>
cudaError_t plan_for_launch(const AdainNoiseParams& p, Plan* plan) {
  const cudaError_t err = plan_launch<A>(p, plan);
  if (err != cudaSuccess) return err;
  return plan->groups * plan->splits <= std::numeric_limits<int>::max() ? cudaSuccess : cudaErrorInvalidValue;
}

template <typename T>
Args<T> make_args(const AdainNoiseParams& p, const Plan& pl) {
  using A = typename acc_type<T>::type;
  Args<T> a{};
  a.x = static_cast<const T*>(p.x);
  a.g = static_cast<const T*>(p.g);
  a.out = static_cast<T*>(p.out);
  a.s = static_cast<const A*>(p.s);
  a.t = static_cast<const A*>(p.t);
  a.noise = static_cast<const T*>(p.noise);
  a.ns = static_cast<const A*>(p.ns);
  a.b = static_cast<const A*>(p.b);
  a.stats = static_cast<A*>(p.stats);
  a.ds = static_cast<A*>(p.ds);
  a.dt = static_cast<A*>(p.dt);
  a.sdz = static_cast<A*>(p.sdz);
  a.sdzn = static_cast<A*>(p.sdzn);
  a.NC = p.N * p.C;
  a.M = p.M;
  a.sN = p.sN;
  a.sC = p.sC;
  a.sP = p.sP;
  a.noise_sN = p.noise_sN;
  a.C = FastDivmod(static_cast<uint64_t>(p.C));
  a.seeded = p.seed >= 0;
  a.seed = a.seeded ? static_cast<uint64_t>(p.seed) : 0;
  a.alpha = static_cast<A>(p.alpha);
  a.gain = static_cast<A>(p.gain);
  a.eps = static_cast<A>(p.eps);
  a.lanes = pl.lanes;
  a.chunk_px = pl.chunk_px;
  a.splits = pl.splits;
  return a;
}

unsigned finalize_blocks(int64_t NC) {
  constexpr int per_block = kFinalizeThreads / 32;
  return static_cast<unsigned>((NC + per_block - 1) / per_block);
}

// Returns from the launch function when the last launch failed.
#define ADAIN_RETURN_ON_LAUNCH_ERROR()                 \
  do {                                                 \
    const cudaError_t launch_err_ = cudaGetLastError(); \
    if (launch_err_ != cudaSuccess) return launch_err_; \
  } while (0)

template <Act ACT, typename T>
cudaError_t launch_forward(const AdainNoiseParams& p, void* workspace, cudaStream_t stream) {
  using A = typename acc_type<T>::type;
  Plan pl;
  const cudaError_t err = plan_for_launch<A>(p, &pl);
  if (err != cudaSuccess) return err;
  Args<T> a = make_args<T>(p, pl);
  if (pl.fused) {
    adain_forward_stats_kernel<ACT, T><<<pl.blocks(), kThreads, 0, stream>>>(a, true);
    return cudaGetLastError();
  }
  if (workspace == nullptr) return cudaErrorInvalidValue;
  a.ws = static_cast<A*>(workspace);
  adain_forward_stats_kernel<ACT, T><<<pl.blocks(), kThreads, 0, stream>>>(a, false);
  ADAIN_RETURN_ON_LAUNCH_ERROR();
  adain_forward_finalize_kernel<A><<<finalize_blocks(a.NC), kFinalizeThreads, 0, stream>>>(
      a.ws, a.stats, a.NC, pl.splits, a.M, pl.chunk_px, a.eps);
  ADAIN_RETURN_ON_LAUNCH_ERROR();
  adain_forward_apply_kernel<ACT, T><<<pl.blocks(), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <Act ACT, typename T>
cudaError_t launch_backward(const AdainNoiseParams& p, void* workspace, cudaStream_t stream) {
  using A = typename acc_type<T>::type;
  Plan pl;
  const cudaError_t err = plan_for_launch<A>(p, &pl);
  if (err != cudaSuccess) return err;
  Args<T> a = make_args<T>(p, pl);
  if (pl.fused) {
    adain_backward_fused_kernel<ACT, T><<<pl.blocks(), kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  }
  if (workspace == nullptr) return cudaErrorInvalidValue;
  a.ws = static_cast<A*>(workspace);
  adain_backward_partial_kernel<ACT, T><<<pl.blocks(), kThreads, 0, stream>>>(a);
  ADAIN_RETURN_ON_LAUNCH_ERROR();
  adain_sum_partials_kernel<A><<<finalize_blocks(a.NC), kFinalizeThreads, 0, stream>>>(a.ws, a.dt, a.ds, a.NC,
                                                                                     pl.splits);
  ADAIN_RETURN_ON_LAUNCH_ERROR();
  adain_backward_apply_kernel<ACT, T><<<pl.blocks(), kThreads, 0, stream>>>(a);
  ADAIN_RETURN_ON_LAUNCH_ERROR();
  adain_sum_partials_kernel<A><<<finalize_blocks(a.NC), kFinalizeThreads, 0, stream>>>(a.ws, a.sdz, a.sdzn, a.NC,
                                                                                     pl.splits);
  return cudaGetLastError();
}

#undef ADAIN_RETURN_ON_LAUNCH_ERROR

// What the launch functions need of p (checked by the host file already): a known act, a
// non-empty x (FastDivmod needs C >= 1).
bool launchable(const AdainNoiseParams& p) {
  return p.act >= 0 && p.act < kNumActs && p.N >= 1 && p.C >= 1 && p.M >= 1;
}

}  // namespace

cudaError_t adain_noise_launch_info(const AdainNoiseParams& p, DType dtype, AdainNoiseLaunchInfo* info) {
  if (!launchable(p)) return cudaErrorInvalidValue;
  Plan pl{};
  cudaError_t err = cudaSuccess;
  GANFAST_DISPATCH_DTYPE(dtype, scalar_t, { err = plan_launch<typename acc_type<scalar_t>::type>(p, &pl); });
  if (err != cudaSuccess) return err;
  info->blocks = pl.groups * pl.splits;
  info->workspace_elems = pl.fused ? 0 : p.N * p.C * pl.splits * 2;
  return cudaSuccess;
}

cudaError_t launch_adain_noise_forward(const AdainNoiseParams& p, DType dtype, void* workspace,
                                       cudaStream_t stream) {
  if (!launchable(p)) return cudaErrorInvalidValue;
  cudaError_t err = cudaSuccess;
  GANFAST_DISPATCH_DTYPE(dtype, scalar_t, {
    dispatch_act(p.act, [&](auto a) { err = launch_forward<decltype(a)::value, scalar_t>(p, workspace, stream); });
  });
  return err;
}

cudaError_t launch_adain_noise_backward(const AdainNoiseParams& p, DType dtype, void* workspace,
                                        cudaStream_t stream) {
  if (!launchable(p)) return cudaErrorInvalidValue;
  cudaError_t err = cudaSuccess;
  GANFAST_DISPATCH_DTYPE(dtype, scalar_t, {
    dispatch_act(p.act, [&](auto a) { err = launch_backward<decltype(a)::value, scalar_t>(p, workspace, stream); });
  });
  return err;
}

}  // namespace ganfast
