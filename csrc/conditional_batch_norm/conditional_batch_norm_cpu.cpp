// conditional_batch_norm's four passes on the CPU (see conditional_batch_norm.h).
//
// Each pass reads its inputs once. The elementwise passes (forward_apply, backward_dx) split the
// flat N * C * M range evenly over the threads and walk it plane by plane, so every shape keeps
// every thread busy (a batch-1, 3-channel map as much as 32 x 192 planes). The reductions
// (channel_stats, backward_sums) take (plane, chunk of kChunk pixels) work items: each writes its
// partial sums, and a last loop adds them per channel (or plane) in a fixed order, so the results
// do not depend on the number of threads. relu is a template parameter: the inner loops have no
// branches and vectorize (math in float, double for double x).
#include "conditional_batch_norm/conditional_batch_norm.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_storage.h"

namespace ganfast {

namespace {

constexpr int64_t kMinWork = 16384;  // elements per parallel work item, at least
constexpr int64_t kChunk = 16384;    // pixels per reduction work item: fixed, so the sums are too
constexpr int kLanes = 16;           // independent double accumulators per sum (4 AVX2 vectors)
constexpr int64_t kSubBlock = 512;   // backward_sums: short acc_t sums, totals carried in double

template <typename F>
void dispatch_cpu_dtype(at::ScalarType st, F&& fn) {
  switch (st) {
    case at::kFloat: fn(CpuStorage<float>{}); break;
    case at::kDouble: fn(CpuStorage<double>{}); break;
    case at::kHalf: fn(CpuStorage<c10::Half>{}); break;
    case at::kBFloat16: fn(CpuStorage<c10::BFloat16>{}); break;
    default: TORCH_CHECK(false, "ganfast: conditional_batch_norm x must be float16, bfloat16, float32 or float64, got ", st);
  }
}

template <typename F>
void dispatch_relu(bool relu, F&& fn) {
  if (relu) fn(std::true_type{});
  else fn(std::false_type{});
}

// s1 = sum (v - pivot), s2 = sum (v - pivot)^2 over xp[0, len), in double: exact differences and
// squares for float data, kLanes independent accumulators so the adds do not wait on each other.
template <typename S>
void shifted_sums(const typename S::raw* __restrict xp, int64_t len, double pivot, double& s1, double& s2) {
  double a1[kLanes] = {}, a2[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= len; j += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const double d = static_cast<double>(S::load(xp[j + l])) - pivot;
      a1[l] += d;
      a2[l] += d * d;
    }
  }
  for (int l = 0; j < len; ++j, ++l) {
    const double d = static_cast<double>(S::load(xp[j])) - pivot;
    a1[l] += d;
    a2[l] += d * d;
  }
  double t1 = 0, t2 = 0;
  for (int l = 0; l < kLanes; ++l) {
    t1 += a1[l];
    t2 += a2[l];
  }
  s1 = t1;
  s2 = t2;
}

template <typename S, typename acc_t = typename S::acc>
void channel_stats(const CbnParams& p) {
  using raw_t = typename S::raw;
  const auto* x = static_cast<const raw_t*>(p.x);
  auto* stats = static_cast<acc_t*>(p.sums);
  const int64_t N = p.N, C = p.C, M = p.M;
  const int64_t chunks = (M + kChunk - 1) / kChunk, items = N * C * chunks;
  std::vector<double> part(static_cast<size_t>(2 * items));  // [N, C, chunks, 2]: (s1, s2)
  at::parallel_for(0, items, std::max<int64_t>(1, kMinWork / std::min(M, kChunk)), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / chunks, p0 = (item % chunks) * kChunk;
      const double pivot = static_cast<double>(S::load(x[(plane % C) * M]));  // x[0, c, 0, 0]
      shifted_sums<S>(x + plane * M + p0, std::min(kChunk, M - p0), pivot, part[2 * item], part[2 * item + 1]);
    }
  });
  const double count = static_cast<double>(N * M);
  at::parallel_for(0, C, std::max<int64_t>(1, kMinWork / (N * chunks)), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double s1 = 0, s2 = 0;
      for (int64_t n = 0; n < N; ++n) {
        const double* w = part.data() + 2 * (n * C + c) * chunks;
        for (int64_t k = 0; k < chunks; ++k) {
          s1 += w[2 * k];
          s2 += w[2 * k + 1];
        }
      }
      double mean, m2;
      cbn_moments(count, static_cast<double>(S::load(x[c * M])), s1, s2, mean, m2);
      stats[2 * c] = static_cast<acc_t>(mean);
      stats[2 * c + 1] = static_cast<acc_t>(m2);
    }
  });
}

// Calls fn(plane, j0, j1) for the pieces of planes that make up the flat range [begin, end).
template <typename F>
inline void for_plane_pieces(int64_t begin, int64_t end, int64_t M, F&& fn) {
  int64_t i = begin;
  while (i < end) {
    const int64_t plane = i / M, j0 = i % M, j1 = std::min(M, j0 + (end - i));
    fn(plane, j0, j1);
    i += j1 - j0;
  }
}

template <bool RELU, typename S, typename acc_t = typename S::acc>
void forward_apply(const CbnParams& p) {
  using raw_t = typename S::raw;
  const auto* x = static_cast<const raw_t*>(p.x);
  auto* y = static_cast<raw_t*>(p.out);
  const auto *mean = static_cast<const acc_t*>(p.mean), *rstd = static_cast<const acc_t*>(p.rstd);
  const auto *gain = static_cast<const acc_t*>(p.gain), *bias = static_cast<const acc_t*>(p.bias);
  const int64_t C = p.C, M = p.M;
  at::parallel_for(0, p.N * C * M, kMinWork, [&](int64_t begin, int64_t end) {
    for_plane_pieces(begin, end, M, [&](int64_t plane, int64_t j0, int64_t j1) {
      const int64_t n = plane / C, c = plane % C;
      const acc_t mu = mean[c], rs = rstd[c], g = gain[n * p.gain_sn + c], b = bias[n * p.bias_sn + c];
      const raw_t* __restrict xp = x + plane * M;
      raw_t* __restrict yp = y + plane * M;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) yp[j] = S::store(cbn_y<RELU>(cbn_z(cbn_xhat(S::load(xp[j]), mu, rs), g, b)));
    });
  });
}

template <bool RELU, typename S, typename acc_t = typename S::acc>
void backward_sums(const CbnParams& p) {
  using raw_t = typename S::raw;
  const auto *x = static_cast<const raw_t*>(p.x), *dy = static_cast<const raw_t*>(p.dy);
  const auto *mean = static_cast<const acc_t*>(p.mean), *rstd = static_cast<const acc_t*>(p.rstd);
  const auto *gain = static_cast<const acc_t*>(p.gain), *bias = static_cast<const acc_t*>(p.bias);
  auto* sums = static_cast<acc_t*>(p.sums);
  const int64_t C = p.C, M = p.M, planes = p.N * C;
  const int64_t chunks = (M + kChunk - 1) / kChunk, items = planes * chunks;
  std::vector<double> part(static_cast<size_t>(2 * items));  // [N, C, chunks, 2]
  at::parallel_for(0, items, std::max<int64_t>(1, kMinWork / std::min(M, kChunk)), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / chunks, n = plane / C, c = plane % C;
      const int64_t p0 = (item % chunks) * kChunk, p1 = std::min(M, p0 + kChunk);
      const acc_t mu = mean[c], rs = rstd[c], g = gain[n * p.gain_sn + c], b = bias[n * p.bias_sn + c];
      const raw_t* __restrict xp = x + plane * M;
      const raw_t* __restrict dp = dy + plane * M;
      // Short sums in acc_t (the vector lanes' partial sums), carried in double: dz * xhat takes
      // both signs and the plane may be large.
      double t1 = 0, t2 = 0;
      for (int64_t q0 = p0; q0 < p1; q0 += kSubBlock) {
        const int64_t q1 = std::min(p1, q0 + kSubBlock);
        acc_t a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
        for (int64_t q = q0; q < q1; ++q) {
          const acc_t h = cbn_xhat(S::load(xp[q]), mu, rs);
          const acc_t dz = cbn_dz<RELU>(S::load(dp[q]), cbn_z(h, g, b));
          a1 += dz;
          a2 += dz * h;
        }
        t1 += static_cast<double>(a1);
        t2 += static_cast<double>(a2);
      }
      part[2 * item] = t1;
      part[2 * item + 1] = t2;
    }
  });
  at::parallel_for(0, planes, std::max<int64_t>(1, kMinWork / chunks), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const double* w = part.data() + 2 * plane * chunks;
      double s1 = 0, s2 = 0;
      for (int64_t k = 0; k < chunks; ++k) {
        s1 += w[2 * k];
        s2 += w[2 * k + 1];
      }
      sums[2 * plane] = static_cast<acc_t>(s1);
      sums[2 * plane + 1] = static_cast<acc_t>(s2);
    }
  });
}

template <bool RELU, typename S, typename acc_t = typename S::acc>
void backward_dx(const CbnParams& p) {
  using raw_t = typename S::raw;
  const auto *x = static_cast<const raw_t*>(p.x), *dy = static_cast<const raw_t*>(p.dy);
  auto* dx = static_cast<raw_t*>(p.out);
  const auto *mean = static_cast<const acc_t*>(p.mean), *rstd = static_cast<const acc_t*>(p.rstd);
  const auto *gain = static_cast<const acc_t*>(p.gain), *bias = static_cast<const acc_t*>(p.bias);
  const auto *c1 = static_cast<const acc_t*>(p.c1), *c2 = static_cast<const acc_t*>(p.c2);
  const int64_t C = p.C, M = p.M;
  at::parallel_for(0, p.N * C * M, kMinWork, [&](int64_t begin, int64_t end) {
    for_plane_pieces(begin, end, M, [&](int64_t plane, int64_t j0, int64_t j1) {
      const int64_t n = plane / C, c = plane % C;
      const acc_t mu = mean[c], rs = rstd[c], g = gain[n * p.gain_sn + c], b = bias[n * p.bias_sn + c];
      const acc_t k1 = c1[c], k2 = c2[c];
      const raw_t* __restrict xp = x + plane * M;
      const raw_t* __restrict dp = dy + plane * M;
      raw_t* __restrict op = dx + plane * M;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) {
        const acc_t h = cbn_xhat(S::load(xp[j]), mu, rs);
        const acc_t dz = cbn_dz<RELU>(S::load(dp[j]), cbn_z(h, g, b));
        op[j] = S::store(cbn_dx(dz, h, rs, g, k1, k2));
      }
    });
  });
}

}  // namespace

at::Tensor cbn_channel_stats_cpu(const at::Tensor& x) {
  GANFAST_CHECK_DEVICE(x, at::kCPU, "x");
  CbnParams p = make_cbn_params(x, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt,
                                c10::nullopt, c10::nullopt, false, /*allow_double=*/true);
  at::Tensor stats = at::empty({p.C, 2}, x.options().dtype(cbn_acc_dtype(x)));
  p.sums = stats.data_ptr();
  if (p.N * p.M == 0) return stats.fill_(std::numeric_limits<double>::quiet_NaN());  // as torch.var_mean
  dispatch_cpu_dtype(x.scalar_type(), [&](auto storage) { channel_stats<decltype(storage)>(p); });
  return stats;
}

at::Tensor cbn_forward_apply_cpu(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
                                 const at::Tensor& gain, const at::Tensor& bias, bool relu,
                                 const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(x, at::kCPU, "x");
  CbnParams p = make_cbn_params(x, c10::nullopt, mean, rstd, gain, bias, c10::nullopt, c10::nullopt, relu, true);
  at::Tensor y = output_like(x, out);
  p.out = y.data_ptr();
  if (x.numel() == 0) return y;
  dispatch_cpu_dtype(x.scalar_type(), [&](auto storage) {
    dispatch_relu(relu, [&](auto r) { forward_apply<decltype(r)::value, decltype(storage)>(p); });
  });
  return y;
}

at::Tensor cbn_backward_sums_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                                 const at::Tensor& rstd, const at::Tensor& gain, const at::Tensor& bias, bool relu) {
  GANFAST_CHECK_DEVICE(x, at::kCPU, "x");
  CbnParams p = make_cbn_params(x, dy, mean, rstd, gain, bias, c10::nullopt, c10::nullopt, relu, true);
  at::Tensor sums = at::empty({p.N, p.C, 2}, x.options().dtype(cbn_acc_dtype(x)));
  p.sums = sums.data_ptr();
  if (x.numel() == 0) return sums.zero_();  // sums over empty planes
  dispatch_cpu_dtype(x.scalar_type(), [&](auto storage) {
    dispatch_relu(relu, [&](auto r) { backward_sums<decltype(r)::value, decltype(storage)>(p); });
  });
  return sums;
}

at::Tensor cbn_backward_dx_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                               const at::Tensor& rstd, const at::Tensor& gain, const at::Tensor& bias, bool relu,
                               const at::Tensor& c1, const at::Tensor& c2, const c10::optional<at::Tensor>& out) {
  GANFAST_CHECK_DEVICE(x, at::kCPU, "x");
  CbnParams p = make_cbn_params(x, dy, mean, rstd, gain, bias, c1, c2, relu, true);
  at::Tensor dx = output_like(x, out);
  p.out = dx.data_ptr();
  if (x.numel() == 0) return dx;
  dispatch_cpu_dtype(x.scalar_type(), [&](auto storage) {
    dispatch_relu(relu, [&](auto r) { backward_dx<decltype(r)::value, decltype(storage)>(p); });
  });
  return dx;
}

}  // namespace ganfast
