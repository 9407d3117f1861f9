// spectral_norm's two passes over W on CUDA (the contract in spectral_norm.h). Float accumulation;
// fp16 / bf16 / fp32 W (no fp64).
//
// matvec_gram: block b owns rows [b * G, b * G + G). Phase 1: a warp per row takes the row's dot
// products with kMaxJ directions of v at a time (16-byte loads where K and the pointers allow,
// warp-shuffle reduction in a fixed order) and writes t and the block's coefficients (shared).
// Phase 2, when gram: a thread per N columns walks the block's rows again (just read: in L2 or
// L1) and writes the block's partial s[b, j, cols] = sum_r t[j, r] W[r, cols] to a partials
// buffer [blocks, k, K] (straight into s when there is one block); sum_partials_kernel then adds
// the blocks' partials in block order (deterministic, no atomics). G is chosen so there are about
// two blocks per SM.
//
// matvec_t is phase 2 with u as the coefficients, over a grid of column tiles (kThreads * N
// columns) by row groups (sized to about four blocks per SM) by groups of kMaxJ directions; row
// groups' partials are added the same way (none when there is one group).
//
// This file holds the kernels and their launch functions only (no torch headers, see
// common/cuda_launch.h); spectral_norm_cuda_host.cpp checks the arguments, allocates the outputs
// and the partials buffer (sized by spectral_norm_*_partials below) and passes the SM count.
#include "spectral_norm/spectral_norm_cuda_launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace ganfast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxJ = 4;                // directions per sweep
constexpr int kMinBlockRows = 8;        // matvec_gram rows per block: one per warp at least,
constexpr int kMaxBlockRows = 64;       // at most this (the coefficients in shared memory)
constexpr int kBlocksPerSm = 2;         // matvec_gram's target
constexpr int kMinGroupRows = 16;       // matvec_t rows per group, at least
constexpr int kTBlocksPerSm = 4;        // matvec_t's target
constexpr int kMaxGridYZ = 65535;      // gridDim.y and gridDim.z at most

// N consecutive elements of W as float: one 16-byte load when N > 1 (N = 16 / sizeof(T)).
template <typename T, int N>
__device__ __forceinline__ void load_w(const T* __restrict__ p, float (&f)[N]) {
  if constexpr (N == 1) {
    f[0] = static_cast<float>(p[0]);
  } else if constexpr (std::is_same<T, float>::value) {
    static_assert(N == 4, "16-byte loads of float");
    const float4 q = __ldg(reinterpret_cast<const float4*>(p));
    f[0] = q.x;
    f[1] = q.y;
    f[2] = q.z;
    f[3] = q.w;
  } else {
    static_assert(N == 8 && sizeof(T) == 2, "16-byte loads of fp16 / bf16");
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (std::is_same<T, c10::BFloat16>::value) {  // bf16: a float's upper half
        f[2 * i] = __uint_as_float(words[i] << 16);
        f[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
      } else {
        f[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[i] & 0xffffu)));
        f[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[i] >> 16)));
      }
    }
  }
}

// N consecutive floats (16-byte loads when N > 1).
template <int N>
__device__ __forceinline__ void load_f(const float* __restrict__ p, float (&f)[N]) {
  if constexpr (N == 1) {
    f[0] = __ldg(p);
  } else {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const float4 q = __ldg(reinterpret_cast<const float4*>(p + i));
      f[i] = q.x;
      f[i + 1] = q.y;
      f[i + 2] = q.z;
      f[i + 3] = q.w;
    }
  }
}

template <int N>
__device__ __forceinline__ void store_f(float* p, const float (&f)[N]) {
  if constexpr (N == 1) {
    p[0] = f[0];
  } else {
#pragma unroll
    for (int i = 0; i < N; i += 4) *reinterpret_cast<float4*>(p + i) = make_float4(f[i], f[i + 1], f[i + 2], f[i + 3]);
  }
}

// out[jj * ld_out + e] = sum_{r < nrows} coef(jj, r) * w[r * K + e] for jj < J (<= kMaxJ), e < N:
// one thread's N columns of J directions. w points at row 0, column c; out at direction 0, column c.
template <typename T, int N, typename Coef>
__device__ __forceinline__ void column_sums(const T* __restrict__ w, int64_t K, int nrows, const Coef& coef, int J,
                                            float* out, int64_t ld_out) {
  float acc[kMaxJ][N];
#pragma unroll
  for (int jj = 0; jj < kMaxJ; ++jj)
#pragma unroll
    for (int e = 0; e < N; ++e) acc[jj][e] = 0.0f;
#pragma unroll 4
  for (int r = 0; r < nrows; ++r) {
    float wv[N];
    load_w<T, N>(w + r * K, wv);
#pragma unroll
    for (int jj = 0; jj < kMaxJ; ++jj) {
      if (jj < J) {
        const float cf = coef(jj, r);
#pragma unroll
        for (int e = 0; e < N; ++e) acc[jj][e] = fmaf(cf, wv[e], acc[jj][e]);
      }
    }
  }
#pragma unroll
  for (int jj = 0; jj < kMaxJ; ++jj)
    if (jj < J) store_f<N>(out + jj * ld_out, acc[jj]);
}

// w [O, K], v [k, K], t [k, O]; partial [gridDim.x, k, K] (s itself when gridDim.x == 1), or
// nullptr without gram. Block b: rows [b * rows_per_block, ...).
template <typename T, int N>
__global__ void __launch_bounds__(kThreads)
matvec_gram_kernel(const T* __restrict__ w, const float* __restrict__ v, float* __restrict__ t, float* partial,
                   int64_t O, int64_t K, int k, int rows_per_block) {
  __shared__ float coef[kMaxJ][kMaxBlockRows];
  const int64_t r0 = int64_t(blockIdx.x) * rows_per_block;
  const int nrows = static_cast<int>(O - r0 < rows_per_block ? O - r0 : rows_per_block);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int j0 = 0; j0 < k; j0 += kMaxJ) {
    const int J = min(kMaxJ, k - j0);
    for (int i = warp; i < nrows; i += kWarps) {
      const T* row = w + (r0 + i) * K;
      float acc[kMaxJ];
#pragma unroll
      for (int jj = 0; jj < kMaxJ; ++jj) acc[jj] = 0.0f;
#pragma unroll 4
      for (int64_t c = int64_t(lane) * N; c < K; c += 32 * N) {
        float wv[N];
        load_w<T, N>(row + c, wv);
#pragma unroll
        for (int jj = 0; jj < kMaxJ; ++jj) {
          if (jj < J) {
            float xv[N];
            load_f<N>(v + (j0 + jj) * K + c, xv);
#pragma unroll
            for (int e = 0; e < N; ++e) acc[jj] = fmaf(xv[e], wv[e], acc[jj]);
          }
        }
      }
#pragma unroll
      for (int jj = 0; jj < kMaxJ; ++jj) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc[jj] += __shfl_xor_sync(0xffffffffu, acc[jj], off);
      }
      if (lane == 0) {
#pragma unroll
        for (int jj = 0; jj < kMaxJ; ++jj) {
          if (jj < J) {
            coef[jj][i] = acc[jj];
            t[(j0 + jj) * O + r0 + i] = acc[jj];
          }
        }
      }
    }
    if (partial == nullptr) continue;  // the same for the whole block
    __syncthreads();
    float* out = partial + (int64_t(blockIdx.x) * k + j0) * K;
    const auto block_coef = [](int jj, int r) { return coef[jj][r]; };
    for (int64_t c = int64_t(threadIdx.x) * N; c < K; c += int64_t(kThreads) * N)
      column_sums<T, N>(w + r0 * K + c, K, nrows, block_coef, J, out + c, K);
    __syncthreads();  // the next group rewrites coef
  }
}

// w [O, K], u [k, O]; partial [gridDim.y, k, K] (s itself when gridDim.y == 1). Block (x, y, z):
// columns [x * kThreads * N, ...) of rows [y * rows_per_group, ...), directions [z * kMaxJ, ...).
template <typename T, int N>
__global__ void __launch_bounds__(kThreads)
matvec_t_kernel(const T* __restrict__ w, const float* __restrict__ u, float* partial, int64_t O, int64_t K, int k,
                int rows_per_group) {
  const int64_t c = (int64_t(blockIdx.x) * kThreads + threadIdx.x) * N;
  if (c >= K) return;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_group;
  const int nrows = static_cast<int>(O - r0 < rows_per_group ? O - r0 : rows_per_group);
  const int j0 = blockIdx.z * kMaxJ;
  const float* uj = u + j0 * O + r0;
  const auto u_coef = [uj, O](int jj, int r) { return __ldg(uj + jj * O + r); };
  column_sums<T, N>(w + r0 * K + c, K, nrows, u_coef, min(kMaxJ, k - j0), partial + (int64_t(blockIdx.y) * k + j0) * K + c,
                    K);
}

// s[i] = sum_p partial[p * n + i] in p order, for i < n = k * K.
__global__ void __launch_bounds__(kThreads)
sum_partials_kernel(const float* __restrict__ partial, float* __restrict__ s, int64_t parts, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    float a = 0.0f;
    for (int64_t p = 0; p < parts; ++p) a += partial[p * n + i];
    s[i] = a;
  }
}

// ---- launch side ----

int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

// 16-byte loads: every row and every vector of v / s starts 16-byte aligned.
bool can_vectorize(const SpectralNormParams& p) {
  const auto aligned = [](const void* q) { return q == nullptr || reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return p.K % 8 == 0 && aligned(p.w) && aligned(p.x) && aligned(p.s);
}

// Columns per thread of W's dtype: 16 bytes when vectorized.
int64_t columns_per_thread(const SpectralNormParams& p, DType dtype) {
  if (!can_vectorize(p)) return 1;
  return dtype == DType::kFloat32 ? 4 : 8;
}

// matvec_gram's rows per block and blocks.
struct GramGrid {
  int64_t rows, blocks;
};
GramGrid gram_grid(const SpectralNormParams& p, int sm_count) {
  const int64_t rows = std::clamp<int64_t>(ceil_div64(p.O, int64_t(kBlocksPerSm) * sm_count), kMinBlockRows,
                                           kMaxBlockRows);
  return {rows, ceil_div64(p.O, rows)};
}

// matvec_t's column tiles, row groups and rows per group (N columns per thread).
struct TGrid {
  int64_t tiles, groups, rows;
};
TGrid t_grid(const SpectralNormParams& p, int64_t N, int sm_count) {
  const int64_t tiles = ceil_div64(p.K, int64_t(kThreads) * N);
  int64_t groups = std::min({ceil_div64(int64_t(kTBlocksPerSm) * sm_count, tiles), ceil_div64(p.O, kMinGroupRows),
                             int64_t(kMaxGridYZ)});
  groups = std::max<int64_t>(groups, 1);
  const int64_t rows = ceil_div64(p.O, groups);
  groups = ceil_div64(p.O, rows);
  return {tiles, groups, rows};
}

cudaError_t launch_sum_partials(const float* partial, float* s, int64_t parts, int64_t n, int sm_count,
                                cudaStream_t stream) {
  const int64_t blocks = std::min<int64_t>(ceil_div64(n, kThreads), int64_t(8) * sm_count);
  sum_partials_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(partial, s, parts, n);
  return cudaGetLastError();
}

template <typename T, int N>
cudaError_t launch_gram(const SpectralNormParams& p, float* partials, int sm_count, cudaStream_t stream) {
  const GramGrid g = gram_grid(p, sm_count);
  auto* s = static_cast<float*>(p.s);
  float* partial = s;
  if (s != nullptr && g.blocks > 1) partial = partials;
  matvec_gram_kernel<T, N><<<static_cast<unsigned>(g.blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(p.w), static_cast<const float*>(p.x), static_cast<float*>(p.t), partial, p.O, p.K,
      static_cast<int>(p.k), static_cast<int>(g.rows));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (s != nullptr && g.blocks > 1) return launch_sum_partials(partial, s, g.blocks, p.k * p.K, sm_count, stream);
  return cudaSuccess;
}

template <typename T, int N>
cudaError_t launch_t(const SpectralNormParams& p, float* partials, int sm_count, cudaStream_t stream) {
  const TGrid g = t_grid(p, N, sm_count);
  auto* s = static_cast<float*>(p.s);
  float* partial = s;
  if (g.groups > 1) partial = partials;
  const dim3 grid(static_cast<unsigned>(g.tiles), static_cast<unsigned>(g.groups),
                  static_cast<unsigned>(ceil_div64(p.k, kMaxJ)));
  matvec_t_kernel<T, N><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(p.w), static_cast<const float*>(p.x),
                                                       partial, p.O, p.K, static_cast<int>(p.k),
                                                       static_cast<int>(g.rows));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (g.groups > 1) return launch_sum_partials(partial, s, g.groups, p.k * p.K, sm_count, stream);
  return cudaSuccess;
}

template <template <typename, int> class Launch>
cudaError_t dispatch(const SpectralNormParams& p, DType dtype, float* partials, int sm_count, cudaStream_t stream) {
  const bool vec = can_vectorize(p);
  switch (dtype) {
    case DType::kFloat32:
      return vec ? Launch<float, 4>::run(p, partials, sm_count, stream)
                 : Launch<float, 1>::run(p, partials, sm_count, stream);
    case DType::kFloat16:
      return vec ? Launch<c10::Half, 8>::run(p, partials, sm_count, stream)
                 : Launch<c10::Half, 1>::run(p, partials, sm_count, stream);
    case DType::kBFloat16:
      return vec ? Launch<c10::BFloat16, 8>::run(p, partials, sm_count, stream)
                 : Launch<c10::BFloat16, 1>::run(p, partials, sm_count, stream);
    default: return cudaErrorInvalidValue;  // no fp64 on cuda (checked before)
  }
}
template <typename T, int N> struct GramLaunch {
  static cudaError_t run(const SpectralNormParams& p, float* partials, int sm_count, cudaStream_t st) {
    return launch_gram<T, N>(p, partials, sm_count, st);
  }
};
template <typename T, int N> struct TLaunch {
  static cudaError_t run(const SpectralNormParams& p, float* partials, int sm_count, cudaStream_t st) {
    return launch_t<T, N>(p, partials, sm_count, st);
  }
};

static_assert(kSpectralNormCudaMaxK == int64_t(kMaxGridYZ) * kMaxJ, "spectral_norm_cuda_launch.h's limit");

// The sizes the kernels take (the host file checks them first, with a message).
bool valid(const SpectralNormParams& p, int sm_count) {
  return p.O > 0 && p.K > 0 && p.O <= std::numeric_limits<int>::max() && p.k >= 1 &&
         p.k <= kSpectralNormCudaMaxK && sm_count > 0;
}

}  // namespace

int64_t spectral_norm_gram_partials(const SpectralNormParams& p, int sm_count) {
  if (!valid(p, sm_count) || p.s == nullptr) return 0;
  const int64_t blocks = gram_grid(p, sm_count).blocks;
  return blocks > 1 ? blocks : 0;
}

int64_t spectral_norm_t_partials(const SpectralNormParams& p, DType dtype, int sm_count) {
  if (!valid(p, sm_count)) return 0;
  const int64_t groups = t_grid(p, columns_per_thread(p, dtype), sm_count).groups;
  return groups > 1 ? groups : 0;
}

cudaError_t launch_spectral_norm_matvec_gram(const SpectralNormParams& p, DType dtype, float* partials, int sm_count,
                                             cudaStream_t stream) {
  if (!valid(p, sm_count)) return cudaErrorInvalidValue;
  if (spectral_norm_gram_partials(p, sm_count) > 0 && partials == nullptr) return cudaErrorInvalidValue;
  return dispatch<GramLaunch>(p, dtype, partials, sm_count, stream);
}

cudaError_t launch_spectral_norm_matvec_t(const SpectralNormParams& p, DType dtype, float* partials, int sm_count,
                                          cudaStream_t stream) {
  if (!valid(p, sm_count)) return cudaErrorInvalidValue;
  if (spectral_norm_t_partials(p, dtype, sm_count) > 0 && partials == nullptr) return cudaErrorInvalidValue;
  return dispatch<TLaunch>(p, dtype, partials, sm_count, stream);
}

}  // namespace ganfast
