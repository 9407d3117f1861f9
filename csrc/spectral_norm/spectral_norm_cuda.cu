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
#include "spectral_norm/spectral_norm.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/checks.h"

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
      if constexpr (std::is_same<T, at::BFloat16>::value) {  // bf16: a float's upper half
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

// ---- host side ----

int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// 16-byte loads: every row and every vector of v / s starts 16-byte aligned.
bool can_vectorize(const SpectralNormParams& p) {
  const auto aligned = [](const void* q) { return q == nullptr || reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return p.K % 8 == 0 && aligned(p.w) && aligned(p.x) && aligned(p.s);
}

void launch_sum_partials(const float* partial, float* s, int64_t parts, int64_t n, cudaStream_t stream) {
  const int64_t blocks = std::min<int64_t>(ceil_div64(n, kThreads), int64_t(8) * sm_count());
  sum_partials_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(partial, s, parts, n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int N>
void launch_gram(const SpectralNormParams& p, const at::Tensor& w, cudaStream_t stream) {
  const int64_t rows = std::clamp<int64_t>(ceil_div64(p.O, int64_t(kBlocksPerSm) * sm_count()), kMinBlockRows,
                                           kMaxBlockRows);
  const int64_t blocks = ceil_div64(p.O, rows);
  auto* s = static_cast<float*>(p.s);
  at::Tensor partials;
  float* partial = s;
  if (s != nullptr && blocks > 1) {
    partials = at::empty({blocks, p.k, p.K}, w.options().dtype(at::kFloat));
    partial = partials.data_ptr<float>();
  }
  matvec_gram_kernel<T, N><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(p.w), static_cast<const float*>(p.x), static_cast<float*>(p.t), partial, p.O, p.K,
      static_cast<int>(p.k), static_cast<int>(rows));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (s != nullptr && blocks > 1) launch_sum_partials(partial, s, blocks, p.k * p.K, stream);
}

template <typename T, int N>
void launch_t(const SpectralNormParams& p, const at::Tensor& w, cudaStream_t stream) {
  const int64_t tiles = ceil_div64(p.K, int64_t(kThreads) * N);
  int64_t groups = std::min({ceil_div64(int64_t(kTBlocksPerSm) * sm_count(), tiles), ceil_div64(p.O, kMinGroupRows),
                             int64_t(kMaxGridYZ)});
  groups = std::max<int64_t>(groups, 1);
  const int64_t rows = ceil_div64(p.O, groups);
  groups = ceil_div64(p.O, rows);
  auto* s = static_cast<float*>(p.s);
  at::Tensor partials;
  float* partial = s;
  if (groups > 1) {
    partials = at::empty({groups, p.k, p.K}, w.options().dtype(at::kFloat));
    partial = partials.data_ptr<float>();
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(groups),
                  static_cast<unsigned>(ceil_div64(p.k, kMaxJ)));
  matvec_t_kernel<T, N><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(p.w), static_cast<const float*>(p.x),
                                                       partial, p.O, p.K, static_cast<int>(p.k),
                                                       static_cast<int>(rows));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (groups > 1) launch_sum_partials(partial, s, groups, p.k * p.K, stream);
}

template <template <typename, int> class Launch>
void dispatch(const SpectralNormParams& p, const at::Tensor& w, const char* op) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const bool vec = can_vectorize(p);
  switch (w.scalar_type()) {
    case at::kFloat: vec ? Launch<float, 4>::run(p, w, stream) : Launch<float, 1>::run(p, w, stream); break;
    case at::kHalf: vec ? Launch<at::Half, 8>::run(p, w, stream) : Launch<at::Half, 1>::run(p, w, stream); break;
    case at::kBFloat16:
      vec ? Launch<at::BFloat16, 8>::run(p, w, stream) : Launch<at::BFloat16, 1>::run(p, w, stream);
      break;
    default: TORCH_CHECK(false, "ganfast: ", op, " w has an unsupported dtype ", w.scalar_type());  // checked before
  }
}
template <typename T, int N> struct GramLaunch {
  static void run(const SpectralNormParams& p, const at::Tensor& w, cudaStream_t st) { launch_gram<T, N>(p, w, st); }
};
template <typename T, int N> struct TLaunch {
  static void run(const SpectralNormParams& p, const at::Tensor& w, cudaStream_t st) { launch_t<T, N>(p, w, st); }
};

void check_sizes(const SpectralNormParams& p, const char* op) {
  TORCH_CHECK(p.O <= std::numeric_limits<int>::max() && p.k <= int64_t(kMaxGridYZ) * kMaxJ, "ganfast: ", op,
              " on cuda needs O below 2^31 and k at most ", int64_t(kMaxGridYZ) * kMaxJ, ", got O = ", p.O, ", k = ", p.k);
}

}  // namespace

at::Tensor sn_matvec_t_cuda(const at::Tensor& w, const at::Tensor& u, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(w, at::kCUDA, "sn_matvec_t w");
  const c10::cuda::CUDAGuard device_guard(w.device());
  at::Tensor s;
  const SpectralNormParams p = make_matvec_t_params(w, u, out, /*allow_double=*/false, &s);
  if (p.O == 0 || p.K == 0) return s.zero_();
  check_sizes(p, "sn_matvec_t");
  dispatch<TLaunch>(p, w, "sn_matvec_t");
  return s;
}

std::tuple<at::Tensor, c10::optional<at::Tensor>> sn_matvec_gram_cuda(const at::Tensor& w, const at::Tensor& v, bool gram,
                                                                      const c10::optional<at::Tensor>& t_out,
                                                                      const c10::optional<at::Tensor>& s_out) {
  GANFAST_CHECK_DEVICE(w, at::kCUDA, "sn_matvec_gram w");
  const c10::cuda::CUDAGuard device_guard(w.device());
  at::Tensor t, s;
  const SpectralNormParams p = make_matvec_gram_params(w, v, gram, t_out, s_out, /*allow_double=*/false, &t, &s);
  if (p.O == 0 || p.K == 0) {
    t.zero_();
    if (gram) s.zero_();
  } else {
    check_sizes(p, "sn_matvec_gram");
    dispatch<GramLaunch>(p, w, "sn_matvec_gram");
  }
  return {t, gram ? c10::optional<at::Tensor>(s) : c10::nullopt};
}

}  // namespace ganfast
